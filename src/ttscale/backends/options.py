"""Typed options of the built-in backends (kept importable from here; each is declared beside its
backend class, in that module's :class:`~ttscale.backends.spec.BackendKind` record)."""

from __future__ import annotations

from typing import Any

from ttscale.backends.llama_cpp import LlamaCppOptions
from ttscale.backends.openai_http import OpenAIHttpOptions
from ttscale.backends.vllm import VllmOptions

__all__ = ["LlamaCppOptions", "OpenAIHttpOptions", "VllmOptions", "validate_backend_options"]


def validate_backend_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options, checked against ``kind``'s options model; only those given are returned."""
    import importlib

    module = {"llama-cpp": "llama_cpp", "openai": "openai_http", "vllm": "vllm", "fake": "fake"}.get(kind)
    if module is None:
        return options
    return importlib.import_module(f"ttscale.backends.{module}").SPEC.check(options)  # type: ignore[no-any-return]
