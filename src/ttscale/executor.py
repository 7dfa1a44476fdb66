"""The one per-problem step every run loop uses, and the configurations runs are identified by.

``ttscale run`` (:func:`ttscale.runner.solve_problems`), ``ttscale sweep``
(:func:`ttscale.sweep.run_sweep`) and the thread / Ray workers (:func:`ttscale.distributed.run_parallel`)
all open or resume their run with :meth:`ttscale.store.Store.resume` and solve each problem with
:func:`solve_problem`; a sweep is the :class:`SweepStrategy`. A strategy instance is copied for
every problem (:func:`fresh`), so strategies that keep a per-solve trace on ``self`` (beam, DVTS,
particle filtering, best-first) cannot overwrite each other's when worker threads share one.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.backends.base import Backend
from ttscale.cost import Budget, Meter
from ttscale.strategies.base import SolveContext, Strategy
from ttscale.strategies.voting import weighted_vote
from ttscale.tasks.base import Task
from ttscale.types import Problem, Result, Sample, Sampling, Usage, dataclass_knobs

Sink = Callable[[Problem, list[Sample]], None]


def fresh(strategy: Strategy) -> Strategy:
    """A copy of ``strategy`` with its configuration and new per-solve state."""
    if dataclasses.is_dataclass(strategy) and not isinstance(strategy, type):
        return dataclasses.replace(strategy)  # type: ignore[return-value]
    return copy.copy(strategy)


def solve_problem(problem: Problem, backend: Backend, task: Task, strategy: Strategy, sampling: Sampling,
                  budget: Budget, stored: Sequence[Sample], sink: Sink | None) -> tuple[list[Sample], Result]:
    """Solve one problem with a fresh copy of ``strategy``: every sample it used (stored ones first) and
    the result. Stored samples are served before any is generated; new ones go to ``sink`` per wave."""
    ctx = SolveContext(problem, backend, task, Meter(backend.model_info(), budget), sampling, stored, sink)
    result = fresh(strategy).solve(problem, ctx)
    return ctx.samples, result


@dataclass
class SweepStrategy:
    """A sweep as a strategy: ``k`` samples in waves of ``wave``, scored by each verifier, answered by
    majority vote (so run-style summaries work on pools too)."""

    k: int
    wave: int = 32
    verifiers: Sequence[Any] = ()
    name: str = "sweep"

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        while len(ctx.samples) < self.k:
            if not ctx.sample(min(self.wave, self.k - len(ctx.samples))):
                break  # cannot happen without a budget; guards against an infinite loop
        samples = ctx.samples
        for v in self.verifiers:
            scored = v.score(problem, samples)
            for s, sc in zip(samples, scored.scores, strict=True):
                s.scores[v.name] = float(sc)
        answer, votes = weighted_vote(samples, equivalent=ctx.task.equivalent)
        return Result(problem.id, answer, ctx.task.grade(problem, answer), "sweep", [s.index for s in samples],
                      votes, Usage.total(s.usage for s in samples), {"k": self.k})

    def describe(self) -> dict[str, Any]:
        return {"name": "sweep", "k": self.k}


def run_config(task: Task, strategy: Strategy, sampling: Sampling, budget: Budget) -> dict[str, Any]:
    """The configuration a run is identified by (a resume must match it)."""
    return {
        "task": task.describe(),
        "strategy": strategy.describe(),
        "sampling": dataclass_knobs(sampling),
        # kv_bytes joined the budget later: left out when unset, so runs stored before still resume
        "budget": {k: v for k, v in dataclass_knobs(budget).items() if not (k == "kv_bytes" and v is None)},
    }


def sweep_config(task: Task, k: int, sampling: Sampling, verifiers: Sequence[Any]) -> dict[str, Any]:
    """What identifies a sweep: resuming with a different one is refused by the store."""
    return {
        "task": task.describe(),
        "strategy": {"name": "sweep", "k": k},
        "sampling": dataclass_knobs(sampling),
        "verifiers": sorted(v.name for v in verifiers),
    }


def model_record(backend: Backend) -> dict[str, Any]:
    """What a run records about its model: the backend's name and the model's shapes."""
    return {"backend": backend.name, **dataclass_knobs(backend.model_info())}
