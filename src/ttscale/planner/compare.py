"""Is the per-prompt policy worth serving? It against the best fixed choice at each budget, paired.

A *fixed choice* is one of the rules a policy chooses between (majority, weighted majority and
best-of-n by certainty; :func:`ttscale.planner.options.plan_rules`) at one k for every prompt,
without a probe. Per budget, the best fixed choice is selected on the **training** split (the
highest training accuracy whose mean cost fits the budget), then both it and the policy level for
that budget are replayed on the held-out problems under the **same** sample orderings (the fixed
choice at k aggregates the first k samples of the ordering whose first p were the policy's probe).
The accuracy difference gets a paired bootstrap interval: the same resampled problems for both
(whole families of problems, such as GSM-Symbolic instances of one template, where a pool has them).

Budgets are the policy's levels (mean processed tokens per problem), and optionally dollars per
problem on hardware profiles (:mod:`ttscale.roofline`): a choice of k samples is one call (one
prefill, k sequences decoded together); the policy's probe is one call and the rest of its choice a
second one whose prompt is cached (as the server runs it). Dollar budgets are each level's training
cost on that machine; at each, the policy level and the fixed choice with the best training accuracy
that fit it are compared (the policy is not refitted in dollars).

:func:`apply_decisions` records the outcome in the policy: a level serves the per-prompt policy only
when the interval of (policy - fixed) lies above 0; otherwise ``ttscale serve`` answers at that level
with its fixed choice (``Policy.follow_decisions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.planner.data import PlanPool
from ttscale.planner.evaluate import level_outcomes, resampled_means
from ttscale.planner.options import Choice, OptionTable, option_grid, replay_options
from ttscale.planner.policy import Level, Policy
from ttscale.roofline import HardwareProfile, generation_seconds, prefill_seconds
from ttscale.types import ModelInfo


def fixed_choices(K: int) -> list[Choice]:
    """Every plannable rule at every k from 1 to K (log-spaced past 16): the fixed choices."""
    return option_grid(1, K)


@dataclass(frozen=True)
class Paired:
    """Accuracy of the policy and of a fixed choice on the same problems, and their paired difference."""

    policy: float
    policy_ci: tuple[float, float]
    fixed: float
    fixed_ci: tuple[float, float]
    difference: float
    difference_ci: tuple[float, float]

    @property
    def verdict(self) -> str:
        lo, hi = self.difference_ci
        return "policy better" if lo > 0 else "fixed better" if hi < 0 else "not resolved"

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "policy_ci": list(self.policy_ci), "fixed": self.fixed,
                "fixed_ci": list(self.fixed_ci), "difference": self.difference,
                "difference_ci": list(self.difference_ci), "verdict": self.verdict}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0,
                     families: Sequence[str] | None = None) -> Paired:
    """Means of per-problem outcomes ``a`` and ``b`` (same problems, same order) with percentile
    intervals from one set of resampled problem draws, applied to both and to their difference.

    With ``families`` (one per problem) that group several problems, whole families are resampled
    (a cluster bootstrap): variants of one question are not independent evidence, and resampling
    them one by one would give intervals narrower than the data supports."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ConfigError("paired outcomes need two equal-length, non-empty vectors")
    qa, qb = (1 - ci) / 2, 1 - (1 - ci) / 2
    ma, mb = resampled_means([a, b], n_boot=n_boot, seed=seed, families=families)

    def q(x: np.ndarray) -> tuple[float, float]:
        return float(np.quantile(x, qa)), float(np.quantile(x, qb))

    return Paired(float(a.mean()), q(ma), float(b.mean()), q(mb), float((a - b).mean()), q(ma - mb))


@dataclass
class _Side:
    """One split replayed: the fixed choices' table, and per level the policy's outcomes."""

    pp: PlanPool
    fixed: OptionTable
    levels: list[dict[str, Any]]


def _side(policy: Policy, pp: PlanPool, n_orders: int, seed: int) -> _Side:
    fixed = replay_options(pp, 1, fixed_choices(pp.pool.k), n_orders=n_orders, seed=seed)
    return _Side(pp, fixed, [level_outcomes(policy, lv, pp, n_orders=n_orders, seed=seed) for lv in policy.levels])


