"""The executor's Ray mode: one actor per worker, each with its own backend (see :class:`Executor`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ttscale.errors import ConfigError, TtscaleError
from ttscale.types import Problem, Result, Sample

if TYPE_CHECKING:
    from ttscale.run.executor import BackendSpec, Executor, Job, OnResult, Outcome, Writer


def run_on_ray(ex: Executor, job: Job, todo: list[Problem], stored: dict[str, list[Sample]], writer: Writer,
               out: Outcome, on_result: OnResult | None) -> None:
    try:
        import ray
        from ray.exceptions import RayActorError
    except ImportError as e:
        raise ConfigError("Ray is not installed: pip install 'ttscale[ray]'") from e
    from ttscale.run.executor import default_ray_cpus

    if not ray.is_initialized():
        if ex.ray_address:
            ray.init(address=ex.ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=default_ray_cpus(ex.workers), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)

    @ray.remote(num_cpus=1, max_restarts=0)
    class SolveWorker:
        def __init__(self, spec: BackendSpec, job: Job) -> None:
            self.backend = spec.build()
            self.job = job

        def solve(self, problem: Problem, prior: list[Sample]) -> tuple[list[Sample], Result]:
            return self.job.solve(self.backend, problem, prior, None)

    specs = list(ex.backend_specs)
    job_ref = ray.put(job)
    spawned = 0

    def spawn() -> Any:
        nonlocal spawned
        spec = specs[spawned % len(specs)]  # round-robin over endpoints / model specs
        spawned += 1
        return SolveWorker.remote(spec, job_ref)  # type: ignore[attr-defined]

    idle = [spawn() for _ in range(min(ex.workers, len(todo)))]
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
            result: Result | None = None
            try:
                samples, result = ray.get(ref)
            except RayActorError:
                out.worker_deaths += 1
                out.requeued += 1
                pending.insert(0, p)  # nothing of it was written: solve it again from the stored samples
                if restarts < ex.max_worker_restarts:
                    restarts += 1
                    idle.append(spawn())
                elif not running and not idle:
                    raise TtscaleError(f"all Ray workers died ({out.worker_deaths} deaths)") from None
                continue
            except ray.exceptions.RayTaskError as e:
                out.failures[p.id] = str(e.cause if getattr(e, "cause", None) else e).splitlines()[0]
                idle.append(actor)
            else:
                prior = {s.index for s in stored.get(p.id, [])}
                writer.samples(p.id, [s for s in samples if s.index not in prior])
                writer.finish(samples, result)
                out.finished += 1
                idle.append(actor)
            if on_result is not None:
                on_result(p, result, out)
    finally:
        for actor in idle + [a for a, _ in running.values()]:
            ray.kill(actor)
