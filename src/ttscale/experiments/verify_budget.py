"""Self-consistency against best-of-n with a generative verifier at matched compute (the computations
behind ``solve-or-verify``; the page is :mod:`ttscale.experiments.solve_or_verify`).

Singhi et al.'s accounting: S solutions, each verified V times, cost ``C = S (1 + lambda V)``
solutions, with ``lambda`` = cost of one verification / cost of one solution. Self-consistency is
``V = 0``. Here ``lambda V`` is measured per judge from the stored costs (``ttscale pool score``
writes the judge's tokens and FLOPs per scored sample): the judge's mean cost per solution over the
policy's mean cost per solution, in three accountings:

- ``generated``: generated tokens only, the paper's ``lambda = T_V / T_S`` (a V = 1 judge reading
  P(Yes) at once generates nothing, so there it verifies for free: the most favourable case);
- ``tokens``: processed tokens (the judge prefills every solution it reads; the policy's prompt is
  prefilled once per problem by both methods, so it is left out of both);
- ``flops``: forward FLOPs, each model's own (a 1.5B judge's token costs ~3x the 0.5B policy's).

A method's accuracy at a non-integer number of solutions is the linear interpolation between its
neighbouring integers, which a per-problem random mix of the two achieves at that mean cost; past
its largest point a method holds that point (it cannot spend more); below its smallest it has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ttscale.experiments.matched_flops import mean_ci

ACCOUNTINGS = ("generated", "tokens", "flops")
ACCOUNTING_NAMES = {"generated": "generated tokens (the paper's lambda)", "tokens": "processed tokens",
                    "flops": "FLOPs"}
EPS = 1e-9


def cost_per_solution(n_tokens: np.ndarray, sample_tokens: np.ndarray, sample_flops: np.ndarray) -> dict[str, float]:
    """The policy's mean cost of one solution in each accounting (its shared prompt prefill left out)."""
    return {"generated": float(n_tokens.mean()), "tokens": float(sample_tokens.mean()),
            "flops": float(sample_flops.mean())}


def judge_cost_per_solution(prefilled: np.ndarray, generated: np.ndarray, flops: np.ndarray) -> dict[str, float]:
    """The judge's mean cost of verifying one solution (all V chains), from its stored per-sample costs."""
    return {"generated": float(generated.mean()), "tokens": float((prefilled + generated).mean()),
            "flops": float(flops.mean())}


def at_budget(acc: np.ndarray, costs: np.ndarray, budget: float) -> np.ndarray | None:
    """Per-problem accuracy (P,) at ``budget`` along points at ``costs`` (n,) with accuracies ``acc`` (P, n)."""
    if budget < costs[0] - EPS:
        return None
    if budget >= costs[-1] - EPS:
        return acc[:, -1]
    j = int(np.searchsorted(costs, budget, side="right"))  # costs[j-1] <= budget < costs[j]
    w = (budget - costs[j - 1]) / (costs[j] - costs[j - 1])
    return (1 - w) * acc[:, j - 1] + w * acc[:, j]


@dataclass
class BudgetRow:
    budget: float
    """Compute per problem, in the policy's solutions."""
    sc: float
    solutions: float
    """Solutions the verifier method draws at this budget (budget / (1 + lambda V), at most its pool)."""
    genrm: float
    diff: float
    ci: tuple[float, float]
    """95% paired bootstrap interval over problems of GenRM minus SC."""

    @property
    def outcome(self) -> str:
        return "verify wins" if self.ci[0] > 0 else "SC wins" if self.ci[1] < 0 else "within noise"


@dataclass
class Beyond:
    """A verifier point dearer than the whole pool's self-consistency, against SC@K."""

    solutions: int
    cost: float
    genrm: float
    diff: float
    ci: tuple[float, float]


