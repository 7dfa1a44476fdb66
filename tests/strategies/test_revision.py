"""Sequential revision: each attempt sees the previous one; vote or verifier chooses; budget stops it."""

from __future__ import annotations

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.cost import Budget
from ttscale.strategies.revision import SequentialRevision, revision_request
from ttscale.strategies.voting import weighted_vote
from ttscale.testing.fake_steps import ScriptedRewardModel

from .helpers import one_problem_task, solve


@pytest.fixture
def task(tmp_path):
    return one_problem_task(tmp_path, style="chat", max_tokens=32)


def test_each_attempt_revises_the_previous(task) -> None:
    be = FakeBackend(answers={"42": 0.6, "41": 0.4})
    res, ctx = solve(SequentialRevision(k=3), task, be)
    assert len(res.samples) == 3 and len(be.history) == 3
    for prev, req in zip(ctx.samples, be.history[1:], strict=False):
        assert req.messages is not None and req.messages[-2].role == "assistant"
        assert req.messages[-2].content == prev.text and "previous answer" in req.messages[-1].content
    assert res.meta["chain"] == [s.answer for s in ctx.samples]
    assert res.answer == weighted_vote(ctx.samples)[0]
    assert res.meta["selection"] == "vote"


def test_verifier_picks_the_best_attempt(task) -> None:
    be = FakeBackend(answers={"42": 0.5, "41": 0.5})
    rm = ScriptedRewardModel(lambda _c, _i, t: 1.0 if "42" in t else 0.0)
    res, ctx = solve(SequentialRevision(k=4, verifier=rm), task, be)
    if any(s.answer == "42" for s in ctx.samples):
        assert res.answer == "42"
    assert res.meta["selection"] == "verifier" and len(res.meta["scores"]) == len(res.samples)


def test_completion_style_prompt_and_budget(task) -> None:
    req = revision_request(task.request(task.problems()[0]).with_(messages=None, prompt="Q: 6*7?\nA:"), "41")
    assert req.prompt is not None and req.prompt.startswith("Q: 6*7?\nA: 41") and "Revised answer:" in req.prompt
    be = FakeBackend(answers={"42": 1.0})
    res, ctx = solve(SequentialRevision(k=10), task, be, Budget(tokens=200))
    assert ctx.meter.usage.total_tokens <= 200 and 1 <= len(res.samples) < 10 and res.meta["budget_exhausted"]


@pytest.mark.model
def test_real_model_revision(smollm) -> None:
    from ttscale.registry import make_task
    from ttscale.tasks.gsm_symbolic import DEFAULT_INSTRUCTION

    t = make_task("arithmetic", style="chat", shots=0, instruction=DEFAULT_INSTRUCTION, max_tokens=8, chat_model=True)
    res, ctx = solve(SequentialRevision(k=2), t, smollm, Budget(tokens=1500))
    assert len(res.samples) == 2 and ctx.meter.usage.total_tokens <= 1500
    assert ctx.samples[1].prompt_tokens > ctx.samples[0].prompt_tokens  # the revision saw the first attempt
