"""The OpenAI-compatible app: ``create_app(config)`` builds everything; nothing is module-global.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``,
``GET /v1/models``, ``GET /health``, ``GET /metrics``. Each completion request is
answered by a test-time strategy (chosen per request, see
:mod:`ttscale.server.control`) and its ``usage`` counts every token spent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pydantic_core
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ttscale.cost import Budget
from ttscale.server import streaming
from ttscale.server.asgi import FastCompletions, Observe
from ttscale.server.config import ServerConfig
from ttscale.server.control import Plan, Resolver
from ttscale.server.errors import APIError, from_library_error, install_error_handlers
from ttscale.server.metrics import CONTENT_TYPE
from ttscale.server.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    ErrorResponse,
    Health,
    ModelList,
    TextCompletion,
)
from ttscale.server.security import Guard
from ttscale.server.service import ClientGone, Service, Ticket
from ttscale.server.solve import ChoiceResult, total_usage, ttscale_object
from ttscale.types import ChatMessage, GenerationRequest, Usage, capabilities_of

trace_log = logging.getLogger("ttscale.server.trace")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in [(400, "invalid request"), (401, "missing or invalid API key"), (404, "unknown model"),
                       (413, "request body too large"), (429, "queue full (see Retry-After)"),
                       (503, "shutting down"), (504, "timed out")]
}
_COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {}}},
          "description": "A completion (JSON), or with stream=true server-sent events."},
    **_ERRORS,
}
KEEPALIVE_S = 5.0
"""Longest silence on a stream while the strategy works."""


class _App(FastAPI):
    """FastAPI whose HTTP requests enter through ``front`` (metrics, auth and body limit, the completion fast
    path), which hands what it does not answer to :meth:`fastapi_app`."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.front is not None:
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def fastapi_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def _messages(body: ChatCompletionRequest) -> tuple[ChatMessage, ...]:
    return tuple(ChatMessage("system" if m.role == "developer" else m.role, m.text()) for m in body.messages)


def _templates(body: ChatCompletionRequest | CompletionRequest, cfg: ServerConfig) -> list[GenerationRequest]:
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens or cfg.default_max_tokens
    if max_tokens > cfg.max_max_tokens:
        raise APIError(400, f"max_tokens must be <= {cfg.max_max_tokens}, got {max_tokens}", param="max_tokens",
                       code="invalid_value")
    stop = body.stop_list()
    if len(stop) > 4 or any(not s or len(s) > 256 for s in stop):
        raise APIError(400, "stop takes up to 4 non-empty strings of at most 256 characters", param="stop",
                       code="invalid_value")
    common: dict[str, Any] = {
        "temperature": body.temperature if body.temperature is not None else cfg.temperature,
        "top_p": body.top_p if body.top_p is not None else 1.0, "stop": stop, "max_tokens": max_tokens,
        "top_k": body.top_k or 0, "min_p": body.min_p or 0.0,
    }
    if isinstance(body, ChatCompletionRequest):
        return [GenerationRequest(messages=_messages(body), **common)]
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts or len(prompts) * body.n > cfg.max_n:
        raise APIError(400, f"prompts x n must be in [1, {cfg.max_n}]", param="prompt", code="invalid_value")
    return [GenerationRequest(prompt=p, **common) for p in prompts]


def _check_prompts(templates: list[GenerationRequest], budget: Budget, cfg: ServerConfig) -> None:
    """Refuse prompts that cannot run: empty, too long for the context or the limit, or over budget."""
    n_ctx = capabilities_of(cfg.backend).context_length or cfg.backend.model_info().n_ctx_train
    param = "messages" if templates[0].messages is not None else "prompt"
    for t in templates:
        n = cfg.backend.count_prompt_tokens(t)
        if n == 0:
            raise APIError(400, "the prompt is empty", param=param, code="invalid_value")
        if cfg.max_prompt_tokens is not None and n > cfg.max_prompt_tokens:
            raise APIError(400, f"prompt has {n} tokens; this server accepts at most {cfg.max_prompt_tokens}",
                           param=param, code="context_length_exceeded")
        if n_ctx > 0 and n + t.max_tokens + 1 > n_ctx:  # 0: the engine did not say (remote)
            raise APIError(400, f"prompt of {n} tokens plus max_tokens={t.max_tokens} exceeds the model's context of "
                           f"{n_ctx} tokens", param=param, code="context_length_exceeded")
        if budget.tokens is not None and n + 1 > budget.tokens:
            raise APIError(400, f"token budget of {budget.tokens} per choice cannot cover the {n}-token prompt plus one "
                           "generated token", param="ttscale.budget.tokens", code="budget_too_small")
        if budget.kv_bytes is not None and (need := cfg.backend.model_info().kv_bytes(n + 1)) > budget.kv_bytes:
            raise APIError(400, f"KV budget of {budget.kv_bytes} bytes per choice cannot hold the {n}-token prompt plus "
                           f"one generated token ({need} bytes)", param="ttscale.budget.kv_bytes", code="budget_too_small")


