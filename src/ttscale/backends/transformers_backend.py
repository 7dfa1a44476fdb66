"""Transformers backend: the project's GGUF models run by Hugging Face ``transformers`` on the CPU, with
``kvpress`` KV-cache presses applied while the prompt is prefilled (optional extra ``ttscale[transformers]``).

llama.cpp exposes no attention scores, so attention-guided KV eviction (SnapKV, TOVA, H2O-style observed
attention) needs another engine. ``transformers`` loads a Qwen2 GGUF file by dequantizing it
(``from_pretrained(dir, gguf_file=name)``), so the same weights the embedded engine runs quantized run
here in float32; ``kvpress`` presses are forward hooks on the attention layers (``with press(model):``)
that prune the cache once, at the end of the prefill, and, with ``decode_kv``, again every
``decode_interval`` decode steps (kvpress's ``DecodingPress``), so a long chain's own cells stay capped.

How a request is generated, with llama.cpp's backend (:mod:`ttscale.backends.llama_cpp`) as the reference:

1. The rendered prompt is prefilled once, as one forward pass of batch 1 (a press needs the whole prompt
   in one pass: it compresses when ``cache_position`` starts at 0); the press, if any, prunes each
   layer's keys and values as that layer finishes. The first token's logits come from this pass.
2. The (compressed) cache is expanded to the ``n`` samples (``n_seq_max`` at a time; later waves reuse
   the same prefill), and every live sample decodes one token per step in one batched forward pass, at
   the true positions (``position_ids`` continue from the prompt length, whatever the press kept).
3. Each sample has its own ``torch.Generator`` seeded ``seed + index``; sampling follows llama.cpp's chain
   (top-k, top-p, min-p on the model's distribution, then temperature); log-probs are those of the
   unmodified distribution (``log_softmax`` of the raw logits).

Counts are exact: prompt tokens from the model's own tokenizer, the prefill counted once (on the first
sample), generated tokens including a final end-of-generation token. ``Generation.peak_kv_tokens`` counts
the cells of the real cache (every layer's keys and values, all samples' copies of the kept prompt
cells plus their generated cells), so the meter's KV bytes (``ModelInfo.kv_bytes`` at ``f32``) are the
bytes the cache really held, after compression. Unlike llama.cpp's unified cache, each sample holds its
own copy of the prompt's cells here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import random
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from ttscale.backends.base import cut_at_stop
from ttscale.backends.spec import BackendKind, BackendOptions, Endpoint, EngineArgs
from ttscale.errors import BackendError, ConfigError, UnsupportedFeatureError
from ttscale.types import (
    Cancelled,
    Capabilities,
    Completion,
    Generation,
    GenerationRequest,
    ModelInfo,
    OnFinish,
    OnSample,
    ShouldStop,
)

TRANSFORMERS_MISSING = (
    "the transformers backend needs the optional extra: pip install -e '.[transformers]' "
    "(torch==2.13.0 CPU build, transformers, kvpress, gguf)"
)

DEFAULT_TRANSFORMERS_MODEL = "qwen2.5-coder-0.5b"

PRESSES: dict[str, str] = {
    "streaming_llm": "StreamingLLMPress",
    "snapkv": "SnapKVPress",
    "tova": "TOVAPress",
    "observed_attention": "ObservedAttentionPress",
    "knorm": "KnormPress",
    "expected_attention": "ExpectedAttentionPress",
}
"""Press names accepted by ``press=`` and the ``kvpress`` classes they build."""

PRESS_HELP: dict[str, str] = {
    "streaming_llm": "StreamingLLM: keep 4 sink tokens and the most recent ones (score-free)",
    "snapkv": "SnapKV: keep what the prompt's last window attends to (question-aware)",
    "tova": "TOVA: keep what the last prompt token attends to (attention heavy hitters)",
    "observed_attention": "H2O-style: keep the tokens with the most attention over the prompt (eager attention)",
    "knorm": "KNorm: keep the keys of smallest norm (score-free)",
    "expected_attention": "Expected attention: keep what future queries are expected to attend to (score-free)",
}

MIN_PRESS_TOKENS = 16
"""Prompts shorter than this are not compressed (presses need a sink, a window and something to evict)."""
MIN_DECODE_KV = 32
"""Smallest decoding cap (cells per sequence): below it a press has too little left to choose from."""
DEFAULT_DECODE_INTERVAL = 32
"""Decode steps between evictions under a decoding cap: each eviction scores every cell of every layer,
so evicting every step would cost more than the step."""

# llama.cpp ends generation at every token its vocabulary marks end-of-generation; for the Qwen2.5
# vocabularies those are these (llama-vocab.cpp's list), so both engines stop on the same tokens.
_EOG_NAMES = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|fim_pad|>",
              "<|repo_name|>", "<|file_sep|>", "<|eom_id|>", "<EOT>")


def press_label(press: str | None, compression: float) -> str:
    """How runs are keyed by the press: ``none`` or ``NAME@RATIO``.

    >>> press_label("snapkv", 0.5), press_label(None, 0.0)
    ('snapkv@0.5', 'none')
    """
    return "none" if press is None else f"{press}@{compression:g}"


def check_press(press: str | None, compression: float, decode_kv: int | None = None,
                decode_interval: int = DEFAULT_DECODE_INTERVAL) -> None:
    """Refuse an unknown press or a ratio outside [0, 0.9] (a ratio or a decoding cap without a press is
    an error too)."""
    if press is not None and press not in PRESSES:
        raise ConfigError(f"unknown KV press {press!r}; presses: {', '.join(PRESSES)}")
    if not 0.0 <= compression <= 0.9 or math.isnan(compression):
        raise ConfigError(f"KV compression must be in [0, 0.9], got {compression}")
    if press is None and compression > 0:
        raise ConfigError("a KV compression ratio needs a press (press=NAME)")
    if decode_kv is not None:
        if press is None:
            raise ConfigError("a decoding cap (decode_kv) needs a press to choose what to evict (press=NAME)")
        if decode_kv < MIN_DECODE_KV:
            raise ConfigError(f"decode_kv must be at least {MIN_DECODE_KV} cells, got {decode_kv}")
    if decode_interval < 1:
        raise ConfigError(f"decode_interval must be >= 1, got {decode_interval}")


def decode_label(decode_kv: int | None) -> str:
    """How runs are keyed by a decoding cap: empty without one.

    >>> decode_label(256), decode_label(None)
    ('+decode256', '')
    """
    return "" if decode_kv is None else f"+decode{decode_kv}"


def _with_press_layout(info: ModelInfo, press: str | None, compression: float, decode_kv: int | None = None,
                       decode_interval: int = DEFAULT_DECODE_INTERVAL) -> ModelInfo:
    """The model record with this engine's KV layout: each sample holds its own copy of the prompt's cells,
    of which a press keeps ``1 - compression`` (prompts of at least :data:`MIN_PRESS_TOKENS`), so the meter's
    worst case and ``--max-kv-bytes`` count what the cache really holds; with a decoding cap, each sequence
    is pressed back to ``decode_kv`` cells every ``decode_interval`` steps. The press is named in ``extra``."""
    decoding = {"kv_decode": str(decode_kv), "kv_decode_interval": str(decode_interval)} if decode_kv else {}
    extra = {k: v for k, v in info.extra.items() if k not in ("kv_decode", "kv_decode_interval")}
    return dataclasses.replace(
        info, kv_prompt_per_sample=True, kv_prompt_kept=1.0 - compression if press else 1.0,
        kv_press_min_tokens=MIN_PRESS_TOKENS if press else 0,
        kv_decode_cap=decode_kv or 0, kv_decode_interval=decode_interval if decode_kv else 0,
        extra={**extra, "kv_press": press or "none", "kv_compression": f"{compression:g}", **decoding})


def make_decoding_press(press: str, decode_kv: int, decode_interval: int) -> Any:
    """The ``kvpress`` decoding press that evicts each sequence down to ``decode_kv`` cells every
    ``decode_interval`` steps, scoring cells with ``press`` (its scorer sees the steps since the last eviction).

    Pruning while decoding is what H2O, Scissorhands and StreamingLLM were designed for: a long chain's own
    cells, not only its prompt's. SnapKV's window is half the buffered steps (it must be shorter than them)."""
    import kvpress

    cls = getattr(kvpress, PRESSES[press])
    scorer = cls(window_size=max(1, min(64, decode_interval // 2))) if press == "snapkv" else cls()
    return kvpress.DecodingPress(base_press=scorer, compression_interval=decode_interval, target_size=decode_kv,
                                 hidden_states_buffer_size=decode_interval)


def make_press(press: str, compression: float, prompt_tokens: int) -> Any:
    """The ``kvpress`` press for a prompt of ``prompt_tokens`` tokens (SnapKV's observation window is at
    most a quarter of the prompt, so the window fits in what is kept up to 75% compression)."""
    import kvpress

    cls = getattr(kvpress, PRESSES[press])
    if press == "snapkv":
        return cls(compression_ratio=compression, window_size=max(1, min(64, prompt_tokens // 4)))
    return cls(compression_ratio=compression)


def pick_token(logits: Any, temperature: float, top_p: float, top_k: int, min_p: float, generator: Any) -> int:
    """One token from a logits row (a 1-D torch tensor) by llama.cpp's sampler chain: greedy at temperature 0;
    else top-k, top-p and min-p on the model's distribution, then temperature, then a draw from ``generator``."""
    import torch

    if temperature <= 0:
        return int(torch.argmax(logits))
    vals, idx = logits, None
    if 0 < top_k < vals.shape[-1]:
        vals, idx = torch.topk(vals, top_k)
    if top_p < 1.0:
        vals, order = torch.sort(vals, descending=True)
        idx = order if idx is None else idx[order]
        probs = torch.softmax(vals, dim=-1)
        keep = max(1, int((torch.cumsum(probs, dim=-1) - probs < top_p).sum()))
        vals, idx = vals[:keep], idx[:keep]
    if min_p > 0.0:
        probs = torch.softmax(vals, dim=-1)
        mask = probs >= min_p * probs.max()
        vals = vals[mask]
        idx = mask.nonzero()[:, 0] if idx is None else idx[mask]
    probs = torch.softmax(vals / temperature, dim=-1)
    j = int(torch.multinomial(probs, 1, generator=generator))
    return j if idx is None else int(idx[j])


