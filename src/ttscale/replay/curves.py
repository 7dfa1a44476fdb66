"""Accuracy-vs-compute curves for every strategy at every budget, from one pool.

A budget is ``k``, the number of samples a strategy may draw. Each curve point
carries the expected accuracy over problems (exact or resampled, see
:mod:`ttscale.replay.estimators`), a bootstrap confidence interval across
problems, and the expected cost per problem: generated tokens, total tokens
(prompt prefill counted once per problem when the engine shares it) and FLOPs.
Early-stopping strategies (short-m@k, adaptive consistency) are charged what
they would actually have generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.registry import strategy_specs
from ttscale.replay import estimators as est
from ttscale.replay.pool import Pool
from ttscale.strategies.spec import ReplayRule

# Replay's own kinds, beside the rules the strategy records declare: coverage (pass@k, an oracle
# bound, not a strategy) and RPC (a reweighted vote replay offers without a live twin).
_OWN_RULES = (
    ReplayRule("pass", curves=(("pass@k", {}),)),
    ReplayRule("rpc", options=("prune",), curves=(("rpc", {}),)),
)
_LEGACY_KINDS = {"bon": "best-of-n", "weighted-bon": "weighted-best-of-n"}
"""Kind names of earlier versions, still accepted by :func:`parse_strategy`."""


def replay_rules() -> dict[str, ReplayRule]:
    """Every replayable rule by kind: pass@k, those the strategy records declare (plugins included),
    then RPC. Adding a strategy with a ``replay`` rule adds its curves here, and nothing else."""
    rules = {_OWN_RULES[0].kind: _OWN_RULES[0]}
    for spec in strategy_specs().values():
        for rule in spec.replay:
            rules.setdefault(rule.kind, rule)
    rules.setdefault(_OWN_RULES[1].kind, _OWN_RULES[1])
    return rules


@dataclass(frozen=True)
class CurveSpec:
    """One replayed curve: a rule (``kind``) with its options. ``name`` labels the curve."""

    name: str
    kind: str
    score: str = "certainty"
    """Score a weighing rule reads (best-of-n, weighted-majority, weighted-best-of-n): a stored verifier's
    name, ``certainty``, or ``oracle``."""
    m: int = 1
    """short-m@k: vote over the first m samples to finish."""
    threshold: float = 0.95
    """adaptive consistency: stop when P(leader is the mode) reaches this."""
    prune: float = 0.1
    """rpc: drop the samples whose mean token log-prob is in this lowest fraction of the problem's pool."""

    def __post_init__(self) -> None:
        rules = replay_rules()
        if self.kind not in rules:
            raise ConfigError(f"unknown replay strategy kind {self.kind!r}; available: {', '.join(rules)}")
        if self.m < 1:
            raise ConfigError(f"short-m@k needs m >= 1, got {self.m}")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"adaptive threshold must be in (0, 1), got {self.threshold}")
        if not 0 <= self.prune < 1:
            raise ConfigError(f"rpc prune fraction must be in [0, 1), got {self.prune}")

    @property
    def rule(self) -> ReplayRule:
        return replay_rules()[self.kind]

    @property
    def oracle(self) -> bool:
        """True when the curve reads reference answers (an upper bound, not a deployable strategy)."""
        return self.kind == "pass" or (self.rule.weighs != "none" and self.score == "oracle")


def strategy_curves() -> tuple[CurveSpec, ...]:
    """The default curves of the strategy records' rules alone (deployable strategies, majority first)."""
    own = {r.kind for r in _OWN_RULES}
    curves = [CurveSpec(label, rule.kind, **opts) for rule in replay_rules().values() if rule.kind not in own
              for label, opts in rule.curves]
    return tuple(sorted(curves, key=lambda c: c.kind != "majority"))


