"""Generate the KV-eviction pools (issue 27) resumably: one stored sweep per cache configuration.

The workload: MuSiQue questions with their BM25 top ``--docs`` passages (long prompts, where a press has
something to evict), no demonstrations, ``--samples`` answers each at temperature 0.8. Configurations:

- the transformers backend without a press (the presses' reference) and with each press at each ratio;
- llama.cpp at f16 (the precisions' reference), q8_0 and q8_0/q4_0 (the KV precision lever);
- the transformers backend with fewer passages (the retrieval lever).

``--workload chains`` makes the long-reasoning pools instead: GSM8K problems (``--task gsm-symbolic``, the
prompt and 512-token cap of the shipped GSM8K pools, whose llama.cpp f16 / q8_0 / q4_0 runs are this
workload's engine reference and precisions), the transformers backend without a press and with each press
evicting each sample's cells down to each of ``--caps`` while the chain is written (``-B decode_kv=N``).

Fewer samples (the sampling lever) is replayed from these pools by the experiment. Run under
``model-job`` in chunks: rerunning the same command continues where the last one stopped (each
question's wave is committed when it finishes); ``--minutes`` bounds one chunk.

    model-job .venv/bin/python scripts/kv_eviction_pool.py --minutes 40          # next chunk
    .venv/bin/python scripts/kv_eviction_pool.py --dry-run                         # the commands
    .venv/bin/python scripts/kv_eviction_pool.py --export src/ttscale/pools        # write the finished pools
    model-job .venv/bin/python scripts/kv_eviction_pool.py --workload chains --minutes 40   # reasoning chains

Then ``ttscale experiment kv-eviction`` (docs/experiments/kv-eviction.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ttscale.experiments.kv_eviction import (
    GRID_CAPS,
    GRID_PRESSES,
    GRID_RATIOS,
    POOL_SUBDIR,
    PoolConfig,
    chain_grid,
    grid,
)
from ttscale.experiments.pool_jobs import PoolJob, export_jobs, run_chunk
from ttscale.pools import POOL_DIR


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=Path("runs/kv-eviction.sqlite"))
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--prefix", default="kvev-qwen05")
    ap.add_argument("--workload", choices=("rag", "chains"), default="rag",
                    help="rag: MuSiQue with many passages; chains: GSM8K reasoning chains, evicted while decoding")
    ap.add_argument("--caps", default=",".join(map(str, GRID_CAPS)), help="chains: cells per sample each press keeps while decoding")
    ap.add_argument("--limit", type=int, default=20, help="evaluated questions")
    ap.add_argument("--docs", type=int, default=10, help="passages per question (the reference)")
    ap.add_argument("--fewer-docs", default="5,2", help="the retrieval lever's passage counts")
    ap.add_argument("--samples", type=int, default=None, help="answers per question (default 2; chains 4)")
    ap.add_argument("--max-tokens", type=int, default=None, help="default 24; chains 512 (the shipped pools')")
    ap.add_argument("--presses", default=",".join(GRID_PRESSES))
    ap.add_argument("--ratios", default=",".join(map(str, GRID_RATIOS)))
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                    help="the transformers backend's weights and cache (default: rag float32, chains bfloat16)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=40.0, help="stop this chunk after this long")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--export", type=Path, default=None, help="export the finished runs to this directory")
    ap.add_argument("--fresh", action="store_true",
                    help="do not start a run that is missing from --store from its shipped pool file")
    a = ap.parse_args()
    chains = a.workload == "chains"
    a.samples = a.samples or (4 if chains else 2)
    a.max_tokens = a.max_tokens or (512 if chains else 24)
    if chains:
        cfgs = chain_grid(presses=a.presses.split(","), caps=[int(c) for c in a.caps.split(",")],
                          dtype=a.dtype or "bfloat16")
    else:
        cfgs = grid(presses=a.presses.split(","), ratios=[float(r) for r in a.ratios.split(",")], docs=a.docs,
                    fewer_docs=[int(d) for d in a.fewer_docs.split(",") if d])
    jobs = [PoolJob(c.run_id(a.prefix), _command(a, c), f"{POOL_SUBDIR}/{c.run_id(a.prefix)}.jsonl.gz") for c in cfgs]
    if a.export is not None:
        return export_jobs(jobs, a.store, a.export)
    return run_chunk(jobs, a.store, a.limit, a.minutes, dry_run=a.dry_run, shipped=None if a.fresh else POOL_DIR)


def _command(a: argparse.Namespace, cfg: PoolConfig) -> list[str]:
    task = ["--task", "gsm-symbolic"] if a.workload == "chains" else ["--task", "rag", "-T", f"docs={cfg.docs}",
                                                                      "--shots", "0"]
    return ["ttscale", "sweep", "--store", str(a.store), "--run-id", cfg.run_id(a.prefix), *task,
            "--max-tokens", str(a.max_tokens), "--temperature", "0.8",
            "--seed", "0", "--limit", str(a.limit), "--model", a.model, "--threads", str(a.threads),
            "--no-progress", "-k", str(a.samples), "--wave", str(a.samples), *cfg.engine_flags()]


if __name__ == "__main__":
    raise SystemExit(main())
