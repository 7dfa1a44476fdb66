"""Speed effect of the weight-repacking decision (``ttscale.backends.llama_cpu``) on this CPU.

Loads the model twice in one run, with llama.cpp's extra buffer types on (weights repacked for the
CPU's kernels, the default wherever the CPU has no AMX) and off (what CPUs with AMX get, since
llama.cpp's AMX path crashes), and times a prompt prefill and decode steps at 1 and 8 sequences
with each. Prints the ratio on/off per measure; on a CPU with AMX the "on" load is skipped
unless ``--force`` (it would crash).

    python bench/repack.py [--model qwen2.5-coder-0.5b] [--threads 2] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from decode_scaling import step_seconds  # noqa: E402
from ttscale.backends.llama_cpp import LlamaCppBackend  # noqa: E402
from ttscale.backends.llama_cpu import ENV, cpu_has_amx  # noqa: E402


def prefill_seconds(be: LlamaCppBackend, tokens: int, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        be.forget_prefixes()
        be._lc.llama_memory_clear(be._mem, True)
        t = time.perf_counter()
        for start in range(0, tokens, 256):
            n = min(256, tokens - start)
            be._decode([(100 + (start + j) % 500, start + j, 1, start + j == tokens - 1) for j in range(n)])
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(model: str, threads: int, steps: int, repack: str) -> dict[str, float]:
    os.environ[ENV] = repack
    be = LlamaCppBackend(model, n_ctx=4096, n_seq_max=8, n_threads=threads)
    assert be.repack.extra_buffers == (repack == "on"), be.repack
    out = {"prefill_512_s": prefill_seconds(be, 512),
           "decode_n1_s": min(step_seconds(be, 1, steps) for _ in range(2)),
           "decode_n8_s": min(step_seconds(be, 8, steps) for _ in range(2))}
    be.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--force", action="store_true", help="load with repacking on even on an AMX CPU")
    args = ap.parse_args()
    amx = cpu_has_amx()
    print(f"model={args.model} threads={args.threads} cpu_has_amx={amx}")
    if amx and not args.force:
        print("this CPU has AMX: repacking on would crash llama.cpp here; nothing to compare (use --force)")
        print("bench: repack_speedup_decode = nan")
        return
    off = measure(args.model, args.threads, args.steps, "off")
    on = measure(args.model, args.threads, args.steps, "on")
    for key in on:
        print(f"  {key}: repack on {on[key] * 1e3:8.1f} ms, off {off[key] * 1e3:8.1f} ms, on is x{off[key] / on[key]:.2f} faster")
    print(f"bench: repack_speedup_prefill = {off['prefill_512_s'] / on['prefill_512_s']:.2f}")
    print(f"bench: repack_speedup_decode = {off['decode_n1_s'] / on['decode_n1_s']:.2f}")
    print(f"bench: repack_speedup_decode_n8 = {off['decode_n8_s'] / on['decode_n8_s']:.2f}")


if __name__ == "__main__":
    main()
