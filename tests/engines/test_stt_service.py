"""The STT service with both backends on real speech: Piper's fixed sentences."""

from __future__ import annotations

import io

import httpx
import jiwer
import numpy as np
import pytest
import soundfile as sf
import soxr
from enginekit import EngineProcess, Spoken

pytestmark = pytest.mark.engines

NORMALIZE = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


def transcribe(server: EngineProcess, wav: bytes, **form: str) -> dict:
    response = httpx.post(
        f"{server.url}/transcribe",
        files={"file": ("a.wav", wav, "audio/wav")},
        data=form,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


def words(text: str) -> list[str]:
    return NORMALIZE(text)[0]


@pytest.fixture(scope="module", params=["whispercpp", "faster-whisper"])
def stt(request: pytest.FixtureRequest) -> EngineProcess:
    name = "stt_whispercpp" if request.param == "whispercpp" else "stt_faster_whisper"
    return request.getfixturevalue(name)


@pytest.fixture(scope="module")
def transcripts(stt: EngineProcess, spoken: list[Spoken]) -> list[str]:
    return [transcribe(stt, s.wav)["text"] for s in spoken]


def test_word_error_rate_is_at_most_ten_percent(
    transcripts: list[str], spoken: list[Spoken]
) -> None:
    wer = jiwer.wer(
        [s.text for s in spoken],
        transcripts,
        reference_transform=NORMALIZE,
        hypothesis_transform=NORMALIZE,
    )
    assert wer <= 0.10, list(zip([s.text for s in spoken], transcripts, strict=True))


def test_converted_ggml_model_hears_the_same_words_as_faster_whisper(
    stt_whispercpp: EngineProcess, stt_faster_whisper: EngineProcess, spoken: list[Spoken]
) -> None:
    for s in spoken:
        ggml = words(transcribe(stt_whispercpp, s.wav)["text"])
        ct2 = words(transcribe(stt_faster_whisper, s.wav)["text"])
        assert ggml == ct2, s.text


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (44100, 2), (48000, 6), (16000, 1)])
def test_any_wav_rate_and_channel_count(
    stt: EngineProcess, spoken: list[Spoken], rate: int, channels: int
) -> None:
    audio, source_rate = sf.read(io.BytesIO(spoken[0].wav), dtype="float32")
    resampled = soxr.resample(audio, source_rate, rate)
    multichannel = np.repeat(resampled[:, None], channels, axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, multichannel, rate, format="WAV", subtype="PCM_16")
    result = transcribe(stt, buffer.getvalue())
    assert words(result["text"]) == words(spoken[0].text)
    assert result["duration"] == pytest.approx(len(audio) / source_rate, abs=0.05)


def test_flac_upload(stt: EngineProcess, spoken: list[Spoken]) -> None:
    audio, rate = sf.read(io.BytesIO(spoken[3].wav), dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="FLAC")
    assert words(transcribe(stt, buffer.getvalue())["text"]) == words(spoken[3].text)


def test_native_response_has_segments_and_model(stt: EngineProcess, spoken: list[Spoken]) -> None:
    result = transcribe(stt, spoken[1].wav)
    assert result["language"] == "en"
    assert result["segments"], result
    first, last = result["segments"][0], result["segments"][-1]
    assert 0 <= first["start"] < last["end"] <= result["duration"] + 0.5
    assert result["model"]
    assert result["backend"] in ("whispercpp", "faster-whisper")


@pytest.mark.parametrize("response_format", ["json", "text", "verbose_json"])
def test_openai_transcription_formats(
    stt: EngineProcess, spoken: list[Spoken], response_format: str
) -> None:
    response = httpx.post(
        f"{stt.url}/v1/audio/transcriptions",
        files={"file": ("a.wav", spoken[3].wav, "audio/wav")},
        data={"model": "whisper-1", "response_format": response_format},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    expected = words(spoken[3].text)
    if response_format == "text":
        assert response.headers["content-type"].startswith("text/plain")
        assert words(response.text) == expected
        return
    body = response.json()
    assert words(body["text"]) == expected
    if response_format == "verbose_json":
        assert body["task"] == "transcribe"
        assert body["duration"] > 1
        assert body["segments"]
        assert {"id", "start", "end", "text"} <= body["segments"][0].keys()
    else:
        assert set(body) == {"text"}


def test_models_lists_the_loaded_model(stt: EngineProcess) -> None:
    for path in ("/models", "/v1/models"):
        body = httpx.get(f"{stt.url}{path}").json()
        assert body["object"] == "list"
        assert len(body["data"]) == 1
        assert body["data"][0]["id"]


def test_whispercpp_at_temperature_0_gives_one_transcript(
    stt_whispercpp: EngineProcess, spoken: list[Spoken]
) -> None:
    """Hard audio (speech under loud noise) is where whisper.cpp's temperature fallback
    would re-decode by sampling; at temperature 0 it must not, so every call agrees."""
    samples, rate = sf.read(io.BytesIO(spoken[1].wav), dtype="float32")
    noise = np.random.default_rng(7).standard_normal(len(samples)).astype(np.float32)
    noisy = samples + noise * 1.8 * samples.std()
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(noisy, -1, 1), rate, format="WAV", subtype="PCM_16")
    texts = {
        transcribe(stt_whispercpp, buffer.getvalue(), temperature="0")["text"] for _ in range(5)
    }
    assert len(texts) == 1, texts
