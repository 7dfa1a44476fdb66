"""Engine-level core types: generation requests and hooks, completions, model shapes, capabilities, usage."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from ttscale.errors import ConfigError

KV_CACHE_TYPES: dict[str, tuple[int, int, int]] = {
    # name: (ggml type id, bytes per block, values per block), as llama.cpp's ggml lays them out
    "f32": (0, 4, 1),
    "f16": (1, 2, 1),
    "bf16": (30, 2, 1),
    "q8_0": (8, 34, 32),
    "q4_0": (2, 18, 32),
    "q4_1": (3, 20, 32),
    "iq4_nl": (20, 18, 32),
    "q5_0": (6, 22, 32),
    "q5_1": (7, 24, 32),
}
"""KV-cache element types llama.cpp accepts (``--cache-type-k/-v``); quantized V needs flash attention."""


def kv_element_bytes(kind: str) -> float:
    """Bytes one K or V element takes in a cache of type ``kind`` (block scales included)."""
    if kind not in KV_CACHE_TYPES:
        raise ConfigError(f"unknown KV cache type {kind!r}; llama.cpp takes: {', '.join(KV_CACHE_TYPES)}")
    _, block_bytes, block = KV_CACHE_TYPES[kind]
    return block_bytes / block


def split_precision(label: str) -> tuple[str, str]:
    """A precision label's K and V types: ``q8_0`` is both, ``q8_0/q4_0`` keys at q8_0 and values at q4_0.

    >>> split_precision("q8_0/q4_0"), split_precision("f16")
    (('q8_0', 'q4_0'), ('f16', 'f16'))
    """
    k, sep, v = label.partition("/")
    kinds = (k, v if sep else k)
    for kind in kinds:
        kv_element_bytes(kind)
    return kinds


def precision_label(kv_type_k: str, kv_type_v: str) -> str:
    """The label of a cache with these K and V types (one name when they agree)."""
    return kv_type_k if kv_type_k == kv_type_v else f"{kv_type_k}/{kv_type_v}"


def precision_bytes(label: str) -> float:
    """Mean bytes per K or V element of a precision label (``q8_0/q4_0``: keys and values averaged)."""
    k, v = split_precision(label)
    return (kv_element_bytes(k) + kv_element_bytes(v)) / 2


DEFAULT_DELIMITER = "\n\n"

# The generation hooks every backend's ``generate`` takes (keyword-only). ``on_finish`` and
# ``on_sample`` are called once per finished sample by every backend; ``should_stop`` and
# ``cancelled`` stop samples early only where the backend declares ``cancellation`` /
# ``request_cancellation`` in its :class:`Capabilities` (elsewhere samples run to the end).
ShouldStop = Callable[[], bool]
"""Polled between decode steps: true stops every unfinished sample of the call."""
OnFinish = Callable[[int, int], None]
"""``on_finish(request_index, sample_index)`` as a sample finishes."""
OnSample = Callable[[int, int, str], None]
"""``on_sample(request_index, sample_index, text)`` as a sample finishes, with its text."""
Cancelled = Callable[[int], bool]
"""``cancelled(request_index)``: whether that request's unfinished samples should stop now."""
"""Where one reasoning step ends and the next begins (step-level search, process reward models)."""

