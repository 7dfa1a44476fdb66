"""``ttscale pool``: write a stored run to a compressed pool file, load one, list the shipped pools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ttscale.cli.common import DEFAULT_STORE, cli_errors, console, fail
from ttscale.store import Store

pool_app = typer.Typer(help="Sample pools as files: export a stored run, import one, list the shipped pools.",
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
) -> None:
    """Load a pool file into a store (checksum and counts verified; a truncated or edited file is refused)."""
    from ttscale.replay.pool_file import import_pool_file

    st = Store(store)
    try:
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