def _split_budget(plan: Plan, n_choices: int, cfg: ServerConfig) -> Budget:
    """The request's budget shared equally by its choices (each choice is one strategy run)."""
    tokens = plan.budget_tokens // n_choices if plan.budget_tokens is not None else None
    if tokens is not None and tokens < 1:
        raise APIError(400, f"token budget {plan.budget_tokens} is smaller than the {n_choices} choices asked for",
                       param="ttscale.budget.tokens", code="budget_too_small")
    flops = plan.budget_flops / n_choices if plan.budget_flops is not None else None
    # a request's choices run at once and their waves may share a backend call: each holds its share
    kv = plan.budget_kv_bytes // n_choices if plan.budget_kv_bytes is not None else None
    if kv is not None and kv < 1:
        raise APIError(400, f"KV budget {plan.budget_kv_bytes} is smaller than the {n_choices} choices asked for",
                       param="ttscale.budget.kv_bytes", code="budget_too_small")
    seconds = plan.budget_seconds / n_choices if plan.budget_seconds is not None else None
    usd = plan.budget_usd / n_choices if plan.budget_usd is not None else None
    priced = cfg.hardware if seconds is not None or usd is not None else None
    return Budget(tokens=tokens, flops=flops, kv_bytes=kv, seconds=seconds, usd=usd, hardware=priced)


class _FastJSON(JSONResponse):
    """JSON rendered by pydantic-core (Rust): a quarter of the stdlib encoder's CPU for a completion body."""

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content)


class _TicketStream(StreamingResponse):
    """A stream whose work stops when the response ends for any reason, the client going away included.

    The generator's own ``finally`` is not enough: when the client disconnects while the generator is
    parked at a ``yield``, Starlette stops iterating without closing it, so its ``finally`` runs only
    when it is garbage-collected, and the strategy would go on generating for nobody meanwhile."""

    def __init__(self, ticket: Ticket, content: Any, **kw: Any) -> None:
        super().__init__(content, **kw)
        self._ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self._ticket.finished:
                self._ticket.cancel.set()


async def _refresh_gauges(svc: Service, every_s: float = 1.0) -> None:
    while True:
        svc.metrics.refresh()
        await asyncio.sleep(every_s)