FinishReason = Literal["stop", "length", "error", "cancelled"]


Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt and how to sample ``n`` continuations of it.

    Exactly one of ``prompt`` (raw completion text) and ``messages`` (chat,
    rendered with the model's own chat template) is set.
    """

    prompt: str | None = None
    messages: tuple[ChatMessage, ...] | None = None
    n: int = 1
    """Number of independent samples; they share the prompt's prefill."""
    temperature: float = 0.8
    """0 means greedy decoding."""
    top_p: float = 1.0
    top_k: int = 0
    """Sample among the k most likely tokens only; 0 (default): the whole vocabulary, the model's
    own distribution (llama-server's default is 40: ttscale asks for 0 explicitly)."""
    min_p: float = 0.0
    """Drop tokens below ``min_p`` times the top token's probability; 0 (default): off."""
    """Nucleus sampling mass in (0, 1]."""
    seed: int | None = None
    """Sample ``i`` of the request uses ``seed + i``; ``None`` draws a fresh seed."""
    stop: tuple[str, ...] = ()
    """Generation stops before the first occurrence of any of these strings."""
    max_tokens: int = 256
    """Upper bound on generated tokens per sample."""
    logprobs: bool = True
    """Return per-token log-probabilities (under the unmodified model distribution)."""

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ConfigError("a request needs exactly one of 'prompt' and 'messages'")
        if self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}")
        if not (0.0 <= self.temperature <= 5.0) or math.isnan(self.temperature):
            raise ConfigError(f"temperature must be in [0, 5], got {self.temperature}")
        if not (0.0 < self.top_p <= 1.0):
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0: no truncation), got {self.top_k}")
        if not 0.0 <= self.min_p < 1.0:
            raise ConfigError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def with_(self, **changes: object) -> GenerationRequest:
        """A copy with some fields changed and checked again, as ``dataclasses.replace`` makes it.

        >>> GenerationRequest(prompt="x").with_(n=4, max_tokens=8).n
        4
        """
        # a copy of the instance dict, not replace()'s field-by-field __init__: strategies call this
        # once per wave, and on a fast backend replace() cost as much as the whole generation
        unknown = changes.keys() - _REQUEST_FIELDS
        if unknown:
            raise TypeError(f"GenerationRequest has no field(s) {', '.join(sorted(unknown))}")
        new = object.__new__(GenerationRequest)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        new.__post_init__()
        return new


_REQUEST_FIELDS = frozenset(f.name for f in fields(GenerationRequest))


@dataclass
class Completion:
    """One sample. Token counts come from the engine."""

    text: str
    n_tokens: int
    """Generated tokens, including a final end-of-generation token if one was sampled."""
    finish_reason: FinishReason
    prompt_tokens: int
    """Length of the prompt in tokens: the context this sample was generated after."""
    prefilled_tokens: int = 0
    """Prompt tokens actually evaluated on behalf of this sample (shared prefills count once,
    on the first sample that needed them)."""
    logprob: float | None = None
    """Sum of the per-token log-probabilities."""
    token_logprobs: list[float] | None = None
    index: int = 0
    """Position of this sample within its request."""
    finish_order: int = 0
    """Rank in which this sample finished among its request's samples (0 = first)."""
    decode_s: float = 0.0
    """Wall time from the first decode step until this sample finished."""

    @property
    def mean_logprob(self) -> float | None:
        if self.logprob is None or self.n_tokens == 0:
            return None
        return self.logprob / self.n_tokens


@dataclass
class Generation:
    """The answer to one :class:`GenerationRequest`."""

    request: GenerationRequest
    completions: list[Completion]
    prompt_tokens: int
    prefilled_tokens: int
    """Tokens evaluated as input for this request: its prompt (0 when fully served from cache), and any
    prompt-lookup draft tokens that were computed and not kept."""
    prefill_s: float = 0.0
    wall_s: float = 0.0
    peak_kv_tokens: int = 0
    """Peak number of KV-cache cells in use while this request was decoded."""
    drafted_tokens: int = 0
    """Prompt-lookup draft tokens evaluated (kept or not); 0 without drafting."""

    @property
    def generated_tokens(self) -> int:
        return sum(c.n_tokens for c in self.completions)


