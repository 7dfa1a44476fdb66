"""The planner on the real embedded model: tiny pool -> policy -> applied run; online allocation."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttscale.planner.allocate import AllocationConfig, allocate
from ttscale.planner.data import align_alternate, load_plan_pool, load_stacked_pool
from ttscale.planner.options import Choice
from ttscale.planner.policy import fit_policy
from ttscale.planner.samplers import BackendSampler
from ttscale.planner.strategy import ALTERNATE_INDEX_OFFSET, PolicyStrategy
from ttscale.registry import make_task
from ttscale.run import Solve, Sweep, execute
from ttscale.store import Store
from ttscale.types import Sampling

pytestmark = pytest.mark.model


def _task():  # type: ignore[no-untyped-def]
    return make_task("arithmetic", subtask="arithmetic/1_digit_addition", max_tokens=4, chat_model=False)


def test_policy_fitted_on_a_real_pool_applies_online(smollm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    task = _task()
    st = Store(tmp_path / "s.sqlite")
    probs = task.problems(limit=3)
    execute(Sweep(task, 2), store=st, run_id="pool", backend=smollm, problems=probs[:2])
    pp = load_plan_pool(st, ["pool"])
    assert pp.n_problems == 2 and pp.prompt_tokens.min() > 20
    # a second sweep with another seed stacks under the first: 4 samples per problem, the engine's costs
    execute(Sweep(task, 2, sampling=Sampling(seed=5)), store=st, run_id="pool-2", backend=smollm, problems=probs[:2])
    wide = load_stacked_pool(st, [["pool", "pool-2"]], 2).subset(pp.problem_ids)
    assert wide.pool.k == 4 and (wide.pool.prefill_tokens == pp.pool.prefill_tokens).all()
    assert (wide.pool.n_tokens[:, :2] == pp.pool.n_tokens).all() and wide.pool.n_tokens.min() >= 1
    policy = fit_policy(wide, [1e6], probes=(1, 2), n_bins=1, n_orders=4, max_k=2)
    strat = PolicyStrategy(policy, 1e6)
    summary = execute(Solve(task, strat, sampling=Sampling(seed=1)), store=st, run_id="apply", backend=smollm, problems=probs[2:])
    (res,) = summary.results
    meta = res["meta"]["policy"]
    assert len(res["samples"]) == int(meta["choice"].split("@")[1])
    assert summary.usage.generated_tokens > 0
    st.close()


def test_online_allocation_on_the_real_model_stays_within_budget(smollm) -> None:  # type: ignore[no-untyped-def]
    task = _task()
    sampler = BackendSampler(smollm, task, task.problems(limit=2), Sampling(seed=0))
    budget = sampler.worst_case(0, 2) + sampler.worst_case(1, 2) + 30
    out = allocate(sampler, AllocationConfig(budget, probe=2, step=1, max_samples=4))
    assert 0 < out.spent <= budget
    assert all(n >= 1 for n in out.samples)


def test_policy_switching_to_the_second_embedded_model_runs_both_engines(smollm, gemma, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    task = _task()
    st = Store(tmp_path / "s.sqlite")
    probs = task.problems(limit=3)
    execute(Sweep(task, 2), store=st, run_id="small", backend=smollm, problems=probs[:2])
    execute(Sweep(task, 2), store=st, run_id="big", backend=gemma, problems=probs[:2])
    pp = align_alternate(load_plan_pool(st, ["small"]), load_plan_pool(st, ["big"]), "gemma3-270m")
    policy = fit_policy(pp, [1e6], probes=(1,), n_bins=1, n_orders=4)
    # force the switch, whatever the two tiny pools say: the point is the online path on both engines
    rule = policy.levels[0].bins[0]
    rule.choice = Choice("majority", 2, model="gemma3-270m")
    strat = PolicyStrategy(policy, 1e6, {"gemma3-270m": (gemma, task)})
    summary = execute(Solve(task, strat, sampling=Sampling(seed=1)), store=st, run_id="apply", backend=smollm, problems=probs[2:])
    (res,) = summary.results
    assert res["meta"]["policy"]["model"] == "gemma3-270m" and len(res["samples"]) == 3
    stored = sorted((s for _, s in st.samples("apply")), key=lambda s: s.index)
    assert [s.index for s in stored] == [0, ALTERNATE_INDEX_OFFSET, ALTERNATE_INDEX_OFFSET + 1]
    # usage is what both engines reported, on one meter
    assert summary.usage.total_tokens == sum(s.n_tokens + s.prefilled_tokens for s in stored)
    st.close()
