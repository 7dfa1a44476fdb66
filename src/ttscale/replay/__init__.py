"""Replay: every strategy at every budget, estimated from one stored pool of samples."""

from ttscale.replay.analysis import Analysis, analyze
from ttscale.replay.curves import CurvePoint, Curves, CurveSpec, compute_curves, default_curves, parse_strategy
from ttscale.replay.pool import Pool, load_pool

__all__ = [
    "Analysis", "CurvePoint", "Curves", "Pool", "CurveSpec", "analyze", "compute_curves", "default_curves",
    "load_pool", "parse_strategy",
]
