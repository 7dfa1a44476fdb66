"""``ttscale experiment NAME``: a headline experiment of the field, from stored pools (nothing generated)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ttscale.cli.common import cli_errors, console, fail
from ttscale.experiments import experiments
from ttscale.pools import SHIPPED, resolve_store
from ttscale.store import Store


@cli_errors
def experiment(
    name: Annotated[str, typer.Argument(help="One of: " + ", ".join(sorted(experiments())) + ".")],
    pool: Annotated[Optional[list[str]], typer.Option(help="Run id of a pool to use (repeatable; default: the experiment's shipped pools).")] = None,
    store: Annotated[Path, typer.Option(help="Store holding the pools; 'shipped' for the reference pools.")] = Path(SHIPPED),
    output: Annotated[Path, typer.Option(help="Directory for the page (NAME.md) and its figures.")] = Path("runs/experiments"),
) -> None:
    """Write the experiment's page: the paper's claim beside this project's measurement, with a verdict,
    confidence intervals, tables and PNG figures (committed copies: docs/experiments/NAME.md)."""

    table = experiments()
    if name not in table:
        fail(f"unknown experiment {name!r}; available: {', '.join(table)}")
    exp = table[name]
    path = resolve_store(store)
    if not path.exists():
        fail(f"no store at {path}")
    st = Store(path)
    t0 = time.perf_counter()
    try:
        page = exp.run(st, list(pool or exp.default_pools), output)
    finally:
        st.close()
    page.command = f"ttscale experiment {name}" + "".join(f" --pool {p}" for p in pool or []) + (
        "" if str(store) == SHIPPED else f" --store {store}")
    out = page.write(output)
    console.print(page.verdict)
    console.print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
