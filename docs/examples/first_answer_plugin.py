"""A ttscale strategy plugin in one file: 'first-answer' returns the answer of the first sample that has one.

Install it as a distribution that declares the entry point (pyproject.toml):

    [project.entry-points."ttscale.strategies"]
    first-answer = "first_answer_plugin:SPEC"

and `ttscale run --strategy first-answer -o k=4`, the server (also as `first4/<model>`), `ttscale tasks`,
replay (`ttscale curves RUN --strategy first`, and a default curve) and the planner (a choice `first@k`)
all know it: its record carries its rule over drawn samples, which live runs, replay and the planner share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from ttscale.strategies.base import Result, SolveContext
from ttscale.strategies.spec import Equivalence, ReplayRule, StrategyOptions, StrategySpec
from ttscale.types import Problem, Sample


class FirstAnswerOptions(StrategyOptions):
    k: int = Field(4, ge=1, le=64, description="samples to draw at most")


def first_answer(samples: Sequence[Sample], scores: Sequence[float] | None = None,
                 equivalent: Equivalence | None = None) -> tuple[str | None, dict[str, float]]:
    """The rule: the answer of the lowest-index sample that has one."""
    chosen = min((s for s in samples if s.answer is not None), key=lambda s: s.index, default=None)
    return (chosen.answer, {chosen.answer: 1.0}) if chosen is not None and chosen.answer else (None, {})


@dataclass
class FirstAnswer:
    k: int = 4
    name: str = "first-answer"

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        samples = ctx.sample(self.k)
        answer, votes = first_answer(samples, None, ctx.task.equivalent)
        return ctx.result(self.name, answer, samples, votes)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k}


SPEC = StrategySpec("first-answer", FirstAnswer, FirstAnswerOptions, "the first sample's answer (example plugin)",
                    replay=(ReplayRule("first", first_answer, curves=(("first-answer", {}),), plannable=True),),
                    alias="first")
