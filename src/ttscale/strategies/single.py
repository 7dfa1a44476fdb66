"""One sample, its answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttscale.strategies.base import SolveContext
from ttscale.strategies.spec import NoOptions, StrategySpec
from ttscale.types import Problem, Result


@dataclass
class Single:
    name: str = "single"

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        samples = ctx.sample(1)
        answer = samples[0].answer if samples else None
        return ctx.result(self.name, answer, samples, {answer: 1.0} if answer is not None else {})

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


SPEC = StrategySpec("single", Single, NoOptions, "one sample")
