"""Tasks made of BIG-bench-style examples: ``{"input", "target"}`` or ``{"input", "target_scores"}``.

The prompt style and grading that BIG-bench's JSON tasks and the in-process arithmetic task share.
Generative examples (with ``target``) are graded by exact match after normalization; multiple-choice
examples (only ``target_scores``) are shown as lettered options and graded by letter, with the
random-guess baseline reported. The first ``shots`` examples of a fixed seeded shuffle are the
exemplar pool and never appear as test problems, so every problem shares one few-shot prefix.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from ttscale.tasks.answers import answers_equivalent, extract_numeric_answer, normalize_number
from ttscale.tasks.base import build_request
from ttscale.types import GenerationRequest, Problem, PromptFormat, Shot

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LETTER_RE = re.compile(r"\(?\b([A-Z])\b\)?")


def normalize_text(s: str) -> str:
    """Exact-match normalization: case, surrounding dots and spaces; numbers in canonical form.

    >>> normalize_text(" 12. "), normalize_text("Hello  World")
    ('12', 'hello world')
    """
    s = s.strip().strip(".").strip().lower()
    return normalize_number(s) if re.fullmatch(r"[-+$\d.,\s]+", s) else re.sub(r"\s+", " ", s)


@dataclass
class ExamplesTask:
    """A list of BIG-bench-style examples, prompted few-shot and graded by exact match or letter.

    Subclasses say where the examples come from (:meth:`load`) and how problem ids start.
    """

    task: str
    fmt: PromptFormat = field(default_factory=lambda: PromptFormat(style="completion", shots=5, max_tokens=16))
    shuffle_seed: int = 0
    name: str = "examples"
    id_prefix: str = "ex"
    _data: dict[str, Any] | None = None

    def load(self) -> dict[str, Any]:
        """The task's JSON: at least ``examples``; optionally ``task_prefix`` and ``output_regex``."""
        raise NotImplementedError

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self.load()
        return self._data

    @property
    def multiple_choice(self) -> bool:
        return not any("target" in ex for ex in self.data["examples"])

    def _examples(self) -> tuple[list[dict[str, Any]], list[tuple[int, dict[str, Any]]]]:
        exs = list(enumerate(self.data["examples"]))
        random.Random(self.shuffle_seed).shuffle(exs)
        pool = [ex for _, ex in exs[: self.fmt.shots]]
        return pool, exs[self.fmt.shots :]

    def _question(self, ex: dict[str, Any]) -> str:
        q = str(ex["input"]).strip()
        prefix = str(self.data.get("task_prefix", "")).strip()
        if prefix:
            q = f"{prefix} {q}"
        if self.multiple_choice:
            opts = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(ex["target_scores"]))
            q = f"{q}\nOptions:\n{opts}"
        return q

    def _target(self, ex: dict[str, Any]) -> str:
        if self.multiple_choice:
            scores = list(ex["target_scores"].values())
            return LETTERS[max(range(len(scores)), key=scores.__getitem__)]
        t = ex["target"]
        return normalize_text(t[0] if isinstance(t, list) else str(t))

    def problems(self, limit: int | None = None) -> list[Problem]:
        _, test = self._examples()
        out = []
        for idx, ex in test[:limit]:
            meta: dict[str, Any] = {"task": self.task, "example": idx}
            if self.multiple_choice:
                meta["n_options"] = len(ex["target_scores"])
            out.append(Problem(f"{self.id_prefix}-{self.task}-{idx}", self._question(ex), self._target(ex), meta))
        return out

    def chance_accuracy(self, problems: list[Problem]) -> float | None:
        """Expected accuracy of guessing uniformly among the options (multiple choice only)."""
        if not self.multiple_choice or not problems:
            return None
        return sum(1.0 / p.meta["n_options"] for p in problems) / len(problems)

    def request(self, problem: Problem) -> GenerationRequest:
        pool, _ = self._examples()
        shots = []
        for ex in pool:
            ans = self._target(ex)
            if self.multiple_choice:
                ans = f"({ans})"
            shots.append(Shot(self._question(ex), ans if self.fmt.style == "completion" else f"The answer is {ans}."))
        return build_request(problem.prompt, shots, self.fmt)

    def extract(self, text: str) -> str | None:
        if self.multiple_choice:
            tail = text.split("answer is")[-1]
            m = _LETTER_RE.search(tail)
            return m.group(1) if m else None
        if self.data.get("output_regex") == "[-+]?\\d+" or re.search(r"\d", text):
            return extract_numeric_answer(text.split("\n\n")[0])
        line = text.strip().splitlines()[0] if text.strip() else ""
        return normalize_text(line) or None

    def equivalent(self, a: str | None, b: str | None) -> bool:
        if a is None or b is None:
            return False
        return a == b or (not self.multiple_choice and answers_equivalent(a, b))

    def grade(self, problem: Problem, answer: str | None) -> bool | None:
        if problem.reference is None:
            return None
        return self.equivalent(answer, problem.reference)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "multiple_choice": self.multiple_choice,
            "shuffle_seed": self.shuffle_seed,
            "format": self.fmt.to_dict(),
        }
