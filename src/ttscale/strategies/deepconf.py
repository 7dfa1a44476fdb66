"""DeepConf (Fu et al. 2025, "Deep Think with Confidence"): drop low-confidence traces, weight the
vote by confidence, and stop early.

**Confidence, and how it differs from the paper.** The paper's token confidence is the mean negative
log-prob of the top-k candidate tokens at each position, and a trace's *group confidence* is its mean
over a sliding window of tokens. ttscale's backends and pools keep only the log-prob of the *sampled*
token (``Sample.token_logprobs``), not the top-k, so this module uses the sampled token's log-prob as
the proxy: group confidence = mean sampled-token log-prob over a window of ``window`` tokens (minus
the mean surprisal; <= 0, higher = more certain). Note the sign: the paper's top-k quantity *rises*
with certainty (a peaked distribution gives its runners-up very negative log-probs), while the
sampled token's negative log-prob (its surprisal) *falls*; so the proxy is the log-prob itself, which
points the same way as the paper's, and "lowest group confidence" still means the least certain
stretch of the trace. A trace shorter than the window is one group (its whole mean). Its vote weight is
``exp(lowest group confidence)``, the geometric-mean probability of its least certain window (the
paper weights by its confidence value, positive by construction; a log-prob is not, hence the exp).

**Online procedure** (the paper's Algorithm 2 and the reference implementation's voting):

1. warm-up: ``warmup`` traces in one wave, all decoded to the end; the threshold ``s`` is the
   ``1 - keep`` quantile of their lowest group confidences (``keep=0.1``: DeepConf-low, ``0.9``:
   DeepConf-high);
2. further traces in waves of ``batch`` (default: as many as the backend runs in parallel, its
   declared ``parallel_sequences``, as adaptive consistency does); a trace whose group confidence
   drops below ``s`` is stopped and does not vote;
3. after each wave the confidence-weighted vote over the traces that passed (warm-up traces
   included, if they pass ``s`` themselves) is checked: sampling stops once the leader holds a share
   ``>= threshold`` (the paper's consensus tau, 0.95), or when ``k`` traces were started. If no trace
   passes, the warm-up traces vote unfiltered.

**What runs inside the engine.** Stopping one trace at its first low window needs the token log-probs
while decoding and a way to stop a single sequence; no backend's step hooks offer that today
(``should_stop`` ends every live sample of a call, ``on_sample`` reports a finished one's text only).
So the per-trace stop happens *after the fact*: low-confidence traces run to the end, are paid in
full (the meter's usage is what was really generated) and are dropped from the vote; the result's
``meta`` says ``trace_stop="after-the-fact"`` and gives ``tokens_if_stopped_online``, what an engine
stopping them at their first low window would have generated (replay measures that engine:
:mod:`ttscale.replay.confidence`). On a backend that declares cancellation, the vote is also checked
as each sample of a wave finishes, and the unfinished ones are cancelled once it settles (as adaptive
consistency does); a finished sample's confidence is unknown until the wave returns, so inside the wave
it counts provisionally at the median weight of the voters so far, and the decision to stop sampling is
always re-taken with the real confidences once the wave is back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from ttscale.errors import ConfigError
from ttscale.strategies.base import SolveContext
from ttscale.strategies.spec import KOptions, StrategySpec
from ttscale.strategies.voting import Equivalence, answer_groups, weighted_vote
from ttscale.types import Problem, Result, Sample, capabilities_of

CONFIDENCE_PROXY = "mean sampled-token log-prob over a sliding window (no top-k log-probs are stored)"


def group_confidences(token_logprobs: Sequence[float], window: int) -> np.ndarray:
    """Mean sampled-token log-prob over every window of ``window`` consecutive tokens.

    A trace shorter than the window is one group, its whole mean; no tokens, no groups.

    >>> group_confidences([-1.0, 0.0, -2.0, 0.0], 2).tolist()
    [-0.5, -1.0, -1.0]
    """
    x = np.asarray(token_logprobs, dtype=float)
    if x.size == 0:
        return x
    if x.size < window:
        return np.array([x.mean()])
    c = np.concatenate(([0.0], np.cumsum(x)))
    return (c[window:] - c[:-window]) / window


def lowest_group_confidence(token_logprobs: Sequence[float] | None, window: int) -> float:
    """The trace's least confident window (``-inf`` when it has no log-probs: it never passes a filter)."""
    g = group_confidences(token_logprobs or [], window)
    return float(g.min()) if g.size else -math.inf