@dataclass
class Matched:
    """One verifier method (judge score, selection rule) against SC in one accounting."""

    method: str
    accounting: str
    unit: float
    """1 + lambda V: what one solution and its verification cost, in solutions."""
    rows: list[BudgetRow] = field(default_factory=list)
    beyond: list[Beyond] = field(default_factory=list)
    match_multiple: float | None = None
    """Compute the verifier method needs to reach SC's best accuracy, over the compute SC needs for it
    (None: none of its points gets there)."""
    sc_best_cost: float = 0.0
    """Where SC's best accuracy is first reached, in solutions."""
    top_cost: float = 0.0
    """The verifier method's largest point, in solutions."""

    @property
    def crossover(self) -> float | None:
        """The smallest budget from which the verifier method is ahead at every larger budget (point estimates)."""
        return crossover([r.budget for r in self.rows], [r.diff for r in self.rows])

    @property
    def first_significant(self) -> float | None:
        return next((r.budget for r in self.rows if r.ci[0] > 0), None)

    @property
    def sc_significant(self) -> list[float]:
        return [r.budget for r in self.rows if r.ci[1] < 0]


def crossover(budgets: Sequence[float], diffs: Sequence[float]) -> float | None:
    """Smallest budget from which ``diffs`` (verify minus SC) stays above zero through the last one.

    >>> crossover([1, 2, 3, 4, 5], [-0.2, 0.1, -0.05, 0.02, 0.03])
    4
    >>> crossover([1, 2], [-0.1, -0.1]) is None
    True
    """
    out = None
    for b, d in zip(reversed(list(budgets)), reversed(list(diffs)), strict=True):
        if d > EPS:
            out = b
        else:
            break
    return out


def compare(method: str, accounting: str, unit: float, sc: np.ndarray, genrm: np.ndarray,
            budgets: Sequence[float], reps: int = 400, seed: int = 0) -> Matched:
    """``genrm`` (P, S) at S' = 1..S solutions, each costing ``unit``, against ``sc`` (P, K) at 1..K.

    Rows at every budget both methods can run; the verifier's points dearer than SC@K against SC@K;
    and the compute multiple the verifier needs to reach SC's best accuracy (the paper's "GenRM first
    matches SC after up to 8x the compute").
    """
    P, K = sc.shape
    S = genrm.shape[1]
    sc_costs = np.arange(1, K + 1, dtype=float)
    g_costs = unit * np.arange(1, S + 1, dtype=float)
    out = Matched(method, accounting, unit)
    for b in budgets:
        s_acc, g_acc = at_budget(sc, sc_costs, b), at_budget(genrm, g_costs, b)
        if s_acc is None or g_acc is None:
            continue
        d = g_acc - s_acc
        out.rows.append(BudgetRow(float(b), float(s_acc.mean()), min(b / unit, float(S)), float(g_acc.mean()),
                                  float(d.mean()), mean_ci(d, reps, seed)))
    for s in range(1, S + 1):
        if g_costs[s - 1] > K + EPS:
            d = genrm[:, s - 1] - sc[:, -1]
            out.beyond.append(Beyond(s, float(g_costs[s - 1]), float(genrm[:, s - 1].mean()), float(d.mean()),
                                     mean_ci(d, reps, seed)))
    sc_mean, g_mean = sc.mean(axis=0), genrm.mean(axis=0)
    s_star = int(np.argmax(sc_mean))  # SC's best accuracy, at its cheapest k
    reach = np.flatnonzero(g_mean >= sc_mean[s_star] - EPS)
    out.sc_best_cost, out.top_cost = float(sc_costs[s_star]), float(g_costs[-1])
    if reach.size:
        out.match_multiple = float(g_costs[reach[0]] / sc_costs[s_star])
    return out


def match_text(m: Matched) -> str:
    """The 'compute to match SC's best' entry: the multiple, or how far the verifier's points went."""
    if m.match_multiple is not None:
        return f"{m.match_multiple:.2g}x"
    return f"not reached (its points go to {m.top_cost:.3g}, SC's best is at {m.sc_best_cost:g})"
