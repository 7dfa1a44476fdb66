"""Particle filtering over partial solutions (Puri et al. 2025, "A Probabilistic Inference
Approach to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods").

The rule implemented (their Algorithm 1, with the PRM score as the particle's
log-weight scale): N particles start as N sampled first steps. Each round,

1. every particle is weighted ``w_i = softmax(v_i / T)``, where ``v_i`` is its
   aggregated PRM score and ``T`` the temperature (T -> 0: greedy; large T: uniform);
2. N particles are resampled with replacement, in proportion to ``w`` (multinomial
   resampling, seeded);
3. every unfinished particle is extended by one step and scored (copies of one
   particle are expanded as one request with ``n`` = copies, so they diverge and
   share their prefill); finished particles are carried along unchanged.

It stops when all particles are finished, at ``max_steps``, or when the next step
would pass the budget; the answer is the highest-valued finished particle's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from ttscale.errors import ConfigError
from ttscale.strategies.base import SolveContext, sample_seed
from ttscale.strategies.search_common import Search, SearchKnobs
from ttscale.strategies.spec import SearchOptions, StrategySpec
from ttscale.strategies.steps import Partial
from ttscale.types import Problem, Result
from ttscale.verifiers.base import Verifier


def softmax_weights(values: Sequence[float], temperature: float) -> list[float]:
    """``softmax(values / temperature)``, computed stably.

    >>> [round(w, 3) for w in softmax_weights([0.0, math.log(3.0)], 1.0)]
    [0.25, 0.75]
    """
    if temperature <= 0:
        raise ConfigError(f"particle-filter temperature must be > 0, got {temperature}")
    z = [v / temperature for v in values]
    m = max(z)
    e = [math.exp(x - m) for x in z]
    s = sum(e)
    return [x / s for x in e]


def resample(weights: Sequence[float], n: int, rng: random.Random) -> list[int]:
    """Multinomial resampling: ``n`` indices drawn with replacement in proportion to ``weights``."""
    return rng.choices(range(len(weights)), weights=weights, k=n)


@dataclass
class ParticleFilter(SearchKnobs):
    verifier: Verifier | None = None
    k: int = 8
    """N: number of particles."""
    temperature: float = 0.5
    """Softmax temperature over the particles' scores."""
    name: str = "particle-filter"
    history: list[list[int]] = field(default_factory=list, repr=False, init=False)
    """Particle uids after each resampling (last solve)."""

    def __post_init__(self) -> None:
        if self.verifier is None:
            raise ConfigError(f"strategy {self.name} needs a verifier")
        if self.k < 1:
            raise ConfigError(f"particle filtering needs k >= 1 particles, got {self.k}")
        softmax_weights([0.0], self.temperature)
        self.check_search_knobs()

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        assert self.verifier is not None
        s = Search(ctx, self.verifier, self)
        rng = random.Random(sample_seed(ctx.sampling.seed, problem.id, 1))
        self.history = []
        first = s.step([s.gen.root()], self.k)
        particles: list[Partial] = first[0] if first else []
        while particles:
            w = softmax_weights([s.value(p) for p in particles], self.temperature)
            particles = [particles[i] for i in resample(w, self.k, rng)]
            self.history.append([p.uid for p in particles])
            live = [p for p in particles if not p.done]
            if not live:
                break
            # Copies of one particle become one request with n = copies: they diverge and share the prefill.
            uniq: dict[int, Partial] = {}
            copies: dict[int, int] = {}
            for p in live:
                uniq.setdefault(p.uid, p)
                copies[p.uid] = copies.get(p.uid, 0) + 1
            order = list(uniq)
            children = s.step([uniq[u] for u in order], [copies[u] for u in order])
            if children is None:
                break
            pools = {u: list(kids) for u, kids in zip(order, children, strict=False)}
            particles = [p if p.done else pools[p.uid].pop(0) for p in particles]
        finished = list({p.uid: p for p in particles if p.done}.values())
        distinct = list({p.uid: p for p in particles}.values())
        return s.result(self.name, finished, fallback=distinct, meta={"temperature": self.temperature})

    def describe(self) -> dict[str, Any]:
        assert self.verifier is not None
        return {"name": self.name, "k": self.k, "temperature": self.temperature, "verifier": self.verifier.name,
                "aggregate": self.aggregate, "step_tokens": self.step_tokens, "max_steps": self.max_steps}


class ParticleFilterOptions(SearchOptions):
    pf_temperature: float | None = Field(None, gt=0, le=100, description="softmax temperature of the resampling weights")


def _particle_filter(pf_temperature: float | None = None, **kw: Any) -> ParticleFilter:
    if pf_temperature is not None:
        kw["temperature"] = pf_temperature
    return ParticleFilter(**kw)


SPEC = StrategySpec("particle-filter", _particle_filter, ParticleFilterOptions,
                    "particle filtering: k particles, softmax(score/--temperature-pf) resampling each step",
                    verifier="required")
