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


def test_kv_precision_experiment_and_plan_on_the_shipped_precision_pools(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    runs = shipped_runs()
    if not {"gsm8k-qwen05-k16", "gsm8k-qwen05-q8-k16"} <= set(runs):
        pytest.skip("the q8_0 GSM8K pool is not shipped")
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path / "cache"))
    import json

    from ttscale.cli import app

    r = CliRunner()
    res = r.invoke(app, ["experiment", "kv-precision", "--output", str(tmp_path / "exp")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    page = (tmp_path / "exp" / "kv-precision.md").read_text()
    assert "| gsm-symbolic / qwen2.5-coder-0.5b | q8_0 | `gsm8k-qwen05-q8-k16` |" in page
    # the real pools: a cap that holds 16 samples at q8_0 holds 8 at f16, and the plan picks a precision for it
    cap = str(16 * (173 + 512) * 6528)
    out = tmp_path / "kv.json"
    res = r.invoke(app, ["plan", "--store", "shipped", "--pool", "gsm8k-qwen05-k16", "--kv-pool", "gsm8k-qwen05-q8-k16",
                         "--max-kv-bytes", cap, "--bins", "2", "--orders", "16", "--output", str(out)],
                   env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    plan = json.loads(out.read_text())
    assert plan["precisions"]["f16"]["max_k"] == 8 and plan["precisions"]["q8_0"]["max_k"] == 16
    assert {lv["kv_type"] for lv in plan["levels"]} <= {"f16", "q8_0"} and plan["evaluation"]["levels"]


def test_a_shipped_pool_priced_on_two_machines_without_generating(tmp_path: Path) -> None:
    if "gsm8k-qwen15-k16" not in shipped_runs():
        pytest.skip("no shipped GSM8K 1.5B pool")
    from ttscale.cli import app

    r = CliRunner().invoke(app, ["curves", "gsm8k-qwen15-k16", "--store", "shipped", "--bootstrap", "10",
                                 "--out", str(tmp_path / "c"), "--hardware", "h100", "--hardware", "cpu-2core"])
    assert r.exit_code == 0, r.output
    assert "h100 $" in r.output and "cpu-2core $" in r.output
    assert r.output.count("cheapest to 97% of the best accuracy") == 2
