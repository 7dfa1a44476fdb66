"""The threads that run strategies, and how their results reach the event loop.

A request's choices each run in a worker thread; the event loop waits on one asyncio future per
request (:class:`Outcome`), settled by a single ``call_soon_threadsafe`` when its last choice
ends or its first one fails. ``concurrent.futures`` would do the same with a future, a condition
and a loop callback per choice, then an ``asyncio.gather`` over them: on a fast backend those
hand-offs cost more CPU than the strategy itself, and the proxy's throughput is bound by one core
(docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

Job = tuple[Callable[[], None], Callable[[], None]]
"""What a worker runs, and what shutdown calls instead if the job never ran."""


class WorkerPool:
    """Up to ``size`` threads taking jobs in arrival order; threads start as jobs need them."""

    def __init__(self, size: int, name: str = "ttscale-solve") -> None:
        self.size = size
        self.name = name
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, run: Callable[[], None], drop: Callable[[], None]) -> None:
        """Queue ``run`` (it must not raise: it reports its own outcome); ``drop`` is called instead if the
        pool shuts down first. RuntimeError once shut down."""
        with self._lock:
            if self._closed:
                raise RuntimeError("worker pool is shut down")
            if self._idle == 0 and len(self._threads) < self.size:
                t = threading.Thread(target=self._work, name=f"{self.name}_{len(self._threads)}", daemon=True)
                self._threads.append(t)
                self._idle += 1
                t.start()
            self._idle -= 1  # this job will take an idle thread (or wait for one)
        self._jobs.put((run, drop))

    @property
    def queued(self) -> int:
        """Jobs waiting for a thread."""
        return self._jobs.qsize()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job[0]()
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Stop taking jobs: drop the queued ones, let running ones end, join the threads."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[1]()
        for _ in threads:
            self._jobs.put(None)
        for t in threads:
            t.join()


class Flag:
    """A one-way stop flag that worker threads poll (``set``/``is_set``, as ``threading.Event`` has them):
    nothing waits on it, so it needs no condition, which an Event builds for every request."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class Outcome(Generic[T]):
    """The results of ``n`` parts of one request, gathered from worker threads into one asyncio future.

    The future gets the results in part order when the last part ends, or the first exception as soon
    as a part fails (its siblings may still be running: :attr:`finished` says when all have ended).
    ``on_ended`` runs on the event loop once every part has ended, so what it updates (admission
    counts) is only ever touched by the loop's thread and needs no lock.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int, on_ended: Callable[[], None] | None = None) -> None:
        self.future: asyncio.Future[list[T]] = loop.create_future()
        self._loop = loop
        self._on_ended = on_ended
        self._results: list[T | None] = [None] * n
        self._left = n
        self._failed = False
        self._lock = threading.Lock()

    @property
    def finished(self) -> bool:
        """Every part has ended (succeeded, failed or been dropped)."""
        return self._left == 0

    def set(self, index: int, value: T) -> None:
        """Part ``index`` succeeded (from any thread)."""
        self._ended(index, value, None)

    def fail(self, exc: BaseException) -> None:
        """A part failed or never ran (from any thread): the first failure settles the future."""
        self._ended(-1, None, exc)

    def _ended(self, index: int, value: T | None, exc: BaseException | None) -> None:
        with self._lock:
            if exc is None:
                self._results[index] = value
            self._left -= 1
            last = self._left == 0
            first_failure = exc is not None and not self._failed
            self._failed = self._failed or exc is not None
        if last or first_failure:  # one loop wake-up per request when nothing fails
            try:
                self._loop.call_soon_threadsafe(self._settle, exc if first_failure else None, last)
            except RuntimeError:  # the loop is closed: no one is waiting
                pass

    def _settle(self, exc: BaseException | None, last: bool) -> None:
        if not self.future.done():  # else cancelled by a caller that stopped waiting, or failed earlier
            if exc is not None:
                self.future.set_exception(exc)
                self.future.exception()  # retrieved: a failure nobody waits for (client gone) is not logged
            elif last and not self._failed:
                self.future.set_result(self._results)  # type: ignore[arg-type]  # every part has set its slot
        if last and self._on_ended is not None:
            self._on_ended()
