"""``ttscale sweep``: pools land in the store, resume without regenerating, and feed replay."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.backends.fake import FakeBackend
from ttscale.cli import app
from ttscale.errors import ConfigError, StoreError
from ttscale.replay import load_pool
from ttscale.run import Progress, Sweep, execute
from ttscale.store import Store
from ttscale.tasks.jsonl import JsonlTask
from ttscale.types import PromptFormat, Sampling
from ttscale.verifiers.certainty import CertaintyVerifier
from ttscale.verifiers.oracle import OracleVerifier


def task(tmp_path: Path, n: int = 3) -> JsonlTask:
    p = tmp_path / "q.jsonl"
    p.write_text("".join(f'{{"id": "q{i}", "prompt": "What is {i}?", "answer": "42"}}\n' for i in range(n)))
    return JsonlTask(path=str(p), fmt=PromptFormat(style="completion", max_tokens=32))


def backend() -> FakeBackend:
    return FakeBackend(answers={"42": 0.6, "41": 0.4}, filler_tokens=lambda r: r.randint(1, 9))


def test_sweep_stores_k_samples_with_scores_and_progress(tmp_path: Path) -> None:
    st = Store(tmp_path / "s.sqlite")
    seen: list[tuple[int, int]] = []
    t = task(tmp_path)
    s = execute(Sweep(t, 10, wave=4, verifiers=[CertaintyVerifier(), OracleVerifier(t)]), store=st, run_id="sw", backend=backend(), progress=lambda e: seen.append((e.done, e.total)))
    assert (s.problems, s.samples, s.generated) == (3, 30, 30)
    assert seen[0] == (0, 30) and seen[-1] == (30, 30) and len(seen) == 1 + 3 * 3  # waves of 4, 4, 2
    rows = st.samples("sw")
    assert all(set(x.scores) == {"certainty", "oracle"} for _, x in rows)
    assert all(x.scores["oracle"] == float(bool(x.correct)) for _, x in rows)
    assert st.get_run("sw").kind == "sweep"  # type: ignore[union-attr]
    assert len(st.results("sw")) == 3
    st.close()


def test_interrupted_sweep_resumes_without_regenerating(tmp_path: Path) -> None:
    t = task(tmp_path)
    ref = Store(tmp_path / "ref.sqlite")
    execute(Sweep(t, 8, wave=3, sampling=Sampling(seed=5)), store=ref, run_id="sw", backend=backend())
    want = [(p, s.index, s.text) for p, s in ref.samples("sw")]

    st = Store(tmp_path / "s.sqlite")
    calls = {"n": 0}

    def boom(event: Progress) -> None:
        calls["n"] += 1
        assert event.unit == "samples"
        if event.done >= 11:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(Sweep(t, 8, wave=3, sampling=Sampling(seed=5)), store=st, run_id="sw", backend=backend(), progress=boom)
    stored = st.sample_count("sw")
    assert 0 < stored < 24
    be = backend()
    s = execute(Sweep(t, 8, wave=3, sampling=Sampling(seed=5)), store=st, run_id="sw", backend=be)
    assert s.resumed and s.generated == 24 - stored
    assert sum(r.n for r in be.history) == 24 - stored  # nothing generated twice
    assert [(p, x.index, x.text) for p, x in st.samples("sw")] == want  # same pool as uninterrupted
    with pytest.raises(StoreError, match="different configuration"):
        execute(Sweep(t, 9, sampling=Sampling(seed=5)), store=st, run_id="sw", backend=backend())
    with pytest.raises(ConfigError):
        execute(Sweep(t, 0), store=st, run_id="sw2", backend=backend())


def test_cli_sweep_curves_report(tmp_path: Path) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text("".join(f'{{"id": "q{i}", "prompt": "What is {i}?", "answer": "42"}}\n' for i in range(6)))
    db = tmp_path / "s.sqlite"
    r = CliRunner().invoke(app, ["sweep", "--backend", "fake", "--task", "jsonl", "--data", str(data), "-k", "6",
                                 "--store", str(db), "--run-id", "sw", "--verifier", "oracle", "--no-progress",
                                 "--style", "completion"])
    assert r.exit_code == 0, r.output
    assert "6 problems x 6 samples" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["curves", "sw", "--store", str(db), "--out", str(tmp_path / "c"), "--bootstrap", "20"])
    assert r.exit_code == 0, r.output
    csv_text = (tmp_path / "c.csv").read_text()
    assert csv_text.startswith("strategy,k,accuracy") and "majority,6," in csv_text
    r = CliRunner().invoke(app, ["curves", "sw", "--store", str(db), "-s", "bogus"])
    assert r.exit_code == 2 and "unknown replay strategy kind" in r.output
    r = CliRunner().invoke(app, ["curves", "nope", "--store", str(db)])
    assert r.exit_code == 2 and "no run 'nope'" in r.output
    r = CliRunner().invoke(app, ["report", "sw", "--store", str(db), "--out", str(tmp_path / "rep"), "--bootstrap", "20",
                                 "-s", "pass", "-s", "majority", "-s", "bon:score=oracle"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rep" / "report.html").stat().st_size > 10_000


@pytest.mark.model
def test_real_model_sweep_feeds_replay(tmp_path: Path, smollm) -> None:  # type: ignore[no-untyped-def]
    from ttscale.registry import make_task

    t = make_task("arithmetic", subtask="arithmetic/1_digit_multiplication", style="completion", max_tokens=8,
                  chat_model=False)
    st = Store(tmp_path / "s.sqlite")
    s = execute(Sweep(t, 2, verifiers=[CertaintyVerifier()]), store=st, run_id="real", backend=smollm, limit=2)
    assert s.samples == 4
    pool = load_pool(st, "real")
    assert (pool.n_problems, pool.k) == (2, 2)
    assert (pool.n_tokens > 0).all() and (pool.prefill_tokens >= 0).all() and (pool.sample_flops > 0).all()
    assert (pool.logprob < 0).all()  # real log-probs from the engine
    from ttscale.replay import compute_curves

    c = compute_curves(pool, budgets=[1, 2], n_bootstrap=20)
    assert {p.strategy for p in c.points} >= {"pass@k", "majority", "adaptive"}
    st.close()
