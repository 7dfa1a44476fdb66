"""Replayed curves priced on a machine: each point's expected seconds and dollars per problem under a
hardware profile's roofline (:mod:`ttscale.roofline`), from what the point's strategy drew.

A point's samples of one prompt are decoded together after one prefill (as the engines that share a
prompt's prefix do), so a wider batch costs what the profile says a wider decode step costs: almost
nothing more on a memory-bound GPU, nearly proportionally more on a compute-bound CPU. That is why the
cheapest strategy at equal dollars can differ between machines while their token counts are equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.replay.curves import CurvePoint
from ttscale.roofline import HardwareProfile, generation_seconds
from ttscale.types import ModelInfo


@dataclass(frozen=True)
class PricedPoint:
    point: CurvePoint
    seconds: float
    """Predicted wall time per problem on the profile."""
    usd: float
    """Predicted dollars per problem (seconds x the profile's price)."""


def price_point(point: CurvePoint, info: ModelInfo, hw: HardwareProfile) -> PricedPoint:
    samples = max(1, round(point.samples))
    prompt = max(0, round(point.total_tokens - point.generated_tokens))
    per_sample = point.generated_tokens / samples
    secs = generation_seconds(info, hw, prompt_tokens=prompt, samples=samples, generated_tokens=per_sample)
    return PricedPoint(point, secs, hw.usd(secs))


def price_curve(points: list[CurvePoint], info: ModelInfo, hw: HardwareProfile) -> list[PricedPoint]:
    return [price_point(p, info, hw) for p in points]


def cheapest_reaching(priced: list[PricedPoint], accuracy: float, *, by: str = "usd") -> PricedPoint | None:
    """The cheapest non-oracle point (in ``usd`` or ``seconds``) whose accuracy reaches ``accuracy``."""
    ok = [p for p in priced if not p.point.oracle and p.point.accuracy >= accuracy - 1e-12]
    return min(ok, key=lambda p: getattr(p, by)) if ok else None
