"""``ttscale sweep``: generate a pool of K samples per problem into the store, for replay."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ttscale.backends.kv_sizing import DEFAULT_MAX_SEQS
from ttscale.cli.common import DEFAULT_STORE, cli_errors, console, fail, human, write_json
from ttscale.cli.options import (
    ApiKeyOpt,
    BackendOpt,
    BaseUrlOpt,
    ConcurrencyOpt,
    DataOpt,
    KvTypeOpt,
    KvTypeVOpt,
    MaxTokensOpt,
    MinPOpt,
    ModelOpt,
    RayAddressOpt,
    RayOpt,
    SeedOpt,
    ShotsOpt,
    StoreOpt,
    StyleOpt,
    SubtaskOpt,
    TaskOpt,
    TaskOptionOpt,
    TaskSeedOpt,
    TemperatureOpt,
    ThreadsOpt,
    TopKOpt,
    TopPOpt,
    WorkersOpt,
    parse_pairs,
)
from ttscale.cli.remote_opts import backend_specs, check_kv_engine, kv_capped_engine, parallel_sweep
from ttscale.errors import ConfigError
from ttscale.registry import make_task, make_verifier, verifier_names
from ttscale.store import Store
from ttscale.sweep import run_sweep
from ttscale.tasks.base import Task
from ttscale.types import ModelInfo, Sampling


@cli_errors
def sweep(
    task: TaskOpt = "gsm-symbolic",
    k: Annotated[int, typer.Option("-k", "--k", help="Samples per problem in the pool.")] = 32,
    model: ModelOpt = "smollm2-135m",
    limit: Annotated[Optional[int], typer.Option(help="Only the first N problems.")] = 50,
    style: StyleOpt = None,
    shots: ShotsOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = 0.8,
    top_p: TopPOpt = 1.0,
    top_k: TopKOpt = 0,
    min_p: MinPOpt = 0.0,
    seed: SeedOpt = 0,
    task_seed: TaskSeedOpt = None,
    subtask: SubtaskOpt = None,
    data: DataOpt = None,
    task_option: TaskOptionOpt = None,
    verifier: Annotated[Optional[list[str]], typer.Option(help=f"Score every sample with this verifier (repeatable): {', '.join(verifier_names())}.")] = None,
    wave: Annotated[int, typer.Option(help="Samples per batched request; each wave is committed before the next.")] = 32,
    store: StoreOpt = DEFAULT_STORE,
    run_id: Annotated[Optional[str], typer.Option(help="Name of the sweep; an existing id resumes it.")] = None,
    threads: ThreadsOpt = None,
    kv_type: KvTypeOpt = "f16",
    kv_type_v: KvTypeVOpt = None,
    max_kv_bytes: Annotated[Optional[int], typer.Option(help="Hard cap on the embedded engine's KV-cache bytes at --kv-type's real size: its context (n_ctx) and parallel sequences (n_seq_max) are sized to fit, and a --wave larger than fits runs in parts inside the engine (same samples, same seeds).")] = None,
    backend: BackendOpt = "llama-cpp",
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    concurrency: ConcurrencyOpt = 8,
    workers: WorkersOpt = 1,
    ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar with time left.")] = True,
) -> None:
    """Generate K samples per problem into --store (resumable), for `ttscale curves` and `ttscale report`.

    Each sample keeps its answer, correctness, token counts, log-prob, finish order and
    verifier scores. Rerunning with the same --run-id generates only what is missing.
    """
    if k < 1:
        fail("-k must be at least 1")
    if limit is not None and limit < 1:
        fail("--limit must be at least 1")
    if data is not None and task != "jsonl":
        fail("--data is only for --task jsonl")
    sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, seed=seed)
    if workers < 1:
        fail("--workers must be at least 1")
    if max_kv_bytes is not None and backend != "llama-cpp":
        fail("--max-kv-bytes sizes the embedded engine: use it with --backend llama-cpp")

    def task_for(info: ModelInfo) -> Task:
        return make_task(task, style=style, shots=shots, max_tokens=max_tokens, seed=task_seed, subtask=subtask,
                         data=str(data) if data else None, chat_model=info.has_chat_template, model=info.name,
                         options=parse_pairs(task_option, "--task-option"))

    kv_fit = kv_capped_engine(backend, model, kv_type, max_kv_bytes, lambda i: task_for(i).fmt.max_tokens,
                              max_seqs=min(k, DEFAULT_MAX_SEQS), kv_type_v=kv_type_v)
    specs = backend_specs(backend, model, base_url, api_key, concurrency, threads, kv_type,
                          kv_fit.options() if kv_fit else None, kv_type_v)
    be = specs[0].build()
    check_kv_engine(kv_fit, be)
    if kv_fit is not None:
        console.print(kv_fit.describe(), highlight=False)
    info = be.model_info()
    t = task_for(info)
    if t.fmt.style == "chat" and not info.has_chat_template:
        raise ConfigError(f"model {info.name} has no chat template: use --style completion")
    verifiers = [make_verifier(v, t, be) for v in (verifier or [])]
    rid = run_id or f"sweep-{task}-k{k}-{info.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    st = Store(store)
    try:
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
            console=console, disable=not progress, transient=False,
        ) as bar:
            job = bar.add_task(f"sweep {task} k={k}", total=None)

            def on_progress(done: int, total: int) -> None:
                bar.update(job, completed=done, total=total)

            if ray or workers > 1:  # problems in flight at once: threads on one backend, or Ray workers
                summary = parallel_sweep(task=t, k=k, wave=wave, verifiers=verifiers, store=st, run_id=rid,
                                         limit=limit, sampling=sampling, workers=workers, ray=ray,
                                         ray_address=ray_address, backend=be, specs=specs,
                                         progress=lambda i, n: bar.update(job, completed=i, total=n))
            else:
                summary = run_sweep(task=t, backend=be, store=st, run_id=rid, k=k, limit=limit, sampling=sampling,
                                    verifiers=verifiers, wave=wave, progress=on_progress)
    finally:
        st.close()
        be.close()
    u = summary.usage
    console.print(
        f"sweep {rid}: {summary.problems} problems x {k} samples ({summary.generated} generated now, "
        f"{summary.samples - summary.generated} already stored); {u.generated_tokens:,} tokens generated, "
        f"{u.prefilled_tokens:,} prefilled, {human(u.flops)} FLOPs, {summary.wall_s:.1f} s"
    )
    write_json(store.parent / f"{rid}.json", summary.to_dict() | {"task": t.describe(), "model": info.name})
    console.print(f"next: ttscale curves {rid} --store {store}   (resume with --run-id {rid})")
