"""The micro-batcher: concurrent requests' generations go to the backend in one call.

The embedded backend batches every request of one ``generate()`` call (shared
prefix, one decode step for all samples) but is not thread-safe. Strategy runs
(one thread each) submit their :class:`GenerationRequest` here; at most one
thread at a time, the *leader*, calls ``generate()`` for everything pending, and
the others wait for their results. The leader is whichever waiting submitter finds
the backend free, so no dedicated thread sits in the path (a hand-off between
threads costs more than the fake backend's whole generation on a busy machine).

How long to gather: the leader waits at least ``min_wait_s`` (requests that
arrived together may still be on their way to a worker thread), then at most until
``window_s``, and stops waiting as soon as every *active* strategy run has
submitted (a run submits one request at a time, so there is nothing more to wait
for). With ``min_wait_s=0`` a lone request is sent at once.

Cancellation: each job carries a ``should_stop`` check; a job already cancelled
is dropped before the call. During the call, a backend that takes a per-request
``cancelled`` hook (the embedded engine) stops just that job's samples at the next
decode step while its batch-mates go on; the backend's own ``should_stop`` hook
fires when every job of the running batch is cancelled, or when the batcher is
closed with ``cancel=True``.

Memory: with a server-wide KV cap (``kv_cap`` bytes, ``kv_cost(request)`` its worst case) a backend
call takes pending requests in arrival order while their worst cases together fit the cap; the
rest wait for the next call. Every request fits on its own (its choice's meter holds a share of the
cap), so each call makes progress and nothing waits forever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ttscale.backends.base import Backend
from ttscale.errors import ConfigError
from ttscale.server.errors import RequestCancelled
from ttscale.types import Generation, GenerationRequest, capabilities_of

log = logging.getLogger("ttscale.server")

StopCheck = Callable[[], bool]


class _Result:
    """A job's generation or error: set once by the leader, read by the job's submitter after the leader
    has opened its gate (a ``concurrent.futures.Future`` adds a condition per job)."""

    __slots__ = ("_done", "_value", "_error")

    def __init__(self) -> None:
        self._done = False
        self._value: Generation | None = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, value: Generation) -> None:
        self._value, self._done = value, True

    def set_exception(self, error: BaseException) -> None:
        self._error, self._done = error, True

    def result(self) -> Generation:
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


@dataclass
class _Job:
    request: GenerationRequest
    should_stop: StopCheck
    future: _Result
    hooks: dict[str, Any] | None = None
    """The strategy's own ``should_stop``/``on_finish`` (early stopping): such a job runs in a
    backend call of its own, since the engine's hooks apply to a whole call."""
    kv_bytes: int = 0
    """Worst-case KV bytes of the request (0 without a KV cap)."""


