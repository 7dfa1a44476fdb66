"""The verifier protocol: score candidate samples, and say what scoring cost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ttscale.types import Problem, Sample, Usage


@dataclass
class Scores:
    scores: list[float]
    """One score per candidate, higher is better."""
    usage: Usage = field(default_factory=Usage)
    """Compute the verifier itself spent (zero for free verifiers)."""


@runtime_checkable
class Verifier(Protocol):
    name: str
    uses_reference: bool
    """True for verifiers that read the reference answer: for evaluation only, never deployment."""

    def score(self, problem: Problem, candidates: Sequence[Sample]) -> Scores: ...


@runtime_checkable
class BoundsCost(Protocol):
    """A verifier that spends compute (an LLM judge, a reward model, rollouts) and can bound it in advance."""

    def cost_bound(self, problem: Problem, candidates: Sequence[Sample], extra_tokens: int = 0) -> Usage: ...


def verifier_bound(verifier: Verifier, problem: Problem, candidates: Sequence[Sample], extra_tokens: int = 0) -> Usage:
    """The most scoring ``candidates`` can cost if each first grows by ``extra_tokens``
    (zero for free verifiers, which do not implement :class:`BoundsCost`)."""
    if isinstance(verifier, BoundsCost):
        return verifier.cost_bound(problem, candidates, extra_tokens)
    return Usage()
