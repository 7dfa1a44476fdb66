"""The serving machinery of one app: admission (bounded queue), workers, waiting, cancellation.

A completion request is admitted if fewer than ``max_concurrency + max_queue``
requests are in flight (else 429 with Retry-After). Each of its choices runs as a
strategy in a worker thread; the event loop waits on those threads, polling for
client disconnect and the deadline, and sets the request's cancel event when
either happens, which stops its generations at the next decode step.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from ttscale.backends.kv_sizing import cells_needed
from ttscale.cost import Budget
from ttscale.server.batcher import MicroBatcher
from ttscale.server.config import ServerConfig
from ttscale.server.control import Plan
from ttscale.server.errors import APIError, RequestCancelled, from_library_error
from ttscale.server.metrics import Metrics
from ttscale.server.solve import ChoiceResult, ProgressFn, solve_choice
from ttscale.types import GenerationRequest, capabilities_of

POLL_S = 0.05
"""How often a waiting request checks for client disconnect and its deadline."""


class ClientGone(Exception):
    """The client disconnected; there is no one to answer."""


@dataclass
class Ticket:
    """One admitted request's handle on its work."""

    cancel: threading.Event
    futures: list[Future[ChoiceResult]]
    deadline: float
    started: float = field(default_factory=time.perf_counter)


