"""``ttscale plan --kv-pool TYPE=RUN --max-kv-bytes CAP``: the KV precision as one more planner choice."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from ttscale.cli.common import console
from ttscale.planner.data import in_budget_unit
from ttscale.planner.evaluate import split_problems
from ttscale.planner.kv_plan import KvPool, evaluate_kv_plan, fit_kv_plan
from ttscale.planner.kv_pools import load_kv_pools
from ttscale.store import Store

KV_POOL_HELP = ("A pool of the same problems at another KV-cache precision (`ttscale sweep --kv-type TYPE`) or with a KV press "
                "(`--backend transformers --kv-press NAME --kv-compression R`, labelled f32+NAME@R), as "
                "TYPE=RUN or RUN (type from the run's record); one per --pool, in the same order (repeatable). "
                "With --max-kv-bytes the policy chooses the precision too.")
MAX_KV_HELP = ("Memory cap in KV-cache bytes: a choice of k samples is feasible only if they fit it together "
               "(k x (longest prompt + max generation) cells at the precision's real size); per budget level the "
               "precision whose feasible choices do best on the training problems wins. Writes a KV plan.")
SHARED_HELP = ("--max-kv-bytes: count the prompt once for k samples (prompt + k x generation), as the embedded "
               "engine and the meter do; default: each sample its own prompt (llama-server slots, HTTP engines).")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def print_kv_plan(precisions: dict[str, dict[str, Any]], evaluation: dict[str, Any], unit: str = "tokens") -> None:
    t = Table(title=f"KV precisions under a cap of {evaluation['cap_bytes']:,} bytes", title_justify="left")
    for col in ("precision", "bytes / cell", "longest prompt + gen", "max parallel k", "peak bytes at that k"):
        t.add_column(col)
    for kind, p in precisions.items():
        t.add_row(kind, f"{p['bytes_per_cell']:,.0f}", f"{p['longest_prompt']:.0f} + {p['max_gen']}",
                  f"{p['max_k']} (cap alone: {p['max_k_under_cap']})", f"{p['peak_bytes_at_max_k']:,}")
    console.print(t)
    ref = evaluation["reference"]
    t = Table(title="held-out accuracy per budget level (fitted on the training split)", title_justify="left")
    short = "tok" if unit == "tokens" else unit
    for col in (f"budget {short}/problem", "chosen", "k", "held-out acc", f"{ref} only", "gain", unit):
        t.add_column(col)
    for r in evaluation["levels"]:
        chosen = r["held_out"].get(r["kv_type"], {})
        gain = r["gain_over_reference"]
        t.add_row(f"{r['budget_tokens']:.0f}", r["kv_type"], str(chosen.get("k", "-")), _pct(r["accuracy"]),
                  _pct(r["reference_accuracy"]), "-" if gain is None else f"{gain:+.3f}",
                  f"{chosen.get('tokens', 0):.{0 if short == 'tok' else 1}f}")
    console.print(t)


def plan_kv(*, store: Path, pool: Sequence[str], kv_pool: Sequence[str], cap: int, shared_prompt: bool,
            budget: Sequence[float] | None, probe: Sequence[int] | None, bins: int, test_fraction: float, seed: int,
            orders: int, k: int | None, output: Path, unit: str = "tokens") -> None:
    st = Store(store)
    try:
        pools: dict[str, KvPool] = load_kv_pools(st, pool, kv_pool, k)
    finally:
        st.close()
    pools = {t: KvPool(kp.kv_type, in_budget_unit(kp.pool, unit), kp.info, kp.max_gen) for t, kp in pools.items()}
    first = next(iter(pools.values())).pool
    split = split_problems(first.problem_ids, first.group, test_fraction=test_fraction, seed=seed,
                           families=first.families)
    train = {t: kp.subset(split.train) for t, kp in pools.items()}
    test = {t: kp.subset(split.test) for t, kp in pools.items()}
    source = {"pools": list(pool), "kv_pools": list(kv_pool), "store": str(store), "model": first.pool.model,
              "task": first.pool.task, "budget_unit": unit, "test_problems": list(split.test)}
    plan = fit_kv_plan(train, cap, budget, shared_prompt=shared_prompt, probes=probe or (1, 2, 4), n_bins=bins,
                       n_orders=orders, seed=seed, source=source)
    plan.evaluation = evaluate_kv_plan(plan, test, n_orders=orders, seed=seed)
    print_kv_plan(plan.precisions, plan.evaluation, unit)
    plan.save(output)
    console.print(f"KV plan written to {output}; apply with: ttscale run --policy {output} --budget-{unit} B "
                  f"--kv-type <the level's precision> (the cap, {cap:,} bytes, is applied unless --max-kv-bytes)")
