"""Online early stopping: short-m@k cancels after m finish; adaptive consistency stops where its rule says."""

from __future__ import annotations

import pytest
from scipy import stats

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.strategies.early_stop import (
    AdaptiveConsistency,
    ShortMAtK,
    beta_confidence,
    dirichlet_confidence,
    supports_cancellation,
)
from ttscale.testing.fake_steps import ScriptedStepBackend

from .helpers import solve


@pytest.mark.parametrize(("v1", "v2"), [(0, 0), (3, 1), (4, 0), (7, 5), (20, 3)])
def test_beta_confidence_matches_scipy(v1: int, v2: int) -> None:
    assert beta_confidence(v1, v2) == pytest.approx(stats.beta(v1 + 1, v2 + 1).sf(0.5), abs=1e-12)


def test_dirichlet_confidence_is_sane() -> None:
    assert dirichlet_confidence([10, 0, 0]) > 0.99
    assert 0.3 < dirichlet_confidence([3, 3]) < 0.7


def test_short_m_at_k_cancels_once_m_finished(task) -> None:
    lengths = [10, 3, 7, 5, 9, 2]  # filler tokens; each sample adds 4 answer tokens
    be = ScriptedStepBackend(lengths=lambda i: lengths[i])
    assert supports_cancellation(be)
    res, ctx = solve(ShortMAtK(k=6, m=2), task, be)
    # The two shortest finish at steps 6 and 7; the other four are cancelled after step 7.
    assert sorted(s.n_tokens for s in ctx.samples if s.finish_reason == "stop") == [6, 7]
    assert all(s.n_tokens == 7 for s in ctx.samples if s.finish_reason == "cancelled")
    assert ctx.meter.usage.generated_tokens == 6 + 7 + 4 * 7
    assert res.meta["cancelled"] == 4 and res.meta["online_cancellation"] and len(res.samples) == 2


def test_short_m_at_k_without_hooks_runs_all_k(task) -> None:
    be = FakeBackend(answers={"42": 1.0}, filler_tokens=lambda rng: rng.randrange(1, 20))
    assert not supports_cancellation(be)
    res, ctx = solve(ShortMAtK(k=5, m=2), task, be)
    assert res.meta["cancelled"] == 0 and not res.meta["online_cancellation"]
    firsts = sorted(ctx.samples, key=lambda s: s.finish_order)[:2]
    assert res.samples == [s.index for s in firsts] and res.answer == "42"


def test_adaptive_stops_where_the_beta_rule_says(task) -> None:
    # Unanimous answers: confidence after v votes is 1 - 2^-(v+1): 0.75, 0.875, 0.9375, 0.96875 -> stop at 4.
    res, ctx = solve(AdaptiveConsistency(k=16, batch=1, threshold=0.95), task, FakeBackend(answers={"42": 1.0}))
    assert res.meta["stopped_at"] == 4 == len(ctx.samples)
    assert res.meta["confidence"] == pytest.approx([0.75, 0.875, 0.9375, 0.96875])
    # Batches of 3: checked after 3 (0.9375) and 6 samples.
    res, _ = solve(AdaptiveConsistency(k=16, batch=3, threshold=0.95), task, FakeBackend(answers={"42": 1.0}))
    assert res.meta["stopped_at"] == 6


def test_adaptive_runs_to_max_k_when_answers_disagree(task) -> None:
    res, ctx = solve(AdaptiveConsistency(k=10, threshold=0.99), task, FakeBackend(answers={"1": 1, "2": 1, "3": 1}))
    assert res.meta["stopped_at"] == 10 and len(ctx.samples) == 10
    res, _ = solve(AdaptiveConsistency(k=16, batch=1, threshold=0.95, rule="dirichlet"), task,
                   FakeBackend(answers={"42": 1.0}))
    assert res.meta["stopped_at"] < 16 and res.meta["confidence"][-1] >= 0.95


def test_adaptive_waves_follow_the_backend_parallelism(task) -> None:
    """Without step hooks, waves are as wide as the backend's declared parallel sequences."""
    be = FakeBackend(answers={"42": 1.0}, parallel=3)
    res, ctx = solve(AdaptiveConsistency(k=7, threshold=0.95), task, be)
    assert [r.n for r in be.history] == [3, 3]  # 3 votes: 0.9375 < 0.95; 6 votes: stop
    assert res.meta["wave"] == 3 and res.meta["stopped_at"] == 6 == len(ctx.samples)


def test_adaptive_stops_inside_a_wave_once_finished_samples_settle(task) -> None:
    """One wave of k (the backend runs 64 in parallel): the vote is checked as each sample finishes,
    and the unfinished ones are cancelled at the next step once four agree (0.969 >= 0.95)."""
    lengths = [12, 3, 9, 5, 20, 2, 7, 15]
    be = ScriptedStepBackend(lengths=lambda i: lengths[i])
    res, ctx = solve(AdaptiveConsistency(k=8, threshold=0.95), task, be)
    assert len(be.history) == 1 and be.history[0].n == 8
    done = sorted(s.n_tokens for s in ctx.samples if s.finish_reason == "stop")
    assert done == [6, 7, 9, 11]  # the four shortest (2, 3, 5, 7 filler tokens + 4 answer tokens)
    assert all(s.n_tokens == 11 for s in ctx.samples if s.finish_reason == "cancelled")
    assert res.meta["stopped_at"] == 4 and res.meta["cancelled"] == 4 and len(res.samples) == 4
    assert ctx.meter.usage.generated_tokens == 6 + 7 + 9 + 11 + 4 * 11  # cancelled tokens are paid


def test_adaptive_without_agreement_is_one_wave_like_self_consistency(task) -> None:
    be = ScriptedStepBackend(answers={"1": 1, "2": 1, "3": 1, "4": 1}, lengths=lambda i: 3 + i)
    res, ctx = solve(AdaptiveConsistency(k=8, threshold=0.95), task, be)
    assert len(be.history) == 1 and res.meta["cancelled"] == 0 and res.meta["stopped_at"] == 8


def test_bad_knobs() -> None:
    with pytest.raises(ConfigError):
        ShortMAtK(k=2, m=3)
    with pytest.raises(ConfigError):
        AdaptiveConsistency(threshold=1.2)
    with pytest.raises(ConfigError):
        AdaptiveConsistency(rule="gamma")


@pytest.mark.model
def test_real_model_short_m_at_k_cancels(smollm) -> None:
    from ttscale.registry import make_task
    from ttscale.tasks.gsm_symbolic import DEFAULT_INSTRUCTION

    t = make_task("arithmetic", style="chat", shots=0, instruction=DEFAULT_INSTRUCTION, max_tokens=16, chat_model=True)
    res, ctx = solve(ShortMAtK(k=4, m=1), t, smollm)
    assert res.meta["online_cancellation"] and len(res.samples) == 1
    done = [s for s in ctx.samples if s.finish_reason != "cancelled"]
    assert done and ctx.meter.usage.generated_tokens <= 4 * 16
    if res.meta["cancelled"]:
        longest_done = max(s.n_tokens for s in done)
        assert all(s.n_tokens <= longest_done + 1 for s in ctx.samples if s.finish_reason == "cancelled")


@pytest.mark.model
def test_real_model_adaptive(smollm) -> None:
    from ttscale.registry import make_task

    t = make_task("arithmetic", max_tokens=4, chat_model=True)  # few-shot completion: short answers
    res, ctx = solve(AdaptiveConsistency(k=4, batch=2, threshold=0.9), t, smollm)
    assert res.meta["stopped_at"] == len(ctx.samples) <= 4 and len(res.meta["confidence"]) >= 1
