"""Every kind of bad input gets a 4xx in the one JSON error shape, names the problem, and
leaves the service up."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import soundfile as sf
from enginekit import EngineProcess, Spoken

pytestmark = pytest.mark.engines


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "field", "correlation_id"}
    assert error["code"] == code, error
    assert error["message"]
    assert error["correlation_id"] == response.headers["x-request-id"]
    if field is not None:
        assert error["field"] == field, error


def still_up(server: EngineProcess) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert httpx.get(f"{server.url}/ready").status_code == 200


# --- STT ---


def upload(
    server: EngineProcess, data: bytes, path: str = "/transcribe", **form: str
) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}", files={"file": ("a.wav", data, "audio/wav")}, data=form, timeout=60
    )


def test_stt_bad_uploads(stt_whispercpp: EngineProcess, spoken: list[Spoken]) -> None:
    stt = stt_whispercpp
    assert_error(upload(stt, b""), 400, "empty_upload", "file")
    assert_error(upload(stt, b"this is not audio at all" * 100), 415, "unsupported_audio", "file")
    assert_error(upload(stt, b"RIFF\x00\x00\x00\x00WAVEjunk"), 415, "unsupported_audio", "file")
    oversized = b"\0" * (27 * 1024 * 1024)
    assert_error(upload(stt, oversized), 413, "payload_too_large")
    response = httpx.post(f"{stt.url}/transcribe", data={"language": "en"}, timeout=10)
    assert_error(response, 422, "invalid_request", "file")
    assert_error(upload(stt, spoken[0].wav, language="fr"), 400, "unsupported_language", "language")
    assert_error(upload(stt, spoken[0].wav, temperature="7"), 422, "invalid_request", "temperature")
    assert_error(
        upload(stt, spoken[0].wav, "/v1/audio/transcriptions", response_format="srt"),
        422,
        "invalid_request",
        "response_format",
    )
    still_up(stt)


def test_stt_audio_too_long(stt_faster_whisper: EngineProcess) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(8000 * 601, np.float32), 8000, format="WAV", subtype="PCM_U8")
    assert_error(upload(stt_faster_whisper, buffer.getvalue()), 413, "audio_too_long", "file")
    still_up(stt_faster_whisper)


# --- TTS ---


def speak(server: EngineProcess, body: object, path: str = "/synthesize") -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def test_tts_bad_requests(tts: EngineProcess) -> None:
    assert_error(speak(tts, {"text": "Hi", "voice": "nobody"}), 400, "unknown_voice", "voice")
    assert_error(speak(tts, {"text": ""}), 400, "empty_text", "text")
    assert_error(speak(tts, {"text": "  \n "}), 400, "empty_text", "text")
    assert_error(speak(tts, {"text": "word " * 1000}), 413, "text_too_large", "text")
    assert_error(speak(tts, {}), 422, "invalid_request", "text")
    assert_error(speak(tts, {"text": "Hi", "speed": 9}), 422, "invalid_request", "speed")
    assert_error(
        speak(tts, {"text": "Hi", "sample_rate": 3}), 422, "invalid_request", "sample_rate"
    )
    assert_error(speak(tts, {"text": "Hi", "colour": "red"}), 422, "invalid_request", "colour")
    assert_error(speak(tts, ["not", "an", "object"]), 422, "invalid_request")
    malformed = httpx.post(
        f"{tts.url}/synthesize",
        content=b'{"text": "Hi"',
        headers={"content-type": "application/json"},
    )
    assert_error(malformed, 400, "malformed_json")
    assert_error(
        speak(tts, {"input": "Hi", "voice": "alloy"}, "/v1/audio/speech"), 400, "unknown_voice"
    )
    assert_error(
        speak(tts, {"input": "Hi", "response_format": "mp3"}, "/v1/audio/speech"),
        400,
        "unsupported_format",
        "response_format",
    )
    assert_error(speak(tts, {"input": ""}, "/v1/audio/speech"), 400, "empty_text")
    assert_error(httpx.get(f"{tts.url}/no/such/path"), 404, "not_found")
    assert_error(httpx.get(f"{tts.url}/synthesize"), 405, "method_not_allowed")
    still_up(tts)


# --- LLM ---


def ask(server: EngineProcess, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def test_llm_bad_requests(llm_llamacpp: EngineProcess) -> None:
    llm = llm_llamacpp
    for bad in (0, -3, 100_000):
        assert_error(
            ask(llm, "/generate", {"prompt": "Hi", "max_tokens": bad}),
            422,
            "invalid_request",
            "max_tokens",
        )
        assert_error(
            ask(
                llm,
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": bad},
            ),
            422,
            "invalid_request",
            "max_tokens",
        )
    assert_error(ask(llm, "/generate", {"prompt": ""}), 400, "empty_text", "prompt")
    assert_error(ask(llm, "/chat", {"message": " "}), 400, "empty_text", "message")
    assert_error(ask(llm, "/generate", {"prompt": "x" * 40_000}), 413, "prompt_too_large", "prompt")
    assert_error(
        ask(llm, "/chat", {"message": "Hi", "session_id": "bad id!"}),
        422,
        "invalid_request",
        "session_id",
    )
    assert_error(
        ask(llm, "/v1/chat/completions", {"messages": []}), 422, "invalid_request", "messages"
    )
    assert_error(
        ask(llm, "/v1/chat/completions", {"messages": [{"role": "robot", "content": "Hi"}]}),
        422,
        "invalid_request",
    )
    assert_error(
        ask(
            llm,
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "Hi"}], "temperature": 5},
        ),
        422,
        "invalid_request",
        "temperature",
    )
    malformed = httpx.post(
        f"{llm.url}/v1/chat/completions",
        content=b"{'messages': nope}",
        headers={"content-type": "application/json"},
    )
    assert_error(malformed, 400, "malformed_json")
    still_up(llm)