@dataclass
class _Sample:
    index: int
    generator: Any
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    max_tokens: int
    stop: tuple[str, ...]
    want_logprobs: bool
    tokens: list[int] = field(default_factory=list)
    n_tokens: int = 0
    logprob: float = 0.0
    token_logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish: str | None = None
    next_token: int = -1
    decode_s: float = 0.0


def _weights_key(path: Path, dtype: str) -> str:
    import transformers

    st = path.stat()
    raw = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{dtype}|{transformers.__version__}"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


class TransformersBackend:
    """Batched sampling on a ``transformers`` model loaded from a GGUF file, optionally with a KV press."""

    def __init__(
        self,
        model: str = DEFAULT_TRANSFORMERS_MODEL,
        *,
        press: str | None = None,
        compression: float = 0.0,
        decode_kv: int | None = None,
        decode_interval: int = DEFAULT_DECODE_INTERVAL,
        n_ctx: int = 8192,
        n_seq_max: int = 64,
        n_threads: int | None = None,
        dtype: str = "float32",
        cache_weights: bool = True,
    ) -> None:
        check_press(press, compression, decode_kv, decode_interval)
        if dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"dtype must be float32 or bfloat16, got {dtype!r}")
        try:
            import kvpress  # noqa: F401 - patches transformers' attention functions on import
            import torch
            import transformers  # noqa: F401
        except ImportError as e:
            raise UnsupportedFeatureError(TRANSFORMERS_MISSING) from e
        from ttscale.backends.gguf_info import read_model_info
        from ttscale.backends.models import resolve_model_path

        self._torch = torch
        self.model_ref = model
        self.press, self.compression = press, float(compression)
        self.decode_kv, self.decode_interval = decode_kv, decode_interval
        self.n_ctx, self.n_seq_max = n_ctx, n_seq_max
        self.dtype = dtype
        if n_threads:
            torch.set_num_threads(n_threads)
        self.path = resolve_model_path(model)
        self._lock = threading.Lock()
        # observed attention needs the attention weights, which only the eager implementation returns
        attn = "eager" if press == "observed_attention" else "sdpa"
        self._model, self._tok = self._load(self.path, getattr(torch, dtype), attn, cache_weights)
        self._model.eval()
        vocab = self._tok.get_vocab()
        self._eog = {int(vocab[t]) for t in _EOG_NAMES if t in vocab}
        for tid in (self._tok.eos_token_id, getattr(self._model.generation_config, "eos_token_id", None)):
            for t in tid if isinstance(tid, list) else [tid]:
                if t is not None:
                    self._eog.add(int(t))
        kv = "f32" if dtype == "float32" else "bf16"
        header = read_model_info(self.path, name=model if "/" not in model else Path(model).stem)
        self._info = dataclasses.replace(
            header, kv_type_k=kv, kv_type_v=kv, kv_bytes_per_elem=4 if dtype == "float32" else 2,
            has_chat_template=bool(getattr(self._tok, "chat_template", None)),
            extra={**header.extra, "engine": "transformers", "dtype": dtype})
        self._info = _with_press_layout(self._info, press, self.compression, decode_kv, decode_interval)
        self.last_cache_bytes = 0
        """Bytes of the real KV cache after the last call's prefill (and press), batch 1."""

    # ---- loading --------------------------------------------------------------------------

    @staticmethod
    def _load(path: Path, dtype: Any, attn: str, cache_weights: bool) -> tuple[Any, Any]:
        """The model and tokenizer of the GGUF at ``path``, dequantized by ``transformers``; with
        ``cache_weights`` the converted model is kept as safetensors in the cache (parsing and
        dequantizing a GGUF takes minutes, loading the converted copy seconds)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from ttscale.paths import cache_dir

        hf_logging.disable_progress_bar()
        name = str(dtype).removeprefix("torch.")
        saved = cache_dir("transformers") / _weights_key(path, name) if cache_weights else None
        try:
            if saved is not None and (saved / "config.json").exists():
                return (AutoModelForCausalLM.from_pretrained(saved, dtype=dtype, attn_implementation=attn),
                        AutoTokenizer.from_pretrained(saved))
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype,
                                                         attn_implementation=attn)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise BackendError(f"transformers could not load {path}: {e}") from e
        if saved is not None:
            tmp = saved.with_name(saved.name + f".tmp{os.getpid()}")
            try:
                model.save_pretrained(tmp)
                tok.save_pretrained(tmp)
                os.replace(tmp, saved)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)  # another process got there first, or no room
        return model, tok

    # ---- the protocol ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        tail = "" if self.press is None else f"+{press_label(self.press, self.compression)}{decode_label(self.decode_kv)}"
        return f"transformers:{self._info.name}{tail}"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(parallel_sequences=self.n_seq_max, shares_prompt_prefix=False, cancellation=True,
                            request_cancellation=True, tokenizer=True, renders_prompts=True,
                            local_prompt_counts=True, context_length=self.n_ctx)

    def model_info(self) -> ModelInfo:
        return self._info

    def render(self, request: GenerationRequest) -> str:
        """The exact text fed to the model (the model's own chat template for chat requests)."""
        if request.prompt is not None:
            return request.prompt
        if not getattr(self._tok, "chat_template", None):
            raise UnsupportedFeatureError(f"model {self._info.name} has no chat template: use the completion prompt style")
        msgs = [{"role": m.role, "content": m.content} for m in request.messages or ()]
        return str(self._tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self._tok.encode(text, add_special_tokens=True)]

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self.tokenize(self.render(request)))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(self._tok.decode(list(tokens), skip_special_tokens=True))

    def close(self) -> None:
        self._model = None

    def with_press(self, press: str | None, compression: float = 0.0, decode_kv: int | None = None,
                   decode_interval: int = DEFAULT_DECODE_INTERVAL) -> TransformersBackend:
        """The same loaded model with another press (no reload): what benchmarks and tests compare."""
        import copy

        check_press(press, compression, decode_kv, decode_interval)
        other = copy.copy(self)
        other.press, other.compression = press, float(compression)  # the lock stays shared: so does the model
        other.decode_kv, other.decode_interval = decode_kv, decode_interval
        other._info = _with_press_layout(self._info, press, float(compression), decode_kv, decode_interval)
        return other

    def continuation_logprobs(self, prompt: Sequence[int], continuation: Sequence[int]) -> list[float]:
        """Log-probabilities of ``continuation``'s tokens after ``prompt`` (teacher forcing, one forward
        pass, no press): how the differential test scores another engine's continuation."""
        torch = self._torch
        ids = list(prompt) + list(continuation)
        with self._lock, torch.inference_mode():
            logits = self._model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].double()
        rows = logits[len(prompt) - 1: len(ids) - 1]
        lps = torch.log_softmax(rows, dim=-1)[torch.arange(len(continuation)), torch.tensor(list(continuation))]
        return [float(x) for x in lps]

    # ---- generation -----------------------------------------------------------------------

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        should_stop: ShouldStop | None = None,
        on_finish: OnFinish | None = None,
        on_sample: OnSample | None = None,
        cancelled: Cancelled | None = None,
    ) -> list[Generation]:
        """Generate every request in turn: one prefill (and press) per request, its samples decoded
        together (``n_seq_max`` at a time). Hooks as in the llama.cpp backend: ``should_stop`` and
        ``cancelled`` are polled between decode steps, ``on_finish``/``on_sample`` called as samples finish."""
        if not requests:
            return []
        if self._model is None:
            raise BackendError("the transformers backend is closed")
        with self._lock:
            # observed attention reads the attention weights, which only eager attention returns (a model
            # shared through with_press is switched back and forth)
            attn = "eager" if self.press == "observed_attention" else "sdpa"
            if self._model.config._attn_implementation != attn:
                self._model.set_attn_implementation(attn)
            prompts = [self.tokenize(self.render(r)) for r in requests]
            for r, ids in zip(requests, prompts, strict=True):
                if not ids:
                    raise ConfigError("empty prompt")
                if len(ids) + r.max_tokens + 1 > self.n_ctx:
                    raise ConfigError(f"prompt of {len(ids)} tokens plus max_tokens={r.max_tokens} exceeds the "
                                      f"context of {self.n_ctx} tokens")
            gens = []
            for ri, (r, ids) in enumerate(zip(requests, prompts, strict=True)):
                gens.append(self._generate_one(ri, r, ids, should_stop, on_finish, on_sample, cancelled))
            return gens

    def _press_context(self, n_prompt: int) -> contextlib.AbstractContextManager[Any]:
        if self.press is None or self.compression <= 0 or n_prompt < MIN_PRESS_TOKENS:
            return contextlib.nullcontext()
        return make_press(self.press, self.compression, n_prompt)(self._model)  # type: ignore[no-any-return]

    def _generate_one(self, ri: int, r: GenerationRequest, ids: list[int], should_stop: ShouldStop | None,
                      on_finish: OnFinish | None, on_sample: OnSample | None,
                      cancelled: Cancelled | None) -> Generation:
        torch = self._torch
        from transformers import DynamicCache

        t0 = time.perf_counter()
        cache = DynamicCache(config=self._model.config)
        with torch.inference_mode(), self._press_context(len(ids)):
            out = self._model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True,
                              logits_to_keep=1)
        first = out.logits[0, -1].float()
        first_lse = float(torch.logsumexp(first.double(), dim=-1))
        base: list[tuple[Any, Any]] = [(layer.keys, layer.values) for layer in cache.layers]
        self.last_cache_bytes = int(sum(int(k.nbytes) + int(v.nbytes) for k, v in base))
        kept_cells = self._cells(base)
        prefill_s = time.perf_counter() - t0

        gen = Generation(request=r, completions=[], prompt_tokens=len(ids), prefilled_tokens=len(ids),
                         prefill_s=prefill_s)
        base_seed = r.seed if r.seed is not None else random.randrange(2**31)
        peak = kept_cells
        t_dec = time.perf_counter()
        stopped = False
        for start in range(0, r.n, self.n_seq_max):
            samples = [self._new_sample(r, k, base_seed) for k in range(start, min(r.n, start + self.n_seq_max))]
            if stopped:
                for s in samples:
                    s.finish = "cancelled"
            else:
                stopped, wave_peak = self._run_wave(ri, samples, first, first_lse, base, len(ids), t_dec,
                                                    should_stop, on_finish, on_sample, cancelled)
                peak = max(peak, wave_peak)
            for s in samples:
                gen.completions.append(Completion(
                    text=s.text, n_tokens=s.n_tokens, finish_reason=s.finish or "cancelled",  # type: ignore[arg-type]
                    prompt_tokens=len(ids), prefilled_tokens=len(ids) if s.index == 0 else 0,
                    logprob=s.logprob if s.want_logprobs else None,
                    token_logprobs=s.token_logprobs if s.want_logprobs else None,
                    index=s.index, decode_s=s.decode_s))
        order = sorted(gen.completions, key=lambda c: (c.decode_s, c.index))
        for rank, c in enumerate(order):
            c.finish_order = rank
        gen.wall_s = time.perf_counter() - t0
        gen.peak_kv_tokens = peak
        return gen

    def _new_sample(self, r: GenerationRequest, k: int, base_seed: int) -> _Sample:
        g = self._torch.Generator()
        g.manual_seed((base_seed + k) & 0xFFFFFFFF)
        return _Sample(k, g, r.temperature, r.top_p, r.top_k, r.min_p, r.max_tokens, r.stop, r.logprobs)

    def _cells(self, kv: Sequence[tuple[Any, Any]]) -> int:
        """KV cells of a cache: sequences x positions, averaged over layers (a press may prune layers unevenly)."""
        if not kv:
            return 0
        return round(sum(int(k.shape[0]) * int(k.shape[-2]) for k, _ in kv) / len(kv))

    def _run_wave(self, ri: int, samples: list[_Sample], first: Any, first_lse: float,
                  base: list[tuple[Any, Any]], n_prompt: int, t_dec: float, should_stop: ShouldStop | None,
                  on_finish: OnFinish | None, on_sample: OnSample | None,
                  cancelled: Cancelled | None) -> tuple[bool, int]:
        """Decode one wave of samples from the shared prefill; returns (stopped by should_stop, peak cells)."""
        torch = self._torch
        from transformers import DynamicCache

        def finished(s: _Sample) -> None:
            s.decode_s = time.perf_counter() - t_dec
            if on_finish is not None:
                on_finish(ri, s.index)
            if on_sample is not None:
                on_sample(ri, s.index, s.text)

        for s in samples:
            self._take(s, first, first_lse)
            if s.finish is not None:
                finished(s)
        live = [s for s in samples if s.finish is None]
        peak = 0
        if not live:
            return False, peak
        b = len(live)
        cache = DynamicCache(ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in base])
        pos = n_prompt
        press = None
        if self.decode_kv is not None and self.press is not None:
            press = make_decoding_press(self.press, self.decode_kv, self.decode_interval)
        with torch.inference_mode(), press(self._model) if press is not None else contextlib.nullcontext():
            while live:
                if should_stop is not None and should_stop():
                    for s in live:
                        s.finish, s.decode_s = "cancelled", time.perf_counter() - t_dec
                    return True, peak
                if cancelled is not None and cancelled(ri):
                    for s in live:
                        s.finish, s.decode_s = "cancelled", time.perf_counter() - t_dec
                    return False, peak
                inp = torch.tensor([[s.next_token] for s in live])
                out = self._model(input_ids=inp, past_key_values=cache, use_cache=True,
                                  position_ids=torch.full((len(live), 1), pos, dtype=torch.long))
                pos += 1
                peak = max(peak, self._cells([(layer.keys, layer.values) for layer in cache.layers]))
                logits = out.logits[:, -1].float()
                lse = torch.logsumexp(logits.double(), dim=-1).tolist()
                for i, s in enumerate(live):
                    self._take(s, logits[i], lse[i])
                    if s.finish is not None:
                        finished(s)
                keep = [i for i, s in enumerate(live) if s.finish is None]
                if keep and len(keep) < len(live):
                    rows = torch.tensor(keep)
                    cache.batch_select_indices(rows)
                    if press is not None:  # the steps it buffered for its next eviction, of the same rows
                        for layer, steps in press.hidden_states_buffer.items():
                            press.hidden_states_buffer[layer] = [h.index_select(0, rows) for h in steps]
                live = [live[i] for i in keep]
        return False, peak

    # ---- one token ------------------------------------------------------------------------

    def _take(self, s: _Sample, logits: Any, lse: float) -> None:
        """Sample the next token of ``s`` from its logits row and update it (llama.cpp's order of checks:
        end-of-generation, stop strings, then the token cap)."""
        tok = pick_token(logits, s.temperature, s.top_p, s.top_k, s.min_p, s.generator)
        s.n_tokens += 1
        if s.want_logprobs:
            lp = float(logits[tok]) - lse
            s.logprob += lp
            s.token_logprobs.append(lp)
        if tok in self._eog:
            s.finish = "stop"
            return
        s.tokens.append(tok)
        s.text = self.detokenize(s.tokens)
        if (stopped := cut_at_stop(s.text, s.stop)) is not None:
            s.text, s.finish = stopped, "stop"
            return
        if s.n_tokens >= s.max_tokens:
            s.finish = "length"
            return
        s.next_token = tok