def create_app(config: ServerConfig) -> FastAPI:
    svc = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if svc.draining:  # started again after a shutdown
            svc.open()
        gauges = None
        if config.metrics_dir is not None:  # one of several processes: its gauges go to the shared files
            gauges = asyncio.create_task(_refresh_gauges(svc))
        yield
        if gauges is not None:
            gauges.cancel()
        # uvicorn has already let open connections finish (up to its graceful timeout).
        await asyncio.get_running_loop().run_in_executor(None, svc.shutdown)

    app = _App(title="ttscale", version="0.1.0", lifespan=lifespan,
               description="OpenAI-compatible API answered by test-time scaling strategies.")
    app.state.service = svc
    install_error_handlers(app)

    def _usage(total: Usage) -> dict[str, int]:
        return {"prompt_tokens": total.prefilled_tokens, "completion_tokens": total.generated_tokens,
                "total_tokens": total.total_tokens}

    counters: dict[str, Any] = {}  # metric children by label, looked up once
    plans = Resolver(config)

    def _record(plan: Plan, choices: list[ChoiceResult], u: Usage) -> None:
        m = svc.metrics
        if not counters:
            counters.update(prefilled=m.tokens.labels("prefilled"), generated=m.tokens.labels("generated"))
        if (served := counters.get(plan.strategy)) is None:
            served = counters[plan.strategy] = m.strategy.labels(plan.strategy)
        served.inc()
        counters["prefilled"].inc(u.prefilled_tokens)
        counters["generated"].inc(u.generated_tokens)
        if plan.trace and trace_log.isEnabledFor(logging.INFO):  # the record the response carries, to the log
            trace_log.info("trace %s", json.dumps({
                "strategy": plan.strategy, "choices": [{"answer": c.result.answer, "votes": c.result.votes,
                                                        "policy": c.result.meta.get("policy"), "calls": c.trace}
                                                       for c in choices]}, default=str))

    async def complete(request: Request, body: ChatCompletionRequest | CompletionRequest) -> Response:
        chat = isinstance(body, ChatCompletionRequest)
        if body.n > config.max_n:
            raise APIError(400, f"n must be <= {config.max_n}", param="n", code="invalid_value")
        plan = plans(body.ttscale, request.headers, body.model)
        templates = _templates(body, config)
        budget = _split_budget(plan, len(templates) * body.n, config)
        if svc.local_tokenizer:
            _check_prompts(templates, budget, config)
        else:  # counting tokens is a network call (HTTP backend): keep it off the event loop
            await asyncio.to_thread(_check_prompts, templates, budget, config)
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{os.urandom(12).hex()}", "created": int(time.time()),
                "model": body.model}
        t0 = time.perf_counter()
        if body.stream:
            return await stream(request, body, plan, templates, budget, head, chat, t0)
        ticket = svc.start(plan, templates, body.n, body.seed, budget)
        try:
            choices = await svc.wait(request, ticket)
        except ClientGone:
            return Response(status_code=499)
        total = total_usage(c.usage for c in choices)
        _record(plan, choices, total)
        extra = ttscale_object(plan, choices, budget, time.perf_counter() - t0, total)
        if chat:
            out: dict[str, Any] = {**head, "object": "chat.completion", "choices": [
                {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason,
                 "logprobs": None} for i, c in enumerate(choices)]}
        else:
            out = {**head, "object": "text_completion", "choices": [
                {"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
                for i, c in enumerate(choices)]}
        return _FastJSON({**out, "usage": _usage(total), "ttscale": extra})

    async def stream(request: Request, body: ChatCompletionRequest | CompletionRequest, plan: Plan,
                     templates: list[GenerationRequest], budget: Budget, head: dict[str, Any], chat: bool,
                     t0: float) -> StreamingResponse:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def progress(ev: dict[str, Any]) -> None:  # called from worker threads
            loop.call_soon_threadsafe(events.put_nowait, ev)

        ticket = svc.start(plan, templates, body.n, body.seed, budget, progress)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}

        async def gen() -> AsyncIterator[str]:
            fut = ticket.outcome.future
            try:
                yield streaming.comment({"event": "started", "strategy": plan.strategy, "k": plan.k})
                last = time.monotonic()
                while not fut.done():
                    try:
                        ev = await asyncio.wait_for(events.get(), timeout=streaming_poll(ticket))
                        yield streaming.comment(ev)
                        last = time.monotonic()
                    except TimeoutError:
                        if time.monotonic() - last >= KEEPALIVE_S:  # keeps proxies from closing an idle stream
                            yield streaming.comment({"event": "working", "elapsed_s": round(time.perf_counter() - t0, 1)})
                            last = time.monotonic()
                    if not fut.done():
                        await svc.poll_disconnect(request, ticket)
                        svc.check_waiting(ticket)
                choices = svc.result(fut, ticket)
            except ClientGone:
                return
            except Exception as e:  # noqa: BLE001 - headers are sent: report in-band, as OpenAI does
                yield streaming.data(from_library_error(e).body())
                return
            finally:
                if not fut.done():
                    ticket.cancel.set()  # the generator was closed: client gone
            total = total_usage(c.usage for c in choices)
            _record(plan, choices, total)
            pairs = [(c.text, c.finish_reason) for c in choices]
            chunks = list(streaming.chat_chunks(head, pairs) if chat else streaming.text_chunks(head, pairs))
            extra = ttscale_object(plan, choices, budget, time.perf_counter() - t0, total)
            if include_usage:
                for ch in chunks:
                    ch["usage"] = None
                chunks.append({**head, "choices": [], "usage": _usage(total)})
            chunks[-1] = {**chunks[-1], "ttscale": extra}
            for ch in chunks:
                yield streaming.data(ch)
            yield streaming.data("[DONE]")

        return _TicketStream(ticket, gen(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def streaming_poll(ticket: Ticket) -> float:
        return max(0.001, min(0.25, ticket.deadline - time.monotonic()))

    @app.post("/v1/chat/completions", response_model=ChatCompletion, responses=_COMPLETION_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """A chat completion answered by the request's strategy (``stream`` gives SSE)."""
        return await complete(request, body)

    @app.post("/v1/completions", response_model=TextCompletion, responses=_COMPLETION_RESPONSES)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """A text completion answered by the request's strategy (``stream`` gives SSE)."""
        return await complete(request, body)

    @app.get("/v1/models", response_model=ModelList, responses={401: _ERRORS[401]})
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": config.served_model, "object": "model", "created": 0,
                                            "owned_by": "ttscale"}]}

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, Any]:
        return {"status": "draining" if svc.draining else "ok", "model": config.served_model,
                "queue_depth": svc.queue_depth, "in_flight": svc.in_flight}

    @app.get("/metrics", response_class=Response, responses={401: _ERRORS[401]})
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE)

    def openapi() -> dict[str, Any]:
        # Validation errors are answered 400 in OpenAI's shape: drop FastAPI's 422 entries.
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for path in schema.get("paths", {}).values():
                for op in path.values():
                    op.get("responses", {}).pop("422", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # Outermost first: observe every response, then auth and the body limit, then the completion fast path;
    # FastAPI (its own middleware, routes and error handlers) answers the rest.
    app.front = Observe(Guard(FastCompletions(app.fastapi_app, complete), api_key=config.api_key,
                               max_body_bytes=config.max_body_bytes), service=svc)
    return app
