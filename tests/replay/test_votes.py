"""The shared vote kernels (ttscale.replay.votes) against the per-vote estimators and a Python loop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ttscale.replay import estimators as est
from ttscale.replay import votes
from ttscale.replay.curves import compute_curves, default_curves
from ttscale.testing.synthetic import synthetic_pool


def _tied_pool(seed: int):  # type: ignore[no-untyped-def]
    """Few answers, no log-probs on half the problems: ties down to the first-index rule are common."""
    pool = synthetic_pool(30, 12, n_distractors=2, no_answer=0.3, seed=seed)
    lp = pool.logprob.copy()
    lp[::2] = 0.0
    return dataclasses.replace(pool, logprob=lp)


def _reference_votes(answer, order, ks, n_answers, weights=None, logprob=None):  # type: ignore[no-untyped-def]
    """The vote before the shared kernels (row-major, one vote per call), kept as the reference."""
    P = answer.shape[0]
    if order.ndim == 2:
        order = np.broadcast_to(order, (P, *order.shape))
    N, L = order.shape[1], order.shape[2]
    A, rows = n_answers, P * N
    big = np.iinfo(np.int64).max
    ans = np.where(order < 0, -1, est._gather(answer, order)).reshape(rows, L)
    w = None if weights is None else est._gather(weights, order).reshape(rows, L)
    lp = None if logprob is None else est._gather(logprob, order).reshape(rows, L)
    idx = np.asarray(order).reshape(rows, L)
    flat = np.where(ans < 0, A, ans) * rows + np.arange(rows)[:, None]
    size = (A + 1) * rows
    mass, count, lpsum, first = np.zeros(size), np.zeros(size), np.zeros(size), np.full(size, big)
    out = np.full((rows, len(ks)), -1, dtype=np.int64)
    prev = 0
    for i, k in enumerate(ks):
        f = flat[:, prev:k].ravel()
        c = np.bincount(f, minlength=size)
        count += c
        mass += c if w is None else np.bincount(f, weights=w[:, prev:k].ravel(), minlength=size)
        if lp is not None:
            lpsum += np.bincount(f, weights=lp[:, prev:k].ravel(), minlength=size)
        np.minimum.at(first, f, idx[:, prev:k].ravel())
        prev = k
        m = np.where(count[: A * rows] > 0, mass[: A * rows], -np.inf).reshape(A, rows)
        top = m.max(axis=0)
        cand = m == top
        lp2 = np.where(cand, lpsum[: A * rows].reshape(A, rows), -np.inf)
        cand &= lp2 == lp2.max(axis=0)
        win = np.argmin(np.where(cand, first[: A * rows].reshape(A, rows), big), axis=0)
        out[:, i] = np.where(np.isfinite(top), win, -1)
    return out.reshape(P, N, len(ks))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shared_pass_equals_the_reference_vote(seed: int) -> None:
    pool = _tied_pool(seed)
    order = est.random_orders(pool.n_problems, pool.k, 9, np.random.default_rng(seed))
    ks = [1, 2, 3, 5, 12]
    pos = est.positions(pool.answer.shape, order)
    idx = np.ascontiguousarray(order.reshape(-1, pool.k).T)
    w = np.round(pool.scores["certainty"], 1)  # coarse weights: mass ties too
    got = votes.prefix_votes(pool.answer.reshape(-1).take(pos), idx, ks, pool.n_answers,
                             [None, w.reshape(-1).take(pos)], pool.logprob.reshape(-1).take(pos))
    for weights, won in zip([None, w], got, strict=True):
        want = _reference_votes(pool.answer, order, ks, pool.n_answers, weights, pool.logprob)
        assert np.array_equal(won.reshape(want.shape), want)
        assert np.array_equal(est.vote_winners(pool.answer, order, ks, pool.n_answers, weights, pool.logprob), want)


@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_small_vote_equals_the_general_vote(m: int) -> None:
    pool = _tied_pool(m)
    rng = np.random.default_rng(m)
    ids = np.stack([np.stack([rng.choice(pool.k, m, replace=False) for _ in range(7)]) for _ in range(pool.n_problems)])
    want = _reference_votes(pool.answer, ids, [m], pool.n_answers, None, pool.logprob)[..., 0]
    got = votes.small_vote(np.take_along_axis(pool.answer, ids.reshape(pool.n_problems, -1), 1).reshape(ids.shape), ids,
                           np.take_along_axis(pool.logprob, ids.reshape(pool.n_problems, -1), 1).reshape(ids.shape))
    assert np.array_equal(got, want)


def test_adaptive_leader_is_the_vote_at_the_stopping_point() -> None:
    pool = _tied_pool(5)
    order = est.random_orders(pool.n_problems, pool.k, 16, np.random.default_rng(5))
    ans = pool.answer.reshape(-1).take(est.positions(pool.answer.shape, order))
    stop, leader = votes.adaptive_stop_leader(ans, est.beta_stop_table(pool.k, 0.8))
    assert np.array_equal(stop.reshape(order.shape[:2]), est.adaptive_stop(pool.answer, order, 0.8))
    at_stop = np.where(np.arange(pool.k) < stop.reshape(order.shape[:2])[..., None], order, -1)
    vote = _reference_votes(pool.answer, at_stop, [pool.k], pool.n_answers, None, pool.logprob)[..., 0].reshape(-1)
    fired = leader >= 0
    assert fired.any() and (~fired).any()
    assert np.array_equal(leader[fired], vote[fired])


def test_short_m_closed_form_tokens_equal_the_sum() -> None:
    pool = synthetic_pool(20, 16, seed=3)
    order = est.random_orders(pool.n_problems, pool.k, 8, np.random.default_rng(3))
    ks = [3, 5, 16]
    _, gen = est.short_m_choice(pool.finish_rank, pool.n_tokens, order, ks, 3)  # closed form
    chosen, _ = est.short_m_choice(pool.finish_rank, pool.n_tokens + 0.25, order, ks, 3)  # summed
    lengths = est._gather(pool.n_tokens, order)
    for i, k in enumerate(ks):
        t_m = np.take_along_axis(pool.n_tokens, chosen[:, :, i, -1], axis=1)
        assert np.array_equal(gen[:, :, i], np.minimum(lengths[:, :, :k], t_m[..., None]).sum(-1))


def test_curves_do_not_depend_on_sharing() -> None:
    """Replaying one curve alone gives what it gives beside the others (shared passes and caches)."""
    pool = _tied_pool(7)
    all_curves = compute_curves(pool, default_curves(), n_orders=16, n_bootstrap=5)
    for spec in default_curves():
        alone = compute_curves(pool, [spec], n_orders=16, n_bootstrap=5)
        assert np.array_equal(alone.per_problem[spec.name], all_curves.per_problem[spec.name], equal_nan=True)
