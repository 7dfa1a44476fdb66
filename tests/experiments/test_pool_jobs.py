"""Making pools in chunks: commands run until done, skipped when done or refused, exported with their command."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ttscale.experiments.pool_jobs import PoolJob, export_jobs, run_chunk, run_done


def _job(tmp_path: Path, run_id: str) -> PoolJob:
    data = tmp_path / "q.jsonl"
    data.write_text("".join(f'{{"id": "p{i}", "prompt": "{i}+1?", "answer": "{i + 1}"}}\n' for i in range(3)))
    cmd = ["ttscale", "sweep", "--backend", "fake", "--task", "jsonl", "--data", str(data), "-k", "2", "--limit", "3",
           "--store", str(tmp_path / "s.sqlite"), "--run-id", run_id, "--no-progress"]
    return PoolJob(run_id, cmd, f"sub/{run_id}.jsonl.gz")


def test_a_chunk_runs_what_is_not_done_and_skips_what_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    a, b = _job(tmp_path, "pool-a"), _job(tmp_path, "pool-b")
    assert not run_done(store, "pool-a", 3)
    run_chunk([a, b], store, 3, minutes=5, skip=lambda j: "too long for the context" if j is b else None)
    out = capsys.readouterr().out
    assert run_done(store, "pool-a", 3) and not run_done(store, "pool-b", 3)
    assert "pool-b: skipped, too long for the context" in out
    run_chunk([a], store, 3, minutes=5)
    assert "pool-a: done" in capsys.readouterr().out
    run_chunk([a, b], store, 3, minutes=5, dry_run=True)
    assert capsys.readouterr().out.splitlines() == [" ".join(a.command), " ".join(b.command)]
    export_jobs([a, b], store, tmp_path / "out")
    path = tmp_path / "out" / "sub" / "pool-a.jsonl.gz"
    with gzip.open(path, "rt") as f:
        header = json.loads(f.readline())
    assert header["problems"] == 3 and header["command"] == " ".join(a.command)
    assert not (tmp_path / "out" / "sub" / "pool-b.jsonl.gz").exists()
