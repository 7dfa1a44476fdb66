"""Size the embedded engine's KV cache from a byte cap: ``n_ctx`` and ``n_seq_max`` that fit.

llama.cpp's unified KV cache is ``n_ctx`` cells shared by every sequence, and its buffer is exactly
``ModelInfo.kv_bytes(n_ctx)`` at the cache's element types (tests/backends/test_kv_types.py). The
engine rounds ``n_ctx`` *up* to a multiple of 256 (measured: 1000 -> 1024, 300 -> 512, 70 -> 256), so
a cap is met only by asking for a multiple of 256 no larger than the cap allows; :func:`fit_kv` does
that, and :func:`check_engine_fits` checks the engine's own ``n_ctx`` afterwards in case a future
llama.cpp pads differently.

How many samples fit depends on how the prompt is held. On the embedded engine the samples of one
prompt share its cells (one call = one problem's wave): ``prompt + n * gen`` cells, which is also
the meter's worst case (:meth:`ttscale.cost.Meter.worst_case`). Requests with different prompts (the
server's batches, llama-server's per-slot caches) need ``n * (prompt + gen)``: ``shared_prompt=False``.

``n_seq_max`` costs no KV memory in a unified cache (cells do); it is the most samples the engine
decodes together, so it is set to what fits: strategies size their waves by it
(``Capabilities.parallel_sequences``) and the meter then trims each wave to the byte cap exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ttscale.errors import ConfigError
from ttscale.types import ModelInfo

CTX_PAD = 256
"""llama.cpp rounds the context up to a multiple of this (KV padding with flash attention)."""
MIN_CTX = CTX_PAD
DEFAULT_MAX_SEQS = 64
"""The engine's default ``n_seq_max``: with a generous cap, no more than this many decode together."""
DEFAULT_N_CTX = 16384
"""The engine's default context: a generous cap buys no more cells than this unless the sequences need them."""


@dataclass(frozen=True)
class KvFit:
    """An engine size that fits a KV byte cap."""

    n_ctx: int
    """KV cells in all (a multiple of :data:`CTX_PAD`); llama.cpp allocates ``kv_bytes(n_ctx)``."""
    n_seq_max: int
    """Samples of ``prompt_tokens + gen_tokens`` that fit those cells together."""
    kv_bytes: int
    """Bytes of that cache at the model's KV types (at most the cap)."""
    cap_bytes: int
    prompt_tokens: int
    gen_tokens: int
    shared_prompt: bool

    def options(self) -> dict[str, Any]:
        """The backend options (``LlamaCppBackend(**options)``) for this size."""
        return {"n_ctx": self.n_ctx, "n_seq_max": self.n_seq_max}

    def describe(self) -> str:
        if self.prompt_tokens:
            how = "sharing the prompt" if self.shared_prompt else "each with its own prompt"
            what = f"{self.prompt_tokens}+{self.gen_tokens} tokens ({how})"
        else:
            what = f"{self.gen_tokens} generated tokens (each wave trimmed by its prompt)"
        return (f"KV cap {self.cap_bytes / 2**20:.1f} MiB: n_ctx {self.n_ctx} cells ({self.kv_bytes / 2**20:.1f} MiB), "
                f"up to {self.n_seq_max} samples of {what} at once")


def with_kv_types(info: ModelInfo, kv_type: str = "f16", kv_type_v: str | None = None) -> ModelInfo:
    """``info`` at another KV precision (shapes unchanged), as the engine would report it."""
    return dataclasses.replace(info, kv_type_k=kv_type, kv_type_v=kv_type_v or kv_type)


def max_cells(info: ModelInfo, cap_bytes: int) -> int:
    """The most KV cells whose bytes at ``info``'s types stay within ``cap_bytes``."""
    per_cell = max(info.kv_bytes(1), 1)
    n = cap_bytes // per_cell + 1  # kv_bytes rounds the block sizes: correct the estimate by stepping
    while n > 0 and info.kv_bytes(n) > cap_bytes:
        n -= 1
    while info.kv_bytes(n + 1) <= cap_bytes:
        n += 1
    return n


def cells_needed(n: int, prompt_tokens: int, gen_tokens: int, shared_prompt: bool = True) -> int:
    """Cells ``n`` parallel samples hold at their worst (every sample running to ``gen_tokens``)."""
    if n <= 0:
        return 0
    return prompt_tokens + n * gen_tokens if shared_prompt else n * (prompt_tokens + gen_tokens)


