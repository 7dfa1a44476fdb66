"""What a policy can choose after its probe, and what each choice is worth on a pool.

A *choice* is an aggregation rule and a total sample count ``k >= p``: the ``p`` probe samples
are kept and ``k - p`` more are drawn, then the ``k`` are aggregated (majority vote, certainty-
weighted vote, or best-of-N by certainty). ``k == p`` means "stop after the probe".
A choice may instead name another ``model``: after the probe (made with the primary model,
its cost paid), ``k`` fresh samples of that model are aggregated and the probe is set aside.

:func:`replay_options` estimates, for every problem of a pool and every choice, the expected
accuracy and tokens by replay: the probe is the problem's first ``p`` samples (as online, where
the probe is drawn first), the extra samples are random orderings of the rest of the pool.
Votes use replay's estimators (:mod:`ttscale.replay.estimators`) and the voting tie rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.planner.data import PlanPool
from ttscale.planner.features import certainty
from ttscale.replay import estimators as est
from ttscale.replay.curves import replay_rules
from ttscale.replay.pool import Pool
from ttscale.strategies.best_of_n import best_scored
from ttscale.strategies.spec import Equivalence, ReplayRule
from ttscale.strategies.voting import majority, weighted_majority
from ttscale.types import Sample


def plan_rules() -> dict[str, ReplayRule]:
    """The rules a policy may choose after its probe, by kind: every strategy record's rule marked
    ``plannable`` (built-ins: majority, weighted-majority, best-of-n by certainty; plugins too)."""
    rules = [r for r in replay_rules().values() if r.plannable and r.aggregate is not None]
    # Simplest first (unweighted, then weighted by certainty, then by a score): equal choices resolve to it.
    simplicity = {"none": 0, "certainty": 1, "score": 2}
    return {r.kind: r for r in sorted(rules, key=lambda r: simplicity[r.weighs])}


def choice_kinds() -> tuple[str, ...]:
    return tuple(plan_rules())


@dataclass(frozen=True)
class Choice:
    kind: str
    k: int
    score: str = "certainty"
    """Score used by weighted-majority and best-of-n (the free certainty score)."""
    model: str | None = None
    """Another model to switch to after the probe (None: the primary model, probe kept)."""

    def __post_init__(self) -> None:
        if self.kind not in plan_rules():
            raise ConfigError(f"unknown choice kind {self.kind!r}; available: {', '.join(choice_kinds())}")
        if self.k < 1:
            raise ConfigError(f"a choice needs k >= 1, got {self.k}")
        if self.score != "certainty":
            raise ConfigError(f"only the free 'certainty' score can be applied online, got {self.score!r}")

    @property
    def label(self) -> str:
        return f"{self.model}:{self.kind}@{self.k}" if self.model else f"{self.kind}@{self.k}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Choice:
        model = d.get("model")
        return cls(kind=str(d["kind"]), k=int(d["k"]), score=str(d.get("score", "certainty")),
                   model=str(model) if model else None)


def option_grid(p: int, K: int, kinds: Sequence[str] | None = None) -> list[Choice]:
    """Every kind at every k from the probe size ``p`` up to the pool's ``K`` (log-spaced past 16)."""
    if not 1 <= p <= K:
        raise ConfigError(f"probe size must be in 1..{K} (the pool's samples per problem), got {p}")
    ks = sorted({k for k in range(p, K + 1) if k <= 16 or k == K or (k & (k - 1)) == 0 or k % 8 == 0})
    return [Choice(kind, k) for kind in kinds or choice_kinds() for k in ks]


def alternate_grid(model: str, K: int, kinds: Sequence[str] | None = None) -> list[Choice]:
    """Every kind at every k from 1 to ``K`` (log-spaced past 16) on another model."""
    ks = sorted({k for k in range(1, K + 1) if k <= 16 or k == K or (k & (k - 1)) == 0 or k % 8 == 0})
    return [Choice(kind, k, model=model) for kind in kinds or choice_kinds() for k in ks]


@dataclass
class OptionTable:
    choices: list[Choice]
    order: np.ndarray
    """(P, N, K) sample orders replayed; the probe of ordering n is ``order[:, n, :p]``."""
    acc: np.ndarray
    """(P, N, O) accuracy of each choice on each problem under each ordering."""
    tokens: np.ndarray
    """(P, N, O) processed tokens (prefill once + every drawn sample)."""

    def index(self, choice: Choice) -> int:
        return self.choices.index(choice)


