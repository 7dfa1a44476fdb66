"""Typed options of the built-in backends, kept importable from here; each is declared beside its
backend class, in that module's :class:`~ttscale.backends.spec.BackendKind` record, which validates
them (``registry.make_backend``)."""

from ttscale.backends.llama_cpp import LlamaCppOptions
from ttscale.backends.openai_http import OpenAIHttpOptions
from ttscale.backends.vllm import VllmOptions

__all__ = ["LlamaCppOptions", "OpenAIHttpOptions", "VllmOptions"]
