"""DVTS, diverse verifier tree search (HF search-and-learn).

N is split into N/M independent subtrees. Each subtree starts from its own M
first steps and then grows greedily: each step its current path is expanded
into M continuations and the subtree keeps its best one by aggregated PRM score
(ties: earlier-created). Subtrees never compete with each other, which keeps
diversity at large N; all of them are expanded in one batched call per step.
The answer is the best finished leaf over all subtrees.
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
class DiverseVerifierTreeSearch(SearchKnobs):
    verifier: Verifier | None = None
    k: int = 8
    """N: total paths per step over all subtrees."""
    beam_width: int = 2
    """M: continuations per subtree per step; there are N/M subtrees."""
    name: str = "dvts"
    paths: list[list[Partial]] = field(default_factory=list, repr=False, init=False)
    """Each subtree's chosen path, step by step (last solve; for tests and inspection)."""

    def __post_init__(self) -> None:
        if self.verifier is None:
            raise ConfigError(f"strategy {self.name} needs a verifier")
        if self.beam_width < 1 or self.k < self.beam_width or self.k % self.beam_width:
            raise ConfigError(f"DVTS needs N (k={self.k}) a positive multiple of M={self.beam_width}")
        self.check_search_knobs()

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        assert self.verifier is not None
        s = Search(ctx, self.verifier, self)
        n_trees = self.k // self.beam_width
        current = [s.gen.root(group=g) for g in range(n_trees)]
        self.paths = [[] for _ in range(n_trees)]
        while True:
            todo = [i for i, p in enumerate(current) if not p.done]
            if not todo:
                break
            children = s.step([current[i] for i in todo], self.beam_width)
            if children is None:
                break
            for i, kids in zip(todo, children, strict=False):
                # A subtree chooses only among its own children: that is what keeps them independent.
                best = min(kids, key=lambda p: (-s.value(p), p.uid))
                current[i] = best
                self.paths[i].append(best)
        started = [p for p in current if p.steps]
        finished = [p for p in started if p.done]
        return s.result(self.name, finished, fallback=started, meta={"subtrees": n_trees})

    def describe(self) -> dict[str, Any]:
        assert self.verifier is not None
        return {"name": self.name, "k": self.k, "beam_width": self.beam_width, "verifier": self.verifier.name,
                "aggregate": self.aggregate, "step_tokens": self.step_tokens, "max_steps": self.max_steps}


SPEC = StrategySpec("dvts", DiverseVerifierTreeSearch, BeamOptions, "diverse verifier tree search: k/M independent greedy subtrees of width M", verifier="required")
