"""Adaptive batch allocation never exceeds its budget, and spends where votes are unsettled."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.planner.allocate import AllocationConfig, allocate
from ttscale.planner.samplers import BackendSampler, PoolSampler
from ttscale.tasks.jsonl import JsonlTask
from ttscale.testing.synthetic import synthetic_pool
from ttscale.types import PromptFormat, Sampling

from .helpers import Group, known_pool


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 12), k=st.integers(1, 16), seed=st.integers(0, 1000), budget=st.integers(1, 4000),
    probe=st.integers(1, 4), step=st.integers(1, 4), threshold=st.floats(0.5, 0.99),
)
def test_allocation_never_exceeds_the_budget(n: int, k: int, seed: int, budget: int, probe: int, step: int,
                                             threshold: float) -> None:
    pool = synthetic_pool(n, k, seed=seed)
    cfg = AllocationConfig(budget, probe=min(probe, k), step=step, max_samples=max(k, probe), threshold=threshold)
    out = allocate(PoolSampler(pool, seed=seed), cfg)
    assert out.spent <= budget
    assert sum(out.tokens) == out.spent
    assert all(s <= k for s in out.samples)


def test_settled_and_hopeless_problems_stop_early_uncertain_ones_get_more() -> None:
    pp = known_pool([Group(10, 1.0), Group(10, 0.0, wrong=100_000), Group(10, 0.55, wrong=2)], k=16, seed=0)
    out = allocate(PoolSampler(pp.pool), AllocationConfig(100_000, probe=2, step=2, max_samples=16, threshold=0.9))
    settled, hopeless, middle = out.samples[:10], out.samples[10:20], out.samples[20:]
    assert max(settled) <= 4  # 4-0 reaches 0.9
    assert max(hopeless) <= 4  # every answer different after 4: nothing to converge on
    assert sum(middle) > sum(settled) + sum(hopeless)
    assert set(out.status[:10]) == {"settled"} and set(out.status[10:20]) == {"hopeless"}


def _task(tmp_path: Path, n: int) -> JsonlTask:
    p = tmp_path / "q.jsonl"
    p.write_text("".join(f'{{"id": "q{i}", "prompt": "Problem {i} of the batch", "answer": "7"}}\n' for i in range(n)))
    return JsonlTask(path=str(p), fmt=PromptFormat(style="completion", max_tokens=20))


@settings(max_examples=25, deadline=None)
@given(budget=st.integers(1, 1500), seed=st.integers(0, 50))
def test_online_allocation_on_a_backend_never_exceeds_the_budget(tmp_path_factory, budget: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("alloc")
    task = _task(tmp, 6)

    def script(prompt: str) -> dict[str, float]:  # problems 0-1 settled, 2-3 contested, 4-5 scattered
        i = int(prompt.split("Problem ")[-1].split()[0])
        return {"7": 1.0} if i < 2 else {"7": 0.5, "8": 0.4, "9": 0.1} if i < 4 else {str(a): 1.0 for a in range(30)}

    be = FakeBackend(answers=script, filler_tokens=lambda r: r.randint(1, 12))
    sampler = BackendSampler(be, task, task.problems(), Sampling(seed=seed))
    out = allocate(sampler, AllocationConfig(budget, probe=2, step=2, max_samples=12))
    assert out.spent <= budget
    assert sum(out.tokens) == out.spent


def test_online_allocation_spends_on_the_contested_problems(tmp_path: Path) -> None:
    task = _task(tmp_path, 6)

    def script(prompt: str) -> dict[str, float]:
        i = int(prompt.split("Problem ")[-1].split()[0])
        return {"7": 1.0} if i < 2 else {"7": 0.5, "8": 0.4, "9": 0.1} if i < 4 else {str(a): 1.0 for a in range(30)}

    be = FakeBackend(answers=script, filler_tokens=3)
    out = allocate(BackendSampler(be, task, task.problems()), AllocationConfig(5000, probe=2, step=2, max_samples=16))
    assert out.status[:2] == ["settled", "settled"]
    assert out.samples[2] + out.samples[3] > out.samples[0] + out.samples[1]
    assert out.correct[:2] == [True, True]
    assert out.spent <= 5000
    # the calls were batched: one call per round, not one per problem
    assert out.calls == out.rounds


def test_an_engine_that_breaks_its_worst_case_is_caught(tmp_path: Path) -> None:
    from ttscale.errors import BudgetExceededError

    class Liar(FakeBackend):
        """Claims to prefill a call's common prefix once (render/tokenize) but charges every prompt in full."""

        def render(self, request):  # type: ignore[no-untyped-def]
            return request.prompt

        def tokenize(self, text: str) -> list[str]:
            return text.split()

    task = _task(tmp_path, 4)
    be = Liar(answers={"7": 0.5, "8": 0.5}, filler_tokens=16)  # 20 words: exactly max_tokens
    sampler = BackendSampler(be, task, task.problems(), shared_prefix=True)
    assert sampler.call_cost([(0, 1), (1, 1)]) < sampler.worst_case(0, 1) + sampler.worst_case(1, 1)
    with pytest.raises(BudgetExceededError, match="over its worst case"):
        allocate(sampler, AllocationConfig(10_000, probe=1))