class Service:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._in_flight = 0
        self._queued = 0
        self._cancels: set[threading.Event] = set()
        self.metrics = Metrics(lambda: self._queued, lambda: self._in_flight)
        # In-process engines count prompt tokens locally and fast; others (HTTP) may call out.
        self.local_tokenizer = capabilities_of(config.backend).local_prompt_counts
        self.open()

    def open(self) -> None:
        """(Re)create the worker machinery: an app may be started again after a shutdown."""
        cfg = self.config
        self.draining = False
        self.batcher = MicroBatcher(cfg.backend, window_s=cfg.batch_window_ms / 1000.0,
                                    min_wait_s=cfg.batch_min_wait_ms / 1000.0,
                                    max_batch=cfg.max_batch, on_batch=self.metrics.observe_batch,
                                    kv_cap=cfg.max_kv_bytes, kv_cost=self._kv_cost)
        self.executor = ThreadPoolExecutor(max_workers=cfg.max_concurrency, thread_name_prefix="ttscale-solve")

    def _kv_cost(self, request: GenerationRequest) -> int:
        """Worst-case KV bytes of one generation request, as its choice's meter counted it: the prompt
        once and every sample to max_tokens (each its own prompt where the backend prefills per sample)."""
        backend = self.config.backend
        cells = cells_needed(request.n, backend.count_prompt_tokens(request), request.max_tokens,
                             shared_prompt=not capabilities_of(backend).prefill_per_sample)
        return backend.model_info().kv_bytes(cells)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queue_depth(self) -> int:
        return self._queued

    # ---- admission and work -----------------------------------------------------------------

    def start(
        self,
        plan: Plan,
        templates: list[GenerationRequest],
        n: int,
        seed: int | None,
        budget: Budget,
        progress: ProgressFn | None = None,
    ) -> Ticket:
        cfg = self.config
        if self.draining:
            raise APIError(503, "server is shutting down", type="server_error", code="shutting_down")
        with self._lock:
            if self._in_flight >= cfg.max_concurrency + cfg.max_queue:
                self.metrics.rejected.labels("queue_full").inc()
                raise APIError(429, f"server is at capacity ({self._in_flight} requests in flight); retry shortly",
                               type="rate_limit_error", code="queue_full",
                               headers={"Retry-After": str(cfg.retry_after_s)})
            self._in_flight += 1
            cancel = threading.Event()
            self._cancels.add(cancel)
        run_seed = seed if seed is not None else random.randrange(2**31)
        futures: list[Future[ChoiceResult]] = []
        remaining = [len(templates) * n]

        def job(template: GenerationRequest, pid: str) -> ChoiceResult:
            with self._lock:
                self._queued -= 1
            return solve_choice(template=template, plan=plan, backend=cfg.backend, batcher=self.batcher,
                                cancel=cancel, problem_id=pid, seed=run_seed, budget=budget, progress=progress,
                                policy=cfg.policy)

        def finished(_: Future[Any]) -> None:
            # Admission is released when the last thread ends, not when the client stops
            # waiting, so the queue bound holds for work that is really still running.
            with self._lock:
                if _.cancelled():  # never started (shutdown): it is no longer queued
                    self._queued -= 1
                remaining[0] -= 1
                if remaining[0] == 0:
                    self._in_flight -= 1
                    self._cancels.discard(cancel)

        try:
            for pi, template in enumerate(templates):
                for j in range(n):
                    with self._lock:
                        self._queued += 1
                    f = self.executor.submit(job, template, f"p{pi}-c{j}")
                    f.add_done_callback(finished)
                    futures.append(f)
        except RuntimeError:  # executor shut down under us
            cancel.set()
            with self._lock:
                self._queued -= len(templates) * n - len(futures)
                remaining[0] -= len(templates) * n - len(futures)
                if remaining[0] == 0:
                    self._in_flight -= 1
            raise APIError(503, "server is shutting down", type="server_error", code="shutting_down") from None
        return Ticket(cancel, futures, time.monotonic() + cfg.timeout_s)

    def check_waiting(self, ticket: Ticket) -> None:
        """Raise if the request's deadline has passed (after cancelling its work)."""
        if time.monotonic() >= ticket.deadline:
            ticket.cancel.set()
            self.metrics.cancelled.labels("timeout").inc()
            raise APIError(504, f"request exceeded the server's timeout of {self.config.timeout_s:g} s",
                           type="timeout_error", code="timeout")

    async def poll_disconnect(self, request: Request, ticket: Ticket) -> None:
        if await request.is_disconnected():
            ticket.cancel.set()
            self.metrics.cancelled.labels("disconnect").inc()
            raise ClientGone()

    @staticmethod
    def gathered(ticket: Ticket) -> asyncio.Future[list[ChoiceResult]]:
        fut = asyncio.gather(*(asyncio.wrap_future(f) for f in ticket.futures))
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no "never retrieved" noise
        return fut

    async def wait(self, request: Request, ticket: Ticket) -> list[ChoiceResult]:
        """The choices' results, or an APIError; ClientGone when the client left."""
        fut = self.gathered(ticket)
        try:
            while True:
                remaining = ticket.deadline - time.monotonic()
                done, _ = await asyncio.wait({fut}, timeout=max(0.0, min(POLL_S, remaining)))
                if done:
                    return self.result(fut, ticket)
                await self.poll_disconnect(request, ticket)
                self.check_waiting(ticket)
        except asyncio.CancelledError:  # uvicorn gave up on the connection (e.g. shutdown grace over)
            ticket.cancel.set()
            raise

    def result(self, fut: asyncio.Future[list[ChoiceResult]], ticket: Ticket) -> list[ChoiceResult]:
        exc = fut.exception()
        if exc is None:
            return fut.result()
        ticket.cancel.set()  # one choice failed: stop its siblings
        if isinstance(exc, RequestCancelled):
            if self.draining:
                raise APIError(503, "server shut down before the request finished", type="server_error",
                               code="shutting_down")
            raise APIError(504, "request was cancelled before it finished", type="timeout_error", code="cancelled")
        if not isinstance(exc, Exception):
            raise exc
        raise from_library_error(exc)

    # ---- shutdown ---------------------------------------------------------------------------

    def shutdown(self, grace_s: float = 30.0) -> None:
        """Refuse new work, cancel what is left, stop the threads."""
        self.draining = True
        with self._lock:
            cancels = list(self._cancels)
        for c in cancels:
            c.set()
        if cancels:
            self.metrics.cancelled.labels("shutdown").inc(len(cancels))
        self.batcher.close(cancel=True, timeout=grace_s)
        self.executor.shutdown(wait=True, cancel_futures=True)
