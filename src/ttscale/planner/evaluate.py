"""Honest evaluation: fit on one split of problems, measure on a disjoint one.

:func:`split_problems` partitions problem ids (stratified by source run, or by family where a
family has several variants; order fixed by a seeded hash), so train and test are disjoint by
construction. :func:`evaluate_policy` replays the policy on held-out problems only (averaged
over which of their samples the probe drew) and sets it against the fixed strategies replayed on
the same problems: majority voting, best-of-N by certainty, weighted majority, short-m@k and
adaptive consistency (:func:`ttscale.replay.curves.compute_curves`), at every k from 1 to K.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.planner.data import PlanPool
from ttscale.planner.features import pool_probe_features
from ttscale.planner.options import replay_options
from ttscale.planner.policy import Level, Policy
from ttscale.replay.curves import CurvePoint, CurveSpec, compute_curves, family_draw_counts, strategy_curves


def baselines() -> tuple[CurveSpec, ...]:
    """The fixed strategies a policy is compared with: the default curves of every strategy record
    (majority first), not replay's own measures (pass@k is an oracle bound, RPC has no live twin)."""
    return strategy_curves()


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    test: tuple[str, ...]
    seed: int = 0
    test_fraction: float = 0.5

    def __post_init__(self) -> None:
        overlap = set(self.train) & set(self.test)
        if overlap:
            raise ConfigError(f"train and test share problems: {', '.join(sorted(overlap)[:5])}")

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "test_fraction": self.test_fraction, "train": list(self.train),
                "test": list(self.test)}