def default_curves() -> tuple[CurveSpec, ...]:
    """The curves every rule declares as its defaults (pass@k, majority, best-of-n by certainty, ...)."""
    rules = replay_rules()
    pass_k = tuple(CurveSpec(label, "pass", **opts) for label, opts in rules["pass"].curves)
    rpc = tuple(CurveSpec(label, "rpc", **opts) for label, opts in rules["rpc"].curves)
    return pass_k + strategy_curves() + rpc


def parse_strategy(text: str) -> CurveSpec:
    """``kind[:key=value,...]``, e.g. ``short:m=3``, ``best-of-n:score=oracle``, ``adaptive:threshold=0.9``."""
    kind, _, rest = text.partition(":")
    kind = _LEGACY_KINDS.get(kind, kind)
    kw: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq or key not in ("score", "m", "threshold", "prune"):
            raise ConfigError(f"bad strategy option {part!r} in {text!r} (options: score, m, threshold, prune)")
        try:
            kw[key] = int(value) if key == "m" else float(value) if key in ("threshold", "prune") else value
        except ValueError as e:
            raise ConfigError(f"bad value for {key} in {text!r}: {value!r}") from e
    name = {"pass": "pass@k", "short": f"short-{kw.get('m', 1)}"}.get(kind, kind)
    if "score" in kw and kind in replay_rules() and replay_rules()[kind].weighs != "none":
        name += f"[{kw['score']}]"
    return CurveSpec(name, kind, **kw)


def default_budgets(K: int, n: int = 12) -> list[int]:
    """About ``n`` budgets from 1 to K, spaced evenly on a log scale."""
    ks = sorted({max(1, min(K, round(K ** (i / (n - 1))))) for i in range(n)} | {1, K}) if n > 1 else [K]
    return ks


@dataclass
class CurvePoint:
    strategy: str
    k: int
    accuracy: float
    ci_low: float
    ci_high: float
    samples: float
    """Samples generated per problem (below k for early-stopping strategies)."""
    generated_tokens: float
    total_tokens: float
    flops: float
    exact: bool
    """Exact expectation over all k-subsets (else resampled)."""
    oracle: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Curves:
    points: list[CurvePoint]
    pool: dict[str, Any]
    settings: dict[str, Any]
    per_problem: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Strategy name -> (P, n_budgets) expected accuracy per problem (NaN where undefined)."""

    def curve(self, strategy: str) -> list[CurvePoint]:
        return [p for p in self.points if p.strategy == strategy]

    @property
    def strategies(self) -> list[str]:
        return list(dict.fromkeys(p.strategy for p in self.points))

    def to_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "settings": self.settings, "points": [p.to_dict() for p in self.points]}


@dataclass
class _Raw:
    """Per-problem expectations for one strategy at one budget."""

    acc: np.ndarray
    samples: np.ndarray
    gen: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray
    exact: bool


def _full_cost(pool: Pool, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Expected per-problem cost of k random samples, all generated to the end."""
    return (np.full(pool.n_problems, float(k)), k * pool.n_tokens.mean(axis=1),
            pool.prefill_tokens + k * pool.sample_tokens.mean(axis=1),
            pool.prefill_flops + k * pool.sample_flops.mean(axis=1))


def _prefix_cost(pool: Pool, order: np.ndarray, lengths: np.ndarray, per: int) -> tuple[np.ndarray, ...]:
    """Mean cost of drawing the first ``lengths`` samples of orderings (P, N, K).

    ``lengths`` is (P, per * N): ``per`` budgets, N orderings each. Returns arrays (P, per).
    """
    P, N, K = order.shape
    rows = np.tile(np.arange(N), per) + np.arange(P)[:, None] * N  # (P, per*N) ordering row ids
    flat = rows * K + (lengths - 1)
    out = [lengths.reshape(P, per, N).mean(2).astype(float)]
    for values in (pool.n_tokens, pool.sample_tokens, pool.sample_flops):
        cum = np.cumsum(est._gather(values, order), axis=-1)
        out.append(cum.reshape(-1)[flat].reshape(P, per, N).mean(2))
    return out[0], out[1], pool.prefill_tokens[:, None] + out[2], pool.prefill_flops[:, None] + out[3]


