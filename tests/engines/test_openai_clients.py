"""The official openai client, pointed at our services over real HTTP."""

from __future__ import annotations

import io

import pytest
import soundfile as sf
from enginekit import EngineProcess, Spoken
from openai import OpenAI

pytestmark = pytest.mark.engines


def client(server: EngineProcess) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0, timeout=120)


@pytest.mark.parametrize("backend", ["stt_whispercpp", "stt_faster_whisper"])
def test_openai_client_transcribes(
    request: pytest.FixtureRequest, backend: str, spoken: list[Spoken]
) -> None:
    stt = request.getfixturevalue(backend)
    result = client(stt).audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", spoken[0].wav, "audio/wav")
    )
    assert result.text.lower().strip(" .") == spoken[0].text.lower().strip(" .")
    verbose = client(stt).audio.transcriptions.create(
        model="whisper-1",
        file=("speech.wav", spoken[1].wav, "audio/wav"),
        response_format="verbose_json",
    )
    assert verbose.duration > 1
    assert verbose.segments
    assert [m.id for m in client(stt).models.list()]


def test_openai_client_speaks(tts: EngineProcess, stt_faster_whisper: EngineProcess) -> None:
    text = "The train to the city leaves in a few minutes."
    with client(tts).audio.speech.with_streaming_response.create(
        model="tts-1", voice="en_US-joe-medium", input=text, response_format="wav"
    ) as response:
        wav = response.read()
    audio, rate = sf.read(io.BytesIO(wav))
    assert rate == 22050
    assert len(audio) > rate
    heard = client(stt_faster_whisper).audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", wav, "audio/wav")
    )
    assert heard.text.lower().strip(" .") == text.lower().strip(" .")


@pytest.mark.parametrize("backend", ["llm_llamacpp", "llm_ollama"])
def test_openai_client_chats_and_streams(request: pytest.FixtureRequest, backend: str) -> None:
    llm = request.getfixturevalue(backend)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    answer = client(llm).chat.completions.create(
        model="smollm2", messages=messages, max_tokens=24, temperature=0
    )
    assert "paris" in (answer.choices[0].message.content or "").lower()
    stream = client(llm).chat.completions.create(
        model="smollm2", messages=messages, max_tokens=24, temperature=0, stream=True
    )
    deltas = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) >= 3
    assert "paris" in "".join(deltas).lower()
