"""``ttscale compare``: stored runs side by side (accuracy against what each spent)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ttscale.cli.common import DEFAULT_STORE, cli_errors, console, fail, human
from ttscale.run import summarize
from ttscale.store import Store


@cli_errors
def compare(
    run_ids: Annotated[Optional[list[str]], typer.Argument(help="Run ids to compare (default: every run in the store).")] = None,
    store: Annotated[Path, typer.Option(help="SQLite store to read.")] = DEFAULT_STORE,
) -> None:
    """Print accuracy, tokens, FLOPs and time per problem for stored runs, side by side."""
    if not store.exists():
        fail(f"no store at {store}")
    st = Store(store)
    try:
        records = st.list_runs() if not run_ids else [st.get_run(r) for r in run_ids]
        missing = [r for r, rec in zip(run_ids or [], records, strict=False) if rec is None]
        if missing:
            fail(f"unknown run id(s): {', '.join(missing)}")
        t = Table(title=f"runs in {store}")
        for col in ("run", "task", "strategy", "model", "problems", "accuracy", "prefilled/problem",
                    "generated/problem", "FLOPs/problem", "wall s/problem"):
            t.add_column(col, justify="right" if col not in ("run", "task", "strategy", "model") else "left",
                         overflow="fold")
        for rec in records:
            assert rec is not None
            cfg = rec.config
            strat = cfg.get("strategy", {})
            label = strat.get("name", "?") + (f"@{strat['k']}" if "k" in strat else "")
            s = summarize(st, rec.run_id)
            n = max(s.problems, 1)
            acc = "-" if s.accuracy is None else f"{s.accuracy:.3f}"
            t.add_row(rec.run_id, s.task, label, s.model, str(s.problems), acc,
                      f"{s.usage.prefilled_tokens / n:,.0f}", f"{s.usage.generated_tokens / n:,.0f}",
                      human(s.usage.flops / n), f"{s.usage.wall_s / n:.2f}")
        console.print(t)
    finally:
        st.close()
