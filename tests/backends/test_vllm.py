"""vLLM backend: engine-independent logic with a stub ``vllm`` module; the real engine only where vLLM runs."""

from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from ttscale.backends.vllm import (
    VLLM_MISSING,
    VllmBackend,
    generation_from_output,
    info_from_hf_config,
    sampling_kwargs,
)
from ttscale.cost import generation_usage
from ttscale.errors import UnsupportedFeatureError
from ttscale.types import ChatMessage, GenerationRequest


@dataclass
class Logprob:  # vllm.sequence.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = "stop"


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    num_cached_tokens: int = 0


class SamplingParams:
    def __init__(self, **kw: Any) -> None:
        self.kw = kw


class Tokenizer:
    chat_template = "{{ messages }}"

    def encode(self, text: str) -> list[int]:
        return [1] + [len(w) for w in text.split()]

    def apply_chat_template(self, msgs: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool) -> list[int]:
        return [1, 2] + [len(w) for m in msgs for w in m["content"].split()] + [3]


@dataclass
class HfConfig:
    hidden_size: int = 64
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    num_hidden_layers: int = 3
    intermediate_size: int = 128
    vocab_size: int = 100
    max_position_embeddings: int = 2048
    model_type: str = "stub"


@dataclass
class LLM:
    model: str
    enable_prefix_caching: bool = False
    seed: int = 0
    calls: list[Any] = field(default_factory=list)

    def get_tokenizer(self) -> Tokenizer:
        return Tokenizer()

    @property
    def llm_engine(self) -> Any:
        return types.SimpleNamespace(model_config=types.SimpleNamespace(hf_config=HfConfig()))

    def generate(self, prompts: list[dict[str, list[int]]], params: list[SamplingParams], use_tqdm: bool) -> list[RequestOutput]:
        self.calls.append((prompts, params))
        outs = []
        for i, (p, sp) in enumerate(zip(prompts, params, strict=False)):
            ids = p["prompt_token_ids"]
            comps = [CompletionOutput(j, f" answer {j}", [5, 6, 7][: j + 1], -0.5 * (j + 1),
                                      [{t: Logprob(-0.5)} for t in [5, 6, 7][: j + 1]] if sp.kw["logprobs"] == 0 else None,
                                      "length" if j == 2 else "stop")
                     for j in range(sp.kw["n"])]
            outs.append(RequestOutput(ids, comps, num_cached_tokens=2 if i else 0))
        return outs


@pytest.fixture
def stub_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    mod = types.ModuleType("vllm")
    mod.LLM = LLM  # type: ignore[attr-defined]
    mod.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return mod


def test_sampling_kwargs() -> None:
    req = GenerationRequest(prompt="x", n=4, temperature=0.7, top_p=0.9, max_tokens=20, stop=("\n",), seed=3)
    assert sampling_kwargs(req, 3) == {"n": 4, "temperature": 0.7, "top_p": 0.9, "max_tokens": 20, "seed": 3,
                                       "logprobs": 0, "stop": ["\n"]}
    assert sampling_kwargs(req.with_(logprobs=False, stop=()), None)["logprobs"] is None
    assert sampling_kwargs(req.with_(top_k=40, min_p=0.05), 3) | {} == sampling_kwargs(req, 3) | {"top_k": 40, "min_p": 0.05}


def test_output_conversion_counts_like_the_embedded_backend() -> None:
    req = GenerationRequest(prompt="x", n=3)
    out = RequestOutput([1, 2, 3, 4, 5], [
        CompletionOutput(1, "b", [9, 9], -1.0, [{9: Logprob(-0.25)}, {9: Logprob(-0.75)}], "stop"),
        CompletionOutput(0, "a", [8], -0.5, [{8: Logprob(-0.5)}], "length"),
        CompletionOutput(2, "c", [7, 7, 7], None, None, "abort"),
    ], num_cached_tokens=3)
    gen = generation_from_output(req, out, 0.1)
    assert [c.index for c in gen.completions] == [0, 1, 2]
    assert gen.prompt_tokens == 5 and gen.prefilled_tokens == 2  # prefix-cache hits are not prefilled again
    assert [c.prefilled_tokens for c in gen.completions] == [2, 0, 0]
    assert gen.generated_tokens == 6
    assert gen.completions[1].token_logprobs == [-0.25, -0.75] and gen.completions[1].logprob == -1.0
    assert [c.finish_reason for c in gen.completions] == ["length", "stop", "cancelled"]


def test_backend_with_stub_engine(stub_vllm: types.ModuleType) -> None:
    be = VllmBackend("stub/model")
    assert be._llm.enable_prefix_caching is True
    reqs = [GenerationRequest(prompt="two words", n=3, seed=1),
            GenerationRequest(messages=(ChatMessage("user", "hi there"),), n=1, logprobs=False)]
    gens = be.generate(reqs)
    prompts, params = be._llm.calls[0]
    assert prompts[0]["prompt_token_ids"] == [1, 3, 5] and prompts[1]["prompt_token_ids"] == [1, 2, 2, 5, 3]
    assert params[0].kw["n"] == 3 and params[0].kw["seed"] == 1 and params[1].kw["logprobs"] is None
    assert be.count_prompt_tokens(reqs[1]) == 5 == gens[1].prompt_tokens
    assert gens[1].prefilled_tokens == 3 and gens[1].completions[0].logprob is None
    info = be.model_info()
    assert info.n_layers == 3 and info.n_kv_heads == 2 and info.head_dim == 16 and info.n_params > 0
    assert generation_usage(gens[0], info).generated_tokens == 6
    be.close()


def test_hf_config_shapes() -> None:
    info = info_from_hf_config("m", HfConfig(), n_params=123)
    assert (info.n_params, info.d_model, info.n_ctx_train) == (123, 64, 2048)


def test_missing_vllm_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails as if not installed
    with pytest.raises(UnsupportedFeatureError, match="vLLM is not installed"):
        VllmBackend("any")
    assert "CPU" in VLLM_MISSING


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                    reason="vLLM is not installed: it needs a CUDA/ROCm GPU and cannot run on this CPU-only machine")
def test_real_vllm_engine() -> None:  # pragma: no cover - runs only where vLLM runs
    be = VllmBackend("HuggingFaceTB/SmolLM2-135M-Instruct", gpu_memory_utilization=0.3)
    gen = be.generate([GenerationRequest(prompt="1 + 1 =", n=2, max_tokens=8, seed=0)])[0]
    assert len(gen.completions) == 2 and gen.prompt_tokens == be.count_prompt_tokens(gen.request)
    be.close()


def test_registry_kinds(monkeypatch: pytest.MonkeyPatch, stub_vllm: types.ModuleType) -> None:
    from ttscale.errors import ConfigError
    from ttscale.registry import make_backend

    assert isinstance(make_backend("vllm", "stub/model"), VllmBackend)
    with pytest.raises(ConfigError, match="needs a model"):
        make_backend("vllm")
