"""Concurrency: 16 clients at once get answers and the server's memory stays put; past
the queue bound, clients are turned away at once with Retry-After instead of hanging."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from enginekit import EngineProcess, Spoken, ThreadServer, piper_voice

pytestmark = pytest.mark.engines

CLIENTS = 16
MiB = 1024 * 1024


def concurrently(
    call: Callable[[httpx.Client], httpx.Response], clients: int = CLIENTS
) -> list[httpx.Response]:
    def one(_: int) -> httpx.Response:
        with httpx.Client(timeout=900) as client:
            return call(client)

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(clients)))


def rounds_rss(server: EngineProcess, call: Callable[[httpx.Client], httpx.Response]) -> list[int]:
    """RSS after each of three rounds of 16 concurrent clients, all of which must succeed."""
    sizes = []
    for _ in range(3):
        responses = concurrently(call)
        failures = [r.text for r in responses if r.status_code != 200]
        assert failures == []
        sizes.append(server.rss_bytes())
    return sizes


def assert_bounded(sizes: list[int], slack_mib: int) -> None:
    # The first round grows pools and caches to their working size; later rounds of the
    # same load must not keep growing.
    assert sizes[2] - sizes[0] < slack_mib * MiB, [s // MiB for s in sizes]


def test_stt_sixteen_clients(stt_whispercpp: EngineProcess, spoken: list[Spoken]) -> None:
    wav = spoken[0].wav
    sizes = rounds_rss(
        stt_whispercpp,
        lambda c: c.post(f"{stt_whispercpp.url}/transcribe", files={"file": ("a.wav", wav)}),
    )
    assert_bounded(sizes, 64)


def test_tts_sixteen_clients(tts: EngineProcess) -> None:
    def call(client: httpx.Client) -> httpx.Response:
        return client.post(
            f"{tts.url}/synthesize", json={"text": "One more request, please.", "stream": True}
        )

    assert_bounded(rounds_rss(tts, call), 64)


def test_llm_sixteen_clients(llm_llamacpp: EngineProcess) -> None:
    def call(client: httpx.Client) -> httpx.Response:
        return client.post(
            f"{llm_llamacpp.url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8},
        )

    assert_bounded(rounds_rss(llm_llamacpp, call), 64)


def _tts_app(**limits: object):  # type: ignore[no-untyped-def]
    from voice_engines.tts.app import create_app
    from voice_engines.tts.settings import TtsEngineSettings

    return create_app(TtsEngineSettings(tts_voice_path=piper_voice(), **limits))


LONG_TEXT = "This request keeps the only worker busy for a little while. " * 6


def test_full_queue_answers_429_with_retry_after_at_once() -> None:
    with ThreadServer(_tts_app(engine_max_concurrency=1, engine_max_queue=1)) as server:
        responses = concurrently(
            lambda c: c.post(f"{server.url}/synthesize", json={"text": LONG_TEXT}), clients=8
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) >= 2
        rejected = [r for r in responses if r.status_code == 429]
        assert rejected, statuses
        for response in rejected:
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "overloaded"
        assert set(statuses) <= {200, 429}
        # Once the burst is over the service answers normally again.
        assert httpx.post(f"{server.url}/synthesize", json={"text": "Hi."}).status_code == 200


def test_queue_timeout_answers_503_with_retry_after() -> None:
    app = _tts_app(engine_max_concurrency=1, engine_max_queue=8, engine_queue_timeout=0.05)
    with ThreadServer(app) as server:
        responses = concurrently(
            lambda c: c.post(f"{server.url}/synthesize", json={"text": LONG_TEXT}), clients=6
        )
        timed_out = [r for r in responses if r.status_code == 503]
        assert timed_out, [r.status_code for r in responses]
        for response in timed_out:
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "queue_timeout"
        assert {r.status_code for r in responses} <= {200, 503}
