"""The work queue: one reconcile per key at a time, duplicates folded, failures retried
with backoff, requeues honoured."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest

from voice_operator.workqueue import Key, Retry, WorkQueue

pytestmark = pytest.mark.unit
A, B = Key("VoiceAgent", "ns", "a"), Key("VoiceAgent", "ns", "b")


@contextlib.asynccontextmanager
async def running(queue: WorkQueue):
    task = asyncio.create_task(queue.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(predicate, limit: float = 2.0) -> None:
    """Poll a condition the reconciles change (they have no event of their own to await)."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_duplicate_adds_fold_into_one_reconcile():
    seen: list[Key] = []

    async def reconcile(key: Key) -> None:
        seen.append(key)

    queue = WorkQueue(reconcile, workers=2)
    for _ in range(5):
        queue.add(A)
    queue.add(B)
    async with running(queue):
        await until(lambda: len(seen) == 2)
        await asyncio.sleep(0.05)
    assert sorted(seen) == [A, B]


async def test_one_key_is_never_reconciled_twice_at_once():
    active, overlaps, calls = set(), [], []

    async def reconcile(key: Key) -> None:
        if key in active:
            overlaps.append(key)
        active.add(key)
        calls.append(key)
        await asyncio.sleep(0.02)
        active.discard(key)

    queue = WorkQueue(reconcile, workers=4)
    async with running(queue):
        queue.add(A)
        await until(lambda: calls)
        queue.add(A)  # arrives while A runs: runs again afterwards, not alongside
        queue.add(A)
        await until(lambda: len(calls) == 2)
        await asyncio.sleep(0.05)
    assert overlaps == []
    assert len(calls) == 2


async def test_failures_are_retried_with_growing_backoff_then_reset():
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def reconcile(_key: Key) -> None:
        times.append(loop.time())
        if len(times) < 4:
            raise RuntimeError("apiserver hiccup")

    queue = WorkQueue(reconcile, workers=1, base_backoff=0.02, max_backoff=1)
    async with running(queue):
        queue.add(A)
        await until(lambda: len(times) == 4)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.02
    assert gaps[1] >= 0.04
    assert gaps[2] >= 0.08
    assert queue.errors == 3


async def test_a_reconcile_can_ask_to_run_again_later():
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def reconcile(_key: Key) -> float | None:
        times.append(loop.time())
        return 0.05 if len(times) == 1 else None

    queue = WorkQueue(reconcile, workers=1)
    async with running(queue):
        queue.add(A)
        await until(lambda: len(times) == 2)
    assert times[1] - times[0] >= 0.05


async def test_an_earlier_add_wins_over_a_later_due_time():
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def reconcile(_key: Key) -> None:
        times.append(loop.time())

    queue = WorkQueue(reconcile, workers=1)
    async with running(queue):
        start = loop.time()
        queue.add(A, after=10)
        queue.add(A)  # an event: now, not in ten seconds
        await until(lambda: times)
    assert times[0] - start < 1


async def test_a_resync_does_not_cut_a_backoff_short_but_a_change_does(
    caplog: pytest.LogCaptureFixture,
):
    attempts: list[Key] = []

    async def reconcile(key: Key) -> None:
        attempts.append(key)
        raise Retry("applying Service a-stt failed: 422 Invalid")

    queue = WorkQueue(reconcile, workers=1, base_backoff=60.0)
    queue.add(A)
    async with running(queue):
        await until(lambda: len(attempts) == 1)
        queue.add(A, resync=True)
        await asyncio.sleep(0.05)
        assert len(attempts) == 1  # still backing off
        queue.add(A)
        await until(lambda: len(attempts) == 2)
    # Reported already (a condition, an Event): one line each, no traceback.
    lines = [r for r in caplog.records if "422 Invalid" in r.getMessage()]
    assert lines
    assert all(r.exc_info is None for r in lines)
