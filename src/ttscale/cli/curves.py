"""``ttscale curves RUN`` and ``ttscale report RUN``: replay a stored pool into curves, fits, plots, HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ttscale.cli.common import DEFAULT_STORE, cli_errors, console, fail, human
from ttscale.cli.options import BootstrapOpt, BudgetsOpt, OrdersOpt, PoolKOpt, PoolRunArg, PoolStoreOpt, ResampleSeedOpt
from ttscale.pools import SHIPPED, resolve_store
from ttscale.replay.analysis import Analysis, analyze
from ttscale.replay.code_analysis import CodeAnalysis, analyze_pool
from ttscale.replay.curves import default_curves, parse_strategy, replay_rules
from ttscale.replay.pool import Pool, load_pool, model_info_from_record
from ttscale.store import Store
from ttscale.types import ModelInfo

_STRATEGY_HELP = (
    f"Replayed strategy (repeatable): kind[:key=value,...], kinds {', '.join(replay_rules())}; keys score (verifier name), "
    "m (short), threshold (adaptive), prune (rpc). Default: " + ", ".join(s.name for s in default_curves()) + "."
)


def _out_parent(store: Path) -> Path:
    """Where outputs go by default: beside the store, or runs/ for the shipped pools."""
    return DEFAULT_STORE.parent if str(store) == SHIPPED else store.parent


def _analysis(store: Path, run_id: str, strategy: list[str] | None, budgets: str | None, k: int | None,
              orders: int, bootstrap: int, seed: int) -> tuple[Analysis, Pool]:
    store = resolve_store(store)
    if not store.exists():
        fail(f"no store at {store} (run `ttscale sweep` first or pass --store)")
    specs = [parse_strategy(s) for s in strategy] if strategy else list(default_curves())
    ks: list[int] | None = None
    if budgets:
        try:
            ks = [int(x) for x in budgets.split(",") if x.strip()]
        except ValueError:
            fail(f"--budgets must be comma-separated integers, got {budgets!r}")
    st = Store(store)
    try:
        pool = load_pool(st, run_id, k=k)
    finally:
        st.close()
    return analyze(pool, specs, ks, n_orders=orders, n_bootstrap=bootstrap, seed=seed), pool


def _model_info(store: Path, run_id: str) -> ModelInfo | None:
    st = Store(resolve_store(store))
    try:
        rec = st.get_run(run_id)
        return model_info_from_record(rec.model) if rec is not None else None
    finally:
        st.close()


# A pool swept with this verifier carries visible-test scores next to the hidden-test grade.
CODE_VERIFIER = "unit-tests"


def _print_code(c: CodeAnalysis) -> None:
    fp = c.false_positives
    cov = ", ".join(f"@{k} {v:.3f}" for k, v in c.coverage.items())
    bon = ", ".join(f"@{k} {v:.3f}" for k, v in c.best_of_n_visible.items())
    console.print(f"unit-test verifier: coverage {cov}; best-of-k (visible tests, graded by hidden) {bon}")
    console.print(f"false positives {fp.false_positive}/{fp.visible_pass} visible passes (rate {fp.rate:.3f}); "
                  f"accuracy ceiling of verifier-filtered resampling {c.accuracy_ceiling:.3f}")
    gaming = ", ".join(f"{kind} {n}" for kind, n in c.gaming.items()) or "none"
    console.print(f"samples caught gaming the tests (graded as failures): {gaming}")


def _print_priced(a: Analysis, info: ModelInfo | None, profiles: list[str]) -> None:
    """Each curve's largest budget, and the cheapest way to the best deployable accuracy, priced per machine."""
    from ttscale.replay.pricing import cheapest_reaching, price_curve
    from ttscale.roofline import load_profile

    if info is None:
        fail("this run's record has no model shapes to price it with")
        return
    t = Table(title="priced per 1,000 problems (roofline; --hardware)", title_justify="left")
    t.add_column("strategy")
    t.add_column("k")
    for name in profiles:
        t.add_column(f"{name} s")
        t.add_column(f"{name} $")
    hws = [load_profile(n) for n in profiles]
    points = [p for name in a.curves.strategies for p in a.curves.curve(name) if not p.oracle]
    priced = {hw.name: price_curve(points, info, hw) for hw in hws}
    for i, p in enumerate(points):
        if p.k != a.curves.curve(p.strategy)[-1].k:
            continue
        cells = []
        for hw in hws:
            q = priced[hw.name][i]
            cells += [f"{q.seconds * 1000:,.0f}", f"{q.usd * 1000:.3f}"]
        t.add_row(p.strategy, str(p.k), *cells)
    console.print(t)
    target = max(p.accuracy for p in points)
    for hw in hws:
        best = cheapest_reaching(priced[hw.name], 0.97 * target)
        if best is not None:
            console.print(f"{hw.name}: cheapest to 97% of the best accuracy ({0.97 * target:.3f}): "
                          f"{best.point.strategy}@{best.point.k}, ${best.usd * 1000:.3f} and "
                          f"{best.seconds:.2f} s per problem ({best.seconds * 1000 / 3600:.2f} h per 1,000)")


