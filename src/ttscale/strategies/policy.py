"""A strategy that applies a fitted compute-optimal policy to each problem.

Per problem: draw the level's probe, compute its cheap difficulty features, look up the bin
the predicted pass rate falls in, then draw the rest of that bin's choice (``k - p`` more
samples, the probe kept) and aggregate. What it saw and chose is kept in ``Result.meta``
under ``"policy"`` (``ttscale run --explain`` prints it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttscale.planner.features import probe_features
from ttscale.planner.options import aggregate
from ttscale.planner.policy import Level, Policy
from ttscale.strategies.base import Result, SolveContext
from ttscale.tasks.base import Problem


@dataclass
class PolicyStrategy:
    policy: Policy
    budget_tokens: float
    """Mean processed tokens per problem; selects the policy level (see :meth:`Policy.level_for`)."""
    name: str = "policy"
    level: Level = field(init=False)

    def __post_init__(self) -> None:
        self.level = self.policy.level_for(self.budget_tokens)

    @classmethod
    def from_file(cls, path: Path, budget_tokens: float) -> PolicyStrategy:
        return cls(Policy.load(path), budget_tokens)

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        lv = self.level
        probe = ctx.sample(lv.probe)
        feats = probe_features(probe, ctx.prompt_tokens())
        rule, predicted = self.policy.decide(lv, feats)
        more = ctx.sample(rule.choice.k - len(probe)) if rule.choice.k > len(probe) and not ctx.budget_exhausted else []
        samples = probe + more
        answer, votes = aggregate(rule.choice, samples)
        return Result(
            problem_id=problem.id,
            answer=answer,
            correct=ctx.task.grade(problem, answer),
            strategy=self.name,
            samples=[s.index for s in samples],
            votes=votes,
            usage=ctx.meter.usage,
            meta={
                "policy": {
                    "level_budget_tokens": lv.budget, "probe": lv.probe, "features": feats.to_dict(),
                    "predicted_pass_rate": round(predicted, 4), "bin": rule.index, "choice": rule.choice.label,
                    "expected_accuracy_in_bin": rule.expected_accuracy, "expected_tokens_in_bin": rule.expected_tokens,
                },
                "budget_exhausted": ctx.budget_exhausted,
            },
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "budget_tokens": self.budget_tokens, "level_budget_tokens": self.level.budget,
                "probe": self.level.probe, "bins": [r.choice.label for r in self.level.bins],
                "policy_source": self.policy.source.get("pools", [])}
