"""Scaling-law fits to replayed curves.

Coverage (Brown et al. 2024, "Large Language Monkeys"): ``log c(k) = a * k**b``
with a < 0, b < 0, fitted on the log scale. Taking logs twice makes it a line,
``log(-log c) = log(-a) + b log k``, which gives the starting point; a
least-squares fit of ``log c`` itself refines it (scipy).

Majority-vote saturation: ``acc(k) = s - d * k**(-e)`` (d, e > 0): voting
approaches a ceiling ``s`` (the share of problems whose mode is right), which
is where more samples stop buying accuracy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning
from scipy.optimize import curve_fit as _curve_fit

from ttscale.errors import ConfigError


@dataclass
class CoverageFit:
    a: float
    b: float
    r2: float
    """R^2 of log-coverage."""
    n_points: int

    def predict(self, k: np.ndarray | float) -> np.ndarray:
        return np.exp(self.a * np.power(np.asarray(k, dtype=float), self.b))

    def k_for(self, target: float) -> float:
        """Samples needed for ``target`` coverage under the fit (inf when the fit never gets there)."""
        if not 0 < target < 1:
            raise ConfigError(f"target coverage must be in (0, 1), got {target}")
        if self.a >= 0 or self.b >= 0:
            return math.inf
        try:
            return float((math.log(target) / self.a) ** (1.0 / self.b))
        except OverflowError:
            return math.inf

    def to_dict(self, targets: Sequence[float] = (0.5, 0.9, 0.95, 0.99)) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)
        d["k_for"] = {str(t): _finite_or_none(self.k_for(t)) for t in targets}
        return d


@dataclass
class SaturationFit:
    ceiling: float
    d: float
    e: float
    r2: float
    n_points: int

    def predict(self, k: np.ndarray | float) -> np.ndarray:
        return self.ceiling - self.d * np.power(np.asarray(k, dtype=float), -self.e)

    def k_for_fraction(self, fraction: float = 0.95) -> float:
        """Samples at which this fraction of the gain from k=1 to the ceiling is reached."""
        if not 0 < fraction < 1 or self.d <= 0 or self.e <= 0:
            return math.inf
        try:
            return float((1.0 - fraction) ** (-1.0 / self.e))
        except OverflowError:
            return math.inf

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)
        d["k_for_95pct_of_gain"] = _finite_or_none(self.k_for_fraction(0.95))
        return d


def curve_fit(*args: Any, **kwargs: Any) -> Any:
    """scipy's curve_fit without its covariance warning (we report R^2, not parameter errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        return _curve_fit(*args, **kwargs)


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _r2(y: np.ndarray, yhat: np.ndarray) -> float:
    ss_res = float(((y - yhat) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res < 1e-12 else 0.0)


def fit_coverage(ks: Sequence[float], coverage: Sequence[float]) -> CoverageFit:
    """Fit ``log c(k) = a k^b`` to points with 0 < c < 1 (c = 1 carries no information on the log scale)."""
    k = np.asarray(ks, dtype=float)
    c = np.asarray(coverage, dtype=float)
    use = (c > 1e-9) & (c < 1 - 1e-9) & (k > 0)
    if use.sum() < 2:
        raise ConfigError("a coverage fit needs at least 2 points with 0 < coverage < 1")
    k, c = k[use], c[use]
    y = np.log(c)
    slope, icpt = np.polyfit(np.log(k), np.log(-y), 1)
    p0 = (-math.exp(icpt), min(slope, -1e-3))
    try:
        (a, b), _ = curve_fit(lambda x, a, b: a * np.power(x, b), k, y, p0=p0,
                              bounds=([-np.inf, -10.0], [0.0, 0.0]), maxfev=20000)
    except (RuntimeError, ValueError):
        a, b = p0
    return CoverageFit(float(a), float(b), _r2(y, a * np.power(k, b)), int(use.sum()))


def fit_saturation(ks: Sequence[float], accuracy: Sequence[float]) -> SaturationFit:
    """Fit ``acc(k) = s - d k^(-e)``; needs at least 3 points."""
    k = np.asarray(ks, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    if len(k) < 3:
        raise ConfigError("a saturation fit needs at least 3 points")
    s0 = float(y.max())
    p0 = (s0, max(s0 - float(y[np.argmin(k)]), 1e-3), 0.5)
    try:
        (s, d, e), _ = curve_fit(lambda x, s, d, e: s - d * np.power(x, -e), k, y, p0=p0,
                                 bounds=([0.0, -1.0, 1e-3], [1.0, 1.0, 10.0]), maxfev=20000)
    except (RuntimeError, ValueError):
        s, d, e = p0
    return SaturationFit(float(s), float(d), float(e), _r2(y, s - d * np.power(k, -e)), len(k))
