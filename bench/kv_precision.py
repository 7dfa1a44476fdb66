"""KV-cache precision on the capable models: accuracy, decode speed, memory, and samples per memory cap.

Three parts, each printed as a table (markdown, ready for docs/benchmarks.md):

1. **Accuracy per precision** (no model run): pools of the same problems made at f16, q8_0 and q4_0
   with the same seeds and waves (``ttscale sweep --kv-type``; the commands are in docs/benchmarks.md).
   Per workload and precision: pass@1 (mean over all samples), majority@K (GSM8K; the vote of all
   K samples, ties broken by summed log-prob), pass@K, mean generated tokens; and the difference
   from f16 on the same problems with a 95% bootstrap interval over problems (paired: each resample
   takes the same problems from every precision).
2. **Samples per memory cap** (no model run): the most samples of the workload's longest prompt plus
   its generation cap that fit ``--cap-mib`` together at each precision, from the model's GGUF
   shapes and the real element sizes (block scales included), with and without a shared prompt.
3. **Decode speed and memory** (``--speed``: loads the model once per precision in a subprocess,
   ~1 min each): prefill of ``--depth`` tokens, median decode step of 1 and of 16 sequences at that
   depth, the engine's KV buffer (llama.cpp's log) and the process's peak RSS. Ratios are against
   f16 measured in the same run.

    python bench/kv_precision.py [--store shipped --store runs/pools.sqlite] [--cap-mib 64]
                                 [--speed --speed-model qwen2.5-coder-0.5b] [--output kv.json]

Ends with ``bench:`` lines: ``kv_pass1_delta_<workload>_<type>`` (pass@1 minus f16's),
``kv_max_parallel_<model>_<type>`` (samples under the cap, one prompt each) and, with ``--speed``,
``kv_decode16_ratio_<model>_<type>`` (f16's step time over the type's: above 1 is faster).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.backends.kv_sizing import header_info, max_parallel_bytes
from ttscale.errors import StoreError
from ttscale.pools import resolve_store
from ttscale.replay.estimators import vote_winners, winners_correct
from ttscale.replay.pool import Pool, load_pool
from ttscale.store import Store

TYPES = ("f16", "q8_0", "q4_0")
SHORT = {"qwen2.5-coder-0.5b": "qwen05", "qwen2.5-coder-1.5b": "qwen15"}


@dataclass(frozen=True)
class Workload:
    name: str
    model: str
    runs: dict[str, str]
    """KV type -> run id."""
    vote: bool
    """Whether majority voting means something (answers, not programs)."""


WORKLOADS = (
    Workload("humaneval-qwen05", "qwen2.5-coder-0.5b",
             {"f16": "humaneval-qwen05-k16", "q8_0": "humaneval-qwen05-q8-k16", "q4_0": "humaneval-qwen05-q4-k16"},
             vote=False),
    Workload("gsm8k-qwen05", "qwen2.5-coder-0.5b",
             {"f16": "gsm8k-qwen05-k16", "q8_0": "gsm8k-qwen05-q8-k16", "q4_0": "gsm8k-qwen05-q4-k16"}, vote=True),
    Workload("gsm8k-qwen15", "qwen2.5-coder-1.5b",
             {"f16": "gsm8k-qwen15-k16", "q8_0": "gsm8k-qwen15-q8-k16", "q4_0": "gsm8k-qwen15-q4-k16"}, vote=True),
)


def find_pool(stores: list[str], run_id: str) -> Pool | None:
    """The run from the first store that has it (None when none does)."""
    for s in stores:
        path = resolve_store(s)
        if not path.exists():
            continue
        st = Store(path)
        try:
            if st.get_run(run_id) is not None:
                return load_pool(st, run_id)
        except StoreError:
            continue
        finally:
            st.close()
    return None


def per_problem(pool: Pool, vote: bool) -> dict[str, np.ndarray]:
    """Per problem: share of correct samples, majority@K correct, any correct, mean tokens."""
    ok = np.take_along_axis(pool.answer_correct, np.maximum(pool.answer, 0), axis=1) & (pool.answer >= 0)
    out = {"pass1": ok.mean(axis=1), "passk": ok.any(axis=1).astype(float), "tokens": pool.n_tokens.mean(axis=1)}
    if vote:
        order = np.arange(pool.k)[None, :]
        win = vote_winners(pool.answer, order, [pool.k], pool.answer_correct.shape[1], logprob=pool.logprob)
        out["majority"] = winners_correct(pool.answer_correct, win)[:, 0, 0].astype(float)
    return out


def paired_interval(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n: int = 4000) -> tuple[float, float]:
    """95% bootstrap interval of mean(a) - mean(b), resampling problems (the same ones for both)."""
    idx = rng.integers(0, len(a), size=(n, len(a)))
    d = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    lo, hi = np.quantile(d, [0.025, 0.975])
    return float(lo), float(hi)


def accuracy_table(stores: list[str], seed: int) -> tuple[list[str], dict[str, Any], list[str]]:
    rows = ["| workload | KV | problems x k | pass@1 | Δ pass@1 vs f16 (95% CI) | majority@k | Δ majority | "
            "pass@k | mean tokens |", "|---|---|---|---|---|---|---|---|---|"]
    claims: list[str] = []
    out: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    for w in WORKLOADS:
        pools = {t: p for t, r in w.runs.items() if (p := find_pool(stores, r)) is not None}
        missing = [w.runs[t] for t in TYPES if t not in pools]
        if "f16" not in pools or len(pools) < 2:
            print(f"{w.name}: pools missing ({', '.join(missing)}): skipped")
            continue
        common = [pid for pid in pools["f16"].problem_ids if all(pid in p.problem_ids for p in pools.values())]
        k = min(p.k for p in pools.values())
        stats: dict[str, dict[str, np.ndarray]] = {}
        for t, p in pools.items():
            pos = {pid: i for i, pid in enumerate(p.problem_ids)}
            idx = np.array([pos[pid] for pid in common])
            sub = Pool(problem_ids=common, answer=p.answer[idx, :k], answer_correct=p.answer_correct[idx],
                       n_tokens=p.n_tokens[idx, :k], logprob=p.logprob[idx, :k], finish_rank=p.finish_rank[idx, :k],
                       prefill_tokens=p.prefill_tokens[idx], prefill_flops=p.prefill_flops[idx],
                       sample_tokens=p.sample_tokens[idx, :k], sample_flops=p.sample_flops[idx, :k])
            stats[t] = per_problem(sub, w.vote)
        out[w.name] = {"problems": len(common), "k": k, "missing": missing, "precisions": {}}
        for t in TYPES:
            if t not in stats:
                continue
            s, ref = stats[t], stats["f16"]
            rec: dict[str, Any] = {m: float(v.mean()) for m, v in s.items()}
            d1 = ci1 = dm = cim = None
            if t != "f16":
                d1, ci1 = rec["pass1"] - float(ref["pass1"].mean()), paired_interval(s["pass1"], ref["pass1"], rng)
                rec |= {"pass1_delta": d1, "pass1_delta_ci": ci1}
                claims.append(f"bench: kv_pass1_delta_{w.name.replace('-', '_')}_{t} = {d1:+.4f}")
                if w.vote:
                    dm = rec["majority"] - float(ref["majority"].mean())
                    cim = paired_interval(s["majority"], ref["majority"], rng)
                    rec |= {"majority_delta": dm, "majority_delta_ci": cim}
            out[w.name]["precisions"][t] = rec

            def delta(d: float | None, ci: tuple[float, float] | None) -> str:
                return "" if d is None or ci is None else f"{d:+.3f} ({ci[0]:+.3f}, {ci[1]:+.3f})"

            maj = f"{rec['majority']:.3f}" if w.vote else "n/a"
            rows.append(f"| {w.name} | {t} | {len(common)} x {k} | {rec['pass1']:.3f} | {delta(d1, ci1)} | {maj} | "
                        f"{delta(dm, cim)} | {rec['passk']:.3f} | {rec['tokens']:.0f} |")
    return rows, out, claims


def fit_table(stores: list[str], cap_mib: float) -> tuple[list[str], dict[str, Any], list[str]]:
    cap = int(cap_mib * 2**20)
    rows = [f"| model | prompt + gen (tokens) | KV | bytes per token | samples in {cap_mib:g} MiB, one prompt each | "
            "sharing one prompt |", "|---|---|---|---|---|---|"]
    claims: list[str] = []
    out: dict[str, Any] = {"cap_bytes": cap}
    for w in WORKLOADS:
        if not w.vote or w.model in out:  # one GSM8K workload per model: its prompts and 512-token cap
            continue
        f16 = find_pool(stores, w.runs["f16"])
        prompt = int(f16.prefill_tokens.max()) if f16 is not None else 300
        gen = 512
        out[w.model] = {}
        for t in TYPES:
            info = header_info(w.model, t)
            own = max_parallel_bytes(info, cap, prompt, gen, shared_prompt=False)
            shared = max_parallel_bytes(info, cap, prompt, gen, shared_prompt=True)
            out[w.model][t] = {"bytes_per_token": info.kv_bytes(1024) / 1024, "own_prompt": own, "shared_prompt": shared}
            rows.append(f"| {w.model} | {prompt} + {gen} | {t} | {info.kv_bytes(1024) / 1024:,.0f} | {own} | {shared} |")
            claims.append(f"bench: kv_max_parallel_{SHORT.get(w.model, w.model)}_{t} = {own}")
    return rows, out, claims


SPEED = """
import json, resource, statistics, sys, time
from ttscale.backends.llama_cpp import LlamaCppBackend
model, kind = sys.argv[1], sys.argv[2]
depth, steps, threads, n_ctx = map(int, sys.argv[3:7])
n = 16
be = LlamaCppBackend(model, n_ctx=max(n_ctx, depth + n * (steps + 8) + 256), n_seq_max=n + 1, prefix_slots=0, kv_type=kind,
                     n_threads=threads, verbose=True)
