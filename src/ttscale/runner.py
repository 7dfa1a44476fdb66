"""Run a strategy over a task's problems, storing every sample, resumably.

The library entry point behind ``ttscale run``: no printing here; progress is
reported through a callback so the CLI can draw a bar and tests can count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttscale.backends.base import Backend
from ttscale.cost import Budget
from ttscale.executor import (
    Executor,
    Job,
    Outcome,
    Writer,
    model_record,
    run_config,
)
from ttscale.store import Store
from ttscale.strategies.base import Strategy
from ttscale.tasks.base import Task
from ttscale.types import Problem, Result, Sampling, Usage

ProgressFn = Callable[[int, int, Result | None], None]


@dataclass
class RunSummary:
    run_id: str
    task: str
    strategy: str
    model: str
    problems: int
    graded: int
    correct: int
    usage: Usage
    wall_s: float
    resumed: bool
    skipped: int
    """Problems already finished in an earlier, interrupted invocation."""
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "task": self.task,
            "strategy": self.strategy,
            "model": self.model,
            "problems": self.problems,
            "graded": self.graded,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "usage": self.usage.to_dict(),
            "tokens_per_problem": self.usage.total_tokens / self.problems if self.problems else 0.0,
            "wall_s": self.wall_s,
            "resumed": self.resumed,
            "skipped": self.skipped,
        }


def solve_problems(
    *,
    task: Task,
    strategy: Strategy,
    backend: Backend,
    store: Store,
    run_id: str,
    problems: Sequence[Problem] | None = None,
    limit: int | None = None,
    sampling: Sampling | None = None,
    budget: Budget | None = None,
    progress: ProgressFn | None = None,
    executor: Executor | None = None,
) -> RunSummary:
    """Solve every problem not already finished in ``run_id``; resumes an interrupted run.

    ``executor`` says where problems are solved (default: one after another on ``backend``)."""
    sampling = sampling or Sampling()
    budget = budget or Budget()
    info = backend.model_info()
    probs = list(problems) if problems is not None else task.problems(limit=limit)
    state = store.resume(run_id, run_config(task, strategy, sampling, budget), model_record(backend), probs)
    resumed, done, stored = state.resumed, state.done, state.stored

    todo = [p for p in probs if p.id not in done]
    skipped = len(probs) - len(todo)
    for i in range(skipped):  # already finished in an earlier invocation
        if progress:
            progress(i + 1, len(probs), None)

    def on_result(_p: Problem, result: Result | None, out: Outcome) -> None:
        if progress:
            progress(skipped + out.finished, len(probs), result)

    t0 = time.perf_counter()
    ex = executor or Executor(backend=backend)
    ex.run(Job(task, strategy, sampling, budget), todo, stored, Writer(store, run_id), on_result)
    store.set_run_status(run_id, "done")
    return summarize(store, run_id, task.name, strategy.name, info.name, resumed, skipped, time.perf_counter() - t0,
                     {p.id for p in probs})


def summarize(
    store: Store,
    run_id: str,
    task: str,
    strategy: str,
    model: str,
    resumed: bool = False,
    skipped: int = 0,
    wall_s: float = 0.0,
    only: set[str] | None = None,
) -> RunSummary:
    results = [r for r in store.results(run_id) if only is None or r["problem_id"] in only]
    graded = [r for r in results if r["correct"] is not None]
    usage = Usage.total(Usage.from_dict(r["usage"]) for r in results)
    return RunSummary(
        run_id=run_id,
        task=task,
        strategy=strategy,
        model=model,
        problems=len(results),
        graded=len(graded),
        correct=sum(1 for r in graded if r["correct"]),
        usage=usage,
        wall_s=wall_s,
        resumed=resumed,
        skipped=skipped,
        results=results,
    )
