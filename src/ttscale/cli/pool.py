"""``ttscale pool``: write a stored run to a compressed pool file, load one, list the shipped pools, and
score a stored pool with a verifier (an LLM judge) after the fact."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ttscale.backends.spec import EngineArgs
from ttscale.cli.common import DEFAULT_STORE, cli_errors, console, fail, human
from ttscale.cli.options import (
    ApiKeyOpt,
    BackendOpt,
    BackendOptionOpt,
    BaseUrlOpt,
    ConcurrencyOpt,
    KvTypeOpt,
    KvTypeVOpt,
    ThreadsOpt,
    parse_pairs,
)
from ttscale.cli.progress import run_bar
from ttscale.store import Store

pool_app = typer.Typer(help="Sample pools: export a stored run to a file, import one, list the shipped pools, "
                             "score one with a verifier (an LLM judge) without generating it again.",
                       no_args_is_help=True)


@pool_app.command("export")
@cli_errors
def export(
    run_id: Annotated[str, typer.Argument(help="Run id of the stored pool (a sweep).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (.jsonl.gz).")],
    store: Annotated[Path, typer.Option(help="SQLite store holding the run.")] = DEFAULT_STORE,
    command: Annotated[str, typer.Option(help="The command that made the run, kept in the file's header.")] = "",
    logprob_decimals: Annotated[int, typer.Option(help="Decimals kept of each per-token log-prob.")] = 4,
) -> None:
    """Write RUN_ID to one gzip JSON-lines file with a checksum (what `import` and the shipped pools read)."""
    from ttscale.replay.pool_file import export_run

    if not store.exists():
        fail(f"no store at {store}")
    st = Store(store)
    try:
        info = export_run(st, run_id, output, command=command, logprob_decimals=logprob_decimals)
    finally:
        st.close()
    console.print(f"wrote {info.path} ({info.problems} problems, {info.samples} samples, "
                  f"{info.path.stat().st_size / 1e6:.2f} MB)")


@pool_app.command("import")
@cli_errors
def import_(
    path: Annotated[Path, typer.Argument(help="A pool file (.jsonl.gz) written by `ttscale pool export`.")],
    store: Annotated[Path, typer.Option(help="SQLite store to load it into.")] = DEFAULT_STORE,
    run_id: Annotated[Optional[str], typer.Option(help="Store it under this run id (default: the file's).")] = None,
    if_missing: Annotated[bool, typer.Option(
        "--if-missing",
        help="Load only if the store lacks the run, and do nothing if the file does not exist: how a resumed "
             "sweep starts from a shipped pool without replacing a store that has grown past it.")] = False,
) -> None:
    """Load a pool file into a store (checksum and counts verified; a truncated or edited file is refused)."""
    from ttscale.replay.pool_file import import_if_missing, import_pool_file, pool_run_id

    if if_missing and not path.exists():
        console.print(f"no pool file at {path}: nothing to load")
        return
    st = Store(store)
    try:
        if if_missing:
            rid = run_id or pool_run_id(path)
            if not import_if_missing(path, st, rid):
                console.print(f"run {rid}: already in {store} ({st.sample_count(rid)} samples); not loaded again")
                return
        else:
            rid = import_pool_file(path, st, run_id)
        n = st.sample_count(rid)
    finally:
        st.close()
    console.print(f"run {rid}: {n} samples in {store}; next: ttscale curves {rid} --store {store}")


@pool_app.command("list")
@cli_errors
def list_() -> None:
    """The pools shipped with ttscale (use them with --store shipped)."""
    from ttscale.pools import pool_files
    from ttscale.replay.pool_file import read_pool_file

    t = Table(title="shipped pools (--store shipped)", title_justify="left")
    for c in ("run id", "model", "task", "problems sampled", "samples", "MB", "command"):
        t.add_column(c, overflow="fold")
    for f in pool_files():
        header, _, samples = read_pool_file(f)
        task = header["config"].get("task", {})
        t.add_row(f.name[: -len(".jsonl.gz")], str(header["model"].get("name", "")),
                  str(task.get("task") or task.get("name", "")) if isinstance(task, dict) else str(task),
                  f"{len({pid for pid, _ in samples})} of {header['problems']}", str(header["samples"]),
                  f"{f.stat().st_size / 1e6:.2f}",
                  header.get("command", ""))
    console.print(t)


SCORE_HELP = (
    "Score the samples of a stored pool with a verifier, without generating them again.\n\n"
    "Typical use: the LLM judge (GenRM style: P(\"Yes\"), the mean over --verifications V chains) on a "
    "bigger model, or on the same one, over a pool another model generated. Each scored sample gets its score "
    "under NAME (default VERIFIER-MODEL-vV, e.g. judge-qwen2.5-coder-1.5b-v1) and what scoring it cost the judge "
    "under NAME:prefilled, NAME:generated, NAME:flops and NAME:seconds: each judge call's usage is split over its "
    "samples by their judge prompt lengths (--batch 1 makes the split exact). Replay reads the score like any "
    "verifier's (ttscale curves RUN --strategy best-of-n:score=NAME); `ttscale experiment solve-or-verify` reads the "
    "costs for the paper's lambda.\n\n"
    "Resumable: rerun the same command and samples already scored under NAME are skipped; scores are committed "
    "after every judge call. --limit-problems N and --samples-per-problem S pick a fixed subset (the first N "
    "problems with samples, the first S samples of each), so a larger rerun extends the same subset.\n\n"
    "A shipped pool is scored in a store of your own, then exported back:\n\n"
    "ttscale pool import src/ttscale/pools/gsm8k-qwen05-k16.jsonl.gz --store runs/judge.sqlite\n\n"
    "ttscale pool score gsm8k-qwen05-k16 --store runs/judge.sqlite --model qwen2.5-coder-1.5b "
    "--limit-problems 30 --samples-per-problem 8\n\n"
    "ttscale pool export gsm8k-qwen05-k16 --store runs/judge.sqlite -o src/ttscale/pools/gsm8k-qwen05-k16.jsonl.gz"
)


@pool_app.command("score", help=SCORE_HELP)
@cli_errors
def score(
    run_id: Annotated[str, typer.Argument(help="Run id of the stored pool to score (a sweep).")],
    store: Annotated[Path, typer.Option(help="SQLite store holding the run (not 'shipped': import it first).")] = DEFAULT_STORE,
    verifier: Annotated[str, typer.Option(help="Verifier to score with: judge (LLM judge on --model), certainty, oracle, ...")] = "judge",
    model: Annotated[Optional[str], typer.Option(help="Model the verifier runs on (embedded name or .gguf), e.g. qwen2.5-coder-1.5b.")] = None,
    verifications: Annotated[Optional[int], typer.Option(help="judge: V verification chains per sample (1: read P(Yes) at once, no chain).")] = None,
    verify_tokens: Annotated[Optional[int], typer.Option(help="judge: cap on each verification chain's tokens (V > 1; default 64).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Score name to write (default: VERIFIER-MODEL-vV).")] = None,
    limit_problems: Annotated[Optional[int], typer.Option(help="Only the first N problems that have samples.")] = None,
    samples_per_problem: Annotated[Optional[int], typer.Option(help="Only the first S samples of each problem (by index).")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Samples per judge call (default: all of a problem's pending samples).")] = None,
    backend: BackendOpt = "llama-cpp",
    threads: ThreadsOpt = None,
    kv_type: KvTypeOpt = "f16",
    kv_type_v: KvTypeVOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    concurrency: ConcurrencyOpt = 8,
    backend_option: BackendOptionOpt = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar with time left.")] = True,
) -> None:
    import dataclasses

    from ttscale.pools import SHIPPED
    from ttscale.registry import backend_kinds, make_backend, make_verifier, verifier_specs
    from ttscale.run import Score, execute
    from ttscale.run.scoring import default_name, task_from_record

    if str(store) == SHIPPED:
        fail("the shipped pools' store is a cache rebuilt from the files: `ttscale pool import` the pool into a "
             "store of your own, score it there, then `ttscale pool export` it")
    if not store.exists():
        fail(f"no store at {store}")
    specs = verifier_specs()
    if verifier not in specs:
        fail(f"unknown verifier {verifier!r}; available: {', '.join(sorted(specs))}")
    if specs[verifier].needs_backend and not model:
        fail(f"verifier {verifier!r} runs on a model: give --model (e.g. qwen2.5-coder-1.5b)")
    st = Store(store)
    be = None
    try:
        rec = st.get_run(run_id)
        if rec is None:
            fail(f"no run {run_id!r} in {store}")
        assert rec is not None
        if model:
            kinds = backend_kinds()
            if backend not in kinds:
                fail(f"unknown backend {backend!r}; available: {', '.join(sorted(kinds))}")
            args = EngineArgs(model=model, base_urls=tuple(base_url or ()), api_key=api_key, concurrency=concurrency,
                              threads=threads, kv_type=kv_type, kv_type_v=kv_type_v,
                              options=parse_pairs(backend_option, "--backend-option"))
            be_model, be_options = kinds[backend].endpoints(args)[0]
            be = make_backend(backend, be_model, **be_options)
        info = be.model_info() if be is not None else None
        task_cfg = rec.config.get("task", {})
        task, why = task_from_record(task_cfg if isinstance(task_cfg, dict) else {},
                                     info.has_chat_template if info else True)
        if why:
            console.print(f"[yellow]note[/]: {why}; the judge reads a standalone prompt")
        v = make_verifier(verifier, task, be, verifications=verifications)  # type: ignore[arg-type]
        if verify_tokens is not None:
            if not hasattr(v, "verify_tokens"):
                fail(f"--verify-tokens is for the judge, not {verifier!r}")
            v = dataclasses.replace(v, verify_tokens=verify_tokens)  # type: ignore[type-var]
        score_name = name or default_name(verifier, info.name if info else None, getattr(v, "verifications", None))
        work = Score(v, score_name, limit_problems, samples_per_problem, batch)
        with run_bar(f"score {run_id} as {score_name}", progress) as bar:
            summary = execute(work, store=st, run_id=run_id, progress=bar)
    finally:
        st.close()
        if be is not None:
            be.close()
    u = summary.usage
    per = summary.wall_s / summary.generated if summary.generated else 0.0
    console.print(f"scores {score_name!r} on {run_id}: {summary.problems} problems, {summary.samples} samples "
                  f"({summary.generated} scored now, {summary.already} already); judge spent {u.prefilled_tokens:,} "
                  f"tokens prefilled, {u.generated_tokens:,} generated, {human(u.flops)} FLOPs, {summary.wall_s:.1f} s"
                  + (f" ({per:.2f} s/sample)" if summary.generated else ""))
    console.print(f"next: ttscale curves {run_id} --store {store} --strategy best-of-n:score={score_name}   "
                  f"(rerun to resume or extend)")
