"""Beam search: keeps exactly the top N/M each step, expands each survivor M ways, respects the budget."""

from __future__ import annotations

import pytest

from ttscale.cost import Budget
from ttscale.errors import ConfigError
from ttscale.strategies.beam import BeamSearch
from ttscale.testing.fake_steps import ScriptedRewardModel, ScriptedStepBackend

from .helpers import solve


def test_keeps_exactly_the_top_n_over_m_each_step(task) -> None:
    be = ScriptedStepBackend(answers={"42": 0.5, "41": 0.5}, depth=3)
    rm = ScriptedRewardModel()
    st = BeamSearch(verifier=rm, k=8, beam_width=2, max_steps=10)
    res, _ = solve(st, task, be)
    assert len(st.trace) == len(rm.calls) == 4  # 3 reasoning steps + the answer step
    for kept, call in zip(st.trace, rm.calls, strict=False):
        scores = sorted((s for _, s in call), reverse=True)
        assert [v for _, v in kept] == scores[:4]  # exactly the top N/M = 4, best first
    # Each unfinished survivor is expanded into exactly M = 2 continuations.
    assert be.history[0].n == 8
    for req in be.history[1:]:
        assert req.n == 2
    assert [len(c) for c in rm.calls] == [8, 8, 8, 8]
    assert res.answer in ("41", "42") and res.meta["finished_paths"] == 4


def test_answer_is_the_best_finished_path(task) -> None:
    be = ScriptedStepBackend(answers={"42": 0.5, "41": 0.5}, depth=1)
    rm = ScriptedRewardModel(lambda _c, _i, t: 0.9 if "42" in t else 0.1)
    res, ctx = solve(BeamSearch(verifier=rm, k=4, beam_width=2), task, be)
    assert res.answer == "42" and res.correct
    assert ctx.samples and all(s.finish_reason == "stop" for s in ctx.samples)


def test_budget_is_a_hard_cap(task) -> None:
    be = ScriptedStepBackend(depth=30)
    for cap in (150, 400, 700):
        res, ctx = solve(BeamSearch(verifier=ScriptedRewardModel(), k=4, beam_width=2, step_tokens=16, max_steps=40),
                          task, be,
                          Budget(tokens=cap))
        assert ctx.meter.usage.total_tokens <= cap
        assert res.meta["budget_exhausted"]
        assert res.answer is not None  # best partial so far


def test_bad_knobs() -> None:
    with pytest.raises(ConfigError):
        BeamSearch(verifier=ScriptedRewardModel(), k=5, beam_width=2)
    with pytest.raises(ConfigError):
        BeamSearch(verifier=None)
    with pytest.raises(ConfigError):
        BeamSearch(verifier=ScriptedRewardModel(), aggregate="max")


@pytest.mark.model
def test_real_model_beam_with_judge(smollm) -> None:
    from ttscale.registry import make_task
    from ttscale.tasks.gsm_symbolic import DEFAULT_INSTRUCTION
    from ttscale.verifiers.judge import JudgeVerifier

    t = make_task("arithmetic", style="chat", shots=0, instruction=DEFAULT_INSTRUCTION, chat_model=True)
    st = BeamSearch(verifier=JudgeVerifier(smollm), k=2, beam_width=1, step_tokens=6, max_steps=2)
    res, ctx = solve(st, t, smollm, Budget(tokens=2000))
    assert ctx.meter.usage.total_tokens <= 2000
    assert res.meta["steps"] >= 1 and res.samples
    assert res.meta["verifier_usage"]["prefilled_tokens"] > 0
