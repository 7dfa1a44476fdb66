"""Sandbox throughput: checks/s for 200 passing HumanEval programs, parallel vs serial,
and the per-check overhead of the sandbox against bare interpreter subprocesses.

Programs are the canonical solutions with their full tests (164, then repeated up to 200), checked
as the graders do: two processes (the answer's and the tests', see ttscale.code_check).
Baselines are measured in the same run:
  - the old one-process check in the same sandbox (answer, then tests, pass = exit status 0):
    the difference is the per-check cost of the unforgeable harness
  - bare `python -c PROGRAM` (the interpreter's default start-up, site import included)
  - bare `python -I -S -c PROGRAM` (the flags the sandbox itself uses, so the difference
    is the sandbox's own cost: launcher, namespaces, mounts, uid switch, status file)

Usage: .venv/bin/python bench/sandbox.py [--n 200] [--mode auto|isolated|guarded]
Last lines: `bench: harness_overhead_ms = <two-process minus one-process, per check>` and
`bench: sandbox_parallel_speedup = <parallel checks/s / serial checks/s>`.
The CPU is shared with other jobs: absolute figures are noisy, ratios less so.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from ttscale.code_check import CheckPrograms
from ttscale.sandbox import Limits, Sandbox
from ttscale.tasks.humaneval import HumanEvalTask, check_program, solution_source


def programs(n: int) -> tuple[list[CheckPrograms], list[str]]:
    """(two-process checks, the same checks as one program each: the pre-harness form)."""
    task = HumanEvalTask()
    probs = [p for p in task.problems() if p.reference is not None]
    checks = [check_program(p, p.reference) for p in probs]  # type: ignore[arg-type]
    single = [f"{solution_source(p, p.reference)}\n\n{p.meta['test']}\n\ncheck({p.meta['entry_point']})\n"  # type: ignore[arg-type]
              for p in probs]
    return [checks[i % len(checks)] for i in range(n)], [single[i % len(single)] for i in range(n)]


def timed(label: str, fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    ok = fn()
    dt = time.perf_counter() - t0
    print(f"{label:<38} {dt:7.2f} s   passed {ok}")
    return dt


def bare(progs: list[str], flags: list[str]) -> int:
    py = os.path.realpath(sys.executable)
    return sum(subprocess.run([py, *flags, "-c", p], capture_output=True).returncode == 0 for p in progs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--mode", default="auto", choices=["auto", "isolated", "guarded"])
    args = ap.parse_args()
    checks, progs = programs(args.n)
    cores = os.cpu_count() or 1
    limits = Limits(cpu_s=10, wall_s=60)  # generous: a loaded machine must not turn passes into timeouts
    serial = Sandbox(limits=limits, mode=args.mode, workers=1)  # type: ignore[arg-type]
    parallel = Sandbox(limits=limits, mode=args.mode, workers=cores)  # type: ignore[arg-type]
    print(f"{len(progs)} canonical HumanEval programs, {cores} cores, sandbox mode {serial.resolved_mode}")
    parallel.run("pass\n")  # warm the page cache and the mode probe

    t_serial = timed("sandbox two-process check, serial", lambda: sum(r.passed for r in serial.run_many(checks)))
    t_par = timed(f"sandbox two-process, parallel ({cores})", lambda: sum(r.passed for r in parallel.run_many(checks)))
    t_single = timed("sandbox one-process check, serial", lambda: sum(r.passed for r in serial.run_many(progs)))
    t_bare = timed("bare `python -c`, serial", lambda: bare(progs, []))
    t_bare_is = timed("bare `python -I -S -c`, serial", lambda: bare(progs, ["-I", "-S"]))

    n = len(progs)
    print()
    print(f"checks/s serial {n / t_serial:.1f}, parallel {n / t_par:.1f}")
    print(f"per check: sandbox {1000 * t_serial / n:.0f} ms, bare python -c {1000 * t_bare / n:.0f} ms, "
          f"bare python -I -S -c {1000 * t_bare_is / n:.0f} ms")
    print(f"sandbox overhead per check: {1000 * (t_serial - t_bare) / n:+.0f} ms vs bare python -c, "
          f"{1000 * (t_serial - t_bare_is) / n:+.0f} ms vs bare python -I -S -c")
    print(f"harness: two-process {1000 * t_serial / n:.0f} ms vs one-process {1000 * t_single / n:.0f} ms per check")
    print(f"bench: sandbox_overhead_vs_bare_ratio = {t_serial / t_bare:.2f}")
    print(f"bench: harness_overhead_ms = {1000 * (t_serial - t_single) / n:.1f}")
    print(f"bench: sandbox_parallel_speedup = {t_serial / t_par:.2f}")


if __name__ == "__main__":
    main()
