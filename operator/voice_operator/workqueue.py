"""A work queue of object keys, as in controller-runtime.

Why not reconcile inside kopf's handlers directly: an agent's state depends on other
objects (its Deployments, its ModelAssets, Secrets), and kopf's handlers run per object,
concurrently. So every kopf handler only *enqueues* the key of the object to reconcile;
this queue guarantees one reconcile per key at a time, folds duplicate wake-ups into one,
retries failures with exponential backoff, and lets a reconcile ask to be run again later
(e.g. when a grace period ends). Reconciles are level-based: they read everything fresh, so
a restart only needs every object enqueued once (kopf lists them all when it starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class Key:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


class Retry(Exception):  # noqa: N818 (it says what the queue does with it)
    """A reconcile that failed in a way it has already reported (a condition, an Event):
    retried with backoff like any failure, logged in one line, without a traceback."""


Reconcile = Callable[[Key], Awaitable[float | None]]
"""Reconcile one key; return seconds after which to run it again, or None."""


class WorkQueue:
    def __init__(
        self,
        reconcile: Reconcile,
        *,
        workers: int = 4,
        base_backoff: float = 1.0,
        max_backoff: float = 300.0,
    ) -> None:
        self._reconcile = reconcile
        self._workers = workers
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self._heap: list[tuple[float, int, Key]] = []
        self._due: dict[Key, float] = {}  # earliest time each waiting key is due
        self._active: set[Key] = set()
        self._dirty: dict[Key, float] = {}  # keys re-added while being reconciled
        self._failures: dict[Key, int] = {}
        self._counter = itertools.count()
        self._wakeup = asyncio.Event()
        self.reconciles = 0
        self.errors = 0

    def add(self, key: Key, after: float = 0.0, *, resync: bool = False) -> None:
        """Run `key` in `after` seconds (or sooner if already due sooner). A resync leaves a
        key that is backing off after failures alone: only a real change retries it early."""
        if resync and key in self._failures:
            return
        due = time.monotonic() + after
        if key in self._active:
            self._dirty[key] = min(due, self._dirty.get(key, due))
            return
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._counter), key))
        self._wakeup.set()

    def __len__(self) -> int:
        return len(self._due)

    async def _next(self) -> Key:
        while True:
            now = time.monotonic()
            while self._heap:
                due, _, key = self._heap[0]
                if self._due.get(key) != due:  # superseded by an earlier add
                    heapq.heappop(self._heap)
                    continue
                if due > now:
                    break
                heapq.heappop(self._heap)
                del self._due[key]
                return key
            timeout = self._heap[0][0] - now if self._heap else None
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _work(self) -> None:
        while True:
            key = await self._next()
            self._active.add(key)
            again: float | None = None
            try:
                again = await self._reconcile(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.errors += 1
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                again = min(self._max_backoff, self._base_backoff * 2 ** (failures - 1))
                if isinstance(error, Retry):
                    log.warning(
                        "reconcile of %s: %s (attempt %d); retrying in %.0fs",
                        key,
                        error,
                        failures,
                        again,
                    )
                else:
                    log.exception(
                        "reconcile of %s failed (attempt %d); retrying in %.0fs",
                        key,
                        failures,
                        again,
                    )
            finally:
                self.reconciles += 1
                self._active.discard(key)
            dirty = self._dirty.pop(key, None)
            if dirty is not None:
                self.add(key, max(0.0, dirty - time.monotonic()))
            if again is not None:
                self.add(key, again)

    async def run(self) -> None:
        """Run the workers until cancelled."""
        async with asyncio.TaskGroup() as group:
            for i in range(self._workers):
                group.create_task(self._work(), name=f"reconcile-worker-{i}")
