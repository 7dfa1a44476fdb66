"""The planner with both models available, judged at equal FLOPs (the second half of ``compute-vs-size``).

``ttscale plan --alt-pool`` budgets mean processed *tokens*, and a token of the larger model costs
about three of the smaller one's; to ask the FLOPs question the planner gets pools whose cost
fields (prefill and each sample's charge) hold GFLOPs instead of tokens. Nothing else changes: its
difficulty features still read the real prompt and generation lengths, and its knapsack, replay and
evaluation are the planner's own (:func:`~ttscale.planner.policy.fit_policy`,
:func:`~ttscale.planner.evaluate.level_outcomes`).

The shared problems are few while the large model's pool is being made, so evaluation is
cross-fitted: the planner's seeded hash split cuts them in half, a policy fitted on one half is
replayed on the other and the other way round. Every problem is held out exactly once and no policy
is evaluated on a problem it was fitted on. The fixed choices (each model alone, with every fixed
strategy of the planner's evaluation at every k) are replayed on the same problems; the best of
them within the policy's mean FLOPs is picked in hindsight, which favours the fixed side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ttscale.errors import ConfigError
from ttscale.experiments.matched_flops import ModelPair, mean_ci
from ttscale.planner.data import PlanPool, align_alternate, from_pool
from ttscale.planner.evaluate import baselines, level_outcomes, split_problems
from ttscale.planner.policy import Policy, fit_policy
from ttscale.replay.curves import Curves, compute_curves
from ttscale.replay.pool import Pool

UNIT = 1e9
"""Cost unit of the FLOPs-costed pools: GFLOPs, so budgets read like the planner's token counts."""
BUDGET_KS = (1, 2, 4, 8)
"""Budget levels: the large model's mean FLOPs per problem at this many samples."""
PROBES = (1, 2, 4)


def flops_plan_pool(pool: Pool) -> PlanPool:
    """``pool`` for the planner with GFLOPs where it reads tokens as cost (prompt lengths kept as features)."""
    cost = dataclasses.replace(pool, prefill_tokens=pool.prefill_flops / UNIT, sample_tokens=pool.sample_flops / UNIT)
    return from_pool(cost, prompt_tokens=pool.prefill_tokens)


@dataclass
class FixedPoint:
    model: str
    strategy: str
    k: int
    accuracy: float
    gflops: float
    per_problem: np.ndarray

    @property
    def label(self) -> str:
        return f"{self.model} {self.strategy}@{self.k}"


@dataclass
class PlanLevel:
    budget: float
    """GFLOPs per problem the level may spend on average (probe included)."""
    gflops: float
    """What the two-model policy spent, held out."""
    accuracy: float
    ci: tuple[float, float]
    large_share: float
    """Share of held-out probes after which the policy switched to the large model."""
    single_accuracy: float | None
    """The small-model-only policy at the same budget (None: it had no level there)."""
    single_gflops: float | None
    best_small: FixedPoint | None
    best_large: FixedPoint | None
    mix: FixedPoint | None = None
    """The best prompt-blind mix of two fixed choices (each problem gets one of them at random) that spends
    the policy's mean FLOPs: any point on the upper hull of the fixed choices is reachable without looking
    at a prompt, so beating it is what choosing per prompt must do."""
    gain_ci: tuple[float, float] = (float("nan"), float("nan"))
    mix_gain_ci: tuple[float, float] = (float("nan"), float("nan"))

    @property
    def best_fixed(self) -> FixedPoint | None:
        pts = [p for p in (self.best_small, self.best_large) if p is not None]
        return max(pts, key=lambda p: (p.accuracy, -p.gflops)) if pts else None

    @property
    def gain(self) -> float:
        b = self.best_fixed
        return self.accuracy - b.accuracy if b is not None else float("nan")

    @property
    def mix_gain(self) -> float:
        return self.accuracy - self.mix.accuracy if self.mix is not None else float("nan")


@dataclass
class TwoModelPlan:
    problems: int
    n_bins: int
    levels: list[PlanLevel]
    train_sizes: tuple[int, ...] = ()
    """Problems each cross-fitted policy was fitted on."""
    notes: list[str] = field(default_factory=list)

    @property
    def mean_gain(self) -> float | None:
        g = [lv.gain for lv in self.levels if np.isfinite(lv.gain)]
        return float(np.mean(g)) if g else None


def _best_fixed(model: str, curves: Curves, gflops: float) -> FixedPoint | None:
    ok = [p for p in fixed_points(model, curves) if p.gflops <= gflops * (1 + 1e-9)]
    return max(ok, key=lambda p: (round(p.accuracy, 12), -p.gflops)) if ok else None


