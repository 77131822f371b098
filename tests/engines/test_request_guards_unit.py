"""The guards in common/ on their own, without models: text checks, Piper's text pieces,
audio header bounds, the body guard under FastAPI, the executor's admission by measured
service time, and metrics and access log agreeing on streams that fail after their 200."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry

from voice_engines.common.audio import decode_audio
from voice_engines.common.body_limit import BodySizeLimitMiddleware
from voice_engines.common.correlation import CorrelationIdMiddleware
from voice_engines.common.errors import ApiError, OverloadedError, install_error_handlers
from voice_engines.common.executor import BoundedExecutor
from voice_engines.common.metrics import RequestMetrics, RouteMetricsMiddleware, mark_failed
from voice_engines.common.text import check_text
from voice_engines.tts.backends.piper import bounded_pieces

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "text", ["a\x00b", "\ud800", "x\udfff", "\udbff\udc00 reversed is fine? no: \udc00"]
)
def test_nul_and_lone_surrogates_are_invalid_text(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_text(text, "text")
    assert (caught.value.status, caught.value.code, caught.value.field) == (
        400,
        "invalid_text",
        "text",
    )


@pytest.mark.parametrize("text", ["", "Hello.", "😀 \u200b \ufeff \x07 e\u0301", None])
def test_other_text_passes(text: str | None) -> None:
    check_text(text, "text")


def test_long_text_reaches_piper_in_bounded_pieces() -> None:
    assert bounded_pieces("Short text.") == ["Short text."]
    no_punctuation = " ".join(["word"] * 1000)
    pieces = bounded_pieces(no_punctuation, 200)
    assert max(map(len, pieces)) <= 200
    assert " ".join(pieces) == no_punctuation
    sentences = "This is one sentence. " * 30
    pieces = bounded_pieces(sentences, 200)
    assert all(piece.endswith(".") for piece in pieces)
    assert " ".join(pieces) == sentences.strip()
    assert [len(p) for p in bounded_pieces("a" * 450, 200)] == [200, 200, 50]


def _wav(rate: int, channels: int = 1, frames: int = 1600) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((frames, channels), np.float32), rate, format="WAV")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (_wav(4000), 400, "unsupported_sample_rate"),
        (_wav(384_000), 400, "unsupported_sample_rate"),
        (_wav(16000, channels=9), 400, "unsupported_channels"),
        (_wav(8000, frames=8000 * 11), 413, "audio_too_long"),
    ],
)
def test_audio_headers_are_bounded(data: bytes, status: int, code: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode_audio(data, "file", max_seconds=10)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_float_audio_is_clipped_to_full_scale() -> None:
    buffer = io.BytesIO()
    sf.write(buffer, np.array([0.5, 3.0, -7.0], np.float32), 16000, format="WAV", subtype="FLOAT")
    samples, _ = decode_audio(buffer.getvalue())
    assert samples[:, 0].tolist() == [0.5, 1.0, -1.0]


# --- the body guard under FastAPI ---


def guarded_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/echo")
    async def echo(body: dict[str, str]) -> dict[str, str]:
        return body

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=1024, timeout_s=0.2)
    return app


async def test_a_chunked_body_over_the_limit_is_413_not_fastapis_400() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"a": "'
        for _ in range(10):
            yield b"x" * 512

    transport = httpx.ASGITransport(app=guarded_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post(
            "/echo", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_a_body_that_stops_arriving_is_408() -> None:
    app = guarded_app()
    sent: list[dict[str, object]] = []
    first = True

    async def receive() -> dict[str, object]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b'{"a": ', "more_body": True}
        await asyncio.Event().wait()  # the rest never comes
        raise AssertionError

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("t", 80),
        "client": ("c", 1),
        "root_path": "",
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=60)
    assert sent[0]["status"] == 408
    assert b"request_timeout" in sent[1]["body"]  # type: ignore[operator]
    assert (b"connection", b"close") in sent[0]["headers"]  # type: ignore[operator]


# --- admission by measured service time ---


async def test_requests_that_would_outwait_the_queue_timeout_are_refused_at_once() -> None:
    """One worker, service time 1 s, queue timeout 2.5 s: of six requests at once, those
    with three or more ahead of them would wait 3 s or more, so they get 429 at once
    instead of a 503 after waiting."""
    executor = BoundedExecutor("test", 1, 32, queue_timeout_s=2.5)
    release = threading.Event()

    def work() -> str:
        release.wait(1.0)
        return "done"

    try:
        assert await executor.run(work) == "done"  # measures the service time
        outcomes = await asyncio.gather(
            *(executor.run(work) for _ in range(6)), return_exceptions=True
        )
    finally:
        executor.shutdown()
    refused = [o for o in outcomes if isinstance(o, OverloadedError)]
    assert [o for o in outcomes if o == "done"] == ["done"] * 3
    assert len(refused) == 3
    assert all((o.status, o.code) == (429, "overloaded") for o in refused)
    assert all(o.headers["Retry-After"] == "1" for o in refused)


async def test_a_stream_that_fails_before_its_first_item_raises_before_any_response() -> None:
    executor = BoundedExecutor("test", 1, 4, queue_timeout_s=10)

    def items() -> list[str]:
        raise ApiError(400, "invalid_text", "bad")

    try:
        with pytest.raises(ApiError):
            await executor.stream(lambda: iter(items()))
    finally:
        executor.shutdown()


# --- metrics and the access log agree on broken streams ---


def streaming_app(registry: CollectorRegistry) -> FastAPI:
    app = FastAPI()

    @app.get("/error-event")
    async def error_event(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"data: 1\n\n"
            mark_failed(request.scope, 503)
            yield b'data: {"error": {}}\n\n'

        return StreamingResponse(body())

    @app.get("/broken")
    async def broken() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"part"
            raise RuntimeError("the worker died")

        return StreamingResponse(body())

    metrics = RequestMetrics(registry, "t", "Test")
    app.add_middleware(RouteMetricsMiddleware, routes={"/error-event": metrics, "/broken": metrics})
    app.add_middleware(CorrelationIdMiddleware)
    return app


async def test_streams_failing_after_their_200_count_and_log_as_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    transport = httpx.ASGITransport(app=streaming_app(registry), raise_app_exceptions=False)
    with caplog.at_level(logging.INFO, logger="voice_engines.access"):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/error-event")).status_code == 200
            # The body breaks off after its first part (the client sees a cut stream).
            await client.get("/broken")
    errors = {
        sample.labels["endpoint"]: (sample.labels["status"], sample.value)
        for metric in registry.collect()
        if metric.name == "t_errors"
        for sample in metric.samples
        if sample.name == "t_errors_total"
    }
    assert errors == {"/error-event": ("503", 1.0), "/broken": ("500", 1.0)}
    logged = {r.path: r.status for r in caplog.records if hasattr(r, "path")}  # type: ignore[attr-defined]
    assert logged == {"/error-event": 503, "/broken": 500}
