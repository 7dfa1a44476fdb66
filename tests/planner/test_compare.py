"""The per-prompt policy against the best fixed choice per budget: selected on the training split,
compared on held-out problems with a paired bootstrap interval; the decision recorded for serving."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ttscale.errors import ConfigError
from ttscale.planner.compare import apply_decisions, compare_policy, fixed_choices, paired_bootstrap
from ttscale.planner.data import PlanPool
from ttscale.planner.evaluate import split_problems
from ttscale.planner.options import replay_options
from ttscale.planner.policy import Policy, fit_policy
from ttscale.roofline import load_profile
from ttscale.types import ModelInfo

from .helpers import Group, known_pool

# settled, hopeless and contested problems, told apart by the probe: where a per-prompt policy wins
MIXED = [Group(60, 1.0, lp=-0.3), Group(60, 0.0, dominant=1.0, lp=-1.6), Group(60, 0.45, wrong=8, lp=-1.0)]
INFO = ModelInfo(name="m", n_params=500_000_000, n_layers=24, n_heads=14, n_kv_heads=2, head_dim=64, d_model=896,
                 n_ctx_train=32768)


def _split(groups: list[Group], seed: int = 5) -> tuple[PlanPool, PlanPool]:
    pp = known_pool(groups, k=16, seed=seed)
    split = split_problems(pp.problem_ids, [i.split("-")[0] for i in pp.problem_ids])
    return pp.subset(split.train), pp.subset(split.test)


def test_paired_bootstrap_of_equal_and_shifted_outcomes() -> None:
    a = np.random.default_rng(0).random(50)
    same = paired_bootstrap(a, a.copy())
    assert same.difference == 0 and same.difference_ci == (0.0, 0.0) and same.verdict == "not resolved"
    assert same.policy_ci == same.fixed_ci  # one set of resampled draws for both
    up = paired_bootstrap(a + 0.1, a)
    assert up.verdict == "policy better" and up.difference_ci[0] == pytest.approx(0.1)
    assert paired_bootstrap(a, a + 0.1).verdict == "fixed better"
    with pytest.raises(ConfigError):
        paired_bootstrap(a, a[:10])


def test_paired_bootstrap_resamples_whole_families() -> None:
    rng = np.random.default_rng(1)
    per_family = rng.random(30) < 0.5
    # three variants of each question, with identical outcomes: ten times the rows, not ten times the evidence
    a = np.repeat(per_family.astype(float), 3)
    b = np.zeros_like(a)
    fams = [str(f) for f in np.repeat(np.arange(30), 3)]
    naive = paired_bootstrap(a, b)
    grouped = paired_bootstrap(a, b, families=fams)
    assert grouped.difference == naive.difference
    width = lambda p: p.difference_ci[1] - p.difference_ci[0]  # noqa: E731
    assert width(grouped) > 1.4 * width(naive)  # about sqrt(3) wider
    # the family bootstrap of one row per family is the plain bootstrap of the family means
    one = paired_bootstrap(per_family.astype(float), np.zeros(30))
    assert grouped.difference_ci == pytest.approx(one.difference_ci, abs=0.05)
    singletons = paired_bootstrap(a, b, families=[str(i) for i in range(len(a))])
    assert singletons == naive


def test_the_policy_wins_where_the_probe_tells_problems_apart() -> None:
    train, test = _split(MIXED)
    policy = fit_policy(train, probes=(2,), n_bins=3, n_orders=16)
    cmp = compare_policy(policy, train, test, n_orders=16)
    assert cmp["test_problems"] == test.n_problems and cmp["train_problems"] == train.n_problems
    rows = cmp["tokens"]
    assert [r["level_budget_tokens"] for r in rows] == [lv.budget for lv in policy.levels]
    # at tight budgets the policy spends its samples on the contested third only: a real win
    cheap = rows[0]
    assert cheap["paired"]["verdict"] == "policy better" and cheap["paired"]["difference_ci"][0] > 0
    apply_decisions(policy, cmp)
    assert policy.levels[0].serve == "policy" and policy.levels[0].fixed is not None
    assert policy.levels[0].decision["verdict"] == "policy better"


def test_the_fixed_choice_is_selected_on_the_training_split() -> None:
    train, test = _split(MIXED)
    policy = fit_policy(train, probes=(2,), n_bins=3, n_orders=16)
    cmp = compare_policy(policy, train, test, n_orders=16)
    table = replay_options(train, 1, fixed_choices(16), n_orders=16)
    acc, tok = table.acc.mean(axis=(0, 1)), table.tokens.mean(axis=(0, 1))
    for r in cmp["tokens"]:
        assert r["fixed_budget"] == max(r["budget"], r["policy_cost"])
        fits = tok <= r["fixed_budget"] + 1e-9
        assert r["fixed"]["train_accuracy"] == pytest.approx(acc[fits].max())
        assert r["fixed_train_cost"] <= r["fixed_budget"] + 1e-9


def test_a_policy_that_overspends_on_held_out_problems_meets_a_fixed_choice_of_that_spend() -> None:
    train, test = _split(MIXED)
    fitted = fit_policy(train, probes=(2,), n_bins=3, n_orders=16)
    # the same choices under budgets claimed at 80% of what they spend held out
    spent = [r["policy_cost"] for r in compare_policy(fitted, train, test, n_orders=16)["tokens"]]
    policy = replace(fitted, levels=[replace(lv, budget=0.8 * c) for lv, c in zip(fitted.levels, spent, strict=True)])
    cmp = compare_policy(policy, train, test, n_orders=16)
    table = replay_options(train, 1, fixed_choices(16), n_orders=16)
    acc, tok = table.acc.mean(axis=(0, 1)), table.tokens.mean(axis=(0, 1))
    richer = 0
    for r in cmp["tokens"]:
        assert r["policy_cost"] > r["budget"] and r["fixed_budget"] == r["policy_cost"]
        assert r["fixed_train_cost"] <= r["fixed_budget"] + 1e-9
        assert r["fixed"]["train_accuracy"] == pytest.approx(acc[tok <= r["fixed_budget"] + 1e-9].max())
        richer += r["fixed_train_cost"] > r["budget"]  # what the claimed budget alone would not have bought
    assert richer >= 1
    # served instead of the policy: the best fixed choice within the level's own budget, never the richer one
    apply_decisions(policy, cmp)
    for lv, r in zip(policy.levels, cmp["tokens"], strict=True):
        served = r["fixed_in_budget"]
        if served is None:
            assert lv.serve == "policy" and lv.fixed is None
            continue
        assert served["train_cost"] <= lv.budget + 1e-9
        assert lv.fixed is not None and lv.fixed.label == served["label"]
        assert served["train_accuracy"] == pytest.approx(acc[tok <= lv.budget + 1e-9].max())
        assert lv.decision["compared_with"] == r["fixed"]["label"]


def test_a_policy_that_is_a_fixed_choice_cannot_win_and_serves_the_fixed_choice() -> None:
    train, test = _split(MIXED)
    # one bin and a probe of one sample: every prompt gets the same choice, the best one for the budget
    policy = fit_policy(train, probes=(1,), n_bins=1, n_orders=16)
    cmp = compare_policy(policy, train, test, n_orders=16)
    for lv, r in zip(policy.levels, cmp["tokens"], strict=True):
        assert r["fixed"]["label"] == lv.bins[0].choice.label
        lo, hi = r["paired"]["difference_ci"]
        assert r["paired"]["difference"] == 0 and lo <= 0 <= hi and r["paired"]["verdict"] == "not resolved"
    apply_decisions(policy, cmp)
    assert all(lv.serve == "fixed" and lv.serves_fixed for lv in policy.levels)


def test_a_policy_that_spends_on_the_wrong_bin_loses_and_serves_the_fixed_choice() -> None:
    train, test = _split(MIXED)
    fitted = fit_policy(train, probes=(2,), n_bins=3, n_orders=16)
    # the samples meant for the contested middle go to the hopeless bin, and the middle gets the probe only
    policy = replace(fitted, levels=[replace(lv, bins=[replace(lv.bins[0], choice=lv.bins[1].choice),
                                                       replace(lv.bins[1], choice=lv.bins[0].choice), lv.bins[2]])
                                     for lv in fitted.levels])
    cmp = compare_policy(policy, train, test, n_orders=16)
    rich = cmp["tokens"][-1]["paired"]
    assert rich["verdict"] == "fixed better" and rich["difference_ci"][1] < 0
    apply_decisions(policy, cmp)
    assert policy.levels[-1].serve == "fixed"
    assert all(lv.serve == "fixed" for lv, r in zip(policy.levels, cmp["tokens"], strict=True)
               if r["paired"]["verdict"] != "policy better")


def test_dollar_budgets_per_machine() -> None:
    train, test = _split(MIXED)
    policy = fit_policy(train, probes=(2,), n_bins=3, n_orders=16)
    hws = [load_profile("h100"), load_profile("cpu-2core")]
    cmp = compare_policy(policy, train, test, n_orders=16, info=INFO, hardware=hws)
    assert set(cmp["usd"]) == {"h100", "cpu-2core"}
    for rows in cmp["usd"].values():
        assert rows and [r["budget"] for r in rows] == sorted(r["budget"] for r in rows)
        for r in rows:
            assert r["policy_cost"] > 0 and r["fixed_train_cost"] <= r["budget"] * (1 + 1e-9)
    # on a memory-bound GPU extra samples of one prompt cost almost nothing: the fixed choice a dollar
    # budget buys is at least as large as on the 2-core CPU
    k = {hw: max(r["fixed"]["choice"]["k"] for r in rows) for hw, rows in cmp["usd"].items()}
    assert k["h100"] >= k["cpu-2core"]
    with pytest.raises(ConfigError, match="shapes"):
        compare_policy(policy, train, test, n_orders=4, hardware=hws)


def test_leaks_are_refused() -> None:
    train, test = _split(MIXED)
    policy = fit_policy(train, probes=(2,), n_bins=3, n_orders=8)
    with pytest.raises(ConfigError, match="fitted on"):
        compare_policy(policy, train, train, n_orders=8)


def test_decisions_survive_the_policy_file(tmp_path: Path) -> None:
    train, test = _split(MIXED)
    policy = fit_policy(train, probes=(1,), n_bins=1, n_orders=8)
    apply_decisions(policy, compare_policy(policy, train, test, n_orders=8))
    path = tmp_path / "p.json"
    policy.save(path)
    back = Policy.load(path)
    assert [(lv.serve, lv.fixed) for lv in back.levels] == [(lv.serve, lv.fixed) for lv in policy.levels]
    assert not back.follow_decisions  # how to apply it is the caller's choice, not the file's
    data = json.loads(path.read_text())
    data["levels"][0]["serve"] = "sometimes"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="serve must be"):
        Policy.load(path)


def test_plan_compares_by_default_and_records_the_decisions(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ttscale.cli import app

    out, cmp_out = tmp_path / "policy.json", tmp_path / "versus-fixed.json"
    r = CliRunner().invoke(app, ["plan", "--store", "shipped", "--pool", "gsm8k-qwen05-k16", "--orders", "4",
                                 "--probe", "1", "--bins", "2", "--bootstrap", "200", "--budget", "600",
                                 "--budget", "1500", "--output", str(out), "--compare-output", str(cmp_out)])
    assert r.exit_code == 0, r.output
    assert "policy vs the best fixed choice" in r.output and "serves" in r.output
    policy = Policy.load(out)
    cmp = json.loads(cmp_out.read_text())
    assert policy.evaluation is not None and policy.evaluation["versus_fixed"] == cmp
    assert cmp["on"] == "held-out split" and set(cmp["usd"]) == {"h100", "cpu-2core"}
    assert cmp["test_problems"] == len(policy.evaluation["held_out_split"]["test_problems"])
    for lv, row in zip(policy.levels, cmp["tokens"], strict=True):
        assert lv.fixed is not None and lv.fixed.label == row["fixed"]["label"]
        assert lv.serve == ("policy" if row["paired"]["verdict"] == "policy better" else "fixed")
    r = CliRunner().invoke(app, ["plan", "--store", "shipped", "--pool", "gsm8k-qwen05-k16", "--orders", "4",
                                 "--probe", "1", "--bins", "2", "--budget", "600", "--no-compare",
                                 "--output", str(out)])
    assert r.exit_code == 0 and all(lv.fixed is None for lv in Policy.load(out).levels)
