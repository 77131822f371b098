"""The TTS service: Piper speaking, whole and streamed a sentence at a time."""

from __future__ import annotations

import io
import statistics

import httpx
import numpy as np
import pytest
import soundfile as sf
from enginekit import EngineProcess, post_json_chunks

pytestmark = pytest.mark.engines

TWO_SENTENCES = "Good morning. The train to the city leaves in a few minutes, so please hurry."


def synthesize(tts: EngineProcess, **body: object) -> httpx.Response:
    response = httpx.post(f"{tts.url}/synthesize", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response


def test_synthesize_returns_wav_at_the_voice_rate(tts: EngineProcess) -> None:
    response = synthesize(tts, text="Hello there, how can I help you today?")
    assert response.headers["content-type"] == "audio/wav"
    audio, rate = sf.read(io.BytesIO(response.content))
    assert rate == 22050
    assert 1.0 < len(audio) / rate < 6.0
    assert np.abs(audio).max() > 0.1  # speech, not silence


def test_sample_rate_and_speed(tts: EngineProcess) -> None:
    text = "This sentence is spoken at two different speeds."
    normal, _ = sf.read(io.BytesIO(synthesize(tts, text=text, sample_rate=16000).content))
    info = sf.info(io.BytesIO(synthesize(tts, text=text, sample_rate=16000).content))
    assert info.samplerate == 16000

    # Piper's durations are sampled (noise_w), so one pair can come out close: compare
    # medians of three at each speed. Twice the speed gives ~0.6 of the length.
    def median_length(speed: float) -> float:
        lengths = [
            len(
                sf.read(
                    io.BytesIO(synthesize(tts, text=text, sample_rate=16000, speed=speed).content)
                )[0]
            )
            for _ in range(3)
        ]
        return statistics.median(lengths)

    assert len(normal) > 0
    assert median_length(2.0) < 0.75 * median_length(1.0)


def test_flac_and_pcm_formats(tts: EngineProcess) -> None:
    flac = synthesize(tts, text="Lossless audio.", format="flac")
    assert flac.headers["content-type"] == "audio/flac"
    assert sf.info(io.BytesIO(flac.content)).format == "FLAC"
    pcm = synthesize(tts, text="Raw audio.", format="pcm")
    assert pcm.headers["content-type"] == "audio/pcm"
    assert len(pcm.content) % 2 == 0
    assert len(pcm.content) > 22050


def test_streaming_sends_one_chunk_per_sentence(tts: EngineProcess) -> None:
    """Each sentence leaves as its own HTTP chunk as soon as it is synthesized: the first
    chunk is the WAV header and the short first sentence alone."""
    status, chunks = post_json_chunks(
        f"{tts.url}/synthesize", {"text": TWO_SENTENCES, "stream": True}
    )
    assert status == 200
    assert len(chunks) == 2
    first = chunks[0]
    assert first[:4] == b"RIFF"
    assert first[8:12] == b"WAVE"
    first_seconds = (len(first) - 44) / 2 / 22050
    assert 0.4 < first_seconds < 2.5  # "Good morning." and nothing more
    assert len(chunks[1]) > 2 * len(first)
    audio, rate = sf.read(io.BytesIO(b"".join(chunks)), dtype="int16")
    assert rate == 22050
    assert len(audio) == (len(first) - 44 + len(chunks[1])) // 2


def test_openai_speech_endpoint(tts: EngineProcess) -> None:
    response = httpx.post(
        f"{tts.url}/v1/audio/speech",
        json={"model": "tts-1", "input": "Testing the speech endpoint.", "voice": "default"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    audio, rate = sf.read(io.BytesIO(response.content))
    assert rate == 22050
    assert len(audio) > rate


def test_voices_and_models(tts: EngineProcess) -> None:
    voices = httpx.get(f"{tts.url}/voices").json()["voices"]
    assert voices == [
        {
            "name": "en_US-joe-medium",
            "language": "en-us",
            "sample_rate": 22050,
            "quality": "medium",
            "default": True,
        }
    ]
    models = httpx.get(f"{tts.url}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["en_US-joe-medium"]


def test_speech_round_trips_through_stt(tts: EngineProcess, stt_faster_whisper) -> None:  # type: ignore[no-untyped-def]
    text = "Please turn off the lights in the kitchen."
    wav = synthesize(tts, text=text, stream=True).content
    result = httpx.post(
        f"{stt_faster_whisper.url}/transcribe", files={"file": ("a.wav", wav)}, timeout=60
    ).json()
    assert result["text"].lower().strip(" .") == text.lower().strip(" .")
