"""The replay of every curve over one pool: per-problem expectations of each strategy at each budget.

:class:`Replayer` draws the random orderings of the pool once and gathers what several strategies
read along them once (answers, log-probs, prefix sums of costs), in position-major layout
(:mod:`ttscale.replay.votes`); majority and the weighted votes share one pass, adaptive consistency
reuses majority's winners, and short-m@k votes over its m finishers pairwise. Every estimate is the
one the per-strategy estimators of :mod:`ttscale.replay.estimators` give, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ttscale.errors import ConfigError
from ttscale.replay import estimators as est
from ttscale.replay import votes
from ttscale.replay.pool import Pool
from ttscale.strategies.spec import ReplayRule

if TYPE_CHECKING:
    from ttscale.replay.curves import CurveSpec

_WEIGHTED = ("weighted-majority", "weighted-best-of-n")


@dataclass
class Raw:
    """Per-problem expectations for one strategy at one budget."""

    acc: np.ndarray
    samples: np.ndarray
    gen: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray
    exact: bool


def full_cost(pool: Pool, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Expected per-problem cost of k random samples, all generated to the end."""
    return (np.full(pool.n_problems, float(k)), k * pool.n_tokens.mean(axis=1),
            pool.prefill_tokens + k * pool.sample_tokens.mean(axis=1),
            pool.prefill_flops + k * pool.sample_flops.mean(axis=1))


