"""The difficulty predictor a policy bins problems with: ridge regression from probe features to pass rate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.planner.features import FEATURE_NAMES

FORMAT = "ttscale-policy/1"
Z_CLIP = 3.0


@dataclass
class Predictor:
    """Ridge regression from standardized probe features to pass rate, and the bin edges on it."""

    probe: int
    mean: list[float]
    scale: list[float]
    weights: list[float]
    intercept: float
    edges: list[float]
    score: str = "certainty"
    features: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    train_r2: float = 0.0
    majority_by_k: list[list[float]] = field(default_factory=list)
    """Per bin, training accuracy of majority@k for each k in ``majority_ks`` (made non-decreasing):
    the expected gain of more samples, which adaptive allocation uses to stop where samples buy nothing."""
    majority_ks: list[int] = field(default_factory=list)
    neighbor_points: list[list[float]] = field(default_factory=list)
    """Per training problem, its mean standardized (clipped) probe features over probe draws."""
    neighbor_curves: list[list[float]] = field(default_factory=list)
    """Per training problem, its majority@k accuracy for each k in ``majority_ks`` (non-decreasing)."""

    def _k_index(self, k: int) -> int:
        return max((i for i, kk in enumerate(self.majority_ks) if kk <= k), default=0)

    def expected_majority(self, b: int, k: int) -> float:
        """Training accuracy of majority@k in bin ``b`` (the largest fitted k <= ``k``)."""
        return self.majority_by_k[b][self._k_index(k)]

    def expected_majority_near(self, x: np.ndarray, k: int, n: int = 10) -> float:
        """Mean majority@k accuracy of the ``n`` training problems whose probe features are nearest
        ``x`` (a full feature row): unlike a bin, it tells a long chain of thought from a short
        answer of the same predicted pass rate."""
        if not self.neighbor_points:
            raise ConfigError("this policy has no per-problem training curves (refit it)")
        z = self._z(np.atleast_2d(x))[0]
        d = ((np.array(self.neighbor_points) - z) ** 2).sum(axis=1)
        near = np.argsort(d, kind="stable")[:n]
        return float(np.array(self.neighbor_curves)[near, self._k_index(k)].mean())

    def _z(self, X: np.ndarray) -> np.ndarray:
        cols = [FEATURE_NAMES.index(n) for n in self.features]
        return np.clip((X[:, cols] - np.array(self.mean)) / np.array(self.scale), -Z_CLIP, Z_CLIP)

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted pass rate of rows of features in :data:`FEATURE_NAMES` order (the predictor uses
        the columns it was fitted on, so a policy saved before a feature was added still applies)."""
        # z-scores clipped to +-3: a feature far outside the training range (a probe with a very low
        # log-prob) must not extrapolate a linear fit into a confident prediction
        Z = self._z(np.atleast_2d(X))
        return np.clip(Z @ np.array(self.weights) + self.intercept, 0.0, 1.0)

    def bins(self, X: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.array(self.edges), self.predict(X), side="right")

    def to_dict(self) -> dict[str, Any]:
        return {"probe": self.probe, "features": self.features, "mean": self.mean, "scale": self.scale,
                "weights": self.weights, "intercept": self.intercept, "edges": self.edges, "score": self.score,
                "train_r2": self.train_r2, "majority_ks": self.majority_ks,
                "majority_by_k": self.majority_by_k, "neighbor_points": self.neighbor_points,
                "neighbor_curves": self.neighbor_curves}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Predictor:
        return cls(probe=int(d["probe"]), mean=list(d["mean"]), scale=list(d["scale"]), weights=list(d["weights"]),
                   intercept=float(d["intercept"]), edges=list(d["edges"]), score=str(d.get("score", "certainty")),
                   features=list(d.get("features", FEATURE_NAMES)), train_r2=float(d.get("train_r2", 0.0)),
                   majority_by_k=[list(map(float, c)) for c in d.get("majority_by_k", [])],
                   majority_ks=[int(k) for k in d.get("majority_ks", [])],
                   neighbor_points=[list(map(float, r)) for r in d.get("neighbor_points", [])],
                   neighbor_curves=[list(map(float, r)) for r in d.get("neighbor_curves", [])])


def fit_predictor(X: np.ndarray, y: np.ndarray, probe: int, n_bins: int, ridge: float = 1.0) -> Predictor:
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    Z = np.clip((X - mean) / scale, -Z_CLIP, Z_CLIP)
    yc = y - y.mean()
    w = np.linalg.solve(Z.T @ Z + ridge * np.eye(Z.shape[1]), Z.T @ yc)
    pred = np.clip(Z @ w + y.mean(), 0, 1)
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else 0.0
    qs = np.quantile(pred, [i / n_bins for i in range(1, n_bins)]) if n_bins > 1 else np.array([])
    edges = sorted({round(float(q), 9) for q in qs if pred.min() < q <= pred.max()})
    return Predictor(probe, mean.tolist(), scale.tolist(), w.tolist(), float(y.mean()), edges, train_r2=r2)