Outcomes = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Per held-out problem: accuracy, GFLOPs spent, share of probe draws after which the policy switched models."""


def fixed_points(model: str, curves: Curves) -> list[FixedPoint]:
    return [FixedPoint(model, p.strategy, p.k, p.accuracy, p.total_tokens, curves.per_problem[p.strategy][:, p.k - 1])
            for p in curves.points if not p.oracle]


def mix_at(points: Sequence[FixedPoint], gflops: float) -> FixedPoint | None:
    """The most accurate prompt-blind random mix of two fixed points spending ``gflops`` on average
    (a single point when one alone is best within it; None when even the cheapest costs more)."""
    hull: list[FixedPoint] = []
    for p in sorted(points, key=lambda p: (p.gflops, -p.accuracy)):
        if hull and p.accuracy <= hull[-1].accuracy + 1e-12:
            continue
        # drop the last hull point while it lies on or below the chord from the one before it to p
        while len(hull) >= 2 and ((hull[-1].accuracy - hull[-2].accuracy) * (p.gflops - hull[-2].gflops)
                                  <= (p.accuracy - hull[-2].accuracy) * (hull[-1].gflops - hull[-2].gflops)):
            hull.pop()
        hull.append(p)
    within = [p for p in hull if p.gflops <= gflops * (1 + 1e-9)]
    if not within:
        return None
    a = within[-1]
    if a is hull[-1]:
        return a
    b = hull[hull.index(a) + 1]
    w = (gflops - a.gflops) / (b.gflops - a.gflops)
    return FixedPoint("mix", f"{1 - w:.0%} {a.label} + {w:.0%} {b.label}", 0, (1 - w) * a.accuracy + w * b.accuracy,
                      gflops, (1 - w) * a.per_problem + w * b.per_problem)


def _held_out(policy: Policy, test: PlanPool, n_orders: int, seed: int) -> dict[float, Outcomes]:
    """Each level's outcomes on ``test``, by the level's budget."""
    out: dict[float, Outcomes] = {}
    for lv in policy.levels:
        r = level_outcomes(policy, lv, test, n_orders=n_orders, seed=seed)
        switched = np.vectorize(lambda b, lv=lv: lv.bins[b].choice.model is not None)(r["bins"]).mean(axis=1)
        out[lv.budget] = (r["acc"], r["tokens"], switched)
    return out


def plan_two_models(pair: ModelPair, budget_ks: Sequence[int] = BUDGET_KS, *, n_orders: int = 64, seed: int = 0,
                    reps: int = 400) -> TwoModelPlan:
    """Cross-fitted held-out accuracy of the two-model policy against each model alone, at equal FLOPs."""
    small, large = flops_plan_pool(pair.small), flops_plan_pool(pair.large)
    if pair.small.k != pair.large.k:
        raise ConfigError(f"the planner needs the same samples per problem in both pools, got {pair.small.k} "
                          f"and {pair.large.k}")
    pp = align_alternate(small, large, pair.large.model)
    ids = list(pp.problem_ids)
    split = split_problems(ids, test_fraction=0.5, seed=seed)
    folds = [(list(split.train), list(split.test)), (list(split.test), list(split.train))]
    smallest = min(len(a) for a, _ in folds)
    n_bins = max(1, min(4, smallest // 3))
    if smallest < 2 * n_bins:
        raise ConfigError(f"{len(ids)} shared problems are too few to fit and hold out a policy")
    K = pair.large.k
    budgets = [float((large.pool.prefill_tokens + k * large.pool.sample_tokens.mean(axis=1)).mean())
               for k in budget_ks if k <= K]
    pos = {pid: i for i, pid in enumerate(ids)}
    runs: dict[str, list[dict[float, Outcomes]]] = {"two": [], "single": []}
    where = []
    for train_ids, test_ids in folds:
        train, test = pp.subset(train_ids), pp.subset(test_ids)
        kw = {"probes": PROBES, "n_bins": n_bins, "n_orders": n_orders, "seed": seed}
        both = fit_policy(train, budgets, **kw)  # type: ignore[arg-type]
        alone = fit_policy(dataclasses.replace(train, alts={}), budgets, **kw)  # type: ignore[arg-type]
        runs["two"].append(_held_out(both, test, n_orders, seed))
        runs["single"].append(_held_out(alone, dataclasses.replace(test, alts={}), n_orders, seed))
        where.append(np.array([pos[i] for i in test_ids], dtype=np.int64))

    def joined(kind: str, budget: float) -> Outcomes | None:
        """Both folds' held-out outcomes, in the shared problems' order (None: a fold has no such level)."""
        if not all(budget in r for r in runs[kind]):
            return None
        acc, spent, switched = (np.zeros(len(ids)) for _ in range(3))
        for r, w in zip(runs[kind], where, strict=True):
            acc[w], spent[w], switched[w] = r[budget]
        return acc, spent, switched

    ks = list(range(1, K + 1))
    curves = {pair.small.model: compute_curves(small.pool, baselines(), ks, n_orders=n_orders, n_bootstrap=50, seed=seed),
              pair.large.model: compute_curves(large.pool, baselines(), ks, n_orders=n_orders, n_bootstrap=50, seed=seed)}
    fixed = [pt for m, c in curves.items() for pt in fixed_points(m, c)]
    levels: list[PlanLevel] = []
    notes: list[str] = []
    for b in budgets:
        two = joined("two", b)
        if two is None:
            notes.append(f"budget {b:.0f} GFLOPs: below a fold's cheapest probe, no level")
            continue
        acc, spent, switched = two
        single = joined("single", b)
        g = float(spent.mean())
        lv = PlanLevel(b, g, float(acc.mean()), mean_ci(acc, reps, seed), float(switched.mean()),
                       float(single[0].mean()) if single else None, float(single[1].mean()) if single else None,
                       _best_fixed(pair.small.model, curves[pair.small.model], g),
                       _best_fixed(pair.large.model, curves[pair.large.model], g))
        lv.mix = mix_at(fixed, g)
        if lv.best_fixed is not None:
            lv.gain_ci = mean_ci(acc - lv.best_fixed.per_problem, reps, seed)
        if lv.mix is not None:
            lv.mix_gain_ci = mean_ci(acc - lv.mix.per_problem, reps, seed)
        levels.append(lv)
    return TwoModelPlan(len(ids), n_bins, levels, train_sizes=tuple(len(a) for a, _ in folds), notes=notes)
