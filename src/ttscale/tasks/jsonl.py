"""User data as JSON Lines: one ``{"id", "prompt", "answer"}`` object per line.

``answer`` may be omitted (ungraded problems). Every malformed line is reported
with its line number; nothing is silently skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError, DatasetError
from ttscale.tasks.answers import answers_equivalent, extract_numeric_answer
from ttscale.tasks.base import build_request
from ttscale.tasks.spec import TaskArgs, TaskSpec
from ttscale.types import GenerationRequest, Problem, PromptFormat


def load_jsonl_problems(path: str | Path) -> list[Problem]:
    p = Path(path)
    if not p.exists():
        raise DatasetError("file not found", path=str(p))
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    errors: list[tuple[int, str]] = []
    with p.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                errors.append((lineno, f"not valid UTF-8 ({e.reason})"))
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append((lineno, f"invalid JSON ({e.msg} at column {e.colno})"))
                continue
            if not isinstance(obj, dict):
                errors.append((lineno, f"expected a JSON object, got {type(obj).__name__}"))
                continue
            missing = [k for k in ("id", "prompt") if k not in obj]
            if missing:
                errors.append((lineno, f"missing field(s) {', '.join(missing)}"))
                continue
            pid, prompt, answer = obj["id"], obj["prompt"], obj.get("answer")
            if not isinstance(pid, (str, int)) or isinstance(pid, bool):
                errors.append((lineno, "'id' must be a string or integer"))
                continue
            if not isinstance(prompt, str) or not prompt.strip():
                errors.append((lineno, "'prompt' must be a non-empty string"))
                continue
            if answer is not None and not isinstance(answer, (str, int, float)):
                errors.append((lineno, "'answer' must be a string or number"))
                continue
            sid = str(pid)
            if sid in seen:
                errors.append((lineno, f"duplicate id {sid!r} (first on line {seen[sid]})"))
                continue
            seen[sid] = lineno
            meta = {k: v for k, v in obj.items() if k not in ("id", "prompt", "answer")}
            problems.append(Problem(sid, prompt, None if answer is None else str(answer), meta))
    if errors:
        shown = "\n".join(f"{p}:{n}: {msg}" for n, msg in errors[:20])
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise DatasetError(
            f"{len(errors)} malformed line(s), first on line {errors[0][0]}:\n{shown}{more}",
            path=str(p),
            line=errors[0][0],
        )
    return problems


@dataclass
class JsonlTask:
    """Problems from a user's JSONL file; numeric answers are compared as numbers."""

    path: str
    fmt: PromptFormat = field(default_factory=lambda: PromptFormat(style="chat"))
    name: str = "jsonl"

    def problems(self, limit: int | None = None) -> list[Problem]:
        return load_jsonl_problems(self.path)[:limit]

    def request(self, problem: Problem) -> GenerationRequest:
        return build_request(problem.prompt, [], self.fmt)

    def extract(self, text: str) -> str | None:
        return extract_numeric_answer(text)

    def equivalent(self, a: str | None, b: str | None) -> bool:
        return answers_equivalent(a, b)

    def grade(self, problem: Problem, answer: str | None) -> bool | None:
        if problem.reference is None:
            return None
        ref = extract_numeric_answer(problem.reference) or problem.reference
        return answers_equivalent(answer, ref)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "format": self.fmt.to_dict()}


def _build(a: TaskArgs) -> JsonlTask:
    if not a.data:
        raise ConfigError("task 'jsonl' needs a data file (--data PATH)")
    return JsonlTask(path=a.data, fmt=a.format(PromptFormat(style=a.default_style, max_tokens=256)))  # type: ignore[arg-type]


SPEC = TaskSpec("jsonl", _build, "your own file of {id, prompt, answer} lines (--data PATH)", answers_equivalent,
                takes_data=True)
