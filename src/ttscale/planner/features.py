"""Difficulty features that are cheap at inference time, from a probe of ``p`` samples.

None of these reads the reference answer, so a policy can use them online:

- ``agreement``: share of the probe voting for its most common answer (0 if none answered);
- ``entropy``: Shannon entropy (nats) of the probe's answer distribution, "no answer" counted
  as one more outcome;
- ``answered``: share of probe samples with an extractable answer;
- ``mean_logprob``: mean over the probe of each sample's mean token log-probability;
- ``verifier``: mean verifier score over the probe (default ``certainty`` = exp(mean log-prob),
  which is free; another stored score name can be used when the pool has it);
- ``prompt_tokens``: length of the rendered prompt;
- ``log_length``: mean over the probe of log(1 + tokens generated): a long chain of thought
  costs more per sample and, on a mixed workload, tends to mark a harder problem.

:func:`oracle_pass_rate` is the *oracle* difficulty (pass rate over the whole pool). It reads the
reference answers and is for analysis only: fitting uses it as the target the cheap features are
regressed on, never as an input at inference time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ttscale.types import Sample

FEATURE_NAMES: tuple[str, ...] = (
    "agreement", "entropy", "answered", "mean_logprob", "verifier", "prompt_tokens", "log_length",
)


@dataclass(frozen=True)
class ProbeFeatures:
    agreement: float
    entropy: float
    answered: float
    mean_logprob: float
    verifier: float
    prompt_tokens: float
    log_length: float = 0.0

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, n) for n in FEATURE_NAMES], dtype=float)

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in asdict(self).items()}


def _entropy(counts: Sequence[int]) -> float:
    total = sum(counts)
    if total == 0:
        return 0.0
    return 0.0 - math.fsum(c / total * math.log(c / total) for c in counts if c > 0)  # 0.0 - x: never -0.0


def certainty(sample: Sample) -> float:
    """exp(mean token log-prob): the free verifier score, as the replay pool computes it."""
    mlp = sample.mean_logprob
    return math.exp(mlp) if mlp is not None and math.isfinite(mlp) else math.exp(0.0)


def probe_features(samples: Sequence[Sample], prompt_tokens: int, score: str = "certainty") -> ProbeFeatures:
    """Features of one problem from its probe samples (no reference answer is read).

    >>> s = lambda i, a: Sample(i, "", a, None, 2, 10, 0, 0.0, "stop", logprob=-1.0)
    >>> f = probe_features([s(0, "4"), s(1, "4")], 10)
    >>> (f.agreement, f.entropy, f.answered, f.mean_logprob)
    (1.0, 0.0, 1.0, -0.5)
    """
    n = len(samples)
    if n == 0:
        return ProbeFeatures(0.0, 0.0, 0.0, 0.0, 0.0, float(prompt_tokens), 0.0)
    votes = Counter(s.answer for s in samples if s.answer is not None)
    missing = n - sum(votes.values())
    outcomes = [*votes.values()] + ([missing] if missing else [])
    mlps = [s.mean_logprob if s.mean_logprob is not None and math.isfinite(s.mean_logprob) else 0.0 for s in samples]
    if score == "certainty":
        ver = [certainty(s) for s in samples]
    else:
        ver = [float(s.scores.get(score, 0.0)) for s in samples]
    return ProbeFeatures(
        agreement=max(votes.values(), default=0) / n,
        entropy=_entropy(outcomes),
        answered=sum(votes.values()) / n,
        mean_logprob=float(np.mean(mlps)),
        verifier=float(np.mean(ver)),
        prompt_tokens=float(prompt_tokens),
        log_length=float(np.mean([math.log1p(s.n_tokens) for s in samples])),
    )


def pool_probe_features(
    answer: np.ndarray, mean_logprob: np.ndarray, score: np.ndarray, prompt_tokens: np.ndarray, probe: np.ndarray,
    n_tokens: np.ndarray | None = None,
) -> np.ndarray:
    """Feature array (P, N, F) for probes drawn from a pool: ``probe`` (P, N, p) holds sample ids.

    Arrays are the pool's: ``answer`` int (P, K) with -1 for no answer, ``mean_logprob`` and
    ``score`` float (P, K), ``prompt_tokens`` (P,), ``n_tokens`` (P, K) generated tokens (zeros if
    not given). Each of the N probes of a problem is one
    possible first ``p`` samples; online the probe is the first ``p`` samples drawn.
    Vectorized: the count of each probe sample's answer within its probe gives agreement
    (max count) and entropy (sum over samples of -log(count / p) / p).
    """
    P, N, p = probe.shape
    a = np.take_along_axis(answer, probe.reshape(P, -1), axis=1).reshape(P, N, p)
    ans = a >= 0
    same = (a[..., :, None] == a[..., None, :]) & ans[..., :, None]
    count = same.sum(axis=-1)  # (P, N, p): votes for this sample's answer (0 if unanswered)
    missing = (~ans).sum(axis=-1)
    ent = np.where(ans, -np.log(np.maximum(count, 1) / p), 0.0).sum(axis=-1) / p
    ent += np.where(missing > 0, -(missing / p) * np.log(np.maximum(missing, 1) / p), 0.0)

    def g(x: np.ndarray) -> np.ndarray:
        return np.take_along_axis(x, probe.reshape(P, -1), axis=1).reshape(P, N, p).mean(axis=-1)

    return np.stack([
        count.max(axis=-1) / p, ent, ans.mean(axis=-1), g(mean_logprob), g(score),
        np.broadcast_to(np.asarray(prompt_tokens, dtype=float)[:, None], (P, N)),
        g(np.log1p(n_tokens)) if n_tokens is not None else np.zeros((P, N)),
    ], axis=-1)


def oracle_pass_rate(correct: np.ndarray) -> np.ndarray:
    """ANALYSIS ONLY: per-problem pass rate over the whole pool (reads the reference answers)."""
    return np.asarray(correct, dtype=float).mean(axis=1)