@dataclass(frozen=True)
class ModelInfo:
    """Shapes of a model, read from its own metadata (GGUF header, HF config)."""

    name: str
    n_params: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    n_ctx_train: int
    kv_bytes_per_elem: int = 2
    """Bytes per K/V element of an f16 cache (kept for older run records; see ``kv_type_k``/``kv_type_v``)."""
    architecture: str = ""
    has_chat_template: bool = False
    path: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    kv_type_k: str = "f16"
    """Element type of the K cache (llama.cpp ``--cache-type-k``): a key of :data:`KV_CACHE_TYPES`."""
    kv_type_v: str = "f16"
    n_vocab: int = 0
    """Vocabulary size (rows of the token embedding; 0: not known, as in older run records)."""
    n_embedding_params: int = 0
    """Parameters of the token embedding and, when stored apart, the output head (0: not known). The
    roofline's matmuls leave out embedding lookups and run the output head for a prefill's last token only."""
    kv_prompt_per_sample: bool = False
    """Each sample holds its own copy of the prompt's KV cells (an engine without a shared prefix in its
    cache, such as the transformers backend), instead of one copy shared by the samples of a call."""
    kv_prompt_kept: float = 1.0
    """Fraction of a prompt's KV cells the engine keeps after its KV press (1: nothing is evicted)."""
    kv_press_min_tokens: int = 0
    """Prompts shorter than this are not pressed (kept whole)."""
    kv_decode_cap: int = 0
    """While decoding, a press evicts each sequence's cells down to this many every
    :attr:`kv_decode_interval` steps (0: no eviction during decoding)."""
    kv_decode_interval: int = 0

    def wave_kv_cells(self, prompt_tokens: int, n: int, gen_tokens: int) -> int:
        """KV cells ``n`` samples of up to ``gen_tokens`` after a prompt hold at their worst, in this engine's
        layout: the prompt once or once per sample, and after its press (which evicts prompt cells only).

        >>> m = ModelInfo("m", 1, 1, 1, 1, 1, 1, 8)
        >>> m.wave_kv_cells(100, 4, 10)  # one shared prompt
        140
        >>> from dataclasses import replace
        >>> replace(m, kv_prompt_per_sample=True, kv_prompt_kept=0.25).wave_kv_cells(100, 4, 10)
        140
        >>> replace(m, kv_prompt_per_sample=True, kv_decode_cap=64, kv_decode_interval=16).wave_kv_cells(100, 4, 500)
        464

        With a decoding cap, a sequence grows by up to an interval past the larger of its kept prompt and
        the cap before each eviction (and never past its prompt and all its tokens).
        """
        if n <= 0:
            return 0
        kept = prompt_tokens
        if self.kv_prompt_kept < 1.0 and prompt_tokens >= self.kv_press_min_tokens:
            kept = math.ceil(prompt_tokens * self.kv_prompt_kept)
        if not self.kv_prompt_per_sample:
            return kept + n * gen_tokens
        per_sample = kept + gen_tokens
        if self.kv_decode_cap > 0:
            per_sample = min(per_sample, max(kept, self.kv_decode_cap) + self.kv_decode_interval)
        return n * per_sample

    @property
    def d_attn(self) -> int:
        return self.n_heads * self.head_dim

    def flops_per_token(self, n_ctx: int) -> float:
        """Forward FLOPs for one token attending over ``n_ctx`` earlier tokens (Kaplan et al. 2020)."""
        return 2.0 * self.n_params + 2.0 * self.n_layers * n_ctx * self.d_attn

    def flops_for_positions(self, start: int, stop: int) -> float:
        """Forward FLOPs for the tokens at positions ``start..stop-1``, each attending to its prefix.

        >>> ModelInfo("m", 10, 1, 1, 1, 1, 1, 8).flops_for_positions(0, 2)  # 2*(2*10) + 2*1*(0+1)*1
        42.0
        """
        n = max(0, stop - start)
        if n == 0:
            return 0.0
        positions_sum = (start + stop - 1) * n / 2.0
        return 2.0 * self.n_params * n + 2.0 * self.n_layers * self.d_attn * positions_sum

    def kv_bytes(self, tokens: int) -> int:
        """KV-cache bytes for ``tokens`` cells: layers * kv_heads * head_dim elements for K and for V,
        each at its cache type's real size, block scales included (q8_0: 34 bytes per 32 values).

        >>> ModelInfo("m", 1, 2, 4, 2, 64, 256, 8).kv_bytes(10)  # 2 * 2*2*64 * 2 bytes * 10
        10240
        >>> ModelInfo("m", 1, 2, 4, 2, 64, 256, 8, kv_type_k="q8_0", kv_type_v="q8_0").kv_bytes(10)
        5440
        """
        per_head = self.n_layers * self.n_kv_heads * self.head_dim
        return int(round(per_head * tokens * (kv_element_bytes(self.kv_type_k) + kv_element_bytes(self.kv_type_v))))


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared once by the backend and read by strategies, the server and
    the planner (instead of probing methods and signatures).

    >>> Capabilities(parallel_sequences=8).wave(16)
    8
    """

    parallel_sequences: int = 1
    """Samples the engine advances together (llama.cpp: its sequences; an HTTP server: the client's
    concurrency, i.e. the slots it keeps busy). Strategies that draw samples incrementally size their
    waves by it."""
    shares_prompt_prefix: bool = False
    """One call's common prompt prefix is evaluated once (llama.cpp's sequence copy)."""
    prefill_per_sample: bool = False
    """Every sample pays its own prompt prefill (a server that ignores ``n``): budgets plan for it."""
    cancellation: bool = False
    """``generate``'s ``should_stop()`` is polled between decode steps: samples can be stopped early
    (every backend takes the hooks; without this they run to the end), and ``on_finish`` /
    ``on_sample`` are called as each sample finishes, not after the whole call."""
    request_cancellation: bool = False
    """``generate``'s ``cancelled(request_index)`` is honoured: one request of a batch can be stopped alone."""
    next_token_probes: bool = False
    """``next_token_logprobs`` is available (LLM-judge verifiers)."""
    tokenizer: bool = False
    """``tokenize(text)`` returns the engine's token ids."""
    renders_prompts: bool = False
    """``render(request)`` returns the exact text the model reads (chat template applied)."""
    local_prompt_counts: bool = False
    """``count_prompt_tokens`` is computed here, with no round trip to a server."""
    context_length: int | None = None
    """Tokens one sequence may hold (prompt + generation), when known."""
    streaming: bool = False
    """Samples can be streamed (how the HTTP backend stops them: it closes their connections)."""
    hooked_prefill_per_sample: bool = False
    """A call with stop hooks sends every sample as its own request, so each pays its own prompt
    prefill (the HTTP backend): budgets plan for that when they pass hooks."""

    def wave(self, want: int) -> int:
        """How many of ``want`` samples to start at once: as many as run in parallel."""
        return max(1, min(want, self.parallel_sequences))


