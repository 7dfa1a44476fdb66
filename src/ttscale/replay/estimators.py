"""Vectorized estimators of what a strategy would score with k samples drawn from a pool.

Every estimator returns a per-problem expectation over random k-subsets of the
problem's K stored samples. Two ways to take that expectation share one code
path (:func:`vote_winners`):

- exact: enumerate all C(K, k) subsets (used when that is no more work than
  resampling: k = 1, k = K, or small pools);
- resampled: R random orderings of the pool per problem (seeded); the first k
  samples of an ordering are a uniform random k-subset for every k at once,
  so one pass over the orderings gives every budget.

pass@k and best-of-N@k have closed forms and are always exact.

Vote tie rule, identical to :func:`ttscale.strategies.voting.weighted_vote`:
larger vote mass wins, then larger summed log-prob of the answer's samples,
then the answer whose earliest sample has the lowest index. Samples without an
answer cast no vote; no answer at all counts as wrong.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.special import betainc, gammaln

from ttscale.errors import ConfigError
from ttscale.replay import votes


def pass_at_k(n: np.ndarray | int, c: np.ndarray | int, k: int) -> np.ndarray:
    """Unbiased pass@k (Chen et al. 2021): ``1 - C(n-c, k) / C(n, k)``, vectorized over problems.

    Computed in log space with ``gammaln`` so large n never overflows.

    >>> round(float(pass_at_k(4, 1, 2)), 12)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    0.5
    """
    n = np.asarray(n, dtype=float)
    c = np.asarray(c, dtype=float)
    if k < 1 or np.any(k > n):
        raise ConfigError(f"pass@k needs 1 <= k <= n, got k={k}")
    fail = n - c
    out = np.ones(np.broadcast(n, c).shape)
    ok = fail >= k  # otherwise every k-subset holds a correct sample
    log_ratio = (gammaln(fail + 1) - gammaln(np.maximum(fail - k, 0) + 1)
                 - gammaln(n + 1) + gammaln(n - k + 1))
    out[ok] = -np.expm1(log_ratio[ok])
    return out


def pass_at_k_product(n: int, c: int, k: int) -> float:
    """Chen et al.'s numerically stable product form, for one problem (reference implementation)."""
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def n_subsets(K: int, k: int) -> int:
    return math.comb(K, k)


def exact_orders(K: int, k: int) -> np.ndarray:
    """All k-subsets of range(K), shape (C(K, k), k)."""
    return np.array(list(itertools.combinations(range(K), k)), dtype=np.int64).reshape(-1, k)


def random_orders(n_problems: int, K: int, n_orders: int, rng: np.random.Generator) -> np.ndarray:
    """Independent uniform permutations of range(K), shape (P, R, K)."""
    return np.argsort(rng.random((n_problems, n_orders, K)), axis=-1)


