"""Best-of-N and weighted best-of-N over a verifier.

Best-of-N returns the answer of the highest-scoring sample (ties: lowest sample
index). Weighted best-of-N sums scores over samples sharing an answer and returns
the answer with the largest sum (Snell et al. 2024), with the voting tie rule.
Samples without an extractable answer are scored but cannot win.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.errors import ConfigError
from ttscale.strategies.base import SolveContext
from ttscale.strategies.spec import Equivalence, KOptions, ReplayRule, StrategySpec
from ttscale.strategies.voting import answer_groups, weighted_majority
from ttscale.types import Problem, Result, Sample
from ttscale.verifiers.base import Verifier, verifier_bound


def best_scored(samples: Sequence[Sample], scores: Sequence[float] | None,
                equivalent: Equivalence | None = None) -> tuple[str | None, dict[str, float]]:
    """Best-of-N's rule: the answer of the top-scored sample (ties: lowest sample index); each answer's
    vote is its best sample's score, equivalent answers grouped as the task says."""
    if scores is None:
        raise ValueError("best-of-n needs a score per sample")
    answered = [(sc, s) for sc, s in zip(scores, samples, strict=True) if s.answer is not None]
    if not answered:
        return None, {}
    best = max(answered, key=lambda t: (t[0], -t[1].index))[1]
    group = answer_groups([s.answer for _, s in sorted(answered, key=lambda t: t[1].index)], equivalent)
    votes: dict[str, float] = {}
    for sc, s in answered:
        assert s.answer is not None
        votes[group[s.answer]] = max(votes.get(group[s.answer], -math.inf), float(sc))
    assert best.answer is not None
    return group[best.answer], votes


@dataclass
class BestOfN:
    verifier: Verifier
    k: int = 8
    weighted: bool = False
    name: str = "best-of-n"

    def __post_init__(self) -> None:
        if self.verifier is None:
            raise ConfigError(f"strategy {self.name} needs a verifier")

    def _affordable_k(self, problem: Problem, ctx: SolveContext) -> int:
        """Largest n <= k whose sampling worst case plus the verifier's worst case fits the budget."""
        max_tokens = ctx.base_request().max_tokens
        prompt = ctx.prompt_tokens()
        for n in range(self.k, 0, -1):
            blanks = [Sample(i, "", None, None, 0, prompt, 0, 0.0, "stop") for i in range(n)]
            need = ctx.meter.worst_case(prompt, n, max_tokens) + verifier_bound(self.verifier, problem, blanks, max_tokens)
            if ctx.meter.fits(need):
                return n
        return 0

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        # Scoring is paid from the same budget: reserve the verifier's worst case before sampling,
        # and score only as many samples as the budget still covers (the cap is hard).
        limited = not ctx.meter.budget.unlimited
        samples = ctx.sample(self._affordable_k(problem, ctx) if limited else self.k)
        while limited and samples and not ctx.meter.fits(verifier_bound(self.verifier, problem, samples)):
            samples = samples[:-1]
        scored = self.verifier.score(problem, samples)
        ctx.meter.charge(scored.usage)
        for s, sc in zip(samples, scored.scores, strict=False):
            s.scores[self.verifier.name] = sc
        rule = weighted_majority if self.weighted else best_scored
        answer, votes = rule(samples, scored.scores, ctx.task.equivalent)
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


SPECS = (
    StrategySpec("best-of-n", lambda **kw: BestOfN(**kw, weighted=False, name="best-of-n"), KOptions,
                 "k samples, the verifier's top-scored answer", verifier="required", alias="bon",
                 replay=(ReplayRule("best-of-n", best_scored, weighs="score", options=("score",),
                                    curves=(("best-of-n", {"score": "certainty"}),), plannable=True),)),
    # With the free certainty score as the verifier, weighted best-of-N is the weighted majority vote.
    StrategySpec("weighted-best-of-n", lambda **kw: BestOfN(**kw, weighted=True, name="weighted-best-of-n"), KOptions,
                 "k samples, answer with the largest summed verifier score", verifier="required", alias="wbon",
                 replay=(ReplayRule("weighted-majority", weighted_majority, weighs="certainty",
                                    curves=(("weighted-majority", {}),), plannable=True),
                         ReplayRule("weighted-best-of-n", weighted_majority, weighs="score", options=("score",)))),
)
