"""The micro-batcher: concurrent requests' generations go to the backend in one call.

The embedded backend batches every request of one ``generate()`` call (shared
prefix, one decode step for all samples) but is not thread-safe. So one worker
thread owns the backend: strategy runs (one thread each) submit their
:class:`GenerationRequest` here and block on a future; the worker gathers what is
pending and calls ``generate()`` once for all of it.

How long to gather: the worker waits at most ``window_s``, and stops waiting as
soon as every *active* strategy run has submitted (a run submits one request at a
time, so there is nothing more to wait for). A lone request is therefore sent at
once, and a burst of concurrent requests goes out as one batch.

Cancellation: each job carries a ``should_stop`` check; a job already cancelled
is dropped before the call, and the backend's own ``should_stop`` hook (polled
between decode steps) fires when every job of the running batch is cancelled,
or when the batcher is closed with ``cancel=True``.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from ttscale.backends.base import Backend, Generation, GenerationRequest
from ttscale.server.errors import RequestCancelled

log = logging.getLogger("ttscale.server")

StopCheck = Callable[[], bool]


@dataclass
class _Job:
    request: GenerationRequest
    should_stop: StopCheck
    future: Future[Generation]


class MicroBatcher:
    def __init__(
        self,
        backend: Backend,
        *,
        window_s: float = 0.01,
        max_batch: int = 64,
        on_batch: Callable[[list[Generation]], None] | None = None,
    ) -> None:
        self.backend = backend
        self.window_s = window_s
        self.max_batch = max_batch
        self._on_batch = on_batch
        self._cv = threading.Condition()
        self._pending: deque[_Job] = deque()
        self._active = 0
        self._thread: threading.Thread | None = None
        self._closing = False
        self._hard_stop = False
        try:
            self._takes_stop = "should_stop" in inspect.signature(backend.generate).parameters
        except (TypeError, ValueError):
            self._takes_stop = False
        self.calls = 0
        """Backend calls made (for tests and metrics)."""

    # ---- strategy-run side ------------------------------------------------------------------

    def run_started(self) -> None:
        with self._cv:
            self._active += 1

    def run_finished(self) -> None:
        with self._cv:
            self._active -= 1
            self._cv.notify_all()

    def submit(self, request: GenerationRequest, should_stop: StopCheck) -> Future[Generation]:
        fut: Future[Generation] = Future()
        with self._cv:
            if self._closing:
                fut.set_exception(RequestCancelled("server is shutting down"))
                return fut
            self._ensure_thread()
            self._pending.append(_Job(request, should_stop, fut))
            self._cv.notify_all()
        return fut

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ---- lifecycle --------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        # Started lazily so an app that is built but never served owns no thread.
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ttscale-batcher", daemon=True)
            self._thread.start()

    def close(self, cancel: bool = False, timeout: float = 30.0) -> None:
        """Stop accepting work; finish (or with ``cancel``, stop) what is queued and running."""
        with self._cv:
            self._closing = True
            self._hard_stop = self._hard_stop or cancel
            self._cv.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # ---- worker -----------------------------------------------------------------------------

    def _next_batch(self) -> list[_Job] | None:
        with self._cv:
            while not self._pending and not self._closing:
                self._cv.wait()
            if not self._pending:
                return None
            deadline = time.monotonic() + self.window_s
            while len(self._pending) < min(self.max_batch, self._active) and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            n = min(self.max_batch, len(self._pending))
            return [self._pending.popleft() for _ in range(n)]

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = []
            for job in batch:
                if self._hard_stop or job.should_stop():
                    job.future.set_exception(RequestCancelled("cancelled before generation"))
                else:
                    live.append(job)
            if live:
                self._execute(live)

    def _generate(self, jobs: list[_Job]) -> list[Generation]:
        reqs = [j.request for j in jobs]
        self.calls += 1
        if self._takes_stop:
            def stop() -> bool:
                return self._hard_stop or all(j.should_stop() for j in jobs)

            gens = self.backend.generate(reqs, should_stop=stop)  # type: ignore[call-arg]
        else:
            gens = self.backend.generate(reqs)
        if self._on_batch is not None:
            self._on_batch(gens)
        return gens

    def _execute(self, jobs: list[_Job]) -> None:
        try:
            gens = self._generate(jobs)
        except Exception as e:  # noqa: BLE001 - every failure goes back to the requests it belongs to
            if len(jobs) == 1:
                jobs[0].future.set_exception(e)
                return
            # One bad request must not fail its batch-mates: retry each on its own.
            log.warning("batched generate failed (%s); retrying %d requests one by one", e, len(jobs))
            for job in jobs:
                self._execute([job])
            return
        for job, gen in zip(jobs, gens):
            job.future.set_result(gen)
