"""The rollout probe runner against a real HTTP server on 127.0.0.1: a plan's request
becomes one attempt on the event loop, its result is seen once, and the agent is woken."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from voice_operator.controllers.probes import ProbeRunner
from voice_operator.observe import ProbeResult
from voice_operator.plan import ProbeRequest
from voice_operator.workqueue import Key

pytestmark = pytest.mark.local
KEY = Key("VoiceAgent", "voice", "support")


class _Engine(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200 if self.path == "/ready" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def engine() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Engine.hits = 0
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def _run(runner: ProbeRunner, woken: asyncio.Queue[Key], *probes: ProbeRequest) -> Key:
    runner.bind(asyncio.get_running_loop())
    # A reconcile asks from its worker thread, as the executor does.
    await asyncio.gather(*(asyncio.to_thread(runner.request, KEY, p) for p in probes))
    return await asyncio.wait_for(woken.get(), timeout=10)


def _probe(url: str, path: str, revision: str = "rev1", after: float = 0.0) -> ProbeRequest:
    return ProbeRequest("stt", revision, url + path, timeout_seconds=2, after_seconds=after)


async def test_a_passing_attempt_is_seen_once_and_wakes_the_agent(engine: str) -> None:
    woken: asyncio.Queue[Key] = asyncio.Queue()
    runner = ProbeRunner(wake=woken.put_nowait)
    # Asked twice (two reconciles before it finished): one attempt.
    assert await _run(runner, woken, _probe(engine, "/ready"), _probe(engine, "/ready")) == KEY
    assert runner.take(KEY) == {"stt": ProbeResult("rev1", True)}
    assert runner.take(KEY) == {}
    assert _Engine.hits == 1


async def test_a_failing_or_unreachable_engine_is_a_failed_attempt(engine: str) -> None:
    woken: asyncio.Queue[Key] = asyncio.Queue()
    runner = ProbeRunner(wake=woken.put_nowait)
    await _run(runner, woken, _probe(engine, "/broken"))
    assert runner.take(KEY) == {"stt": ProbeResult("rev1", False)}
    await _run(runner, woken, _probe("http://127.0.0.1:9", "/ready", "rev2"))
    assert runner.take(KEY) == {"stt": ProbeResult("rev2", False)}


async def test_a_retry_waits_before_its_attempt(engine: str) -> None:
    woken: asyncio.Queue[Key] = asyncio.Queue()
    runner = ProbeRunner(wake=woken.put_nowait)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _run(runner, woken, _probe(engine, "/ready", after=0.3))
    assert loop.time() - started >= 0.3
    await runner.stop()
