"""Math-Shepherd rollout value: fraction of rollouts reaching the reference; marked as using it."""

from __future__ import annotations

import json

import pytest

from ttscale.tasks.jsonl import JsonlTask
from ttscale.testing.fake_steps import ScriptedStepBackend
from ttscale.types import PromptFormat, Sample
from ttscale.verifiers.rollout import RolloutVerifier


@pytest.fixture
def task(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"id": "p1", "prompt": "What is 6 times 7?", "answer": "42"}) + "\n")
    return JsonlTask(path=str(p), fmt=PromptFormat(style="completion", max_tokens=64))


def test_rollout_fraction_and_reference_flag(task) -> None:
    be = ScriptedStepBackend(answers={"42": 1.0}, depth=2)
    v = RolloutVerifier(be, task, rollouts=4)
    assert v.uses_reference is True
    prob = task.problems()[0]
    partial = Sample(0, "Step 1: w1 w2", None, None, 3, 0, 0, 0.0, "partial")
    done_wrong = Sample(1, "The answer is 41.", "41", False, 4, 0, 0, 0.0, "stop")
    out = v.score(prob, [partial, done_wrong])
    assert out.scores == [1.0, 0.0]
    assert out.usage.generated_tokens > 0 and len(be.history) == 1  # only the partial was rolled out
    be2 = ScriptedStepBackend(answers={"42": 1.0, "41": 1.0}, depth=1)
    frac = RolloutVerifier(be2, task, rollouts=64).score(prob, [partial]).scores[0]
    assert 0.3 < frac < 0.7
    bound = v.cost_bound(prob, [partial], extra_tokens=0)
    assert bound.generated_tokens == 4 * v.max_tokens
