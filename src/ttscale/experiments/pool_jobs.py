"""Making an experiment's pools in bounded chunks: one ``ttscale`` command per stored run, each resumable
by its run id, run until a deadline (the running one is stopped there; its finished problems stay stored)
and skipped once done. ``scripts/rag_pool.py`` and ``scripts/kv_eviction_pool.py`` drive it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PoolJob:
    run_id: str
    command: list[str]
    """``["ttscale", ...]``: run as ``python -m ttscale ...`` with this interpreter."""
    export_as: str = ""
    """Path of its pool file under the export directory (default ``<run_id>.jsonl.gz``)."""


def run_done(store: Path, run_id: str, want: int) -> bool:
    """Whether ``run_id`` finished with at least ``want`` problems in ``store``."""
    from ttscale.store import Store

    if not store.exists():
        return False
    s = Store(store)
    try:
        rec = s.get_run(run_id)
        return rec is not None and rec.status == "done" and len({r["problem_id"] for r in s.results(run_id)}) >= want
    finally:
        s.close()


def seed_from_shipped(store: Path, job: PoolJob, shipped: Path) -> bool:
    """Load the job's shipped pool file (``shipped / export_as``) into ``store`` unless the run is there.

    A fresh machine has an empty store: without this a chunk would generate again what an earlier
    machine made and shipped, partial pools included (their resume then adds only what is missing).
    """
    from ttscale.replay.pool_file import import_if_missing
    from ttscale.store import Store

    s = Store(store)
    try:
        return import_if_missing(shipped / (job.export_as or f"{job.run_id}.jsonl.gz"), s, job.run_id)
    finally:
        s.close()


def run_chunk(jobs: Sequence[PoolJob], store: Path, want: int, minutes: float, *, dry_run: bool = False,
              skip: Callable[[PoolJob], str | None] | None = None, shipped: Path | None = None) -> int:
    """Run the jobs not yet done, in order, until ``minutes`` have passed; ``skip(job)`` may give a reason
    to leave one out. A job whose run is not in ``store`` but has a pool file under ``shipped`` starts
    from that file. Rerun the same call to continue."""
    deadline = time.monotonic() + minutes * 60
    for job in jobs:
        if dry_run:
            print(" ".join(job.command))
            continue
        if shipped is not None and seed_from_shipped(store, job, shipped):
            print(f"{job.run_id}: loaded from {shipped}")
        if run_done(store, job.run_id, want):
            print(f"{job.run_id}: done")
            continue
        why = skip(job) if skip is not None else None
        if why:
            print(f"{job.run_id}: skipped, {why}")
            continue
        left = deadline - time.monotonic()
        if left < 30:
            print("chunk over: rerun the same command to continue")
            return 0
        print(f"{job.run_id}: {' '.join(job.command)}", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "ttscale", *job.command[1:]], check=False, timeout=left)
        except subprocess.TimeoutExpired:
            print(f"{job.run_id}: stopped at the chunk's end (its finished problems are stored)")
            return 0
    return 0


def export_jobs(jobs: Sequence[PoolJob], store: Path, out: Path) -> int:
    """Write every stored job's run as a compressed pool file under ``out``, with its command."""
    from ttscale.replay.pool_file import export_run
    from ttscale.store import Store

    s = Store(store)
    try:
        for job in jobs:
            if s.get_run(job.run_id) is None:
                continue
            if s.sample_count(job.run_id) == 0:  # stopped before its first wave: nothing to ship
                print(f"{job.run_id}: no samples yet, not exported")
                continue
            path = out / (job.export_as or f"{job.run_id}.jsonl.gz")
            info = export_run(s, job.run_id, path, command=" ".join(job.command))
            print(f"{path}: {info.problems} problems, {info.samples} samples")
    finally:
        s.close()
    return 0
