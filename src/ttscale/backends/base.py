"""The backend protocol and the data that crosses it.

A backend turns :class:`GenerationRequest` objects into :class:`Generation`
objects. Every generation carries the usage the engine really incurred (tokens
prefilled and generated as counted by the engine's tokenizer, timings), so that
costs are measured, never estimated from string lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ttscale.errors import UnsupportedFeatureError
from ttscale.types import (
    Cancelled,
    Capabilities,
    Generation,
    GenerationRequest,
    ModelInfo,
    OnFinish,
    OnSample,
    ShouldStop,
    capabilities_of,
)


@runtime_checkable
class Backend(Protocol):
    """Something that generates samples and says exactly what it spent."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def model_info(self) -> ModelInfo: ...

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Tokens the request's prompt occupies once rendered (chat template applied)."""
        ...

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        should_stop: ShouldStop | None = None,
        on_finish: OnFinish | None = None,
        on_sample: OnSample | None = None,
        cancelled: Cancelled | None = None,
    ) -> list[Generation]:
        """Generate every request; requests in one call may be batched together.

        ``on_finish``/``on_sample`` are called once per finished sample; ``should_stop`` and
        ``cancelled`` end samples early where :attr:`capabilities` declares ``cancellation`` /
        ``request_cancellation`` (see :mod:`ttscale.types` for the hook signatures).
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class ReportsStats(Protocol):
    """A backend with its own account of what it did (the HTTP client: responses, retries, failures)."""

    def stats_line(self) -> str: ...


@runtime_checkable
class Tokenizes(Protocol):
    """A backend that exposes its tokenizer (capability ``tokenizer``)."""

    def tokenize(self, text: str) -> list[int]: ...


@runtime_checkable
class RendersPrompts(Protocol):
    """A backend that shows the exact text it feeds the model (capability ``renders_prompts``)."""

    def render(self, request: GenerationRequest) -> str: ...


@runtime_checkable
class ProbesNextTokens(Protocol):
    """A backend that scores candidate next tokens after a prompt (capability ``next_token_probes``);
    each result has ``logprobs`` by candidate and the prompt tokens it prefilled."""

    def next_token_logprobs(self, requests: Sequence[GenerationRequest], candidates: Sequence[str]) -> Sequence[Any]: ...


def tokenizer_of(backend: object) -> Tokenizes:
    """``backend`` as a :class:`Tokenizes`, or an error saying it has no tokenizer."""
    if not isinstance(backend, Tokenizes):
        raise UnsupportedFeatureError(f"backend {getattr(backend, 'name', backend)!r} exposes no tokenizer")
    return backend


def prober_of(backend: object) -> ProbesNextTokens:
    """``backend`` as a :class:`ProbesNextTokens`, or an error saying it cannot probe next tokens."""
    if not isinstance(backend, ProbesNextTokens):
        raise UnsupportedFeatureError(f"backend {getattr(backend, 'name', backend)!r} has no next-token probes")
    return backend


def render_prompt(backend: Backend, request: GenerationRequest) -> str:
    """The exact text the backend feeds the model for ``request`` (chat template applied)."""
    if capabilities_of(backend).renders_prompts and isinstance(backend, RendersPrompts):
        return str(backend.render(request))
    if request.prompt is not None:
        return request.prompt
    raise UnsupportedFeatureError(f"backend {backend.name} cannot render chat prompts for step-level generation")


def shares_prompt_prefix(backend: Backend) -> bool:
    """Whether the backend evaluates the common prefix of one call's prompts once (llama.cpp does)."""
    caps = capabilities_of(backend)
    return caps.shares_prompt_prefix and caps.tokenizer


def cut_at_stop(text: str, stops: Sequence[str]) -> str | None:
    """``text`` up to the first of ``stops`` it contains (checked in order), or None when it holds none:
    how an engine that decodes token by token ends a sample on a stop string."""
    for stop in stops:
        cut = text.find(stop)
        if cut >= 0:
            return text[:cut]
    return None


def report_finished(gens: Sequence[Generation], on_finish: OnFinish | None, on_sample: OnSample | None) -> None:
    """Call the per-sample hooks after the fact, in finish order, for a backend that returns whole
    generations (it cannot stop samples early, but callers still see every sample finish)."""
    if on_finish is None and on_sample is None:
        return
    done = [(c.finish_order, ri, c)
            for ri, g in enumerate(gens) for c in g.completions if c.finish_reason not in ("cancelled", "error")]
    for _, ri, c in sorted(done, key=lambda t: (t[0], t[1], t[2].index)):
        if on_finish is not None:
            on_finish(ri, c.index)
        if on_sample is not None:
            on_sample(ri, c.index, c.text)
