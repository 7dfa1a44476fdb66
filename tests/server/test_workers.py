"""The worker pool and the one-future-per-request hand-off (server/workers.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ttscale.server.workers import Outcome, WorkerPool


def test_outcome_gathers_parts_in_order_from_threads() -> None:
    async def main() -> list[int]:
        outcome: Outcome[int] = Outcome(asyncio.get_running_loop(), 3)
        pool = WorkerPool(2)
        for i in (2, 0, 1):
            pool.submit(lambda i=i: outcome.set(i, i * 10), lambda: None)
        try:
            return await asyncio.wait_for(outcome.future, 10)
        finally:
            pool.shutdown()

    assert asyncio.run(main()) == [0, 10, 20]


def test_first_failure_settles_before_the_siblings_end() -> None:
    release = threading.Event()

    async def main() -> tuple[BaseException | None, bool, bool]:
        outcome: Outcome[int] = Outcome(asyncio.get_running_loop(), 2)
        pool = WorkerPool(2)

        def slow() -> None:
            release.wait(10)
            outcome.set(0, 1)

        pool.submit(slow, lambda: None)
        pool.submit(lambda: outcome.fail(ValueError("boom")), lambda: None)
        await asyncio.wait_for(asyncio.wait({outcome.future}), 10)
        finished_early = outcome.finished
        release.set()
        pool.shutdown()
        return outcome.future.exception(), finished_early, outcome.finished

    exc, finished_early, finished = asyncio.run(main())
    assert isinstance(exc, ValueError)
    assert not finished_early and finished  # the slow sibling was still running when the request failed


def test_pool_starts_threads_only_as_needed_and_never_past_its_size() -> None:
    gate = threading.Event()
    pool = WorkerPool(3)
    done = threading.Semaphore(0)
    for _ in range(2):  # one after the other, each finished: one thread serves both
        pool.submit(done.release, lambda: None)
        assert done.acquire(timeout=10)
    assert len(pool._threads) == 1
    started = threading.Semaphore(0)

    def blocked() -> None:
        started.release()
        gate.wait(10)

    for _ in range(5):
        pool.submit(blocked, lambda: None)
    for _ in range(3):
        assert started.acquire(timeout=10)
    assert len(pool._threads) == 3
    assert not started.acquire(timeout=0.05)  # two jobs wait for a thread
    gate.set()
    pool.shutdown()


def test_shutdown_drops_queued_jobs_and_refuses_new_ones() -> None:
    gate, started = threading.Event(), threading.Event()
    ran, dropped = [], []
    pool = WorkerPool(1)

    def first() -> None:
        started.set()
        gate.wait(10)
        ran.append("first")

    pool.submit(first, lambda: dropped.append("first"))
    assert started.wait(10)
    pool.submit(lambda: ran.append("second"), lambda: dropped.append("second"))
    closer = threading.Thread(target=pool.shutdown)
    closer.start()
    for _ in range(1000):  # shutdown drops the queued job while the first still runs
        if dropped:
            break
        threading.Event().wait(0.01)
    gate.set()
    closer.join(10)
    assert ran == ["first"] and dropped == ["second"]
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None, lambda: None)
