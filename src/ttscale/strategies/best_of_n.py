"""Best-of-N and weighted best-of-N over a verifier.

Best-of-N returns the answer of the highest-scoring sample (ties: lowest sample
index). Weighted best-of-N sums scores over samples sharing an answer and returns
the answer with the largest sum (Snell et al. 2024), with the voting tie rule.
Samples without an extractable answer are scored but cannot win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttscale.errors import ConfigError
from ttscale.strategies.base import Result, SolveContext
from ttscale.strategies.voting import weighted_vote
from ttscale.tasks.base import Problem
from ttscale.verifiers.base import Verifier


@dataclass
class BestOfN:
    verifier: Verifier
    k: int = 8
    weighted: bool = False
    name: str = "best-of-n"

    def __post_init__(self) -> None:
        if self.verifier is None:
            raise ConfigError(f"strategy {self.name} needs a verifier")

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        samples = ctx.sample(self.k)
        scored = self.verifier.score(problem, samples)
        ctx.meter.charge(scored.usage)
        for s, sc in zip(samples, scored.scores, strict=False):
            s.scores[self.verifier.name] = sc
        answered = [(i, s) for i, s in enumerate(samples) if s.answer is not None]
        if self.weighted:
            answer, votes = weighted_vote(samples, scored.scores)
        elif answered:
            best_i, best = max(answered, key=lambda t: (scored.scores[t[0]], -t[1].index))
            answer = best.answer
            votes = {}
            for i, s in answered:
                assert s.answer is not None
                votes[s.answer] = max(votes.get(s.answer, float("-inf")), scored.scores[i])
        else:
            answer, votes = None, {}
        return ctx.result(
            self.name,
            answer,
            samples,
            votes,
            verifier=self.verifier.name,
            verifier_uses_reference=self.verifier.uses_reference,
            scores=scored.scores,
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "verifier": self.verifier.name, "weighted": self.weighted}
