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
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from ttscale.backends.base import Backend
from ttscale.backends.kv_sizing import cells_needed
from ttscale.cost import Budget
from ttscale.server.batcher import MicroBatcher
from ttscale.server.config import ServerConfig
from ttscale.server.control import Plan
from ttscale.server.errors import APIError, RequestCancelled, from_library_error
from ttscale.server.metrics import Metrics
from ttscale.server.solve import ChoiceResult, ProgressFn, solve_choice
from ttscale.server.workers import Flag, Outcome, WorkerPool
from ttscale.types import GenerationRequest, capabilities_of

POLL_S = 0.05
"""How often a waiting request checks for client disconnect and its deadline."""


class ClientGone(Exception):
    """The client disconnected; there is no one to answer."""


@dataclass
class Ticket:
    """One admitted request's handle on its work."""

    cancel: Flag
    outcome: Outcome[ChoiceResult]
    deadline: float
    started: float = field(default_factory=time.perf_counter)

    @property
    def finished(self) -> bool:
        """Every choice's thread has ended."""
        return self.outcome.finished


class Service:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        # Admission state, touched only by the event loop's thread (the workers report through it).
        self._in_flight = 0
        self._cancels: set[Flag] = set()
        self.metrics = Metrics(lambda: self.queue_depth, lambda: self._in_flight, shared_dir=config.metrics_dir)
        # In-process engines count prompt tokens locally and fast; others (HTTP) may call out.
        self.local_tokenizer = capabilities_of(config.backend).local_prompt_counts
        self.open()

    def open(self) -> None:
        """(Re)create the worker machinery: an app may be started again after a shutdown."""
        cfg = self.config
        self.draining = False
        self.batcher = self._batcher(cfg.backend, on_batch=self.metrics.observe_batch, kv_cap=cfg.max_kv_bytes,
                                     kv_cost=self._kv_cost)
        self.workers = WorkerPool(cfg.max_concurrency)
        # the draft model's generations batch among themselves, apart from the base model's
        self.draft_batcher = None if cfg.draft_backend is None else self._batcher(cfg.draft_backend)

    def _batcher(self, backend: Backend, **options: Any) -> MicroBatcher:
        cfg = self.config
        return MicroBatcher(backend, window_s=cfg.batch_window_ms / 1000.0, min_wait_s=cfg.batch_min_wait_ms / 1000.0,
                            max_batch=cfg.max_batch, **options)

    def _kv_cost(self, request: GenerationRequest) -> int:
        """Worst-case KV bytes of one generation request, as its choice's meter counted it: the prompt
        once and every sample to max_tokens (each its own prompt where the backend prefills per sample)."""
        backend = self.config.backend
        info, prompt = backend.model_info(), backend.count_prompt_tokens(request)
        if capabilities_of(backend).prefill_per_sample:  # a server that ignores n: one request per sample
            return info.kv_bytes(cells_needed(request.n, prompt, request.max_tokens, shared_prompt=False))
        return info.kv_bytes(info.wave_kv_cells(prompt, request.n, request.max_tokens))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queue_depth(self) -> int:
        """Choices admitted and waiting for a worker thread."""
        return self.workers.queued

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
        if self._in_flight >= cfg.max_concurrency + cfg.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise APIError(429, f"server is at capacity ({self._in_flight} requests in flight); retry shortly",
                           type="rate_limit_error", code="queue_full", headers={"Retry-After": str(cfg.retry_after_s)})
        run_seed = seed if seed is not None else random.randrange(2**31)
        parts = [(template, f"p{pi}-c{j}") for pi, template in enumerate(templates) for j in range(n)]
        cancel = Flag()

        def ended() -> None:
            # Admission is released when the last thread ends, not when the client stops
            # waiting, so the queue bound holds for work that is really still running.
            self._in_flight -= 1
            self._cancels.discard(cancel)

        outcome: Outcome[ChoiceResult] = Outcome(asyncio.get_running_loop(), len(parts), on_ended=ended)
        self._in_flight += 1
        self._cancels.add(cancel)

        def job(index: int, template: GenerationRequest, pid: str) -> Callable[[], None]:
            def run() -> None:
                try:
                    outcome.set(index, solve_choice(
                        template=template, plan=plan, backend=cfg.backend, batcher=self.batcher, cancel=cancel,
                        problem_id=pid, seed=run_seed, budget=budget, progress=progress, policy=cfg.policy,
                        draft_batcher=self.draft_batcher, served_task=cfg.task))
                except BaseException as e:  # noqa: BLE001 - every failure goes back to the request
                    outcome.fail(e)

            return run

        def dropped() -> None:
            outcome.fail(RequestCancelled("server is shutting down"))

        submitted = 0
        try:
            for i, (template, pid) in enumerate(parts):
                self.workers.submit(job(i, template, pid), dropped)
                submitted += 1
        except RuntimeError:  # the pool shut down under us
            cancel.set()
            for _ in parts[submitted:]:
                dropped()
            raise APIError(503, "server is shutting down", type="server_error", code="shutting_down") from None
        return Ticket(cancel, outcome, time.monotonic() + cfg.timeout_s)

    def check_waiting(self, ticket: Ticket) -> None:
        """Raise if the request's deadline has passed (after cancelling its work)."""
        if time.monotonic() >= ticket.deadline:
            ticket.cancel.set()
            self.metrics.cancelled.labels("timeout").inc()
            raise APIError(504, f"request exceeded the server's timeout of {self.config.timeout_s:g} s",
                           type="timeout_error", code="timeout")

    async def poll_disconnect(self, request: Request, ticket: Ticket) -> None:
        if await disconnected(request):
            ticket.cancel.set()
            self.metrics.cancelled.labels("disconnect").inc()
            raise ClientGone()

    async def wait(self, request: Request, ticket: Ticket) -> list[ChoiceResult]:
        """The choices' results, or an APIError; ClientGone when the client left."""
        fut = ticket.outcome.future
        try:
            while not fut.done():
                remaining = ticket.deadline - time.monotonic()
                await until_done(fut, max(0.0, min(POLL_S, remaining)))
                if fut.done():
                    break
                await self.poll_disconnect(request, ticket)
                self.check_waiting(ticket)
            return self.result(fut, ticket)
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
        cancels = list(self._cancels)  # one C-level copy: the loop's thread may be changing the set
        for c in cancels:
            c.set()
        if cancels:
            self.metrics.cancelled.labels("shutdown").inc(len(cancels))
        self.batcher.close(cancel=True, timeout=grace_s)
        if self.draft_batcher is not None:
            self.draft_batcher.close(cancel=True, timeout=grace_s)
        self.workers.shutdown()


