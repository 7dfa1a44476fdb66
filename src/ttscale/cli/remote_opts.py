"""Engine selection shared by ``ttscale run`` and ``ttscale sweep``: backend specs and parallel execution."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttscale.backends.base import Backend
from ttscale.backends.kv_sizing import DEFAULT_MAX_SEQS, KvFit, check_engine_fits, fit_kv, header_info
from ttscale.backends.models import EMBEDDED_MODELS
from ttscale.distributed import BackendSpec
from ttscale.errors import BackendError, ConfigError
from ttscale.store import Store
from ttscale.tasks.base import Task
from ttscale.types import ModelInfo, Sampling
from ttscale.verifiers.base import Verifier

if TYPE_CHECKING:
    from ttscale.sweep import SweepSummary

BACKEND_HELP = ("Engine: llama-cpp (embedded, default), openai (any OpenAI-compatible server: vLLM, SGLang, "
                "llama-server, hosted APIs; needs --base-url), vllm (offline vLLM, GPU only), fake (scripted).")
BASE_URL_HELP = ("openai backend: server URL such as http://127.0.0.1:8080/v1; repeat to spread Ray workers "
                 "over several endpoints (round-robin).")
WORKERS_HELP = "Problems in flight at once: threads sharing one backend, or Ray workers with --ray."
RAY_HELP = "Fan problems out over a Ray cluster (local unless --ray-address); each worker holds its own backend."


MAX_KV_BYTES_HELP = ("Hard cap on KV-cache bytes in use at once, at --kv-type's real size. The embedded engine's "
                     "context (n_ctx) and parallel sequences (n_seq_max) are sized to fit it; each wave of samples "
                     "is sized from it (never more parallel samples than fit).")


def backend_specs(backend: str, model: str, base_urls: list[str] | None, api_key: str | None,
                  concurrency: int, threads: int | None, kv_type: str = "f16",
                  engine_options: dict[str, Any] | None = None, kv_type_v: str | None = None) -> list[BackendSpec]:
    """One spec per endpoint (openai) or a single spec (other engines); ``engine_options`` go to the
    embedded engine (e.g. ``n_ctx``/``n_seq_max`` sized from a KV cap by :func:`kv_capped_engine`).
    ``kv_type``/``kv_type_v``: the embedded engine's cache, or the served cache's types for the meter."""
    kv_opts: dict[str, Any] = {}
    if kv_type != "f16":
        kv_opts["kv_type"] = kv_type
    if kv_type_v is not None and kv_type_v != kv_type:
        kv_opts["kv_type_v"] = kv_type_v
    if base_urls and backend != "openai":
        raise ConfigError("--base-url is only for --backend openai")
    if backend == "openai":
        if not base_urls:
            raise ConfigError("--backend openai needs --base-url (e.g. http://127.0.0.1:8080/v1)")
        opts: dict[str, Any] = {"concurrency": concurrency, **kv_opts}
        if api_key:
            opts["api_key"] = api_key
        if model in EMBEDDED_MODELS or model.endswith(".gguf"):
            opts["info_model"] = model  # the same model runs remotely: read its shapes locally for FLOPs
            model_id = Path(model).stem if model.endswith(".gguf") else model
        else:
            model_id = model
        return [BackendSpec("openai", model_id, opts | {"base_url": u}) for u in base_urls]
    if backend == "llama-cpp":
        local: dict[str, Any] = {"n_threads": threads} if threads else {}
        local.update(kv_opts)
        local.update(engine_options or {})
        return [BackendSpec("llama-cpp", model, local)]
    if kv_opts and backend == "fake":  # the scripted backend's shapes at those types: its meter counts them
        from ttscale.backends.fake import FAKE_MODEL_INFO
        from ttscale.backends.kv_sizing import with_kv_types

        return [BackendSpec("fake", None, {"info": with_kv_types(FAKE_MODEL_INFO, kv_type, kv_type_v)})]
    if kv_opts:
        raise ConfigError(f"--kv-type / --kv-type-v are for the embedded engine and --backend openai, not {backend}")
    if backend == "vllm":
        return [BackendSpec("vllm", model, {})]
    return [BackendSpec(backend, None, {})]


def kv_capped_engine(backend: str, model: str, kv_type: str, cap: int | None, gen_tokens: Callable[[ModelInfo], int],
                     *, max_seqs: int = DEFAULT_MAX_SEQS, kv_type_v: str | None = None) -> KvFit | None:
    """The embedded engine's size under ``--max-kv-bytes`` (None without a cap or on another backend).

    Shapes come from the GGUF header, so nothing bigger than the cap is ever allocated; the prompt is
    not known yet (the engine that tokenizes it is what is being sized), so ``n_seq_max`` counts the
    generation cells after a shared prompt and the meter trims each wave by its real prompt.
    ``gen_tokens(info)`` is the per-sample cap (the task's max_tokens for that model)."""
    if cap is None or backend != "llama-cpp":
        return None
    info = header_info(model, kv_type, kv_type_v)
    return fit_kv(info, cap, gen_tokens(info), max_seqs=max_seqs)


def check_kv_engine(fit: KvFit | None, backend: Backend) -> None:
    """After building: the engine's own context (llama.cpp pads it) must still fit the cap."""
    n_ctx = getattr(backend, "n_ctx", None)
    if fit is not None and isinstance(n_ctx, int):
        check_engine_fits(backend.model_info(), n_ctx, fit.cap_bytes)


def parallel_sweep(*, task: Task, k: int, wave: int, verifiers: Sequence[Verifier], store: Store, run_id: str,
                   limit: int | None, sampling: Sampling, workers: int, ray: bool, ray_address: str | None,
                   backend: Backend, specs: list[BackendSpec], progress: Callable[[int, int], None]) -> SweepSummary:
    """``ttscale sweep --workers N`` / ``--ray``: the same pool as :func:`run_sweep`, problems in parallel."""
    from ttscale.distributed import PoolStrategy, run_parallel
    from ttscale.sweep import SweepSummary, sweep_config

    par = run_parallel(task=task, strategy=PoolStrategy(k, wave, tuple(verifiers)), store=store, run_id=run_id,
                       limit=limit, sampling=sampling, workers=workers, mode="ray" if ray else "threads",
                       backend=None if ray else backend, backend_specs=specs, ray_address=ray_address,
                       config=sweep_config(task, k, sampling, verifiers), kind="sweep", progress=progress)
    if par.failures:
        first = next(iter(par.failures.items()))
        raise BackendError(f"{len(par.failures)} problem(s) failed and stay pending (rerun with --run-id {run_id}); "
                           f"first: {first[0]}: {first[1]}")
    return SweepSummary(run_id, par.problems, k, store.sample_count(run_id), par.samples_written, par.usage,
                        par.wall_s, par.skipped > 0)
