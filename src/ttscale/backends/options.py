"""Typed options of the built-in backends: a typo or a bad value is a ConfigError naming the option.

``registry.make_backend(kind, model, **options)`` validates ``options`` against the backend's model
here before the engine is built (a TypeError from deep inside a constructor used to be the message).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ttscale.errors import ConfigError
from ttscale.types import KV_CACHE_TYPES, options_error


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class LlamaCppOptions(_Options):
    n_ctx: int = Field(16384, ge=64, description="KV cells in all (every sequence shares them)")
    n_seq_max: int = Field(64, ge=1, le=1024, description="samples decoded together")
    n_batch: int = Field(512, ge=1, description="tokens per prefill batch")
    n_threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    prefix_slots: int = Field(4, ge=0, description="earlier prompt prefixes kept in spare sequences")
    kv_type: str = Field("f16", description="KV-cache element type of K (and V unless kv_type_v)")
    kv_type_v: str | None = Field(None, description="KV-cache element type of V")
    verbose: bool = False


class OpenAIHttpOptions(_Options):
    base_url: str | None = Field(None, description="the server's OpenAI base URL, e.g. http://127.0.0.1:8080/v1 (required)")
    api_key: str | None = None
    concurrency: int = Field(8, ge=1, le=4096, description="requests in flight")
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)
    backoff_base: float = Field(0.2, ge=0)
    backoff_max: float = Field(5.0, ge=0)
    token_cap: int | None = Field(None, ge=1)
    jitter_seed: int | None = None
    info_model: str | None = Field(None, description="embedded model name or GGUF path of the served model")
    info: Any = None
    transport: Any = None


class VllmOptions(_Options):
    enable_prefix_caching: bool = True
    seed: int = 0
    info: Any = None
    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)  # passed on to vllm.LLM


OPTIONS: dict[str, type[_Options]] = {"llama-cpp": LlamaCppOptions, "openai": OpenAIHttpOptions, "vllm": VllmOptions}


def validate_backend_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options, checked against ``kind``'s model; only those given are returned."""
    model = OPTIONS.get(kind)
    if model is None:
        return options
    try:
        parsed = model(**options)
    except ValidationError as e:
        raise options_error(f"backend {kind!r}", e, model.model_fields) from None
    for key in ("kv_type", "kv_type_v"):
        value = getattr(parsed, key, None)
        if value is not None and value not in KV_CACHE_TYPES:
            raise ConfigError(f"backend {kind!r}: {key}: unknown KV cache type {value!r}; "
                              f"llama.cpp takes: {', '.join(KV_CACHE_TYPES)}")
    return {k: getattr(parsed, k, options[k]) for k in options}
