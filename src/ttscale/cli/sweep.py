"""``ttscale sweep``: generate a pool of K samples per problem into the store, for replay."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ttscale.backends.kv_sizing import DEFAULT_MAX_SEQS
from ttscale.cli.bundle import EngineChoice, RunPlace, SamplingChoice, TaskChoice, bundled
from ttscale.cli.common import cli_errors, console, fail, human, write_json
from ttscale.cli.progress import run_bar
from ttscale.cli.remote_opts import check_kv_engine, kv_capped_engine
from ttscale.errors import BackendError
from ttscale.registry import make_verifier, verifier_names
from ttscale.run import Sweep, execute
from ttscale.store import Store
from ttscale.tasks.base import ReportsProgress


@cli_errors
@bundled
def sweep(
    task: TaskChoice,
    sampling: SamplingChoice,
    engine: EngineChoice,
    place: RunPlace,
    k: Annotated[int, typer.Option("-k", "--k", help="Samples per problem in the pool.")] = 32,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N problems.")] = 50,
    verifier: Annotated[Optional[list[str]], typer.Option(help=f"Score every sample with this verifier (repeatable): {', '.join(verifier_names())}.")] = None,
    wave: Annotated[int, typer.Option(help="Samples per batched request; each wave is committed before the next.")] = 32,
    max_kv_bytes: Annotated[Optional[int], typer.Option(help="Hard cap on the embedded engine's KV-cache bytes at --kv-type's real size: its context (n_ctx) and parallel sequences (n_seq_max) are sized to fit, and a --wave larger than fits runs in parts inside the engine (same samples, same seeds).")] = None,
) -> None:
    """Generate K samples per problem into --store (resumable), for `ttscale curves` and `ttscale report`.

    Each sample keeps its answer, correctness, token counts, log-prob, finish order and
    verifier scores. Rerunning with the same --run-id generates only what is missing.
    """
    if k < 1:
        fail("-k must be at least 1")
    if limit is not None and limit < 1:
        fail("--limit must be at least 1")
    if max_kv_bytes is not None and engine.backend != "llama-cpp":
        fail("--max-kv-bytes sizes the embedded engine: use it with --backend llama-cpp")
    engine.check()
    kv_fit = kv_capped_engine(engine.backend, engine.model, engine.kv_type, max_kv_bytes,
                              lambda i: task.build(i).fmt.max_tokens, max_seqs=min(k, DEFAULT_MAX_SEQS),
                              kv_type_v=engine.kv_type_v)
    specs = engine.specs(kv_fit.options() if kv_fit else None)
    be = specs[0].build()
    try:
        check_kv_engine(kv_fit, be)
        if kv_fit is not None:
            console.print(kv_fit.describe(), highlight=False)
        info = be.model_info()
        t = task.build(info)
        work = Sweep(t, k, wave, [make_verifier(v, t, be) for v in (verifier or [])], sampling.build())
        rid = place.run_id_or("sweep", task.task, f"k{k}", info.name)
        st = Store(place.store)
        try:
            with run_bar(f"sweep {task.task} k={k}", place.progress) as bar:
                if isinstance(t, ReportsProgress):  # generated instances take a while (minutes per seed)
                    t.progress = lambda i, n: bar.status(f"loading problems {i}/{n}")
                probs = st.resumable_problems(rid, work.config(), limit) or t.problems(limit=limit)
                summary = execute(work, store=st, run_id=rid, executor=engine.executor(be, specs),
                                  problems=probs, progress=bar)
        finally:
            st.close()
    finally:
        be.close()
    if summary.failures:
        first = next(iter(summary.failures.items()))
        raise BackendError(f"{len(summary.failures)} problem(s) failed and stay pending (rerun with --run-id {rid}); "
                           f"first: {first[0]}: {first[1]}")
    u = summary.spent
    console.print(
        f"sweep {rid}: {summary.problems} problems x {k} samples ({summary.generated} generated now, "
        f"{summary.already} already stored); {u.generated_tokens:,} tokens generated, "
        f"{u.prefilled_tokens:,} prefilled, {human(u.flops)} FLOPs, {summary.wall_s:.1f} s"
    )
    write_json(place.summary_path(rid), summary.to_dict() | {"task": t.describe(), "model": info.name})
    console.print(f"next: ttscale curves {rid} --store {place.store}   (resume with --run-id {rid})")
