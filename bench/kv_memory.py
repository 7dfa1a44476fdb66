"""KV-cache memory as a budget: how many samples a quantized cache buys under one memory cap, and
whether they buy accuracy.

1. ``kv_q8_bytes_ratio``: the engine's own KV buffer at q8_0 over f16, read from llama.cpp's log
   ("KV buffer size = X MiB") for a context of ``--ratio-ctx`` cells of ``--ratio-model`` (a few
   seconds: the context is created, nothing is generated). The meter's bytes must agree (34/64).
2. ``kv_cap_accuracy_gain``: at one fixed memory cap (default: what 16 parallel samples of the
   pool's longest prompt plus its max generation take at q8_0, so f16 fits 8), the held-out
   accuracy of the best configuration that fits with quantized KV allowed, minus that with f16
   only. ``kv_cap_gain_from_k`` is the part of it the extra parallel samples alone explain: the same
   plan on f16's own samples, as if they took the chosen precision's bytes (the rest is the
   precision's effect on accuracy plus the sampling noise between two pools). Configurations are the planner's (probe, rule, k per predicted-difficulty bin) fitted on
   the training split of pools of the same problems made at each precision
   (:mod:`ttscale.planner.kv_plan`); the budget level defaults to majority@K's tokens, so memory,
   not tokens, is what binds.

``--kv-run q4_0=RUN`` adds another precision (the workload is then the problems every pool holds);
``--budget-unit gflops`` plans in the meter's FLOPs instead of tokens.

The pools default to the shipped GSM8K pools of the 0.5B at f16 and q8_0 (pass@1 0.18, majority@16
0.33: the middle of the model's range, where more samples help; the q8_0 pool has the same problems,
seeds and waves). When a pool is missing (another store, another workload) the bench prints the
exact ``ttscale sweep`` command that makes it and still measures the ratio.

    python bench/kv_memory.py [--q8-store shipped] [--cap-bytes N] [--ratio-model smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError, StoreError
from ttscale.planner.data import in_budget_unit
from ttscale.planner.evaluate import split_problems
from ttscale.planner.kv_plan import KvPool, evaluate_kv_plan, fit_kv_plan
from ttscale.planner.kv_pools import align_kv, load_kv_pools
from ttscale.planner.policy import default_budgets
from ttscale.pools import resolve_store
from ttscale.store import Store

PROBE = """
import sys
from ttscale.backends.llama_cpp import LlamaCppBackend
b = LlamaCppBackend(sys.argv[1], n_ctx=int(sys.argv[3]), n_seq_max=2, prefix_slots=0, kv_type=sys.argv[2], verbose=True)
print("METER", b.n_ctx, b.model_info().kv_bytes(b.n_ctx), flush=True)
b.close()
"""


def engine_kv_bytes(model: str, kind: str, n_ctx: int) -> tuple[float, int, int]:
    """(the engine's reported KV buffer in bytes, its n_ctx, the meter's bytes for it) at ``kind``."""
    out = subprocess.run([sys.executable, "-c", PROBE, model, kind, str(n_ctx)], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"engine at {kind} failed: {out.stderr[-1500:]}")
    mib = sum(float(m) for m in re.findall(r"KV buffer size =\s+([\d.]+) MiB", out.stderr))
    if not mib:
        raise RuntimeError("llama.cpp's log names no KV buffer size")
    ctx, meter = map(int, out.stdout.split("METER")[1].split())
    return mib * 2**20, ctx, meter


def sweep_command(args: argparse.Namespace, kind: str, run_id: str, store: str) -> str:
    parts = ["ttscale", "sweep", "--store", store, "-k", str(args.k), "--temperature", str(args.temperature),
             "--seed", str(args.seed), "--wave", str(args.wave), "--task", args.task]
    if args.subtask:
        parts += ["--subtask", args.subtask]
    parts += ["--model", args.model, "--limit", str(args.limit), "--max-tokens", str(args.max_tokens),
              "--verifier", "certainty", "--kv-type", kind, "--run-id", run_id]
    return shlex.join(parts)


def load(store_arg: str, run_id: str) -> KvPool | None:
    """The run as a precision pool (its type from its record), or None when it is not stored yet."""
    path = resolve_store(store_arg)
    if not path.exists():
        return None
    st = Store(path)
    try:
        (kp,) = load_kv_pools(st, [run_id], [], None).values()
        return kp
    except (StoreError, ConfigError) as e:
        if "no run" in str(e) or "has no samples" in str(e):
            return None
        raise
    finally:
        st.close()


def accuracy_gain(args: argparse.Namespace, f16: KvPool, quantized: dict[str, KvPool]) -> dict[str, Any]:
    ks = {f16.pool.pool.k, *(kp.pool.pool.k for kp in quantized.values())}
    if len(ks) != 1:
        raise ConfigError(f"pools with different samples per problem ({sorted(ks)}): resweep with -k {max(ks)}")
    # the problems every pool holds (a smaller sweep at one precision narrows the workload)
    common = [pid for pid in f16.pool.problem_ids if all(pid in kp.pool.problem_ids for kp in quantized.values())]
    f16 = f16.subset(common)
    pools = {"f16": f16, **{t: align_kv(f16, kp.subset(common)) for t, kp in quantized.items()}}
    longest = int(f16.pool.prompt_tokens.max())
    cap = args.cap_bytes or pools["q8_0"].peak_bytes(args.cap_samples, longest, args.shared_prompt)
    split = split_problems(f16.pool.problem_ids, f16.pool.group, test_fraction=args.test_fraction, seed=args.seed)
    pools = {t: KvPool(p.kv_type, in_budget_unit(p.pool, args.budget_unit), p.info, p.max_gen) for t, p in pools.items()}
    train = {t: p.subset(split.train) for t, p in pools.items()}
    test = {t: p.subset(split.test) for t, p in pools.items()}
    budget = args.budget or default_budgets(train["f16"].pool)[-1]
    plan = fit_kv_plan(train, cap, [budget], shared_prompt=args.shared_prompt, probes=args.probes,
                       n_bins=args.bins, n_orders=args.orders, seed=args.seed)
    ev = evaluate_kv_plan(plan, test, n_orders=args.orders, seed=args.seed)
    (row,) = ev["levels"] or [None]
    if row is None:
        raise ConfigError(f"no precision has a level at {budget:.0f} {args.budget_unit}/problem")
    for t, p in plan.precisions.items():
        print(f"{t}: {p['bytes_per_cell']:,.0f} bytes/cell, longest prompt {p['longest_prompt']:.0f} + {p['max_gen']} "
              f"generated: {p['max_k_under_cap']} parallel samples fit {cap:,} bytes")
    for t, h in row["held_out"].items():
        print(f"  {t}: up to k={h['k']}, held-out accuracy {h['accuracy']:.3f} at {h['tokens']:.0f} {args.budget_unit}/problem "
              f"({len(split.test)} problems)")
    print(f"chosen on the training split: {row['kv_type']}")
    # The same plan with f16's own samples at the chosen precision's byte size: what the extra parallel
    # samples alone buy if quantizing cost nothing. The rest of the gain is the precision's own effect
    # plus the two pools' sampling noise (different samples of the same problems).
    chosen = pools[row["kv_type"]]
    free = {"f16": KvPool("f16", pools["f16"].pool, chosen.info, f16.max_gen)}
    free_plan = fit_kv_plan({"f16": free["f16"].subset(split.train)}, cap, [budget], shared_prompt=args.shared_prompt,
                            probes=args.probes, n_bins=args.bins, n_orders=args.orders, seed=args.seed)
    (free_row,) = evaluate_kv_plan(free_plan, {"f16": free["f16"].subset(split.test)}, n_orders=args.orders,
                                   seed=args.seed)["levels"]
    from_k = free_row["accuracy"] - row["reference_accuracy"]
    print(f"  f16's own samples with {row['kv_type']}'s bytes per cell: held-out accuracy {free_row['accuracy']:.3f}: "
          f"{from_k:+.3f} of the gain is the extra samples, {row['gain_over_reference'] - from_k:+.3f} the "
          f"precision and the pools' sampling noise")
    return {"cap_bytes": cap, "budget": budget, "budget_unit": args.budget_unit, "precisions": plan.precisions, "held_out": row,
            "gain": row["gain_over_reference"], "gain_from_k": from_k}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="the pools' model")
    ap.add_argument("--ratio-model", default=None, help="model whose engine buffers give the ratio (default --model)")
    ap.add_argument("--ratio-ctx", type=int, default=4096, help="KV cells of the context created for the ratio")
    ap.add_argument("--f16-run", default="gsm8k-qwen05-k16")
    ap.add_argument("--f16-store", default="shipped", help="store of the f16 pool ('shipped': the reference pools)")
    ap.add_argument("--q8-run", default="gsm8k-qwen05-q8-k16")
    ap.add_argument("--q8-store", default="shipped", help="store of the q8_0 (and --kv-run) pools")
    ap.add_argument("--kv-run", action="append", default=None, metavar="TYPE=RUN",
                    help="another precision's pool in --q8-store (e.g. q4_0=gsm8k-qwen05-q4-k16); the workload is "
                         "then the problems every pool holds")
    ap.add_argument("--budget-unit", choices=["tokens", "gflops"], default="tokens",
                    help="what the budget level counts (the planner's --budget-unit)")
    ap.add_argument("--task", default="gsm-symbolic")
    ap.add_argument("--subtask", default=None)
    ap.add_argument("--limit", type=int, default=60, help="problems per pool")
    ap.add_argument("-k", "--k", type=int, default=16, help="samples per problem in each pool")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0, help="sampling seed of the pools, and of the split and replay")
    ap.add_argument("--wave", type=int, default=16)
    ap.add_argument("--cap-bytes", type=int, default=None, help="the memory cap (default: --cap-samples at q8_0)")
    ap.add_argument("--cap-samples", type=int, default=16,
                    help="default cap: bytes of this many parallel samples of the longest prompt at q8_0")
    ap.add_argument("--shared-prompt", action="store_true",
                    help="count the prompt once per k samples (the embedded engine) instead of once per sample")
    ap.add_argument("--budget", type=float, default=None, help="budget level, mean tokens (or GFLOPs) per problem (default: majority@K's)")
    ap.add_argument("--probes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    ap.add_argument("--bins", type=int, default=2)
    ap.add_argument("--orders", type=int, default=64)
    ap.add_argument("--test-fraction", type=float, default=0.5)
    ap.add_argument("--output", type=Path, default=None, help="write the figures and evidence as JSON here")
    args = ap.parse_args()

    model = args.ratio_model or args.model
    f16_bytes, ctx, f16_meter = engine_kv_bytes(model, "f16", args.ratio_ctx)
    q8_bytes, q8_ctx, q8_meter = engine_kv_bytes(model, "q8_0", args.ratio_ctx)
    ratio = q8_bytes / f16_bytes
    print(f"{model}, {ctx} cells: engine KV buffer f16 {f16_bytes / 2**20:.2f} MiB, q8_0 {q8_bytes / 2**20:.2f} MiB; "
          f"meter {f16_meter / 2**20:.2f} / {q8_meter / 2**20:.2f} MiB (ratio {q8_meter / f16_meter:.4f})")
    out: dict[str, Any] = {"ratio_model": model, "ratio_ctx": ctx, "engine_kv_bytes": {"f16": f16_bytes, "q8_0": q8_bytes},
                           "meter_kv_bytes": {"f16": f16_meter, "q8_0": q8_meter}, "kv_q8_bytes_ratio": ratio}

    f16, q8 = load(args.f16_store, args.f16_run), load(args.q8_store, args.q8_run)
    extra = {}
    for spec in args.kv_run or []:
        kind, _, run = spec.partition("=")
        kp = load(args.q8_store, run)
        if kp is None:
            raise SystemExit(f"--kv-run {spec}: no run {run!r} in {args.q8_store}")
        extra[kind] = kp
    gain = None
    if f16 is None or q8 is None:
        print("per-precision pools missing; make them with (resumable):")
        for pool, kind, run, where, flag in ((f16, "f16", args.f16_run, args.f16_store, "--f16-store"),
                                             (q8, "q8_0", args.q8_run, args.q8_store, "--q8-store")):
            if pool is None:  # the shipped store is read-only: a missing pool is made in runs/pools.sqlite
                store = where if where != "shipped" else "runs/pools.sqlite"
                print("  " + sweep_command(args, kind, run, store)
                      + ("" if store == where else f"   # then: {flag} {store}"))
    else:
        for kp, want in ((f16, "f16"), (q8, "q8_0"), *((kp, t) for t, kp in extra.items())):
            if kp.kv_type != want:
                raise SystemExit(f"pool {kp.pool.pool.run_id} was made at {kp.kv_type}, not {want}")
        res = accuracy_gain(args, f16, {"q8_0": q8, **extra})
        out |= res
        gain = res["gain"]
    if args.output:
        args.output.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"bench: kv_cap_accuracy_gain = {gain:.4f}" if gain is not None else "bench: kv_cap_accuracy_gain = nan")
    if gain is not None:
        print(f"bench: kv_cap_gain_from_k = {out['gain_from_k']:.4f}")
    print(f"bench: kv_q8_bytes_ratio = {ratio:.4f}")


if __name__ == "__main__":
    main()
