"""Particle filtering: resampling in proportion to softmax weights, budget, real model."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from ttscale.cost import Budget, Meter
from ttscale.errors import ConfigError
from ttscale.strategies.base import SolveContext
from ttscale.strategies.particle_filter import ParticleFilter, resample, softmax_weights
from ttscale.testing.fake_steps import ScriptedRewardModel, ScriptedStepBackend
from ttscale.types import Sampling


def test_softmax_weights() -> None:
    w = softmax_weights([0.1, 0.5, 0.9], 0.5)
    z = [math.exp(v / 0.5) for v in (0.1, 0.5, 0.9)]
    assert w == pytest.approx([x / sum(z) for x in z])
    with pytest.raises(ConfigError):
        softmax_weights([1.0], 0.0)


def test_resampling_frequencies_match_the_weights() -> None:
    w = softmax_weights([0.2, 0.6, 0.9, 0.3], 0.25)
    counts: Counter[int] = Counter()
    for seed in range(500):
        counts.update(resample(w, 40, random.Random(seed)))
    total = sum(counts.values())
    for i, wi in enumerate(w):
        assert abs(counts[i] / total - wi) < 0.01


def test_strategy_resamples_in_proportion_over_many_seeds(task) -> None:
    """End to end: the first population's scores are 0.1, 0.4, 0.7, 1.0 by position; count survivors."""
    be = ScriptedStepBackend(depth=5)
    prob = task.problems()[0]
    values = [0.1, 0.4, 0.7, 1.0]
    freq: Counter[int] = Counter()
    for seed in range(300):
        rm = ScriptedRewardModel(lambda c, i, _t: values[i] if c == 0 else 0.5)
        st = ParticleFilter(verifier=rm, k=4, temperature=0.3, max_steps=1)
        ctx = SolveContext(prob, be, task, Meter(be.model_info()), Sampling(seed=seed))
        st.solve(prob, ctx)
        # The root takes uid 1 and the first particles uids 2..5, in the order the RM scored them.
        freq.update(u - 2 for u in st.history[0])
    w = softmax_weights(values, 0.3)
    total = sum(freq.values())
    for i, wi in enumerate(w):
        assert abs(freq[i] / total - wi) < 0.03


def test_copies_of_a_particle_diverge_and_finish(task) -> None:
    be = ScriptedStepBackend(depth=2)
    rm = ScriptedRewardModel(lambda c, i, _t: 1.0 if i == 0 else 0.0)  # everything resamples onto one particle
    st = ParticleFilter(verifier=rm, k=4, temperature=0.01, max_steps=10)
    prob = task.problems()[0]
    res = st.solve(prob, SolveContext(prob, be, task, Meter(be.model_info())))
    assert len(set(st.history[0])) == 1
    assert be.history[1].n == 4  # the 4 copies were expanded as one request with n=4
    assert res.answer == "42" and res.meta["finished_paths"] >= 1


def test_budget_is_a_hard_cap(task) -> None:
    be = ScriptedStepBackend(depth=30)
    prob = task.problems()[0]
    ctx = SolveContext(prob, be, task, Meter(be.model_info(), Budget(tokens=300)))
    res = ParticleFilter(verifier=ScriptedRewardModel(), k=4, step_tokens=16, max_steps=40).solve(prob, ctx)
    assert ctx.meter.usage.total_tokens <= 300 and res.meta["budget_exhausted"]


@pytest.mark.model
def test_real_model_particle_filter(smollm) -> None:
    from ttscale.registry import make_task
    from ttscale.tasks.gsm_symbolic import DEFAULT_INSTRUCTION
    from ttscale.verifiers.judge import JudgeVerifier

    t = make_task("arithmetic", style="chat", shots=0, instruction=DEFAULT_INSTRUCTION, chat_model=True)
    prob = t.problems(limit=1)[0]
    ctx = SolveContext(prob, smollm, t, Meter(smollm.model_info(), Budget(tokens=2000)))
    res = ParticleFilter(verifier=JudgeVerifier(smollm), k=2, step_tokens=6, max_steps=2).solve(prob, ctx)
    assert ctx.meter.usage.total_tokens <= 2000 and res.meta["steps"] >= 1
    assert res.meta["step_stats"]["generated_tokens"] > 0 and res.meta["verifier_usage"]["prefilled_tokens"] > 0
