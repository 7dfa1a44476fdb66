"""One sample, its answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttscale.strategies.base import Result, SolveContext
from ttscale.tasks.base import Problem


@dataclass
class Single:
    name: str = "single"

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        samples = ctx.sample(1)
        answer = samples[0].answer if samples else None
        return Result(
            problem_id=problem.id,
            answer=answer,
            correct=ctx.task.grade(problem, answer),
            strategy=self.name,
            samples=[s.index for s in samples],
            votes={answer: 1.0} if answer is not None else {},
            usage=ctx.meter.usage,
            meta={"budget_exhausted": ctx.budget_exhausted},
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}
