"""How much one llama.cpp decode step gains from batching on this CPU: the ceiling of any server batching.

For N = 1, 2, 4, 8, 16 independent sequences (32 prompt tokens each), times one ``llama_decode``
that advances every sequence by one token, and reports per-token throughput relative to N = 1
(measured in the same run). Whatever the server does, 8 concurrent single-sample requests cannot
decode faster than ``decode_batch8_speedup`` times one request alone.

    python bench/decode_scaling.py [--model smollm2-135m] [--threads 2] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from ttscale.backends.llama_cpp import LlamaCppBackend

SIZES = (1, 2, 4, 8, 16)


def step_seconds(be: LlamaCppBackend, n: int, steps: int) -> float:
    """Median seconds of one decode step advancing ``n`` sequences by one token."""
    be.forget_prefixes()  # cached prefixes go, and their bookkeeping with them
    be._lc.llama_memory_clear(be._mem, True)  # and the sequences of the previous size
    for s in range(n):
        be._decode([(100 + j, j, s + 1, j == 31) for j in range(32)])
    times = []
    for r in range(steps):
        t = time.perf_counter()
        be._decode([(200 + s, 32 + r, s + 1, True) for s in range(n)])
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3, help="passes over all sizes; the best pass per size is kept")
    args = ap.parse_args()
    be = LlamaCppBackend(args.model, n_ctx=4096, n_seq_max=max(SIZES), n_threads=args.threads)
    best = {n: float("inf") for n in SIZES}
    for _ in range(args.repeats):
        for n in SIZES:
            best[n] = min(best[n], step_seconds(be, n, args.steps))
    be.close()
    print(f"model={args.model} threads={args.threads}; one decode step, median of {args.steps}, best of {args.repeats}")
    for n in SIZES:
        gain = n * best[1] / best[n]
        print(f"  N={n:2d}: {best[n] * 1e3:6.1f} ms/step, {best[n] / n * 1e3:5.2f} ms/token, "
              f"throughput x{gain:.2f} vs N=1")
    print(f"bench: decode_batch8_speedup = {8 * best[1] / best[8]:.2f}")


if __name__ == "__main__":
    main()
