"""The kinds of work a run does: solve with a strategy, fill a pool, score a stored pool.

Each says what its run is keyed by (a resume with other settings is refused by the store), what
one problem's job is, and what its progress counts. :func:`ttscale.run.execute` takes any of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ttscale.cost import Budget
from ttscale.errors import ConfigError
from ttscale.run.executor import Job, SweepStrategy, run_config, sweep_config
from ttscale.strategies.base import Strategy
from ttscale.tasks.base import Task
from ttscale.types import Sampling
from ttscale.verifiers.base import Verifier

FaultHook = Callable[[str], None]
"""Called with each problem id before a worker solves it (fault injection in tests)."""


@dataclass
class Solve:
    """``ttscale run``: solve every problem with ``strategy`` within ``budget`` per problem."""

    task: Task
    strategy: Strategy
    sampling: Sampling = field(default_factory=Sampling)
    budget: Budget = field(default_factory=Budget)
    fault_hook: FaultHook | None = None

    kind: Literal["run"] = field(default="run", init=False)
    unit: Literal["problems"] = field(default="problems", init=False)

    def config(self) -> dict[str, Any]:
        return run_config(self.task, self.strategy, self.sampling, self.budget)

    def job(self) -> Job:
        return Job(self.task, self.strategy, self.sampling, self.budget, self.fault_hook)

    @property
    def strategy_name(self) -> str:
        return self.strategy.name


@dataclass
class Sweep:
    """``ttscale sweep``: ``k`` samples of every problem for replay, drawn ``wave`` at a time (each
    wave committed before the next, so an interruption loses at most one wave per problem), scored
    by each of ``verifiers``."""

    task: Task
    k: int
    wave: int = 32
    verifiers: Sequence[Verifier] = ()
    sampling: Sampling = field(default_factory=Sampling)
    fault_hook: FaultHook | None = None

    kind: Literal["sweep"] = field(default="sweep", init=False)
    unit: Literal["samples"] = field(default="samples", init=False)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if self.wave < 1:
            raise ConfigError(f"wave must be >= 1, got {self.wave}")

    def config(self) -> dict[str, Any]:
        return sweep_config(self.task, self.k, self.sampling, self.verifiers)

    def job(self) -> Job:
        return Job(self.task, SweepStrategy(self.k, self.wave, tuple(self.verifiers)), self.sampling, Budget(),
                   self.fault_hook)

    @property
    def strategy_name(self) -> str:
        return "sweep"


@dataclass
class Score:
    """``ttscale pool score``: score the stored samples of a run with ``verifier`` under ``name``.

    ``limit_problems`` / ``samples_per_problem`` select a fixed subset (the first ones, so a resumed
    call picks the same); ``batch``: candidates per verifier call (default: a problem's pending
    samples in one call); ``info`` joins the description kept as the run's note ``score:NAME``."""

    verifier: Verifier
    name: str
    limit_problems: int | None = None
    samples_per_problem: int | None = None
    batch: int | None = None
    info: dict[str, Any] | None = None

    kind: Literal["score"] = field(default="score", init=False)
    unit: Literal["samples"] = field(default="samples", init=False)


Work = Solve | Sweep | Score


@dataclass
class DieOnce:
    """Fault-injection hook: the worker process exits (as if killed) the first time it meets ``problem_id``.

    The marker file makes it once per cluster, whichever worker gets the problem first.
    """

    problem_id: str
    marker: str

    def __call__(self, problem_id: str) -> None:
        if problem_id == self.problem_id and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
