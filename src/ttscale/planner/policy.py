"""Fit a compute-optimal policy from a pool, save it as readable JSON, and apply it.

Fitting (Snell et al. 2024, binned by *predicted* difficulty):

1. For each probe size ``p``, compute the cheap probe features of every training problem
   (:mod:`ttscale.planner.features`) and regress the oracle pass rate on them (ridge, on
   standardized features). The prediction is the problem's difficulty; the oracle is only the
   regression target, never an input.
2. Bin problems by predicted pass rate (quantile edges, ``n_bins`` bins).
3. For every bin and every choice (rule x k, :mod:`ttscale.planner.options`; with other
   models' pools attached, also "switch to that model for k samples"), estimate by replay the
   expected accuracy and tokens, the probe included (its cost counts against the budget
   because every choice starts from it).
4. For each budget level (mean tokens per problem), pick one choice per bin maximizing the
   expected accuracy over all problems subject to the mean cost staying within the budget: a
   multiple-choice knapsack, solved greedily along each bin's convex hull of (tokens, accuracy)
   and then topped up with any single swap that still fits. Budget is spread across bins, so
   settled and hopeless bins get the probe only and the uncertain middle gets the samples.
5. The probe size with the best training accuracy wins each level.

The JSON keeps, per level and bin, the choice and its evidence: training problems in the bin,
the accuracy and tokens of the choice and of the best alternatives, and the bin's oracle pass
rate (labelled analysis-only).
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.planner.data import PlanPool
from ttscale.planner.features import ProbeFeatures, oracle_pass_rate, pool_probe_features
from ttscale.planner.options import Choice, alternate_grid, option_grid, replay_options
from ttscale.planner.predictor import Predictor, fit_predictor

FORMAT = "ttscale-policy/1"
SERVE_MODES = ("policy", "fixed")
Z_CLIP = 3.0


@dataclass
class BinRule:
    index: int
    pass_range: tuple[float, float]
    """Predicted pass-rate interval [lo, hi) of the bin."""
    choice: Choice
    expected_accuracy: float
    expected_tokens: float
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"bin": self.index, "predicted_pass_rate": list(self.pass_range), "choice": self.choice.to_dict(),
                "label": self.choice.label, "expected_accuracy": self.expected_accuracy,
                "expected_tokens": self.expected_tokens, "evidence": self.evidence}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BinRule:
        lo, hi = d["predicted_pass_rate"]
        return cls(int(d["bin"]), (float(lo), float(hi)), Choice.from_dict(d["choice"]),
                   float(d["expected_accuracy"]), float(d["expected_tokens"]), dict(d.get("evidence", {})))


@dataclass
class Level:
    budget: float
    """Mean processed tokens per problem this level may spend (probe included)."""
    probe: int
    expected_accuracy: float
    expected_tokens: float
    bins: list[BinRule]
    fixed: Choice | None = None
    """The best fixed choice within this budget on the training split (set by the comparison,
    :mod:`ttscale.planner.compare`); None when none was made."""
    serve: str = "policy"
    """What ``ttscale serve`` answers with by default at this level: ``policy`` (per prompt) or
    ``fixed`` (the fixed choice: the held-out comparison did not show the policy better)."""
    decision: dict[str, Any] = field(default_factory=dict)
    """Why ``serve`` is what it is (the paired held-out difference and its interval)."""

    def to_dict(self) -> dict[str, Any]:
        d = {"budget_tokens": self.budget, "probe": self.probe, "expected_accuracy": self.expected_accuracy,
             "expected_tokens": self.expected_tokens, "bins": [b.to_dict() for b in self.bins]}
        if self.fixed is not None:
            d |= {"fixed": self.fixed.to_dict(), "serve": self.serve, "decision": self.decision}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Level:
        serve = str(d.get("serve", "policy"))
        if serve not in SERVE_MODES or (serve == "fixed" and not d.get("fixed")):
            raise ConfigError(f"level {d.get('budget_tokens')}: serve must be one of {', '.join(SERVE_MODES)} "
                              "('fixed' needs a fixed choice)")
        return cls(float(d["budget_tokens"]), int(d["probe"]), float(d["expected_accuracy"]),
                   float(d["expected_tokens"]), [BinRule.from_dict(b) for b in d["bins"]],
                   Choice.from_dict(d["fixed"]) if d.get("fixed") else None, serve, dict(d.get("decision", {})))

    @property
    def serves_fixed(self) -> bool:
        return self.serve == "fixed" and self.fixed is not None


@dataclass
class Policy:
    predictors: dict[int, Predictor]
    levels: list[Level]
    source: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    follow_decisions: bool = False
    """Apply each level's ``serve`` decision (``ttscale serve``'s default): a level whose comparison did
    not show the per-prompt policy better than the best fixed choice answers with that choice. False
    (``ttscale run``, the library, ``ttscale serve --per-prompt``): the per-prompt policy everywhere.
    Not saved: it is how a policy is applied, not part of the fit."""

    @property
    def primary_model(self) -> str:
        """The model the policy was fitted for: it runs the probe and every choice without a model."""
        return str(self.source.get("model", ""))

    def models(self, level: Level | None = None) -> list[str]:
        """Other models the policy (or one level of it) may switch to."""
        levels = [level] if level is not None else self.levels
        return sorted({b.choice.model for lv in levels for b in lv.bins if b.choice.model})

    @property
    def budget_unit(self) -> str:
        """What the levels' budgets count per problem: ``tokens`` (processed) or ``gflops``."""
        return str(self.source.get("budget_unit", "tokens"))

    def level_for(self, budget_tokens: float) -> Level:
        """The richest level whose budget is within ``budget_tokens`` (mean per problem, in
        :attr:`budget_unit`: tokens unless the policy was fitted in GFLOPs)."""
        fits = [lv for lv in self.levels if lv.budget <= budget_tokens + 1e-9]
        if not fits:
            lo = min(lv.budget for lv in self.levels)
            raise ConfigError(f"budget {budget_tokens:g} {self.budget_unit}/problem is below the policy's smallest "
                              f"level ({lo:g}); refit with a smaller --budget")
        return max(fits, key=lambda lv: lv.budget)

    def decide(self, level: Level, features: ProbeFeatures) -> tuple[BinRule, float]:
        """The bin rule for a problem with these probe features, and its predicted pass rate."""
        pred = self.predictors[level.probe]
        x = features.vector()[None, :]
        b = int(pred.bins(x)[0])
        return level.bins[b], float(pred.predict(x)[0])

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "source": self.source, "settings": self.settings,
                "predictors": {str(p): pr.to_dict() for p, pr in sorted(self.predictors.items())},
                "levels": [lv.to_dict() for lv in self.levels], "evaluation": self.evaluation}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Policy:
        if d.get("format") != FORMAT:
            raise ConfigError(f"not a ttscale policy (format {d.get('format')!r}, expected {FORMAT!r})")
        try:
            preds = {int(p): Predictor.from_dict(v) for p, v in d["predictors"].items()}
            levels = [Level.from_dict(lv) for lv in d["levels"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"malformed policy: {e}") from e
        for lv in levels:
            if lv.probe not in preds or len(lv.bins) != preds[lv.probe].n_bins:
                raise ConfigError(f"malformed policy: level {lv.budget:g} does not match its predictor")
        if not levels:
            raise ConfigError("malformed policy: no levels")
        return cls(preds, levels, dict(d.get("source", {})), dict(d.get("settings", {})), d.get("evaluation"))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Policy:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"policy file not found: {path}") from e
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a policy is a JSON object")
        return cls.from_dict(data)


