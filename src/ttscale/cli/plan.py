"""``ttscale plan``: fit a compute-optimal policy on a pool and evaluate it on held-out problems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ttscale.cli.common import DEFAULT_STORE, cli_errors, console, fail
from ttscale.cli.plan_kv import KV_POOL_HELP, MAX_KV_HELP, SHARED_HELP, plan_kv
from ttscale.planner.data import BUDGET_UNITS, PlanPool, align_alternate, in_budget_unit, load_plan_pool
from ttscale.planner.evaluate import evaluate_policy, split_problems
from ttscale.planner.policy import Policy, fit_policy
from ttscale.pools import resolve_store
from ttscale.store import Store


def _fmt_pt(p: dict[str, Any] | None, unit: str = "tok") -> str:
    return "-" if p is None else f"{p['strategy']}@{p['k']} {p['accuracy']:.3f} ({p['tokens']:.0f} {unit})"


def print_policy(policy: Policy) -> None:
    t = Table(title="policy (fitted on the training split)", title_justify="left")
    unit = "tok" if policy.budget_unit == "tokens" else policy.budget_unit
    for col in (f"budget {unit}/problem", "probe", "choice per bin (low -> high predicted pass rate)", "train acc", f"train {unit}"):
        t.add_column(col)
    for lv in policy.levels:
        t.add_row(f"{lv.budget:.0f}", str(lv.probe), ", ".join(b.choice.label for b in lv.bins),
                  f"{lv.expected_accuracy:.3f}", f"{lv.expected_tokens:.{0 if unit == 'tok' else 1}f}")
    console.print(t)


def print_evaluation(ev: dict[str, Any], title: str, unit: str = "tok") -> None:
    """``unit``: what the costs count (``tok``, or ``gflops`` for a policy planned in GFLOPs)."""
    ref = ev["reference"]
    n, fams = len(ev["test_problems"]), ev.get("test_families")
    held = f"{n} held-out problems" + (f" ({fams} families, resampled whole)" if fams and fams < n else "")
    t = Table(title=f"{title}: {held}; reference {ref['label']} "
                    f"{ref['accuracy']:.3f} [{ref['ci'][0]:.3f}, {ref['ci'][1]:.3f}] at {ref['tokens']:.0f} {unit}",
              title_justify="left")
    within = "tokens" if unit == "tok" else unit
    for col in ("budget", "policy acc [95% CI]", f"policy {unit}", f"best fixed within {within}",
                f"majority within {within}", f"best-of-n within {within}"):
        t.add_column(col)
    for r in ev["levels"]:
        t.add_row(f"{r['budget_tokens']:.0f}", f"{r['accuracy']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]",
                  f"{r['tokens']:.0f}", _fmt_pt(r["best_fixed_within_tokens"], unit),
                  _fmt_pt(r["majority_within_tokens"], unit), _fmt_pt(r["best_of_n_within_tokens"], unit))
    console.print(t)
    frac, fixed = ev["token_fraction"], ev["fixed_token_fraction"]
    point = ev["token_fraction_point"]
    console.print(f"policy reaches {ref['label']}'s accuracy within its CI with "
                  + (f"{frac:.1%} of its {within}" if frac is not None else "no level")
                  + (f" (its point accuracy with {point:.1%})" if point is not None else " (its point accuracy: no level)")
                  + "; best fixed strategy: "
                  + (f"{fixed:.1%} ({_fmt_pt(ev['cheapest_fixed_reaching_reference'], unit)})" if fixed is not None else "none"))


@cli_errors
def plan(
    pool: Annotated[list[str], typer.Option(help="Run id of a stored pool (a sweep); repeat to merge a mixed workload.")],
    budget: Annotated[Optional[list[float]], typer.Option(help="Budget level: mean processed tokens (or GFLOPs, --budget-unit) per problem, probe included (repeatable; default: 10%-100% of majority@K's).")] = None,
    budget_unit: Annotated[str, typer.Option(help="What budget levels count: 'tokens' (processed: prefill + generated) or 'gflops' (the meter's model FLOPs, which price a long prompt and a bigger model as they cost). Apply a gflops policy with `ttscale run --budget-gflops`.")] = "tokens",
    probe: Annotated[Optional[list[int]], typer.Option(help="Probe size p to consider (repeatable; default 1, 2, 4).")] = None,
    bins: Annotated[int, typer.Option(help="Difficulty bins (by predicted pass rate).")] = 4,
    test_fraction: Annotated[float, typer.Option(help="Share of each pool's problems held out for evaluation.")] = 0.5,
    no_split: Annotated[bool, typer.Option("--no-split", help="Fit on every problem of --pool (evaluate only on --eval-pool).")] = False,
    eval_pool: Annotated[Optional[list[str]], typer.Option(help="Another pool to evaluate on, e.g. GSM-Symbolic instances of another seed (repeatable).")] = None,
    alt_pool: Annotated[Optional[list[str]], typer.Option(help="Another model's pool of the same problems, one per --pool in the same order (repeatable; several models allowed): the policy may switch to that model after the probe.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and of the replay orderings.")] = 0,
    orders: Annotated[int, typer.Option(help="Random sample orderings per problem in replay.")] = 64,
    k: Annotated[Optional[int], typer.Option("-k", "--k", help="Use the first K samples of each problem (default: all).")] = None,
    store: Annotated[Path, typer.Option(help="SQLite file holding the pools.")] = DEFAULT_STORE,
    output: Annotated[Path, typer.Option(help="Where to write the policy JSON (with its evidence and evaluation).")] = Path("policy.json"),
    kv_pool: Annotated[Optional[list[str]], typer.Option(help=KV_POOL_HELP)] = None,
    max_kv_bytes: Annotated[Optional[int], typer.Option(help=MAX_KV_HELP)] = None,
    kv_shared_prompt: Annotated[bool, typer.Option("--kv-shared-prompt", help=SHARED_HELP)] = False,
    compare: Annotated[bool, typer.Option("--compare/--no-compare", help="Compare every level with the best fixed choice (rule and k selected on the training split) on the held-out problems, paired bootstrap interval of the difference, and record per level what `ttscale serve --policy` answers with: the per-prompt policy only where it is shown better.")] = True,
    hardware: Annotated[Optional[list[str]], typer.Option(help="Also compare per dollar budget on this hardware profile (repeatable; default h100 and cpu-2core; 'none' for tokens only).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap draws of the paired intervals.", min=100)] = 2000,
    compare_output: Annotated[Optional[Path], typer.Option(help="Also write the comparison alone to this JSON file.")] = None,
    budget_usd: Annotated[Optional[float], typer.Option(help="Answer for this many dollars per problem on each --hardware profile: the best fixed choice and the richest policy level within it (chosen on the training split), with their held-out accuracy.", min=0.0)] = None,
    budget_seconds: Annotated[Optional[float], typer.Option(help="The same for this many seconds per problem as each --hardware profile would take.", min=0.0)] = None,
) -> None:
    """Fit which strategy and how many samples to use per difficulty bin and budget; check it on held-out problems.

    The policy is fitted on one split of the pool's problems and evaluated on the other
    (never on what it was fitted on), against majority voting, best-of-N and every other
    fixed strategy replayed on the same held-out problems. Apply it with
    `ttscale run --policy policy.json --budget-tokens B`.
    """
    if not 0 < test_fraction < 1:
        fail("--test-fraction must be between 0 and 1")
    if no_split and not eval_pool:
        fail("--no-split needs --eval-pool: a policy must be evaluated on problems it was not fitted on")
    if bins < 1 or orders < 1:
        fail("--bins and --orders must be at least 1")
    if budget_unit not in BUDGET_UNITS:
        fail(f"--budget-unit must be one of {', '.join(BUDGET_UNITS)}")
    if budget_usd is not None and budget_seconds is not None:
        fail("give one priced budget: --budget-usd or --budget-seconds")
    priced = budget_usd is not None or budget_seconds is not None
    if priced and not compare:
        fail("--budget-usd / --budget-seconds answer from the comparison: drop --no-compare")
    if priced and not [h for h in hardware or () if h != "none"]:
        fail("--budget-usd / --budget-seconds are priced on a hardware profile: add --hardware (e.g. h100)")
    store = resolve_store(store)
    if not store.exists():
        fail(f"store {store} does not exist (make a pool with `ttscale sweep` first)")
    if kv_pool and max_kv_bytes is None:
        fail("--kv-pool needs --max-kv-bytes: without a memory cap every precision allows every k")
    if max_kv_bytes is not None:
        if alt_pool or eval_pool or no_split:
            fail("--max-kv-bytes plans on the held-out split of --pool: drop --alt-pool / --eval-pool / --no-split")
        plan_kv(store=store, pool=pool, kv_pool=kv_pool or [], cap=max_kv_bytes, shared_prompt=kv_shared_prompt,
                budget=budget, probe=probe, bins=bins, test_fraction=test_fraction, seed=seed, orders=orders, k=k,
                output=output, unit=budget_unit)
        return
    st = Store(store)
    try:
        pp = load_plan_pool(st, pool, k)
        by_model: dict[str, list[str]] = {}
        for rid in alt_pool or []:
            rec = st.get_run(rid)
            name = str(rec.model.get("name", "")) if rec is not None else ""
            by_model.setdefault(name or rid, []).append(rid)
        for model, runs in by_model.items():
            if model == pp.pool.model:
                fail(f"--alt-pool {runs[0]} is from the primary model {model}: give another model's pools")
            pp = align_alternate(pp, load_plan_pool(st, runs, pp.pool.k), model)
        evals = {name: in_budget_unit(load_plan_pool(st, [name], pp.pool.k), budget_unit) for name in (eval_pool or [])}
        pp = in_budget_unit(pp, budget_unit)
    finally:
        st.close()
    if eval_pool and pp.alts:
        fail("--eval-pool cannot be combined with --alt-pool (the other model's pool of those problems is unknown)")
    if no_split:
        train_ids, test_ids = list(pp.problem_ids), []
    else:
        split = split_problems(pp.problem_ids, pp.group, test_fraction=test_fraction, seed=seed,
                               families=pp.families)
        train_ids, test_ids = list(split.train), list(split.test)
    train = pp.subset(train_ids)
    source = {"pools": list(pool), "alternate_pools": list(alt_pool or []), "store": str(store),
              "model": pp.pool.model, "task": pp.pool.task, "budget_unit": budget_unit,
              "train_problems": train_ids, "test_problems": test_ids}
    policy = fit_policy(train, budget, probes=probe or (1, 2, 4), n_bins=bins, n_orders=orders, seed=seed,
                        source=source)
    print_policy(policy)
    unit = "tok" if budget_unit == "tokens" else budget_unit
    evaluation: dict[str, Any] = {}
    if test_ids:
        evaluation["held_out_split"] = evaluate_policy(policy, pp.subset(test_ids), n_orders=orders, seed=seed)
        print_evaluation(evaluation["held_out_split"], "held-out split", unit)
    for name, ep in evals.items():
        evaluation[name] = evaluate_policy(policy, ep, n_orders=orders, seed=seed)
        print_evaluation(evaluation[name], f"pool {name}", unit)
    if compare:
        where = "held-out split" if test_ids else next(iter(evals), None)
        if where is None:
            fail("--compare needs held-out problems")
        test = pp.subset(test_ids) if test_ids else evals[str(where)]
        evaluation["versus_fixed"] = compare_levels(policy, train, test, store=store, run_id=pool[0], orders=orders,
                                                    seed=seed, n_boot=bootstrap, hardware=hardware, where=str(where),
                                                    budget_usd=budget_usd, budget_seconds=budget_seconds)
        print_serving(policy)
        if compare_output is not None:
            compare_output.parent.mkdir(parents=True, exist_ok=True)
            compare_output.write_text(json.dumps(evaluation["versus_fixed"], indent=2) + "\n")
    policy.evaluation = evaluation
    policy.save(output)
    console.print(f"policy written to {output}; apply with: ttscale run --policy {output} --budget-{budget_unit} B")


DEFAULT_HARDWARE = ("h100", "cpu-2core")


def compare_levels(policy: Policy, train: PlanPool, test: PlanPool, *, store: Path, run_id: str, orders: int, seed: int,
                   n_boot: int, hardware: list[str] | None, where: str, budget_usd: float | None = None,
                   budget_seconds: float | None = None) -> dict[str, Any]:
    """The policy against the best fixed choice per budget (tokens, and dollars per machine), printed,
    with each level's serving decision recorded in ``policy``."""
    from ttscale.planner.compare import apply_decisions, compare_policy
    from ttscale.replay.pool import model_info_from_record
    from ttscale.roofline import load_profile

    names = [h for h in (hardware if hardware is not None else DEFAULT_HARDWARE) if h != "none"]
    info = None
    if names:
        if policy.budget_unit != "tokens" or policy.models():
            console.print("[yellow]dollar comparison skipped: it needs a one-model policy planned in tokens[/]")
            names = []
        else:
            st = Store(store)
            try:
                rec = st.get_run(run_id)
            finally:
                st.close()
            info = model_info_from_record(rec.model) if rec is not None else None
            if info is None:
                console.print(f"[yellow]dollar comparison skipped: run {run_id} records no model shapes[/]")
                names = []
    profiles = [load_profile(n) for n in names]
    at_usd = None
    if budget_usd is not None or budget_seconds is not None:
        at_usd = {hw.name: budget_usd if budget_usd is not None else hw.usd(float(budget_seconds or 0))
                  for hw in profiles}
    cmp = compare_policy(policy, train, test, n_orders=orders, seed=seed, n_boot=n_boot, info=info,
                         hardware=profiles, at_usd=at_usd)
    apply_decisions(policy, cmp, where=where)
    cmp["on"] = where
    print_comparison(cmp)
    for name, ans in cmp.get("at_budget", {}).items():
        print_at_budget(name, ans)
    return cmp


