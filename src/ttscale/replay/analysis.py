"""Curves, fits and frontiers of one pool, bundled for the CLI and the report."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError
from ttscale.replay.curves import CurvePoint, Curves, CurveSpec, compute_curves
from ttscale.replay.fit import CoverageFit, SaturationFit, fit_coverage, fit_saturation
from ttscale.replay.pareto import CheapestRow, cheapest_table, frontier
from ttscale.replay.pool import Pool

CSV_FIELDS = ["strategy", "k", "accuracy", "ci_low", "ci_high", "samples", "generated_tokens", "total_tokens",
              "flops", "exact", "oracle", "on_frontier_tokens", "on_frontier_flops"]


@dataclass
class Analysis:
    curves: Curves
    coverage_fit: CoverageFit | None
    saturation_fit: SaturationFit | None
    frontier_tokens: list[CurvePoint]
    frontier_flops: list[CurvePoint]
    cheapest_tokens: list[CheapestRow]
    cheapest_flops: list[CheapestRow]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return self.curves.to_dict() | {
            "coverage_fit": self.coverage_fit.to_dict() if self.coverage_fit else None,
            "majority_saturation_fit": self.saturation_fit.to_dict() if self.saturation_fit else None,
            "frontier": {"total_tokens": [(p.strategy, p.k) for p in self.frontier_tokens],
                         "flops": [(p.strategy, p.k) for p in self.frontier_flops]},
            "cheapest": {"total_tokens": [r.to_dict() for r in self.cheapest_tokens],
                         "flops": [r.to_dict() for r in self.cheapest_flops]},
            "notes": self.notes,
        }

    def rows(self) -> list[dict[str, Any]]:
        ft = {(p.strategy, p.k) for p in self.frontier_tokens}
        ff = {(p.strategy, p.k) for p in self.frontier_flops}
        return [p.to_dict() | {"on_frontier_tokens": (p.strategy, p.k) in ft, "on_frontier_flops": (p.strategy, p.k) in ff}
                for p in self.curves.points]

    def write_csv(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            for r in self.rows():
                w.writerow({k: r[k] for k in CSV_FIELDS})

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict() | {"points": self.rows()}, indent=2, default=float))


def analyze(
    pool: Pool,
    strategies: Sequence[CurveSpec] | None = None,
    budgets: list[int] | None = None,
    *,
    n_orders: int = 64,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> Analysis:
    curves = compute_curves(pool, strategies, budgets, n_orders=n_orders, n_bootstrap=n_bootstrap, seed=seed)
    notes: list[str] = []
    cov_fit = sat_fit = None
    cov = [p for p in curves.points if p.strategy == "pass@k"]
    if cov:
        try:
            cov_fit = fit_coverage([p.k for p in cov], [p.accuracy for p in cov])
        except ConfigError as e:
            notes.append(f"coverage fit skipped: {e}")
    maj = [p for p in curves.points if p.strategy == "majority"]
    if maj:
        try:
            sat_fit = fit_saturation([p.k for p in maj], [p.accuracy for p in maj])
        except ConfigError as e:
            notes.append(f"majority saturation fit skipped: {e}")
    if any(p.oracle for p in curves.points):
        notes.append("pass@k (and any oracle-scored curve) reads the reference answers: an upper bound, "
                     "left out of the frontier")
    return Analysis(
        curves, cov_fit, sat_fit, frontier(curves.points, "total_tokens"), frontier(curves.points, "flops"),
        cheapest_table(curves.points, "total_tokens"), cheapest_table(curves.points, "flops"), notes,
    )
