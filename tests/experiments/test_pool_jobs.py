"""Making pools in chunks: commands run until done, skipped when done or refused, exported with their command."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ttscale.experiments.pool_jobs import PoolJob, export_jobs, run_chunk, run_done
from ttscale.store import Store


def _job(tmp_path: Path, run_id: str, limit: int = 3, store: str = "s.sqlite") -> PoolJob:
    data = tmp_path / "q.jsonl"
    data.write_text("".join(f'{{"id": "p{i}", "prompt": "{i}+1?", "answer": "{i + 1}"}}\n' for i in range(3)))
    cmd = ["ttscale", "sweep", "--backend", "fake", "--task", "jsonl", "--data", str(data), "-k", "2", "--limit",
           str(limit), "--store", str(tmp_path / store), "--run-id", run_id, "--no-progress"]
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
    # a run opened but stopped before its first wave has nothing to ship
    st = Store(store)
    st.open_run("pool-c", {"task": "t"}, {"name": "m"})
    st.close()
    export_jobs([_job(tmp_path, "pool-c")], store, tmp_path / "out")
    assert "pool-c: no samples yet, not exported" in capsys.readouterr().out
    assert not (tmp_path / "out" / "sub" / "pool-c.jsonl.gz").exists()


def test_a_fresh_store_starts_from_the_shipped_file(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # an earlier machine made 2 of 3 problems and shipped them
    early = _job(tmp_path, "pool-a", limit=2, store="early.sqlite")
    run_chunk([early], tmp_path / "early.sqlite", 2, minutes=5)
    export_jobs([early], tmp_path / "early.sqlite", tmp_path / "shipped")
    made = Store(tmp_path / "early.sqlite").samples("pool-a")
    capfd.readouterr()
    # this machine's store is empty: the chunk loads the shipped file, then generates only the third problem
    job = _job(tmp_path, "pool-a")
    run_chunk([job], tmp_path / "s.sqlite", 3, minutes=5, shipped=tmp_path / "shipped")
    out = capfd.readouterr().out
    assert "pool-a: loaded from" in out and "(2 generated now, 4 already stored)" in out
    assert run_done(tmp_path / "s.sqlite", "pool-a", 3)
    assert Store(tmp_path / "s.sqlite").samples("pool-a", "p0") == [x for x in made if x[0] == "p0"]
    run_chunk([job], tmp_path / "s.sqlite", 3, minutes=5, shipped=tmp_path / "shipped")
    assert "loaded" not in capfd.readouterr().out  # the store's run is never replaced by the file
