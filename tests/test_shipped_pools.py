"""The reference pools shipped in ttscale/pools load without generating anything, and replay reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.pools import pool_files, shipped_runs, shipped_store
from ttscale.replay.pool_file import read_pool_file

pytestmark = pytest.mark.skipif(not pool_files(), reason="this checkout ships no pool files")


def test_every_shipped_pool_verifies_and_says_how_it_was_made() -> None:
    for f in pool_files():
        header, problems, samples = read_pool_file(f)
        assert header["command"].startswith("ttscale sweep") and header["run_id"] in f.name
        assert len(samples) == header["samples"] > 0 and problems
        assert all("token_logprobs" in s and "finish_order" in s for _, s in samples[:50])
    assert sum(f.stat().st_size for f in pool_files()) < 25e6  # the size budget for all pools


def test_report_and_experiment_on_the_shipped_humaneval_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if "humaneval-qwen05-k16" not in shipped_runs():
        pytest.skip("no shipped HumanEval pool")
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path / "cache"))  # built from the files, not a leftover
    from ttscale.cli import app

    r = CliRunner()
    res = r.invoke(app, ["report", "humaneval-qwen05-k16", "--store", "shipped", "--out", str(tmp_path / "rep"),
                         "--bootstrap", "20", "--orders", "8"])
    assert res.exit_code == 0, res.output
    assert "false positives" in res.output and (tmp_path / "rep" / "code_verifier.png").exists()
    res = r.invoke(app, ["experiment", "imperfect-verifier", "--output", str(tmp_path / "exp")])
    assert res.exit_code == 0, res.output
    assert shipped_store().exists()