class _Pricer:
    """Seconds per problem of one call of k samples, or of a continuation after a probe (prompt cached)."""

    def __init__(self, pp: PlanPool, info: ModelInfo, hw: HardwareProfile) -> None:
        self.hw = hw
        K = pp.pool.k
        prompt = np.maximum(np.round(pp.prompt_tokens), 1).astype(int)
        gen = pp.pool.n_tokens.mean(axis=1)  # expected tokens of a sample of the problem, any ordering
        P = len(prompt)
        self.one_call = np.zeros((P, K + 1))
        self.continuation = np.zeros((P, K + 1))
        for i in range(P):
            pre = prefill_seconds(info, hw, int(prompt[i]))
            cached = prefill_seconds(info, hw, 1, context=int(prompt[i]))
            for k in range(1, K + 1):
                s = generation_seconds(info, hw, prompt_tokens=int(prompt[i]), samples=k, generated_tokens=float(gen[i]))
                self.one_call[i, k] = s
                self.continuation[i, k] = s - pre + cached

    def fixed_usd(self, choices: Sequence[Choice]) -> np.ndarray:
        """(P, O) dollars of each fixed choice on each problem."""
        return self.hw.usd(1.0) * self.one_call[:, [c.k for c in choices]]

    def policy_usd(self, level: Level, chosen: Sequence[Choice], n_orders: int) -> np.ndarray:
        """(P,) expected dollars of a level whose choice per (problem, ordering) was ``chosen`` (flat)."""
        P = self.one_call.shape[0]
        p = level.probe
        k = np.array([c.k for c in chosen]).reshape(P, n_orders)
        rows = np.arange(P)[:, None]
        secs = self.one_call[rows, np.full_like(k, p)] + np.where(k > p, self.continuation[rows, np.maximum(k - p, 0)], 0.0)
        return self.hw.usd(1.0) * secs.mean(axis=1)


def _best(acc: np.ndarray, cost: np.ndarray, budget: float) -> int | None:
    """Index of the highest accuracy whose cost fits ``budget`` (ties: cheaper, then listed first)."""
    ok = [i for i in range(len(acc)) if cost[i] <= budget + 1e-12]
    return max(ok, key=lambda i: (round(float(acc[i]), 9), -cost[i], -i)) if ok else None


def _row(budget: float, lv: Level, li: int, j: int | None, train: _Side, test: _Side, cost_test: tuple[np.ndarray, np.ndarray],
         n_boot: int, seed: int) -> dict[str, Any]:
    pol_cost, fix_cost = cost_test
    pol_acc = test.levels[li]["acc"]
    row: dict[str, Any] = {"budget": budget, "level_budget_tokens": lv.budget, "probe": lv.probe,
                           "policy_cost": float(pol_cost.mean())}
    if j is None:
        row |= {"fixed": None, "paired": None, "policy_accuracy": float(pol_acc.mean())}
        return row
    choice = train.fixed.choices[j]
    fix_acc = test.fixed.acc[..., j].mean(axis=1)
    pr = paired_bootstrap(pol_acc, fix_acc, n_boot=n_boot, seed=seed, families=test.pp.families)
    row |= {"fixed": {"choice": choice.to_dict(), "label": choice.label,
                      "train_accuracy": float(train.fixed.acc[..., j].mean())},
            "fixed_cost": float(fix_cost[:, j].mean()), "paired": pr.to_dict()}
    return row


