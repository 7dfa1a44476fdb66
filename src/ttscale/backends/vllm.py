"""vLLM offline backend (optional extra ``ttscale[vllm]``; needs a GPU, so it cannot run on this machine).

Written against vLLM's documented offline API: ``vllm.LLM(model, enable_prefix_caching=True)``,
``LLM.generate(prompts, [SamplingParams(n=..., temperature, top_p, max_tokens, seed, stop, logprobs=0)])``
returning one ``RequestOutput`` per prompt (``prompt_token_ids``, ``num_cached_tokens``,
``outputs``: ``CompletionOutput`` with ``index``, ``text``, ``token_ids``,
``cumulative_logprob``, ``logprobs`` (one ``{token_id: Logprob}`` dict per generated
token), ``finish_reason``). ``n`` samples of a prompt share its prefill; prefix
caching lets a few-shot prefix shared across problems be prefilled once.

Prompts are tokenized here (the model's tokenizer and chat template) and passed
as token ids, so the prompt count is exact and the same as ``count_prompt_tokens``.
The conversion functions below are engine-independent and unit-tested with a
stub of the ``vllm`` module.

SGLang: use its OpenAI-compatible server with the ``openai`` backend
(``--backend openai --base-url http://host:30000/v1``); it honours ``n`` and logprobs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ConfigDict

from ttscale.backends.base import report_finished
from ttscale.backends.spec import BackendKind, BackendOptions
from ttscale.errors import BackendError, UnsupportedFeatureError
from ttscale.types import (
    Cancelled,
    Capabilities,
    Completion,
    FinishReason,
    Generation,
    GenerationRequest,
    ModelInfo,
    OnFinish,
    OnSample,
    ShouldStop,
)

VLLM_MISSING = (
    "vLLM is not installed (pip install 'ttscale[vllm]'); it needs a CUDA/ROCm GPU or a supported "
    "accelerator, so it cannot run on a CPU-only machine: use --backend openai against a vLLM server instead"
)


def sampling_kwargs(req: GenerationRequest, seed: int | None) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` for one request."""
    kw: dict[str, Any] = {
        "n": req.n,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "max_tokens": req.max_tokens,
        "seed": seed,
        # logprobs=0: only the sampled token's log-prob (no alternatives), which is what we store.
        "logprobs": 0 if req.logprobs else None,
    }
    if req.stop:
        kw["stop"] = list(req.stop)
    if req.top_k or req.min_p:  # vLLM's defaults are no truncation either; only sent when asked for
        kw |= {"top_k": req.top_k, "min_p": req.min_p}
    return kw


def _finish(reason: Any) -> FinishReason:
    if reason == "length":
        return "length"
    if reason == "abort":
        return "cancelled"
    return "stop"


def _token_logprobs(out: Any) -> list[float] | None:
    entries = getattr(out, "logprobs", None)
    if entries is None:
        return None
    vals: list[float] = []
    for tid, entry in zip(out.token_ids, entries, strict=False):
        lp = entry.get(tid) if isinstance(entry, dict) else None
        value: Any = getattr(lp, "logprob", lp)
        vals.append(float(value) if value is not None else float("nan"))
    return vals


def generation_from_output(req: GenerationRequest, output: Any, wall_s: float) -> Generation:
    """Convert a ``RequestOutput`` to a :class:`Generation` with the embedded backend's counting rules."""
    prompt_tokens = len(output.prompt_token_ids or [])
    cached = int(getattr(output, "num_cached_tokens", 0) or 0)
    prefilled = max(0, prompt_tokens - cached)
    comps: list[Completion] = []
    for order, out in enumerate(sorted(output.outputs, key=lambda o: o.index)):
        lps = _token_logprobs(out) if req.logprobs else None
        cum = getattr(out, "cumulative_logprob", None)
        total = float(cum) if cum is not None else (math.fsum(x for x in lps if not math.isnan(x)) if lps else None)
        comps.append(Completion(
            text=out.text,
            n_tokens=len(out.token_ids),
            finish_reason=_finish(out.finish_reason),
            prompt_tokens=prompt_tokens,
            prefilled_tokens=prefilled if order == 0 else 0,
            logprob=total if req.logprobs else None,
            token_logprobs=lps,
            index=out.index,
            finish_order=order,
        ))
    return Generation(request=req, completions=comps, prompt_tokens=prompt_tokens, prefilled_tokens=prefilled,
                      wall_s=wall_s)


