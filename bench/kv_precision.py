"""KV-cache precision on the capable models: accuracy, decode speed, memory, and samples per memory cap.

Three parts, each printed as a table (markdown, ready for docs/benchmarks.md):

1. **Accuracy per precision** (no model run): the ``kv-precision`` experiment's measurement
   (:mod:`ttscale.experiments.kv_precision`) on its pools: the same problems swept at f16, q8_0
   and q4_0 with the same seeds and waves (``make pools``). Per workload and precision: pass@1,
   majority@K (GSM8K; ties broken by summed log-prob), pass@K, mean generated tokens, and the
   difference from f16 on the problems all precisions hold, with a paired 95% bootstrap interval.
2. **Samples per memory cap** (no model run): the most samples of the longest GSM8K prompt plus a
   512-token generation that fit ``--cap-mib`` together at each precision, from the model's GGUF
   shapes and the real element sizes (block scales included), with and without a shared prompt.
3. **Decode speed and memory** (``--speed``: loads the model once per precision in a subprocess,
   ~15 s each): prefill of ``--depth`` tokens, median decode step of 1 and of 16 sequences at that
   depth, and of as many sequences as part 2's cap holds at that precision (sharing the prompt, as
   the embedded engine does): the throughput a memory-bound deployment gets. Also the engine's KV
   buffer (llama.cpp's log) next to the meter's, and the process's peak RSS with a context of
   ``--n-ctx`` cells. Ratios are against f16 measured in the same run.

4. **Which cache breaks the model** (``--agreement``): greedy continuations of the first GSM8K
   prompts with keys and values at separate types (f16, q8_0, q5_0, q4_0, 4-bit keys or values
   only, q8_0 keys with q4_0 values), the share identical to f16's. Quantization noise in the keys
   moves every attention weight; in the values it only blurs what is read.

    python bench/kv_precision.py [--store shipped] [--cap-mib 64] [--speed] [--agreement] [--output kv.json]

Ends with ``bench:`` lines: ``kv_pass1_delta_<workload>_<type>`` (pass@1 minus f16's),
``kv_max_parallel_<model>_<type>`` (samples under the cap, one prompt each) and, with ``--speed``,
``kv_decode16_ratio_<model>_<type>`` (f16's step time over the type's: above 1 is faster) and
``kv_cap_throughput_ratio_<model>_<type>`` (decode tokens/s with what the cap holds, over f16's) and,
with ``--agreement``, ``kv_greedy_agreement_<model>_<K>_<V>``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from ttscale.backends.kv_sizing import header_info, max_parallel_bytes
from ttscale.experiments.kv_precision import EXPERIMENT, compare, group
from ttscale.pools import resolve_store
from ttscale.store import Store
from ttscale.types import kv_element_bytes, split_precision

TYPES = ("f16", "q8_0", "q8_0/q4_0", "q4_0")
"""Precisions of parts 2 and 3 (``K/V``: keys and values at different types)."""
SHORT = {"qwen2.5-coder-0.5b": "qwen05", "qwen2.5-coder-1.5b": "qwen15"}
WORKLOADS = {"humaneval": "humaneval", "gsm-symbolic": "gsm8k"}


def accuracy_table(store_arg: str) -> tuple[list[str], dict[str, Any], list[str], list[Any]]:
    """Part 1 (the experiment's measurement, printed as one table) and the workloads it found."""
    st = Store(resolve_store(store_arg))
    try:
        workloads, missing = group(st, list(EXPERIMENT.default_pools))
    finally:
        st.close()
    for m in missing:
        print(f"not measured: {m}")
    rows = ["| workload | KV | problems x k | pass@1 | f16 on them | Δ pass@1 vs f16 (95% CI) | majority@k | "
            "Δ majority | pass@k | mean tokens |", "|---|---|---|---|---|---|---|---|---|---|"]
    claims: list[str] = []
    out: dict[str, Any] = {}
    for w in workloads:
        name = f"{WORKLOADS.get(w.task, w.task)}_{SHORT.get(w.model, w.model)}"
        out[name] = {}
        for t, c in compare(w).items():
            s, d1, dm = c.stats, c.pass1, c.majority
            rec: dict[str, Any] = {m: float(v.mean()) for m, v in s.items()}
            rec |= {"problems": len(c.problems), "f16_pass1": float(c.reference["pass@1"].mean()),
                    "pass1_delta": d1, "majority_delta": dm}
            if d1 is not None:
                claims.append(f"bench: kv_pass1_delta_{name}_{t.replace('/', '_')} = {d1[0]:+.4f}")
            out[name][t] = rec

            def delta(d: tuple[float, float, float] | None) -> str:
                return "" if d is None else f"{d[0]:+.3f} ({d[1]:+.3f}, {d[2]:+.3f})"

            maj = f"{rec['majority@K']:.3f}" if w.votes else "n/a"
            f16_on = "" if t == "f16" else f"{rec['f16_pass1']:.3f}"
            rows.append(f"| {w.name} | {t} | {len(c.problems)} x {w.precisions[t].pool.k} | {rec['pass@1']:.3f} | "
                        f"{f16_on} | {delta(d1)} | {maj} | {delta(dm)} | {rec['pass@K']:.3f} | {rec['tokens']:.0f} |")
    return rows, out, claims, workloads


def fit_table(workloads: list[Any], cap_mib: float, models: list[str]) -> tuple[list[str], dict[str, Any], list[str]]:
    """Part 2: samples of the longest GSM8K prompt + 512 generated tokens that fit the cap, per precision."""
    cap = int(cap_mib * 2**20)
    rows = [f"| model | prompt + gen (tokens) | KV | bytes per token | samples in {cap_mib:g} MiB, one prompt each | "
            "sharing one prompt |", "|---|---|---|---|---|---|"]
    claims: list[str] = []
    out: dict[str, Any] = {"cap_bytes": cap}
    prompts = {w.model: max(p.longest_prompt for p in w.precisions.values()) for w in workloads if w.votes}
    for model in models:
        # a model without a GSM8K precision workload: the longest prompt of another (one tokenizer family)
        prompt, gen = prompts.get(model, max(prompts.values(), default=300)), 512
        out[model] = {}
        for t in TYPES:
            info = header_info(model, *split_precision(t))
            own = max_parallel_bytes(info, cap, prompt, gen, shared_prompt=False)
            shared = max_parallel_bytes(info, cap, prompt, gen, shared_prompt=True)
            out[model][t] = {"bytes_per_token": info.kv_bytes(1024) / 1024, "own_prompt": own, "shared_prompt": shared}
            rows.append(f"| {model} | {prompt} + {gen} | {t} | {info.kv_bytes(1024) / 1024:,.0f} | {own} | {shared} |")
            claims.append(f"bench: kv_max_parallel_{SHORT.get(model, model)}_{t.replace('/', '_')} = {own}")
    return rows, out, claims


SPEED = """
import json, resource, statistics, sys, time
from ttscale.backends.llama_cpp import LlamaCppBackend
model, kind = sys.argv[1], sys.argv[2]
k_type, _, v_type = kind.partition("/")
depth, steps, threads, n_ctx, n_cap = map(int, sys.argv[3:8])
n = max(16, n_cap)
be = LlamaCppBackend(model, n_ctx=max(n_ctx, depth + n * (steps + 8) + 256), n_seq_max=n + 1, prefix_slots=0, kv_type=k_type,
                     kv_type_v=v_type or None,
                     n_threads=threads, verbose=True)
t = time.perf_counter()
be.decode([(100 + j % 1000, j, 1, j == depth - 1) for j in range(depth)])
prefill = time.perf_counter() - t
for s in range(2, n + 1):
    be.copy_sequence(1, s)
out = {"n_ctx": be.n_ctx, "meter_kv_bytes": be.model_info().kv_bytes(be.n_ctx), "prefill_s": prefill}
pos = [depth] * n  # next position of each sequence
for size in sorted({1, 16, n_cap}):
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


def speed_one(model: str, kind: str, depth: int, steps: int, threads: int, n_ctx: int, n_cap: int) -> dict[str, Any]:
    """One precision's figures; ``n_cap``: also time a step of that many sequences (what the cap holds)."""
    argv = [model, kind, *(str(x) for x in (depth, steps, threads, n_ctx, n_cap))]
    proc = subprocess.run([sys.executable, "-c", SPEED, *argv],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"speed probe at {kind} failed: {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.split("RESULT ", 1)[1])
    mib = sum(float(m) for m in re.findall(r"KV buffer size =\s+([\d.]+) MiB", proc.stderr))
    res["engine_kv_bytes"] = mib * 2**20
    return res


def speed_table(model: str, depth: int, steps: int, threads: int, repeats: int, n_ctx: int,
                at_cap: dict[str, int]) -> tuple[list[str], dict[str, Any], list[str]]:
    """``at_cap``: per precision, the samples of one prompt the memory cap holds (part 2)."""
    best: dict[str, dict[str, Any]] = {}
    for _ in range(repeats):  # interleaved passes; the best per precision is kept (noise only slows)
        for t in TYPES:
            r = speed_one(model, t, depth, steps, threads, n_ctx, max(1, at_cap[t]))
            b = best.setdefault(t, r)
            for key in r:
                if key.startswith("step_s_") or key == "prefill_s":
                    b[key] = min(b[key], r[key])
    rows = [f"| model | KV | prefill {depth} tok (ms) | decode step N=1 (ms) | N=16 (ms) | N=16 vs f16 | "
            "N the cap holds: step (ms), tokens/s | vs f16 | KV buffer (MiB, engine / meter) | peak RSS (MiB) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    claims = []
    short = SHORT.get(model, model)

    def tput(t: str) -> float:
        n = max(1, at_cap[t])
        return n / best[t][f"step_s_{n}"]

    for t in TYPES:
        b, n = best[t], max(1, at_cap[t])
        ratio, cap_ratio = best["f16"]["step_s_16"] / b["step_s_16"], tput(t) / tput("f16")
        b["cap_tokens_per_s"] = tput(t)
        rows.append(f"| {model} | {t} | {b['prefill_s'] * 1e3:.0f} | {b['step_s_1'] * 1e3:.1f} | "
                    f"{b['step_s_16'] * 1e3:.1f} | x{ratio:.2f} | N={n}: {b[f'step_s_{n}'] * 1e3:.1f}, {tput(t):.0f} | "
                    f"x{cap_ratio:.2f} | {b['engine_kv_bytes'] / 2**20:.2f} / {b['meter_kv_bytes'] / 2**20:.2f} "
                    f"(n_ctx {b['n_ctx']}) | {b['peak_rss_bytes'] / 2**20:.0f} |")
        name = t.replace("/", "_")
        claims.append(f"bench: kv_decode16_ratio_{short}_{name} = {ratio:.3f}")
        claims.append(f"bench: kv_cap_throughput_ratio_{short}_{name} = {cap_ratio:.3f}")
    return rows, best, claims


AGREEMENT = """
import dataclasses, json, sys
from ttscale.backends.llama_cpp import LlamaCppBackend
from ttscale.registry import make_task
model, k, v, n_problems, tokens, threads = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
be = LlamaCppBackend(model, kv_type=k, kv_type_v=v, n_threads=threads, n_ctx=2048, n_seq_max=2)
task = make_task("gsm-symbolic", model=be.model_info().name, chat_model=True, max_tokens=tokens)
outs = []
for p in task.problems(limit=n_problems):
    g = be.generate([dataclasses.replace(task.request(p), n=1, temperature=0.0, seed=0)])[0]
    outs.append(g.completions[0].text)
be.close()
print("RESULT " + json.dumps(outs), flush=True)
"""
PAIRS = (("f16", "f16"), ("q8_0", "q8_0"), ("q5_0", "q5_0"), ("q4_0", "q4_0"), ("q4_0", "f16"), ("f16", "q4_0"),
         ("q8_0", "q4_0"))


def agreement_table(model: str, n_problems: int, tokens: int, threads: int) -> tuple[list[str], dict[str, Any], list[str]]:
    """Part 4: greedy continuations of the first GSM8K prompts per K / V type, against f16's."""
    texts: dict[tuple[str, str], list[str]] = {}
    for k, v in PAIRS:
        proc = subprocess.run([sys.executable, "-c", AGREEMENT, model, k, v, str(n_problems), str(tokens), str(threads)],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"greedy probe at K={k} V={v} failed: {proc.stderr[-2000:]}")
        texts[(k, v)] = json.loads(proc.stdout.split("RESULT ", 1)[1])
    ref = texts[("f16", "f16")]
    rows = [f"| model | K | V | bytes vs f16 | greedy {tokens} tokens identical to f16's | first problem's continuation |",
            "|---|---|---|---|---|---|"]
    claims, out = [], {}
    short = SHORT.get(model, model)
    for (k, v), outs in texts.items():
        same = sum(a == b for a, b in zip(outs, ref, strict=True)) / len(ref)
        ratio = (kv_element_bytes(k) + kv_element_bytes(v)) / (2 * kv_element_bytes("f16"))
        out[f"{k}/{v}"] = {"identical_share": same, "bytes_ratio": ratio, "texts": outs}
        first = outs[0][:60].replace("\n", " ").replace("|", "/")
        rows.append(f"| {model} | {k} | {v} | {ratio:.3f} | {same:.2f} | {first} |")
        if (k, v) != ("f16", "f16"):
            claims.append(f"bench: kv_greedy_agreement_{short}_{k}_{v} = {same:.2f}")
    return rows, out, claims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="shipped",
                    help="store holding the precision pools (default: the shipped pools)")
    ap.add_argument("--cap-mib", type=float, default=64.0, help="the fixed KV memory cap of part 2")
    ap.add_argument("--speed", action="store_true", help="also measure decode speed and memory (loads models)")
    ap.add_argument("--speed-model", action="append", default=None,
                    help="models of parts 2 and 3 (repeatable; default: the 0.5B and the 1.5B)")
    ap.add_argument("--depth", type=int, default=480, help="context depth (prompt tokens) of the speed probe")
    ap.add_argument("--steps", type=int, default=24, help="decode steps timed per batch size")
    ap.add_argument("--n-ctx", type=int, default=16 * (160 + 512),
                    help="KV cells of the speed probe's context (default: 16 GSM8K samples' worst case)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--agreement", action="store_true",
                    help="also part 4: greedy continuations of the first --agreement-problems GSM8K prompts per K/V "
                         "cache type, compared with f16's (loads each model once per pair)")
    ap.add_argument("--agreement-problems", type=int, default=20)
    ap.add_argument("--agreement-tokens", type=int, default=32)
    ap.add_argument("--output", type=Path, default=None, help="write every figure as JSON here")
    args = ap.parse_args()
    claims: list[str] = []
    out: dict[str, Any] = {}
    rows, out["accuracy"], c, workloads = accuracy_table(args.store)
    print("\n".join(rows) + "\n")
    claims += c
    models = args.speed_model or ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    rows, out["fit"], c = fit_table(workloads, args.cap_mib, models)
    print("\n".join(rows) + "\n")
    claims += c
    if args.speed:
        out["speed"] = {}
        speed_rows: list[str] = []
        for m in models:
            at_cap = {t: int(f["shared_prompt"]) for t, f in out["fit"][m].items()}
            rows, out["speed"][m], c = speed_table(m, args.depth, args.steps, args.threads, args.repeats,
                                                      args.n_ctx, at_cap)
            speed_rows += rows if not speed_rows else rows[2:]
            claims += c
        print("\n".join(speed_rows) + "\n")
    if args.agreement:
        out["agreement"] = {}
        agree_rows: list[str] = []
        for m in models:
            rows, out["agreement"][m], c = agreement_table(m, args.agreement_problems, args.agreement_tokens,
                                                           args.threads)
            agree_rows += rows if not agree_rows else rows[2:]
            claims += c
        print("\n".join(agree_rows) + "\n")
    if args.output:
        args.output.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print("\n".join(claims))


if __name__ == "__main__":
    main()
