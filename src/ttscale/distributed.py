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
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttscale.backends.base import Backend
from ttscale.cost import Budget, Usage
from ttscale.errors import ConfigError, TtscaleError
from ttscale.executor import SweepStrategy, run_config, solve_problem
from ttscale.store import Store
from ttscale.strategies.base import Result, Sample, Sampling, Strategy
from ttscale.tasks.base import Problem, Task
from ttscale.types import dataclass_knobs

Progress = Callable[[int, int], None]
"""Called with (problems finished, problems in the run)."""


@dataclass(frozen=True)
class BackendSpec:
    """How a worker builds its own backend: ``registry.make_backend(kind, model, **options)``."""

    kind: str = "llama-cpp"
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Backend:
        from ttscale.registry import make_backend

        return make_backend(self.kind, self.model, **dict(self.options))


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


def solve_one(problem: Problem, backend: Backend, task: Task, strategy: Strategy, sampling: Sampling,
              budget: Budget, stored: Sequence[Sample], sink: Callable[[Problem, list[Sample]], None] | None
              ) -> tuple[list[Sample], Result]:
    """Solve one problem (see :func:`ttscale.executor.solve_problem`, the step every run loop shares)."""
    return solve_problem(problem, backend, task, strategy, sampling, budget, stored, sink)


