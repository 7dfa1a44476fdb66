"""A ttscale strategy plugin in one file: 'first-answer' returns the answer of the first sample that has one.

Install it as a distribution that declares the entry point (pyproject.toml):

    [project.entry-points."ttscale.strategies"]
    first-answer = "first_answer_plugin:SPEC"

and `ttscale run --strategy first-answer -o k=4`, the server and `ttscale tasks` all know it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from ttscale.strategies.base import Result, SolveContext
from ttscale.strategies.spec import StrategyOptions, StrategySpec
from ttscale.types import Problem


class FirstAnswerOptions(StrategyOptions):
    k: int = Field(4, ge=1, le=64, description="samples to draw at most")


@dataclass
class FirstAnswer:
    k: int = 4
    name: str = "first-answer"

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        samples = ctx.sample(self.k)
        chosen = next((s for s in samples if s.answer is not None), None)
        answer = chosen.answer if chosen else None
        return ctx.result(self.name, answer, samples, {answer: 1.0} if answer else {})

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k}


SPEC = StrategySpec("first-answer", FirstAnswer, FirstAnswerOptions, "the first sample's answer (example plugin)")
