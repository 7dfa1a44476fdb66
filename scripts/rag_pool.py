"""Generate the RAG configuration pools (issue 25) resumably: one stored run per (k, m, n).

Run under ``model-job``, in chunks: every configuration is a ``ttscale sweep`` (DRAG, n = 0) or a
``ttscale run --strategy iterdrag`` (n >= 1) under its own run id, so rerunning the same command
continues where the last chunk stopped (each sweep wave and each IterDRAG question is committed as
it finishes). ``--minutes`` bounds one chunk: no configuration starts after it, and the one running
is stopped at it (its finished problems are kept).

    model-job .venv/bin/python scripts/rag_pool.py --minutes 9            # the 0.5B grid, next chunk
    model-job .venv/bin/python scripts/rag_pool.py --grid larger --model qwen2.5-coder-1.5b \
        --prefix rag-qwen15 --minutes 9                                   # the 1.5B's fewer configurations
    .venv/bin/python scripts/rag_pool.py --dry-run                        # the commands, nothing run
    .venv/bin/python scripts/rag_pool.py --export src/ttscale/pools       # write the finished pools
    .venv/bin/python scripts/rag_pool.py --export src/ttscale/pools --grid larger --prefix rag-qwen15

Configurations whose longest prompt (plus the samples' tokens) does not fit the engine's context are
skipped before anything is generated and listed as such.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ttscale.experiments.pool_jobs import PoolJob, export_jobs, run_chunk
from ttscale.experiments.rag_scaling import GRIDS, RagConfig, parse_run_id, run_command, too_long
from ttscale.pools import POOL_DIR


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
    ap.add_argument("--grid", choices=sorted(GRIDS), default="full",
                    help="full: the smaller model's grid (the pilot first); larger: the larger model's few")
    ap.add_argument("--only", nargs="*", default=None, help="run ids to run (default: all of --grid)")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--export", type=Path, default=None, help="export the finished runs to this directory")
    ap.add_argument("--fresh", action="store_true",
                    help="do not start a run that is missing from --store from its shipped pool file")
    a = ap.parse_args()
    grid: list[RagConfig] = [c for c in GRIDS[a.grid] if a.only is None or c.run_id(a.prefix) in a.only]
    # IterDRAG runs are not sweeps: they ship beside the sweeps, under iterdrag/
    jobs = [PoolJob(c.run_id(a.prefix), run_command(c, model=a.model, store=str(a.store), limit=a.limit,
                                                     samples=a.samples, max_tokens=a.max_tokens, prefix=a.prefix),
                    f"{c.run_id(a.prefix)}.jsonl.gz" if c.n == 0 else f"iterdrag/{c.run_id(a.prefix)}.jsonl.gz")
            for c in grid]
    if a.export is not None:
        return export_jobs(jobs, a.store, a.export)

    def skip(job: PoolJob) -> str | None:
        parsed = parse_run_id(job.run_id)
        assert parsed is not None
        return too_long(parsed[1], model=a.model, limit=a.limit, samples=a.samples, max_tokens=a.max_tokens,
                        n_ctx=a.n_ctx)

    return run_chunk(jobs, a.store, a.limit, a.minutes, dry_run=a.dry_run, skip=skip,
                     shipped=None if a.fresh else POOL_DIR)


if __name__ == "__main__":
    raise SystemExit(main())
