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
from ttscale.strategies.base import SolveContext
from ttscale.strategies.spec import KOptions, StrategySpec
from ttscale.strategies.voting import weighted_vote
from ttscale.types import Problem, Result, Sample
from ttscale.verifiers.base import Verifier, verifier_bound


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
        answered = [(i, s) for i, s in enumerate(samples) if s.answer is not None]
        if self.weighted:
            answer, votes = weighted_vote(samples, scored.scores, equivalent=ctx.task.equivalent)
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


SPECS = (
    StrategySpec("best-of-n", lambda **kw: BestOfN(**kw, weighted=False, name="best-of-n"), KOptions,
                 "k samples, the verifier's top-scored answer", verifier="required"),
    StrategySpec("weighted-best-of-n", lambda **kw: BestOfN(**kw, weighted=True, name="weighted-best-of-n"), KOptions,
                 "k samples, answer with the largest summed verifier score", verifier="required"),
)
