"""Rollout probes, run beside the reconciles: a plan asks for an attempt, the runner makes
it on the event loop (no HTTP inside a reconcile), keeps the result, and wakes the agent,
whose next reconcile takes the result into its observation."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import httpx

from voice_operator.observe import ProbeResult
from voice_operator.plan import ProbeRequest
from voice_operator.workqueue import Key

log = logging.getLogger(__name__)


class ProbeRunner:
    def __init__(self, wake: Callable[[Key], None]) -> None:
        self.wake = wake
        self._lock = threading.Lock()
        self._results: dict[Key, dict[str, ProbeResult]] = {}
        self._running: set[tuple[Key, str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def take(self, key: Key) -> dict[str, ProbeResult]:
        """The attempts finished since the last call, by stage (each is seen once)."""
        with self._lock:
            return self._results.pop(key, {})

    def request(self, key: Key, probe: ProbeRequest) -> None:
        """Start the attempt unless one for this revision is already on its way. Called
        from a reconcile's thread."""
        attempt = (key, probe.stage, probe.revision)
        with self._lock:
            if attempt in self._running or self._loop is None:
                return
            self._running.add(attempt)
        self._loop.call_soon_threadsafe(self._start, key, probe)

    def _start(self, key: Key, probe: ProbeRequest) -> None:
        task = asyncio.create_task(self._attempt(key, probe), name=f"probe {key} {probe.stage}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempt(self, key: Key, probe: ProbeRequest) -> None:
        try:
            await asyncio.sleep(probe.after_seconds)
            try:
                async with httpx.AsyncClient(timeout=probe.timeout_seconds) as client:
                    passed = (await client.get(probe.url)).status_code == 200
            except httpx.HTTPError as e:
                log.info("rollout probe of %s/%s %s failed: %s", key, probe.stage, probe.url, e)
                passed = False
            with self._lock:
                self._results.setdefault(key, {})[probe.stage] = ProbeResult(probe.revision, passed)
        finally:
            with self._lock:
                self._running.discard((key, probe.stage, probe.revision))
        self.wake(key)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
