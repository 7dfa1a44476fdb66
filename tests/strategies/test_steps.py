"""Step-level generation: children, finishing, exact accounting, budget refusal, prefix reuse."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ttscale.cost import Budget, Meter, generation_usage
from ttscale.errors import ConfigError
from ttscale.strategies.steps import StepGenerator
from ttscale.testing.fake_steps import ScriptedStepBackend
from ttscale.types import Capabilities, ChatMessage, GenerationRequest


def _gen(backend, **kw) -> StepGenerator:
    base = GenerationRequest(prompt="Question: what is 6 times 7?\nAnswer:", temperature=0.8)
    return StepGenerator(backend, base, step_tokens=kw.pop("step_tokens", 32), **kw)


def test_children_follow_the_steps_and_finish_at_the_answer() -> None:
    be = ScriptedStepBackend(depth=2)
    g = _gen(be, max_steps=8)
    kids = g.expand([g.root()], 3)
    assert kids is not None and len(kids[0]) == 3
    assert all(k.steps[0].startswith("Step 1:") and not k.done for k in kids[0])
    assert len({k.uid for k in kids[0]}) == 3
    second = g.expand(kids[0], 1)
    assert second is not None
    assert all(c[0].steps[-1].startswith("Step 2:") and c[0].parent == p.uid for c, p in zip(second, kids[0], strict=False))
    third = g.expand([c[0] for c in second], 1)
    assert third is not None
    final = third[0][0]
    assert final.done and final.finish_reason == "stop" and final.steps[-1] == "The answer is 42."
    assert g.expand([final], 2) == [[]]  # finished partials get no children


def test_max_steps_finishes_a_path() -> None:
    g = _gen(ScriptedStepBackend(depth=5), max_steps=1)
    kids = g.expand([g.root()], 2)
    assert kids is not None and all(k.done and k.finish_reason == "length" for k in kids[0])


def test_accounting_is_the_engines_own_and_charged_exactly() -> None:
    be = ScriptedStepBackend(depth=3)
    g = _gen(be)
    meter = Meter(be.model_info(), Budget())
    kids = g.expand([g.root()], 2, meter=meter)
    assert kids is not None
    g.expand(kids[0], [1, 2], meter=meter)
    reqs = list(be.history)
    gens = be.generate(reqs)  # the fake is deterministic given the seeds: recompute what was spent
    expected = sum((generation_usage(x, be.model_info()) for x in gens), start=type(meter.usage)())
    assert meter.usage.prefilled_tokens == g.stats.prefilled_tokens == expected.prefilled_tokens
    assert meter.usage.generated_tokens == g.stats.generated_tokens == expected.generated_tokens
    assert g.stats.full_prompt_tokens == sum(be.count_prompt_tokens(r) for r in reqs)
    assert g.stats.calls == 2 and g.stats.requests == 3


def test_budget_refuses_the_step_before_any_work() -> None:
    be = ScriptedStepBackend()
    g = _gen(be, step_tokens=32)
    meter = Meter(be.model_info(), Budget(tokens=50))
    assert g.expand([g.root()], 2, meter=meter) is None  # worst case 2 x 32 + prompt > 50
    assert meter.usage.total_tokens == 0 and be.history == []


def test_bad_knobs() -> None:
    with pytest.raises(ConfigError):
        _gen(ScriptedStepBackend(), delimiter="")
    g = _gen(ScriptedStepBackend())
    with pytest.raises(ConfigError):
        g.expand([g.root()], [1, 2])


@pytest.mark.model
def test_real_model_steps_reuse_the_shared_prefix(smollm) -> None:
    base = GenerationRequest(messages=(ChatMessage("user", "What is 7 times 8? Think step by step."),), temperature=0.8)
    g = StepGenerator(smollm, base, step_tokens=6, max_steps=3, seed=1)
    meter = Meter(smollm.model_info(), Budget())
    kids = g.expand([g.root()], 2, meter=meter)
    assert kids is not None and len(kids[0]) == 2
    assert all("\n\n" not in k.text() for k in kids[0])
    more = g.expand(kids[0], 1, meter=meter)
    assert more is not None
    assert meter.usage.prefilled_tokens == g.stats.prefilled_tokens
    assert meter.usage.generated_tokens == g.stats.generated_tokens > 0
    # The prompt is shared by all partials: the engine prefilled less than the prompts' full lengths.
    assert g.stats.prefilled_tokens < g.stats.full_prompt_tokens


class _SharingFake(ScriptedStepBackend):
    """The scripted engine, declared prefix-sharing, with whitespace tokens."""

    @property
    def capabilities(self) -> Capabilities:
        return replace(super().capabilities, shares_prompt_prefix=True, tokenizer=True)

    def tokenize(self, text: str) -> list[str]:
        return text.split()


def test_prefill_bound_counts_a_shared_prefix_once() -> None:
    from ttscale.strategies.steps import prefill_bound

    texts = ["a b c d e", "a b c x", "a b y"]
    assert prefill_bound(ScriptedStepBackend(), texts) == 12  # no sharing: every prompt in full
    assert prefill_bound(_SharingFake(), texts) == 2 + 3 + 2 + 1  # "a b" once, then each suffix
    assert prefill_bound(_SharingFake(), texts, extra=[1, 1, 1], margin=1) == 1 + 4 + 3 + 2 + 3
    assert prefill_bound(_SharingFake(), ["a b", "a b"]) == 1 + 1 + 1  # shared part capped at len - 1
