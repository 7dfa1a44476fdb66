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

**Waves sized by the cost model** (``schedule="cost"``): instead of waves all as wide as the backend
allows, :func:`plan_waves` picks the schedule (first wave, then constant or growing waves, never ending
a wave before the rule's first useful check: 4 votes for the Beta rule at 0.95) whose expected seconds
on a hardware profile are least: the sum over waves of the roofline time of that wave (its samples
decoded together) times the probability that the rule has not stopped before it. The stopping
probabilities come from the rule itself under a simple answer model: each sample gives the leading
answer with probability p, else an answer of its own, with p uniform on [0, 1] by default, a given
``leader_share``, or shares estimated from a replayed pool (:func:`leader_shares_of`). The profile is
the run's ``Budget.hardware``, else the ``hardware`` option; with neither, waves stay wide. The default
(``schedule="wide"``) is unchanged.

Why it helps on a CPU and not on a GPU, from the shipped profiles (Qwen2.5-Coder-0.5B, a 150-token
prompt, 320 tokens per sample): on ``cpu-2core`` decoding is compute-bound, a decode step of 8
sequences takes 118 ms against 43 ms for one (75 ms for 4), so a first wave of 4 costs 25.5 s, a
second one 24.1 s (the prompt is cached) and a wave of 8 39.2 s: two waves of 4 beat one of 8 once
the first stops often enough (the leader's share about 0.84 or more with the 5% margin), and at a
share of 0.9 the expected time falls to 33.8 s. On ``h100`` decoding is
memory-bound (every step reads the 491 MB of weights once: 2.18 ms for one sequence, 2.19 ms for 8), a
wave of 8 costs what a wave of 1 costs, and any second wave costs a whole first one again, so the
schedule stays one wide wave whatever the answers. Seconds and dollars give the same schedule (one
price per profile).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ttscale.errors import ConfigError
from ttscale.roofline import HardwareProfile, generation_seconds, load_profile
from ttscale.strategies.base import SolveContext, sample_seed
from ttscale.strategies.spec import KOptions, ReplayRule, StrategySpec
from ttscale.strategies.voting import weighted_vote
from ttscale.types import ModelInfo, Problem, Result, Sample, capabilities_of


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


UNIFORM_SHARES = tuple((i + 0.5) / 10 for i in range(10))
"""The default prior on the leading answer's share: uniform on [0, 1] (a 10-point grid)."""
COST_SCHEDULE_MAX_K = 256
GROWTH = (1.0, 1.5, 2.0, math.inf)
"""How a candidate schedule's waves grow after its first: constant, x1.5, x2, or the rest as wide as allowed."""


@dataclass(frozen=True)
class WavePlan:
    """Wave sizes chosen by :func:`plan_waves`, with the expected seconds they and the wide schedule cost."""

    waves: tuple[int, ...]
    expected_s: float
    """Expected seconds of this schedule on ``hardware`` (each wave weighted by the chance it is drawn)."""
    wide_s: float
    """Expected seconds of today's schedule: every wave as wide as allowed."""
    first_check: int
    """Fewest votes with which the rule can stop (its first useful check); no wave ends before it."""
    hardware: str
    stop_by_wave: tuple[float, ...] = ()
    """Model probability of having stopped after each wave."""

    def to_dict(self) -> dict[str, Any]:
        return {"waves": list(self.waves), "expected_s": round(self.expected_s, 4), "wide_s": round(self.wide_s, 4),
                "first_check": self.first_check, "hardware": self.hardware,
                "stop_by_wave": [round(p, 4) for p in self.stop_by_wave]}


def leader_shares_of(answer_lists: Sequence[Sequence[str | None]]) -> list[float]:
    """Per problem, the share of its samples giving its most common answer (``None`` counts against it):
    a prior for :func:`plan_waves` estimated from a replayed pool of the task."""
    shares = []
    for answers in answer_lists:
        counts = Counter(a for a in answers if a is not None)
        if answers:
            shares.append((counts.most_common(1)[0][1] if counts else 0) / len(answers))
    return shares


DEFAULT_MARGIN = 0.15
"""Saving a wave schedule must promise over the wide one on a profile that records no held-out error."""


def candidate_schedules(k: int, widest: int, first: int) -> list[tuple[int, ...]]:
    """Schedules searched: a first wave from ``first`` (the rule's first useful check) up to ``widest``,
    then waves that stay constant, grow x1.5 or x2, or take the rest as wide as allowed; the wide schedule
    (every wave ``widest``) comes first. Waves end where k is reached."""
    widest = max(1, min(widest, k))
    out: list[tuple[int, ...]] = []
    for w1 in range(widest, min(max(first, 1), widest) - 1, -1):
        for g in GROWTH:
            waves, n, w = [], 0, w1
            while n < k:
                waves.append(min(w, k - n))
                n += waves[-1]
                w = widest if math.isinf(g) else min(widest, max(w + 1 if g > 1 else w, math.ceil(w * g)))
            if tuple(waves) not in out:
                out.append(tuple(waves))
    return out


def plan_waves(k: int, *, widest: int, info: ModelInfo, hardware: HardwareProfile, prompt_tokens: int,
               max_tokens: int, stops: Callable[[int, int], bool], leader_shares: Sequence[float] = UNIFORM_SHARES,
               shared_prefill: bool = True, margin: float | None = None) -> WavePlan:
    """The wave schedule with the least expected seconds on ``hardware`` for at most ``k`` samples.

    ``stops(a, m)``: whether the stopping rule stops when the leading answer has ``a`` votes and ``m``
    other votes fell on distinct answers. The answer model: each sample gives the leading answer with
    probability p, else an answer of its own; p is drawn from ``leader_shares`` (equal weights: the
    prior, default uniform on [0, 1]; pass :func:`leader_shares_of` a replayed pool to estimate it).
    The rule is checked when a wave ends (stops inside a wave are a bonus the model does not count).
    A wave costs the roofline's :func:`~ttscale.roofline.generation_seconds` of its samples decoded
    together for ``max_tokens`` steps (a wave lasts as long as its longest sample); only the first wave
    prefills the prompt (engines keep it cached, llama.cpp's and llama-server's both do). Dollars are
    these seconds times one price, so the same schedule minimises both. A schedule other than the wide
    one is chosen only if it is expected to save more than ``margin`` of the wide one's time: by default the
    profile's own held-out median error (``calibration.held_out_median_abs_error``; 15% for a profile
    never calibrated), since a saving the model cannot tell from its error is not one. On llama-server
    (``bench/remote.py --gsm8k-waves``, docs/cost-model.md) a predicted 7% saving from waves of 4 over one
    of 8 came out 45% slower: that server's steps are not the embedded engine's the profile was fitted to."""
    if k < 1 or widest < 1 or not leader_shares:
        raise ConfigError("plan_waves needs k >= 1, widest >= 1 and a non-empty prior")
    first = next((n for n in range(1, k + 1) if stops(n, 0)), k + 1)
    shares = np.clip(np.asarray(leader_shares, dtype=float), 0.0, 1.0)
    weights = np.full(len(shares), 1.0 / len(shares))
    rows: dict[int, np.ndarray] = {}

    def stop_row(n: int) -> np.ndarray:  # over a = 0..k leader votes among n
        if n not in rows:
            rows[n] = np.array([a <= n and stops(a, n - a) for a in range(k + 1)])
        return rows[n]

    wave_s: dict[tuple[int, bool], float] = {}

    def seconds(w: int, first_wave: bool) -> float:
        if (w, first_wave) not in wave_s:
            wave_s[w, first_wave] = generation_seconds(
                info, hardware, prompt_tokens=prompt_tokens, samples=w, generated_tokens=max_tokens,
                shared_prefill=shared_prefill, prefilled_tokens=prompt_tokens if first_wave else 0)
        return wave_s[w, first_wave]

    def expected(waves: tuple[int, ...]) -> tuple[float, tuple[float, ...]]:
        mass = np.zeros((len(shares), k + 1))
        mass[:, 0] = 1.0
        total, n, stopped = 0.0, 0, []
        for j, w in enumerate(waves):
            total += float(weights @ mass.sum(axis=1)) * seconds(w, j == 0)
            pmf = np.array([[math.comb(w, i) * p**i * (1 - p) ** (w - i) for i in range(w + 1)] for p in shares])
            new = np.zeros_like(mass)
            for i in range(w + 1):
                new[:, i:] += mass[:, : k + 1 - i] * pmf[:, i : i + 1]
            n += w
            mass = np.where(stop_row(n), 0.0, new)
            stopped.append(1.0 - float(weights @ mass.sum(axis=1)))
        return total, tuple(stopped)

    schedules = candidate_schedules(k, widest, first)
    scored = [(s, *expected(s)) for s in schedules]
    wide = scored[0]
    best = min(scored, key=lambda t: t[1])
    if margin is None:
        margin = float(hardware.calibration.get("held_out_median_abs_error", DEFAULT_MARGIN))
    if best[1] > (1.0 - margin) * wide[1]:
        best = wide
    return WavePlan(best[0], best[1], wide[1], min(first, k), hardware.name, best[2])


@lru_cache(maxsize=64)
def _stop_table(k: int, threshold: float, rule: str) -> frozenset[tuple[int, int]]:
    """(leader votes, other votes on distinct answers) at which the rule stops, for up to k votes."""
    probe = AdaptiveConsistency(k=k, threshold=threshold, rule=rule)
    return frozenset((a, n - a) for n in range(1, k + 1) for a in range(n + 1)
                     if probe.answers_confidence(["lead"] * a + [f"other{i}" for i in range(n - a)]) >= threshold)


@dataclass
class AdaptiveConsistency:
    k: int = 16
    """Maximum number of samples."""
    batch: int | None = None
    """Samples started per wave; ``None``: as many as the backend runs in parallel (up to k). With
    ``schedule="cost"``: the widest wave."""
    threshold: float = 0.95
    rule: str = "beta"
    name: str = "adaptive-consistency"
    schedule: str = "wide"
    """``wide``: every wave ``batch`` wide; ``cost``: the waves :func:`plan_waves` expects to be fastest on
    the hardware profile (the run's ``Budget.hardware``, else ``hardware``; wide when neither is given)."""
    hardware: str | None = None
    """Hardware profile (built-in name or TOML path) the cost schedule is priced on when the budget names none."""
    leader_share: float | None = None
    """The cost schedule's prior: the share of samples giving the leading answer (None: uniform on [0, 1])."""
    _profile: HardwareProfile | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.k < 1 or (self.batch is not None and self.batch < 1):
            raise ConfigError("adaptive consistency needs k >= 1 and batch >= 1")
        if not 0.5 <= self.threshold < 1.0:
            raise ConfigError(f"threshold must be in [0.5, 1), got {self.threshold}")
        if self.rule not in ("beta", "dirichlet"):
            raise ConfigError(f"unknown stopping rule {self.rule!r}; available: beta, dirichlet")
        if self.schedule not in ("wide", "cost"):
            raise ConfigError(f"unknown wave schedule {self.schedule!r}; available: wide, cost")
        if self.schedule == "cost" and self.k > COST_SCHEDULE_MAX_K:
            raise ConfigError(f"the cost schedule is modelled for k <= {COST_SCHEDULE_MAX_K}, got k={self.k}")
        if self.leader_share is not None and not 0.0 <= self.leader_share <= 1.0:
            raise ConfigError(f"leader_share must be in [0, 1], got {self.leader_share}")
        if self.hardware is not None:
            self._profile = load_profile(self.hardware)

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

    def plan(self, ctx: SolveContext, widest: int) -> WavePlan | None:
        """The cost-model wave schedule for this problem, or None (wide waves: no schedule asked, or no
        hardware profile in the budget or the options)."""
        hw = ctx.meter.budget.hardware or self._profile
        if self.schedule != "cost" or hw is None:
            return None
        table = _stop_table(self.k, self.threshold, self.rule)
        caps = capabilities_of(ctx.backend)
        return plan_waves(self.k, widest=widest, info=ctx.meter.info, hardware=hw, prompt_tokens=ctx.prompt_tokens(),
                          max_tokens=ctx.base_request().max_tokens, stops=lambda a, m: (a, m) in table,
                          leader_shares=UNIFORM_SHARES if self.leader_share is None else (self.leader_share,),
                          shared_prefill=not caps.prefill_per_sample)

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        caps = capabilities_of(ctx.backend)
        wave = self.batch or caps.wave(self.k)
        plan = self.plan(ctx, wave)
        started: list[Sample] = []
        voters: list[Sample] = []
        trace: list[float] = []
        drawn: list[int] = []
        seed = sample_seed(ctx.sampling.seed, problem.id, 2)
        while len(started) < self.k:
            size = plan.waves[len(drawn)] if plan is not None and len(drawn) < len(plan.waves) else wave
            n = min(size, self.k - len(started))
            new = ctx.sample(n, hooks=self._hooks(ctx, [s.answer for s in voters], seed) if caps.cancellation and n > 1
                             else None)
            if not new:
                break
            drawn.append(len(new))
            started += new
            voters += [s for s in new if s.finish_reason not in ("cancelled", "error")]
            trace.append(self.confidence(voters, seed))
            if trace[-1] >= self.threshold:
                break
        answer, votes = weighted_vote(voters, equivalent=ctx.task.equivalent)
        extra: dict[str, Any] = {} if plan is None else {"waves": drawn, "schedule": plan.to_dict()}
        return ctx.result(self.name, answer, voters, votes, stopped_at=len(voters), started=len(started),
                          cancelled=len(started) - len(voters), wave=wave, confidence=trace, rule=self.rule, **extra)

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
        d: dict[str, Any] = {"name": self.name, "k": self.k, "batch": self.batch, "threshold": self.threshold,
                             "rule": self.rule}
        if self.schedule != "wide":  # recorded only when set: runs stored before still resume
            d |= {"schedule": self.schedule, "hardware": self.hardware, "leader_share": self.leader_share}
        return d


class ShortOptions(KOptions):
    m: int | None = Field(None, ge=1, le=4096, description="samples that must finish before the rest stop")


class AdaptiveOptions(KOptions):
    batch: int | None = Field(None, ge=1, le=4096, description="samples started per wave (default: the backend's parallelism)")
    threshold: float | None = Field(None, ge=0.5, lt=1.0, description="confidence at which sampling stops")
    rule: Literal["beta", "dirichlet"] | None = Field(None, description="stopping rule")
    schedule: Literal["wide", "cost"] | None = Field(
        None, description="wave sizes: wide (every wave --batch wide) or cost (fastest expected on the hardware profile)")
    hardware: str | None = Field(None, description="profile the cost schedule is priced on when the budget names none")
    leader_share: float | None = Field(None, ge=0.0, le=1.0,
                                       description="cost schedule's prior share of the leading answer (default uniform)")


SPECS = (
    # Replay models both from the pool's finish order and vote sequence (no rule on drawn samples alone).
    StrategySpec("short-m@k", ShortMAtK, ShortOptions, "start k samples, stop all once the first --m finish, vote over those m",
                 replay=(ReplayRule("short", options=("m",), curves=(("short-1", {"m": 1}), ("short-3", {"m": 3}))),)),
    StrategySpec("adaptive-consistency", AdaptiveConsistency, AdaptiveOptions,
                 "start samples in waves as wide as the backend runs in parallel; stop (cancelling unfinished "
                 "samples) once the finished ones reach the Beta/Dirichlet confidence --threshold (max k)",
                 replay=(ReplayRule("adaptive", options=("threshold",), curves=(("adaptive", {"threshold": 0.95}),)),)),
)