t = time.perf_counter()
be.decode([(100 + j % 1000, j, 1, j == depth - 1) for j in range(depth)])
prefill = time.perf_counter() - t
for s in range(2, n + 1):
    be.copy_sequence(1, s)
out = {"n_ctx": be.n_ctx, "meter_kv_bytes": be.model_info().kv_bytes(be.n_ctx), "prefill_s": prefill}
pos = [depth] * n  # next position of each sequence
for size in (1, n):
    times = []
    for r in range(steps):
        t = time.perf_counter()
        be.decode([(200 + s, pos[s], s + 1, True) for s in range(size)])
        times.append(time.perf_counter() - t)
        for s in range(size):
            pos[s] += 1
    out[f"step_s_{size}"] = statistics.median(times)
out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
be.close()
print("RESULT " + json.dumps(out), flush=True)
"""


def speed_one(model: str, kind: str, depth: int, steps: int, threads: int, n_ctx: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", SPEED, model, kind, str(depth), str(steps), str(threads), str(n_ctx)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"speed probe at {kind} failed: {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.split("RESULT ", 1)[1])
    mib = sum(float(m) for m in re.findall(r"KV buffer size =\s+([\d.]+) MiB", proc.stderr))
    res["engine_kv_bytes"] = mib * 2**20
    return res


def speed_table(model: str, depth: int, steps: int, threads: int, repeats: int,
                n_ctx: int) -> tuple[list[str], dict[str, Any], list[str]]:
    best: dict[str, dict[str, Any]] = {}
    for _ in range(repeats):  # interleaved passes; the best per precision is kept (noise only slows)
        for t in TYPES:
            r = speed_one(model, t, depth, steps, threads, n_ctx)
            b = best.setdefault(t, r)
            for key in ("prefill_s", "step_s_1", "step_s_16"):
                b[key] = min(b[key], r[key])
    rows = [f"| model | KV | prefill {depth} tok (ms) | decode step N=1 (ms) | N=16 (ms) | N=16 vs f16 | "
            "KV buffer (MiB, engine / meter) | peak RSS (MiB) |", "|---|---|---|---|---|---|---|---|"]
    claims = []
    ref = best["f16"]["step_s_16"]
    short = SHORT.get(model, model)
    for t in TYPES:
        b = best[t]
        ratio = ref / b["step_s_16"]
        rows.append(f"| {model} | {t} | {b['prefill_s'] * 1e3:.0f} | {b['step_s_1'] * 1e3:.1f} | "
                    f"{b['step_s_16'] * 1e3:.1f} | x{ratio:.2f} | {b['engine_kv_bytes'] / 2**20:.2f} / "
                    f"{b['meter_kv_bytes'] / 2**20:.2f} (n_ctx {b['n_ctx']}) | {b['peak_rss_bytes'] / 2**20:.0f} |")
        claims.append(f"bench: kv_decode16_ratio_{short}_{t} = {ratio:.3f}")
    return rows, best, claims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", action="append", default=None,
                    help="stores to look for the pools in, in order (default: shipped, then runs/pools.sqlite)")
    ap.add_argument("--cap-mib", type=float, default=64.0, help="the fixed KV memory cap of part 2")
    ap.add_argument("--speed", action="store_true", help="also measure decode speed and memory (loads models)")
    ap.add_argument("--speed-model", action="append", default=None, help="models for --speed (default: the 0.5B)")
    ap.add_argument("--depth", type=int, default=480, help="context depth (prompt tokens) of the speed probe")
    ap.add_argument("--steps", type=int, default=24, help="decode steps timed per batch size")
    ap.add_argument("--n-ctx", type=int, default=16 * (160 + 512),
                    help="KV cells of the speed probe's context (default: 16 GSM8K samples' worst case)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--output", type=Path, default=None, help="write every figure as JSON here")
    args = ap.parse_args()
    stores = args.store or ["shipped", "runs/pools.sqlite"]

    claims: list[str] = []
    out: dict[str, Any] = {}
    rows, out["accuracy"], c = accuracy_table(stores, args.seed)
    print("\n".join(rows) + "\n")
    claims += c
    rows, out["fit"], c = fit_table(stores, args.cap_mib)
    print("\n".join(rows) + "\n")
    claims += c
    if args.speed:
        out["speed"] = {}
        speed_rows: list[str] = []
        for m in args.speed_model or ["qwen2.5-coder-0.5b"]:
            rows, out["speed"][m], c = speed_table(m, args.depth, args.steps, args.threads, args.repeats,
                                                      args.n_ctx)
            speed_rows += rows if not speed_rows else rows[2:]
            claims += c
        print("\n".join(speed_rows) + "\n")
    if args.output:
        args.output.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print("\n".join(claims))


if __name__ == "__main__":
    main()
