"""Engine help texts and the KV-cap sizing shared by ``ttscale run``, ``sweep`` and ``serve``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ttscale.backends.base import Backend
from ttscale.backends.kv_sizing import DEFAULT_MAX_SEQS, KvFit, check_engine_fits, fit_kv, header_info
from ttscale.backends.transformers_backend import DEFAULT_DECODE_INTERVAL
from ttscale.types import ModelInfo

BACKEND_HELP = ("Engine: llama-cpp (embedded, default), openai (any OpenAI-compatible server: vLLM, SGLang, "
                "llama-server, hosted APIs; needs --base-url), vllm (offline vLLM, GPU only), fake (scripted), "
                "or a plugin's (`ttscale tasks` lists them).")
BASE_URL_HELP = ("openai backend: server URL such as http://127.0.0.1:8080/v1; repeat to spread Ray workers "
                 "over several endpoints (round-robin).")
WORKERS_HELP = "Problems in flight at once: threads sharing one backend, or Ray workers with --ray."
RAY_HELP = "Fan problems out over a Ray cluster (local unless --ray-address); each worker holds its own backend."


MAX_KV_BYTES_HELP = ("Hard cap on KV-cache bytes in use at once, at --kv-type's real size. The embedded engine's "
                     "context (n_ctx) and parallel sequences (n_seq_max) are sized to fit it; each wave of samples "
                     "is sized from it (never more parallel samples than fit).")


def kv_capped_engine(backend: str, model: str, kv_type: str, cap: int | None, gen_tokens: Callable[[ModelInfo], int],
                     *, max_seqs: int = DEFAULT_MAX_SEQS, kv_type_v: str | None = None,
                     options: Mapping[str, Any] | None = None) -> KvFit | None:
    """The embedded engine's size under ``--max-kv-bytes`` (None without a cap or on another backend).

    Shapes come from the GGUF header, so nothing bigger than the cap is ever allocated; the prompt is
    not known yet (the engine that tokenizes it is what is being sized), so ``n_seq_max`` counts the
    generation cells after a shared prompt and the meter trims each wave by its real prompt.
    ``gen_tokens(info)`` is the per-sample cap (the task's max_tokens for that model). ``options``: the
    backend's own (``-B``); a transformers decoding cap (``decode_kv``) bounds a sample's cells, so the
    same cap holds more samples at once."""
    if cap is None or backend not in ("llama-cpp", "transformers"):
        return None
    if backend == "transformers":
        # float32 cells (its default dtype; bfloat16 would hold twice as many), the prompt once per sample:
        # n_seq_max counts samples of generation cells alone, and the meter trims each wave by its real,
        # pressed prompt
        info = replace(header_info(model, "f32"), kv_prompt_per_sample=True)
        gen = gen_tokens(info)
        if (decode := (options or {}).get("decode_kv")) is not None:
            gen = min(gen, int(decode) + int((options or {}).get("decode_interval", DEFAULT_DECODE_INTERVAL)))
        return fit_kv(info, cap, gen, max_seqs=max_seqs, shared_prompt=False)
    info = header_info(model, kv_type, kv_type_v)
    return fit_kv(info, cap, gen_tokens(info), max_seqs=max_seqs)


def check_kv_engine(fit: KvFit | None, backend: Backend) -> None:
    """After building: the engine's own context (llama.cpp pads it) must still fit the cap."""
    n_ctx = getattr(backend, "n_ctx", None)
    if fit is not None and isinstance(n_ctx, int):
        check_engine_fits(backend.model_info(), n_ctx, fit.cap_bytes)
