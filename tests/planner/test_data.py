"""Plan pools: several sweeps stacked into one wider pool (fitted with ``max_k``), and costs in another unit."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError, StoreError
from ttscale.planner.data import PlanPool, in_budget_unit, load_plan_pool, load_stacked_pool
from ttscale.planner.policy import fit_policy
from ttscale.run import Sweep, execute
from ttscale.store import Store
from ttscale.tasks.jsonl import JsonlTask
from ttscale.types import PromptFormat, Sampling

from .helpers import Group, known_pool
from .test_cli import script


def _sweeps(tmp_path: Path) -> tuple[Store, JsonlTask]:
    data = tmp_path / "q.jsonl"
    data.write_text("".join(f'{{"id": "q{i}", "prompt": "Problem {i} here", "answer": "42"}}\n' for i in range(12)))
    task = JsonlTask(path=str(data), fmt=PromptFormat(style="completion", max_tokens=16))
    st = Store(tmp_path / "s.sqlite")
    be = FakeBackend(answers=script, filler_tokens=2)
    probs = task.problems()
    execute(Sweep(task, 4, sampling=Sampling(seed=0)), store=st, run_id="a", backend=be, problems=probs)
    # the second sweep covers only the first 8 problems, as a sweep of one split's problems would
    execute(Sweep(task, 4, sampling=Sampling(seed=9)), store=st, run_id="a-more", backend=be, problems=probs[:8])
    execute(Sweep(task, 4, sampling=Sampling(seed=1)), store=st, run_id="b", backend=be, problems=probs[:6])
    execute(Sweep(task, 4, sampling=Sampling(seed=2)), store=st, run_id="b-more", backend=be, problems=probs[:6])
    return st, task


def test_stacked_pool_holds_every_runs_samples_of_the_common_problems(tmp_path: Path) -> None:
    st, _ = _sweeps(tmp_path)
    wide = load_stacked_pool(st, [["a", "a-more"]], 4)
    one = load_plan_pool(st, ["a"], 4)
    assert wide.pool.k == 8 and wide.n_problems == 8  # only the problems both runs have
    rows = [one.problem_ids.index(p) for p in wide.problem_ids]
    # the first four samples are run a's, untouched; the rest come from the other seed
    assert (wide.pool.n_tokens[:, :4] == one.pool.n_tokens[rows]).all()
    assert (wide.pool.correct[:, :4] == one.pool.correct[rows]).all()
    # the prompt is charged once per problem, as a wave of one run
    assert (wide.pool.prefill_tokens == one.pool.prefill_tokens[rows]).all()
    assert np.allclose(wide.prompt_tokens, one.prompt_tokens[rows])
    st.close()


def test_stacks_of_several_pools_are_prefixed_like_a_merged_pool(tmp_path: Path) -> None:
    st, _ = _sweeps(tmp_path)
    wide = load_stacked_pool(st, [["a", "a-more"], ["b", "b-more"]], 4)
    merged = load_plan_pool(st, ["a", "b"], 4)
    assert set(wide.problem_ids) <= set(merged.problem_ids)
    assert wide.group == ["a"] * 8 + ["b"] * 6
    with pytest.raises(ConfigError, match="same samples per problem"):
        load_stacked_pool(st, [["a", "a-more"], ["b"]], 4)  # stacks of different heights
    with pytest.raises(StoreError, match="no problem has 5 samples"):
        load_stacked_pool(st, [["a", "a-more"]], 5)
    with pytest.raises(ConfigError):
        load_stacked_pool(st, [[]], 4)
    st.close()


def test_fitting_a_wide_pool_with_max_k_uses_choices_up_to_max_k(tmp_path: Path) -> None:
    st, _ = _sweeps(tmp_path)
    wide = load_stacked_pool(st, [["a", "a-more"]], 4)
    policy = fit_policy(wide, probes=(1, 2), n_bins=2, n_orders=8, max_k=4)
    assert policy.source["samples_per_problem"] == 4
    assert all(rule.choice.k <= 4 for level in policy.levels for rule in level.bins)
    for pred in policy.predictors.values():
        assert max(pred.majority_ks) == 4
    with pytest.raises(ConfigError, match="max_k"):
        fit_policy(wide, probes=(1,), n_bins=2, n_orders=8, max_k=0)
    st.close()


def test_costs_in_gflops_replace_tokens_and_keep_lengths() -> None:
    pp = known_pool([Group(6, 0.5)], k=4)
    pool = dataclasses.replace(pp.pool, prefill_flops=np.full(6, 3e9), sample_flops=np.full((6, 4), 2e9))
    pp = PlanPool(pool, pp.prompt_tokens, pp.group)
    g = in_budget_unit(pp, "gflops")
    assert np.allclose(g.pool.prefill_tokens, 3.0) and np.allclose(g.pool.sample_tokens, 2.0)
    assert np.array_equal(g.prompt_tokens, pp.prompt_tokens) and np.array_equal(g.pool.n_tokens, pp.pool.n_tokens)
    assert in_budget_unit(pp, "tokens") is pp
    with pytest.raises(ConfigError, match="unknown budget unit"):
        in_budget_unit(pp, "joules")
    with pytest.raises(ConfigError, match="records no FLOPs"):
        in_budget_unit(known_pool([Group(6, 0.5)], k=4), "gflops")


def test_gsm_symbolic_runs_carry_each_problems_template_through_merge_and_subsets(tmp_path: Path) -> None:
    from ttscale.tasks.gsm_symbolic import GsmSymbolicTask

    st = Store(tmp_path / "s.sqlite")
    be = FakeBackend(answers=lambda prompt: {"42": 1.0}, filler_tokens=2)
    for rid, seed in (("orig", None), ("s1", 1)):
        task = GsmSymbolicTask(seed=seed)
        execute(Sweep(task, 2, sampling=Sampling(seed=0)), store=st, run_id=rid, backend=be,
                problems=task.problems(limit=3))
    pp = load_plan_pool(st, ["orig", "s1"])
    st.close()
    keys = [p.meta["template"] for p in GsmSymbolicTask().problems(limit=3)]
    assert pp.family == keys + keys  # one template, two runs: one family
    assert pp.problem_ids[0].startswith("orig/gsm8k-") and pp.problem_ids[3].startswith("s1/gsms-1-")
    sub = pp.subset([pp.problem_ids[4], pp.problem_ids[0]])
    assert sub.family == [keys[1], keys[0]]
    assert in_budget_unit(sub, "tokens").family == sub.family
    # a task without families: every problem is its own
    plain = known_pool([Group(4, 0.5)], k=2)
    assert plain.family == [] and plain.families == plain.problem_ids