def capabilities_of(backend: object) -> Capabilities:
    """The backend's declared capabilities (a plain default for third-party backends that declare none)."""
    caps = getattr(backend, "capabilities", None)
    return caps if isinstance(caps, Capabilities) else Capabilities()


@dataclass
class Usage:
    """Additive record of spent compute (``peak_kv_bytes`` combines by max)."""

    prompt_tokens: int = 0
    """Prompt lengths, summed over requests (logical size, not work done)."""
    prefilled_tokens: int = 0
    generated_tokens: int = 0
    flops: float = 0.0
    wall_s: float = 0.0
    peak_kv_bytes: int = 0
    requests: int = 0
    samples: int = 0

    @property
    def total_tokens(self) -> int:
        """Tokens the engine processed: prefilled plus generated."""
        return self.prefilled_tokens + self.generated_tokens

    def __add__(self, other: Usage) -> Usage:
        # spelled out: the meter adds usages on every charge, and a loop over fields() costs 8x this
        return Usage(self.prompt_tokens + other.prompt_tokens, self.prefilled_tokens + other.prefilled_tokens,
                     self.generated_tokens + other.generated_tokens, self.flops + other.flops,
                     self.wall_s + other.wall_s, max(self.peak_kv_bytes, other.peak_kv_bytes),
                     self.requests + other.requests, self.samples + other.samples)

    def to_dict(self) -> dict[str, float | int]:
        d: dict[str, float | int] = asdict(self)
        d["total_tokens"] = self.total_tokens
        return d

    @classmethod
    def from_dict(cls, d: dict[str, float | int]) -> Usage:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})  # type: ignore[arg-type]

    @classmethod
    def total(cls, usages: Iterable[Usage]) -> Usage:
        out = cls()
        for u in usages:
            out = out + u
        return out