def info_from_hf_config(name: str, cfg: Any, n_params: int | None = None) -> ModelInfo:
    """Model shapes from a Hugging Face config (``n_params`` estimated from the shapes when not given)."""
    d = int(cfg.hidden_size)
    heads = int(cfg.num_attention_heads)
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or d // heads)
    layers = int(cfg.num_hidden_layers)
    if n_params is None:  # attention (q, o; k, v) + gated MLP per layer, plus the embedding
        ff = int(getattr(cfg, "intermediate_size", 4 * d))
        n_params = layers * (2 * d * heads * head_dim + 2 * d * kv * head_dim + 3 * d * ff) + int(cfg.vocab_size) * d
    return ModelInfo(name=name, n_params=n_params, n_layers=layers, n_heads=heads, n_kv_heads=kv, head_dim=head_dim,
                     d_model=d, n_ctx_train=int(getattr(cfg, "max_position_embeddings", 0) or 0),
                     architecture=str(getattr(cfg, "model_type", "")), has_chat_template=True,
                     extra={"engine": "vllm"})


class VllmBackend:
    """Generation through ``vllm.LLM`` (one engine per process)."""

    def __init__(self, model: str, *, enable_prefix_caching: bool = True, seed: int = 0,
                 info: ModelInfo | None = None, **llm_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError as e:
            raise UnsupportedFeatureError(VLLM_MISSING) from e
        self._vllm = vllm
        self.model_ref = model
        try:
            self._llm = vllm.LLM(model=model, enable_prefix_caching=enable_prefix_caching, seed=seed, **llm_kwargs)
        except Exception as e:  # vLLM raises many types (no GPU, OOM, bad config)
            raise BackendError(f"vLLM could not load {model}: {e}") from e
        self._tok = self._llm.get_tokenizer()
        self._info = info
        self._prefix_caching = enable_prefix_caching

    @property
    def name(self) -> str:
        return f"vllm:{self.model_ref}"

    @property
    def capabilities(self) -> Capabilities:
        # vLLM schedules every request of a call together and caches shared prefixes itself.
        return Capabilities(parallel_sequences=256, shares_prompt_prefix=self._prefix_caching, local_prompt_counts=True)

    def model_info(self) -> ModelInfo:
        if self._info is None:
            cfg = self._llm.llm_engine.model_config.hf_config
            self._info = info_from_hf_config(self.model_ref, cfg)
        return self._info

    def prompt_ids(self, req: GenerationRequest) -> list[int]:
        if req.prompt is not None:
            return list(self._tok.encode(req.prompt))
        msgs = [{"role": m.role, "content": m.content} for m in req.messages or ()]
        if not getattr(self._tok, "chat_template", None):
            raise UnsupportedFeatureError(f"model {self.model_ref} has no chat template: use the completion style")
        return list(self._tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True))

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self.prompt_ids(request))

    def generate(self, requests: Sequence[GenerationRequest], *, should_stop: ShouldStop | None = None,
                 on_finish: OnFinish | None = None, on_sample: OnSample | None = None,
                 cancelled: Cancelled | None = None) -> list[Generation]:
        """Offline vLLM returns whole generations: the per-sample hooks are called after the fact."""
        prompts = [{"prompt_token_ids": self.prompt_ids(r)} for r in requests]
        params = [self._vllm.SamplingParams(**sampling_kwargs(r, r.seed)) for r in requests]
        t0 = time.perf_counter()
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        wall = time.perf_counter() - t0
        gens = [generation_from_output(r, o, wall) for r, o in zip(requests, outputs, strict=True)]
        report_finished(gens, on_finish, on_sample)
        return gens

    def close(self) -> None:
        self._llm = None


class VllmOptions(BackendOptions):
    """Options of offline vLLM; any other option is passed on to ``vllm.LLM``."""

    enable_prefix_caching: bool = True
    seed: int = 0
    info: Any = None
    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)  # passed on to vllm.LLM


SPEC = BackendKind("vllm", lambda model, options: VllmBackend(str(model), **options), VllmOptions,
                   "offline vLLM in this process (GPU only)", needs_model=True, in_process=True)
