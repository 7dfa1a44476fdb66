"""A deterministic, scripted backend for unit tests of everything above the backend.

It does not run a model: each sample's final answer is drawn from a scripted
distribution, and its text reads ``"<filler> The answer is <answer>."``. Token
counts are whitespace words, which is this fake engine's own tokenizer, so the
accounting rules (prefill once per request, generated tokens per sample) are the
same as a real backend's.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ttscale.backends.base import report_finished
from ttscale.backends.spec import BackendKind, Endpoint, EngineArgs, plain_endpoints
from ttscale.errors import ConfigError
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

AnswerScript = Mapping[str, float] | Callable[[str], Mapping[str, float]]

FAKE_MODEL_INFO = ModelInfo(
    name="fake",
    n_params=1_000_000,
    n_layers=4,
    n_heads=4,
    n_kv_heads=2,
    head_dim=16,
    d_model=64,
    n_ctx_train=4096,
    architecture="fake",
    has_chat_template=True,
)


def _render(request: GenerationRequest) -> str:
    if request.prompt is not None:
        return request.prompt
    assert request.messages is not None
    return "\n".join(f"<{m.role}> {m.content}" for m in request.messages) + "\n<assistant>"


@dataclass
class FakeBackend:
    """Scripted backend.

    ``answers`` maps an answer string to its probability (normalized here), or is
    a function of the rendered prompt returning such a mapping. ``filler_tokens``
    sets how many filler words precede the answer sentence; a callable gets the
    sample's RNG and returns a count, so lengths can vary.
    """

    answers: AnswerScript = field(default_factory=lambda: {"42": 1.0})
    filler_tokens: int | Callable[[random.Random], int] = 10
    info: ModelInfo = FAKE_MODEL_INFO
    delay_s: float = 0.0
    history: list[GenerationRequest] = field(default_factory=list)
    parallel: int = 64
    """Parallel sequences it declares (its capabilities)."""
    _caps: tuple[int, Capabilities] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return "fake"

    @property
    def capabilities(self) -> Capabilities:
        # Whitespace tokens counted locally; one request of a batch can be cancelled; no step hooks.
        # Built once per value of `parallel`: strategies and the server read it several times per request.
        if self._caps is None or self._caps[0] != self.parallel:
            self._caps = (self.parallel, Capabilities(parallel_sequences=self.parallel, request_cancellation=True,
                                                      local_prompt_counts=True))
        return self._caps[1]

    def model_info(self) -> ModelInfo:
        return self.info

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(_render(request).split())

    def close(self) -> None:
        pass

    def _distribution(self, prompt: str) -> list[tuple[str, float]]:
        script = self.answers(prompt) if callable(self.answers) else self.answers
        total = sum(script.values())
        return [(a, p / total) for a, p in sorted(script.items())]

    def _sample(self, prompt: str, request: GenerationRequest, i: int, seed: int) -> Completion:
        digest = hashlib.sha256(f"{seed}:{i}:{prompt}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        dist = self._distribution(prompt)
        if request.temperature == 0:
            answer = max(dist, key=lambda ap: (ap[1], ap[0]))[0]
            p_answer = dict(dist)[answer]
        else:
            answer = rng.choices([a for a, _ in dist], weights=[p for _, p in dist])[0]
            p_answer = dict(dist)[answer]
        n_filler = self.filler_tokens(rng) if callable(self.filler_tokens) else self.filler_tokens
        # one randbytes call, not a randrange per word: the proxy bench runs on this backend
        words = [f"w{b % 100}" for b in rng.randbytes(n_filler)] + ["The", "answer", "is", f"{answer}."]
        finish: str = "stop"
        if len(words) > request.max_tokens:
            words = words[: request.max_tokens]
            finish = "length"
        text = " ".join(words)
        for s in request.stop:
            cut = text.find(s)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        # Filler words are certain; the answer token carries the answer's probability.
        token_logprobs = [-0.1] * len(words)
        if finish == "stop" and len(words) == n_filler + 4:
            token_logprobs[-1] = math.log(max(p_answer, 1e-12))
        return Completion(
            text=text,
            n_tokens=len(words),
            finish_reason=finish,  # type: ignore[arg-type]
            prompt_tokens=len(prompt.split()),
            logprob=sum(token_logprobs) if request.logprobs else None,
            token_logprobs=token_logprobs if request.logprobs else None,
            index=i,
        )

    def generate(self, requests: Sequence[GenerationRequest], *, should_stop: ShouldStop | None = None,
                 on_finish: OnFinish | None = None, on_sample: OnSample | None = None,
                 cancelled: Cancelled | None = None) -> list[Generation]:
        """``cancelled(i)``, checked as request ``i`` starts (after ``delay_s``), ends its samples at once;
        ``should_stop`` is not polled (whole generations, no decode steps); the per-sample hooks are
        called after the fact."""
        out: list[Generation] = []
        for ri, request in enumerate(requests):
            self.history.append(request)
            start = time.perf_counter()
            if self.delay_s:
                time.sleep(self.delay_s)
            prompt = _render(request)
            seed = request.seed if request.seed is not None else random.randrange(2**31)
            comps = [self._sample(prompt, request, i, seed) for i in range(request.n)]
            if cancelled is not None and cancelled(ri):
                comps = [Completion(text="", n_tokens=0, finish_reason="cancelled", prompt_tokens=c.prompt_tokens,
                                    index=c.index) for c in comps]
            order = sorted(range(len(comps)), key=lambda j: (comps[j].n_tokens, j))
            for rank, j in enumerate(order):
                comps[j].finish_order = rank
            n_prompt = len(prompt.split())
            comps[0].prefilled_tokens = n_prompt
            out.append(
                Generation(
                    request=request,
                    completions=comps,
                    prompt_tokens=n_prompt,
                    prefilled_tokens=n_prompt,
                    wall_s=time.perf_counter() - start,
                    peak_kv_tokens=n_prompt + sum(c.n_tokens for c in comps),
                )
            )
        report_finished(out, on_finish, on_sample)
        return out


def _build(_model: str | None, options: dict[str, Any]) -> FakeBackend:
    known = {f.name for f in fields(FakeBackend)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"backend 'fake': unknown option(s) {', '.join(unknown)}; it takes: {', '.join(sorted(known))}")
    return FakeBackend(**options)


def _endpoints(args: EngineArgs) -> list[Endpoint]:
    """The scripted backend takes no model; asked for KV types, it reports its shapes at those types."""
    kv = args.kv_options()
    if not kv:
        return [(None, plain_endpoints("fake", args)[0][1])]
    from ttscale.backends.kv_sizing import with_kv_types

    return [(None, {"info": with_kv_types(FAKE_MODEL_INFO, args.kv_type, args.kv_type_v)} | args.options)]


SPEC = BackendKind("fake", _build, None, "scripted answers with known probabilities, no model (tests, demos of the CLI)",
                   from_args=_endpoints)