class _Replayer:
    def __init__(self, pool: Pool, ks: list[int], n_orders: int, seed: int) -> None:
        self.pool = pool
        self.ks = ks
        self.n_orders = n_orders
        self.orders = est.random_orders(pool.n_problems, pool.k, n_orders, np.random.default_rng(seed))
        self._majority_prefix: np.ndarray | None = None

    def majority_prefix(self) -> np.ndarray:
        """Plain majority winners over the first k samples of each ordering (P, N, len(ks)); shared."""
        if self._majority_prefix is None:
            p = self.pool
            self._majority_prefix = est.vote_winners(p.answer, self.orders, self.ks, p.n_answers, None, p.logprob)
        return self._majority_prefix

    def _exact_ok(self, k: int) -> bool:
        return est.n_subsets(self.pool.k, k) <= self.n_orders

    def _score(self, name: str) -> np.ndarray:
        if name == "oracle":
            return self.pool.correct.astype(float)
        if name not in self.pool.scores:
            raise ConfigError(f"the pool has no {name!r} scores (has: {', '.join(sorted(self.pool.scores))}); "
                              "sweep with --verifier to store them")
        return self.pool.scores[name]

    def vote(self, answer: np.ndarray, weights: np.ndarray | None) -> list[_Raw]:
        """Any weighted vote over k random samples, at every budget."""
        pool, out = self.pool, {}
        lp = pool.logprob
        resampled = [k for k in self.ks if not self._exact_ok(k)]
        if resampled and answer is pool.answer and weights is None:
            w = self.majority_prefix()[..., [self.ks.index(k) for k in resampled]]
            ok = est.winners_correct(pool.answer_correct, w).mean(axis=1)
            for i, k in enumerate(resampled):
                out[k] = (ok[:, i], False)
        elif resampled:
            w = est.vote_winners(answer, self.orders, resampled, pool.n_answers, weights, lp)
            ok = est.winners_correct(pool.answer_correct, w).mean(axis=1)
            for i, k in enumerate(resampled):
                out[k] = (ok[:, i], False)
        for k in self.ks:
            if k not in out:
                combos = est.exact_orders(pool.k, k)
                w = est.vote_winners(answer, combos, [k], pool.n_answers, weights, lp)
                out[k] = (est.winners_correct(pool.answer_correct, w)[..., 0].mean(axis=1), True)
        return [_Raw(out[k][0], *_full_cost(pool, k), exact=out[k][1]) for k in self.ks]

    def run(self, spec: CurveSpec) -> list[_Raw | None]:
        """One curve at every budget: the rule's vectorized replay where replay has one, else its
        ``aggregate`` applied to each ordering's first k samples."""
        fast = {"pass": self._pass, "best-of-n": self._best_of_n, "majority": self._majority,
                "weighted-majority": self._weighted, "weighted-best-of-n": self._weighted, "rpc": self._rpc,
                "short": self._short, "adaptive": self._adaptive}.get(spec.kind)
        if fast is not None:
            return fast(spec)
        rule = spec.rule
        if rule.aggregate is None:
            raise ConfigError(f"replay rule {spec.kind!r} has neither a vectorized replay nor an aggregate")
        return self._generic(rule, spec)

    def _pass(self, spec: CurveSpec) -> list[_Raw | None]:
        pool = self.pool
        c = pool.correct.sum(axis=1)
        return [_Raw(est.pass_at_k(pool.k, c, k), *_full_cost(pool, k), exact=True) for k in self.ks]

    def _best_of_n(self, spec: CurveSpec) -> list[_Raw | None]:
        pool = self.pool
        s = self._score(spec.score)
        return [_Raw(est.best_of_n_exact(pool.answer, pool.correct, s, k), *_full_cost(pool, k), exact=True)
                for k in self.ks]

    def _majority(self, spec: CurveSpec) -> list[_Raw | None]:
        return list(self.vote(self.pool.answer, None))

    def _weighted(self, spec: CurveSpec) -> list[_Raw | None]:
        return list(self.vote(self.pool.answer, self._score(spec.score)))

    def _rpc(self, spec: CurveSpec) -> list[_Raw | None]:
        pool = self.pool
        mlp = pool.mean_logprob
        cut = np.quantile(mlp, spec.prune, axis=1, keepdims=True) if spec.prune > 0 else np.full((pool.n_problems, 1), -np.inf)
        answer = np.where(mlp >= cut, pool.answer, -1)
        # Sequence probability, rescaled per problem so it never underflows (argmax is unchanged).
        w = np.exp(pool.logprob - pool.logprob.max(axis=1, keepdims=True))
        return list(self.vote(answer, w))

    def _generic(self, rule: ReplayRule, spec: CurveSpec) -> list[_Raw | None]:
        """Any rule over drawn samples, applied to the first k samples of every ordering (answers are the
        pool's equivalence groups, so the rule needs no task)."""
        assert rule.aggregate is not None
        pool, P = self.pool, self.pool.n_problems
        scores = self._score(spec.score) if rule.weighs != "none" else None
        out: list[_Raw | None] = []
        for k in self.ks:
            acc = np.zeros(P)
            for p in range(P):
                hits = 0
                for row in self.orders[p]:
                    idx = row[:k]
                    answer, _ = rule.aggregate(pool.drawn(p, idx),
                                               None if scores is None else [float(scores[p, j]) for j in idx], None)
                    hits += pool.answer_is_correct(p, answer)
                acc[p] = hits / len(self.orders[p])
            out.append(_Raw(acc, *_full_cost(pool, k), exact=False))
        return out

    def _short(self, spec: CurveSpec) -> list[_Raw | None]:
        pool = self.pool
        out: list[_Raw | None] = [None] * len(self.ks)
        valid = [k for k in self.ks if k >= spec.m]
        groups = [([k], True) for k in valid if self._exact_ok(k)]
        resampled = [k for k in valid if not self._exact_ok(k)]
        if resampled:
            groups.append((resampled, False))
        for ks, exact in groups:
            order = est.exact_orders(pool.k, ks[0]) if exact else self.orders
            order = np.broadcast_to(order, (pool.n_problems, *order.shape[-2:]))
            chosen, gen = est.short_m_choice(pool.finish_rank, pool.n_tokens, order, ks, spec.m)
            # prefix sums over each ordering: full-length tokens, FLOPs and per-sample prefill of the first k
            cum = {n: np.cumsum(est._gather(v, order), axis=-1) for n, v in (
                ("tok", pool.n_tokens), ("fl", pool.sample_flops), ("extra", pool.sample_tokens - pool.n_tokens))}
            for i, k in enumerate(ks):
                w = est.vote_winners(pool.answer, chosen[:, :, i], [spec.m], pool.n_answers, None, pool.logprob)
                acc = est.winners_correct(pool.answer_correct, w)[..., 0].mean(axis=1)
                # Truncated samples: FLOPs pro rata to the tokens they got; per-sample prefill in full.
                full = cum["tok"][..., k - 1]
                frac = np.where(full > 0, gen[:, :, i] / np.maximum(full, 1), 1.0)
                fl = (cum["fl"][..., k - 1] * frac).mean(1)
                extra = cum["extra"][..., k - 1].mean(1)
                g = gen[:, :, i].mean(axis=1)
                out[self.ks.index(k)] = _Raw(acc, np.full(pool.n_problems, float(k)), g,
                                             pool.prefill_tokens + g + extra, pool.prefill_flops + fl, exact)
        return out

    def _adaptive(self, spec: CurveSpec) -> list[_Raw | None]:
        pool = self.pool
        # With budget k the rule draws min(stop, k) samples: rows that stopped by k keep the
        # vote at their stopping point, the others are a plain majority over the first k.
        stop = est.adaptive_stop(pool.answer, self.orders, spec.threshold)
        at_stop = np.where(np.arange(pool.k) < stop[..., None], self.orders, -1)
        w_stop = est.vote_winners(pool.answer, at_stop, [pool.k], pool.n_answers, None, pool.logprob)[..., 0]
        w_k = self.majority_prefix()
        lengths = np.stack([np.minimum(stop, k) for k in self.ks], axis=1)  # (P, nk, N)
        costs = _prefix_cost(pool, self.orders, lengths.reshape(pool.n_problems, -1), per=len(self.ks))
        out: list[_Raw | None] = []
        for i, k in enumerate(self.ks):
            if k == 1:  # one draw, no rule to apply: exactly a single random sample
                out.append(_Raw(pool.correct.mean(axis=1), *_full_cost(pool, 1), exact=True))
                continue
            w = np.where(stop <= k, w_stop, w_k[..., i])
            acc = est.winners_correct(pool.answer_correct, w).mean(axis=1)
            n, gen, tok, fl = (c[:, i] for c in costs)
            out.append(_Raw(acc, n, gen, tok, fl, exact=False))
        return out