def _rule_outcomes(pool: Pool, order: np.ndarray, kind: str, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """(P, N) correctness of rule ``kind`` over the first k samples of each ordering, for each k."""
    P = pool.n_problems
    rule = plan_rules()[kind]
    weights = pool.scores["certainty"] if rule.weighs != "none" else None
    if rule.aggregate is best_scored:
        assert weights is not None
        sg = est._gather(np.where(pool.answer >= 0, weights, -np.inf), order)
        by_k = {}
        for k in ks:
            j = np.argmax(sg[..., :k], axis=-1)  # first best position (online: lowest index; same up to exact ties)
            win = np.take_along_axis(order, j[..., None], axis=-1)[..., 0]
            ok = np.take_along_axis(pool.correct, win.reshape(P, -1), axis=1).reshape(win.shape)
            by_k[k] = ok.astype(float)
        return by_k
    if rule.aggregate in (majority, weighted_majority):
        w = est.vote_winners(pool.answer, order, list(ks), pool.n_answers, weights, pool.logprob)
        ok = est.winners_correct(pool.answer_correct, w).astype(float)  # (P, N, len(ks))
        return {k: ok[..., i] for i, k in enumerate(ks)}
    return {k: _generic_outcomes(pool, order, rule, k, weights) for k in ks}


def _generic_outcomes(pool: Pool, order: np.ndarray, rule: ReplayRule, k: int, weights: np.ndarray | None) -> np.ndarray:
    """A plugin's rule, applied to the first k samples of every ordering (answers: the pool's groups)."""
    assert rule.aggregate is not None
    P, N = order.shape[0], order.shape[1]
    out = np.zeros((P, N))
    for p in range(P):
        for n in range(N):
            idx = order[p, n, :k]
            answer, _ = rule.aggregate(pool.drawn(p, idx),
                                       None if weights is None else [float(weights[p, j]) for j in idx], None)
            out[p, n] = pool.answer_is_correct(p, answer)
    return out


def replay_options(pp: PlanPool, p: int, choices: Sequence[Choice], *, n_orders: int = 64, seed: int = 0) -> OptionTable:
    """Every choice on every problem under ``n_orders`` random orderings of its samples.

    Under ordering n the probe is its first ``p`` samples and choice (rule, k) aggregates its
    first k, so a choice always contains the probe, as online. Averaging over orderings is the
    expectation over which i.i.d. samples the probe happened to draw. A choice on another model
    pays the probe, then that model's prompt and its first k samples under an independent ordering.
    """
    pool = pp.pool
    P, K = pool.n_problems, pool.k
    if any(c.k > K or (c.model is None and c.k < p) for c in choices):
        raise ConfigError(f"choices need {p} <= k <= {K} (k <= {K} on another model)")
    missing = sorted({c.model for c in choices if c.model is not None and c.model not in pp.alts})
    if missing:
        raise ConfigError(f"choices use model(s) {', '.join(missing)} but no pool of theirs is attached "
                          f"(have: {', '.join(pp.alts) or 'none'})")
    rng = np.random.default_rng(seed)
    order = est.random_orders(P, K, n_orders, rng)
    acc = np.zeros((P, n_orders, len(choices)))
    tokens = np.zeros((P, n_orders, len(choices)))
    cum = np.cumsum(est._gather(pool.sample_tokens, order), axis=-1)  # (P, N, K)
    probe_cost = pool.prefill_tokens[:, None] + cum[..., p - 1]
    for model in dict.fromkeys(c.model for c in choices):
        src = pool if model is None else pp.alts[model].pool
        o = order if model is None else est.random_orders(P, K, n_orders, rng)
        c_cum = cum if model is None else np.cumsum(est._gather(src.sample_tokens, o), axis=-1)
        for kind in choice_kinds():
            idx = [i for i, c in enumerate(choices) if c.kind == kind and c.model == model]
            if not idx:
                continue
            by_k = _rule_outcomes(src, o, kind, sorted({choices[i].k for i in idx}))
            for i in idx:
                k = choices[i].k
                acc[..., i] = by_k[k]
                tokens[..., i] = (pool.prefill_tokens[:, None] + cum[..., k - 1] if model is None
                                  else probe_cost + src.prefill_tokens[:, None] + c_cum[..., k - 1])
    return OptionTable(list(choices), order, acc, tokens)


def aggregate(choice: Choice, samples: Sequence[Sample],
              equivalent: Equivalence | None = None) -> tuple[str | None, dict[str, float]]:
    """Apply a choice's rule to drawn samples (online): the strategy record's own ``aggregate``, with
    certainty scores where it weighs samples, and the task's answer equivalence (replay grouped the
    pool's answers by it: ``"1/2"`` and ``"0.5"`` are one answer), so online equals replay."""
    rule = plan_rules()[choice.kind]
    assert rule.aggregate is not None
    scores = [certainty(s) for s in samples] if rule.weighs != "none" else None
    return rule.aggregate(samples, scores, equivalent)
