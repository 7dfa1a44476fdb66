"""Pareto frontier of accuracy against cost over all strategies and budgets.

A point is on the frontier when no other point is at least as accurate for at
most the same cost (and strictly better in one). Oracle curves (pass@k, an
oracle verifier) read the reference answers; they are left out by default
because no deployed system can reach them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.replay.curves import CurvePoint

COSTS = ("generated_tokens", "total_tokens", "flops")


def frontier(points: Sequence[CurvePoint], cost: str = "total_tokens", include_oracle: bool = False) -> list[CurvePoint]:
    """Non-dominated points, cheapest first (accuracy increases along the list)."""
    if cost not in COSTS:
        raise ConfigError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
    pts = [p for p in points if include_oracle or not p.oracle]
    # Sort by cost, then best accuracy first among equal cost; keep strict accuracy records.
    pts.sort(key=lambda p: (getattr(p, cost), -p.accuracy))
    out: list[CurvePoint] = []
    best = -np.inf
    for p in pts:
        if p.accuracy > best:
            out.append(p)
            best = p.accuracy
    return out


@dataclass
class CheapestRow:
    target: float
    strategy: str | None
    k: int | None
    accuracy: float | None
    cost: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "strategy": self.strategy, "k": self.k, "accuracy": self.accuracy,
                "cost": self.cost}


def cheapest_table(
    points: Sequence[CurvePoint], cost: str = "total_tokens", targets: Sequence[float] | None = None,
    include_oracle: bool = False,
) -> list[CheapestRow]:
    """For each accuracy target, the cheapest (strategy, k) that reaches it (None if nothing does).

    Default targets: steps of 0.05 from the lowest to the highest accuracy on the frontier.
    """
    front = frontier(points, cost, include_oracle)
    if not front:
        return []
    if targets is None:
        lo, hi = front[0].accuracy, front[-1].accuracy
        targets = [round(t, 2) for t in np.arange(np.ceil(lo * 20) / 20, hi + 1e-9, 0.05)] or [round(hi, 3)]
    rows = []
    for t in targets:
        hit = next((p for p in front if p.accuracy >= t - 1e-12), None)
        rows.append(CheapestRow(float(t), hit.strategy if hit else None, hit.k if hit else None,
                                hit.accuracy if hit else None, getattr(hit, cost) if hit else None))
    return rows
