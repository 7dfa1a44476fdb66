"""Aggregation rules over sampled answers, and the self-consistency strategy.

Tie rule (documented, deterministic): among answers with equal vote mass, the one
whose samples have the larger summed log-probability wins; if still tied (or no
log-probs), the answer that appeared first (lowest sample index) wins.
Samples with no extractable answer cast no vote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.strategies.base import Result, Sample, SolveContext
from ttscale.tasks.base import Problem


def weighted_vote(samples: Sequence[Sample], weights: Sequence[float] | None = None) -> tuple[str | None, dict[str, float]]:
    """The answer with the largest summed weight (weight 1 each by default), and all vote masses.

    >>> from ttscale.strategies.base import Sample
    >>> s = lambda i, a: Sample(i, "", a, None, 1, 1, 0, 0.0, "stop")
    >>> weighted_vote([s(0, "3"), s(1, "4"), s(2, "4")])
    ('4', {'3': 1.0, '4': 2.0})
    """
    votes: dict[str, float] = {}
    lp: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, s in enumerate(samples):
        if s.answer is None:
            continue
        w = 1.0 if weights is None else float(weights[i])
        votes[s.answer] = votes.get(s.answer, 0.0) + w
        lp[s.answer] = lp.get(s.answer, 0.0) + (s.logprob if s.logprob is not None else 0.0)
        first.setdefault(s.answer, s.index)
    if not votes:
        return None, {}
    best = max(votes, key=lambda a: (votes[a], lp[a], -first[a]))
    return best, votes


@dataclass
class SelfConsistency:
    """Majority vote over ``k`` samples (Wang et al. 2022)."""

    k: int = 8
    name: str = "self-consistency"

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        samples = ctx.sample(self.k)
        answer, votes = weighted_vote(samples)
        return ctx.result(self.name, answer, samples, votes)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k}
