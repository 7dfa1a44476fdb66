"""Every backend declares what it can do; the declared step hooks really work."""

from __future__ import annotations

import pytest

from ttscale.backends.base import Backend
from ttscale.backends.fake import FakeBackend
from ttscale.testing.fake_steps import ScriptedStepBackend
from ttscale.types import Capabilities, GenerationRequest, capabilities_of


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


def test_backend_options_are_typed() -> None:
    """A typo or a bad value in backend options is a clear error before any engine is built."""
    from ttscale.errors import ConfigError
    from ttscale.registry import make_backend

    with pytest.raises(ConfigError, match="takes no option 'n_ctxx'.*n_ctx"):
        make_backend("llama-cpp", "smollm2-135m", n_ctxx=4096)
    with pytest.raises(ConfigError, match="n_seq_max"):
        make_backend("llama-cpp", "smollm2-135m", n_seq_max=0)
    with pytest.raises(ConfigError, match="unknown KV cache type"):
        make_backend("llama-cpp", "smollm2-135m", kv_type="q2")
    with pytest.raises(ConfigError, match="takes no option 'concurency'"):
        make_backend("openai", "m", base_url="http://127.0.0.1:9/v1", concurency=2)
