"""scripts/plan_tables.py turns comparison files into the tables docs/planner.md shows."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "plan_tables.py"


@pytest.fixture(scope="module")
def plan_tables() -> Any:
    spec = importlib.util.spec_from_file_location("plan_tables", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(budget: float, diff: float, verdict: str, label: str = "majority@2") -> dict[str, Any]:
    return {"budget": budget, "level_budget_tokens": budget, "policy_cost": budget * 0.9, "fixed_cost": budget * 0.8,
            "fixed": {"label": label, "train_accuracy": 0.5},
            "paired": {"policy": 0.6, "fixed": 0.6 - diff, "difference": diff,
                       "difference_ci": [diff - 0.01, diff + 0.01], "verdict": verdict}}


def _cmp(seed: int, verdicts: list[str]) -> dict[str, Any]:
    rows = [_row(100.0 * (i + 1), 0.02 if v == "policy better" else -0.02 if v == "fixed better" else 0.0, v)
            for i, v in enumerate(verdicts)]
    return {"train_problems": 10, "test_problems": 12, "test_families": 4, "seed": seed, "tokens": rows,
            "usd": {"h100": [dict(r, budget=r["budget"] / 1e6, policy_cost=r["policy_cost"] / 1e6,
                                  fixed_cost=r["fixed_cost"] / 1e6) for r in rows]}}


def test_token_table_serves_what_the_verdict_says(plan_tables: Any) -> None:
    table = plan_tables.token_table(_cmp(0, ["policy better", "fixed better"]))
    lines = table.splitlines()
    assert lines[2].endswith("| policy better -> policy |")
    assert lines[3].endswith("| fixed better -> majority@2 |")
    assert "| 100 | 0.600 (90) | majority@2 (0.500) | 0.580 (80) | +0.020 [+0.010, +0.030] |" in lines[2]
    over = _cmp(0, ["policy better"])
    over["tokens"][0] |= {"policy_cost": 120.0, "fixed_budget": 120.0}
    assert "| 100 | 0.600 (120) | majority@2 (0.500) within 120 |" in plan_tables.token_table(over)
    over["tokens"][0]["paired"]["verdict"] = "not resolved"
    over["tokens"][0]["fixed_in_budget"] = {"label": "majority@1"}
    assert plan_tables.token_table(over).endswith("| not resolved -> majority@1 |")


def test_splits_table_counts_each_level(plan_tables: Any) -> None:
    table = plan_tables.splits_table([_cmp(0, ["policy better", "not resolved"]),
                                      _cmp(1, ["policy better", "fixed better"])])
    assert "| 50% | +0.020 | 2 | 0 |" in table
    assert "| 100% | -0.010 | 0 | 1 |" in table
    assert "2 of 4 (split, level) pairs show the policy better and 1 worse." in table


def test_cli_prints_every_profile(plan_tables: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "cmp.json"
    f.write_text(json.dumps(_cmp(3, ["not resolved"])))
    monkeypatch.setattr(sys, "argv", ["plan_tables.py", str(f)])
    plan_tables.main()
    out = capsys.readouterr().out
    assert "10 train / 12 held-out problems (4 held-out families), split seed 3" in out
    assert "Per dollar on `h100`" in out and "| 0.100 | 100 |" in out
    assert "Across splits" not in out
