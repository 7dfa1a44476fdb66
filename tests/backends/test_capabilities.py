"""Every backend declares what it can do; the declared step hooks really work."""

from __future__ import annotations

import pytest

from ttscale.backends.base import Backend, Capabilities, GenerationRequest, capabilities_of
from ttscale.backends.fake import FakeBackend
from ttscale.testing.fake_steps import ScriptedStepBackend


def test_in_tree_fakes_declare_capabilities() -> None:
    for be in (FakeBackend(), ScriptedStepBackend()):
        assert isinstance(be, Backend) and isinstance(be.capabilities, Capabilities)
    assert not FakeBackend().capabilities.cancellation and ScriptedStepBackend().capabilities.cancellation
    assert FakeBackend(parallel=3).capabilities.wave(8) == 3


def test_a_backend_without_a_declaration_gets_the_plain_default() -> None:
    class Bare:
        pass

    assert capabilities_of(Bare()) == Capabilities() and Capabilities().wave(5) == 1


def test_on_sample_reports_each_finished_text() -> None:
    be = ScriptedStepBackend(lengths=lambda i: 2 + i)
    seen: list[tuple[int, int, str]] = []
    [gen] = be.generate([GenerationRequest(prompt="q", n=3)], on_sample=lambda r, i, t: seen.append((r, i, t)))
    assert [(r, i) for r, i, _ in seen] == [(0, 0), (0, 1), (0, 2)]
    assert [t for *_, t in seen] == [c.text for c in gen.completions]


@pytest.mark.model
def test_llama_cpp_declares_and_honours_its_hooks(smollm) -> None:  # type: ignore[no-untyped-def]
    caps = smollm.capabilities
    assert caps.cancellation and caps.shares_prompt_prefix and caps.tokenizer and caps.renders_prompts
    assert caps.parallel_sequences == smollm.n_seq_max and caps.context_length == smollm.n_ctx
    seen: dict[int, str] = {}
    req = GenerationRequest(prompt="Question: What is 2 plus 2?\nAnswer:", n=3, seed=4, max_tokens=8,
                            stop=("\nQuestion",))
    [gen] = smollm.generate([req], on_sample=lambda _r, i, t: seen.__setitem__(i, t))
    assert seen == {c.index: c.text for c in gen.completions}
