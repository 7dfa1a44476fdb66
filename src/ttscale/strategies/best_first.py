"""Best-first (A*-style) search over partial solutions with a PRM priority
(after "A*-Decoding: Token-Efficient Inference Scaling", 2025).

A frontier holds scored partial solutions, ordered by aggregated PRM score
(ties: earlier-created first). Each iteration pops the best; if it is finished
it is the answer (nothing left on the frontier scores higher), otherwise it is
expanded into ``beam_width`` children, which are scored and pushed. Stops at the
first finished pop, after ``k`` expansions, or when the next expansion would
pass the budget (then the best finished path so far, else the best partial).
"""

from __future__ import annotations

import heapq
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
class BestFirstSearch(SearchKnobs):
    verifier: Verifier | None = None
    k: int = 8
    """Maximum number of expansions (the root's counts as one)."""
    beam_width: int = 2
    """Children per expansion."""
    name: str = "best-first"
    popped: list[int] = field(default_factory=list, repr=False, init=False)
    """uids in the order they were popped (last solve)."""

    def __post_init__(self) -> None:
        if self.verifier is None:
            raise ConfigError(f"strategy {self.name} needs a verifier")
        if self.k < 1 or self.beam_width < 1:
            raise ConfigError("best-first needs k (max expansions) >= 1 and beam width >= 1")
        self.check_search_knobs()

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        assert self.verifier is not None
        s = Search(ctx, self.verifier, self)
        self.popped = []
        frontier: list[tuple[float, int, Partial]] = []
        seen: list[Partial] = []
        finished: list[Partial] = []
        first = s.step([s.gen.root()], self.beam_width)
        expansions = 1
        for p in first[0] if first else []:
            heapq.heappush(frontier, (-s.value(p), p.uid, p))
            seen.append(p)
        while frontier:
            _, _, best = heapq.heappop(frontier)
            self.popped.append(best.uid)
            if best.done:
                finished.append(best)
                break
            if expansions >= self.k:
                heapq.heappush(frontier, (-s.value(best), best.uid, best))
                break
            children = s.step([best], self.beam_width)
            if children is None:
                heapq.heappush(frontier, (-s.value(best), best.uid, best))
                break
            expansions += 1
            for c in children[0]:
                heapq.heappush(frontier, (-s.value(c), c.uid, c))
                seen.append(c)
        if not finished:
            finished = [p for p in seen if p.done]
        fallback = [p for _, _, p in sorted(frontier)][:1]
        return s.result(self.name, finished, fallback=fallback, meta={"expansions": expansions})

    def describe(self) -> dict[str, Any]:
        assert self.verifier is not None
        return {"name": self.name, "k": self.k, "beam_width": self.beam_width, "verifier": self.verifier.name,
                "aggregate": self.aggregate, "step_tokens": self.step_tokens, "max_steps": self.max_steps}


SPEC = StrategySpec("best-first", BestFirstSearch, BeamOptions, "best-first (A*-style) search by PRM score: up to k expansions of --beam-width children", verifier="required")
