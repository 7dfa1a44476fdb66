"""Arithmetic generated in-process, in the format of BIG-bench's ``arithmetic`` subtasks.

Nothing is downloaded: the examples are made from the subtask's name and a seed, so tests and quick
experiments on the small models depend on no file that a package index may stop serving. The
question text (``What is 3 times 4?``), the few-shot prompt and the grading are BIG-bench's
(:class:`~ttscale.tasks.examples.ExamplesTask`), so figures stay comparable:

- one-digit addition, subtraction and multiplication are every pair ``(a, b)`` of digits in the
  order ``10 * a + b``, which is BIG-bench's own example list, so with the same shuffle seed the
  problems, their ids' example numbers and the exemplars are those of BIG-bench's subtask;
- one-digit division is every ``a / b`` with ``a`` a digit, ``b`` in 1..9 and an integer quotient
  (32 examples);
- n-digit subtasks (n = 2..5) draw 1,000 examples with operands of up to n digits from a generator
  seeded by the subtask and the seed; division draws the divisor and the quotient, so the dividend
  has at most n digits and the answer is an integer.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from ttscale.errors import UnknownNameError
from ttscale.tasks.answers import answers_equivalent
from ttscale.tasks.examples import ExamplesTask
from ttscale.tasks.spec import TaskArgs, TaskSpec
from ttscale.types import PromptFormat

OPERATIONS = {"addition": "plus", "subtraction": "minus", "multiplication": "times", "division": "divided by"}
MAX_DIGITS = 5
GENERATED_EXAMPLES = 1000
_SUBTASK = re.compile(r"(?:arithmetic/)?([1-9])_digit_([a-z]+)")


def subtask_names() -> list[str]:
    """Every subtask this task generates, as BIG-bench names them (without the ``arithmetic/`` prefix)."""
    return [f"{n}_digit_{op}" for n in range(1, MAX_DIGITS + 1) for op in OPERATIONS]


def _parse(subtask: str) -> tuple[int, str]:
    m = _SUBTASK.fullmatch(subtask.strip())
    if m is None or int(m.group(1)) > MAX_DIGITS or m.group(2) not in OPERATIONS:
        raise UnknownNameError("arithmetic subtask", subtask, subtask_names())
    return int(m.group(1)), m.group(2)


def _example(a: int, op: str, b: int) -> dict[str, Any]:
    result = {"addition": a + b, "subtraction": a - b, "multiplication": a * b}.get(op)
    if result is None:
        result = a // b
    return {"input": f"What is {a} {OPERATIONS[op]} {b}?", "target": str(result)}


def arithmetic_examples(subtask: str, seed: int = 0) -> list[dict[str, Any]]:
    """The examples of ``subtask`` (``"2_digit_addition"``; an ``arithmetic/`` prefix is accepted).

    >>> [e["input"] for e in arithmetic_examples("1_digit_multiplication")[12:14]]
    ['What is 1 times 2?', 'What is 1 times 3?']
    >>> arithmetic_examples("2_digit_subtraction", seed=1) == arithmetic_examples("2_digit_subtraction", seed=1)
    True
    """
    digits, op = _parse(subtask)
    if digits == 1:
        if op == "division":
            return [_example(a, op, b) for a in range(10) for b in range(1, 10) if a % b == 0]
        return [_example(a, op, b) for a in range(10) for b in range(10)]
    rng = random.Random(f"arithmetic/{digits}_digit_{op}/{seed}")  # str seeds are stable across runs
    top = 10**digits
    out = []
    for _ in range(GENERATED_EXAMPLES):
        if op == "division":
            b = rng.randrange(1, top)
            out.append(_example(b * rng.randrange(0, (top - 1) // b + 1), op, b))
        else:
            out.append(_example(rng.randrange(top), op, rng.randrange(top)))
    return out


@dataclass
class ArithmeticTask(ExamplesTask):
    """One arithmetic subtask, generated from its name and ``shuffle_seed`` (which also seeds n > 1 digits)."""

    task: str = "1_digit_multiplication"
    name: str = "arithmetic"
    id_prefix: str = "arith"

    def __post_init__(self) -> None:
        digits, op = _parse(self.task)
        self.task = f"{digits}_digit_{op}"

    def load(self) -> dict[str, Any]:
        return {"name": f"arithmetic/{self.task}", "examples": arithmetic_examples(self.task, self.shuffle_seed)}


def _build(a: TaskArgs) -> ArithmeticTask:
    # Few-shot completion, as on BIG-bench: the embedded models answer best that way (see docs).
    base = PromptFormat(style="completion", shots=5, max_tokens=16)
    return ArithmeticTask(task=a.subtask or "1_digit_multiplication", fmt=a.format(base), shuffle_seed=a.seed or 0)


SPEC = TaskSpec("arithmetic", _build,
                "BIG-bench-style arithmetic generated in-process, e.g. --subtask 2_digit_addition "
                "(1-5 digits; addition, subtraction, multiplication, division)", answers_equivalent)