# -- fitting ------------------------------------------------------------------------------------


@dataclass
class ProbeFit:
    """Everything fitted for one probe size on the training pool, one row per (problem, ordering)."""

    predictor: Predictor
    choices: list[Choice]
    acc: np.ndarray
    """(R, O) accuracy per row and choice."""
    tokens: np.ndarray
    bins: np.ndarray
    """(R,) bin of each row."""
    oracle: np.ndarray
    """(R,) the row's problem pass rate: analysis only."""
    problem: np.ndarray
    """(R,) problem index of each row."""


def fit_probe(train: PlanPool, p: int, n_bins: int, *, n_orders: int = 64, seed: int = 0,
              max_k: int | None = None) -> ProbeFit:
    pool = train.pool
    P = pool.n_problems
    top = min(pool.k, max_k or pool.k)
    grid = option_grid(p, top) + [c for m in train.alts for c in alternate_grid(m, min(top, train.alts[m].pool.k))]
    table = replay_options(train, p, grid, n_orders=n_orders, seed=seed)
    X = pool_probe_features(pool.answer, pool.mean_logprob, pool.scores["certainty"], train.prompt_tokens,
                            table.order[..., :p], pool.n_tokens).reshape(P * n_orders, -1)
    y = np.repeat(oracle_pass_rate(pool.correct), n_orders)
    pred = fit_predictor(X, y, p, n_bins)
    n_opt = len(table.choices)
    acc = table.acc.reshape(-1, n_opt)
    bins = pred.bins(X)
    ks = [c.k for c in table.choices if c.kind == "majority" and c.model is None]
    cols = [table.index(Choice("majority", k)) for k in ks]
    pred.majority_ks = ks
    overall = acc[:, cols].mean(axis=0)
    pred.majority_by_k = [
        np.maximum.accumulate(acc[bins == b][:, cols].mean(axis=0) if (bins == b).any() else overall).round(6).tolist()
        for b in range(pred.n_bins)
    ]
    # per training problem: where its probes fall (mean over draws) and what majority voting buys it
    Zp = pred._z(X).reshape(P, n_orders, -1).mean(axis=1)
    curves = np.maximum.accumulate(acc[:, cols].reshape(P, n_orders, -1).mean(axis=1), axis=1)
    pred.neighbor_points = Zp.round(5).tolist()
    pred.neighbor_curves = curves.round(5).tolist()
    return ProbeFit(pred, table.choices, acc, table.tokens.reshape(-1, n_opt), bins, y, np.repeat(np.arange(P), n_orders))


