"""The in-process arithmetic task: BIG-bench's formats, seeded, graded as BIG-bench grades."""

from __future__ import annotations

import re

import pytest

from ttscale.errors import UnknownNameError
from ttscale.registry import make_task
from ttscale.tasks.arithmetic import ArithmeticTask, arithmetic_examples, subtask_names


@pytest.mark.parametrize("subtask", subtask_names())
def test_every_subtask_asks_what_it_says_and_answers_exactly(subtask: str) -> None:
    digits = int(subtask[0])
    word = {"addition": "plus", "subtraction": "minus", "multiplication": "times", "division": "divided by"}
    op = subtask.split("_digit_")[1]
    exs = arithmetic_examples(subtask, seed=3)
    assert len(exs) == ({"division": 32}.get(op, 100) if digits == 1 else 1000)
    for ex in exs:
        m = re.fullmatch(rf"What is (\d+) {word[op]} (\d+)\?", ex["input"])
        assert m, ex
        a, b = int(m.group(1)), int(m.group(2))
        assert len(str(a)) <= digits and len(str(b)) <= digits
        expected = {"addition": a + b, "subtraction": a - b, "multiplication": a * b}.get(op)
        if op == "division":
            assert b > 0 and a % b == 0
            expected = a // b
        assert ex["target"] == str(expected)


def test_seeds_make_other_problems_and_the_same_seed_the_same() -> None:
    one = make_task("arithmetic", subtask="3_digit_addition", seed=1).problems(limit=20)
    again = make_task("arithmetic", subtask="arithmetic/3_digit_addition", seed=1).problems(limit=20)
    other = make_task("arithmetic", subtask="3_digit_addition", seed=2).problems(limit=20)
    assert one == again and [p.prompt for p in one] != [p.prompt for p in other]


def test_prompt_extraction_and_grading() -> None:
    task = make_task("arithmetic", subtask="1_digit_subtraction", shots=2, max_tokens=8)
    assert isinstance(task, ArithmeticTask) and task.describe()["name"] == "arithmetic"
    p = next(q for q in task.problems() if q.reference.startswith("-"))  # type: ignore[union-attr]
    req = task.request(p)
    assert req.prompt is not None and req.prompt.count("Question: What is") == 3 and req.max_tokens == 8
    assert p.id.startswith("arith-1_digit_subtraction-")
    assert task.grade(p, task.extract(f" {p.reference}\n\nQuestion: What is 1 minus 1?"))
    assert not task.grade(p, task.extract(" 12345"))
    assert task.grade(p, None) is False


def test_unknown_subtask_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="2_digit_division"):
        make_task("arithmetic", subtask="7_digit_addition")
    with pytest.raises(UnknownNameError):
        make_task("arithmetic", subtask="1_digit_exponentiation")
