"""Step-score aggregation: one number for a path from its per-step verifier scores.

``last`` (the PRM's view of the whole prefix, the default in HF search-and-learn),
``min`` (a chain is as good as its weakest step), ``prod`` (probability that every
step is right, if scores are independent probabilities) and ``mean``. A path with
no scored step aggregates to 0.0.

>>> aggregate([0.9, 0.5, 0.8], "min"), aggregate([0.9, 0.5, 0.8], "last")
(0.5, 0.8)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ttscale.errors import ConfigError

AGGREGATES: tuple[str, ...] = ("last", "min", "prod", "mean")


def check_aggregate(how: str) -> str:
    if how not in AGGREGATES:
        raise ConfigError(f"unknown step-score aggregate {how!r}; available: {', '.join(AGGREGATES)}")
    return how


def aggregate(scores: Sequence[float], how: str = "last") -> float:
    """Aggregate per-step scores with rule ``how`` (one of :data:`AGGREGATES`)."""
    check_aggregate(how)
    if not scores:
        return 0.0
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    return float(sum(scores) / len(scores))
