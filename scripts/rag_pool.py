"""Generate the RAG configuration pools (issue 25) resumably: one stored run per (k, m, n).

Run under ``model-job``, in chunks: every configuration is a ``ttscale sweep`` (DRAG, n = 0) or a
``ttscale run --strategy iterdrag`` (n >= 1) under its own run id, so rerunning the same command
continues where the last chunk stopped (each sweep wave and each IterDRAG question is committed as
it finishes). ``--minutes`` bounds one chunk: no configuration starts after it, and the one running
is stopped at it (its finished problems are kept).

    model-job .venv/bin/python scripts/rag_pool.py --minutes 9            # the pilot grid, next chunk
    .venv/bin/python scripts/rag_pool.py --dry-run                        # the commands, nothing run
    .venv/bin/python scripts/rag_pool.py --export src/ttscale/pools       # write the finished pools

Configurations whose longest prompt (plus the samples' tokens) does not fit the engine's context are
skipped before anything is generated and listed as such.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from ttscale.experiments.rag_scaling import PILOT, RagConfig, run_command, too_long


def _done(store: Path, run_id: str, want: int) -> bool:
    from ttscale.store import Store

    if not store.exists():
        return False
    s = Store(store)
    try:
        rec = s.get_run(run_id)
        if rec is None:
            return False
        return rec.status == "done" and len({r["problem_id"] for r in s.results(run_id)}) >= want
    finally:
        s.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=Path("runs/rag.sqlite"))
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--prefix", default="rag-qwen05")
    ap.add_argument("--limit", type=int, default=30, help="evaluated questions")
    ap.add_argument("--samples", type=int, default=2, help="DRAG samples per question (IterDRAG: one)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--minutes", type=float, default=9.0, help="stop this chunk after this long")
    ap.add_argument("--n-ctx", type=int, default=16384, help="the engine's context (its default)")
    ap.add_argument("--only", nargs="*", default=None, help="run ids to run (default: the pilot grid)")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--export", type=Path, default=None, help="export the finished runs to this directory")
    a = ap.parse_args()
    grid: list[RagConfig] = [c for c in PILOT if a.only is None or c.run_id(a.prefix) in a.only]
    if a.export is not None:
        return _export(a, grid)
    deadline = time.monotonic() + a.minutes * 60
    for cfg in grid:
        rid = cfg.run_id(a.prefix)
        cmd = run_command(cfg, model=a.model, store=str(a.store), limit=a.limit, samples=a.samples,
                          max_tokens=a.max_tokens, prefix=a.prefix)
        if a.dry_run:
            print(" ".join(cmd))
            continue
        if _done(a.store, rid, a.limit):
            print(f"{rid}: done")
            continue
        why = too_long(cfg, model=a.model, limit=a.limit, samples=a.samples, max_tokens=a.max_tokens, n_ctx=a.n_ctx)
        if why:
            print(f"{rid}: skipped, {why}")
            continue
        left = deadline - time.monotonic()
        if left < 20:
            print("chunk over: rerun the same command to continue")
            return 0
        print(f"{rid}: {' '.join(cmd)}", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "ttscale", *cmd[1:]], check=False, timeout=left)
        except subprocess.TimeoutExpired:
            print(f"{rid}: stopped at the chunk's end (its finished problems are stored)")
            return 0
    return 0


def _export(a: argparse.Namespace, grid: list[RagConfig]) -> int:
    from ttscale.replay.pool_file import export_run
    from ttscale.store import Store

    s = Store(a.store)
    try:
        for cfg in grid:
            rid = cfg.run_id(a.prefix)
            if s.get_run(rid) is None:
                continue
            cmd = run_command(cfg, model=a.model, store=str(a.store), limit=a.limit, samples=a.samples,
                              max_tokens=a.max_tokens, prefix=a.prefix)
            # IterDRAG runs are not sweeps: they ship beside the sweeps, under iterdrag/
            out = a.export / (f"{rid}.jsonl.gz" if cfg.n == 0 else f"iterdrag/{rid}.jsonl.gz")
            info = export_run(s, rid, out, command=" ".join(cmd))
            print(f"{out}: {info.problems} problems, {info.samples} samples")
    finally:
        s.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
