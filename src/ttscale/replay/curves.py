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
from ttscale.replay.pool import Pool
from ttscale.replay.replayer import Replayer
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


def family_draw_counts(families: Sequence[str], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, P): how often each problem is counted when whole families are drawn with replacement
    (a cluster bootstrap; variants of one question are not independent evidence)."""
    names, of = np.unique(np.asarray(families), return_inverse=True)
    F = len(names)
    drawn = np.stack([np.bincount(rng.integers(0, F, F), minlength=F) for _ in range(n_boot)])
    return drawn[:, of].astype(float)


def compute_curves(
    pool: Pool,
    strategies: Sequence[CurveSpec] | None = None,
    budgets: list[int] | None = None,
    *,
    n_orders: int = 64,
    n_bootstrap: int = 200,
    ci: float = 0.95,
    seed: int = 0,
    families: Sequence[str] | None = None,
) -> Curves:
    """Every strategy at every budget, with bootstrap CIs across problems.

    ``n_orders`` random orderings per problem drive the resampled estimates (a
    budget whose C(K, k) is at most ``n_orders`` is enumerated exactly instead).
    ``families`` (one per problem) that group problems make the bootstrap draw whole families
    (variants of one question, e.g. GSM-Symbolic instances of one template).
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
    rep = Replayer(pool, ks, n_orders, seed, tuple(strategies))
    raws = {s.name: rep.run(s) for s in strategies}

    # One bootstrap for everything: resample problems with replacement, as counts (B, P).
    rng = np.random.default_rng(seed + 1)
    P = pool.n_problems
    if families is not None and len(families) != P:
        raise ConfigError(f"one family per problem: {len(families)} for {P} problems")
    if families is not None and len(set(families)) < P:
        counts = family_draw_counts(families, n_bootstrap, rng)
    else:
        counts = np.stack([np.bincount(rng.integers(0, P, P), minlength=P) for _ in range(n_bootstrap)]).astype(float)
    per_problem = {n: np.stack([r.acc if r is not None else np.full(P, np.nan) for r in raws[n]], axis=1) for n in names}
    stacked = np.concatenate([per_problem[n] for n in names], axis=1)
    boot = counts @ np.nan_to_num(stacked) / counts.sum(axis=1, keepdims=True)  # (B, S * nk)
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
