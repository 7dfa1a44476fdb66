from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import StoreError
from ttscale.registry import make_strategy
from ttscale.run import Solve, execute
from ttscale.store import Store
from ttscale.tasks.jsonl import JsonlTask
from ttscale.types import Problem, Sample, Sampling


def _task(tmp_path: Path, n: int = 5) -> JsonlTask:
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"What is {i}+{i}?", "answer": 2 * i}) + "\n" for i in range(n)))
    return JsonlTask(str(p))


def test_roundtrip_and_duplicate_refused(tmp_path: Path) -> None:
    st = Store(tmp_path / "s.sqlite")
    st.open_run("r", {"a": 1}, {"m": 1})
    st.add_problems("r", [Problem("p", "q", "1")])
    s = Sample(0, "t", "1", True, 3, 5, 5, 10.0, "stop", logprob=-1.0, token_logprobs=[-0.5, -0.5])
    st.add_samples("r", "p", [s])
    [(pid, back)] = st.samples("r")
    assert pid == "p" and back == s
    with pytest.raises(StoreError):
        st.add_samples("r", "p", [s])


def test_resume_with_other_config_refused(tmp_path: Path) -> None:
    st = Store(tmp_path / "s.sqlite")
    st.open_run("r", {"k": 8}, {})
    with pytest.raises(StoreError, match="different configuration"):
        st.open_run("r", {"k": 16}, {})
    _, resumed = st.open_run("r", {"k": 8}, {})
    assert resumed


def test_resumable_problems_only_for_the_same_run_and_enough_of_them(tmp_path: Path) -> None:
    st = Store(tmp_path / "s.sqlite")
    assert st.resumable_problems("r", {"k": 8}, 2) is None  # no such run
    st.open_run("r", {"k": 8}, {})
    probs = [Problem(f"p{i}", f"q{i}", str(i), {"template": f"{i:04d}"}) for i in range(3)]
    st.add_problems("r", probs)
    assert st.resumable_problems("r", {"k": 8}, 2) == probs[:2]
    assert st.resumable_problems("r", {"k": 8}, 3) == probs
    assert st.resumable_problems("r", {"k": 8}, 4) is None  # more than stored: the task must say which
    assert st.resumable_problems("r", {"k": 8}, None) is None  # the task's size is unknown here
    assert st.resumable_problems("r", {"k": 16}, 2) is None  # other settings: open_run refuses them later


def test_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_text("this is not sqlite" * 100)
    with pytest.raises(StoreError):
        Store(bad)


def test_run_and_resume_skips_finished(tmp_path: Path) -> None:
    task = _task(tmp_path)
    st = Store(tmp_path / "s.sqlite")
    strat = make_strategy("self-consistency", k=4)
    b1 = FakeBackend(answers=lambda prompt: {"2": 1.0})
    s1 = execute(Solve(task, strat, sampling=Sampling(seed=3)), store=st, run_id="r", backend=b1, limit=3)
    assert s1.problems == 3 and len(b1.history) == 3
    b2 = FakeBackend(answers=lambda prompt: {"2": 1.0})
    s2 = execute(Solve(task, strat, sampling=Sampling(seed=3)), store=st, run_id="r", backend=b2, limit=5)
    assert s2.problems == 5 and s2.skipped == 3 and len(b2.history) == 2
    assert st.sample_count("r") == 20


KILL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from ttscale.backends.fake import FakeBackend
    from ttscale.registry import make_strategy
    from ttscale.run import Solve, execute
    from ttscale.store import Store
    from ttscale.strategies.base import Sampling
    from ttscale.tasks.jsonl import JsonlTask
    from ttscale.cost import Budget

    task = JsonlTask(sys.argv[1])
    # max_tokens 20 with a 300-token budget: each problem's 8 samples come in several waves
    backend = FakeBackend(answers={"2": 0.7, "3": 0.3}, delay_s=0.05)
    execute(Solve(task, make_strategy("self-consistency", k=8), Sampling(seed=1, max_tokens=20), Budget(tokens=300)),
            backend=backend, store=Store(sys.argv[2]), run_id="killed")
    """
)


def test_sigkill_mid_run_loses_nothing(tmp_path: Path) -> None:
    task = _task(tmp_path, n=30)
    db = tmp_path / "kill.sqlite"
    script = tmp_path / "victim.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), task.path, str(db)], env=os.environ.copy())
    try:
        deadline = time.time() + 60
        stored = 0
        while time.time() < deadline:
            time.sleep(0.05)
            if db.exists():
                try:
                    with sqlite3.connect(db) as c:
                        stored = c.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
                except sqlite3.OperationalError:
                    continue
                if stored >= 20:
                    break
        assert stored >= 20, "victim never stored samples"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    st = Store(db)
    before = {(pid, s.index): s for pid, s in st.samples("killed")}
    assert len(before) >= 20
    done_before = st.done_problems("killed")
    assert len(done_before) < 30, "the run finished before it was killed; the test proves nothing"

    backend = FakeBackend(answers={"2": 0.7, "3": 0.3})
    from ttscale.cost import Budget

    summary = execute(Solve(task, make_strategy("self-consistency", k=8), sampling=Sampling(seed=1, max_tokens=20), budget=Budget(tokens=300)), store=st, run_id="killed", backend=backend)
    after = {(pid, s.index): s for pid, s in st.samples("killed")}
    # every sample stored before the kill is still there, unchanged
    for key, s in before.items():
        assert after[key] == s
    # finished problems were not touched; unfinished ones only generated what was missing
    generated = sum(r.n for r in backend.history)
    assert generated == len(after) - len(before)
    assert summary.problems == 30
    assert summary.skipped == len(done_before)
    for r in st.results("killed"):
        assert r["usage"]["total_tokens"] <= 300


def test_a_store_of_schema_1_is_migrated_and_resumes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Stores written before the ``grade`` column (schema 1, version kept in ``meta``) open and resume."""
    import sqlite3

    from ttscale.store import _SCHEMA, SCHEMA_VERSION

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA.replace("    grade TEXT,\n", ""))
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO runs (run_id, created, config, model, code_version) VALUES ('r', 0, '{}', '{}', '0')")
    db.execute("INSERT INTO problems (run_id, problem_id, position, prompt, reference, meta) VALUES ('r','p',0,'q','1','{}')")
    db.execute("INSERT INTO samples VALUES ('r','p',0,'t','1',1,3,2,2,1.0,'stop',-1.0,NULL,0,0,0.1,'{}',0)")
    db.commit()
    db.close()
    st = Store(path)
    [(pid, s)] = st.samples("r")
    assert (pid, s.answer, s.correct, s.grade) == ("p", "1", True, {})
    st.add_samples("r", "p", [Sample(index=1, text="u", answer="2", correct=False, n_tokens=1, prompt_tokens=2,
                                     prefilled_tokens=0, flops=0.0, finish_reason="stop",
                                     grade={"status": "fail", "reason": "x"})])
    assert st.samples("r")[1][1].grade == {"status": "fail", "reason": "x"}
    assert st._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    st.close()
    Store(path).close()  # opens again without migrating twice


def test_a_store_from_a_newer_ttscale_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    path = tmp_path / "new.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)
