"""speculative-reasoning on the real embedded engine, kept short: the CLI path with the 0.5B model as both
the draft (``-o draft=``, which the CLI opens once with the run's engine settings, as ``--draft-model``) and
the base (``--model``), one GSM8K problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.cli import app

pytestmark = [pytest.mark.model, pytest.mark.external("qwen2.5-coder-0.5b")]
MODEL = "qwen2.5-coder-0.5b"


def test_cli_run_drafts_scores_and_accounts_per_phase(tmp_path: Path) -> None:
    out = tmp_path / "sum.json"
    r = CliRunner().invoke(app, ["run", "--task", "gsm-symbolic", "--strategy", "speculative-reasoning",
                                 "-o", f"draft={MODEL}", "-o", "threshold=5", "--step-tokens", "32", "--max-steps", "3",
                                 "--model", MODEL, "--threads", "2", "--limit", "1", "--max-tokens", "96", "--temperature", "0",
                                 "--store", str(tmp_path / "s.sqlite"), "--output", str(out), "--no-progress"],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    res = data["results"][0]
    spec = res["meta"]["speculative"]
    assert spec["draft_model"] == data["model"] == MODEL and spec["threshold"] == 5.0
    assert 1 <= spec["steps"] <= 3 and spec["accepted"] + spec["rejected"] == spec["drafted"] >= 1
    scores = [s for c in spec["chains"] for s in c["scores"]]
    assert scores and all(0.0 <= s <= 9.0 for s in scores)
    usage = spec["usage"]
    assert usage["draft"]["generated_tokens"] > 0 and usage["score"]["prefilled_tokens"] > 0
    assert usage["score"]["generated_tokens"] == 0  # scoring is a prefill, never a generation
    assert (usage["rewrite"]["generated_tokens"] > 0) == (spec["rejected"] > 0)
    for f in ("prefilled_tokens", "generated_tokens"):
        assert sum(usage[p][f] for p in ("draft", "score", "rewrite")) == res["usage"][f]
