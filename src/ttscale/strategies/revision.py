"""Sequential revision: the model revises its previous answer, given it in the prompt.

Round 0 is an ordinary sample; each of ``revisions`` further rounds shows the
model its previous attempt and asks it to check and correct it (chat: as the
assistant's previous turn plus a user follow-up; completion: appended text).
The final answer is chosen over the whole chain by majority vote (voting's tie
rule) or, with a verifier, by the verifier's top score (ties: the later attempt).
Stops early when the budget cannot afford another round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttscale.errors import ConfigError
from ttscale.strategies.base import SolveContext
from ttscale.strategies.spec import KOptions, StrategySpec
from ttscale.strategies.voting import weighted_vote
from ttscale.types import ChatMessage, GenerationRequest, Problem, Result, Sample
from ttscale.verifiers.base import Verifier, verifier_bound

REVISE_PROMPT = (
    "Check your previous answer step by step. If it has a mistake, correct it; otherwise keep it. "
    "Finish with a line 'The answer is N.'"
)


def revision_request(base: GenerationRequest, previous: str, instruction: str = REVISE_PROMPT) -> GenerationRequest:
    """``base`` with the previous attempt shown and a request to revise it."""
    if base.messages is not None:
        msgs = (*base.messages, ChatMessage("assistant", previous), ChatMessage("user", instruction))
        return base.with_(messages=msgs)
    assert base.prompt is not None
    return base.with_(prompt=f"{base.prompt} {previous.strip()}\n\n{instruction}\nRevised answer:")


@dataclass
class SequentialRevision:
    k: int = 3
    """Attempts in the chain: the first answer plus k-1 revisions."""
    verifier: Verifier | None = None
    instruction: str = REVISE_PROMPT
    name: str = "revision"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"revision needs k >= 1 attempts, got {self.k}")

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        base = ctx.base_request()
        chain: list[Sample] = []
        while len(chain) < self.k:
            req = base if not chain else revision_request(base, chain[-1].text, self.instruction)
            if not self._affordable(problem, ctx, req, chain):
                ctx.budget_exhausted = True
                break
            nxt = ctx.sample(1, request=None if not chain else req)
            if not nxt:
                break
            chain += nxt
        scores = None
        if self.verifier is not None and chain:
            scored = self.verifier.score(problem, chain)
            ctx.meter.charge(scored.usage)
            scores = scored.scores
            for s, sc in zip(chain, scores, strict=False):
                s.scores[self.verifier.name] = sc
            answered = [i for i, s in enumerate(chain) if s.answer is not None]
            best = max(answered, key=lambda i: (scores[i], i)) if answered else None
            answer = chain[best].answer if best is not None else None
            votes: dict[str, float] = {}
            for i in answered:
                a = chain[i].answer
                assert a is not None
                votes[a] = max(votes.get(a, float("-inf")), scores[i])
        else:
            answer, votes = weighted_vote(chain, equivalent=ctx.task.equivalent)
        return ctx.result(self.name, answer, chain, votes, chain=[s.answer for s in chain], scores=scores,
                          selection="verifier" if self.verifier is not None else "vote")

    def _affordable(self, problem: Problem, ctx: SolveContext, req: GenerationRequest, chain: list[Sample]) -> bool:
        """Whether one more attempt, and then verifying the whole chain, fits the budget in the worst case."""
        worst = ctx.meter.worst_case(ctx.backend.count_prompt_tokens(req), 1, req.max_tokens)
        if self.verifier is not None:
            worst = worst + verifier_bound(self.verifier, problem, chain, 0)
            proxy = chain[-1:] or [Sample(0, "", None, None, 0, 0, 0, 0.0, "stop")]
            worst = worst + verifier_bound(self.verifier, problem, proxy, req.max_tokens)
        return ctx.meter.fits(worst)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "verifier": self.verifier.name if self.verifier else None}


SPEC = StrategySpec("revision", SequentialRevision, KOptions, "sequential revision: k attempts, each revising the previous; vote (or --verifier) picks", verifier="optional")
