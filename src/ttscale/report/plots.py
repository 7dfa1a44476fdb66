"""PNG figures of a replay analysis (matplotlib, headless Agg backend).

Compute axes are log-scaled and labelled with units (tokens or FLOPs per
problem); accuracy axes are fractions of problems solved; every curve has a
shaded bootstrap confidence band.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ttscale.errors import ConfigError
from ttscale.replay.analysis import Analysis
from ttscale.replay.code_analysis import CodeAnalysis

COST_LABELS = {
    "total_tokens": "total tokens per problem (prefill + generated, log scale)",
    "generated_tokens": "generated tokens per problem (log scale)",
    "flops": "forward FLOPs per problem (log scale)",
}


def _plt():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - matplotlib is in the `report` extra
        raise ConfigError("plots need matplotlib: pip install 'ttscale[report]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _compact(x: float) -> str:
    """1234 -> '1.2k', 3e11 -> '300G'."""
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:g}"


def _log_x(ax) -> None:  # type: ignore[no-untyped-def]
    """Log x axis labelled at 1, 2, 5 x 10^n in compact units (default minor labels collide)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _compact(float(x))))
    ax.xaxis.set_minor_locator(LogLocator(subs="auto"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _title(a: Analysis) -> str:
    pool = a.curves.pool
    return f"{pool.get('task') or pool.get('run_id')} · {pool.get('model')} · {pool['problems']} problems × {pool['k']} samples"


def plot_accuracy_vs_cost(a: Analysis, path: Path, cost: str = "total_tokens") -> Path:
    """Accuracy of every strategy against compute, with CI bands and the Pareto frontier."""
    if cost not in COST_LABELS:
        raise ConfigError(f"cost must be one of {', '.join(COST_LABELS)}")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5.6), dpi=110)
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(a.curves.strategies):
        pts = a.curves.curve(name)
        x = np.array([getattr(p, cost) for p in pts])
        y = np.array([p.accuracy for p in pts])
        color = cmap(i % 10)
        oracle = pts[0].oracle
        ax.plot(x, y, marker="o", ms=3.5, lw=1.6, color=color, ls="--" if oracle else "-",
                label=f"{name} (oracle)" if oracle else name)
        ax.fill_between(x, [p.ci_low for p in pts], [p.ci_high for p in pts], color=color, alpha=0.08, lw=0)
    front = a.frontier_tokens if cost == "total_tokens" else a.frontier_flops if cost == "flops" else []
    if front:
        ax.step([getattr(p, cost) for p in front], [p.accuracy for p in front], where="post", color="black",
                lw=1.0, alpha=0.7, label="Pareto frontier")
    _log_x(ax)
    ax.set_xlabel(COST_LABELS[cost])
    ax.set_ylabel("accuracy (fraction of problems solved)")
    ax.set_title(f"Accuracy vs compute — {_title(a)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_coverage_fit(a: Analysis, path: Path) -> Path:
    """Coverage (pass@k) with its exponentiated power-law fit, extrapolated past the pool."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=110)
    cov = a.curves.curve("pass@k")
    if not cov:
        raise ConfigError("no pass@k curve to plot")
    k = np.array([p.k for p in cov], dtype=float)
    ax.plot(k, [p.accuracy for p in cov], "o", color="C0", label="coverage (pass@k, exact)")
    ax.fill_between(k, [p.ci_low for p in cov], [p.ci_high for p in cov], color="C0", alpha=0.15, lw=0)
    maj = a.curves.curve("majority")
    if maj:
        ax.plot([p.k for p in maj], [p.accuracy for p in maj], "s", color="C1", ms=4, label="majority@k")
    f = a.coverage_fit
    if f is not None:
        xs = np.geomspace(1, k.max() * 8, 200)
        ax.plot(xs, f.predict(xs), "-", color="C0", alpha=0.8,
                label=f"fit: log c = {f.a:.3f}·k^{f.b:.3f} (R²={f.r2:.3f})")
    s = a.saturation_fit
    if s is not None and maj:
        xs = np.geomspace(1, k.max() * 8, 200)
        ax.plot(xs, s.predict(xs), ":", color="C1", label=f"majority fit: ceiling {s.ceiling:.3f} (R²={s.r2:.3f})")
    ax.axvline(k.max(), color="grey", lw=0.8, ls="--")
    ax.text(k.max(), 0.3, " pool size", color="grey", fontsize=8, transform=ax.get_xaxis_transform())
    _log_x(ax)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("samples per problem k (log scale)")
    ax.set_ylabel("fraction of problems")
    ax.set_title(f"Coverage scaling — {_title(a)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_frontier(a: Analysis, path: Path) -> Path:
    """The Pareto frontier against tokens and against FLOPs, points labelled by strategy and k."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), dpi=110)
    for ax, cost, front in ((axes[0], "total_tokens", a.frontier_tokens), (axes[1], "flops", a.frontier_flops)):
        allp = [p for p in a.curves.points if not p.oracle]
        if not allp:  # only oracle curves were replayed: there is no frontier, and no data for a log axis
            ax.text(0.5, 0.5, "no non-oracle strategy replayed", ha="center", transform=ax.transAxes)
            continue
        ax.scatter([getattr(p, cost) for p in allp], [p.accuracy for p in allp], s=10, color="lightgrey",
                   label="all strategies × budgets")
        ax.step([getattr(p, cost) for p in front], [p.accuracy for p in front], where="post", color="C3", lw=1.5,
                label="Pareto frontier")
        ax.scatter([getattr(p, cost) for p in front], [p.accuracy for p in front], s=18, color="C3", zorder=3)
        for p in front[:: max(1, len(front) // 8)]:
            ax.annotate(f"{p.strategy}@{p.k}", (getattr(p, cost), p.accuracy), fontsize=7,
                        xytext=(3, -9), textcoords="offset points")
        _log_x(ax)
        ax.set_xlabel(COST_LABELS[cost])
        ax.set_ylabel("accuracy (fraction of problems solved)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Pareto frontier (non-oracle strategies) — {_title(a)}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def coverage_fit_skipped(c: CodeAnalysis) -> str | None:
    """Why the code pool's coverage fit is missing (``None`` when there is a fit)."""
    if c.coverage_fit is not None:
        return None
    vals = list(c.coverage.values())
    if all(v == 0 for v in vals):
        return "coverage is 0 at every k (no sample passes the hidden tests), so there is nothing to fit"
    if all(v == 1 for v in vals):
        return "coverage is 1 at every k, so there is nothing to fit"
    return "the fit needs at least 2 values of k with 0 < coverage < 1"


def plot_code_verifier(c: CodeAnalysis, path: Path, title: str) -> Path:
    """Code pools: coverage with its fit (left); best-of-k with the visible-test verifier, graded by
    the hidden tests, against coverage (a perfect verifier) and the false-positive ceiling (right)."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), dpi=110)
    k = np.array(list(c.coverage), dtype=float)
    cov = np.array(list(c.coverage.values()))
    left.plot(k, cov, "o", color="C0", label="coverage (pass@k, hidden tests)")
    f = c.coverage_fit
    if f is not None:
        xs = np.geomspace(1, k.max() * 8, 200)
        left.plot(xs, np.exp(f["a"] * xs ** f["b"]), "-", color="C0", alpha=0.8,
                  label=f"fit: log c = {f['a']:.3f}·k^{f['b']:.3f} (R²={f['r2']:.3f})")
    else:
        # Say why on the figure itself: a PNG read alone must not look like a fit was forgotten.
        left.text(0.03, 0.95, textwrap.fill("fit skipped: " + str(coverage_fit_skipped(c)), 60),
                  transform=left.transAxes, fontsize=8, va="top", color="#7a4b00")
    right.plot(k, cov, "o--", color="C0", ms=4, label="perfect verifier (= coverage)")
    right.plot(list(c.best_of_n_visible), list(c.best_of_n_visible.values()), "s-", color="C3", ms=4,
               label="best-of-k, visible-test verifier (graded by hidden tests)")
    right.axhline(c.accuracy_ceiling, color="C3", ls=":", lw=1.2,
                  label=f"ceiling of verifier-filtered resampling: {c.accuracy_ceiling:.3f}")
    fp = c.false_positives
    right.text(0.03, 0.95, f"false positives: {fp.false_positive}/{fp.visible_pass} visible passes = {fp.rate:.3f}",
               transform=right.transAxes, fontsize=8, va="top")
    for ax, sub in ((left, "Coverage"), (right, "Best-of-k with an imperfect verifier")):
        ax.axvline(k.max(), color="grey", lw=0.8, ls="--")
        _log_x(ax)
        if ax is right or f is None:
            ax.set_xticks(k)  # few budgets: label each one (the 1-2-5 ticks would skip k = 4)
        ax.set_ylim(-0.02, 1.02)  # points at 0 stay visible above the axis
        ax.set_xlabel("samples per problem k (log scale)")
        ax.set_ylabel("fraction of problems")
        ax.set_title(sub, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"Unit-test verifier — {title}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(a: Analysis, out_dir: Path, code: CodeAnalysis | None = None) -> dict[str, Path]:
    """All figures into ``out_dir``; returns name -> path. ``code`` adds the unit-test verifier figure."""
    figs = {
        "accuracy_vs_tokens": plot_accuracy_vs_cost(a, out_dir / "accuracy_vs_tokens.png", "total_tokens"),
        "accuracy_vs_flops": plot_accuracy_vs_cost(a, out_dir / "accuracy_vs_flops.png", "flops"),
        "frontier": plot_frontier(a, out_dir / "frontier.png"),
    }
    if a.curves.curve("pass@k"):
        figs["coverage"] = plot_coverage_fit(a, out_dir / "coverage.png")
    if code is not None:
        figs["code_verifier"] = plot_code_verifier(code, out_dir / "code_verifier.png", _title(a))
    return figs