class MicroBatcher:
    def __init__(
        self,
        backend: Backend,
        *,
        window_s: float = 0.01,
        min_wait_s: float = 0.0,
        max_batch: int = 64,
        on_batch: Callable[[list[Generation]], None] | None = None,
        kv_cap: int | None = None,
        kv_cost: Callable[[GenerationRequest], int] | None = None,
    ) -> None:
        if kv_cap is not None and kv_cost is None:
            raise ConfigError("a KV cap needs kv_cost, the worst-case bytes of a request")
        self.backend = backend
        self.window_s = window_s
        self.min_wait_s = min(min_wait_s, window_s)
        self.max_batch = max_batch
        self._on_batch = on_batch
        self.kv_cap = kv_cap
        self._kv_cost = kv_cost
        self._lock = threading.Lock()
        self._lead_cv = threading.Condition(self._lock)
        """The gathering leader waits here for submissions (and close() for the leader to finish)."""
        self._waiters: dict[threading.Lock, list[_Job]] = {}
        """Each waiting submitter's own gate (a held lock the leader releases) and its jobs: wake-ups go only
        to the threads they concern, not to every waiting thread (64 threads woken per event cost more CPU
        than the fake backend's generation)."""
        self._pending: deque[_Job] = deque()
        self._active = 0
        self._leading = False
        self._closing = False
        self._hard_stop = False
        caps = capabilities_of(backend)
        self._takes_stop = caps.cancellation
        self._takes_cancelled = caps.request_cancellation
        # Stop hooks make such a backend stream each sample as its own request: only jobs whose
        # strategy brings its own hooks (early stopping) are worth that; the rest keep shared prefills.
        self._hooks_cost_prefills = caps.hooked_prefill_per_sample
        self.calls = 0
        """Backend calls made (for tests and metrics)."""

    # ---- strategy-run side ------------------------------------------------------------------

    def run_started(self) -> None:
        with self._lock:
            self._active += 1

    def run_finished(self) -> None:
        with self._lock:
            self._active -= 1
            self._wake_leader()  # a gathering leader may have nothing more to wait for

    def _wake_leader(self) -> None:
        """Wake a gathering leader once its batch is complete (every active run has submitted, or the batch is
        full), not at every submission: 64 runs submitting one by one would wake it 63 times for nothing
        (called holding the lock)."""
        if self._leading and len(self._pending) >= min(self.max_batch, max(self._active, 1)):
            self._lead_cv.notify()

    def generate(self, requests: list[GenerationRequest], should_stop: StopCheck,
                 hooks: dict[str, Any] | None = None) -> list[Generation]:
        """Generate ``requests`` (batched with whatever else is pending); blocks until done.

        ``hooks`` (``should_stop``, ``on_finish``) are the backend's per-call hooks; with them the
        requests are generated in one call of their own.
        """
        if hooks and len(requests) != 1:
            raise ConfigError("generation hooks are supported for one request at a time")
        # costed here, in the strategy's thread, so the leader's critical section stays short
        cost = self._kv_cost if self.kv_cap is not None else None
        jobs = [_Job(r, should_stop, _Result(), hooks or None, cost(r) if cost else 0) for r in requests]
        with self._lock:
            if self._closing:
                raise RequestCancelled("server is shutting down")
            self._pending.extend(jobs)
            self._wake_leader()
            gate = self._lead_or_wait(jobs)
        while gate is not None:
            # Waited on outside the batcher's lock: a woken submitter whose jobs are done returns without
            # taking it again (64 of them reacquiring one lock in turn under the GIL made a convoy).
            gate.acquire()
            if all(j.future.done() for j in jobs):
                break
            with self._lock:  # woken to lead the next call, or the batcher is closing
                gate = self._lead_or_wait(jobs)
        return [j.future.result() for j in jobs]

    def _lead_or_wait(self, jobs: list[_Job]) -> threading.Lock | None:
        """Lead calls until ``jobs`` are done, or, while another thread leads, a gate to wait on (called
        holding the lock); the leader opens it when the jobs are done or when this thread should lead."""
        while not all(j.future.done() for j in jobs):
            if not self._leading:
                self._lead()
                continue
            gate = threading.Lock()
            gate.acquire()
            self._waiters[gate] = jobs
            return gate
        return None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self, cancel: bool = False, timeout: float = 30.0) -> None:
        """Stop accepting work; let the running call finish (or with ``cancel``, stop it)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closing = True
            self._hard_stop = self._hard_stop or cancel
            while self._pending and cancel:
                self._pending.popleft().future.set_exception(RequestCancelled("server is shutting down"))
            self._lead_cv.notify_all()
            for gate in self._waiters:
                gate.release()
            self._waiters.clear()
            while self._leading and (remaining := deadline - time.monotonic()) > 0:
                self._lead_cv.wait(remaining)

    # ---- the leader -------------------------------------------------------------------------

    def _lead(self) -> None:
        """Take a batch from the queue and run it; called holding the lock, returns holding it."""
        self._leading = True
        try:
            start = time.monotonic()
            deadline = start + self.window_s
            # Requests that arrived together may not have reached a worker yet: give them min_wait.
            while (remaining := start + self.min_wait_s - time.monotonic()) > 0 and not self._closing \
                    and len(self._pending) < self.max_batch:
                self._lead_cv.wait(remaining)
            while len(self._pending) < min(self.max_batch, self._active) and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lead_cv.wait(remaining)
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            batch = self._within_kv_cap(batch)
            self._lock.release()
            try:
                live = []
                for job in batch:
                    if self._hard_stop or job.should_stop():
                        job.future.set_exception(RequestCancelled("cancelled before generation"))
                    else:
                        live.append(job)
                plain = [j for j in live if j.hooks is None]
                if plain:
                    self._execute(plain)
                for job in live:
                    if job.hooks is not None:
                        self._execute([job])
            finally:
                for job in batch:  # only if something escaped _execute (e.g. KeyboardInterrupt)
                    if not job.future.done():
                        job.future.set_exception(RequestCancelled("generation was interrupted"))
                self._lock.acquire()
        finally:
            self._leading = False
            self._wake_after_call()

    def _wake_after_call(self) -> None:
        """Wake the submitters whose jobs are done, and one whose jobs still wait, to lead the next call
        (called holding the lock, when no one leads)."""
        successor = False
        for gate, jobs in list(self._waiters.items()):
            if not (self._closing or all(j.future.done() for j in jobs)):  # closing: everyone re-checks
                if successor:
                    continue
                successor = True  # the first still waiting leads the next call
            del self._waiters[gate]
            gate.release()
        self._lead_cv.notify_all()  # close() may be waiting for the leader to finish

    def _within_kv_cap(self, batch: list[_Job]) -> list[_Job]:
        """The batch's first jobs whose plain calls fit the KV cap together; the rest go back to the
        front of the queue (called holding the lock). Hooked jobs run in calls of their own."""
        if self.kv_cap is None:
            return batch
        used, keep, defer = 0, list[_Job](), list[_Job]()
        for job in batch:
            if job.hooks is not None:
                keep.append(job)
            elif defer or (used and used + job.kv_bytes > self.kv_cap):
                defer.append(job)  # in arrival order: a later small job does not overtake
            else:
                used += job.kv_bytes
                keep.append(job)
        self._pending.extendleft(reversed(defer))
        return keep

    def _generate(self, jobs: list[_Job]) -> list[Generation]:
        reqs = [j.request for j in jobs]
        self.calls += 1
        # a backend without generation hooks gets none of the strategy's (it cannot stop early)
        hooks = dict(jobs[0].hooks or {}) if len(jobs) == 1 and self._takes_stop else {}
        own_stop = hooks.pop("should_stop", None)
        if self._hooks_cost_prefills and not hooks and own_stop is None:
            gens = self.backend.generate(reqs)
            if self._on_batch is not None:
                self._on_batch(gens)
            return gens
        if self._takes_stop:
            def stop() -> bool:
                return (self._hard_stop or all(j.should_stop() for j in jobs)
                        or (own_stop is not None and bool(own_stop())))

            hooks["should_stop"] = stop
        if self._takes_cancelled:
            hooks["cancelled"] = lambda i: jobs[i].should_stop()
        gens = self.backend.generate(reqs, **hooks) if hooks else self.backend.generate(reqs)
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
        for job, gen in zip(jobs, gens, strict=True):
            job.future.set_result(gen)
