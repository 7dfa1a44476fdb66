"""Replay: every strategy at every budget, estimated from one stored pool of samples."""

from ttscale.replay.analysis import Analysis, analyze
from ttscale.replay.curves import DEFAULT_STRATEGIES, CurvePoint, Curves, StrategySpec, compute_curves, parse_strategy
from ttscale.replay.pool import Pool, load_pool

__all__ = [
    "DEFAULT_STRATEGIES", "Analysis", "CurvePoint", "Curves", "Pool", "StrategySpec", "analyze", "compute_curves",
    "load_pool", "parse_strategy",
]
