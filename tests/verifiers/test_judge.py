"""LLM-as-judge: P(Yes) from next-token log-probs, V chains, cost reported and bounded."""

from __future__ import annotations

import math

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import UnsupportedFeatureError
from ttscale.testing.fake_steps import ScriptedStepBackend
from ttscale.types import GenerationRequest, Problem, Sample
from ttscale.verifiers.judge import JudgeVerifier, p_yes

PROBLEM = Problem("p", "What is 6 times 7?", "42")


def _s(text: str, finish: str = "stop") -> Sample:
    return Sample(0, text, None, None, 5, 0, 0, 0.0, finish)


def test_p_yes_renormalizes_yes_and_no() -> None:
    assert math.isclose(p_yes({"Yes": math.log(0.3), " yes": math.log(0.1), "No": math.log(0.2)}), 0.4 / 0.6)
    assert p_yes({}) == 0.5


def test_scores_follow_the_judge_and_cost_is_reported() -> None:
    be = ScriptedStepBackend(judge=lambda t: 0.9 if "= 42" in t else 0.2)
    j = JudgeVerifier(be)
    out = j.score(PROBLEM, [_s("6 x 7 = 42"), _s("6 x 7 = 41")])
    assert [round(x, 6) for x in out.scores] == [0.9, 0.2]
    assert out.usage.prefilled_tokens == sum(be.count_prompt_tokens(r) for r in be.history) > 0
    bound = j.cost_bound(PROBLEM, [_s("6 x 7 = 42"), _s("6 x 7 = 41")], extra_tokens=10)
    assert bound.total_tokens >= out.usage.total_tokens + 20


def test_partial_solutions_are_asked_about_so_far() -> None:
    j = JudgeVerifier(ScriptedStepBackend())
    assert "so far" in j.question(PROBLEM, _s("Step 1", finish="partial"))
    assert "so far" not in j.question(PROBLEM, _s("The answer is 42."))


def test_v_chains_average_their_verdicts() -> None:
    be = ScriptedStepBackend(judge=lambda t: 0.8 if "Verdict" in t else 0.0)
    j = JudgeVerifier(be, verifications=3, verify_tokens=8)
    out = j.score(PROBLEM, [_s("6 x 7 = 42")])
    assert math.isclose(out.scores[0], 0.8, rel_tol=1e-6)
    assert out.usage.generated_tokens > 0  # the verification chains were generated and counted


def test_backend_without_log_probs_is_refused() -> None:
    with pytest.raises(UnsupportedFeatureError, match="next-token"):
        JudgeVerifier(FakeBackend())


@pytest.mark.model
def test_real_judge_probes_yes_no(smollm) -> None:
    j = JudgeVerifier(smollm)
    out = j.score(PROBLEM, [_s("6 x 7 = 42. The answer is 42."), _s("6 x 7 = 13. The answer is 13.")])
    assert all(0.0 < s < 1.0 for s in out.scores)
    assert out.usage.prefilled_tokens > 0 and out.usage.flops > 0
    probes = smollm.next_token_logprobs([j.request(PROBLEM, _s("x"))] * 2, ["Yes", "No"])
    assert probes[1].prefilled_tokens == 0 and probes[0].logprobs == probes[1].logprobs  # repeated prompt: once
    assert sum(math.exp(v) for v in probes[0].logprobs.values()) <= 1.0


def test_followup_judge_continues_the_task_conversation(tmp_path) -> None:
    from ttscale.tasks.jsonl import JsonlTask
    from ttscale.types import PromptFormat

    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "p", "prompt": "What is 6 times 7?", "answer": "42"}\n')
    task = JsonlTask(path=str(f), fmt=PromptFormat(style="chat"))
    be = ScriptedStepBackend(judge=lambda t: 0.7)
    j = JudgeVerifier(be, task=task)
    req = j.request(PROBLEM, _s("Step 1: 6 x 7", finish="partial"))
    base = task.request(PROBLEM)
    assert req.messages is not None and req.messages[: len(base.messages)] == base.messages
    assert req.messages[-2].content == "Step 1: 6 x 7" and "so far above correct" in req.messages[-1].content
    assert j.score(PROBLEM, [_s("x")]).scores == [pytest.approx(0.7)]


@pytest.mark.model
def test_real_judge_cost_bound_holds_with_prefix_sharing(smollm, tmp_path) -> None:
    from ttscale.tasks.jsonl import JsonlTask
    from ttscale.types import PromptFormat

    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "p", "prompt": "What is 6 times 7?", "answer": "42"}\n')
    j = JudgeVerifier(smollm, task=JsonlTask(path=str(f), fmt=PromptFormat(style="chat")))
    parents = [_s("", "partial"), _s("6 x 7 means six sevens.", "partial")]
    children = [_s("6 x 7 = 42.", "partial"), _s("Six sevens are 42.", "partial"),
                _s("6 x 7 means six sevens.\n\n7 + 7 + 7 + 7 + 7 + 7 = 42.", "partial")]
    bound = j.cost_bound(PROBLEM, [parents[0], parents[0], parents[1]], extra_tokens=24)
    smollm.generate([GenerationRequest(prompt="unrelated text to evict the cached prefix", max_tokens=1)])
    used = j.score(PROBLEM, children).usage
    assert 0 < used.prefilled_tokens <= bound.prefilled_tokens
    assert used.flops <= bound.flops