def _hull(cost: np.ndarray, acc: np.ndarray) -> list[int]:
    """Option ids on the upper convex hull of (cost, accuracy), cheapest first, accuracy rising."""
    order = sorted(range(len(cost)), key=lambda i: (cost[i], -acc[i]))
    front: list[int] = []
    for i in order:
        if front and acc[i] <= acc[front[-1]] + 1e-12:
            continue
        while len(front) >= 2:
            a, b = front[-2], front[-1]
            # drop b if it lies on or below the segment a -> i
            if (acc[b] - acc[a]) * (cost[i] - cost[a]) <= (acc[i] - acc[a]) * (cost[b] - cost[a]):
                front.pop()
            else:
                break
        front.append(i)
    return front


def choose_level(budget: float, fit: ProbeFit) -> Level | None:
    """One choice per bin maximizing expected accuracy with mean tokens <= budget (None: probe alone is too dear)."""
    choices = fit.choices
    R = fit.acc.shape[0]
    nb = fit.predictor.n_bins
    members = [np.flatnonzero(fit.bins == b) for b in range(nb)]
    w = np.array([len(m) / R for m in members])
    A = np.array([fit.acc[m].mean(axis=0) if len(m) else np.zeros(len(choices)) for m in members])
    C = np.array([fit.tokens[m].mean(axis=0) if len(m) else fit.tokens.mean(axis=0) for m in members])
    hulls = [_hull(C[b], A[b]) for b in range(nb)]
    pick = [int(h[0]) for h in hulls]
    spend = float(sum(w[b] * C[b, pick[b]] for b in range(nb)))
    if spend > budget + 1e-9:
        return None
    heap: list[tuple[float, int, int]] = []

    def push(b: int, h: int) -> None:
        if w[b] > 0 and h + 1 < len(hulls[b]):
            i, j = hulls[b][h], hulls[b][h + 1]
            heapq.heappush(heap, (-(A[b, j] - A[b, i]) / max(C[b, j] - C[b, i], 1e-9), b, h))

    for b in range(nb):
        push(b, 0)
    while heap:
        _, b, h = heapq.heappop(heap)
        i, j = hulls[b][h], hulls[b][h + 1]
        extra = w[b] * (C[b, j] - C[b, i])
        if spend + extra <= budget + 1e-9:
            spend += extra
            pick[b] = j
            push(b, h + 1)
    improved = True
    while improved:  # top up: any single swap that raises accuracy and still fits
        improved = False
        best: tuple[float, int, int] | None = None
        for b in range(nb):
            if w[b] == 0:
                continue
            room = budget - spend + w[b] * C[b, pick[b]]
            ok = np.flatnonzero((w[b] * C[b] <= room + 1e-9) & (A[b] > A[b, pick[b]] + 1e-12))
            for j in ok.tolist():
                gain = float(w[b] * (A[b, j] - A[b, pick[b]]))
                if best is None or gain > best[0]:
                    best = (gain, b, int(j))
        if best is not None:
            _, b, j = best
            spend += w[b] * (C[b, j] - C[b, pick[b]])
            pick[b] = j
            improved = True
    edges = [0.0, *fit.predictor.edges, 1.0]
    rules = []
    for b in range(nb):
        m = members[b]
        j = pick[b]
        alts = sorted(range(len(choices)), key=lambda o: (-A[b, o], C[b, o]))[:5]
        probe_only = choices.index(Choice("majority", fit.predictor.probe))
        probs = np.unique(fit.problem[m])
        # Standard error across problems (rows of one problem are not independent).
        per_problem = np.array([fit.acc[m][fit.problem[m] == q, j].mean() for q in probs])
        se = float(per_problem.std(ddof=1) / np.sqrt(len(probs))) if len(probs) > 1 else None
        rules.append(BinRule(b, (edges[b], edges[b + 1]), choices[j], float(A[b, j]), float(C[b, j]), {
            "train_problems_seen": int(len(probs)),
            "share_of_probes": float(w[b]),
            "accuracy_standard_error": se,
            "probe_only": {"label": choices[probe_only].label, "accuracy": float(A[b, probe_only]),
                           "tokens": float(C[b, probe_only])},
            "best_alternatives": [{"label": choices[o].label, "accuracy": float(A[b, o]), "tokens": float(C[b, o])}
                                  for o in alts],
            "oracle_pass_rate_analysis_only": float(fit.oracle[m].mean()) if len(m) else None,
        }))
    acc = float(sum(w[b] * A[b, pick[b]] for b in range(nb)))
    return Level(float(budget), fit.predictor.probe, acc, spend, rules)