def print_at_budget(profile: str, ans: dict[str, Any]) -> None:
    """One paragraph: what the asked dollars buy on ``profile``."""
    head = f"[bold]${ans['usd'] * 1000:.4f} per 1,000 problems on {profile}[/]: "
    fx, pol = ans["fixed"], ans["policy"]
    parts = [f"best fixed choice {fx['label']} (held-out accuracy {fx['test_accuracy']:.3f} at "
             f"${fx['test_usd'] * 1000:.4f})" if fx else "no fixed choice fits"]
    parts.append(f"richest policy level {pol['level_budget_tokens']:.0f} tok (held-out {pol['test_accuracy']:.3f} at "
                 f"${pol['test_usd'] * 1000:.4f})" if pol else "no policy level fits")
    if ans["paired"]:
        lo, hi = ans["paired"]["difference_ci"]
        parts.append(f"policy - fixed {ans['paired']['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    console.print(head + "; ".join(parts), highlight=False)


def _fmt_ci(pr: dict[str, Any], key: str) -> str:
    lo, hi = pr[f"{key}_ci"]
    return f"{pr[key]:+.3f} [{lo:+.3f}, {hi:+.3f}]" if key == "difference" else f"{pr[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def _fmt_fixed(r: dict[str, Any], scale: float, fmt: str) -> str:
    fx = r["fixed"]
    if not fx:
        return "none fits"
    cell = f"{fx['label']} ({fx['train_accuracy']:.3f})"
    within = r.get("fixed_budget", r["budget"])
    # the policy spent more than its budget on the held-out problems: the fixed choice may spend that much
    return cell + (f" within {fmt.format(within * scale)}" if within > r["budget"] else "")


def print_comparison(cmp: dict[str, Any]) -> None:
    unit = "tok" if cmp["unit"] == "tokens" else cmp["unit"]
    tables = [("tokens", f"budget {unit}/problem", cmp["tokens"], 1.0, "{:.0f}")]
    tables += [(hw, "budget $/1k problems", rows, 1000.0, "{:.4f}") for hw, rows in cmp["usd"].items()]
    for name, head, rows, scale, fmt in tables:
        t = Table(title=f"per-prompt policy vs the best fixed choice ({name}; fixed chosen on {cmp['train_problems']} "
                        f"training problems, compared on {cmp['test_problems']} held-out, paired 95% bootstrap)",
                  title_justify="left")
        for col in (head, "level", "policy acc [CI]", "policy cost", "fixed (train acc)", "fixed acc [CI]",
                    "fixed cost", "policy - fixed [CI]", "verdict"):
            t.add_column(col)
        for r in rows:
            pr, fx = r["paired"], r["fixed"]
            t.add_row(fmt.format(r["budget"] * scale), f"{r['level_budget_tokens']:.0f}",
                      _fmt_ci(pr, "policy") if pr else f"{r['policy_accuracy']:.3f}", fmt.format(r["policy_cost"] * scale),
                      _fmt_fixed(r, scale, fmt),
                      _fmt_ci(pr, "fixed") if pr else "-", fmt.format(r["fixed_cost"] * scale) if fx else "-",
                      _fmt_ci(pr, "difference") if pr else "-", pr["verdict"] if pr else "-")
        console.print(t)


def print_serving(policy: Policy) -> None:
    """What `ttscale serve --policy` answers with at each level (the comparison's decision)."""
    for lv in policy.levels:
        if lv.fixed is None:
            console.print(f"level {lv.budget:g}: the per-prompt policy (no comparison recorded)")
        else:
            why = lv.decision
            vs = why.get("compared_with", lv.fixed.label)
            console.print(f"level {lv.budget:g}: serves {'the per-prompt policy' if lv.serve == 'policy' else lv.fixed.label} "
                          f"(policy - {vs} = {why.get('difference', 0):+.3f} {why.get('difference_ci')})",
                          highlight=False)


def print_policy_choices(results: list[dict[str, Any]]) -> None:
    """One line per problem: what the policy's probe saw and what it chose (``ttscale run --explain``)."""
    console.print("[bold]policy choices[/] (probe features -> predicted pass rate -> bin -> choice)")
    for r in results:
        pm = (r.get("meta") or {}).get("policy")
        if not pm:
            continue
        ok = {True: "correct", False: "wrong", None: "ungraded"}[r["correct"]]
        if pm.get("served") == "fixed":  # the level's best fixed choice: no probe, nothing per prompt
            console.print(f"{r['problem_id']}: fixed choice {pm['choice']} (the plan found the per-prompt policy no "
                          f"better at this budget); {len(r['samples'])} samples, {r['usage'].get('total_tokens', 0)} "
                          f"tokens; answer {r['answer']} ({ok})", highlight=False, soft_wrap=True)
            continue
        f = pm["features"]
        console.print(
            f"{r['problem_id']}: probe {pm['probe']} agreement {f['agreement']:.2f} entropy {f['entropy']:.2f} "
            f"mean-logprob {f['mean_logprob']:.2f} -> pass {pm['predicted_pass_rate']:.2f} -> bin {pm['bin']} -> "
            f"{pm['choice']}; {len(r['samples'])} samples, {r['usage'].get('total_tokens', 0)} tokens; "
            f"answer {r['answer']} ({ok})", highlight=False, soft_wrap=True)
