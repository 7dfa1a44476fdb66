"""OpenAI-style error bodies, and the handlers that make every failure one.

Every error response reads ``{"error": {"message", "type", "param", "code"}}``.
Bad input (malformed JSON, wrong types, invalid UTF-8, unknown names, absurd
limits) is a 4xx naming the offending parameter; nothing a client sends can
produce a traceback or a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ttscale.errors import BackendError, BudgetExceededError, ConfigError, TtscaleError, UnsupportedFeatureError

log = logging.getLogger("ttscale.server")


class APIError(Exception):
    """An error the server answers with, carrying its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class RequestCancelled(TtscaleError):
    """The request's work was stopped (client gone, deadline passed, or server shutting down)."""


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def from_library_error(e: Exception) -> APIError:
    """Translate a ttscale error raised while serving into the response it deserves."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, (ConfigError, UnsupportedFeatureError, BudgetExceededError)):
        return APIError(400, str(e), code="invalid_value")
    if isinstance(e, BackendError):
        return APIError(502, f"backend failed: {e}", type="server_error", code="backend_error")
    log.exception("unexpected error while serving a request", exc_info=e)
    return APIError(500, "internal server error", type="server_error", code="internal_error")


_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type"}


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return APIError(400, "request body is not valid UTF-8 JSON", code="invalid_json").response()
        parts = []
        for e in errors[:3]:
            where = _param(tuple(e.get("loc", ())))
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        first = errors[0] if errors else {}
        return APIError(
            400, "; ".join(parts) + more, param=_param(tuple(first.get("loc", ()))), code="invalid_value"
        ).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "bad request"
        if exc.status_code == 400 and "parsing the body" in detail:
            detail = "request body could not be decoded (is it valid UTF-8 JSON?)"
        code = _STATUS_CODES.get(exc.status_code, "invalid_request")
        return APIError(exc.status_code, detail, code=code, headers=getattr(exc, "headers", None)).response()

    @app.exception_handler(TtscaleError)
    async def _library(request: Request, exc: TtscaleError) -> JSONResponse:
        return from_library_error(exc).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return from_library_error(exc).response()
