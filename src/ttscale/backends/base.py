"""The backend protocol and the data that crosses it.

A backend turns :class:`GenerationRequest` objects into :class:`Generation`
objects. Every generation carries the usage the engine really incurred (tokens
prefilled and generated as counted by the engine's tokenizer, timings), so that
costs are measured, never estimated from string lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ttscale.errors import UnsupportedFeatureError
from ttscale.types import (  # noqa: F401 - the core data types live in ttscale.types
    Capabilities,
    ChatMessage,
    Completion,
    FinishReason,
    Generation,
    GenerationRequest,
    ModelInfo,
    Role,
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

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate every request; requests in one call may be batched together."""
        ...

    def close(self) -> None: ...


def render_prompt(backend: Backend, request: GenerationRequest) -> str:
    """The exact text the backend feeds the model for ``request`` (chat template applied)."""
    if capabilities_of(backend).renders_prompts:
        return str(backend.render(request))  # type: ignore[attr-defined]
    if request.prompt is not None:
        return request.prompt
    raise UnsupportedFeatureError(f"backend {backend.name} cannot render chat prompts for step-level generation")


def shares_prompt_prefix(backend: Backend) -> bool:
    """Whether the backend evaluates the common prefix of one call's prompts once (llama.cpp does)."""
    caps = capabilities_of(backend)
    return caps.shares_prompt_prefix and caps.tokenizer