async def until_done(fut: asyncio.Future[Any], timeout: float) -> None:
    """Wait until ``fut`` is done or ``timeout`` seconds have passed (``asyncio.wait`` for one future,
    without its sets and tasks)."""
    if fut.done():
        return
    loop = fut.get_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    handle = loop.call_later(timeout, wake)
    fut.add_done_callback(wake)
    try:
        await waiter
    finally:
        handle.cancel()
        fut.remove_done_callback(wake)


async def disconnected(request: Request) -> bool:
    """Whether the ASGI server has already said the client is gone, without waiting for it to.

    One step of the request's ``receive()``: a message it already has comes back at once, else the
    coroutine suspends and is closed. ``Request.is_disconnected`` does the same inside an anyio cancel
    scope (a task cancellation per call), which cost more than the rest of a slow request's waiting."""
    if request.scope.get("ttscale.disconnected"):
        return True
    step = request.receive()
    if not isinstance(step, Coroutine):  # an awaitable we cannot step: Starlette's way
        return await request.is_disconnected()
    try:
        step.send(None)
    except StopIteration as done:
        gone = isinstance(done.value, dict) and done.value.get("type") == "http.disconnect"
        if gone:
            request.scope["ttscale.disconnected"] = True
        return gone
    step.close()
    return False
