"""The bad-input catalogue, gateway: POST /v1/turn (multipart, raw audio, broken framing,
slow and oversized bodies, lying audio headers) and WebSocket /v1/stream (bad messages,
too much audio), each refused with a 4xx in the one error shape; after each case /health
answers and a valid turn still works (on the same socket, for the WebSocket). The
gateway runs in front of a stand-in for our engines, so every turn is quick. Then
schemathesis against the gateway's OpenAPI schema: no 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from badrequests import (
    Case,
    MiB,
    assert_refused,
    call,
    chunked_over,
    float_wav,
    fuzz_openapi,
    post,
    protocol_cases,
    wav_bytes,
    with_rate,
)
from fakevendors import Engines, ThreadServer, tone
from gatewaykit import Gateway, stream_utterance
from websockets.sync.client import connect

from voice_engines.demo.stack import internal_route

BODY_LIMIT = 2 * MiB
SPEECH = wav_bytes(np.frombuffer(tone(1.0, 16000), "<i2").astype(np.float32) / 32768, 16000)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    fake = Engines()
    with ThreadServer(fake.app()) as engines:
        routes = {
            "agent": "test",
            "namespace": "test",
            "stages": {
                "stt": internal_route(engines.url, "stt-b1", "whisper", {"language": "en"}),
                "llm": internal_route(engines.url, "llm-b1", "smollm2", {"maxTokens": 20}),
                "tts": internal_route(engines.url, "tts-b1", "joe", {"speed": 1}),
            },
        }
        gw = Gateway(
            env={
                "GATEWAY_MAX_BODY_BYTES": str(BODY_LIMIT),
                "GATEWAY_MAX_AUDIO_SECONDS": "10",
                "GATEWAY_BODY_TIMEOUT": "3",
            },
            routes=routes,
        ).wait_alive()
        yield gw
        gw.stop()


def turn_with(data: bytes, **fields: str) -> Any:
    return post("/v1/turn", files={"file": ("q.wav", data, "audio/wav")}, data=fields)


def multipart_head() -> bytes:
    return (
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="q.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n"
    )


TURN_CASES = [
    Case("empty file", turn_with(b""), 400, "empty_upload", "file"),
    Case("not audio", turn_with(b"RIFF not really a wav"), 415, "unsupported_audio", "file"),
    Case(
        "12 s of audio",
        turn_with(wav_bytes(np.zeros(16000 * 12, np.float32), 16000)),
        413,
        "audio_too_long",
        "file",
    ),
    Case("body over the limit", turn_with(b"\0" * (BODY_LIMIT + MiB)), 413, "payload_too_large"),
    Case(
        "chunked body over the limit",
        chunked_over(
            "/v1/turn", "multipart/form-data; boundary=b0undary", multipart_head(), BODY_LIMIT
        ),
        413,
        "payload_too_large",
        closes=True,
    ),
    Case(
        "WAV claiming 2,147,483,647 Hz",
        turn_with(with_rate(SPEECH, 2_147_483_647)),
        400,
        "unsupported_sample_rate",
        "file",
    ),
    Case(
        "WAV claiming 100 Hz",
        turn_with(with_rate(SPEECH, 100)),
        400,
        "unsupported_sample_rate",
        "file",
    ),
    Case(
        "WAV of 16 channels",
        turn_with(wav_bytes(np.zeros((800, 16), np.float32), 16000)),
        400,
        "unsupported_channels",
        "file",
    ),
    Case(
        "float WAV full of NaN",
        turn_with(float_wav(np.full(16000, np.nan))),
        400,
        "invalid_audio",
        "file",
    ),
    Case(
        "no file field",
        post("/v1/turn", files={"other": ("q.wav", b"x", "audio/wav")}),
        422,
        "invalid_request",
        "file",
    ),
    Case(
        "JSON, not audio",
        post("/v1/turn", json={"audio": "base64?"}),
        415,
        "unsupported_media_type",
    ),
    Case(
        "multipart cut short",
        post(
            "/v1/turn",
            content=b"--x\r\nbroken",
            headers={"content-type": "multipart/form-data; boundary=x"},
        ),
        422,
        "invalid_request",
    ),
    Case(
        "bad session_id", turn_with(SPEECH, session_id="a b"), 422, "invalid_request", "session_id"
    ),
    Case(
        "session_id of 10,000 characters",
        turn_with(SPEECH, session_id="s" * 10_000),
        422,
        "invalid_request",
        "session_id",
    ),
    Case(
        "sample_rate 7", turn_with(SPEECH, sample_rate="7"), 422, "invalid_request", "sample_rate"
    ),
    Case(
        "sample_rate not a number",
        turn_with(SPEECH, sample_rate="fast"),
        422,
        "invalid_request",
        "sample_rate",
    ),
    Case(
        "raw audio, sample_rate 10**30 in the query",
        post(
            "/v1/turn?sample_rate=" + "1" + "0" * 30,
            content=SPEECH,
            headers={"content-type": "audio/wav"},
        ),
        422,
        "invalid_request",
        "sample_rate",
    ),
    Case("GET /v1/turn", call("GET", "/v1/turn"), 405, "method_not_allowed"),
    *protocol_cases(
        "/v1/turn",
        "multipart/form-data; boundary=b0undary",
        multipart_head() + SPEECH + b"\r\n--b0undary--\r\n",
        multipart_head() + SPEECH[:10],
    ),
]


def valid_turn(gateway: Gateway) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/turn", files={"file": ("q.wav", SPEECH, "audio/wav")}, timeout=60
    )


@pytest.mark.parametrize("case", TURN_CASES, ids=[c.name for c in TURN_CASES])
def test_turn_refuses(gateway: Gateway, case: Case) -> None:
    assert_refused(case.send(gateway.url), case)
    assert httpx.get(f"{gateway.url}/health").status_code == 200
    response = valid_turn(gateway)
    assert response.status_code == 200, response.text


# --- WebSocket: (messages to send, the error code each must bring back) ---

TOO_MUCH_AUDIO = [b"\0" * 64_000] * 6  # 12 s at 16 kHz, over the 10 s limit

WS_CASES: list[tuple[str, list[str | bytes], str]] = [
    ("not JSON", ["{not json"], "malformed_json"),
    ("a JSON array", ["[1, 2]"], "unknown_message"),
    ("unknown type", [json.dumps({"type": "dance"})], "unknown_message"),
    ("end without audio", [json.dumps({"type": "end"})], "empty_audio"),
    ("sample_rate 3", [json.dumps({"type": "start", "sample_rate": 3})], "invalid_request"),
    (
        "sample_rate 10**30",
        [json.dumps({"type": "start", "sample_rate": 10**30})],
        "invalid_request",
    ),
    ("bad session_id", [json.dumps({"type": "start", "session_id": "a b"})], "invalid_request"),
    (
        "language of 1,000 characters",
        [json.dumps({"type": "start", "language": "x" * 1000})],
        "invalid_request",
    ),
    ("12 s of audio", [*TOO_MUCH_AUDIO, json.dumps({"type": "end"})], "audio_too_long"),
    ("one odd byte of audio", [b"\0", json.dumps({"type": "end"})], "empty_audio"),
    (
        "unknown turn_detection",
        [json.dumps({"type": "start", "turn_detection": "psychic"})],
        "invalid_request",
    ),
    (
        "a 10 MB frame to the voice activity detector",
        [json.dumps({"type": "start", "turn_detection": "vad"}), b"\0" * (10 * MiB)],
        "frame_too_large",
    ),
]


def stream_valid_turn(ws: Any) -> dict[str, Any]:
    ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
    return stream_utterance(ws, tone(1.0, 16000), 3200)


@pytest.mark.parametrize(("name", "messages", "code"), WS_CASES, ids=[c[0] for c in WS_CASES])
def test_stream_refuses(
    gateway: Gateway, name: str, messages: list[str | bytes], code: str
) -> None:
    with connect(gateway.ws_url) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        for message in messages:
            ws.send(message)
        answer = json.loads(ws.recv(timeout=30))
        assert answer["type"] == "error", (name, answer)
        assert set(answer["error"]) == {"code", "message", "field", "correlation_id"}
        assert answer["error"]["code"] == code, (name, answer)
        # The connection carries on: the next utterance is a turn.
        assert stream_valid_turn(ws)["type"] == "done"
    assert httpx.get(f"{gateway.url}/health").status_code == 200


def test_a_frame_over_the_websocket_limit_closes_only_that_socket(gateway: Gateway) -> None:
    with connect(gateway.ws_url, max_size=None) as ws:
        ws.recv(timeout=10)
        ws.send(b"\0" * (17 * MiB))  # uvicorn's ws_max_size is 16 MiB
        with pytest.raises(Exception, match=r"1009|too big|closed"):
            ws.recv(timeout=30)
    assert valid_turn(gateway).status_code == 200


def test_schemathesis_finds_no_server_error(gateway: Gateway) -> None:
    report = fuzz_openapi(gateway.url, 20)
    print(f"schemathesis gateway: {report.examples} examples, statuses {report.statuses}")
    assert report.examples > 0
    assert report.server_errors == []
    assert httpx.get(f"{gateway.url}/health").status_code == 200