class Replayer:
    """One pool, its budgets ``ks`` and ``n_orders`` seeded orderings per problem; :meth:`run` replays a
    curve. ``strategies`` (optional) names the curves to come, so votes they share run in one pass."""

    def __init__(self, pool: Pool, ks: list[int], n_orders: int, seed: int,
                 strategies: tuple[CurveSpec, ...] = ()) -> None:
        self.pool = pool
        self.ks = ks
        self.n_orders = n_orders
        orders = est.random_orders(pool.n_problems, pool.k, n_orders, np.random.default_rng(seed))
        P, N, K = orders.shape
        self.rows = P * N
        # Sample index of each position of each ordering, and its flat index into a (P, K) array, both
        # position-major (K, rows).
        self._idx = votes.transposed(orders.reshape(self.rows, K))
        del orders
        self._pos = self._idx + np.repeat(np.arange(P) * K, N)
        self._small = np.int16 if max(K, pool.n_answers) < 2**15 else np.int64  # dtype of ids and ranks
        self._gathered: dict[str, np.ndarray] = {}
        self._sums: dict[str, np.ndarray] = {}
        self._prefix: dict[str | None, np.ndarray] = {}
        self._stops: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self._scores_ahead = tuple(dict.fromkeys(s.score for s in strategies if s.kind in _WEIGHTED))
        self._thresholds_ahead = tuple(dict.fromkeys(s.threshold for s in strategies if s.kind == "adaptive"))
        self._shorts_ahead = sum(s.kind == "short" for s in strategies)

    @property
    def orders(self) -> np.ndarray:
        """The orderings, (P, N, K) sample indices (a view of the position-major copy)."""
        return self._idx.T.reshape(self.pool.n_problems, self.n_orders, self.pool.k)

    # -- shared draws -------------------------------------------------------------------------
    def gathered(self, name: str, values: np.ndarray) -> np.ndarray:
        """``values`` (P, K) along every ordering, (K, rows); cached under ``name``. Integer values
        (answer ids, finish ranks) are kept in a small integer type."""
        if name not in self._gathered:
            if values.dtype.kind in "iu":
                values = values.astype(self._small)
            self._gathered[name] = values.reshape(-1).take(self._pos)
        return self._gathered[name]

    def prefix_sums(self, name: str, values: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Sums of ``values`` over the first k samples of every ordering: (len(ks), rows), one row per
        budget; with ``threshold``, (rows,) over the samples adaptive consistency draws before it stops.
        The sums are ``np.cumsum``'s along each ordering; cached under ``name`` (only the rows read:
        the budgets, and the stopping points of the adaptive curves ahead)."""
        key = name if threshold is None else f"{name}@{threshold!r}"
        if key not in self._sums:
            full = votes.cumsum_rows(values.reshape(-1).take(self._pos))  # (K, rows)
            self._sums[name] = full[np.array(self.ks) - 1]
            for t in {*self._thresholds_ahead, *([] if threshold is None else [threshold])}:
                stop = self.adaptive_stop(t)[0]
                self._sums[f"{name}@{t!r}"] = full[stop - 1, np.arange(self.rows)]
        return self._sums[key]

    def adaptive_stop(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Adaptive consistency's stopping points (rows,) and leaders (rows,; -1 where it never fired),
        :func:`ttscale.replay.votes.adaptive_stop_leader`; cached."""
        if threshold not in self._stops:
            ans = self.gathered("answer", self.pool.answer)
            self._stops[threshold] = votes.adaptive_stop_leader(ans, est.beta_stop_table(self.pool.k, threshold))
        return self._stops[threshold]

    def _shared_prefix_ok(self) -> bool:
        """Whether a vote over all budgets gives bit-identical winners at the resampled budgets to a
        vote over the resampled budgets alone: log-prob sums are accumulated chunk by chunk between
        budgets, and the two chunkings agree when no exact budget precedes the first resampled one, or
        only k = 1 with the first resampled k = 2 (0 + a + b is a + b either way)."""
        res = [k for k in self.ks if not self._exact_ok(k)]
        before = [k for k in self.ks if res and k < res[0]]
        return not before or (before == [1] and res[0] == 2)

    def prefix_winners(self, score: str | None) -> np.ndarray:
        """Winners over the first k samples of each ordering (P, N, len(ks)) of the plain vote
        (``score`` None) or the vote weighted by a stored score; votes wanted by the curves ahead run in
        one pass (they share counts, log-prob sums and first indices)."""
        if score not in self._prefix:
            p = self.pool
            wanted: list[str | None] = [score]
            if self._shared_prefix_ok():
                wanted += [s for s in (None, *self._scores_ahead) if s not in wanted and s not in self._prefix]
            ws = [None if s is None else self._score(s).reshape(-1).take(self._pos) for s in wanted]
            wins = votes.prefix_votes(self.gathered("answer", p.answer), self._idx, self.ks, p.n_answers, ws,
                                      self.gathered("logprob", p.logprob))
            for s, w in zip(wanted, wins, strict=True):
                self._prefix[s] = w.reshape(p.n_problems, self.n_orders, len(self.ks))
        return self._prefix[score]

    def majority_prefix(self) -> np.ndarray:
        """Plain majority winners over the first k samples of each ordering (P, N, len(ks)); shared."""
        return self.prefix_winners(None)

    def _exact_ok(self, k: int) -> bool:
        return est.n_subsets(self.pool.k, k) <= self.n_orders

    def _score(self, name: str) -> np.ndarray:
        if name == "oracle":
            return self.pool.correct.astype(float)
        if name not in self.pool.scores:
            raise ConfigError(f"the pool has no {name!r} scores (has: {', '.join(sorted(self.pool.scores))}); "
                              "sweep with --verifier to store them")
        return self.pool.scores[name]

    # -- curves -------------------------------------------------------------------------------
    def vote(self, answer: np.ndarray, weights: np.ndarray | None, score: str | None = None) -> list[Raw]:
        """Any weighted vote over k random samples, at every budget. ``score`` names ``weights`` when
        they are a stored score over the pool's own answers (its prefix vote is then shared)."""
        pool, out = self.pool, {}
        resampled = [k for k in self.ks if not self._exact_ok(k)]
        if resampled:
            if answer is pool.answer and (weights is None or (score is not None and self._shared_prefix_ok())):
                w = self.prefix_winners(score)[..., [self.ks.index(k) for k in resampled]]
            else:
                ws = None if weights is None else weights.reshape(-1).take(self._pos)
                ans = answer.astype(self._small).reshape(-1).take(self._pos)
                w = votes.prefix_votes(ans, self._idx, resampled, pool.n_answers, [ws],
                                       self.gathered("logprob", pool.logprob))[0]
                w = w.reshape(pool.n_problems, self.n_orders, len(resampled))
            ok = est.winners_correct(pool.answer_correct, w).mean(axis=1)
            for i, k in enumerate(resampled):
                out[k] = (ok[:, i], False)
        for k in self.ks:
            if k not in out:
                combos = est.exact_orders(pool.k, k)
                w = est.vote_winners(answer, combos, [k], pool.n_answers, weights, pool.logprob)
                out[k] = (est.winners_correct(pool.answer_correct, w)[..., 0].mean(axis=1), True)
        return [Raw(out[k][0], *full_cost(pool, k), exact=out[k][1]) for k in self.ks]

    def run(self, spec: CurveSpec) -> list[Raw | None]:
        """One curve at every budget: the rule's vectorized replay where replay has one, else its
        ``aggregate`` applied to each ordering's first k samples."""
        fast = {"pass": self._pass, "best-of-n": self._best_of_n, "majority": self._majority,
                "weighted-majority": self._weighted, "weighted-best-of-n": self._weighted, "rpc": self._rpc,
                "short": self._short, "adaptive": self._adaptive}.get(spec.kind)
        if fast is not None:
            out = fast(spec)
            if spec.kind == "short":
                self._shorts_ahead -= 1
                if self._shorts_ahead == 0:  # only short-m@k reads it
                    self._gathered.pop("finish_rank", None)
            return out
        rule = spec.rule
        if rule.aggregate is None:
            raise ConfigError(f"replay rule {spec.kind!r} has neither a vectorized replay nor an aggregate")
        return self._generic(rule, spec)

    def _pass(self, spec: CurveSpec) -> list[Raw | None]:
        pool = self.pool
        c = pool.correct.sum(axis=1)
        return [Raw(est.pass_at_k(pool.k, c, k), *full_cost(pool, k), exact=True) for k in self.ks]

    def _best_of_n(self, spec: CurveSpec) -> list[Raw | None]:
        pool = self.pool
        s = self._score(spec.score)
        accs = est.best_of_n_exact_many(pool.answer, pool.correct, s, self.ks)
        return [Raw(acc, *full_cost(pool, k), exact=True) for acc, k in zip(accs, self.ks, strict=True)]

    def _majority(self, spec: CurveSpec) -> list[Raw | None]:
        return list(self.vote(self.pool.answer, None))

    def _weighted(self, spec: CurveSpec) -> list[Raw | None]:
        return list(self.vote(self.pool.answer, self._score(spec.score), spec.score))

    def _rpc(self, spec: CurveSpec) -> list[Raw | None]:
        pool = self.pool
        mlp = pool.mean_logprob
        cut = np.quantile(mlp, spec.prune, axis=1, keepdims=True) if spec.prune > 0 else np.full((pool.n_problems, 1), -np.inf)
        answer = np.where(mlp >= cut, pool.answer, -1)
        # Sequence probability, rescaled per problem so it never underflows (argmax is unchanged).
        w = np.exp(pool.logprob - pool.logprob.max(axis=1, keepdims=True))
        return list(self.vote(answer, w))

    def _generic(self, rule: ReplayRule, spec: CurveSpec) -> list[Raw | None]:
        """Any rule over drawn samples, applied to the first k samples of every ordering (answers are the
        pool's equivalence groups, so the rule needs no task)."""
        assert rule.aggregate is not None
        pool, P = self.pool, self.pool.n_problems
        scores = self._score(spec.score) if rule.weighs != "none" else None
        out: list[Raw | None] = []
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
            out.append(Raw(acc, *full_cost(pool, k), exact=False))
        return out

    def _short(self, spec: CurveSpec) -> list[Raw | None]:
        pool, P = self.pool, self.pool.n_problems
        out: list[Raw | None] = [None] * len(self.ks)
        valid = [k for k in self.ks if k >= spec.m]
        groups = [([k], True) for k in valid if self._exact_ok(k)]
        resampled = [k for k in valid if not self._exact_ok(k)]
        if resampled:
            groups.append((resampled, False))
        for ks, exact in groups:
            if exact:
                order = est.exact_orders(pool.k, ks[0])
                order = np.broadcast_to(order, (P, *order.shape))
                chosen, gen = est.short_m_choice(pool.finish_rank, pool.n_tokens, order, ks, spec.m)
                cum = {n: np.cumsum(est._gather(v, order), axis=-1) for n, v in (
                    ("tok", pool.n_tokens), ("fl", pool.sample_flops), ("extra", pool.sample_tokens - pool.n_tokens))}
                at = {n: [c[..., k - 1] for k in ks] for n, c in cum.items()}
            else:
                chosen, gen = est.short_m_choice(
                    pool.finish_rank, pool.n_tokens, self.orders, ks, spec.m,
                    ranks=self.gathered("finish_rank", pool.finish_rank))
                sums = {"tok": self.prefix_sums("n_tokens", pool.n_tokens),
                        "fl": self.prefix_sums("sample_flops", pool.sample_flops),
                        "extra": self.prefix_sums("extra_tokens", pool.sample_tokens - pool.n_tokens)}
                at = {n: [c[self.ks.index(k)].reshape(P, self.n_orders) for k in ks] for n, c in sums.items()}
            base = (np.arange(P) * pool.k)[:, None, None]
            for i, k in enumerate(ks):
                # the vote over the m finishers
                ids = chosen[:, :, i]
                flat = ids + base
                won = votes.small_vote(pool.answer.reshape(-1).take(flat), ids, pool.logprob.reshape(-1).take(flat))
                acc = est.winners_correct(pool.answer_correct, won).mean(axis=1)
                # Truncated samples: FLOPs pro rata to the tokens they got; per-sample prefill in full.
                full = at["tok"][i]
                frac = np.where(full > 0, gen[:, :, i] / np.maximum(full, 1), 1.0)
                fl = (at["fl"][i] * frac).mean(1)
                extra = at["extra"][i].mean(1)
                g = gen[:, :, i].mean(axis=1)
                out[self.ks.index(k)] = Raw(acc, np.full(P, float(k)), g, pool.prefill_tokens + g + extra,
                                            pool.prefill_flops + fl, exact)
        return out

    def _adaptive(self, spec: CurveSpec) -> list[Raw | None]:
        pool, P, N = self.pool, self.pool.n_problems, self.n_orders
        # With budget k the rule draws min(stop, k) samples: rows that stopped by k keep the
        # vote at their stopping point, the others are a plain majority over the first k.
        stop, leader = self.adaptive_stop(spec.threshold)
        # Where the rule fired, its leader has the strictly largest count, so the vote at the stopping
        # point elects it; elsewhere all K samples were drawn: vote over them.
        w_stop = leader.copy()
        never = np.flatnonzero(leader < 0)
        if never.size:
            w_stop[never] = votes.prefix_votes(
                self.gathered("answer", pool.answer)[:, never], self._idx[:, never], [pool.k], pool.n_answers,
                lp=self.gathered("logprob", pool.logprob)[:, never])[0][:, 0]
        w_stop = w_stop.reshape(P, N)
        stop2 = stop.reshape(P, N)
        w_k = self.majority_prefix()
        # costs of the first min(stop, k) samples, as (P, len(ks), N)
        costs = []
        for n, v in (("n_tokens", pool.n_tokens), ("sample_tokens", pool.sample_tokens),
                     ("sample_flops", pool.sample_flops)):
            at_stop = self.prefix_sums(n, v, spec.threshold).reshape(P, N)
            at_k = self.prefix_sums(n, v)
            costs.append(np.stack([np.where(stop2 < k, at_stop, at_k[i].reshape(P, N)) for i, k in enumerate(self.ks)],
                                  axis=1).mean(2))
        lengths = np.stack([np.minimum(stop2, k) for k in self.ks], axis=1)  # (P, nk, N)
        n_drawn = lengths.mean(2).astype(float)
        out: list[Raw | None] = []
        for i, k in enumerate(self.ks):
            if k == 1:  # one draw, no rule to apply: exactly a single random sample
                out.append(Raw(pool.correct.mean(axis=1), *full_cost(pool, 1), exact=True))
                continue
            w = np.where(stop2 <= k, w_stop, w_k[..., i])
            acc = est.winners_correct(pool.answer_correct, w).mean(axis=1)
            out.append(Raw(acc, n_drawn[:, i], costs[0][:, i], pool.prefill_tokens + costs[1][:, i],
                           pool.prefill_flops + costs[2][:, i], exact=False))
        return out