def stop_point(token_logprobs: Sequence[float], window: int, threshold: float) -> int | None:
    """Tokens an engine checking each window as it fills would have generated before stopping the
    trace: the end of its first window with mean below ``threshold``; ``None`` if none is (a trace
    shorter than the window never fills one, so it is only filtered once finished).

    >>> stop_point([0.0, 0.0, -3.0, 0.0], 2, -1.0)  # tokens 1-2 are the first window below: stop at 3
    3
    """
    if len(token_logprobs) < window:
        return None
    below = np.flatnonzero(group_confidences(token_logprobs, window) < threshold)
    return int(below[0]) + window if below.size else None


def calibrate(lowest: Sequence[float], keep: float) -> float:
    """The stopping threshold: the ``1 - keep`` quantile (linear interpolation, as ``np.percentile``)
    of the warm-up traces' lowest group confidences, so about ``keep`` of traces like them pass.

    >>> calibrate([-1.0, -0.5, -0.2, -0.1], 0.5)
    -0.35
    """
    vals = [v for v in lowest if math.isfinite(v)]
    return float(np.percentile(vals, 100.0 * (1.0 - keep))) if vals else -math.inf


def trace_weight(lowest: float) -> float:
    """A passing trace's vote weight: ``exp(lowest group confidence)``, in (0, 1]."""
    return math.exp(lowest) if math.isfinite(lowest) else 0.0


def consensus_share(answers: Sequence[str | None], weights: Sequence[float], equivalent: Equivalence | None) -> float:
    """The leading answer's share of the weighted vote (equivalent answers vote together; 0 if none).

    >>> consensus_share(["3", "3", "4", None], [0.5, 0.5, 1.0, 1.0], None)
    0.5
    """
    group = answer_groups(answers, equivalent)
    mass: dict[str, float] = {}
    for a, w in zip(answers, weights, strict=True):
        if a is not None:
            mass[group[a]] = mass.get(group[a], 0.0) + w
    total = sum(mass.values())
    return max(mass.values()) / total if total > 0 else 0.0


