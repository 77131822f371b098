"""One correlation id per turn, from the gateway into every engine: the gateway process
against a local server that answers like our STT, LLM and TTS engines (their native
/transcribe and /synthesize, and the LLM's OpenAI-compatible chat completions) over real
HTTP, and records the headers of every call."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf
from fakevendors import Engines, ThreadServer, tone
from gatewaykit import Gateway, stream_utterance
from websockets.sync.client import connect

from voice_engines.demo.stack import internal_route

ENGINE_PATHS = ("/transcribe", "/v1/chat/completions", "/synthesize")


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[Engines, ThreadServer]]:
    fake = Engines()
    with ThreadServer(fake.app()) as server:
        yield fake, server


@pytest.fixture(scope="module")
def gateway(engines: tuple[Engines, ThreadServer]) -> Iterator[Gateway]:
    """A gateway whose three stages are internal, on the recording engines."""
    url = engines[1].url
    routes = {
        "agent": "test",
        "namespace": "test",
        "stages": {
            "stt": internal_route(url, "stt-c1", "whisper", {"language": "en"}),
            "llm": internal_route(url, "llm-c1", "smollm2", {"maxTokens": 20}),
            "tts": internal_route(url, "tts-c1", "joe", {"speed": 1}),
        },
    }
    gw = Gateway(routes=routes).wait_alive()
    yield gw
    gw.stop()


def wav() -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.frombuffer(tone(1.0, 16000), dtype="<i2"), 16000, format="WAV")
    return buffer.getvalue()


def post_turn(gateway: Gateway, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/turn",
        files={"file": ("question.wav", wav(), "audio/wav")},
        headers=headers,
        timeout=30,
    )


def ids_by_path(calls: list[tuple[str, dict[str, str]]]) -> dict[str, set[str | None]]:
    found: dict[str, set[str | None]] = {}
    for path, headers in calls:
        found.setdefault(path, set()).add(headers.get("x-request-id"))
    return found


@pytest.fixture
def fake(
    engines: tuple[Engines, ThreadServer],
    gateway: Gateway,  # noqa: ARG001 (started first, so its start-up calls are forgotten too)
) -> Engines:
    """The fake engines, with the calls made before this test (gateway start-up, earlier
    tests) forgotten."""
    recorder, _ = engines
    recorder.take()
    return recorder


def assert_no_credentials(calls: list[tuple[str, dict[str, str]]]) -> None:
    """Our engines take no key: none is ever sent to them."""
    for _, headers in calls:
        assert not {"authorization", "xi-api-key", "x-api-key"} & set(headers), headers


def test_a_turn_sends_the_callers_request_id_to_every_engine(
    fake: Engines, gateway: Gateway
) -> None:
    rid = "turn-" + uuid.uuid4().hex
    response = post_turn(gateway, {"X-Request-ID": rid})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == rid
    calls = fake.take()
    assert ids_by_path(calls) == {path: {rid} for path in ENGINE_PATHS}
    assert_no_credentials(calls)


def test_a_turn_without_an_id_sends_the_one_the_gateway_made(
    fake: Engines, gateway: Gateway
) -> None:
    first = post_turn(gateway)
    second = post_turn(gateway)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    made = [r.headers["x-request-id"] for r in (first, second)]
    assert made[0] != made[1]
    calls = fake.take()
    # Three calls per turn, in order: each turn's calls carry that turn's id.
    assert [path for path, _ in calls] == list(ENGINE_PATHS) * 2
    assert [headers.get("x-request-id") for _, headers in calls] == [made[0]] * 3 + [made[1]] * 3


def test_a_streamed_turn_sends_the_streams_id_to_every_engine(
    fake: Engines, gateway: Gateway
) -> None:
    rid = "stream-" + uuid.uuid4().hex
    pcm = tone(1.0, 16000)
    with connect(gateway.ws_url, additional_headers={"X-Request-ID": rid}) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        closing = stream_utterance(ws, pcm)
        assert closing["type"] == "done", closing
    calls = fake.take()
    assert ids_by_path(calls) == {path: {rid} for path in ENGINE_PATHS}
    assert_no_credentials(calls)
