"""Code pools: repeated-sampling coverage and what an imperfect unit-test verifier can buy.

All functions take plain arrays of shape ``(problems, samples)``: ``visible[i, j]`` says
whether sample j of problem i passed the visible tests (what the verifier sees),
``hidden[i, j]`` whether it passed all tests (the grade). Samples without code are
simply False in both.

- Coverage (Brown et al. 2024, "Large Language Monkeys"): pass@k on the hidden tests,
  the unbiased estimator averaged over problems, with the exponentiated power law
  ``c(k) = exp(a k^b)`` fitted by :func:`ttscale.replay.fit.fit_coverage`.
- Best-of-N with the visible-test verifier, graded by the hidden tests, in closed form:
  among k random samples, if m >= 1 pass the visible tests the verifier picks one of
  them at random; by symmetry it is correct with probability a / (a + b), where a and b
  count the problem's visible-passing samples that pass / fail the hidden tests. If none
  passes (probability C(n - a - b, k) / C(n, k)), a random sample is returned, correct
  with probability c / (c + d) (the hidden-passing share of the visible-failing ones).
- False positives and the accuracy ceiling (Stroebl et al. 2024, "Inference Scaling
  fLaws"): a false positive passes the visible tests but fails the hidden ones. However
  many samples are drawn, the verifier-picked answer is correct with probability
  a / (a + b) per problem, so the mean of that precision is a ceiling on accuracy that no
  amount of resampling crosses, while coverage keeps climbing towards 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln

from ttscale.errors import ConfigError
from ttscale.replay.estimators import pass_at_k
from ttscale.replay.fit import CoverageFit, fit_coverage


def _pair(visible: ArrayLike, hidden: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(visible, dtype=bool)
    h = np.asarray(hidden, dtype=bool)
    if v.ndim != 2 or v.shape != h.shape:
        raise ConfigError(f"visible and hidden must be (problems, samples) arrays of one shape, got {v.shape} and {h.shape}")
    if v.shape[1] == 0:
        raise ConfigError("the pool has no samples")
    return v, h


def _hidden(hidden: ArrayLike) -> np.ndarray:
    h = np.asarray(hidden, dtype=bool)
    if h.ndim != 2 or h.shape[1] == 0:
        raise ConfigError(f"hidden must be a (problems, samples) array with samples, got shape {h.shape}")
    return h


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, always including n."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def coverage_curve(hidden: ArrayLike, ks: Sequence[int] | None = None) -> dict[int, float]:
    """Mean pass@k over problems for each k (unbiased estimator, Chen et al. 2021)."""
    h = _hidden(hidden)
    n = h.shape[1]
    c = h.sum(axis=1)
    # Rounded: the log-space estimator leaves ~1e-16 where the exact value is 0.
    return {int(k): round(float(pass_at_k(n, c, int(k)).mean()), 12) for k in (ks or default_ks(n))}


def fit_coverage_curve(curve: dict[int, float]) -> CoverageFit | None:
    """The exponentiated power-law fit, or ``None`` when fewer than 2 points lie strictly in (0, 1)."""
    try:
        return fit_coverage(list(curve), list(curve.values()))
    except ConfigError:
        return None


def _log_comb(n: np.ndarray, k: int) -> np.ndarray:
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(np.maximum(n - k, 0) + 1)


def best_of_n_curve(visible: ArrayLike, hidden: ArrayLike, ks: Sequence[int] | None = None) -> dict[int, float]:
    """Expected hidden-test accuracy of best-of-k with the visible-test verifier, per k."""
    v, h = _pair(visible, hidden)
    n = v.shape[1]
    a = (v & h).sum(axis=1).astype(float)
    b = (v & ~h).sum(axis=1).astype(float)
    c = (~v & h).sum(axis=1).astype(float)
    fails = n - a - b
    prec = np.divide(a, a + b, out=np.zeros_like(a), where=(a + b) > 0)
    fallback = np.divide(c, fails, out=np.zeros_like(c), where=fails > 0)
    out = {}
    for k in ks or default_ks(n):
        if not 1 <= k <= n:
            raise ConfigError(f"k must be in [1, {n}], got {k}")
        p_none = np.where(fails >= k, np.exp(_log_comb(fails, int(k)) - _log_comb(np.full_like(fails, n), int(k))), 0.0)
        out[int(k)] = float(((1 - p_none) * prec + p_none * fallback).mean())
    return out


@dataclass
class FalsePositives:
    rate: float
    """Share of visible-passing samples that fail the hidden tests (pooled over problems)."""
    per_problem_rate: float | None
    """Mean over problems with a visible-passing sample of their false-positive share."""
    visible_pass: int
    false_positive: int
    problems_with_false_positive: int
    problems_with_visible_pass: int


def false_positives(visible: ArrayLike, hidden: ArrayLike) -> FalsePositives:
    v, h = _pair(visible, hidden)
    vp = v.sum(axis=1)
    fp = (v & ~h).sum(axis=1)
    has = vp > 0
    return FalsePositives(
        rate=float(fp.sum() / vp.sum()) if vp.sum() else 0.0,
        per_problem_rate=float((fp[has] / vp[has]).mean()) if has.any() else None,
        visible_pass=int(vp.sum()),
        false_positive=int(fp.sum()),
        problems_with_false_positive=int((fp > 0).sum()),
        problems_with_visible_pass=int(has.sum()),
    )


def accuracy_ceiling(visible: ArrayLike, hidden: ArrayLike) -> float:
    """Accuracy of verifier-filtered resampling as the number of samples grows without bound.

    Per problem: the precision a / (a + b) of the visible tests when some sample passes
    them; otherwise the hidden-pass share of the (never accepted) samples.
    """
    v, h = _pair(visible, hidden)
    n = v.shape[1]
    return best_of_n_curve(v, h, [n])[n] if n else 0.0


@dataclass
class CodeAnalysis:
    problems: int
    samples: int
    coverage: dict[int, float]
    coverage_fit: dict[str, Any] | None
    best_of_n_visible: dict[int, float]
    false_positives: FalsePositives
    accuracy_ceiling: float
    visible_pass_at_1: float
    gaming: dict[str, int] = field(default_factory=dict)
    """Samples whose grade caught them gaming the tests, by kind (early-exit, fake-equality, ...)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["coverage"] = {str(k): v for k, v in self.coverage.items()}
        d["best_of_n_visible"] = {str(k): v for k, v in self.best_of_n_visible.items()}
        return d


