"""The oracle grader as a verifier: 1 for a correct answer, 0 otherwise.

It reads the reference answer, so it measures what a perfect verifier would
buy (coverage, pass@k). It is for evaluation only and is labelled so in every
result that uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ttscale.tasks.base import Task
from ttscale.types import Problem, Sample
from ttscale.verifiers.base import Scores
from ttscale.verifiers.spec import VerifierSpec


@dataclass
class OracleVerifier:
    task: Task
    name: str = "oracle"
    uses_reference: bool = True

    def score(self, problem: Problem, candidates: Sequence[Sample]) -> Scores:
        return Scores([1.0 if self.task.grade(problem, c.answer) else 0.0 for c in candidates])


SPEC = VerifierSpec("oracle", lambda a: OracleVerifier(a.task), "reference-answer grader (evaluation only: reads the reference)")
