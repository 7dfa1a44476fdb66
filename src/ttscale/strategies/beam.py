"""Beam search with a process reward model (Snell et al. 2024).

Sample N first steps; then, each step, keep the top N/M partial solutions by
aggregated PRM score (ties: the earlier-created path), expand each surviving
unfinished one into M continuations, and score them. Survivors that are finished
leave the beam (they are candidates for the answer and are not expanded). Stops
when no unfinished survivor is left, at ``max_steps``, or when the next step
would pass the budget; the answer is the best finished path's (else the best
partial's answer so far).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ttscale.errors import ConfigError
from ttscale.strategies.base import SolveContext
from ttscale.strategies.search_common import Search, SearchKnobs
from ttscale.strategies.spec import BeamOptions, StrategySpec
from ttscale.strategies.steps import Partial
from ttscale.types import Problem, Result
from ttscale.verifiers.base import Verifier


@dataclass
class BeamSearch(SearchKnobs):
    verifier: Verifier | None = None
    k: int = 8
    """N: paths expanded per step."""
    beam_width: int = 2
    """M: continuations per surviving path; N/M paths survive each step."""
    name: str = "beam"
    trace: list[list[tuple[int, float]]] = field(default_factory=list, repr=False, init=False)
    """(uid, value) of the paths kept at each step of the last solve (for tests and inspection)."""

    def __post_init__(self) -> None:
        if self.verifier is None:
            raise ConfigError(f"strategy {self.name} needs a verifier")
        if self.beam_width < 1 or self.k < self.beam_width or self.k % self.beam_width:
            raise ConfigError(f"beam search needs N (k={self.k}) a positive multiple of the beam width M={self.beam_width}")
        self.check_search_knobs()

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        assert self.verifier is not None
        s = Search(ctx, self.verifier, self)
        keep = self.k // self.beam_width
        self.trace = []
        finished: list[Partial] = []
        active: list[Partial] = []
        first = s.step([s.gen.root()], self.k)
        candidates = first[0] if first else []
        while candidates:
            ranked = sorted(candidates, key=lambda p: (-s.value(p), p.uid))
            survivors = ranked[:keep]
            self.trace.append([(p.uid, s.value(p)) for p in survivors])
            finished += [p for p in survivors if p.done]
            active = [p for p in survivors if not p.done]
            if not active:
                break
            children = s.step(active, self.beam_width)
            if children is None:
                break
            candidates = [c for group in children for c in group]
        return s.result(self.name, finished, fallback=active, meta={"kept": [[u for u, _ in step] for step in self.trace]})

    def describe(self) -> dict[str, Any]:
        assert self.verifier is not None
        return {"name": self.name, "k": self.k, "beam_width": self.beam_width, "verifier": self.verifier.name,
                "aggregate": self.aggregate, "step_tokens": self.step_tokens, "max_steps": self.max_steps}


SPEC = StrategySpec("beam", BeamSearch, BeamOptions, "step-level beam search with a PRM: N=k paths, keep the top N/M each step (M=--beam-width)", verifier="required")
