"""``ttscale run``: solve a task's problems with one strategy and report accuracy and cost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ttscale.backends.base import Backend, ReportsStats
from ttscale.cli.bundle import EngineChoice, RunPlace, SamplingChoice, TaskChoice, bundled
from ttscale.cli.common import cli_errors, console, fail, human, write_json
from ttscale.cli.draft_opts import DraftChoice
from ttscale.cli.plan import print_policy_choices
from ttscale.cli.progress import run_bar
from ttscale.cli.remote_opts import check_kv_engine, kv_capped_engine
from ttscale.cli.run_options import BudgetChoice, PolicyChoice, StrategyChoice
from ttscale.run import Solve, Summary, execute
from ttscale.run.executor import budget_record
from ttscale.store import Store
from ttscale.strategies.base import Strategy
from ttscale.tasks.base import HasChanceAccuracy, ReportsProgress


def print_summary(s: Summary, chance: float | None = None) -> None:
    t = Table(title=f"run {s.run_id}", show_header=False, title_justify="left")
    t.add_column("metric", style="bold")
    t.add_column("value")
    acc = "n/a (no references)" if s.accuracy is None else f"{s.accuracy:.3f} ({s.correct}/{s.graded})"
    u = s.usage
    n = max(s.problems, 1)
    t.add_row("task / strategy / model", f"{s.task} / {s.strategy} / {s.model}")
    t.add_row("accuracy", acc)
    if chance is not None:
        t.add_row("random-guess baseline", f"{chance:.3f} (multiple choice)")
    t.add_row("problems", f"{s.problems}" + (f" ({s.skipped} resumed from the store)" if s.skipped else ""))
    t.add_row("tokens prefilled", f"{u.prefilled_tokens:,} ({u.prefilled_tokens / n:,.0f}/problem)")
    t.add_row("tokens generated", f"{u.generated_tokens:,} ({u.generated_tokens / n:,.0f}/problem)")
    t.add_row("FLOPs", f"{human(u.flops)} ({human(u.flops / n)}/problem)")
    t.add_row("peak KV cache", f"{u.peak_kv_bytes / 2**20:.1f} MiB")
    t.add_row("samples", f"{u.samples:,}")
    t.add_row("wall time", f"{s.wall_s:.1f} s (this invocation)")
    console.print(t)


@cli_errors
@bundled
def run(
    task: TaskChoice,
    strategy: StrategyChoice,
    sampling: SamplingChoice,
    engine: EngineChoice,
    budget: BudgetChoice,
    policy: PolicyChoice,
    draft: DraftChoice,
    place: RunPlace,
    limit: Annotated[Optional[int], typer.Option(help="Solve only the first N problems.")] = 20,
    output: Annotated[Optional[Path], typer.Option(help="Write the JSON summary here (default: runs/<run-id>.json).")] = None,
) -> None:
    """Solve problems with a test-time strategy on a model; print accuracy, tokens, FLOPs and time.

    Every sample is stored in --store as soon as it is generated; rerunning with the
    same --run-id skips finished problems and reuses stored samples.
    """
    if limit is not None and limit < 1:
        fail("--limit must be at least 1")
    policy.check(strategy)
    knobs = {} if policy.policy is not None else strategy.knobs()
    engine.check()
    draft.check(strategy.strategy, knobs, policy.policy is not None, engine.ray)
    draft.take_option(strategy.strategy, knobs, engine.ray)
    kv_policy = policy.kv_level(engine, budget)
    caps = budget.build()
    samp = sampling.build(logprobs=strategy.wants_logprobs(policy.policy is not None))

    kv_fit = kv_capped_engine(engine.backend, engine.model, engine.kv_type, caps.kv_bytes,
                              lambda i: task.build(i).fmt.max_tokens, kv_type_v=engine.kv_type_v,
                              options=engine.args().options)
    specs = engine.specs(kv_fit.options() if kv_fit else None)
    draft_spec = draft.spec(engine, kv_fit.options() if kv_fit else None)
    be = specs[0].build()
    extra_backends: list[Backend] = []  # the draft and a policy's other models: closed with the run
    st: Store | None = None
    try:
        check_kv_engine(kv_fit, be)
        if kv_fit is not None:
            console.print(kv_fit.describe(), highlight=False)
        info = be.model_info()
        t = task.build(info)
        v = strategy.build_verifier(t, be)
        drafter = draft_spec.build() if draft_spec is not None else None
        if drafter is not None:
            extra_backends.append(drafter)
        strat: Strategy
        if policy.policy is not None:
            strat, label = policy.build(kv_policy, info, engine, task, extra_backends), "policy"
        else:
            strat, label = strategy.build(knobs, v, drafter), strategy.strategy
        k = knobs.get("k")
        rid = place.run_id_or(task.task, label + (f"-k{k}" if k else ""), info.name)
        st = Store(place.store)
        with run_bar(f"{label} on {task.task}", place.progress) as bar:
            if isinstance(t, ReportsProgress):  # generated instances take a while
                t.progress = lambda i, n: bar.status(f"loading problems {i}/{n}")
            work = Solve(t, strat, samp, caps)
            probs = st.resumable_problems(rid, work.config(), limit) or t.problems(limit=limit)
            summary = execute(work, store=st, run_id=rid, problems=probs,
                              executor=engine.executor(be, specs), progress=bar)
        for pid, err in summary.failures.items():
            console.print(f"[red]problem {pid} failed (left pending; rerun with --run-id {rid}): {err}")
    finally:
        if st is not None:
            st.close()
        be.close()
        for ob in extra_backends:
            ob.close()
    chance = t.chance_accuracy(probs) if isinstance(t, HasChanceAccuracy) else None
    print_summary(summary, chance)
    if policy.explain:
        print_policy_choices(summary.results)
    if isinstance(be, ReportsStats):  # the HTTP backend: retried failures by kind
        console.print(be.stats_line())
    out = place.summary_path(rid, output)
    data_out = summary.to_dict() | {
        "config": {"task": t.describe(), "strategy": strat.describe(), "sampling": samp.__dict__,
                   "budget": budget_record(caps), "model": info.name},
        "results": summary.results,
        "chance_accuracy": chance,
    }
    if v is not None and v.uses_reference:
        data_out["warning"] = f"verifier {v.name!r} reads the reference answers: an evaluation upper bound"
    write_json(out, data_out)
    console.print(f"summary written to {out}; resume or extend with --run-id {rid}")
