"""Policy fitting picks the known-best choice on pools where the answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ttscale.errors import ConfigError
from ttscale.planner.features import ProbeFeatures
from ttscale.planner.options import Choice, option_grid, replay_options
from ttscale.planner.policy import Policy, fit_policy

from .helpers import Group, known_pool

# settled (always right), hopeless (one dominant wrong answer), and an uncertain middle where
# a single sample is right 45% of the time but the vote of many is right almost always.
# As with real models, the model is surer of itself on easy problems than on hard ones.
MIXED = [Group(40, 1.0, lp=-0.3), Group(40, 0.0, dominant=1.0, lp=-1.6), Group(40, 0.45, wrong=8, lp=-1.0)]


def test_settled_and_hopeless_get_the_probe_only_the_middle_gets_samples() -> None:
    pp = known_pool(MIXED, k=16, seed=1)
    full = float((pp.pool.prefill_tokens + pp.pool.sample_tokens.sum(1)).mean())
    policy = fit_policy(pp, [full], probes=(2,), n_bins=3, n_orders=32)
    (lv,) = policy.levels
    labels = [b.choice.label for b in lv.bins]
    # bins run from low to high predicted pass rate: hopeless, middle, settled
    assert lv.bins[0].choice.k == 2 and lv.bins[-1].choice.k == 2, labels
    assert lv.bins[1].choice.kind == "majority" and lv.bins[1].choice.k >= 8, labels
    # compute-optimal: far fewer tokens than majority@16 everywhere, at least its accuracy
    maj16 = replay_options(pp, 2, [Choice("majority", 16)], n_orders=32).acc.mean()
    assert lv.expected_accuracy >= maj16 - 0.02
    assert lv.expected_tokens < 0.6 * full
    ev = lv.bins[1].evidence
    assert ev["oracle_pass_rate_analysis_only"] == pytest.approx(0.45, abs=0.08)
    assert ev["best_alternatives"][0]["accuracy"] >= ev["probe_only"]["accuracy"]


def test_certainty_weighting_wins_when_the_right_answer_is_confident_but_outvoted() -> None:
    # the majority answer is wrong, but correct samples are much more confident
    pp = known_pool([Group(60, 0.3, dominant=1.0, boost=0.5)], k=16, seed=2)
    policy = fit_policy(pp, [1e9], probes=(1,), n_bins=1, n_orders=32)
    choice = policy.levels[0].bins[0].choice
    assert choice.kind in ("best-of-n", "weighted-majority"), choice
    assert policy.levels[0].expected_accuracy > 0.9


def test_a_tighter_budget_never_spends_more_and_levels_respect_their_budget() -> None:
    pp = known_pool(MIXED, k=8, seed=3)
    policy = fit_policy(pp, [40, 60, 90, 140], probes=(1, 2), n_bins=3, n_orders=16)
    toks = [lv.expected_tokens for lv in policy.levels]
    assert all(lv.expected_tokens <= lv.budget + 1e-6 for lv in policy.levels)
    assert toks == sorted(toks)
    accs = [lv.expected_accuracy for lv in policy.levels]
    assert accs == sorted(accs)


def test_budget_below_the_probe_is_refused() -> None:
    pp = known_pool(MIXED, k=8, seed=3)
    with pytest.raises(ConfigError, match="cheapest probe"):
        fit_policy(pp, [5], probes=(2,), n_bins=2, n_orders=8)


def test_policy_json_round_trip_and_level_selection(tmp_path: Path) -> None:
    pp = known_pool(MIXED, k=8, seed=4)
    policy = fit_policy(pp, [40, 90], probes=(2,), n_bins=3, n_orders=8)
    path = tmp_path / "p.json"
    policy.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "ttscale-policy/1"
    assert "oracle_pass_rate_analysis_only" in data["levels"][0]["bins"][0]["evidence"]
    back = Policy.load(path)
    assert back.to_dict() == policy.to_dict()
    assert back.level_for(100).budget == 90 and back.level_for(60).budget == 40
    with pytest.raises(ConfigError, match="below the policy's smallest level"):
        back.level_for(10)
    f = ProbeFeatures(1.0, 0.0, 1.0, -1.0, 0.37, 50.0)
    rule, pred = back.decide(back.level_for(100), f)
    assert 0.0 <= pred <= 1.0 and rule in back.level_for(100).bins


def test_bad_policy_files_name_the_problem(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text('{"format": "ttscale-policy/1",\n "levels": [}')
    with pytest.raises(ConfigError, match=r"bad.json:2"):
        Policy.load(p)
    p.write_text('{"format": "something-else"}')
    with pytest.raises(ConfigError, match="not a ttscale policy"):
        Policy.load(p)
    with pytest.raises(ConfigError, match="not found"):
        Policy.load(tmp_path / "missing.json")


def test_option_grid_and_replay_shapes() -> None:
    grid = option_grid(2, 8)
    assert {c.k for c in grid} == set(range(2, 9))
    pp = known_pool([Group(5, 1.0)], k=8)
    t = replay_options(pp, 2, grid, n_orders=4)
    assert t.acc.shape == (5, 4, len(grid))
    assert np.allclose(t.acc, 1.0)
    # tokens: prefill 20 + k samples of 10 tokens
    assert np.allclose(t.tokens[..., grid.index(Choice("majority", 8))], 20 + 80)
