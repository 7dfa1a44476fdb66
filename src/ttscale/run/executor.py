"""Where problems are solved, the per-problem step, and what a run is keyed by.

:func:`ttscale.run.execute` opens or resumes a run with :meth:`ttscale.store.Store.resume`, then
hands the unfinished problems to an :class:`Executor` (sequential, threads sharing one backend, or
Ray actors), which solves each with :func:`solve_problem` and sends everything to one
:class:`Writer`; a sweep is the :class:`SweepStrategy`. A strategy instance is copied for every
problem (:func:`fresh`), so strategies that keep a per-solve trace on ``self`` (beam, DVTS, particle
filtering, best-first) cannot overwrite each other's when worker threads share one.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ttscale.backends.base import Backend
from ttscale.cost import Budget, Meter
from ttscale.errors import ConfigError, TtscaleError
from ttscale.store import Store
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


def sampling_record(sampling: Sampling) -> dict[str, Any]:
    """The sampling settings a run is keyed by. ``top_k``/``min_p``/``logprobs`` joined later: left out
    at their defaults, so runs and pools stored before still resume."""
    knobs = dataclass_knobs(sampling)
    defaults = {"top_k": 0, "min_p": 0.0, "logprobs": True}
    return {k: v for k, v in knobs.items() if not (k in defaults and v == defaults[k])}


def budget_record(budget: Budget) -> dict[str, Any]:
    """The budget as a run records it. Caps that joined later (KV bytes, seconds, dollars and their
    hardware) are left out when unset, so runs stored before still resume; a profile is recorded by
    name and price."""
    out = {k: v for k, v in dataclass_knobs(budget).items()
           if not (k in ("kv_bytes", "seconds", "usd", "hardware") and v is None)}
    if budget.hardware is not None:
        out["hardware"] = {"name": budget.hardware.name, "usd_per_hour": budget.hardware.usd_per_hour}
    return out


def run_config(task: Task, strategy: Strategy, sampling: Sampling, budget: Budget) -> dict[str, Any]:
    """The configuration a run is identified by (a resume must match it)."""
    return {
        "task": task.describe(),
        "strategy": strategy.describe(),
        "sampling": sampling_record(sampling),
        "budget": budget_record(budget),
    }


def sweep_config(task: Task, k: int, sampling: Sampling, verifiers: Sequence[Any]) -> dict[str, Any]:
    """What identifies a sweep: resuming with a different one is refused by the store."""
    return {
        "task": task.describe(),
        "strategy": {"name": "sweep", "k": k},
        "sampling": sampling_record(sampling),
        "verifiers": sorted(v.name for v in verifiers),
    }


def model_record(backend: Backend) -> dict[str, Any]:
    """What a run records about its model: the backend's name and the model's shapes."""
    return {"backend": backend.name, **dataclass_knobs(backend.model_info())}


# ---- where problems are solved ---------------------------------------------------------------


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
class Job:
    """What every problem of a run is solved with (shipped whole to Ray actors)."""

    task: Task
    strategy: Strategy
    sampling: Sampling
    budget: Budget
    fault_hook: Callable[[str], None] | None = None

    def solve(self, backend: Backend, problem: Problem, stored: Sequence[Sample],
              sink: Sink | None) -> tuple[list[Sample], Result]:
        if self.fault_hook is not None:
            self.fault_hook(problem.id)
        return solve_problem(problem, backend, self.task, self.strategy, self.sampling, self.budget, stored, sink)


class Writer:
    """The single store writer: everything a run produces goes through here, on the calling thread.

    Samples are written wave by wave as they exist (``samples``), so a killed run loses at most
    the wave in flight; ``finish`` stores verifier scores and the result.
    """

    def __init__(self, store: Store, run_id: str, on_samples: Callable[[int], None] | None = None) -> None:
        self.store, self.run_id = store, run_id
        self.written = 0
        self.written_usage = Usage()
        """What the samples written by this writer cost (stored ones from earlier calls excluded)."""
        self.results: list[Result] = []
        self._on_samples = on_samples

    def samples(self, pid: str, new: Sequence[Sample]) -> None:
        if new:
            self.store.add_samples(self.run_id, pid, list(new))
            self.written += len(new)
            self.written_usage = self.written_usage + Usage.total(s.usage for s in new)
            if self._on_samples is not None:
                self._on_samples(len(new))

    def finish(self, samples: Sequence[Sample], result: Result) -> None:
        if any(s.scores for s in samples):
            self.store.update_scores(self.run_id, result.problem_id, list(samples))
        self.store.finish_problem(self.run_id, result)
        self.results.append(result)


@dataclass
class Outcome:
    """What an executor did: problems finished, problems that failed (left pending), worker deaths."""

    finished: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    worker_deaths: int = 0
    requeued: int = 0


OnResult = Callable[[Problem, "Result | None", Outcome], None]
"""Called on the writer's thread after each problem: its result, or None when it failed."""


