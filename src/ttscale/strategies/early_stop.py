"""Online early stopping: short-m@k and adaptive consistency.

Both really stop generating, not only in replay:

- **short-m@k** (Hassid et al. 2025, "Don't Overthink it"): start k samples in one
  batch and cancel the rest as soon as the first m have finished; majority vote
  over those m (voting's tie rule). On a backend with cancellation hooks
  (``generate(..., should_stop=, on_finish=)``, as the llama.cpp backend has) the
  unfinished samples stop decoding at that step and only their tokens so far are
  counted; on a backend without them the k samples run to the end (and are
  charged in full) and the first m by finish order are used.
- **adaptive consistency** (Aggarwal et al. 2023): stop drawing samples when the
  posterior probability that the current leading answer is the true majority answer
  reaches ``threshold``. Samples are started in waves of ``batch``, by default as many
  as the backend runs in parallel (its declared ``parallel_sequences``, up to k), so
  a wave costs no more wall time than self-consistency's single batch. On a backend
  with step hooks the rule is also checked inside a wave, each time a sample
  finishes: once the finished samples settle the vote, the unfinished ones are
  cancelled at the next decode step (their tokens so far are counted). Cancelled
  samples do not vote. ``batch=1`` is the paper's one-at-a-time procedure.
  ``beta`` rule: with v1, v2 votes for the top two answers, p ~ Beta(v1+1, v2+1)
  and the confidence is P(p > 1/2) (exact, from the binomial sum). ``dirichlet``
  rule: counts c over the answers seen, p ~ Dirichlet(c + 1), confidence =
  P(the leader has the largest p), by seeded Monte Carlo.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ttscale.errors import ConfigError
from ttscale.strategies.base import SolveContext, sample_seed
from ttscale.strategies.spec import KOptions, ReplayRule, StrategySpec
from ttscale.strategies.voting import weighted_vote
from ttscale.types import Problem, Result, Sample, capabilities_of


def supports_cancellation(backend: object) -> bool:
    """Whether the backend declares the step hooks (its :class:`~ttscale.backends.base.Capabilities`)."""
    return capabilities_of(backend).cancellation


@dataclass
class ShortMAtK:
    k: int = 8
    m: int = 1
    name: str = "short-m@k"

    def __post_init__(self) -> None:
        if self.k < 1 or not 1 <= self.m <= self.k:
            raise ConfigError(f"short-m@k needs 1 <= m <= k, got m={self.m}, k={self.k}")

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        done: list[int] = []
        hooks: dict[str, Any] | None = None
        if supports_cancellation(ctx.backend):
            hooks = {"should_stop": lambda: len(done) >= self.m, "on_finish": lambda _r, i: done.append(i)}
        samples = ctx.sample(self.k, hooks=hooks)
        finished = [s for s in samples if s.finish_reason not in ("cancelled", "error")]
        first_m = sorted(finished, key=lambda s: (s.wave, s.finish_order, s.index))[: self.m]
        answer, votes = weighted_vote(first_m, equivalent=ctx.task.equivalent)
        return ctx.result(self.name, answer, first_m, votes, started=len(samples), finished=len(finished),
                          cancelled=len(samples) - len(finished), online_cancellation=hooks is not None)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "m": self.m}


def beta_confidence(v1: int, v2: int) -> float:
    """P(p > 1/2) for p ~ Beta(v1 + 1, v2 + 1): the leader's share beats the runner-up's.

    For integer parameters a, b this is ``sum_{j<a} C(a+b-1, j) / 2^(a+b-1)``.

    >>> beta_confidence(4, 0)
    0.96875
    """
    a, b = v1 + 1, v2 + 1
    n = a + b - 1
    return math.fsum(math.comb(n, j) for j in range(a)) / 2.0**n


def dirichlet_confidence(counts: Sequence[int], draws: int = 4000, seed: int = 0) -> float:
    """P(the answer with the most votes has the largest share) under Dirichlet(counts + 1), by Monte Carlo."""
    if len(counts) <= 1:
        # One answer seen: the rule needs an alternative; compare against an unseen one with 0 votes.
        counts = [*counts, 0]
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.asarray(counts, dtype=float) + 1.0, size=draws)
    leader = int(np.argmax(counts))
    return float((p.argmax(axis=1) == leader).mean())


@dataclass
class AdaptiveConsistency:
    k: int = 16
    """Maximum number of samples."""
    batch: int | None = None
    """Samples started per wave; ``None``: as many as the backend runs in parallel (up to k)."""
    threshold: float = 0.95
    rule: str = "beta"
    name: str = "adaptive-consistency"

    def __post_init__(self) -> None:
        if self.k < 1 or (self.batch is not None and self.batch < 1):
            raise ConfigError("adaptive consistency needs k >= 1 and batch >= 1")
        if not 0.5 <= self.threshold < 1.0:
            raise ConfigError(f"threshold must be in [0.5, 1), got {self.threshold}")
        if self.rule not in ("beta", "dirichlet"):
            raise ConfigError(f"unknown stopping rule {self.rule!r}; available: beta, dirichlet")

    def confidence(self, samples: Sequence[Sample], seed: int = 0) -> float:
        return self.answers_confidence([s.answer for s in samples], seed)

    def answers_confidence(self, answers: Sequence[str | None], seed: int = 0) -> float:
        """The stopping rule's confidence in the leading answer among ``answers`` (``None`` does not vote)."""
        counts = Counter(a for a in answers if a is not None)
        if not counts:
            return 0.0
        ranked = [c for _, c in counts.most_common()]
        if self.rule == "beta":
            return beta_confidence(ranked[0], ranked[1] if len(ranked) > 1 else 0)
        return dirichlet_confidence(ranked, seed=seed)

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        caps = capabilities_of(ctx.backend)
        wave = self.batch or caps.wave(self.k)
        started: list[Sample] = []
        voters: list[Sample] = []
        trace: list[float] = []
        seed = sample_seed(ctx.sampling.seed, problem.id, 2)
        while len(started) < self.k:
            n = min(wave, self.k - len(started))
            new = ctx.sample(n, hooks=self._hooks(ctx, [s.answer for s in voters], seed) if caps.cancellation and n > 1
                             else None)
            if not new:
                break
            started += new
            voters += [s for s in new if s.finish_reason not in ("cancelled", "error")]
            trace.append(self.confidence(voters, seed))
            if trace[-1] >= self.threshold:
                break
        answer, votes = weighted_vote(voters, equivalent=ctx.task.equivalent)
        return ctx.result(self.name, answer, voters, votes, stopped_at=len(voters), started=len(started),
                          cancelled=len(started) - len(voters), wave=wave, confidence=trace, rule=self.rule)

    def _hooks(self, ctx: SolveContext, before: list[str | None], seed: int) -> dict[str, Any]:
        """Step hooks that stop the wave once the samples finished so far settle the vote."""
        finished: list[str | None] = []
        memo: dict[int, bool] = {}

        def on_sample(_request: int, _index: int, text: str) -> None:
            finished.append(ctx.task.extract(text))

        def should_stop() -> bool:  # polled every decode step: recompute only when a sample finished
            n = len(finished)
            if n not in memo:
                memo[n] = n > 0 and self.answers_confidence(before + finished, seed) >= self.threshold
            return memo[n]

        return {"on_sample": on_sample, "should_stop": should_stop}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "batch": self.batch, "threshold": self.threshold, "rule": self.rule}


class ShortOptions(KOptions):
    m: int | None = Field(None, ge=1, le=4096, description="samples that must finish before the rest stop")


class AdaptiveOptions(KOptions):
    batch: int | None = Field(None, ge=1, le=4096, description="samples started per wave (default: the backend's parallelism)")
    threshold: float | None = Field(None, ge=0.5, lt=1.0, description="confidence at which sampling stops")
    rule: Literal["beta", "dirichlet"] | None = Field(None, description="stopping rule")


SPECS = (
    # Replay models both from the pool's finish order and vote sequence (no rule on drawn samples alone).
    StrategySpec("short-m@k", ShortMAtK, ShortOptions, "start k samples, stop all once the first --m finish, vote over those m",
                 replay=(ReplayRule("short", options=("m",), curves=(("short-1", {"m": 1}), ("short-3", {"m": 3}))),)),
    StrategySpec("adaptive-consistency", AdaptiveConsistency, AdaptiveOptions,
                 "start samples in waves as wide as the backend runs in parallel; stop (cancelling unfinished "
                 "samples) once the finished ones reach the Beta/Dirichlet confidence --threshold (max k)",
                 replay=(ReplayRule("adaptive", options=("threshold",), curves=(("adaptive", {"threshold": 0.95}),)),)),
)