def test_policy_gain_stops_where_the_fitted_curves_say_samples_buy_nothing() -> None:
    from ttscale.planner.allocate import policy_gain
    from ttscale.planner.policy import fit_policy

    groups = [Group(20, 1.0, lp=-0.3), Group(20, 0.0, dominant=0.3, wrong=3, lp=-1.6), Group(20, 0.45, wrong=8, lp=-1.0)]
    train = known_pool(groups, k=16, seed=1)
    test = known_pool(groups, k=16, seed=2)
    policy = fit_policy(train, probes=(2,), n_bins=3, n_orders=16)
    gain = policy_gain(policy, 2, test.prompt_tokens)
    cfg = AllocationConfig(10**6, probe=2, step=2, max_samples=16, threshold=0.95, min_gain=0.01)
    with_gain = allocate(PoolSampler(test.pool), cfg, gain)
    without = allocate(PoolSampler(test.pool), cfg)
    # the hopeless group (a repeated wrong answer, low confidence) is dropped after the probe with the gain
    assert sum(with_gain.samples[20:40]) < sum(without.samples[20:40])
    assert "no-gain" in with_gain.status[20:40]
    assert with_gain.spent < without.spent
    assert (with_gain.accuracy or 0) >= (without.accuracy or 0) - 0.05


def test_probe_tokens_probe_long_answers_once_and_short_ones_fully() -> None:
    short = known_pool([Group(6, 0.5, wrong=2)], k=8, seed=3, tokens=6)
    long_ = known_pool([Group(6, 0.5, wrong=2)], k=8, seed=4, tokens=200)
    from ttscale.planner.data import merge

    pool = merge([dataclasses.replace(short, group=["s"] * 6),
                  dataclasses.replace(long_, group=["l"] * 6,
                                      pool=dataclasses.replace(long_.pool, problem_ids=[f"l{i}" for i in range(6)]))]).pool
    first_round = AllocationConfig(10**6, probe=4, step=1, max_samples=4, threshold=0.99, probe_tokens=64)
    out = allocate(PoolSampler(pool), first_round)
    assert out.samples[:6] == [4] * 6  # 4 x 6 tokens fit 64: the full probe
    assert all(1 <= n for n in out.samples[6:])
    one_round = allocate(PoolSampler(pool), dataclasses.replace(first_round, budget_tokens=6 * (20 + 24) + 6 * (20 + 200)))
    assert one_round.samples[6:] == [1] * 6  # 200-token samples: one each, the budget allows no more
    with pytest.raises(ConfigError, match="probe_tokens"):
        AllocationConfig(100, probe_tokens=0)


