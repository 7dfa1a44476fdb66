"""The one front door: :func:`execute` runs any :data:`~ttscale.run.work.Work` on any executor.

Every kind of run goes the same way: open or resume the run in the store (a resume with other
settings is refused), hand the unfinished problems to the :class:`Executor` (one after another,
threads sharing a backend, or Ray actors), write everything through one :class:`Writer`, and
summarise. Nothing here prints; progress goes to a callback.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ttscale.backends.base import Backend
from ttscale.errors import ConfigError
from ttscale.run.executor import Executor, Outcome, Writer, model_record
from ttscale.run.scoring import score_run
from ttscale.run.summary import Progress, ProgressFn, Summary
from ttscale.run.work import Score, Sweep, Work
from ttscale.store import Store
from ttscale.types import Problem, Result, Usage


def execute(work: Work, *, store: Store, run_id: str, backend: Backend | None = None,
            executor: Executor | None = None, problems: Sequence[Problem] | None = None,
            limit: int | None = None, progress: ProgressFn | None = None) -> Summary:
    """Do ``work`` for every problem not already done in ``run_id``; resumes an interrupted run.

    ``executor`` says where problems are solved (default: one after another on ``backend``);
    ``problems`` (default: the task's first ``limit``) fixes the run's problem list. A problem
    whose backend gave up in a threads or Ray run is in :attr:`Summary.failures` and stays pending.
    """
    if isinstance(work, Score):
        return score_run(store, run_id, work, progress)
    ex = executor or Executor(backend=backend)
    probe = backend or ex.backend
    built = probe is None
    if probe is None:  # Ray / per-worker backends: read the model's record from one built here
        probe = ex.backend_specs[0].build()
    try:
        model = model_record(probe)
    finally:
        if built:
            probe.close()
    probs = list(problems) if problems is not None else work.task.problems(limit=limit)
    if not probs:
        raise ConfigError("the task yielded no problems")
    state = store.resume(run_id, work.config(), model, probs, kind=work.kind)

    if isinstance(work, Sweep):
        k = work.k
        todo = [p for p in probs if not (p.id in state.done and len(state.stored.get(p.id, [])) >= k)]
        prior = {p.id: state.stored.get(p.id, [])[:k] for p in todo}
        total = len(probs) * k
        have = sum(min(len(state.stored.get(p.id, [])), k) for p in probs)
    else:
        todo = [p for p in probs if p.id not in state.done]
        prior = state.stored
        total, have = len(probs), len(probs) - len(todo)
    skipped = len(probs) - len(todo)
    if progress:
        progress(Progress(have, total, work.unit))
    count = {"samples": have}

    def on_samples(n: int) -> None:
        count["samples"] += n
        if progress and work.unit == "samples":
            progress(Progress(count["samples"], total, "samples"))

    def on_result(_p: Problem, result: Result | None, out: Outcome) -> None:
        if progress and work.unit == "problems":
            progress(Progress(skipped + out.finished, total, "problems", result))

    writer = Writer(store, run_id, on_samples)
    t0 = time.perf_counter()
    out = ex.run(work.job(), todo, prior, writer, on_result)
    wall = time.perf_counter() - t0
    if not out.failures:
        store.set_run_status(run_id, "done")
    summary = summarize(store, run_id, only={p.id for p in probs}, problems=len(probs))
    summary.finished = skipped + out.finished
    summary.skipped, summary.resumed = skipped, state.resumed
    summary.generated, summary.spent, summary.wall_s = writer.written, writer.written_usage, wall
    summary.failures, summary.worker_deaths, summary.requeued = out.failures, out.worker_deaths, out.requeued
    return summary


def summarize(store: Store, run_id: str, *, only: set[str] | None = None, problems: int | None = None) -> Summary:
    """Where a stored run stands: its results, accuracy and cost, as :func:`execute` reports them."""
    run = store.get_run(run_id)
    if run is None:
        known = ", ".join(r.run_id for r in store.list_runs()) or "none"
        raise ConfigError(f"no run {run_id!r} in {store.path} (runs: {known})")
    results = [r for r in store.results(run_id) if only is None or r["problem_id"] in only]
    graded = [r for r in results if r["correct"] is not None]
    strategy = run.config.get("strategy", {}).get("name", run.kind)
    task = run.config.get("task", {}).get("name", "?")
    return Summary(
        run_id=run_id, kind="sweep" if run.kind == "sweep" else "run", task=task, strategy=strategy,
        model=str(run.model.get("name", "?")), problems=len(results) if problems is None else problems,
        finished=len(results), skipped=0, resumed=False, samples=store.sample_count(run_id), generated=0,
        usage=Usage.total(Usage.from_dict(r["usage"]) for r in results), spent=Usage(), wall_s=0.0,
        graded=len(graded), correct=sum(1 for r in graded if r["correct"]), results=results)