def analyze_code_pool(visible: ArrayLike, hidden: ArrayLike, ks: Sequence[int] | None = None,
                      gaming: dict[str, int] | None = None) -> CodeAnalysis:
    """Everything above for one pool, ready for the report."""
    v, h = _pair(visible, hidden)
    ks = list(ks or default_ks(v.shape[1]))
    cov = coverage_curve(h, ks)
    fit = fit_coverage_curve(cov)
    return CodeAnalysis(
        problems=int(v.shape[0]),
        samples=int(v.shape[1]),
        coverage=cov,
        coverage_fit=fit.to_dict() if fit else None,
        best_of_n_visible=best_of_n_curve(v, h, ks),
        false_positives=false_positives(v, h),
        accuracy_ceiling=accuracy_ceiling(v, h),
        visible_pass_at_1=float(v.mean()),
        gaming=dict(gaming or {}),
    )


def pass_matrices(task: Any, problems: Sequence[Any], answers: Sequence[Sequence[str | None]]) -> tuple[np.ndarray, np.ndarray]:
    """``(visible, hidden)`` pass arrays for a pool of extracted answers, run in the sandbox.

    ``task`` provides ``run_tests(problem, answers, visible=...)`` (e.g. HumanEvalTask);
    every problem must have the same number of samples.
    """
    if len({len(a) for a in answers}) > 1:
        raise ConfigError("every problem needs the same number of samples for pass matrices")
    vis, hid = [], []
    for p, ans in zip(problems, answers, strict=True):
        vis.append([r is not None and r.passed for r in task.run_tests(p, list(ans), visible=True)])
        hid.append([r is not None and r.passed for r in task.run_tests(p, list(ans), visible=False)])
    return np.array(vis, dtype=bool).reshape(len(problems), -1), np.array(hid, dtype=bool).reshape(len(problems), -1)


def analyze_pool(pool: Any, verifier: str = "unit-tests", ks: Sequence[int] | None = None) -> CodeAnalysis:
    """:func:`analyze_code_pool` for a replay :class:`~ttscale.replay.pool.Pool` swept with
    ``--verifier unit-tests``: visible = that verifier's score, hidden = the grade."""
    if verifier not in pool.scores:
        raise ConfigError(f"the pool has no {verifier!r} scores; sweep with --verifier {verifier}")
    return analyze_code_pool(pool.scores[verifier] > 0.5, pool.correct, ks, getattr(pool, "gaming", {}))
