"""Every search / early-stopping strategy runs from the CLI (scripted backend, no model)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ttscale.cli import app

CASES = [
    ["--strategy", "beam", "-k", "4", "--beam-width", "2", "--verifier", "certainty", "--aggregate", "min"],
    ["--strategy", "dvts", "-k", "4", "--beam-width", "2", "--verifier", "certainty"],
    ["--strategy", "particle-filter", "-k", "4", "--temperature-pf", "0.3", "--verifier", "oracle"],
    ["--strategy", "best-first", "-k", "3", "--beam-width", "2", "--verifier", "certainty", "--step-tokens", "20"],
    ["--strategy", "revision", "-k", "2"],
    ["--strategy", "short-m@k", "-k", "4", "--m", "2"],
    ["--strategy", "adaptive-consistency", "-k", "8", "--batch", "2", "--threshold", "0.9", "--rule", "dirichlet"],
]


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"What is {i} + 1?", "answer": "42"}) + "\n" for i in range(2)))
    return p


@pytest.mark.parametrize("args", CASES, ids=[c[1] for c in CASES])
def test_strategy_runs_from_the_cli(args, data, tmp_path) -> None:
    out = tmp_path / "out.json"
    r = CliRunner().invoke(app, ["run", "--backend", "fake", "--task", "jsonl", "--data", str(data), "--style",
                                 "completion", "--store", str(tmp_path / "s.sqlite"), "--output", str(out),
                                 "--no-progress", "--max-tokens-per-problem", "2000", *args])
    assert r.exit_code == 0, r.output
    summary = json.loads(out.read_text())
    assert summary["problems"] == 2
    assert all(x["usage"]["total_tokens"] <= 2000 for x in summary["results"])


def test_knob_for_the_wrong_strategy_is_a_one_line_error(data, tmp_path) -> None:
    r = CliRunner().invoke(app, ["run", "--backend", "fake", "--task", "jsonl", "--data", str(data), "--style",
                                 "completion", "--store", str(tmp_path / "s.sqlite"), "--strategy", "self-consistency",
                                 "--beam-width", "2"])
    assert r.exit_code != 0 and "takes no --beam-width" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["run", "--backend", "fake", "--task", "jsonl", "--data", str(data), "--style",
                                 "completion", "--store", str(tmp_path / "s.sqlite"), "--strategy", "beam",
                                 "--verifier", "judge"])
    assert r.exit_code != 0 and "next-token" in r.output and "Traceback" not in r.output
