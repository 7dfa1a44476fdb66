"""``ttscale run``: solve a task's problems with one strategy and report accuracy and cost."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ttscale.backends.base import Backend, ReportsStats
from ttscale.cli.common import DEFAULT_STORE, cli_errors, console, fail, human, write_json
from ttscale.cli.options import (
    ApiKeyOpt,
    BackendOpt,
    BaseUrlOpt,
    ConcurrencyOpt,
    DataOpt,
    KvTypeOpt,
    KvTypeVOpt,
    MaxTokensOpt,
    MinPOpt,
    ModelOpt,
    RayAddressOpt,
    RayOpt,
    SeedOpt,
    ShotsOpt,
    StoreOpt,
    StyleOpt,
    SubtaskOpt,
    TaskOpt,
    TaskOptionOpt,
    TaskSeedOpt,
    TemperatureOpt,
    ThreadsOpt,
    TopKOpt,
    TopPOpt,
    WorkersOpt,
    parse_pairs,
    parse_value,
)
from ttscale.cli.plan import print_policy_choices
from ttscale.cli.remote_opts import MAX_KV_BYTES_HELP, backend_specs, check_kv_engine, kv_capped_engine
from ttscale.cost import Budget
from ttscale.distributed import run_parallel
from ttscale.errors import ConfigError
from ttscale.planner.kv_plan import KvPlan, is_kv_plan
from ttscale.planner.policy import Policy
from ttscale.planner.strategy import PolicyStrategy
from ttscale.registry import (
    make_strategy,
    make_task,
    make_verifier,
    strategy_knobs,
    strategy_names,
    strategy_specs,
    verifier_names,
    verifier_specs,
)
from ttscale.runner import RunSummary, solve_problems, summarize
from ttscale.store import Store
from ttscale.strategies.base import Strategy
from ttscale.tasks.base import HasChanceAccuracy, ReportsProgress, Task
from ttscale.types import ModelInfo, Result, Sampling, precision_label, split_precision


def print_summary(s: RunSummary, chance: float | None = None) -> None:
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
def run(
    task: TaskOpt = "gsm-symbolic",
    strategy: Annotated[str, typer.Option("--strategy", "-s", help=f"Strategy: {', '.join(strategy_names())}.")] = "self-consistency",
    k: Annotated[Optional[int], typer.Option("-k", "--k", help="Samples per problem for voting / best-of-n.")] = None,
    verifier: Annotated[Optional[str], typer.Option(help=f"Verifier for best-of-n and search: {', '.join(verifier_names())}.")] = None,
    model: ModelOpt = "smollm2-135m",
    limit: Annotated[Optional[int], typer.Option(help="Solve only the first N problems.")] = 20,
    style: StyleOpt = None,
    shots: ShotsOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = 0.8,
    top_p: TopPOpt = 1.0,
    top_k: TopKOpt = 0,
    min_p: MinPOpt = 0.0,
    seed: SeedOpt = 0,
    task_seed: TaskSeedOpt = None,
    subtask: SubtaskOpt = None,
    data: DataOpt = None,
    task_option: TaskOptionOpt = None,
    max_tokens_per_problem: Annotated[Optional[int], typer.Option(help="Hard cap on processed tokens (prefilled + generated) per problem.")] = None,
    max_flops_per_problem: Annotated[Optional[float], typer.Option(help="Hard cap on forward FLOPs per problem.")] = None,
    max_kv_bytes: Annotated[Optional[int], typer.Option(help=MAX_KV_BYTES_HELP)] = None,
    store: StoreOpt = DEFAULT_STORE,
    run_id: Annotated[Optional[str], typer.Option(help="Name of the run; an existing id resumes that run.")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Write the JSON summary here (default: runs/<run-id>.json).")] = None,
    threads: ThreadsOpt = None,
    kv_type: KvTypeOpt = "f16",
    kv_type_v: KvTypeVOpt = None,
    backend: BackendOpt = "llama-cpp",
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    concurrency: ConcurrencyOpt = 8,
    workers: WorkersOpt = 1,
    ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    beam_width: Annotated[Optional[int], typer.Option(help="beam/dvts/best-first: M, continuations per path per step.")] = None,
    m: Annotated[Optional[int], typer.Option("--m", help="short-m@k: vote over the first m samples to finish.")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="adaptive-consistency: stop at this posterior confidence.")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="A strategy option as key=value (repeatable): any option the strategy's record declares, e.g. a plugin strategy's own; `ttscale tasks` lists them.")] = None,
    batch: Annotated[Optional[int], typer.Option(help="adaptive-consistency: samples started per wave (default: as many as the backend runs in parallel, up to -k; 1 = one at a time).")] = None,
    rule: Annotated[Optional[str], typer.Option(help="adaptive-consistency stopping rule: beta or dirichlet.")] = None,
    temperature_pf: Annotated[Optional[float], typer.Option(help="particle-filter: softmax temperature over scores.")] = None,
    aggregate: Annotated[Optional[str], typer.Option(help="Search: step-score aggregate (last, min, prod, mean).")] = None,
    step_tokens: Annotated[Optional[int], typer.Option(help="Search: cap on tokens per step.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Search: a path is finished after this many steps.")] = None,
    verifier_url: Annotated[Optional[str], typer.Option(help="remote-rm: base URL of a vLLM pooling server.")] = None,
    verifications: Annotated[Optional[int], typer.Option(help="judge: verification chains per candidate (V).")] = None,
    rollouts: Annotated[Optional[int], typer.Option(help="rollout verifier: rollouts per partial solution.")] = None,
    logprobs: Annotated[Optional[bool], typer.Option("--logprobs/--no-logprobs", help="Ask the engine for every token's log-prob and store it. Default: only when the strategy or verifier reads them (deepconf, certainty, --policy); on llama-server with full-vocabulary sampling they cost decode time (docs/remote.md). Turn on to keep them for later replay.")] = None,
    policy: Annotated[Optional[Path], typer.Option(help="Apply a policy from `ttscale plan` instead of --strategy (needs --budget-tokens, or --budget-gflops for a policy planned with --budget-unit gflops).")] = None,
    budget_tokens: Annotated[Optional[float], typer.Option(help="--policy: mean processed tokens per problem; selects the policy's budget level.")] = None,
    budget_gflops: Annotated[Optional[float], typer.Option(help="--policy planned in GFLOPs (`ttscale plan --budget-unit gflops`): mean GFLOPs per problem; selects the level.")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="--policy: print what the policy saw and chose for each problem.")] = False,
) -> None:
    """Solve problems with a test-time strategy on a model; print accuracy, tokens, FLOPs and time.

    Every sample is stored in --store as soon as it is generated; rerunning with the
    same --run-id skips finished problems and reuses stored samples.
    """
    if limit is not None and limit < 1:
        fail("--limit must be at least 1")
    if budget_tokens is not None and budget_gflops is not None:
        fail("give one policy budget: --budget-tokens or --budget-gflops")
    if policy is not None and budget_tokens is None and budget_gflops is None:
        fail("--policy needs --budget-tokens (mean tokens per problem) or --budget-gflops")
    if policy is None and (budget_tokens is not None or budget_gflops is not None or explain):
        fail("--budget-tokens, --budget-gflops and --explain go with --policy")
    budget_unit = "gflops" if budget_gflops is not None else "tokens"
    if budget_gflops is not None:
        budget_tokens = budget_gflops  # the policy's level is chosen by this number, in its own unit
    if policy is not None and (k is not None or verifier is not None):
        fail("--policy chooses the strategy and k itself: drop -k / --verifier")
    if strategy not in strategy_names():
        fail(f"unknown strategy {strategy!r}; available: {', '.join(strategy_names())}")
    knobs = strategy_knobs(strategy)
    if k is not None and "k" not in knobs:
        fail(f"strategy {strategy!r} takes no -k")
    if verifier is not None and "verifier" not in knobs:
        fail(f"strategy {strategy!r} takes no --verifier")
    extra_knobs: dict[str, Any] = {"beam_width": beam_width, "m": m, "threshold": threshold, "batch": batch, "rule": rule,
                   "pf_temperature": temperature_pf, "aggregate": aggregate, "step_tokens": step_tokens,
                   "max_steps": max_steps}
    for item in option or []:  # --option key=value: any option of the strategy's record (plugins too)
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            fail(f"--option takes key=value, got {item!r}")
        if key not in knobs or key == "verifier":
            fail(f"strategy {strategy!r} takes no option {key!r}; it takes: {', '.join(knobs) or 'none'}")
        if key == "k":
            if k is not None:
                fail("give k once: -k or -o k=...")
            value = parse_value(raw)
            if not isinstance(value, int) or isinstance(value, bool):
                fail(f"-o k= needs an integer, got {raw!r}")
            else:
                k = value
            continue
        extra_knobs[key] = parse_value(raw)
    for knob, value in extra_knobs.items():
        if value is not None and knob not in knobs:
            flag = "--temperature-pf" if knob == "pf_temperature" else "--" + knob.replace("_", "-")
            fail(f"strategy {strategy!r} takes no {flag}")
    if data is not None and task != "jsonl":
        fail("--data is only for --task jsonl")
    kv_policy: Policy | None = None
    if policy is not None and is_kv_plan(policy):  # a KV plan: the level's precision and its policy
        kv_plan = KvPlan.load(policy)
        if kv_plan.budget_unit != budget_unit:
            fail(f"the KV plan's levels are in {kv_plan.budget_unit} per problem: pass --budget-{kv_plan.budget_unit}")
        chosen, kv_policy, _ = kv_plan.level_for(float(budget_tokens or 0))
        if chosen != precision_label(kv_type, kv_type_v or kv_type):
            k_type, v_type = split_precision(chosen)
            flags = f"--kv-type {k_type}" + (f" --kv-type-v {v_type}" if v_type != k_type else "")
            fail(f"the KV plan runs {budget_tokens:g} {budget_unit}/problem at {chosen}: pass {flags}")
        max_kv_bytes = kv_plan.cap_bytes if max_kv_bytes is None else max_kv_bytes
    budget = Budget(tokens=max_tokens_per_problem, flops=max_flops_per_problem, kv_bytes=max_kv_bytes)
    if logprobs is None:  # only when something in the run reads them
        logprobs = (policy is not None or (strategy in strategy_specs() and strategy_specs()[strategy].uses_logprobs)
                    or (verifier is not None and verifier in verifier_specs() and verifier_specs()[verifier].uses_logprobs))
    sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, seed=seed, logprobs=logprobs)

    if workers < 1:
        fail("--workers must be at least 1")

    def task_for(model: ModelInfo, fmt_style: str | None) -> Task:
        return make_task(task, style=fmt_style, shots=shots, max_tokens=max_tokens, seed=task_seed, subtask=subtask,
                         data=str(data) if data else None, chat_model=model.has_chat_template, model=model.name,
                         options=parse_pairs(task_option, "--task-option"))

    kv_fit = kv_capped_engine(backend, model, kv_type, max_kv_bytes, lambda i: task_for(i, style).fmt.max_tokens,
                              kv_type_v=kv_type_v)
    specs = backend_specs(backend, model, base_url, api_key, concurrency, threads, kv_type,
                          kv_fit.options() if kv_fit else None, kv_type_v)
    be = specs[0].build()
    check_kv_engine(kv_fit, be)
    if kv_fit is not None:
        console.print(kv_fit.describe(), highlight=False)
    info = be.model_info()

    t = task_for(info, style)
    if t.fmt.style == "chat" and not info.has_chat_template:
        raise ConfigError(f"model {info.name} has no chat template: use --style completion")
    v = (make_verifier(verifier, t, be, url=verifier_url, verifications=verifications, rollouts=rollouts)
         if verifier else None)
    strat: Strategy
    extra_backends: list[Backend] = []
    if policy is not None:
        pol = kv_policy or Policy.load(policy)
        if pol.budget_unit != budget_unit:
            fail(f"the policy's levels are in {pol.budget_unit} per problem: pass --budget-{pol.budget_unit}")
        fitted_on = pol.primary_model
        if fitted_on and info.name not in fitted_on and fitted_on not in info.name:
            console.print(f"[yellow]warning:[/] the policy was fitted on {fitted_on}, this run uses {info.name}")
        alternates: dict[str, tuple[Backend, Task]] = {}
        for other in pol.models(pol.level_for(float(budget_tokens or 0))):
            if ray:
                fail(f"this policy level switches to {other}: run it without --ray")
            ob = backend_specs(backend, other, base_url, api_key, concurrency, threads)[0].build()
            extra_backends.append(ob)
            oi = ob.model_info()
            # a base model gets its default (completion) format even when --style chat was asked for
            alternates[other] = (ob, task_for(oi, style if oi.has_chat_template else None))
        strat, strategy = PolicyStrategy(pol, float(budget_tokens or 0), alternates), "policy"
    else:
        strat = make_strategy(strategy, k=k, verifier=v, **extra_knobs)
    rid = run_id or f"{task}-{strategy}{'-k' + str(k) if k else ''}-{info.name}-{time.strftime('%Y%m%d-%H%M%S')}"

    st = Store(store)
    try:
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("acc {task.fields[acc]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, disable=not progress, transient=False,
        ) as bar:
            gen_job = None
            if isinstance(t, ReportsProgress):  # generated instances take a while
                gen_job = bar.add_task("loading problems", total=None, acc="-")
                t.progress = lambda i, n: bar.update(gen_job, completed=i, total=n)
            probs = t.problems(limit=limit)
            if gen_job is not None:
                bar.remove_task(gen_job)
            job = bar.add_task(f"{strategy} on {task}", total=len(probs), acc="-")
            seen = {"n": 0, "ok": 0}

            def on_progress(i: int, total: int, result: Result | None) -> None:
                if result is not None and result.correct is not None:
                    seen["n"] += 1
                    seen["ok"] += int(result.correct)
                acc = f"{seen['ok'] / seen['n']:.2f}" if seen["n"] else "-"
                bar.update(job, completed=i, acc=acc)

            if ray or workers > 1:  # problems in flight at once: threads on one backend, or Ray workers
                par = run_parallel(task=t, strategy=strat, store=st, run_id=rid, problems=probs, sampling=sampling,
                                   budget=budget, workers=workers, mode="ray" if ray else "threads",
                                   backend=None if ray else be, backend_specs=specs, ray_address=ray_address,
                                   progress=lambda i, n: bar.update(job, completed=i))
                summary = summarize(st, rid, task, strategy, info.name, skipped=par.skipped,
                                    wall_s=par.wall_s, only={p.id for p in probs})
                for pid, err in par.failures.items():
                    console.print(f"[red]problem {pid} failed (left pending; rerun with --run-id {rid}): {err}")
            else:
                summary = solve_problems(task=t, strategy=strat, backend=be, store=st, run_id=rid, problems=probs,
                                         sampling=sampling, budget=budget, progress=on_progress)
    finally:
        st.close()
        be.close()
        for ob in extra_backends:
            ob.close()
    chance = t.chance_accuracy(probs) if isinstance(t, HasChanceAccuracy) else None
    print_summary(summary, chance)
    if explain:
        print_policy_choices(summary.results)
    if isinstance(be, ReportsStats):  # the HTTP backend: retried failures by kind
        console.print(be.stats_line())
    out = output or store.parent / f"{rid}.json"
    data_out = summary.to_dict() | {
        "config": {"task": t.describe(), "strategy": strat.describe(), "sampling": sampling.__dict__,
                   "budget": budget.__dict__, "model": info.name},
        "results": summary.results,
        "chance_accuracy": chance,
    }
    if v is not None and v.uses_reference:
        data_out["warning"] = f"verifier {v.name!r} reads the reference answers: an evaluation upper bound"
    write_json(out, data_out)
    console.print(f"summary written to {out}; resume or extend with --run-id {rid}")
