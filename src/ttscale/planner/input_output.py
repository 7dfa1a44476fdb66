"""Input compute against output compute: which retrieval configuration, which rule and how many samples.

A retrieval-augmented answer can spend a budget on its input (k passages per query, m demonstrations, n
IterDRAG rounds) or on its output (more samples of one configuration, aggregated). Each stored
configuration is an *arm* on the same questions; a *choice* is an arm, an aggregation rule and a sample
count s. Its expected score per question is replayed from the arm's samples (random orderings, the first
s aggregated by the live vote's rule and tie-breaks), its cost is counted in one of two units:

- ``effective``: the paper's budget (Yue et al. 2024), input tokens summed over every model call; s
  samples are s calls, so s times the configuration's effective context.
- ``processed``: what the embedded engine evaluates: a DRAG question's prompt is prefilled once for all
  its samples (they share it), then each sample's generated tokens; an IterDRAG transcript pays its own
  calls. Here a second sample costs a few dozen tokens, not another prompt.

:func:`held_out` fits the choice per budget on one half of the questions and scores it on the other,
against the other half's best choice (the oracle) and against the best input-only choice (one sample).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ttscale.errors import ConfigError
from ttscale.strategies.voting import weighted_vote
from ttscale.types import Sample

RULES = ("majority", "best-of-n")
"""``majority``: one vote per sample (ties: summed log-prob, then the earliest); ``best-of-n``: the sample
with the highest mean token log-prob (the free certainty score; a sample without log-probs ranks last)."""
UNITS = ("effective", "processed")


@dataclass(frozen=True)
class ArmSample:
    """One stored sample (a DRAG answer or an IterDRAG transcript) of one question."""

    answer: str | None
    """Normalized answer (equivalent answers written alike), None when none was extracted."""
    scores: dict[str, float]
    """The sample's grades, e.g. ``{"em": 0.0, "f1": 0.4}``."""
    logprob: float | None
    n_tokens: int
    effective: float
    """Prompt tokens summed over the sample's calls."""
    prefilled: float
    """Tokens the engine prefilled for it (a shared prompt is charged to one sample of the question)."""


@dataclass
class Arm:
    """One input configuration's samples on the common questions (row ``q`` = question ``q``)."""

    label: str
    samples: list[list[ArmSample]]
    shared_prefill: bool = True
    """True when a question's samples share one prefilled prompt (a DRAG sweep); False when each sample
    pays its own calls (IterDRAG transcripts)."""
    features: dict[str, int] = field(default_factory=dict)
    """The configuration's knobs, e.g. ``{"k": 5, "m": 1, "n": 0}``."""

    @property
    def depth(self) -> int:
        """Samples every question has (the largest s a choice can use)."""
        return min(len(s) for s in self.samples)


@dataclass(frozen=True)
class Choice:
    arm: str
    rule: str
    s: int

    @property
    def label(self) -> str:
        return f"{self.arm}, one sample" if self.s == 1 else f"{self.arm}, {self.rule}@{self.s}"


@dataclass
class ChoiceTable:
    """Every choice's expected score and cost per question."""

    choices: list[Choice]
    score: dict[str, np.ndarray]
    """Metric -> (C, Q) expected score per question."""
    cost: dict[str, np.ndarray]
    """Unit -> (C, Q) expected cost per question."""


def _aggregate(samples: Sequence[ArmSample], order: Sequence[int], rule: str) -> ArmSample | None:
    drawn = [samples[i] for i in order]
    if rule == "best-of-n":
        def certainty(x: ArmSample) -> float:
            return x.logprob / max(x.n_tokens, 1) if x.logprob is not None else -math.inf
        return max(drawn, key=certainty)  # max keeps the first of equals: the earliest drawn
    # the live vote (same tie rule) on answer strings already normalized
    as_samples = [Sample(j, "", x.answer, None, x.n_tokens, 0, 0, 0.0, "stop", logprob=x.logprob)
                  for j, x in enumerate(drawn)]
    won, _ = weighted_vote(as_samples)
    if won is None:
        return None
    return next(x for x in drawn if x.answer == won)


