"""Vote kernels on samples already gathered along orderings, in position-major layout.

Replay's votes run over ``rows`` orderings (problems x orderings flattened) of ``L`` positions each.
The kernels here take the gathered per-position arrays laid out ``(L, rows)``, so the samples of
one position, or of a run of positions, are one contiguous block: a ``bincount`` over a block of
positions reads it without copying. The vote tie rule is :func:`ttscale.replay.estimators.vote_winners`'
(larger mass, then larger summed log-prob, then lowest sample index); the kernels reproduce its
floating-point sums exactly (same bins, same order of addition, same chunks), so their winners are
the same, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ttscale.errors import ConfigError

_BIG = np.iinfo(np.int64).max


def transposed(a: np.ndarray, block: int = 4096) -> np.ndarray:
    """``a.T`` as a C-contiguous array, copied in blocks of rows that fit in cache."""
    out = np.empty(a.shape[::-1], dtype=a.dtype)
    for s in range(0, a.shape[0], block):
        out[:, s:s + block] = a[s:s + block].T
    return out


def cumsum_rows(a: np.ndarray) -> np.ndarray:
    """``np.cumsum(a, axis=0)`` in place, row after row: the same sequential sums (each row adds the
    previous prefix), along contiguous rows instead of down strided columns."""
    for j in range(1, a.shape[0]):
        np.add(a[j - 1], a[j], out=a[j])
    return a


def prefix_votes(
    ans: np.ndarray,
    idx: np.ndarray,
    ks: Sequence[int],
    n_answers: int,
    weights: Sequence[np.ndarray | None] = (None,),
    lp: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Winners of votes over the first k positions of each row, for each k and each weighting.

    ``ans`` (L, rows) answer ids (-1: no vote), ``idx`` (L, rows) sample indices (the last tie
    break), ``lp`` (L, rows) log-probs (the first tie break) or None. ``weights``: one entry per vote
    wanted, None for a plain count or an (L, rows) array of vote weights; the votes share the counts,
    log-prob sums and first indices (one pass for all). Returns one int array (rows, len(ks)) per
    weighting, -1 where no position up to k has an answer. Vote masses are accumulated chunk by chunk
    between consecutive ks, as :func:`~ttscale.replay.estimators.vote_winners` does.
    """
    L, rows = ans.shape
    A = n_answers
    size = (A + 1) * rows
    # Answer-major bins (A + 1, rows): reductions over answers run along long contiguous rows, and
    # samples without an answer go to an extra bucket A (never a candidate).
    bins = ans.astype(np.intp)
    bins[ans < 0] = A
    bins *= rows
    bins += np.arange(rows)
    count = np.zeros(size, dtype=np.int64)
    masses = [None if w is None else np.zeros(size) for w in weights]
    lpsum = np.zeros(size) if lp is not None else None
    first = np.full(size, _BIG)
    outs = [np.full((rows, len(ks)), -1, dtype=np.int64) for _ in weights]
    prev = 0
    for i, k in enumerate(ks):
        if k < prev or k > L:
            raise ConfigError(f"budgets must be ascending and <= {L}, got {list(ks)}")
        f = bins[prev:k].ravel()
        count += np.bincount(f, minlength=size)
        for w, mass in zip(weights, masses, strict=True):
            if w is not None and mass is not None:
                mass += np.bincount(f, weights=w[prev:k].ravel(), minlength=size)
        if lp is not None and lpsum is not None:
            lpsum += np.bincount(f, weights=lp[prev:k].ravel(), minlength=size)
        np.minimum.at(first, f, idx[prev:k].ravel())
        prev = k
        c = count[: A * rows].reshape(A, rows)
        for mass, out in zip(masses, outs, strict=True):
            out[:, i] = _winner(c, None if mass is None else mass[: A * rows].reshape(A, rows),
                                None if lpsum is None else lpsum[: A * rows].reshape(A, rows),
                                first[: A * rows].reshape(A, rows))
    return outs


def _winner(count: np.ndarray, mass: np.ndarray | None, lpsum: np.ndarray | None, first: np.ndarray) -> np.ndarray:
    """The tie rule on (A, rows) tallies: largest mass among answers with a vote, then largest log-prob
    sum, then lowest first index; -1 for rows without any vote. Rows with a single leader skip the tie
    breaks (the result is the same)."""
    if mass is None:  # a plain count: the mass is the count itself
        top = count.max(axis=0)
        has = top > 0
        cand = count == top
    else:
        m = np.where(count > 0, mass, -np.inf)
        top = m.max(axis=0)
        has = np.isfinite(top)
        cand = m == top
    A = cand.shape[0]
    n_top = cand.sum(axis=0, dtype=np.int16 if A < 2**15 else np.int64)
    # Σ a·[a is a candidate]: the candidate where there is one (exact in float64 below 2**53; tied rows
    # are redone below). A matrix-vector product, where argmax over axis 0 would copy transposed.
    win = (np.arange(A, dtype=np.float64) @ cand).astype(np.int64)
    tied = np.flatnonzero(has & (n_top > 1))
    if tied.size:
        sub = cand[:, tied]
        if lpsum is not None:
            lp2 = np.where(sub, lpsum[:, tied], -np.inf)
            sub &= lp2 == lp2.max(axis=0)
        win[tied] = np.argmin(np.where(sub, first[:, tied], _BIG), axis=0)
    return np.where(has, win, -1)


