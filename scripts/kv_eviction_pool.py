"""Generate the KV-eviction pools (issue 27) resumably: one stored sweep per cache configuration.

The workload: MuSiQue questions with their BM25 top ``--docs`` passages (long prompts, where a press has
something to evict), no demonstrations, ``--samples`` answers each at temperature 0.8. Configurations:

- the transformers backend without a press (the presses' reference) and with each press at each ratio;
- llama.cpp at f16 (the precisions' reference), q8_0 and q8_0/q4_0 (the KV precision lever);
- the transformers backend with fewer passages (the retrieval lever).

Fewer samples (the sampling lever) is replayed from these pools by the experiment. Run under
``model-job`` in chunks: rerunning the same command continues where the last one stopped (each
question's wave is committed when it finishes); ``--minutes`` bounds one chunk.

    model-job .venv/bin/python scripts/kv_eviction_pool.py --minutes 40          # next chunk
    .venv/bin/python scripts/kv_eviction_pool.py --dry-run                         # the commands
    .venv/bin/python scripts/kv_eviction_pool.py --export src/ttscale/pools        # write the finished pools

Then ``ttscale experiment kv-eviction`` (docs/experiments/kv-eviction.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from ttscale.experiments.kv_eviction import PoolConfig, grid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=Path("runs/kv-eviction.sqlite"))
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--prefix", default="kvev-qwen05")
    ap.add_argument("--limit", type=int, default=20, help="evaluated questions")
    ap.add_argument("--docs", type=int, default=10, help="passages per question (the reference)")
    ap.add_argument("--fewer-docs", default="5,2", help="the retrieval lever's passage counts")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--presses", default="snapkv,streaming_llm,tova,knorm")
    ap.add_argument("--ratios", default="0.25,0.5,0.75")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=40.0, help="stop this chunk after this long")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--export", type=Path, default=None, help="export the finished runs to this directory")
    a = ap.parse_args()
    cfgs = grid(presses=a.presses.split(","), ratios=[float(r) for r in a.ratios.split(",")], docs=a.docs,
                fewer_docs=[int(d) for d in a.fewer_docs.split(",") if d])
    if a.export is not None:
        return _export(a, cfgs)
    deadline = time.monotonic() + a.minutes * 60
    for cfg in cfgs:
        rid = cfg.run_id(a.prefix)
        cmd = _command(a, cfg)
        if a.dry_run:
            print(" ".join(cmd))
            continue
        if _done(a.store, rid, a.limit):
            print(f"{rid}: done")
            continue
        left = deadline - time.monotonic()
        if left < 30:
            print("chunk over: rerun the same command to continue")
            return 0
        print(f"{rid}: {' '.join(cmd)}", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "ttscale", *cmd[1:]], check=False, timeout=left)
        except subprocess.TimeoutExpired:
            print(f"{rid}: stopped at the chunk's end (its finished questions are stored)")
            return 0
    return 0


def _command(a: argparse.Namespace, cfg: PoolConfig) -> list[str]:
    return ["ttscale", "sweep", "--store", str(a.store), "--run-id", cfg.run_id(a.prefix), "--task", "rag",
            "-T", f"docs={cfg.docs}", "--shots", "0", "--max-tokens", str(a.max_tokens), "--temperature", "0.8",
            "--seed", "0", "--limit", str(a.limit), "--model", a.model, "--threads", str(a.threads),
            "--no-progress", "-k", str(a.samples), "--wave", str(a.samples), *cfg.engine_flags()]


def _done(store: Path, run_id: str, want: int) -> bool:
    from ttscale.store import Store

    if not store.exists():
        return False
    s = Store(store)
    try:
        rec = s.get_run(run_id)
        return rec is not None and rec.status == "done" and len({r["problem_id"] for r in s.results(run_id)}) >= want
    finally:
        s.close()


def _export(a: argparse.Namespace, cfgs: list[PoolConfig]) -> int:
    from ttscale.replay.pool_file import export_run
    from ttscale.store import Store

    s = Store(a.store)
    try:
        for cfg in cfgs:
            rid = cfg.run_id(a.prefix)
            if s.get_run(rid) is None:
                continue
            out = a.export / "kv_eviction" / f"{rid}.jsonl.gz"
            info = export_run(s, rid, out, command=" ".join(_command(a, cfg)))
            print(f"{out}: {info.problems} problems, {info.samples} samples")
    finally:
        s.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