def choice_table(arms: Sequence[Arm], *, max_s: int | None = None, rules: Sequence[str] = RULES,
                 orders: int = 50, seed: int = 0) -> ChoiceTable:
    """Replay every (arm, rule, s) on every question: ``orders`` random orderings of the question's samples,
    the first ``s`` aggregated. s = 1 is one rule-free choice per arm."""
    if not arms:
        raise ConfigError("no configurations to choose from")
    Q = len(arms[0].samples)
    if any(len(a.samples) != Q for a in arms):
        raise ConfigError("every configuration must hold the same questions, in the same order")
    for r in rules:
        if r not in RULES:
            raise ConfigError(f"unknown rule {r!r}; available: {', '.join(RULES)}")
    choices: list[Choice] = []
    metrics = sorted({m for a in arms for row in a.samples for x in row for m in x.scores})
    score: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    cost: dict[str, list[np.ndarray]] = {u: [] for u in UNITS}
    for arm in arms:
        top = arm.depth if max_s is None else min(arm.depth, max_s)
        rng = _arm_rng(seed, arm.label)
        perms = [[rng.permutation(len(row)) for _ in range(orders)] for row in arm.samples]
        for s in range(1, top + 1):
            for rule in (rules[:1] if s == 1 else rules):
                choices.append(Choice(arm.label, rule, s))
                got = {m: np.zeros(Q) for m in metrics}
                for q, row in enumerate(arm.samples):
                    for perm in perms[q]:
                        pick = _aggregate(row, perm[:s].tolist(), rule)
                        for m in metrics:
                            got[m][q] += pick.scores.get(m, 0.0) if pick is not None else 0.0
                for m in metrics:
                    score[m].append(got[m] / orders)
                cost["effective"].append(np.array([s * np.mean([x.effective for x in row]) for row in arm.samples]))
                cost["processed"].append(np.array([_processed(row, s, arm.shared_prefill) for row in arm.samples]))
    return ChoiceTable(choices, {m: np.array(v) for m, v in score.items()}, {u: np.array(v) for u, v in cost.items()})


def _arm_rng(seed: int, label: str) -> np.random.Generator:
    """One arm's orderings, drawn from the seed and the arm's label alone: an arm's replayed score does not
    move when another arm joins the table (one shared generator would hand it different orderings)."""
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "little")])


def _processed(row: Sequence[ArmSample], s: int, shared: bool) -> float:
    gen = float(np.mean([x.n_tokens for x in row]))
    if shared:
        return float(sum(x.prefilled for x in row)) + s * gen
    return s * (float(np.mean([x.prefilled for x in row])) + gen)


def best_within(score: np.ndarray, cost: np.ndarray, budget: float, mask: np.ndarray | None = None) -> int | None:
    """Index of the best-scoring choice whose mean cost fits ``budget`` (among ``mask``)."""
    ok = cost <= budget
    if mask is not None:
        ok = ok & mask
    if not ok.any():
        return None
    return int(np.flatnonzero(ok)[np.argmax(score[ok])])


def budgets_for(cost: np.ndarray) -> list[int]:
    """Powers of two from the cheapest choice's mean cost to the first that holds every choice."""
    lo = max(float(cost.min()), 1.0)
    hi = max(float(cost.max()), 1.0)
    return [2**j for j in range(math.ceil(math.log2(lo)), math.ceil(math.log2(hi)) + 1)]


@dataclass
class HeldOutChoice:
    budget: int
    shares: np.ndarray
    """Per split: held-out score of the fitted choice / of the held-out oracle's."""
    gain_over_input_only: np.ndarray
    """Per split: held-out score of the fitted choice minus the fitted best one-sample choice's."""
    picks: dict[str, int]
    """How often each choice was fitted."""
    more_samples: int
    """Splits whose fitted choice draws more than one sample."""


def held_out(table: ChoiceTable, metric: str, unit: str, budgets: Sequence[int], *, splits: int = 200,
             seed: int = 0) -> list[HeldOutChoice]:
    """Per random halving of the questions: fit the best choice within each budget on one half (cost as
    measured on that half), score it on the other half against that half's best (the oracle), and against
    the best one-sample choice fitted the same way (spending the budget on input only)."""
    if metric not in table.score:
        raise ConfigError(f"no metric {metric!r} in the table; have {', '.join(table.score)}")
    if unit not in table.cost:
        raise ConfigError(f"unknown unit {unit!r}; available: {', '.join(UNITS)}")
    sc, co = table.score[metric], table.cost[unit]
    single = np.array([c.s == 1 for c in table.choices])
    Q = sc.shape[1]
    rng = np.random.default_rng(seed)
    acc: dict[int, tuple[list[float], list[float], dict[str, int], list[int]]] = {b: ([], [], {}, []) for b in budgets}
    for _ in range(splits):
        perm = rng.permutation(Q)
        fit, test = perm[: Q // 2], perm[Q // 2:]
        f_sc, f_co = sc[:, fit].mean(axis=1), co[:, fit].mean(axis=1)
        t_sc, t_co = sc[:, test].mean(axis=1), co[:, test].mean(axis=1)
        for b in budgets:
            chosen, oracle = best_within(f_sc, f_co, b), best_within(t_sc, t_co, b)
            one = best_within(f_sc, f_co, b, single)
            if chosen is None or oracle is None or one is None:
                continue
            shares, gains, picks, more = acc[b]
            if t_sc[oracle] > 0:
                shares.append(float(t_sc[chosen] / t_sc[oracle]))
            gains.append(float(t_sc[chosen] - t_sc[one]))
            label = table.choices[chosen].label
            picks[label] = picks.get(label, 0) + 1
            more.append(int(table.choices[chosen].s > 1))
    return [HeldOutChoice(b, np.array(s), np.array(g), p, sum(m)) for b, (s, g, p, m) in acc.items() if g]