def test_policy_gain_uses_the_largest_predictor_the_samples_allow() -> None:
    from ttscale.planner.allocate import ProblemState, policy_gain
    from ttscale.planner.policy import fit_policy
    from ttscale.types import Sample

    groups = [Group(20, 1.0, lp=-0.3), Group(20, 0.45, wrong=8, lp=-1.0)]
    policy = fit_policy(known_pool(groups, k=16, seed=1), probes=(1, 4), n_bins=2, n_orders=8)
    seen: list[int] = []
    for p, pred in policy.predictors.items():
        real = pred.bins

        def spy(X, p=p, real=real):  # type: ignore[no-untyped-def]
            seen.append(p)
            return real(X)

        pred.bins = spy  # type: ignore[method-assign]
    gain = policy_gain(policy, 1, [50.0, 50.0])
    samples = [Sample(i, "", "1", None, 5, 10, 0, 0.0, "stop", logprob=-2.0) for i in range(5)]
    gain(0, ProblemState(samples=samples[:2], tokens=30), 2)  # 2 samples: the probe-1 predictor
    gain(1, ProblemState(samples=samples, tokens=60), 2)  # 5 samples: the probe-4 predictor
    assert seen == [1, 4]


def test_neighbor_gain_tells_a_hopeless_long_problem_from_a_contested_short_one() -> None:
    from ttscale.planner.allocate import ProblemState, policy_gain
    from ttscale.planner.data import merge
    from ttscale.planner.policy import fit_policy
    from ttscale.types import Sample

    # both kinds are rarely right in one sample; only the short one has a plurality to find
    short = known_pool([Group(30, 0.25, wrong=30, lp=-1.2)], k=16, seed=5, tokens=6)
    long_ = known_pool([Group(30, 0.02, wrong=30, lp=-1.2)], k=16, seed=6, tokens=200)
    long_ = dataclasses.replace(long_, group=["l"] * 30,
                                pool=dataclasses.replace(long_.pool, problem_ids=[f"l{i}" for i in range(30)]))
    train = merge([dataclasses.replace(short, group=["s"] * 30), long_])
    policy = fit_policy(train, probes=(2,), n_bins=1, n_orders=8)

    def state(tokens: int) -> ProblemState:
        return ProblemState(samples=[Sample(i, "", str(i + 7), None, tokens, 50, 0, 0.0, "stop", logprob=-1.2 * tokens)
                                     for i in range(2)], tokens=2 * tokens)

    near = policy_gain(policy, 2, [50.0, 50.0], neighbors=10)
    binned = policy_gain(policy, 2, [50.0, 50.0])
    assert near(0, state(6), 8) > 0.1 > near(1, state(200), 8)
    assert binned(0, state(6), 8) == binned(1, state(200), 8)  # one bin: the same curve for both


def test_one_gain_estimate_serves_many_allocations_each_with_its_own_bins() -> None:
    from ttscale.planner.allocate import ProblemState, policy_gain
    from ttscale.planner.policy import fit_policy
    from ttscale.types import Sample

    groups = [Group(20, 1.0, lp=-0.3), Group(20, 0.45, wrong=8, lp=-1.0)]
    policy = fit_policy(known_pool(groups, k=16, seed=1), probes=(2,), n_bins=2, n_orders=8)
    gain = policy_gain(policy, 2, [50.0])

    def state(answers: list[str], lp: float) -> ProblemState:
        return ProblemState(samples=[Sample(i, "", a, None, 5, 50, 0, 0.0, "stop", logprob=lp)
                                     for i, a in enumerate(answers)], tokens=10)

    settled = gain(0, state(["1", "1"], -0.3), 4)
    contested = gain(0, state(["1", "2"], -5.0), 4)  # the same problem in another run, other samples
    assert contested > settled
    assert gain(0, state(["1", "1"], -0.3), 4) == settled
