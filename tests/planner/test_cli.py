"""`ttscale plan` and `ttscale run --policy --explain` end to end on the fake backend."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from typer.testing import CliRunner

from ttscale.backends.fake import FAKE_MODEL_INFO, FakeBackend
from ttscale.cli import app
from ttscale.planner.strategy import PolicyStrategy
from ttscale.run import Solve, Sweep, execute
from ttscale.store import Store
from ttscale.tasks.jsonl import JsonlTask
from ttscale.types import PromptFormat, Sampling

runner = CliRunner()


def script(prompt: str) -> dict[str, float]:
    """Problem i: settled (i % 3 == 0), contested (1), scattered and wrong (2). The reference is 42."""
    i = int(prompt.split("Problem ")[-1].split()[0])
    if i % 3 == 0:
        return {"42": 1.0}
    if i % 3 == 1:
        return {"42": 0.45, "41": 0.3, "40": 0.25}
    return {str(a): 1.0 for a in range(100, 140)}


def make_store(tmp_path: Path, n: int = 24) -> tuple[Path, Path, JsonlTask]:
    data = tmp_path / "q.jsonl"
    data.write_text("".join(f'{{"id": "q{i}", "prompt": "Problem {i} here", "answer": "42"}}\n' for i in range(n)))
    task = JsonlTask(path=str(data), fmt=PromptFormat(style="completion", max_tokens=16))
    store = tmp_path / "s.sqlite"
    st = Store(store)
    execute(Sweep(task, 8), store=st, run_id="pool", backend=FakeBackend(answers=script, filler_tokens=2))
    st.close()
    return store, data, task


def test_plan_writes_a_policy_with_held_out_evaluation(tmp_path: Path) -> None:
    store, _, task = make_store(tmp_path)
    out = tmp_path / "policy.json"
    r = runner.invoke(app, ["plan", "--pool", "pool", "--store", str(store), "--bins", "3", "--probe", "2",
                            "--orders", "8", "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert "held-out split" in r.output and "policy written" in r.output
    pol = json.loads(out.read_text())
    held = pol["evaluation"]["held_out_split"]
    assert set(held["test_problems"]).isdisjoint(pol["source"]["train_problems"])
    assert len(held["test_problems"]) + len(pol["source"]["train_problems"]) == 24

    # apply it through the library: contested problems get more samples than settled ones
    budget = pol["levels"][-1]["budget_tokens"]
    st = Store(tmp_path / "apply.sqlite")
    strat = PolicyStrategy.from_file(out, budget)
    summary = execute(Solve(task, strat, sampling=Sampling(seed=3)), store=st, run_id="apply", backend=FakeBackend(answers=script, filler_tokens=2))
    used = {r["problem_id"]: len(r["samples"]) for r in summary.results}
    assert all(r["meta"]["policy"]["choice"] for r in summary.results)
    settled = [used[f"q{i}"] for i in range(0, 24, 3)]
    contested = [used[f"q{i}"] for i in range(1, 24, 3)]
    assert sum(contested) > sum(settled)
    st.close()


def test_run_with_policy_and_explain(tmp_path: Path) -> None:
    store, data, _ = make_store(tmp_path)
    out = tmp_path / "policy.json"
    assert runner.invoke(app, ["plan", "--pool", "pool", "--store", str(store), "--bins", "2", "--probe", "1",
                               "--orders", "4", "--output", str(out)]).exit_code == 0
    budget = json.loads(out.read_text())["levels"][-1]["budget_tokens"]
    r = runner.invoke(app, ["run", "--backend", "fake", "--task", "jsonl", "--data", str(data), "--limit", "3",
                            "--policy", str(out), "--budget-tokens", str(budget), "--explain", "--no-progress",
                            "--store", str(tmp_path / "r.sqlite")])
    assert r.exit_code == 0, r.output
    assert "policy choices" in r.output and "majority@" in r.output or "best-of-n@" in r.output
    level = json.loads(out.read_text())["levels"][-1]
    # run --policy follows the plan's decision for the level, as the server does; --per-prompt overrides it
    for extra, want in (((), level["serve"]), (("--per-prompt",), "policy")):
        o = tmp_path / f"run{len(extra)}.json"
        r = runner.invoke(app, ["run", "--backend", "fake", "--task", "jsonl", "--data", str(data), "--limit", "3",
                                "--policy", str(out), "--budget-tokens", str(budget), "--no-progress", *extra,
                                "--store", str(tmp_path / f"r{len(extra)}.sqlite"), "--output", str(o)])
        assert r.exit_code == 0, r.output
        assert {res["meta"]["policy"]["served"] for res in json.loads(o.read_text())["results"]} == {want}


def test_plan_with_another_models_pool_and_run_it(tmp_path: Path) -> None:
    store, data, task = make_store(tmp_path)
    st = Store(store)
    strong = FakeBackend(answers={"42": 1.0}, filler_tokens=2,
                         info=dataclasses.replace(FAKE_MODEL_INFO, name="strong", n_params=10**7))
    execute(Sweep(task, 8), store=st, run_id="strong-pool", backend=strong)
    st.close()
    out = tmp_path / "policy.json"
    r = runner.invoke(app, ["plan", "--pool", "pool", "--alt-pool", "strong-pool", "--store", str(store),
                            "--bins", "3", "--probe", "2", "--orders", "8", "--output", str(out)])
    assert r.exit_code == 0, r.output
    pol = json.loads(out.read_text())
    assert pol["source"]["alternate_models"] == ["strong"]
    top = pol["levels"][-1]
    assert any(b["label"].startswith("strong:") for b in top["bins"]), [b["label"] for b in top["bins"]]
    # one bin: every problem switches (the other model is right everywhere, the primary on 2/3)
    assert runner.invoke(app, ["plan", "--pool", "pool", "--alt-pool", "strong-pool", "--store", str(store), "--bins",
                               "1", "--probe", "1", "--orders", "8", "--output", str(out)]).exit_code == 0
    top = json.loads(out.read_text())["levels"][-1]
    assert top["bins"][0]["label"].startswith("strong:")
    # `run --backend fake` builds a fake backend for the other model too (the CLI's own wiring)
    r = runner.invoke(app, ["run", "--backend", "fake", "--task", "jsonl", "--data", str(data), "--limit", "3",
                            "--policy", str(out), "--budget-tokens", str(top["budget_tokens"]), "--explain",
                            "--no-progress", "--store", str(tmp_path / "r.sqlite")])
    assert r.exit_code == 0, r.output
    assert r.output.count("-> strong:") == 3, r.output
    r = runner.invoke(app, ["plan", "--pool", "pool", "--alt-pool", "pool", "--store", str(store)])
    assert r.exit_code != 0 and "primary model" in r.output


def test_plan_and_run_errors_are_one_line(tmp_path: Path) -> None:
    store, data, _ = make_store(tmp_path, n=6)
    r = runner.invoke(app, ["plan", "--pool", "nope", "--store", str(store)])
    assert r.exit_code != 0 and "no run 'nope'" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["plan", "--pool", "pool", "--store", str(tmp_path / "missing.sqlite")])
    assert r.exit_code != 0 and "does not exist" in r.output
    r = runner.invoke(app, ["plan", "--pool", "pool", "--store", str(store), "--no-split"])
    assert r.exit_code != 0 and "--eval-pool" in r.output
    r = runner.invoke(app, ["run", "--backend", "fake", "--task", "jsonl", "--data", str(data),
                            "--policy", str(tmp_path / "nope.json")])
    assert r.exit_code != 0 and "--budget-tokens" in r.output
    r = runner.invoke(app, ["run", "--backend", "fake", "--task", "jsonl", "--data", str(data),
                            "--policy", str(tmp_path / "nope.json"), "--budget-tokens", "50"])
    assert r.exit_code != 0 and "policy file not found" in r.output


def test_allocate_command_stays_within_budget(tmp_path: Path) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text("".join(f'{{"id": "q{i}", "prompt": "Problem {i} here", "answer": "42"}}\n' for i in range(5)))
    out = tmp_path / "alloc.json"
    r = runner.invoke(app, ["allocate", "--backend", "fake", "--task", "jsonl", "--data", str(data),
                            "--budget-tokens", "300", "--max-tokens", "16", "--output", str(out)])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert d["spent_tokens"] <= 300 and d["accuracy"] == 1.0 and len(d["problems"]) == 5
    r = runner.invoke(app, ["allocate", "--backend", "fake", "--task", "jsonl", "--data", str(data),
                            "--budget-tokens", "0"])
    assert r.exit_code != 0 and "positive token count" in r.output


def test_allocate_command_with_a_policy_gain(tmp_path: Path) -> None:
    store, data, _ = make_store(tmp_path)
    pol = tmp_path / "policy.json"
    assert runner.invoke(app, ["plan", "--pool", "pool", "--store", str(store), "--bins", "3", "--probe", "2",
                               "--orders", "8", "--output", str(pol)]).exit_code == 0
    out = tmp_path / "alloc.json"
    r = runner.invoke(app, ["allocate", "--backend", "fake", "--task", "jsonl", "--data", str(data), "--max-tokens", "16",
                            "--budget-tokens", "2000", "--policy", str(pol), "--min-gain", "0.01", "--output", str(out)])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert d["spent_tokens"] <= 2000
    r = runner.invoke(app, ["allocate", "--backend", "fake", "--task", "jsonl", "--data", str(data), "--max-tokens", "16",
                            "--budget-tokens", "2000", "--policy", str(pol), "--neighbors", "5", "--probe-tokens", "40",
                            "--min-gain-per-ktok", "0.5", "--output", str(out)])
    assert r.exit_code == 0, r.output
    d2 = json.loads(out.read_text())
    assert d2["spent_tokens"] <= 2000
    assert min(d2["samples"]) >= 1 and max(d2["samples"]) <= 16
    r = runner.invoke(app, ["allocate", "--backend", "fake", "--task", "jsonl", "--data", str(data),
                            "--budget-tokens", "100", "--min-gain", "0.1"])
    assert r.exit_code != 0 and "need --policy" in r.output


def test_plan_answers_for_a_dollar_budget_per_hardware(tmp_path: Path) -> None:
    out = tmp_path / "cmp.json"
    r = runner.invoke(app, ["plan", "--store", "shipped", "--pool", "gsm8k-qwen05-k16", "--output",
                            str(tmp_path / "p.json"), "--hardware", "h100", "--hardware", "cpu-2core",
                            "--budget-usd", "0.0006", "--bootstrap", "200", "--compare-output", str(out)],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    answers = json.loads(out.read_text())["at_budget"]
    assert set(answers) == {"h100", "cpu-2core"}
    for ans in answers.values():  # what it buys fits the budget, as trained
        assert ans["fixed"] is not None and ans["fixed"]["train_usd"] <= 0.0006
        assert ans["policy"] is None or ans["policy"]["train_usd"] <= 0.0006
    # batching: the GPU's dollars buy a wider vote than the CPU's
    k = {hw: int(a["fixed"]["label"].rsplit("@", 1)[1]) for hw, a in answers.items()}
    assert k["h100"] > k["cpu-2core"]
    r = runner.invoke(app, ["plan", "--store", "shipped", "--pool", "gsm8k-qwen05-k16", "--output",
                            str(tmp_path / "p.json"), "--budget-seconds", "1"])
    assert r.exit_code == 2 and "--hardware" in r.output