@dataclass
class Executor:
    """Where a run's problems are solved.

    ``sequential``: one after another on ``backend`` (an error stops the run; it resumes).
    ``threads``: ``workers`` threads share ``backend`` (or build one each from ``backend_specs``);
    a problem whose backend gives up is reported in :attr:`Outcome.failures` and stays pending.
    ``ray``: ``workers`` Ray actors build their own backends from ``backend_specs`` (round-robin);
    a finished problem comes back whole, and one whose actor died is solved again on a fresh actor
    from the stored samples (nothing of an unfinished problem was written, so nothing is lost or doubled).
    """

    mode: Literal["sequential", "threads", "ray"] = "sequential"
    workers: int = 1
    backend: Backend | None = None
    backend_specs: Sequence[BackendSpec] = ()
    ray_address: str | None = None
    max_worker_restarts: int = 4

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.mode not in ("sequential", "threads", "ray"):
            raise ConfigError(f"mode must be 'sequential', 'threads' or 'ray', got {self.mode!r}")
        if self.backend is None and not self.backend_specs:
            raise ConfigError("give a backend (threads) or backend specs (each worker builds its own)")
        if self.mode == "ray" and not self.backend_specs:
            raise ConfigError("Ray workers build their own backends: pass backend_specs")

    def run(self, job: Job, todo: Sequence[Problem], stored: dict[str, list[Sample]], writer: Writer,
            on_result: OnResult | None = None) -> Outcome:
        out = Outcome()
        if self.mode == "sequential":
            be = self.backend or self.backend_specs[0].build()
            try:
                for p in todo:
                    samples, result = job.solve(be, p, stored.get(p.id, ()), lambda prob, new: writer.samples(prob.id, new))
                    writer.finish(samples, result)
                    out.finished += 1
                    if on_result is not None:
                        on_result(p, result, out)
            finally:
                if self.backend is None:
                    be.close()
        elif self.mode == "threads":
            self._threads(job, list(todo), stored, writer, out, on_result)
        else:
            from ttscale.run.ray_actors import run_on_ray

            run_on_ray(self, job, list(todo), stored, writer, out, on_result)
        return out

    def _threads(self, job: Job, todo: list[Problem], stored: dict[str, list[Sample]], writer: Writer,
                 out: Outcome, on_result: OnResult | None) -> None:
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        pending: queue.Queue[Problem] = queue.Queue()
        for p in todo:
            pending.put(p)
        by_id = {p.id: p for p in todo}
        specs = list(self.backend_specs)

        def work(slot: int) -> None:
            be = self.backend or specs[slot % len(specs)].build()
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
                if self.backend is None:
                    be.close()

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(min(self.workers, len(todo)))]
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
                out.finished += 1
                pid, result = payload[1].problem_id, payload[1]
            else:
                out.failures[payload[0]] = payload[1]
                pid, result = payload[0], None
            if on_result is not None:
                on_result(by_id[pid], result, out)
        for t in threads:
            t.join()


def default_ray_cpus(workers: int) -> int:
    return max(workers, os.cpu_count() or 1)
