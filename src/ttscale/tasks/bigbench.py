"""BIG-bench JSON tasks, read from the ``bigbench==1.0.0`` sdist on PyPI.

The package itself is not installed (it pulls heavy frameworks). Its sdist is
downloaded once with pip into the cache, and only the ``task.json`` files that
are asked for are extracted from it.

Generative tasks (examples with ``target``) are graded by exact match after
normalization; multiple-choice tasks (only ``target_scores``) are shown as
lettered options and graded by letter, with the random-guess baseline reported.
The first ``shots`` examples of a fixed seeded shuffle are the exemplar pool and
never appear as test problems, so every problem shares one few-shot prefix.
"""

from __future__ import annotations

import json
import random
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttscale.backends.base import GenerationRequest
from ttscale.errors import DatasetError, UnknownNameError
from ttscale.package_index import fetch
from ttscale.paths import cache_dir
from ttscale.tasks.answers import answers_equivalent, extract_numeric_answer, normalize_number
from ttscale.tasks.base import Problem, PromptFormat, Shot, build_request
from ttscale.tasks.spec import TaskArgs, TaskSpec

SDIST = "bigbench-1.0.0.tar.gz"
_PREFIX = "bigbench-1.0.0/bigbench/benchmark_tasks/"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LETTER_RE = re.compile(r"\(?\b([A-Z])\b\)?")


SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"


def sdist_path() -> Path:
    """The cached sdist, fetched from the package index on first use and checked by SHA-256.

    Not through ``pip download``: pip builds an sdist's metadata first, and current pip refuses
    bigbench's (it declares ``file://`` dependencies). See :mod:`ttscale.package_index`.
    """
    path = cache_dir("bigbench") / SDIST
    if path.exists():
        return path
    return fetch("bigbench", SDIST, path, sha256=SDIST_SHA256)


def _index_path() -> Path:
    return cache_dir("bigbench") / "index.json"


def list_tasks() -> list[str]:
    """Names of every JSON task in the sdist, as ``task`` or ``task/subtask``."""
    idx = _index_path()
    if idx.exists():
        names: list[str] = json.loads(idx.read_text())
        return names
    with tarfile.open(sdist_path()) as tar:
        names = sorted(
            m.name[len(_PREFIX) : -len("/task.json")]
            for m in tar
            if m.name.startswith(_PREFIX) and m.name.endswith("/task.json")
        )
    idx.write_text(json.dumps(names))
    return names


def load_task_json(task: str) -> dict[str, Any]:
    """The parsed ``task.json`` of ``task`` (``"arithmetic/1_digit_addition"``), extracted once."""
    target = cache_dir("bigbench", "tasks", *task.split("/")) / "task.json"
    if not target.exists():
        names = list_tasks()
        if task not in names:
            raise UnknownNameError("BIG-bench task", task, [n for n in names if "/" not in n][:50] + ["..."])
        with tarfile.open(sdist_path()) as tar:
            member = tar.extractfile(f"{_PREFIX}{task}/task.json")
            if member is None:
                raise DatasetError(f"task {task} has no task.json in the sdist")
            data = member.read()
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    try:
        parsed: dict[str, Any] = json.loads(target.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"invalid JSON: {e.msg}", path=str(target), line=e.lineno) from e
    if not parsed.get("examples"):
        raise DatasetError(f"task {task} has no examples (it may be a parent of subtasks)", path=str(target))
    return parsed


def normalize_text(s: str) -> str:
    s = s.strip().strip(".").strip().lower()
    return normalize_number(s) if re.fullmatch(r"[-+$\d.,\s]+", s) else re.sub(r"\s+", " ", s)


@dataclass
class BigBenchTask:
    """One BIG-bench JSON task (or subtask)."""

    task: str = "arithmetic/1_digit_multiplication"
    fmt: PromptFormat = field(default_factory=lambda: PromptFormat(style="completion", shots=5, max_tokens=16))
    shuffle_seed: int = 0
    name: str = "bigbench"
    _data: dict[str, Any] | None = None

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = load_task_json(self.task)
        return self._data

    @property
    def multiple_choice(self) -> bool:
        return not any("target" in ex for ex in self.data["examples"])

    def _examples(self) -> tuple[list[dict[str, Any]], list[tuple[int, dict[str, Any]]]]:
        exs = list(enumerate(self.data["examples"]))
        random.Random(self.shuffle_seed).shuffle(exs)
        pool = [ex for _, ex in exs[: self.fmt.shots]]
        return pool, exs[self.fmt.shots :]

    def _options(self, ex: dict[str, Any]) -> list[str]:
        return list(ex["target_scores"].keys())

    def _question(self, ex: dict[str, Any]) -> str:
        q = str(ex["input"]).strip()
        prefix = str(self.data.get("task_prefix", "")).strip()
        if prefix:
            q = f"{prefix} {q}"
        if self.multiple_choice:
            opts = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(self._options(ex)))
            q = f"{q}\nOptions:\n{opts}"
        return q

    def _target(self, ex: dict[str, Any]) -> str:
        if self.multiple_choice:
            scores = ex["target_scores"]
            best = max(range(len(scores)), key=lambda i: list(scores.values())[i])
            return LETTERS[best]
        t = ex["target"]
        return normalize_text(t[0] if isinstance(t, list) else str(t))

    def problems(self, limit: int | None = None) -> list[Problem]:
        _, test = self._examples()
        out = []
        for idx, ex in test[:limit]:
            meta: dict[str, Any] = {"task": self.task, "example": idx}
            if self.multiple_choice:
                meta["n_options"] = len(ex["target_scores"])
            out.append(Problem(f"bb-{self.task}-{idx}", self._question(ex), self._target(ex), meta))
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


def _build(a: TaskArgs) -> BigBenchTask:
    # Plain few-shot completion suits the embedded models best on BIG-bench (see docs).
    base = PromptFormat(style="completion", shots=5, max_tokens=16)
    return BigBenchTask(task=a.subtask or "arithmetic/1_digit_multiplication", fmt=a.format(base),
                        shuffle_seed=a.seed or 0)


SPEC = TaskSpec("bigbench", _build, "a BIG-bench JSON task, e.g. --subtask arithmetic/1_digit_multiplication")
