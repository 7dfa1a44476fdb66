"""One-problem tasks and a one-problem solve, shared by the strategy tests."""

from __future__ import annotations

import json
from pathlib import Path

from ttscale.backends.base import Backend
from ttscale.cost import Budget, Meter
from ttscale.strategies.base import SolveContext, Strategy
from ttscale.tasks.jsonl import JsonlTask
from ttscale.types import PromptFormat, Result


def one_problem_task(tmp_path: Path, style: str = "completion", max_tokens: int = 64) -> JsonlTask:
    """"What is 6 times 7?" (reference 42) as a JSONL task."""
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"id": "p1", "prompt": "What is 6 times 7?", "answer": "42"}) + "\n")
    return JsonlTask(path=str(p), fmt=PromptFormat(style=style, max_tokens=max_tokens))  # type: ignore[arg-type]


def solve(strategy: Strategy, task: JsonlTask, backend: Backend, budget: Budget | None = None
          ) -> tuple[Result, SolveContext]:
    """Solve the task's first problem on a fresh meter; the context is returned for its samples and usage."""
    prob = task.problems()[0]
    ctx = SolveContext(prob, backend, task, Meter(backend.model_info(), budget or Budget()))
    return strategy.solve(prob, ctx), ctx