def default_budgets(train: PlanPool, fractions: Sequence[float] = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.5, 0.75, 1.0),
                    k: int | None = None) -> list[float]:
    """Budget levels as fractions of majority@K's mean tokens per problem on the training pool
    (``k``: of majority@k's, for k below the pool's samples per problem)."""
    pool = train.pool
    k = min(k or pool.k, pool.k)
    full = float((pool.prefill_tokens + pool.sample_tokens.mean(axis=1) * k).mean())
    # one decimal for token counts; small costs (GFLOPs of a tiny model) keep three significant digits
    return [round(f * full, 1) if f * full >= 10 else float(f"{f * full:.3g}") for f in fractions]


def fit_policy(
    train: PlanPool,
    budgets: Sequence[float] | None = None,
    *,
    probes: Sequence[int] = (1, 2, 4),
    n_bins: int = 4,
    n_orders: int = 64,
    seed: int = 0,
    source: dict[str, Any] | None = None,
    max_k: int | None = None,
) -> Policy:
    """Fit a policy on ``train`` (never on the problems it will be evaluated on).

    ``max_k`` caps the samples per problem a choice may use below the pool's own: a pool with more
    samples than that (several sweeps of the same problems) then estimates every choice by drawing
    its samples from the larger set, which makes the per-bin curves less noisy."""
    if n_bins < 1:
        raise ConfigError(f"--bins must be >= 1, got {n_bins}")
    if max_k is not None and max_k < 1:
        raise ConfigError(f"max_k must be >= 1, got {max_k}")
    K = min(train.pool.k, max_k or train.pool.k)
    probes = sorted({p for p in probes if 1 <= p <= K})
    if not probes:
        raise ConfigError(f"probe sizes must lie in 1..{K}")
    if train.n_problems < 2 * n_bins:
        raise ConfigError(f"{train.n_problems} training problems are too few for {n_bins} bins")
    budgets = sorted(set(budgets or default_budgets(train, k=K)))
    if any(b <= 0 for b in budgets):
        raise ConfigError("budgets must be positive token counts")
    fits = {p: fit_probe(train, p, n_bins, n_orders=n_orders, seed=seed, max_k=K) for p in probes}
    levels: list[Level] = []
    for b in budgets:
        cands = [lv for p in probes if (lv := choose_level(b, fits[p])) is not None]
        if cands:
            levels.append(max(cands, key=lambda lv: (round(lv.expected_accuracy, 9), -lv.expected_tokens)))
    if not levels:
        cheapest = min(float(f.tokens.mean(axis=0).min()) for f in fits.values())
        raise ConfigError(f"every budget is below the cost of the cheapest probe (~{cheapest:.0f} tokens/problem)")
    src = dict(source or {})
    src.setdefault("train_problems", list(train.problem_ids))
    src.setdefault("samples_per_problem", K)
    src.setdefault("model", train.pool.model)
    if train.alts:
        src.setdefault("alternate_models", sorted(train.alts))
    settings = {"probes": probes, "bins": n_bins, "n_orders": n_orders, "seed": seed,
                "budgets": budgets, "budget_unit": "mean processed tokens per problem (prefill + generated)",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return Policy({p: fits[p].predictor for p in probes}, levels, src, settings)