def split_problems(
    ids: Sequence[str], groups: Sequence[str] | None = None, *, test_fraction: float = 0.5, seed: int = 0,
    families: Sequence[str] | None = None,
) -> Split:
    """Partition ``ids`` into train and test, per group, in a seeded hash order.

    Each id lands in exactly one side (a partition of one list), so the split is disjoint by
    construction; every group with two or more problems has problems on both sides. When
    ``families`` put two or more problems in one family (variants of one question, such as
    GSM-Symbolic instances of one template, possibly from several runs), whole families are split
    instead, so no question is fitted on in one form and tested on in another.
    """
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test fraction must be in (0, 1), got {test_fraction}")
    if len(set(ids)) != len(ids):
        raise ConfigError("problem ids must be unique to split them")
    groups = list(groups) if groups is not None else [""] * len(ids)
    if len(groups) != len(ids):
        raise ConfigError("one group per problem id")
    if families is not None:
        if len(families) != len(ids):
            raise ConfigError("one family per problem id")
        if len(set(families)) < len(families):
            return _split_families(ids, families, test_fraction, seed)
    train: list[str] = []
    test: list[str] = []
    for g in dict.fromkeys(groups):
        members = [i for i, gg in zip(ids, groups, strict=True) if gg == g]
        members.sort(key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
        n_test = min(max(round(len(members) * test_fraction), 1), len(members) - 1) if len(members) > 1 else 0
        test += members[:n_test]
        train += members[n_test:]
    return Split(tuple(train), tuple(test), seed, test_fraction)


def _split_families(ids: Sequence[str], families: Sequence[str], test_fraction: float, seed: int) -> Split:
    names = sorted(set(families), key=lambda f: hashlib.sha256(f"{seed}:family:{f}".encode()).hexdigest())
    n_test = min(max(round(len(names) * test_fraction), 1), len(names) - 1) if len(names) > 1 else 0
    held = set(names[:n_test])
    test = tuple(i for i, f in zip(ids, families, strict=True) if f in held)
    train = tuple(i for i, f in zip(ids, families, strict=True) if f not in held)
    return Split(train, test, seed, test_fraction)


def resampled_means(xs: Sequence[np.ndarray], *, n_boot: int = 1000, seed: int = 0,
                    families: Sequence[str] | None = None) -> list[np.ndarray]:
    """Bootstrap means (``n_boot`` each) of per-problem vectors ``xs`` over one shared set of draws.

    Problems are drawn with replacement; with ``families`` that group several problems, whole
    families are drawn instead (a cluster bootstrap), since variants of one question are not
    independent evidence."""
    n_items = len(xs[0])
    if families is not None and len(families) != n_items:
        raise ConfigError("one family per problem")
    rng = np.random.default_rng(seed)
    if families is None or len(set(families)) == len(families):
        idx = rng.integers(0, n_items, (n_boot, n_items))
        return [np.asarray(x, dtype=float)[idx].mean(axis=1) for x in xs]
    counts = family_draw_counts(families, n_boot, rng)
    n = counts.sum(axis=1)
    return [counts @ np.asarray(x, dtype=float) / n for x in xs]


def _bootstrap_ci(x: np.ndarray, n: int = 1000, ci: float = 0.95, seed: int = 0,
                  families: Sequence[str] | None = None) -> tuple[float, float]:
    (means,) = resampled_means([x], n_boot=n, seed=seed, families=families)
    return float(np.quantile(means, (1 - ci) / 2)), float(np.quantile(means, 1 - (1 - ci) / 2))


def level_outcomes(policy: Policy, level: Level, pp: PlanPool, *, n_orders: int = 64, seed: int = 0) -> dict[str, Any]:
    """Per-problem expected accuracy and tokens of one level on ``pp`` (mean over probe draws); also per
    (problem, ordering): ``acc_by_order``, ``tokens_by_order`` and the choice made (``choice_by_order``, flat)."""
    pool = pp.pool
    p = level.probe
    pred = policy.predictors[p]
    choices = list(dict.fromkeys(r.choice for r in level.bins))
    table = replay_options(pp, p, choices, n_orders=n_orders, seed=seed)
    X = pool_probe_features(pool.answer, pool.mean_logprob, pool.scores["certainty"], pp.prompt_tokens,
                            table.order[..., :p], pool.n_tokens)
    P, N = X.shape[:2]
    bins = pred.bins(X.reshape(P * N, -1)).reshape(P, N)
    col = np.vectorize(lambda b: table.index(level.bins[b].choice))(bins)
    acc = np.take_along_axis(table.acc, col[..., None], axis=-1)[..., 0]
    tok = np.take_along_axis(table.tokens, col[..., None], axis=-1)[..., 0]
    labels = [level.bins[b].choice.label for b in bins.reshape(-1)]
    return {"acc": acc.mean(axis=1), "tokens": tok.mean(axis=1), "bins": bins, "labels": labels,
            "acc_by_order": acc, "tokens_by_order": tok, "choice_by_order": [table.choices[c] for c in col.reshape(-1)]}


def _best_fixed(points: Sequence[CurvePoint], tokens: float, names: Sequence[str] | None = None) -> CurvePoint | None:
    ok = [p for p in points if not p.oracle and p.total_tokens <= tokens + 1e-9 and (names is None or p.strategy in names)]
    return max(ok, key=lambda p: (p.accuracy, -p.total_tokens)) if ok else None


def _pt(p: CurvePoint | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"strategy": p.strategy, "k": p.k, "accuracy": p.accuracy, "ci": [p.ci_low, p.ci_high],
            "tokens": p.total_tokens}


def evaluate_policy(policy: Policy, test: PlanPool, *, n_orders: int = 64, seed: int = 0) -> dict[str, Any]:
    """Held-out accuracy-vs-tokens of every policy level against fixed strategies on ``test``.

    ``token_fraction`` is the smallest policy level's tokens that reaches majority@K's accuracy
    within its confidence interval (accuracy >= its lower bound), over majority@K's tokens;
    ``token_fraction_point`` asks for majority@K's point accuracy instead (stricter);
    ``fixed_token_fraction`` is the CI version for the best fixed strategy, for comparison.
    """
    trained = set(policy.source.get("train_problems", ()))
    leak = trained & set(test.problem_ids)
    if leak:
        raise ConfigError(f"refusing to evaluate on {len(leak)} problems the policy was fitted on "
                          f"(e.g. {sorted(leak)[0]})")
    K = test.pool.k
    curves = compute_curves(test.pool, baselines(), list(range(1, K + 1)), n_orders=n_orders, seed=seed,
                            families=test.families)
    maj = {p.k: p for p in curves.curve("majority")}
    ref = maj[K]
    rows: list[dict[str, Any]] = []
    for lv in policy.levels:
        out = level_outcomes(policy, lv, test, n_orders=n_orders, seed=seed)
        acc, tok = out["acc"], out["tokens"]
        lo, hi = _bootstrap_ci(acc, seed=seed, families=test.families)
        t = float(tok.mean())
        rows.append({
            "budget_tokens": lv.budget, "probe": lv.probe, "accuracy": float(acc.mean()), "ci": [lo, hi],
            "tokens": t, "train_expected_accuracy": lv.expected_accuracy,
            "choice_shares": {lab: out["labels"].count(lab) / len(out["labels"]) for lab in dict.fromkeys(out["labels"])},
            "best_fixed_within_tokens": _pt(_best_fixed(curves.points, t)),
            "majority_within_tokens": _pt(_best_fixed(curves.points, t, ["majority"])),
            "best_of_n_within_tokens": _pt(_best_fixed(curves.points, t, ["best-of-n"])),
        })
    reach = [r for r in rows if r["accuracy"] >= ref.ci_low]
    frac = min(r["tokens"] for r in reach) / ref.total_tokens if reach else None
    reach_point = [r for r in rows if r["accuracy"] >= ref.accuracy - 1e-9]
    frac_point = min(r["tokens"] for r in reach_point) / ref.total_tokens if reach_point else None
    fixed = [p for p in curves.points if not p.oracle and p.accuracy >= ref.ci_low]
    cheapest_fixed = min(fixed, key=lambda p: p.total_tokens) if fixed else None
    return {
        "test_problems": list(test.problem_ids), "test_families": len(set(test.families)),
        "reference": {**(_pt(ref) or {}), "label": f"majority@{K}"},
        "token_fraction": frac,
        "token_fraction_point": frac_point,
        "fixed_token_fraction": cheapest_fixed.total_tokens / ref.total_tokens if cheapest_fixed else None,
        "cheapest_fixed_reaching_reference": _pt(cheapest_fixed),
        "levels": rows,
        "curves": {name: [{"k": p.k, "accuracy": p.accuracy, "tokens": p.total_tokens} for p in curves.curve(name)]
                   for name in curves.strategies},
        "alternate_majority": {
            model: [{"k": p.k, "accuracy": p.accuracy, "ci": [p.ci_low, p.ci_high], "tokens": p.total_tokens}
                    for p in compute_curves(alt.pool, [CurveSpec("majority", "majority")], list(range(1, K + 1)), n_orders=n_orders,
                                            seed=seed).curve("majority")]
            for model, alt in test.alts.items()
        },
    }
