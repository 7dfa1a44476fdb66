"""Scale-out: many problems in flight, on threads (one shared backend) or on a Ray cluster.

The process that calls :func:`run_parallel` is the only store writer. Workers
solve whole problems and send back what they produced:

* ``mode="threads"``: ``workers`` threads share one thread-safe backend (the
  HTTP backend: its connection pool and concurrency limit turn the threads into
  concurrent requests a batching server can merge). Samples stream to the
  writer wave by wave through a queue, so they are durable as soon as they exist.
* ``mode="ray"``: ``workers`` Ray actors each build their own backend from a
  :class:`BackendSpec` (an in-process model, or an HTTP endpoint from a list,
  round-robin). A finished problem's new samples and result come back to the
  writer in one piece; an actor that dies has its problem re-queued on a fresh
  actor. Because nothing of an unfinished problem is written, and stored samples
  are keyed by (run, problem, index), nothing is lost or stored twice.

A problem whose backend gives up (retries exhausted) is reported in
``failures`` and stays pending in the store, so a rerun with the same run id resumes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttscale.backends.base import Backend
from ttscale.cost import Budget
from ttscale.errors import ConfigError
from ttscale.executor import BackendSpec, Executor, Job, Outcome, SweepStrategy, Writer, run_config
from ttscale.store import Store
from ttscale.strategies.base import Strategy
from ttscale.tasks.base import Task
from ttscale.types import Problem, Result, Sampling, Usage, dataclass_knobs

__all__ = ["BackendSpec", "DieOnce", "ParallelSummary", "PoolStrategy", "run_parallel"]

Progress = Callable[[int, int], None]
"""Called with (problems finished, problems in the run)."""


@dataclass
class ParallelSummary:
    run_id: str
    problems: int
    finished: int
    samples_written: int
    usage: Usage
    wall_s: float
    failures: dict[str, str] = field(default_factory=dict)
    """Problem id -> error, for problems left pending."""
    worker_deaths: int = 0
    requeued: int = 0
    skipped: int = 0
    """Problems already finished in an earlier invocation."""
    results: list[Result] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "problems": self.problems, "finished": self.finished,
                "samples_written": self.samples_written, "usage": self.usage.to_dict(), "wall_s": self.wall_s,
                "failures": self.failures, "worker_deaths": self.worker_deaths, "requeued": self.requeued}


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


PoolStrategy = SweepStrategy  # the name this module gave it first


def run_parallel(
    *,
    task: Task,
    strategy: Strategy,
    store: Store,
    run_id: str,
    backend: Backend | None = None,
    backend_specs: Sequence[BackendSpec] = (),
    problems: Sequence[Problem] | None = None,
    limit: int | None = None,
    sampling: Sampling | None = None,
    budget: Budget | None = None,
    workers: int = 2,
    mode: str = "threads",
    ray_address: str | None = None,
    config: dict[str, Any] | None = None,
    kind: str = "run",
    progress: Progress | None = None,
    max_worker_restarts: int = 4,
    fault_hook: Callable[[str], None] | None = None,
) -> ParallelSummary:
    """Solve every unfinished problem of ``run_id`` with ``workers`` in parallel (resumable)."""
    if mode not in ("threads", "ray"):
        raise ConfigError(f"mode must be 'threads' or 'ray', got {mode!r}")
    executor = Executor(mode, workers, backend, tuple(backend_specs), ray_address,  # type: ignore[arg-type]
                        max_worker_restarts)
    sampling = sampling or Sampling()
    budget = budget or Budget()
    probe = backend or backend_specs[0].build()
    try:
        model_meta = {"backend": probe.name, **dataclass_knobs(probe.model_info())}
    finally:
        if backend is None:
            probe.close()
    cfg = config or run_config(task, strategy, sampling, budget)
    probs = list(problems) if problems is not None else task.problems(limit=limit)
    state = store.resume(run_id, cfg, model_meta, probs, kind=kind)
    todo = [p for p in probs if p.id not in state.done]
    writer = Writer(store, run_id)
    skipped = len(probs) - len(todo)

    def on_result(_p: Problem, _r: Result | None, out: Outcome) -> None:
        if progress:
            progress(skipped + out.finished, len(probs))

    t0 = time.perf_counter()
    out = executor.run(Job(task, strategy, sampling, budget, fault_hook), todo, state.stored, writer, on_result)
    if not out.failures:
        store.set_run_status(run_id, "done")
    return ParallelSummary(run_id, len(probs), skipped + out.finished, writer.written,
                           Usage.total(r.usage for r in writer.results), time.perf_counter() - t0, out.failures,
                           out.worker_deaths, out.requeued, skipped, writer.results)
