from __future__ import annotations

import pytest

from ttscale.tasks.base import PromptFormat
from ttscale.tasks.bigbench import BigBenchTask, normalize_text


def test_generative_arithmetic() -> None:
    task = BigBenchTask("arithmetic/1_digit_multiplication")
    assert not task.multiple_choice
    probs = task.problems()
    assert len(probs) == 95  # 100 examples, 5 held out as the exemplar pool
    p = probs[0]
    req = task.request(p)
    assert req.prompt is not None and req.prompt.count("Question: ") == 6
    assert req.prompt.endswith(f"Question: {p.prompt}\nAnswer:")
    assert p.prompt not in req.prompt.split("\n\n")[0]
    assert task.extract(" 32\n") == "32"
    assert task.grade(p, p.reference) and not task.grade(p, "banana")
    # all problems share the few-shot prefix
    prefixes = {task.request(q).prompt.rsplit("Question: ", 1)[0] for q in probs}  # type: ignore[union-attr]
    assert len(prefixes) == 1


def test_multiple_choice_navigate() -> None:
    task = BigBenchTask("navigate", fmt=PromptFormat(style="completion", shots=3, max_tokens=8))
    assert task.multiple_choice
    probs = task.problems(limit=20)
    assert all(p.reference in ("A", "B") for p in probs)
    assert "(A) True" in probs[0].prompt
    assert task.chance_accuracy(probs) == pytest.approx(0.5)
    assert task.extract(" (B)\n") == "B"
    assert task.extract("The answer is (A).") == "A"


def test_normalize_text() -> None:
    assert normalize_text(" 12. ") == "12"
    assert normalize_text("Hello  World") == "hello world"


def test_unknown_task() -> None:
    from ttscale.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        BigBenchTask("no_such_task_xyz").problems()
