"""One correlation id per turn, from the gateway into every engine: the gateway process
against a local server that answers like our STT, LLM and TTS engines (their native
/transcribe and /synthesize, and the LLM's OpenAI-compatible chat completions) over real
HTTP, and records the headers of every call."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from fakevendors import ThreadServer, tone
from gatewaykit import Gateway
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from websockets.sync.client import connect

from voice_engines.demo.stack import internal_route

ENGINE_PATHS = ("/transcribe", "/v1/chat/completions", "/synthesize")


class Engines:
    """Our three engines' endpoints, each call's path and headers recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def _record(self, request: Request) -> None:
        with self.lock:
            self.calls.append(
                (request.url.path, {k.lower(): v for k, v in request.headers.items()})
            )

    def take(self) -> list[tuple[str, dict[str, str]]]:
        with self.lock:
            calls, self.calls = self.calls, []
        return calls

    async def transcribe(self, request: Request) -> Response:
        self._record(request)
        await request.form()
        return JSONResponse({"text": "what is the weather like"})

    async def chat(self, request: Request) -> Response:
        self._record(request)
        body = await request.json()

        async def events() -> Any:
            for piece in ("It is sunny.", " Enjoy the day."):
                await asyncio.sleep(0.01)
                chunk = {
                    "object": "chat.completion.chunk",
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": piece}}],
                }
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def synthesize(self, request: Request) -> Response:
        self._record(request)
        body = await request.json()
        pcm = tone(0.02 * len(body["text"]), int(body["sample_rate"]))
        return StreamingResponse(iter([pcm]), media_type="audio/pcm")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/transcribe", self.transcribe, methods=["POST"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/synthesize", self.synthesize, methods=["POST"]),
            ]
        )


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
        for offset in range(0, len(pcm), 640):
            ws.send(pcm[offset : offset + 640])
        ws.send(json.dumps({"type": "end"}))
        while True:
            message = ws.recv(timeout=30)
            if isinstance(message, str) and json.loads(message)["type"] in ("done", "error"):
                assert json.loads(message)["type"] == "done", message
                break
    calls = fake.take()
    assert ids_by_path(calls) == {path: {rid} for path in ENGINE_PATHS}
    assert_no_credentials(calls)
