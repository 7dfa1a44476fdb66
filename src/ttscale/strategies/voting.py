"""Aggregation rules over sampled answers, and the self-consistency strategy.

Tie rule (documented, deterministic): among answers with equal vote mass, the one
whose samples have the larger summed log-probability wins; if still tied (or no
log-probs), the answer that appeared first (lowest sample index) wins.
Samples with no extractable answer cast no vote.

Equivalent answers vote together: given the task's ``equivalent(a, b)``, each answer joins the
group of the first earlier answer it is equivalent to (``"0.5"`` and ``"1/2"``, ``"\\frac{1}{2}"``),
and the group is named by its first answer (lowest sample index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.strategies.base import SolveContext
from ttscale.strategies.spec import Equivalence, KOptions, ReplayRule, StrategySpec
from ttscale.types import Problem, Result, Sample


def answer_groups(answers: Sequence[str | None], equivalent: Equivalence | None) -> dict[str, str]:
    """Each distinct answer -> the name of its group (the first answer, in order, equivalent to it).

    >>> answer_groups(["0.5", "3", "1/2"], lambda a, b: a == b or {a, b} == {"0.5", "1/2"})
    {'0.5': '0.5', '3': '3', '1/2': '0.5'}
    """
    names: dict[str, str] = {}
    heads: list[str] = []
    for a in answers:
        if a is None or a in names:
            continue
        head = next((h for h in heads if equivalent is not None and equivalent(h, a)), None)
        if head is None:
            heads.append(a)
            head = a
        names[a] = head
    return names


def weighted_vote(samples: Sequence[Sample], weights: Sequence[float] | None = None,
                  equivalent: Equivalence | None = None) -> tuple[str | None, dict[str, float]]:
    """The answer with the largest summed weight (weight 1 each by default), and all vote masses.

    ``equivalent`` (the task's) merges answers written differently into one vote.

    >>> from ttscale.strategies.base import Sample
    >>> s = lambda i, a: Sample(i, "", a, None, 1, 1, 0, 0.0, "stop")
    >>> weighted_vote([s(0, "3"), s(1, "4"), s(2, "4")])
    ('4', {'3': 1.0, '4': 2.0})
    """
    votes: dict[str, float] = {}
    lp: dict[str, float] = {}
    first: dict[str, int] = {}
    ordered = sorted(range(len(samples)), key=lambda i: samples[i].index)
    group = answer_groups([samples[i].answer for i in ordered], equivalent)
    for i, s in enumerate(samples):
        if s.answer is None:
            continue
        a = group[s.answer]
        w = 1.0 if weights is None else float(weights[i])
        votes[a] = votes.get(a, 0.0) + w
        lp[a] = lp.get(a, 0.0) + (s.logprob if s.logprob is not None else 0.0)
        first[a] = min(first.get(a, s.index), s.index)
    if not votes:
        return None, {}
    best = max(votes, key=lambda a: (votes[a], lp[a], -first[a]))
    return best, votes


def majority(samples: Sequence[Sample], scores: Sequence[float] | None = None,
             equivalent: Equivalence | None = None) -> tuple[str | None, dict[str, float]]:
    """Self-consistency's rule: one vote per sample (``scores`` are ignored)."""
    return weighted_vote(samples, None, equivalent)


def weighted_majority(samples: Sequence[Sample], scores: Sequence[float] | None = None,
                      equivalent: Equivalence | None = None) -> tuple[str | None, dict[str, float]]:
    """Each sample votes with its score (weighted best-of-N; weighted majority with certainty scores)."""
    return weighted_vote(samples, scores, equivalent)


@dataclass
class SelfConsistency:
    """Majority vote over ``k`` samples (Wang et al. 2022)."""

    k: int = 8
    name: str = "self-consistency"

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        samples = ctx.sample(self.k)
        answer, votes = majority(samples, None, ctx.task.equivalent)
        return ctx.result(self.name, answer, samples, votes)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k}


SPEC = StrategySpec("self-consistency", SelfConsistency, KOptions, "majority vote over k samples",
                    replay=(ReplayRule("majority", majority, curves=(("majority", {}),), plannable=True),), alias="sc")