class _Writer:
    """The single store writer: everything workers produce goes through here, on the calling thread."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.written = 0
        self.results: list[Result] = []

    def samples(self, pid: str, new: Sequence[Sample]) -> None:
        if new:
            self.store.add_samples(self.run_id, pid, list(new))
            self.written += len(new)

    def finish(self, samples: Sequence[Sample], result: Result) -> None:
        if any(s.scores for s in samples):
            self.store.update_scores(self.run_id, result.problem_id, list(samples))
        self.store.finish_problem(self.run_id, result)
        self.results.append(result)


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
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if mode not in ("threads", "ray"):
        raise ConfigError(f"mode must be 'threads' or 'ray', got {mode!r}")
    sampling = sampling or Sampling()
    budget = budget or Budget()
    specs = list(backend_specs)
    if backend is None and not specs:
        raise ConfigError("give a backend (threads) or backend specs (each worker builds its own)")
    if mode == "ray" and not specs:
        raise ConfigError("Ray workers build their own backends: pass backend_specs")
    probe = backend or specs[0].build()
    try:
        info = probe.model_info()
        model_meta = {"backend": probe.name, **dataclass_knobs(info)}
    finally:
        if backend is None:
            probe.close()
    cfg = config or run_config(task, strategy, sampling, budget)
    probs = list(problems) if problems is not None else task.problems(limit=limit)
    state = store.resume(run_id, cfg, model_meta, probs, kind=kind)
    done, stored = state.done, state.stored
    todo = [p for p in probs if p.id not in done]
    writer = _Writer(store, run_id)
    summary = ParallelSummary(run_id, len(probs), len(probs) - len(todo), 0, Usage(), 0.0,
                              skipped=len(probs) - len(todo))
    t0 = time.perf_counter()
    job = _Job(task, strategy, sampling, budget, fault_hook)
    if mode == "threads":
        _run_threads(job, todo, stored, workers, backend, specs, writer, summary, progress)
    else:
        _run_ray(job, todo, stored, workers, specs, ray_address, max_worker_restarts, writer, summary, progress)
    summary.wall_s = time.perf_counter() - t0
    summary.samples_written = writer.written
    summary.results = writer.results
    summary.usage = Usage.total(r.usage for r in writer.results)
    if not summary.failures:
        store.set_run_status(run_id, "done")
    return summary


@dataclass
class _Job:
    task: Task
    strategy: Strategy
    sampling: Sampling
    budget: Budget
    fault_hook: Callable[[str], None] | None = None

    def solve(self, backend: Backend, problem: Problem, stored: Sequence[Sample],
              sink: Callable[[Problem, list[Sample]], None] | None) -> tuple[list[Sample], Result]:
        if self.fault_hook is not None:
            self.fault_hook(problem.id)
        return solve_one(problem, backend, self.task, self.strategy, self.sampling, self.budget, stored, sink)


def _run_threads(job: _Job, todo: list[Problem], stored: dict[str, list[Sample]], workers: int,
                 backend: Backend | None, specs: list[BackendSpec], writer: _Writer, summary: ParallelSummary,
                 progress: Progress | None) -> None:
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    pending: queue.Queue[Problem] = queue.Queue()
    for p in todo:
        pending.put(p)

    def work(slot: int) -> None:
        be = backend or specs[slot % len(specs)].build()
        try:
            while True:
                try:
                    p = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    samples, result = job.solve(be, p, stored.get(p.id, ()),
                                                lambda prob, new: events.put(("samples", (prob.id, new))))
                    events.put(("done", (samples, result)))
                except TtscaleError as e:
                    events.put(("failed", (p.id, f"{type(e).__name__}: {e}")))
                except Exception as e:  # a bug in a worker must not hang the writer
                    events.put(("failed", (p.id, f"{type(e).__name__}: {e}")))
        finally:
            if backend is None:
                be.close()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(min(workers, len(todo)))]
    for t in threads:
        t.start()
    remaining = len(todo)
    while remaining:
        kind, payload = events.get()
        if kind == "samples":
            writer.samples(*payload)
            continue
        remaining -= 1
        if kind == "done":
            writer.finish(*payload)
            summary.finished += 1
        else:
            summary.failures[payload[0]] = payload[1]
        if progress:
            progress(summary.finished, summary.problems)
    for t in threads:
        t.join()


def _run_ray(job: _Job, todo: list[Problem], stored: dict[str, list[Sample]], workers: int,
             specs: list[BackendSpec], address: str | None, max_restarts: int, writer: _Writer,
             summary: ParallelSummary, progress: Progress | None) -> None:
    try:
        import ray
        from ray.exceptions import RayActorError
    except ImportError as e:
        raise ConfigError("Ray is not installed: pip install 'ttscale[ray]'") from e

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)

    @ray.remote(num_cpus=1, max_restarts=0)
    class SolveWorker:
        def __init__(self, spec: BackendSpec, job: _Job) -> None:
            self.backend = spec.build()
            self.job = job

        def solve(self, problem: Problem, prior: list[Sample]) -> tuple[list[Sample], Result]:
            return self.job.solve(self.backend, problem, prior, None)

    job_ref = ray.put(job)
    spawned = 0

    def spawn() -> Any:
        nonlocal spawned
        spec = specs[spawned % len(specs)]  # round-robin over endpoints / model specs
        spawned += 1
        return SolveWorker.remote(spec, job_ref)  # type: ignore[attr-defined]

    idle = [spawn() for _ in range(min(workers, len(todo)))]
    pending = list(todo)
    running: dict[Any, tuple[Any, Problem]] = {}
    restarts = 0
    try:
        while pending or running:
            while idle and pending:
                actor, p = idle.pop(), pending.pop(0)
                running[actor.solve.remote(p, stored.get(p.id, []))] = (actor, p)
            ready, _ = ray.wait(list(running), num_returns=1)
            ref = ready[0]
            actor, p = running.pop(ref)
            try:
                samples, result = ray.get(ref)
            except RayActorError:
                summary.worker_deaths += 1
                summary.requeued += 1
                pending.insert(0, p)  # nothing of it was written: solve it again from the stored samples
                if restarts < max_restarts:
                    restarts += 1
                    idle.append(spawn())
                elif not running and not idle:
                    raise TtscaleError(f"all Ray workers died ({summary.worker_deaths} deaths)") from None
                continue
            except ray.exceptions.RayTaskError as e:
                summary.failures[p.id] = str(e.cause if getattr(e, "cause", None) else e).splitlines()[0]
                idle.append(actor)
            else:
                prior = {s.index for s in stored.get(p.id, [])}
                writer.samples(p.id, [s for s in samples if s.index not in prior])
                writer.finish(samples, result)
                summary.finished += 1
                idle.append(actor)
            if progress:
                progress(summary.finished, summary.problems)
    finally:
        for actor in idle + [a for a, _ in running.values()]:
            ray.kill(actor)