def _gather(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """values (P, K) gathered by order (P, N, L) or (N, L); -1 entries give values[p, 0]."""
    P, K = values.shape
    base = (np.arange(P) * K).reshape((P,) + (1,) * (order.ndim if order.ndim == 2 else order.ndim - 1))
    return values.reshape(-1)[base + np.maximum(order, 0)]


def positions(shape: tuple[int, int], order: np.ndarray) -> np.ndarray:
    """Flat indices into a (P, K) array of every position of every ordering, position-major (L, P * N).

    ``order`` (P, N, L) or (N, L) sample indices; -1 entries give sample 0 of the row."""
    P, K = shape
    if order.ndim == 2:
        order = np.broadcast_to(order, (P, *order.shape))
    N, L = order.shape[1], order.shape[2]
    flat = (np.arange(P) * K)[:, None, None] + np.maximum(order, 0)
    return np.ascontiguousarray(flat.reshape(P * N, L).T)


def vote_winners(
    answer: np.ndarray,
    order: np.ndarray,
    ks: list[int],
    n_answers: int,
    weights: np.ndarray | None = None,
    logprob: np.ndarray | None = None,
) -> np.ndarray:
    """Winning answer id of the vote over the first k samples of each ordering, for each k.

    ``answer`` (P, K) answer ids (-1: none); ``order`` (P, N, L) or (N, L) sample
    indices (-1: skip this position); ``ks`` ascending, each <= L. Returns int
    (P, N, len(ks)), -1 where no sample in the subset has an answer.
    Vote masses are accumulated incrementally, so all ks cost one pass
    (:func:`ttscale.replay.votes.prefix_votes`).
    """
    P = answer.shape[0]
    if order.ndim == 2:
        order = np.broadcast_to(order, (P, *order.shape))
    N, L = order.shape[1], order.shape[2]
    pos = positions(answer.shape, order)
    idx = np.ascontiguousarray(order.reshape(P * N, L).T)
    ans = answer.reshape(-1).take(pos)
    ans[idx < 0] = -1
    w = None if weights is None else weights.reshape(-1).take(pos)
    lp = None if logprob is None else logprob.reshape(-1).take(pos)
    won = votes.prefix_votes(ans, idx, ks, n_answers, [w], lp)[0]
    return won.reshape(P, N, len(ks))


def winners_correct(answer_correct: np.ndarray, winners: np.ndarray) -> np.ndarray:
    """bool array shaped like ``winners`` (P, ...): is the winning answer correct."""
    P = answer_correct.shape[0]
    flat = winners.reshape(P, -1)
    ok = np.take_along_axis(answer_correct, np.where(flat < 0, 0, flat), axis=1) & (flat >= 0)
    return ok.reshape(winners.shape)


def best_of_n_exact(answer: np.ndarray, correct: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Exact expected best-of-N@k accuracy per problem (P,).

    The answered sample with the highest score wins (ties: lowest index), as in
    :class:`ttscale.strategies.best_of_n.BestOfN`. A sample wins a random k-subset
    iff it is in it and none of the b answered samples ranked above it is:
    probability C(K-1-b, k-1) / C(K, k).
    """
    return best_of_n_exact_many(answer, correct, scores, [k])[0]


def best_of_n_exact_many(answer: np.ndarray, correct: np.ndarray, scores: np.ndarray, ks: list[int]) -> list[np.ndarray]:
    """:func:`best_of_n_exact` at every k in ``ks``; the ranking of the samples is computed once."""
    P, K = answer.shape
    for k in ks:
        if not 1 <= k <= K:
            raise ConfigError(f"best-of-N needs 1 <= k <= {K}, got {k}")
    answered = answer >= 0
    # rank key: score descending, then index ascending; unanswered samples never rank above.
    s = np.where(answered, scores, -np.inf)
    idx = np.arange(K)
    b = np.empty((P, K), dtype=np.int64)  # answered samples that beat sample j
    step = max(1, 2**16 // (K * K))  # problems at a time: the (step, K, K) comparisons stay in cache
    for lo in range(0, P, step):
        sp, ap = s[lo:lo + step], answered[lo:lo + step]
        better = (sp[:, None, :] > sp[:, :, None]) | ((sp[:, None, :] == sp[:, :, None]) & (idx[None, None, :] < idx[None, :, None]))
        better &= ap[:, None, :]
        b[lo:lo + step] = better.sum(axis=2)
    free = K - 1 - b
    good = correct & answered
    out = []
    for k in ks:
        logp = np.where(free >= k - 1, gammaln(free + 1) - gammaln(k) - gammaln(np.maximum(free - k + 1, 0) + 1), -np.inf)
        logp -= gammaln(K + 1) - gammaln(k + 1) - gammaln(K - k + 1)
        p_win = np.where(answered & (free >= k - 1), np.exp(logp), 0.0)
        out.append((p_win * good).sum(axis=1))
    return out


def beta_stop_table(max_votes: int, threshold: float) -> np.ndarray:
    """stop[v1, v2]: Aggarwal et al.'s Beta rule, P(p_leader > 1/2 | Beta(v1+1, v2+1)) >= threshold."""
    v = np.arange(max_votes + 1, dtype=float)
    v1, v2 = np.meshgrid(v, v, indexing="ij")
    prob = betainc(v2 + 1, v1 + 1, 0.5)  # = 1 - I_{1/2}(v1+1, v2+1)
    return (prob >= threshold) & (v1 > v2)


def adaptive_stop(answer: np.ndarray, order: np.ndarray, threshold: float) -> np.ndarray:
    """Samples drawn before adaptive consistency stops, for each ordering: int (P, N), in 1..K.

    Samples are drawn in ``order`` one at a time; after each draw the two largest
    answer counts (v1, v2) decide whether to stop (:func:`beta_stop_table`).
    The leader's count and the runner-up's are updated incrementally, which is
    exact because counts only grow by one per draw.
    """
    P, K = answer.shape
    if order.ndim == 2:
        order = np.broadcast_to(order, (P, *order.shape))
    ans = answer.reshape(-1).take(positions(answer.shape, order))  # (K, P * N)
    stop, _ = votes.adaptive_stop_leader(ans, beta_stop_table(K, threshold))
    return stop.reshape(P, order.shape[1])


def short_m_choice(
    finish_rank: np.ndarray, n_tokens: np.ndarray, order: np.ndarray, ks: list[int], m: int,
    *, ranks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """short-m@k on the first k samples of each ordering (Hassid et al. 2025), for every k in ``ks``.

    The k samples decode together; when the m-th finishes, the rest are cut at
    that length. Returns the m finished sample ids, int (P, N, len(ks), m), and
    generated tokens (P, N, len(ks)): sum over the k samples of min(own length,
    the m-th finisher's length). The m earliest finishers of each growing prefix
    are kept incrementally (an insertion network over m slots), so all ks cost
    one pass. ``ranks``: ``finish_rank`` already gathered along ``order``,
    position-major (L, P * N), when the caller has it.
    """
    P, K = finish_rank.shape
    if order.ndim == 2:
        order = np.broadcast_to(order, (P, *order.shape))
    if not ks or ks[0] < m:
        raise ConfigError(f"short-m@k needs k >= m, got m={m}, ks={ks}")
    N, L = order.shape[1], order.shape[2]
    if ranks is None:
        ranks = finish_rank.reshape(-1).take(positions(finish_rank.shape, order))  # (L, P * N)
    by_rank = np.argsort(finish_rank, axis=1)  # (P, K): sample id finishing r-th
    # When samples finish in order of length and lengths are whole numbers (summing exactly in any
    # order), the k samples generate the m finishers' lengths plus the m-th one's for each of the
    # other k - m: the same sum as min(own length, m-th length) over the k. Otherwise sum those.
    by_len = np.take_along_axis(n_tokens, by_rank, axis=1)
    closed = (bool(np.all(by_len[:, 1:] >= by_len[:, :-1])) and bool(np.all(n_tokens == np.round(n_tokens)))
              and L * float(np.abs(n_tokens).max(initial=0)) < 2.0**53)
    lengths = None if closed else np.ascontiguousarray(_gather(n_tokens, order))  # (P, N, L)
    slots = np.full((m, P * N), K, dtype=np.int64)  # the m smallest ranks so far, ascending
    chosen = np.zeros((P, N, len(ks), m), dtype=np.int64)
    gen = np.zeros((P, N, len(ks)))
    prev = 0
    for i, k in enumerate(ks):
        for j in range(prev, k):
            x = ranks[j]
            for s in range(m):
                lo = np.minimum(slots[s], x)
                x = np.maximum(slots[s], x)
                slots[s] = lo
        prev = k
        ids = np.take_along_axis(by_rank, slots.reshape(m, P, N).transpose(1, 2, 0).reshape(P, N * m), axis=1)
        chosen[:, :, i] = ids.reshape(P, N, m)
        ids_len = np.take_along_axis(n_tokens, ids, axis=1).reshape(P, N, m)
        t_m = ids_len[:, :, -1]
        if lengths is None:
            gen[:, :, i] = ids_len.sum(-1) + (k - m) * t_m
        else:
            gen[:, :, i] = np.ascontiguousarray(np.minimum(lengths[:, :, :k], t_m[..., None])).sum(-1)
    return chosen, gen
