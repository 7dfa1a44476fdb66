"""Replay speed: all curves of a 500 x 64 synthetic pool, vectorized vs a per-subset Python loop.

Work: 8 strategies x 12 budgets, 64 random orderings (subsets) per problem and
budget, 200 bootstrap resamples across problems for the confidence intervals.

Baseline: the straightforward implementation of the same work, one subset at a
time in Python with the strategies' own aggregation code (``weighted_vote``),
sorting for short-m@k and a Counter loop for adaptive consistency. It is timed
on the first ``--baseline-problems`` problems and scaled linearly to all 500
(its cost is linear in problems); the scaling is printed.

Then the same work on a 2,000-problem pool (``replay_seconds_2000``).

Usage: .venv/bin/python bench/replay.py [--problems 500] [--k 64] [--baseline-problems 20] [--large-problems 2000]
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import time
import tracemalloc
from collections import Counter

from scipy.special import betainc

from ttscale.replay.curves import compute_curves, default_curves
from ttscale.strategies.voting import weighted_vote
from ttscale.testing.synthetic import synthetic_pool
from ttscale.types import Sample

BUDGETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]


def to_samples(pool, p: int) -> list[Sample]:  # type: ignore[no-untyped-def]
    out = []
    for j in range(pool.k):
        a = int(pool.answer[p, j])
        out.append(Sample(j, "", None if a < 0 else str(a), bool(pool.correct[p, j]), int(pool.n_tokens[p, j]), 0, 0,
                          float(pool.sample_flops[p, j]), "stop", logprob=float(pool.logprob[p, j]),
                          finish_order=int(pool.finish_rank[p, j]),
                          scores={"certainty": float(pool.scores["certainty"][p, j])}))
    return out


def baseline(pool, n_problems: int, budgets: list[int], n_orders: int, n_boot: int, seed: int = 0) -> float:  # type: ignore[no-untyped-def]
    """Seconds for the per-subset loop on ``n_problems`` problems."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    acc: dict[tuple[str, int], list[float]] = {}
    for p in range(n_problems):
        ss = to_samples(pool, p)
        mlp = [s.logprob / max(s.n_tokens, 1) for s in ss]
        cut = sorted(mlp)[int(0.1 * (len(mlp) - 1))]
        top = max(s.logprob for s in ss)
        for k in budgets:
            res: dict[str, list[float]] = {}
            for _ in range(n_orders):
                sub = rng.sample(ss, k)
                res.setdefault("pass@k", []).append(float(any(s.correct for s in sub)))
                a, _ = weighted_vote(sub)
                res.setdefault("majority", []).append(float(a == "0"))
                a, _ = weighted_vote(sub, [s.scores["certainty"] for s in sub])
                res.setdefault("weighted-majority", []).append(float(a == "0"))
                ans = [s for s in sub if s.answer is not None]
                best = max(ans, key=lambda s: (s.scores["certainty"], -s.index)) if ans else None
                res.setdefault("best-of-n", []).append(float(best is not None and best.answer == "0"))
                kept = [s for s in sub if s.logprob / max(s.n_tokens, 1) >= cut]
                a, _ = weighted_vote(kept, [math.exp(s.logprob - top) for s in kept])
                res.setdefault("rpc", []).append(float(a == "0"))
                for m in (1, 3):
                    if k >= m:
                        first = sorted(sub, key=lambda s: s.finish_order)[:m]
                        a, _ = weighted_vote(first)
                        res.setdefault(f"short-{m}", []).append(float(a == "0"))
                order = rng.sample(ss, len(ss))
                counts: Counter[str] = Counter()
                drawn = []
                for s in order[:k]:
                    drawn.append(s)
                    if s.answer is not None:
                        counts[s.answer] += 1
                    v = sorted(counts.values(), reverse=True) + [0, 0]
                    if v[0] > v[1] and betainc(v[1] + 1, v[0] + 1, 0.5) >= 0.95:
                        break
                a, _ = weighted_vote(drawn)
                res.setdefault("adaptive", []).append(float(a == "0"))
            for name, v in res.items():
                acc.setdefault((name, k), []).append(sum(v) / len(v))
    # bootstrap across problems, one point at a time
    for vals in acc.values():
        means = []
        for _ in range(n_boot):
            idx = [rng.randrange(len(vals)) for _ in vals]
            means.append(sum(vals[i] for i in idx) / len(idx))
        means.sort()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--orders", type=int, default=64)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--baseline-problems", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large-problems", type=int, default=2000, help="the second, larger pool timed (issue target: 3 s)")
    args = ap.parse_args()
    budgets = [b for b in BUDGETS if b <= args.k]
    pool = synthetic_pool(args.problems, args.k, seed=0)
    print(f"pool: {args.problems} problems x {args.k} samples; {len(default_curves())} strategies x "
          f"{len(budgets)} budgets; {args.orders} orderings per problem; {args.bootstrap} bootstrap resamples")

    compute_curves(synthetic_pool(20, args.k, seed=1), budgets=budgets, n_orders=4, n_bootstrap=10)  # warm up
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        curves = compute_curves(pool, default_curves(), budgets, n_orders=args.orders, n_bootstrap=args.bootstrap)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    fast = min(times)
    print(f"vectorized replay: {fast:.2f} s wall (best of {args.repeats}: {', '.join(f'{t:.2f}' for t in times)}), "
          f"{min(cpu):.2f} s CPU; {len(curves.points)} curve points")

    tracemalloc.start()
    compute_curves(pool, default_curves(), budgets, n_orders=args.orders, n_bootstrap=args.bootstrap)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"memory: peak traced allocations {peak / 2**20:.0f} MiB; process max RSS {rss:.0f} MiB (limit 1024 MiB)")

    nb = min(args.baseline_problems, args.problems)
    slow_part = baseline(pool, nb, budgets, args.orders, args.bootstrap)
    slow = slow_part * args.problems / nb
    print(f"per-subset Python loop: {slow_part:.2f} s on {nb} problems, scaled x{args.problems / nb:.0f} "
          f"to {args.problems}: {slow:.1f} s (estimate; the loop is linear in problems)")
    big = synthetic_pool(args.large_problems, args.k, seed=2)
    t_big = []
    for _ in range(max(1, args.repeats - 1)):
        t0 = time.perf_counter()
        compute_curves(big, default_curves(), budgets, n_orders=args.orders, n_bootstrap=args.bootstrap)
        t_big.append(time.perf_counter() - t0)
    print(f"vectorized replay at {args.large_problems} problems x {args.k}: {min(t_big):.2f} s wall "
          f"({min(t_big) / fast:.1f}x the {args.problems}-problem time)")
    print("note: the CPU is shared with other jobs; absolute times are noisy, the ratio less so")
    print(f"bench: replay_seconds = {fast:.3f}")
    print(f"bench: replay_seconds_{args.large_problems} = {min(t_big):.3f}")
    print(f"bench: replay_speedup = {slow / fast:.1f}")


if __name__ == "__main__":
    main()