def max_parallel(cells: int, prompt_tokens: int, gen_tokens: int, shared_prompt: bool = True) -> int:
    """The most samples whose worst case fits ``cells`` (0 if not even one does)."""
    if gen_tokens < 1 or prompt_tokens < 0:
        raise ConfigError(f"need gen_tokens >= 1 and prompt_tokens >= 0, got {gen_tokens}, {prompt_tokens}")
    if shared_prompt:
        return max(0, (cells - prompt_tokens) // gen_tokens) if cells >= prompt_tokens + gen_tokens else 0
    return cells // (prompt_tokens + gen_tokens)


def max_parallel_bytes(info: ModelInfo, cap_bytes: int, prompt_tokens: int, gen_tokens: int,
                       shared_prompt: bool = True) -> int:
    """The most parallel samples whose worst-case KV bytes at ``info``'s types fit ``cap_bytes``."""
    return max_parallel(max_cells(info, cap_bytes), prompt_tokens, gen_tokens, shared_prompt)


def fit_kv(info: ModelInfo, cap_bytes: int, gen_tokens: int, prompt_tokens: int = 0, *,
           max_seqs: int = DEFAULT_MAX_SEQS, shared_prompt: bool = True, pad: int = CTX_PAD) -> KvFit:
    """The engine size for a KV byte cap.

    ``n_ctx`` is the largest multiple of ``pad`` whose bytes fit the cap, but no more than the
    ``max_seqs`` sequences need (nor, when they need less, more than the engine's default context);
    ``n_seq_max`` is how many samples of ``prompt_tokens + gen_tokens`` those cells hold at once.
    A cap that cannot hold one sample (or the engine's minimum context) is a :class:`ConfigError`.
    """
    if cap_bytes < 1:
        raise ConfigError(f"the KV cap must be a positive number of bytes, got {cap_bytes}")
    if max_seqs < 1 or pad < 1:
        raise ConfigError(f"need max_seqs >= 1 and pad >= 1, got {max_seqs}, {pad}")
    cells = max_cells(info, cap_bytes) // pad * pad
    one = cells_needed(1, prompt_tokens, gen_tokens, shared_prompt)
    if cells < max(MIN_CTX, one):
        per = info.kv_bytes(pad) / pad
        raise ConfigError(
            f"a KV cap of {cap_bytes:,} bytes holds {max_cells(info, cap_bytes)} cells of {per:,.0f} bytes at "
            f"{info.kv_type_k}/{info.kv_type_v}; the engine needs at least {max(MIN_CTX, _round_up(one, pad))} "
            f"(one sample of {prompt_tokens}+{gen_tokens} tokens, in multiples of {pad})")
    want = _round_up(cells_needed(max_seqs, prompt_tokens, gen_tokens, shared_prompt), pad)
    # all the cap buys up to the engine's default context (what an uncapped engine gets), more only
    # when max_seqs sequences need more; n_ctx >= one sample's cells, so seqs >= 1
    n_ctx = min(cells, max(want, DEFAULT_N_CTX // pad * pad))
    seqs = min(max_seqs, max_parallel(n_ctx, prompt_tokens, gen_tokens, shared_prompt))
    return KvFit(n_ctx, seqs, info.kv_bytes(n_ctx), cap_bytes, prompt_tokens, gen_tokens, shared_prompt)


def _round_up(n: int, pad: int) -> int:
    return -(-n // pad) * pad


def check_engine_fits(info: ModelInfo, n_ctx: int, cap_bytes: int) -> None:
    """Refuse an engine whose actual context (after llama.cpp's padding) exceeds the cap."""
    if info.kv_bytes(n_ctx) > cap_bytes:
        raise ConfigError(f"the engine allocated {n_ctx} KV cells ({info.kv_bytes(n_ctx):,} bytes), over the cap of "
                          f"{cap_bytes:,} bytes (llama.cpp padded the context more than expected)")


def header_info(model: str, kv_type: str = "f16", kv_type_v: str | None = None) -> ModelInfo:
    """A model's shapes from its GGUF header (no engine loaded), at the given KV types; the name is
    the one the engine reports (the embedded name, or the file's stem)."""
    from pathlib import Path

    from ttscale.backends.gguf_info import read_model_info
    from ttscale.backends.models import resolve_model_path

    path = resolve_model_path(model)
    name = model if "/" not in model else Path(model).stem  # as LlamaEngine names it
    return with_kv_types(read_model_info(path, name=name), kv_type, kv_type_v)
