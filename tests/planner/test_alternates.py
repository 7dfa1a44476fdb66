"""A policy that may switch to another model after the probe: replay, fitting, JSON, online use."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from ttscale.backends.fake import FAKE_MODEL_INFO, FakeBackend
from ttscale.cost import Budget
from ttscale.errors import ConfigError
from ttscale.planner.data import PlanPool, align_alternate
from ttscale.planner.options import Choice, replay_options
from ttscale.planner.policy import Policy, fit_policy
from ttscale.planner.strategy import ALTERNATE_INDEX_OFFSET, PolicyStrategy
from ttscale.run import Solve, execute
from ttscale.store import Store
from ttscale.tasks.jsonl import JsonlTask
from ttscale.types import Sampling

from .helpers import Group, known_pool

EASY, HARD = Group(30, 1.0, lp=-0.3), Group(30, 0.2, wrong=8, lp=-1.5)


def _with_alt(primary: PlanPool, alt_groups: list[Group], seed: int = 5, tokens: int = 10) -> PlanPool:
    alt = known_pool(alt_groups, k=primary.pool.k, seed=seed, tokens=tokens)
    return align_alternate(primary, alt, "big")


def test_switching_pays_the_probe_plus_the_other_models_prompt_and_samples() -> None:
    pp = _with_alt(known_pool([EASY, HARD], k=8), [EASY, Group(30, 0.95, lp=-0.5)], tokens=30)
    t = replay_options(pp, 2, [Choice("majority", 2), Choice("majority", 3, model="big")], n_orders=4)
    # primary: prefill 20 + 2 x 10; switching: that probe (40) + the other's prefill 20 + 3 x 30
    assert np.allclose(t.tokens[..., 0], 40.0)
    assert np.allclose(t.tokens[..., 1], 40.0 + 20.0 + 90.0)
    hard = np.arange(30, 60)
    assert t.acc[hard, :, 1].mean() > 0.9 > t.acc[hard, :, 0].mean()


def test_policy_sends_hard_problems_to_the_stronger_model_and_keeps_easy_ones() -> None:
    pp = _with_alt(known_pool([EASY, HARD], k=8, seed=1), [EASY, Group(30, 0.95, lp=-0.5)])
    policy = fit_policy(pp, [60.0], probes=(2,), n_bins=2, n_orders=16)
    (lv,) = policy.levels
    assert lv.bins[0].choice.model == "big", [b.choice.label for b in lv.bins]  # low predicted pass rate
    assert lv.bins[-1].choice.model is None and lv.bins[-1].choice.k == 2  # settled: probe only
    alone = fit_policy(dataclasses.replace(pp, alts={}), [60.0], probes=(2,), n_bins=2, n_orders=16)
    assert lv.expected_accuracy > alone.levels[0].expected_accuracy + 0.2
    assert policy.models() == ["big"] and policy.source["alternate_models"] == ["big"]


def test_policy_with_another_model_round_trips_through_json(tmp_path: Path) -> None:
    pp = _with_alt(known_pool([EASY, HARD], k=8, seed=1), [EASY, Group(30, 0.95, lp=-0.5)])
    policy = fit_policy(pp, [60.0], probes=(2,), n_bins=2, n_orders=8)
    policy.save(tmp_path / "p.json")
    labels = [b["label"] for b in json.loads((tmp_path / "p.json").read_text())["levels"][0]["bins"]]
    assert any(label.startswith("big:") for label in labels)
    again = Policy.load(tmp_path / "p.json")
    assert [b.choice for b in again.levels[0].bins] == [b.choice for b in policy.levels[0].bins]


def test_alignment_follows_problem_ids_and_subsets_stay_aligned() -> None:
    primary = known_pool([EASY, HARD], k=4)
    other = known_pool([EASY, HARD], k=4, seed=9)
    rev = other.take(np.arange(other.n_problems)[::-1])  # same problems, reversed rows
    pp = align_alternate(primary, rev, "big")
    assert pp.alts["big"].problem_ids == primary.problem_ids
    assert np.array_equal(pp.alts["big"].pool.answer, other.pool.answer)
    sub = pp.subset(["g1-3", "g0-2"])
    assert sub.alts["big"].problem_ids == ["g1-3", "g0-2"]
    with pytest.raises(ConfigError, match="missing"):
        align_alternate(primary, other.take(np.arange(10)), "big")
    with pytest.raises(ConfigError, match="samples per problem"):
        align_alternate(primary, known_pool([EASY, HARD], k=8), "big")
    with pytest.raises(ConfigError, match="no pool of theirs"):
        replay_options(primary, 1, [Choice("majority", 2, model="big")], n_orders=2)


def _task(tmp_path: Path) -> JsonlTask:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"What is {i}?", "answer": "42"}) + "\n"
                            for i in range(3)))
    return JsonlTask(str(data))


def test_online_switch_draws_from_the_other_backend_within_one_budget(tmp_path: Path) -> None:
    # fitted so that every problem goes to the other model: the primary is hopeless everywhere
    pp = _with_alt(known_pool([HARD], k=8, seed=2), [Group(30, 0.95, lp=-0.5)])
    policy = fit_policy(pp, [1e6], probes=(1,), n_bins=1, n_orders=8)
    (rule,) = policy.levels[0].bins
    assert rule.choice.model == "big"
    weak = FakeBackend(answers={"7": 1.0})
    strong = FakeBackend(answers={"42": 1.0}, info=dataclasses.replace(FAKE_MODEL_INFO, name="big", n_params=10**7))
    task = _task(tmp_path)
    with pytest.raises(ConfigError, match="give a backend"):
        PolicyStrategy(policy, 1e6)
    strat = PolicyStrategy(policy, 1e6, {"big": (strong, task)})
    st = Store(tmp_path / "s.sqlite")
    summary = execute(Solve(task, strat, sampling=Sampling(seed=3)), store=st, run_id="r", backend=weak)
    assert summary.accuracy == 1.0  # the other model's answer, the probe's wrong one set aside
    for res in summary.results:
        idx = res["samples"]
        assert idx[0] == 0 and all(i >= ALTERNATE_INDEX_OFFSET for i in idx[1:])
        assert len(idx) == 1 + rule.choice.k
        assert res["meta"]["policy"]["model"] == "big"
    assert len(strong.history) == 3 and len(weak.history) == 3
    # one meter: usage adds both models' tokens; the stronger model's FLOPs use its own size
    stored = [s for _, s in st.samples("r")]
    assert sum(s.n_tokens + s.prefilled_tokens for s in stored) == summary.usage.total_tokens
    big = [s for s in stored if s.index >= ALTERNATE_INDEX_OFFSET]
    small = [s for s in stored if s.index < ALTERNATE_INDEX_OFFSET]
    assert big[0].flops / big[0].n_tokens > 5 * small[0].flops / small[0].n_tokens
    st.close()


def test_online_switch_respects_the_budget(tmp_path: Path) -> None:
    pp = _with_alt(known_pool([HARD], k=8, seed=2), [Group(30, 0.95, lp=-0.5)])
    policy = fit_policy(pp, [1e6], probes=(1,), n_bins=1, n_orders=8)
    strong = FakeBackend(answers={"42": 1.0})
    task = _task(tmp_path)
    strat = PolicyStrategy(policy, 1e6, {"big": (strong, task)})
    st = Store(tmp_path / "s.sqlite")
    cap = 60
    summary = execute(Solve(task, strat, budget=Budget(tokens=cap)), store=st, run_id="r", backend=FakeBackend(answers={"7": 1.0}))
    for res in summary.results:
        assert res["usage"]["total_tokens"] <= cap
        assert res["meta"]["budget_exhausted"]
    st.close()
