"""The app's pure-ASGI front: request metrics, and the fast path for valid JSON completion requests.

Both sit before FastAPI (``app._App.front``): per-request work FastAPI would repeat for every call
(middleware stacks, routing, dependency solving) costs more CPU than the proxy's own work, and the
proxy's throughput is bound by one core (docs/benchmarks.md).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ttscale.server.errors import from_library_error
from ttscale.server.schemas import ChatCompletionRequest, CompletionRequest
from ttscale.server.security import replaying
from ttscale.server.service import Service

_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"})


class Observe:
    """Counts responses by endpoint and status, and times completion requests (pure ASGI)."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        self._children: dict[tuple[str, int], Any] = {}  # metric children by label: labels() costs a lookup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in _ENDPOINTS else "other"
        status = [500]
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            m = self.service.metrics
            if (count := self._children.get((endpoint, status[0]))) is None:
                count = self._children[endpoint, status[0]] = m.requests.labels(endpoint, str(status[0]))
            count.inc()
            if endpoint.startswith("/v1/") and endpoint != "/v1/models":
                if (timer := self._children.get((endpoint, 0))) is None:
                    timer = self._children[endpoint, 0] = m.latency.labels(endpoint)
                timer.observe(time.perf_counter() - t0)


_FAST_BODIES: dict[str, type[ChatCompletionRequest] | type[CompletionRequest]] = {
    "/v1/chat/completions": ChatCompletionRequest, "/v1/completions": CompletionRequest}


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return False


class FastCompletions:
    """Answers ``POST /v1/chat/completions`` and ``/v1/completions`` with a valid JSON body itself (pure ASGI).

    pydantic parses the bytes once, and the request skips FastAPI's middleware, routing, dependency solving
    and per-request telemetry checks, which cost more CPU than the rest of the proxy's own work. Whatever
    it does not answer (other paths and content types, bodies that fail validation, ``stream=true``) goes on
    to FastAPI with the body replayed, so error bodies and streams are FastAPI's, exactly as before."""

    def __init__(self, app: ASGIApp, complete: Callable[[Request, Any], Awaitable[Response]]) -> None:
        self.app = app
        self.complete = complete

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        model = _FAST_BODIES.get(scope["path"]) if scope["method"] == "POST" else None
        if model is None or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # gone before the body was in
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body_bytes = b"".join(chunks)
        try:
            body = model.model_validate_json(body_bytes)
        except ValidationError:
            body = None
        if body is None or body.stream:
            await self.app(scope, replaying(body_bytes, receive), send)
            return
        try:
            response = await self.complete(Request(scope, receive), body)
        except Exception as e:  # noqa: BLE001 - what the app's exception handlers would answer
            response = from_library_error(e).response()
        await response(scope, receive, send)
