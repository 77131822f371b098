"""Fast tests of the engines' pure helpers: error shape, correlation ids, audio helpers,
the bounded executor, session history."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from fastapi.exceptions import RequestValidationError

from voice_engines.common.audio import (
    decode_audio,
    encode,
    streaming_wav_header,
    to_mono_at,
)
from voice_engines.common.correlation import pick_correlation_id
from voice_engines.common.errors import ApiError, OverloadedError, error_body, validation_error
from voice_engines.common.executor import BoundedExecutor
from voice_engines.common.sessions import SessionStore

pytestmark = pytest.mark.unit


def test_error_body_shape() -> None:
    assert error_body("empty_text", "text is empty", "text") == {
        "error": {
            "code": "empty_text",
            "message": "text is empty",
            "field": "text",
            "correlation_id": None,
        }
    }


def test_validation_errors_name_the_field() -> None:
    exc = RequestValidationError(
        [{"type": "less_than_equal", "loc": ("body", "speed"), "msg": "too big", "input": 9}]
    )
    error = validation_error(exc)
    assert (error.status, error.code, error.field) == (422, "invalid_request", "speed")
    assert "speed" in error.message
    bad_json = RequestValidationError(
        [
            {
                "type": "json_invalid",
                "loc": ("body", 5),
                "msg": "JSON decode error",
                "ctx": {"error": "Expecting value"},
            }
        ]
    )
    assert (validation_error(bad_json).status, validation_error(bad_json).code) == (
        400,
        "malformed_json",
    )


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        ([(b"x-request-id", b"abc-123")], "abc-123"),
        ([(b"x-correlation-id", b"trace:9.1")], "trace:9.1"),
        ([(b"x-request-id", b"bad id")], None),
        ([(b"x-request-id", b"x" * 200)], None),
        ([(b"x-request-id", b"line\nbreak")], None),
        ([], None),
    ],
)
def test_correlation_id_taken_when_sane(
    headers: list[tuple[bytes, bytes]], kept: str | None
) -> None:
    cid = pick_correlation_id(headers)
    if kept is None:
        assert len(cid) == 32
        assert int(cid, 16) >= 0
    else:
        assert cid == kept


def _wav(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_decode_mixdown_and_resample() -> None:
    rate = 44100
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    samples, got_rate = decode_audio(_wav(np.stack([tone, tone], axis=1), rate))
    assert got_rate == rate
    assert samples.shape == (rate, 2)
    mono16k = to_mono_at(samples, rate, 16000)
    assert mono16k.dtype == np.float32
    assert abs(len(mono16k) - 16000) <= 1
    assert np.abs(mono16k).max() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    ("data", "code"), [(b"", "empty_upload"), (b"hello world" * 10, "unsupported_audio")]
)
def test_decode_rejects_non_audio(data: bytes, code: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode_audio(data)
    assert caught.value.code == code
    assert caught.value.status in (400, 415)


def test_streaming_wav_header_is_readable_with_the_audio_after_it() -> None:
    tone = np.sin(np.linspace(0, 100, 8000)).astype(np.float32) * 0.3
    stream = streaming_wav_header(8000) + encode(tone, 8000, "pcm")
    audio, rate = sf.read(io.BytesIO(stream), dtype="float32")
    assert rate == 8000
    assert len(audio) == len(tone)
    assert np.allclose(audio, tone, atol=1e-3)


def test_encode_formats() -> None:
    tone = np.zeros(1600, np.float32)
    assert sf.info(io.BytesIO(encode(tone, 16000, "wav"))).samplerate == 16000
    assert sf.info(io.BytesIO(encode(tone, 16000, "flac"))).format == "FLAC"
    assert len(encode(tone, 16000, "pcm")) == 3200


# --- the bounded executor ---


async def test_executor_runs_off_the_event_loop() -> None:
    executor = BoundedExecutor("t", 1, 0, queue_timeout_s=5)
    loop_thread = threading.get_ident()
    assert await executor.run(threading.get_ident) != loop_thread
    executor.shutdown()


async def test_executor_refuses_past_its_bound_with_retry_after() -> None:
    executor = BoundedExecutor("t", max_concurrency=1, max_queue=1, queue_timeout_s=5)
    release = threading.Event()
    running = [asyncio.create_task(executor.run(release.wait)) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(OverloadedError) as caught:
        await executor.run(time.sleep, 0)
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "1"
    release.set()
    assert await asyncio.gather(*running) == [True, True]
    assert executor.in_flight == 0
    assert await executor.run(lambda: 7) == 7
    executor.shutdown()


async def test_executor_counts_work_in_flight_and_waiting_in_the_queue() -> None:
    executor = BoundedExecutor("t", max_concurrency=1, max_queue=3, queue_timeout_s=5)
    release = threading.Event()
    running = [asyncio.create_task(executor.run(release.wait)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert (executor.in_flight, executor.queue_depth) == (3, 2)
    release.set()
    await asyncio.gather(*running)
    assert (executor.in_flight, executor.queue_depth) == (0, 0)
    executor.shutdown()


async def test_executor_queue_timeout_is_503_and_skips_the_work() -> None:
    executor = BoundedExecutor("t", max_concurrency=1, max_queue=4, queue_timeout_s=0.05)
    release = threading.Event()
    ran: list[int] = []
    busy = asyncio.create_task(executor.run(release.wait))
    await asyncio.sleep(0.01)
    with pytest.raises(OverloadedError) as caught:
        await executor.run(ran.append, 1)
    assert caught.value.status == 503
    assert caught.value.code == "queue_timeout"
    release.set()
    await busy
    await asyncio.sleep(0.05)
    assert ran == []  # the abandoned job never ran
    executor.shutdown()


async def test_executor_stream_yields_items_as_made_and_stops_when_closed() -> None:
    executor = BoundedExecutor("t", 1, 0, queue_timeout_s=5)
    made: list[int] = []
    gate = threading.Event()

    def produce():  # type: ignore[no-untyped-def]
        for i in range(100):
            made.append(i)
            yield i
            if i == 0:
                gate.wait(5)  # the consumer has the first item before the second is made

    items = await executor.stream(produce)
    first = await anext(items)
    assert first == 0
    assert made == [0]
    gate.set()
    await items.aclose()
    await asyncio.sleep(0.05)
    assert len(made) < 100
    assert executor.in_flight == 0
    executor.shutdown()


async def test_executor_stream_propagates_errors() -> None:
    executor = BoundedExecutor("t", 1, 0, queue_timeout_s=5)

    def broken():  # type: ignore[no-untyped-def]
        yield 1
        raise ApiError(400, "nope", "broken")

    items = await executor.stream(broken)
    assert await anext(items) == 1
    with pytest.raises(ApiError):
        await anext(items)
    executor.shutdown()


# --- /chat history ---


def test_session_history_is_bounded_in_turns_sessions_and_time() -> None:
    store = SessionStore(max_sessions=2, max_turns=2, ttl_s=60)
    a = store.get("a")
    for i in range(5):
        a.remember(f"q{i}", f"a{i}")
    assert [m["content"] for m in a.messages()] == ["q3", "a3", "q4", "a4"]
    store.get("b")
    store.get("a")  # a is now the most recent
    store.get("c")  # evicts b, the least recently used
    assert store.get("a") is a
    assert len(store) == 2
    fresh = store.get(None)
    assert fresh.id
    assert fresh.turns.maxlen == 2
    a.touched -= 120
    store.get("c")
    assert "a" not in store._sessions
