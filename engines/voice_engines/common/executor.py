"""Runs blocking inference on worker threads behind a bounded queue.

Admission is decided at once on the event loop: a request that finds every worker busy and
the queue full gets 429 with Retry-After instead of waiting, and so does one whose expected
wait (the requests ahead of it per worker times the recent service time) is longer than
the queue timeout: it would only wait that long to be refused. One that still waits in the
queue longer than the queue timeout gets 503. Nothing waits without bound, and the event
loop never runs inference itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from voice_engines.common.errors import OverloadedError

T = TypeVar("T")

_END = object()
# Weight of the newest job in the service-time estimate (an exponential moving average):
# recent enough to follow a slower backend within a few requests, steady against one
# outlier.
_SERVICE_WEIGHT = 0.3


class ServiceTime:
    """The recent time a job holds a worker, measured from start to end."""

    def __init__(self) -> None:
        self.seconds: float | None = None
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            if self.seconds is None:
                self.seconds = seconds
            else:
                self.seconds += _SERVICE_WEIGHT * (seconds - self.seconds)

    def expected_wait(self, ahead: int, workers: int) -> float:
        """Seconds until a job with `ahead` admitted jobs before it gets a worker: every
        worker has to finish ahead // workers of them first (the running ones counted
        whole, which errs towards waiting less)."""
        if self.seconds is None:
            return 0.0
        return (ahead // workers) * self.seconds


class _Job:
    """One request's work. Starting and abandoning race (worker thread vs. event loop), so
    both go through one lock: exactly one of them wins."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self.loop = loop
        self.deadline = deadline
        self.started = False
        self.started_at = 0.0
        self.abandoned = False
        self.picked_up: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()

    def begin(self) -> bool:
        with self._lock:
            if not self.abandoned and time.monotonic() <= self.deadline:
                self.started = True
                self.started_at = time.monotonic()
            else:
                self.abandoned = True
        self.loop.call_soon_threadsafe(_resolve, self.picked_up)
        return self.started

    def abandon(self) -> bool:
        """Marks the job abandoned; True if no worker had started it."""
        with self._lock:
            self.abandoned = True
            return not self.started


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class BoundedExecutor:
    def __init__(
        self,
        name: str,
        max_concurrency: int,
        max_queue: int,
        queue_timeout_s: float,
        retry_after_s: int = 1,
    ) -> None:
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        self.name = name
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix=f"{name}-infer")
        self._admitted = 0
        self._running = 0
        self.service = ServiceTime()
        # Taken on the event loop, released from worker threads (future callbacks).
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Admitted requests: holding a worker or waiting in the queue for one."""
        return self._admitted

    @property
    def queue_depth(self) -> int:
        """Admitted requests still waiting for a worker."""
        with self._lock:
            return max(0, self._admitted - self._running)

    def _admit(self) -> _Job:
        with self._lock:
            if self._admitted >= self.max_concurrency + self.max_queue:
                raise OverloadedError(
                    429,
                    "overloaded",
                    f"{self.name} is busy: {self._admitted} requests in flight and the "
                    "queue is full",
                    self.retry_after_s,
                )
            wait = self.service.expected_wait(self._admitted, self.max_concurrency)
            if wait > self.queue_timeout_s:
                raise OverloadedError(
                    429,
                    "overloaded",
                    f"{self.name} is busy: {self._admitted} requests in flight would keep "
                    f"this one waiting about {wait:.0f} s, longer than the queue timeout of "
                    f"{self.queue_timeout_s:g} s",
                    self.retry_after_s,
                )
            self._admitted += 1
        return _Job(asyncio.get_running_loop(), time.monotonic() + self.queue_timeout_s)

    def _release(self, _: object = None) -> None:
        with self._lock:
            self._admitted -= 1

    def _queue_timeout(self) -> OverloadedError:
        return OverloadedError(
            503,
            "queue_timeout",
            f"{self.name} could not start the request within {self.queue_timeout_s:g} s",
            self.retry_after_s,
        )

    def _submit(self, job: _Job, work: Callable[[], Any]) -> Future[Any]:
        ctx = contextvars.copy_context()  # keeps the correlation id in worker-thread logs

        def guarded() -> Any:
            if not job.begin():
                raise self._queue_timeout()
            with self._lock:
                self._running += 1
            try:
                return work()
            finally:
                with self._lock:
                    self._running -= 1
                self.service.observe(time.monotonic() - job.started_at)

        try:
            future = self._pool.submit(ctx.run, guarded)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._release)
        return future

    async def _wait_started(self, job: _Job, future: Future[Any]) -> None:
        remaining = max(0.0, job.deadline - time.monotonic())
        try:
            await asyncio.wait_for(asyncio.shield(job.picked_up), timeout=remaining)
        except TimeoutError:
            if job.abandon():
                future.cancel()
                raise self._queue_timeout() from None

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        job = self._admit()
        future = self._submit(job, lambda: fn(*args, **kwargs))
        try:
            await self._wait_started(job, future)
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            job.abandon()
            future.cancel()
            raise

    async def stream(
        self, fn: Callable[..., Iterator[T]], *args: Any, **kwargs: Any
    ) -> AsyncIterator[T]:
        """Admits now and waits for a worker and for the first item, so overload and a
        failure before anything was made (bad input the library refuses) are reported
        before any response starts; then returns the items fn's iterator yields, each as
        soon as the worker makes it. Closing the returned iterator early stops the worker
        at its next item."""
        job = self._admit()
        loop = job.loop
        items: asyncio.Queue[Any] = asyncio.Queue()

        def produce() -> None:
            try:
                iterator = fn(*args, **kwargs)
                try:
                    for item in iterator:
                        if job.abandoned:
                            break
                        loop.call_soon_threadsafe(items.put_nowait, item)
                finally:
                    close = getattr(iterator, "close", None)
                    if close is not None:
                        close()
            except BaseException as exc:
                loop.call_soon_threadsafe(items.put_nowait, exc)
                return
            loop.call_soon_threadsafe(items.put_nowait, _END)

        future = self._submit(job, produce)
        try:
            await self._wait_started(job, future)
        except BaseException:
            job.abandon()
            future.cancel()
            raise
        if future.done() and not future.cancelled() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]
        try:
            first = await items.get()
        except BaseException:
            job.abandon()
            raise
        if isinstance(first, BaseException):
            job.abandon()
            raise first
        return self._drain(job, first, items)

    @staticmethod
    async def _drain(job: _Job, first: Any, items: asyncio.Queue[Any]) -> AsyncIterator[Any]:
        try:
            if first is _END:
                return
            yield first
            while True:
                item = await items.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.abandon()

    async def run_unqueued(self, fn: Callable[[], T]) -> T:
        """Runs start-up work (model load, warm-up) on a worker thread, outside admission.
        On the workers themselves because libraries that thread through OpenMP keep one
        thread team per calling thread: loading on another thread would leave a second
        team spinning beside the one inference uses."""
        return await asyncio.wrap_future(self._pool.submit(contextvars.copy_context().run, fn))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