def compute_curves(
    pool: Pool,
    strategies: Sequence[CurveSpec] | None = None,
    budgets: list[int] | None = None,
    *,
    n_orders: int = 64,
    n_bootstrap: int = 200,
    ci: float = 0.95,
    seed: int = 0,
) -> Curves:
    """Every strategy at every budget, with bootstrap CIs across problems.

    ``n_orders`` random orderings per problem drive the resampled estimates (a
    budget whose C(K, k) is at most ``n_orders`` is enumerated exactly instead).
    """
    ks = sorted(set(budgets or default_budgets(pool.k)))
    if not ks or ks[0] < 1 or ks[-1] > pool.k:
        raise ConfigError(f"budgets must lie in 1..{pool.k} (the pool's samples per problem), got {ks}")
    if n_orders < 1 or n_bootstrap < 1 or not 0 < ci < 1:
        raise ConfigError("n_orders and n_bootstrap must be >= 1 and ci in (0, 1)")
    strategies = list(default_curves() if strategies is None else strategies)
    names = [s.name for s in strategies]
    if len(set(names)) != len(names):
        raise ConfigError(f"strategy names must be unique, got {names}")
    rep = _Replayer(pool, ks, n_orders, seed)
    raws = {s.name: rep.run(s) for s in strategies}

    # One bootstrap for everything: resample problems with replacement, as counts (B, P).
    rng = np.random.default_rng(seed + 1)
    P = pool.n_problems
    counts = np.stack([np.bincount(rng.integers(0, P, P), minlength=P) for _ in range(n_bootstrap)]).astype(float)
    per_problem = {n: np.stack([r.acc if r is not None else np.full(P, np.nan) for r in raws[n]], axis=1) for n in names}
    stacked = np.concatenate([per_problem[n] for n in names], axis=1)
    boot = counts @ np.nan_to_num(stacked) / P  # (B, S * nk)
    lo_q, hi_q = (1 - ci) / 2, 1 - (1 - ci) / 2
    lo, hi = np.quantile(boot, lo_q, axis=0), np.quantile(boot, hi_q, axis=0)

    points: list[CurvePoint] = []
    for si, spec in enumerate(strategies):
        for ki, k in enumerate(ks):
            r = raws[spec.name][ki]
            if r is None:
                continue
            j = si * len(ks) + ki
            points.append(CurvePoint(
                spec.name, k, float(r.acc.mean()), float(lo[j]), float(hi[j]), float(r.samples.mean()),
                float(r.gen.mean()), float(r.tokens.mean()), float(r.flops.mean()), r.exact, spec.oracle,
            ))
    settings = {"budgets": ks, "n_orders": n_orders, "n_bootstrap": n_bootstrap, "ci": ci, "seed": seed,
                "strategies": [asdict(s) for s in strategies]}
    return Curves(points, pool.summary(), settings, per_problem)
