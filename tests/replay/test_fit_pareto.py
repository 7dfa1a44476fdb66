"""Scaling-law fits recover known parameters; the Pareto frontier is exactly the non-dominated set."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttscale.errors import ConfigError
from ttscale.replay import analyze
from ttscale.replay.curves import CurvePoint
from ttscale.replay.fit import fit_coverage, fit_saturation
from ttscale.replay.pareto import cheapest_table, frontier
from ttscale.testing.synthetic import synthetic_pool


@pytest.mark.parametrize(("a", "b"), [(-1.2, -0.4), (-0.5, -0.8), (-2.5, -0.25)])
def test_coverage_fit_recovers_power_law(a: float, b: float) -> None:
    ks = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64], dtype=float)
    rng = np.random.default_rng(0)
    c = np.exp(a * ks**b) * (1 + rng.normal(0, 0.002, ks.size))
    f = fit_coverage(ks, np.clip(c, 1e-6, 1 - 1e-9))
    assert f.a == pytest.approx(a, rel=0.05) and f.b == pytest.approx(b, rel=0.05)
    assert f.r2 > 0.99
    # the extrapolated k for a target coverage lands on the generating law
    k90 = f.k_for(0.9)
    assert np.exp(a * k90**b) == pytest.approx(0.9, abs=0.01)


def test_saturation_fit_recovers_ceiling() -> None:
    ks = np.array([1, 2, 4, 8, 16, 32, 64], dtype=float)
    y = 0.7 - 0.3 * ks**-0.6
    f = fit_saturation(ks, y)
    assert f.ceiling == pytest.approx(0.7, abs=1e-3) and f.e == pytest.approx(0.6, abs=0.01)
    assert f.k_for_fraction(0.95) == pytest.approx(0.05 ** (-1 / 0.6), rel=0.02)


def test_fit_on_synthetic_pool_curve() -> None:
    a = analyze(synthetic_pool(300, 32, seed=2), n_orders=16, n_bootstrap=20)
    assert a.coverage_fit is not None and a.coverage_fit.r2 > 0.95 and a.coverage_fit.a < 0 and a.coverage_fit.b < 0
    assert a.saturation_fit is not None and 0 < a.saturation_fit.ceiling <= 1


def test_fits_refuse_too_few_points() -> None:
    with pytest.raises(ConfigError):
        fit_coverage([1, 2], [1.0, 1.0])
    with pytest.raises(ConfigError):
        fit_saturation([1, 2], [0.5, 0.6])


def _pt(i: int, acc: float, cost: float, oracle: bool = False) -> CurvePoint:
    return CurvePoint(f"s{i % 3}", i, acc, acc, acc, 1.0, cost, cost, cost * 10, True, oracle)


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(1, 1e6)), min_size=1, max_size=40))
@settings(max_examples=80, deadline=None)
def test_frontier_is_the_non_dominated_set(raw: list[tuple[float, float]]) -> None:
    pts = [_pt(i, a, c) for i, (a, c) in enumerate(raw)]
    front = frontier(pts, "total_tokens")
    ids = {id(p) for p in front}
    for p in pts:
        dominated = any(q.total_tokens <= p.total_tokens and q.accuracy >= p.accuracy
                        and (q.total_tokens < p.total_tokens or q.accuracy > p.accuracy) for q in pts)
        if id(p) in ids:
            assert not dominated
    # cheapest first, accuracy strictly increasing
    assert all(x.total_tokens <= y.total_tokens and x.accuracy < y.accuracy for x, y in zip(front, front[1:], strict=False))
    # every point is matched by a frontier point at most as expensive and at least as accurate
    for p in pts:
        assert any(q.total_tokens <= p.total_tokens and q.accuracy >= p.accuracy for q in front)


def test_frontier_leaves_out_oracle_and_cheapest_table() -> None:
    pts = [_pt(0, 0.5, 100), _pt(1, 0.6, 200), _pt(2, 0.9, 50, oracle=True), _pt(3, 0.55, 300)]
    assert [p.k for p in frontier(pts)] == [0, 1]
    rows = cheapest_table(pts, targets=[0.5, 0.55, 0.6, 0.7])
    assert [(r.k, r.cost) for r in rows] == [(0, 100), (1, 200), (1, 200), (None, None)]
    with pytest.raises(ConfigError):
        frontier(pts, "dollars")