def _print(a: Analysis) -> None:
    pool = a.curves.pool
    console.print(f"pool {pool['run_id']}: {pool['problems']} problems x {pool['k']} samples"
                  f" ({pool['dropped_problems']} left out), single-sample accuracy {pool['sample_accuracy']:.3f}")
    t = Table(title="accuracy at the largest budget, and the frontier", title_justify="left")
    for c in ("strategy", "k", "accuracy", "95% CI", "samples", "total tokens", "FLOPs"):
        t.add_column(c)
    for name in a.curves.strategies:
        p = a.curves.curve(name)[-1]
        t.add_row(name + (" (oracle)" if p.oracle else ""), str(p.k), f"{p.accuracy:.3f}",
                  f"{p.ci_low:.3f}-{p.ci_high:.3f}", f"{p.samples:.1f}", f"{p.total_tokens:,.0f}", human(p.flops))
    console.print(t)
    if a.coverage_fit:
        f = a.coverage_fit
        console.print(f"coverage fit: log c(k) = {f.a:.4f} * k^{f.b:.4f}  (R^2 {f.r2:.4f}); "
                      f"k for 90% coverage ~ {f.k_for(0.9):,.0f}")
    if a.saturation_fit:
        s = a.saturation_fit
        console.print(f"majority@k saturates at {s.ceiling:.3f} (R^2 {s.r2:.3f})")
    front = ", ".join(f"{p.strategy}@{p.k}" for p in a.frontier_tokens)
    console.print(f"Pareto frontier (tokens): {front}")
    for n in a.notes:
        console.print(f"[yellow]note[/]: {n}")


@cli_errors
def curves(
    run_id: PoolRunArg,
    store: PoolStoreOpt = DEFAULT_STORE,
    out: Annotated[Optional[Path], typer.Option(help="Output prefix: writes PREFIX.csv and PREFIX.json (default runs/<run>-curves).")] = None,
    strategy: Annotated[Optional[list[str]], typer.Option("--strategy", "-s", help=_STRATEGY_HELP)] = None,
    budgets: BudgetsOpt = None,
    k: PoolKOpt = None,
    orders: OrdersOpt = 64,
    bootstrap: BootstrapOpt = 200,
    seed: ResampleSeedOpt = 0,
    hardware: Annotated[Optional[list[str]], typer.Option(
        help="Also price each curve in seconds and dollars on this hardware profile (repeatable; built-in: "
             "h100, a100, l4, cpu-2core, or a .toml from ttscale calibrate).")] = None,
) -> None:
    """Accuracy-vs-compute points of every strategy at every budget, from one stored pool (CSV + JSON)."""
    a, _ = _analysis(store, run_id, strategy, budgets, k, orders, bootstrap, seed)
    prefix = out or _out_parent(store) / f"{run_id}-curves"
    csv_path, json_path = prefix.with_name(prefix.name + ".csv"), prefix.with_name(prefix.name + ".json")
    a.write_csv(csv_path)
    a.write_json(json_path)
    _print(a)
    if hardware:
        _print_priced(a, _model_info(store, run_id), hardware)
    console.print(f"wrote {csv_path} and {json_path}")


@cli_errors
def report(
    run_id: PoolRunArg,
    store: PoolStoreOpt = DEFAULT_STORE,
    out: Annotated[Optional[Path], typer.Option(help="Output directory (default runs/<run>-report).")] = None,
    strategy: Annotated[Optional[list[str]], typer.Option("--strategy", "-s", help=_STRATEGY_HELP)] = None,
    budgets: BudgetsOpt = None,
    k: PoolKOpt = None,
    orders: OrdersOpt = 64,
    bootstrap: BootstrapOpt = 200,
    seed: ResampleSeedOpt = 0,
) -> None:
    """PNG plots (accuracy vs tokens and FLOPs, coverage fit, Pareto frontier) and one self-contained HTML page.

    Pools swept with --verifier unit-tests also get the false-positive analysis (coverage, verifier, ceiling)."""
    import json

    from ttscale.report.html import write_report

    a, pool = _analysis(store, run_id, strategy, budgets, k, orders, bootstrap, seed)
    code = analyze_pool(pool, CODE_VERIFIER) if CODE_VERIFIER in pool.scores else None
    out_dir = out or _out_parent(store) / f"{run_id}-report"
    path = write_report(a, out_dir, code)
    a.write_csv(out_dir / "curves.csv")
    a.write_json(out_dir / "curves.json")
    _print(a)
    if code is not None:
        (out_dir / "code_analysis.json").write_text(json.dumps(code.to_dict(), indent=2))
        _print_code(code)
    console.print(f"wrote {path} (open it in a browser; it works offline) and PNGs in {out_dir}")