def small_vote(ans: np.ndarray, idx: np.ndarray, lp: np.ndarray | None) -> np.ndarray:
    """Plain-count vote over the last axis of ``ans`` (..., m), for small m: winner answer ids (...).

    Same result as :func:`prefix_votes` with the single budget m. Counts come from pairwise
    comparisons; where one answer has the top count it wins, and only rows where several answers
    share it go through the tie breaks (:func:`_small_ties`).
    """
    m = ans.shape[-1]
    if m == 1:
        return ans[..., 0].copy()
    a = np.ascontiguousarray(ans.reshape(-1, m).T)  # (m, n)
    n = a.shape[1]
    cnt = np.ones((m, n), dtype=np.int16)
    for j in range(m):
        for i in range(j + 1, m):
            same = a[i] == a[j]
            cnt[i] += same
            cnt[j] += same
    cnt[a < 0] = 0
    top = cnt.max(axis=0)
    cand = cnt == top
    cand &= top > 0
    # each answer with the top count holds `top` of the candidate samples: more means a tie
    tied = np.flatnonzero(np.count_nonzero(cand, axis=0) > top)
    win = np.where(top > 0, a[np.argmax(cand, axis=0), np.arange(n)], -1)
    if tied.size:
        win[tied] = _small_ties(ans.reshape(-1, m)[tied], idx.reshape(-1, m)[tied],
                                None if lp is None else lp.reshape(-1, m)[tied])
    return win.reshape(ans.shape[:-1])


def _small_ties(ans: np.ndarray, idx: np.ndarray, lp: np.ndarray | None) -> np.ndarray:
    """The full tie rule over the last axis (n, m): each sample's answer gets its count, its log-prob
    sum (added in position order from 0, as ``bincount`` adds) and its lowest sample index, and the
    best sample by (count, log-prob sum, -first index) names the winner."""
    m = ans.shape[-1]
    best_a = np.full(ans.shape[:-1], -1, dtype=np.int64)
    best_c = np.zeros(ans.shape[:-1], dtype=np.int64)
    best_l = np.full(ans.shape[:-1], -np.inf)
    best_f = np.full(ans.shape[:-1], _BIG, dtype=np.int64)
    for j in range(m):
        aj = ans[..., j]
        c = np.zeros(ans.shape[:-1], dtype=np.int64)
        s = np.zeros(ans.shape[:-1])
        f = np.full(ans.shape[:-1], _BIG, dtype=np.int64)
        for i in range(m):
            same = ans[..., i] == aj
            c += same
            if lp is not None:
                s += np.where(same, lp[..., i], 0.0)
            f = np.where(same, np.minimum(f, idx[..., i]), f)
        better = (aj >= 0) & ((c > best_c) | ((c == best_c) & ((s > best_l) | ((s == best_l) & (f < best_f)))))
        best_a = np.where(better, aj, best_a)
        best_c = np.where(better, c, best_c)
        best_l = np.where(better, s, best_l)
        best_f = np.where(better, f, best_f)
    return best_a


def adaptive_stop_leader(ans: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive consistency's stopping point on gathered answers ``ans`` (K, rows), and its leader.

    Returns ``stop`` int (rows,) in 1..K (K when the rule never fires) and ``leader`` int (rows,): the
    answer with the strictly largest count when the rule fired (so the plain vote at the stopping point
    elects it), -1 for rows where it never fired. Same rule and updates as
    :func:`ttscale.replay.estimators.adaptive_stop`; rows drop out of the loop once stopped.
    """
    K, rows = ans.shape
    width = table.shape[1]
    stop = np.full(rows, K, dtype=np.int64)
    leader = np.full(rows, -1, dtype=np.int64)
    n_ans = max(1, int(ans.max(initial=0)) + 1)
    live = np.arange(rows)  # rows still drawing
    counts = np.zeros((rows, n_ans + 1), dtype=np.int64)  # column n_ans: samples without an answer
    v1 = np.zeros(rows, dtype=np.int64)
    v2 = np.zeros(rows, dtype=np.int64)
    lead = np.full(rows, -1, dtype=np.int64)
    flat_table = table.reshape(-1)
    for j in range(K):
        a = ans[j, live]
        has = a >= 0
        cell = np.arange(live.size) * (n_ans + 1) + np.where(has, a, n_ans)
        flat = counts.reshape(-1)
        flat[cell] += 1
        c = np.where(has, flat[cell], 0)
        is_lead = lead == a
        new_lead = has & ~is_lead & (c > v1)
        v2 = np.where(new_lead, v1, np.where(has & ~is_lead & (c > v2), c, v2))
        v1 = np.where(has & (is_lead | new_lead), np.maximum(c, v1), v1)
        lead = np.where(new_lead, a, lead)
        hit = flat_table[v1 * width + v2]
        if hit.any():
            done = live[hit]
            stop[done] = j + 1
            leader[done] = lead[hit]
            keep = ~hit
            live, counts, v1, v2, lead = live[keep], counts[keep], v1[keep], v2[keep], lead[keep]
            if not live.size:
                break
    return stop, leader