def compare_policy(
    policy: Policy, train: PlanPool, test: PlanPool, *, n_orders: int = 64, seed: int = 0, n_boot: int = 2000,
    info: ModelInfo | None = None, hardware: Sequence[HardwareProfile] = (), at_usd: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Per budget: the policy against the best fixed choice (selected on ``train``), paired on ``test``.

    The fixed choice may spend up to the budget or the policy's mean held-out spend, whichever is larger
    (``fixed_budget``): a level is fitted to its budget on the training split and may spend more on the
    held-out problems, and those extra tokens or dollars could have bought a richer fixed choice.

    ``train`` is the split the policy was fitted on; ``test`` must not share problems with it. With
    ``info`` (the model's shapes) and ``hardware``, the same per dollar budget on each machine; with
    ``at_usd`` too (profile name -> dollars per problem), the answer for that one budget per machine: the best fixed
    choice and the richest policy level within it, each as trained and as held out (``at_budget``).
    """
    trained = set(policy.source.get("train_problems", ()))
    leak = trained & set(test.problem_ids)
    if leak:
        raise ConfigError(f"refusing to compare on {len(leak)} problems the policy was fitted on "
                          f"(e.g. {sorted(leak)[0]})")
    if train.pool.k != test.pool.k:
        raise ConfigError(f"train and test pools need the same samples per problem ({train.pool.k} vs {test.pool.k})")
    tr, te = _side(policy, train, n_orders, seed), _side(policy, test, n_orders, seed)
    fix_tok_train = tr.fixed.tokens.mean(axis=(0, 1))
    fix_acc_train = tr.fixed.acc.mean(axis=(0, 1))
    token_rows = []
    for li, lv in enumerate(policy.levels):
        pol_tok_te = te.levels[li]["tokens"]
        within = max(lv.budget, float(pol_tok_te.mean()))
        j = _best(fix_acc_train, fix_tok_train, within)
        row = _row(lv.budget, lv, li, j, tr, te, (pol_tok_te, te.fixed.tokens.mean(axis=1)), n_boot, seed)
        row["fixed_budget"] = within
        row["fixed_train_cost"] = float(fix_tok_train[j]) if j is not None else None
        if within > lv.budget:  # what the level may serve instead of the policy must fit its own budget
            jb = _best(fix_acc_train, fix_tok_train, lv.budget)
            row["fixed_in_budget"] = None if jb is None else {
                "choice": tr.fixed.choices[jb].to_dict(), "label": tr.fixed.choices[jb].label,
                "train_accuracy": float(fix_acc_train[jb]), "train_cost": float(fix_tok_train[jb])}
        token_rows.append(row)
    out: dict[str, Any] = {
        "train_problems": train.n_problems, "test_problems": test.n_problems,
        "test_families": len(set(test.families)), "n_boot": n_boot, "ci": 0.95,
        "seed": seed, "n_orders": n_orders, "unit": policy.budget_unit,
        "fixed_choices": sorted({c.kind for c in tr.fixed.choices}), "fixed_k": [1, train.pool.k],
        "tokens": token_rows, "usd": {},
    }
    if hardware and info is None:
        raise ConfigError("pricing in dollars needs the model's shapes (the pool's run record has none)")
    if hardware and (policy.budget_unit != "tokens" or policy.models()):
        raise ConfigError("dollar comparisons need a one-model policy planned in tokens")
    for hw in hardware:
        assert info is not None
        out["usd"][hw.name] = _usd_rows(policy, tr, te, info, hw, n_orders, n_boot, seed)
        if at_usd and hw.name in at_usd:
            out.setdefault("at_budget", {})[hw.name] = _at_budget(policy, tr, te, info, hw, at_usd[hw.name],
                                                                   n_orders, n_boot, seed)
    return out


def _at_budget(policy: Policy, tr: _Side, te: _Side, info: ModelInfo, hw: HardwareProfile, usd: float,
               n_orders: int, n_boot: int, seed: int) -> dict[str, Any]:
    """What ``usd`` dollars per problem buy on ``hw``: the fixed choice and policy level chosen on the
    training split within it, with their held-out accuracy (and the paired difference when both fit)."""
    p_tr, p_te = _Pricer(tr.pp, info, hw), _Pricer(te.pp, info, hw)
    lv_usd_tr = np.array([p_tr.policy_usd(lv, tr.levels[i]["choice_by_order"], n_orders).mean()
                          for i, lv in enumerate(policy.levels)])
    lv_acc_tr = np.array([tr.levels[i]["acc"].mean() for i in range(len(policy.levels))])
    fix_usd_tr = p_tr.fixed_usd(tr.fixed.choices).mean(axis=0)
    j = _best(tr.fixed.acc.mean(axis=(0, 1)), fix_usd_tr, usd)
    li = _best(lv_acc_tr, lv_usd_tr, usd)
    out: dict[str, Any] = {"usd": usd, "fixed": None, "policy": None, "paired": None}
    if j is not None:
        acc = te.fixed.acc[..., j].mean(axis=1)
        out["fixed"] = {"label": tr.fixed.choices[j].label, "train_usd": float(fix_usd_tr[j]),
                        "test_usd": float(p_te.fixed_usd(tr.fixed.choices)[:, j].mean()), "test_accuracy": float(acc.mean())}
    if li is not None:
        lv = policy.levels[li]
        out["policy"] = {"level_budget_tokens": lv.budget, "train_usd": float(lv_usd_tr[li]),
                         "test_usd": float(p_te.policy_usd(lv, te.levels[li]["choice_by_order"], n_orders).mean()),
                         "test_accuracy": float(te.levels[li]["acc"].mean())}
    if j is not None and li is not None:
        out["paired"] = paired_bootstrap(te.levels[li]["acc"], te.fixed.acc[..., j].mean(axis=1), n_boot=n_boot,
                                         seed=seed, families=te.pp.families).to_dict()
    return out


def _usd_rows(policy: Policy, tr: _Side, te: _Side, info: ModelInfo, hw: HardwareProfile, n_orders: int,
              n_boot: int, seed: int) -> list[dict[str, Any]]:
    p_tr, p_te = _Pricer(tr.pp, info, hw), _Pricer(te.pp, info, hw)
    lv_usd_tr = np.array([p_tr.policy_usd(lv, tr.levels[i]["choice_by_order"], n_orders).mean()
                          for i, lv in enumerate(policy.levels)])
    lv_acc_tr = np.array([tr.levels[i]["acc"].mean() for i in range(len(policy.levels))])
    fix_usd_tr = p_tr.fixed_usd(tr.fixed.choices).mean(axis=0)
    fix_acc_tr = tr.fixed.acc.mean(axis=(0, 1))
    fix_usd_te = p_te.fixed_usd(te.fixed.choices)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, int | None]] = set()
    for budget in sorted(set(lv_usd_tr.tolist())):
        li = _best(lv_acc_tr, lv_usd_tr, budget)
        assert li is not None
        lv = policy.levels[li]
        pol_usd_te = p_te.policy_usd(lv, te.levels[li]["choice_by_order"], n_orders)
        within = max(float(budget), float(pol_usd_te.mean()))
        j = _best(fix_acc_tr, fix_usd_tr, within)
        if (li, j) in seen:  # a larger budget that buys the same two: one row
            continue
        seen.add((li, j))
        row = _row(float(budget), lv, li, j, tr, te, (pol_usd_te, fix_usd_te), n_boot, seed)
        row["fixed_budget"] = within
        row["fixed_train_cost"] = float(fix_usd_tr[j]) if j is not None else None
        rows.append(row)
    return rows


def apply_decisions(policy: Policy, comparison: dict[str, Any], *, where: str = "held-out split") -> None:
    """Record per level what ``ttscale serve`` answers with: the per-prompt policy only where the
    paired interval of (policy - best fixed choice) at that token budget lies above 0. The fixed choice
    served is the best within the level's budget (the comparator may have been richer, when the policy
    overspent on held-out problems); where none fits, the level serves the policy."""
    rows = {r["level_budget_tokens"]: r for r in comparison["tokens"]}
    for lv in policy.levels:
        r = rows.get(lv.budget)
        served = r.get("fixed_in_budget", r["fixed"]) if r is not None else None
        if r is None or r["fixed"] is None or served is None:
            lv.fixed, lv.serve, lv.decision = None, "policy", {}
            continue
        pr = r["paired"]
        lo, hi = pr["difference_ci"]
        lv.fixed = Choice.from_dict(served["choice"])
        lv.serve = "policy" if pr["verdict"] == "policy better" else "fixed"
        lv.decision = {
            "rule": "serve the per-prompt policy only if the 95% paired interval of (policy - fixed) is above 0",
            "on": where, "test_problems": comparison["test_problems"],
            "policy_accuracy": round(pr["policy"], 4), "fixed_accuracy": round(pr["fixed"], 4),
            "difference": round(pr["difference"], 4), "difference_ci": [round(lo, 4), round(hi, 4)],
            "verdict": pr["verdict"], "compared_with": r["fixed"]["label"],
        }
