"""Probe features: the vectorized pool version agrees with the per-problem one."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ttscale.planner.features import FEATURE_NAMES, oracle_pass_rate, pool_probe_features, probe_features
from ttscale.strategies.base import Sample


def _sample(i: int, answer: int, lp: float) -> Sample:
    return Sample(i, "", None if answer < 0 else str(answer), None, 4, 30, 0, 0.0, "stop", logprob=lp * 4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 3), st.floats(-3, 0)), min_size=1, max_size=6))
def test_pool_features_match_sample_features(probe: list[tuple[int, float]]) -> None:
    samples = [_sample(i, a, lp) for i, (a, lp) in enumerate(probe)]
    one = probe_features(samples, 30)
    ans = np.array([[a for a, _ in probe]])
    mlp = np.array([[lp for _, lp in probe]])
    p = len(probe)
    arr = pool_probe_features(ans, mlp, np.exp(mlp), np.array([30.0]), np.arange(p).reshape(1, 1, p))[0, 0]
    assert np.allclose(arr, one.vector(), atol=1e-9), (arr, one)


def test_features_of_a_split_probe() -> None:
    f = probe_features([_sample(0, 1, -1), _sample(1, 2, -1), _sample(2, -1, -1), _sample(3, 1, -1)], 12)
    assert f.agreement == 0.5 and f.answered == 0.75
    assert math.isclose(f.entropy, -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert f.prompt_tokens == 12 and math.isclose(f.verifier, math.exp(-1))
    assert list(f.to_dict()) == list(FEATURE_NAMES)


def test_oracle_pass_rate_is_the_pool_pass_rate() -> None:
    assert oracle_pass_rate(np.array([[True, False], [True, True]])).tolist() == [0.5, 1.0]
