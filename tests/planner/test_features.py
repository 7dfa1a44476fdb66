"""Probe features: the vectorized pool version agrees with the per-problem one."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ttscale.planner.features import FEATURE_NAMES, oracle_pass_rate, pool_probe_features, probe_features
from ttscale.types import Sample


def _sample(i: int, answer: int, lp: float, n: int = 4) -> Sample:
    return Sample(i, "", None if answer < 0 else str(answer), None, n, 30, 0, 0.0, "stop", logprob=lp * n)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 3), st.floats(-3, 0), st.integers(1, 300)), min_size=1, max_size=6))
def test_pool_features_match_sample_features(probe: list[tuple[int, float, int]]) -> None:
    samples = [_sample(i, a, lp, n) for i, (a, lp, n) in enumerate(probe)]
    one = probe_features(samples, 30)
    ans = np.array([[a for a, _, _ in probe]])
    mlp = np.array([[lp for _, lp, _ in probe]])
    n_tok = np.array([[n for _, _, n in probe]], dtype=float)
    p = len(probe)
    arr = pool_probe_features(ans, mlp, np.exp(mlp), np.array([30.0]), np.arange(p).reshape(1, 1, p), n_tok)[0, 0]
    assert np.allclose(arr, one.vector(), atol=1e-9), (arr, one)


def test_features_of_a_split_probe() -> None:
    f = probe_features([_sample(0, 1, -1), _sample(1, 2, -1), _sample(2, -1, -1), _sample(3, 1, -1)], 12)
    assert f.agreement == 0.5 and f.answered == 0.75
    assert math.isclose(f.entropy, -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert f.prompt_tokens == 12 and math.isclose(f.verifier, math.exp(-1))
    assert list(f.to_dict()) == list(FEATURE_NAMES)
    assert math.isclose(f.log_length, math.log(5))


def test_a_policy_saved_before_a_feature_existed_still_predicts() -> None:
    from ttscale.planner.predictor import Predictor

    old = Predictor(probe=1, mean=[0.0] * 6, scale=[1.0] * 6, weights=[0.1, 0, 0, 0, 0, 0], intercept=0.5,
                    edges=[0.5], features=list(FEATURE_NAMES[:6]))
    X = np.array([[1.0, 0, 0, 0, 0, 0, 9.0]])  # today's vector has one more column: ignored
    assert np.allclose(old.predict(X), [0.6])


def test_oracle_pass_rate_is_the_pool_pass_rate() -> None:
    assert oracle_pass_rate(np.array([[True, False], [True, True]])).tolist() == [0.5, 1.0]