@dataclass
class DeepConf:
    k: int = 16
    """Maximum traces started per problem (warm-up included)."""
    warmup: int = 4
    """Warm-up traces that calibrate the threshold (one whole wave; the paper: 16 of 512). With
    ``warmup >= k`` every trace is a warm-up trace: the offline variant, the bar set by all k."""
    keep: float = 0.9
    """Share of warm-up traces at or above the threshold: 0.1 = DeepConf-low, 0.9 = DeepConf-high."""
    window: int = 64
    """Tokens per group (the paper: 2048 on traces of many thousand tokens)."""
    threshold: float = 0.95
    """Consensus share of the weighted vote at which sampling stops (the paper's tau)."""
    batch: int | None = None
    """Traces started per wave after the warm-up; ``None``: the backend's parallelism (up to what is left)."""
    name: str = "deepconf"

    def __post_init__(self) -> None:
        if self.k < 1 or self.warmup < 1:
            raise ConfigError(f"deepconf needs k >= 1 and warmup >= 1, got k={self.k}, warmup={self.warmup}")
        if not 0 < self.keep <= 1:
            raise ConfigError(f"keep must be in (0, 1], got {self.keep}")
        if self.window < 1 or (self.batch is not None and self.batch < 1):
            raise ConfigError("deepconf needs window >= 1 and batch >= 1")
        if not 0.5 < self.threshold <= 1:
            raise ConfigError(f"threshold (consensus share) must be in (0.5, 1], got {self.threshold}")

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        caps = capabilities_of(ctx.backend)
        eq = ctx.task.equivalent
        # Warm-up: one wave, no hooks: calibration needs every warm-up trace decoded to the end.
        warm = ctx.sample(min(self.warmup, self.k))
        lowest = {s.index: lowest_group_confidence(s.token_logprobs, self.window) for s in warm}
        scored = any(s.token_logprobs for s in warm)  # a backend without log-probs: plain consensus voting
        bar = calibrate([lowest[s.index] for s in warm if _finished(s)], self.keep) if scored else -math.inf

        def weight(s: Sample) -> float:
            return trace_weight(lowest[s.index]) if scored else 1.0

        def passes(s: Sample) -> bool:
            return _finished(s) and s.answer is not None and (not scored or lowest[s.index] >= bar)

        voters = [s for s in warm if passes(s)]
        started, dropped, cancelled, shares = list(warm), [s for s in warm if _finished(s) and not passes(s)], 0, []
        wave = self.batch or caps.wave(max(1, self.k - len(warm)))
        while len(started) < self.k and not ctx.budget_exhausted:
            n = min(wave, self.k - len(started))
            hooks = self._hooks(ctx, voters, [weight(s) for s in voters]) if caps.cancellation and n > 1 else None
            new = ctx.sample(n, hooks=hooks)
            if not new:
                break
            started += new
            for s in new:
                lowest[s.index] = lowest_group_confidence(s.token_logprobs, self.window)
                if passes(s):
                    voters.append(s)
                elif _finished(s):
                    dropped.append(s)
                else:
                    cancelled += 1
            shares.append(consensus_share([s.answer for s in voters], [weight(s) for s in voters], eq))
            if shares[-1] >= self.threshold:
                break
        fallback = not voters
        if fallback:  # nothing passed the bar: the warm-up traces vote unfiltered
            voters = [s for s in warm if _finished(s)]
        answer, votes = weighted_vote(voters, [weight(s) for s in voters], equivalent=eq)
        return ctx.result(
            self.name, answer, voters, votes, threshold_confidence=bar, warmup=len(warm), started=len(started),
            voters=len(voters), dropped=len(dropped), cancelled=cancelled, consensus=shares, wave=wave,
            fallback=fallback, trace_stop="after-the-fact", online_cancellation=caps.cancellation,
            tokens_generated=sum(s.n_tokens for s in started),
            tokens_if_stopped_online=self._online_tokens(started, {s.index for s in warm}, bar),
            confidence_proxy=CONFIDENCE_PROXY if scored else "none (the backend returned no log-probs)",
        )

    def _online_tokens(self, started: Sequence[Sample], warm: set[int], bar: float) -> int:
        """Generated tokens had each post-warm-up trace been stopped at its first window below the bar."""
        total = 0
        for s in started:
            cut = None if s.index in warm or not s.token_logprobs else stop_point(s.token_logprobs, self.window, bar)
            total += s.n_tokens if cut is None else min(cut, s.n_tokens)
        return total

    def _hooks(self, ctx: SolveContext, voters: list[Sample], weights: list[float]) -> dict[str, Any]:
        """Step hooks that cancel the rest of a wave once the finished samples settle the vote.

        A finished sample's log-probs are not reported until the wave returns, so it counts at the
        median weight of the voters so far (1 if none), and as passing the bar: a provisional cut,
        re-checked with the real confidences after the wave."""
        answers = [s.answer for s in voters]
        provisional = float(np.median(weights)) if weights else 1.0
        finished: list[str | None] = []
        memo: dict[int, bool] = {}

        def on_sample(_request: int, _index: int, text: str) -> None:
            finished.append(ctx.task.extract(text))

        def should_stop() -> bool:  # polled every decode step: recompute only when a sample finished
            n = len(finished)
            if n not in memo:
                share = consensus_share(answers + finished, weights + [provisional] * n, ctx.task.equivalent)
                memo[n] = n > 0 and share >= self.threshold
            return memo[n]

        hooks: dict[str, Callable[..., Any]] = {"on_sample": on_sample, "should_stop": should_stop}
        return hooks

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "warmup": self.warmup, "keep": self.keep, "window": self.window,
                "threshold": self.threshold, "batch": self.batch}


def _finished(s: Sample) -> bool:
    return s.finish_reason not in ("cancelled", "error")


class DeepConfOptions(KOptions):
    warmup: int | None = Field(None, ge=1, le=4096, description="warm-up traces that calibrate the confidence bar (one wave)")
    keep: float | None = Field(None, gt=0.0, le=1.0, description="share of warm-up traces above the bar (0.1 low, 0.9 high)")
    window: int | None = Field(None, ge=1, le=65536, description="tokens per sliding confidence window")
    threshold: float | None = Field(None, gt=0.5, le=1.0, description="consensus share at which sampling stops")
    batch: int | None = Field(None, ge=1, le=4096, description="traces per wave after the warm-up (default: the backend's parallelism)")


SPEC = StrategySpec(
    "deepconf", DeepConf, DeepConfOptions,
    "DeepConf (Fu et al. 2025): calibrate a confidence bar on -o warmup=N traces, drop traces whose windowed "
    "log-prob falls below it (after the fact: no backend stops one trace mid-decode), vote weighted by "
    "confidence, stop once the vote share reaches --threshold (max k)",
    uses_logprobs=True,
)