class TransformersOptions(BackendOptions):
    """Options of the transformers backend (``make_backend("transformers", model, **options)``)."""

    press: str | None = Field(None, description=f"KV press applied at prefill: {', '.join(PRESSES)}")
    compression: float = Field(0.0, ge=0.0, le=0.9, description="fraction of the prompt's KV cells the press evicts")
    decode_kv: int | None = Field(None, ge=MIN_DECODE_KV, description="while decoding, evict each sample's KV "
                                  "down to this many cells with the press (long reasoning chains); default: never")
    decode_interval: int = Field(DEFAULT_DECODE_INTERVAL, ge=1, description="decode steps between those evictions")
    n_ctx: int = Field(8192, ge=64, description="tokens one sequence may hold (prompt + generation)")
    n_seq_max: int = Field(64, ge=1, le=1024, description="samples decoded together")
    n_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")
    dtype: str = Field("float32", description="weights and KV cache: float32 or bfloat16")
    cache_weights: bool = Field(True, description="keep the dequantized model as safetensors in the cache")


def _build(model: str | None, options: dict[str, Any]) -> TransformersBackend:
    check_press(options.get("press"), float(options.get("compression", 0.0)), options.get("decode_kv"),
                int(options.get("decode_interval", DEFAULT_DECODE_INTERVAL)))
    return TransformersBackend(model or DEFAULT_TRANSFORMERS_MODEL, **options)


def _endpoints(args: EngineArgs) -> list[Endpoint]:
    if args.base_urls:
        raise ConfigError("--base-url is for HTTP backends such as openai: the transformers backend runs here")
    if args.kv_options():
        raise ConfigError("--kv-type / --kv-type-v are llama.cpp's cache types; the transformers backend "
                          "compresses its cache with a press (--kv-press NAME --kv-compression RATIO)")
    opts: dict[str, Any] = {"n_threads": args.threads} if args.threads else {}
    opts |= args.press_options()
    if "press" in opts and "press" in args.options:
        raise ConfigError("give the press once: --kv-press or --backend-option press=..., not both")
    return [(args.model, opts | args.engine_options | args.options)]


SPEC = BackendKind("transformers", _build, TransformersOptions,
                   "Hugging Face transformers on this CPU (extra 'transformers'): GGUF models dequantized, "
                   "KV presses from kvpress", from_args=_endpoints, in_process=True)
