"""Unit-test verifier: score a code sample 1 if it passes the problem's tests in the sandbox, else 0.

Split-test mode (the default, ``visible_only=True``) runs only the *visible* subset of each
problem's asserts, as a deployed system would with the few tests it has, while grading
uses all of them; samples that pass the visible tests but fail grading are the verifier's
false positives (Stroebl et al. 2024). ``visible_only=False`` runs every test: that is
the grader itself, so the verifier is then labelled as reading the reference.

The task must provide ``run_tests(problem, answers, visible=...)`` (see
:class:`ttscale.tasks.humaneval.HumanEvalTask`); identical programs are run once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ttscale.errors import ConfigError
from ttscale.sandbox import CheckResult
from ttscale.types import Problem, Sample, Usage
from ttscale.verifiers.base import Scores
from ttscale.verifiers.spec import VerifierSpec


@runtime_checkable
class TestRunner(Protocol):
    """A task whose answers are programs with tests (HumanEval and the like)."""

    def run_tests(self, problem: Problem, answers: list[str | None], *, visible: bool) -> list[CheckResult | None]: ...


@dataclass
class UnitTestVerifier:
    task: Any
    visible_only: bool = True
    name: str = "unit-tests"
    uses_reference: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.task, TestRunner):
            name = getattr(self.task, "name", type(self.task).__name__)
            raise ConfigError(f"verifier {self.name!r} needs a code task with unit tests (e.g. humaneval), not {name!r}")
        # Running every test is grading: say so, so results are not mistaken for deployable ones.
        self.uses_reference = not self.visible_only

    def check(self, problem: Problem, answers: Sequence[str | None]) -> list[CheckResult | None]:
        """The sandbox results behind the scores (``None`` where a sample had no code)."""
        runner: TestRunner = self.task
        return runner.run_tests(problem, list(answers), visible=self.visible_only)

    def score(self, problem: Problem, candidates: Sequence[Sample]) -> Scores:
        t0 = time.perf_counter()
        results = self.check(problem, [c.answer for c in candidates])
        scores = [1.0 if r is not None and r.passed else 0.0 for r in results]
        # No tokens: the cost of a unit-test verifier is sandbox wall time.
        return Scores(scores, Usage(wall_s=time.perf_counter() - t0))


SPECS = (
    VerifierSpec("unit-tests", lambda a: UnitTestVerifier(a.task, visible_only=True, name="unit-tests"),
                 "code tasks: 1 if the sample passes the problem's visible tests in the sandbox (grading uses all)"),
    VerifierSpec("unit-tests-all", lambda a: UnitTestVerifier(a.task, visible_only=False, name="unit-tests-all"),
                 "code tasks: 1 if the sample passes all tests (the grader itself: evaluation only)"),
)
