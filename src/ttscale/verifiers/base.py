"""The verifier protocol: score candidate samples, and say what scoring cost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ttscale.cost import Usage
from ttscale.tasks.base import Problem
from ttscale.types import Sample


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


def verifier_bound(verifier: Verifier, problem: Problem, candidates: Sequence[Sample], extra_tokens: int = 0) -> Usage:
    """The most scoring ``candidates`` can cost if each first grows by ``extra_tokens``.

    Verifiers that spend compute (an LLM judge) implement ``cost_bound``; the others
    are free and bound at zero.
    """
    bound = getattr(verifier, "cost_bound", None)
    return bound(problem, candidates, extra_tokens) if callable(bound) else Usage()
