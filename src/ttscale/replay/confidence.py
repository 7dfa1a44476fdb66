"""DeepConf from a stored pool: group confidences from the stored per-token log-probs, the offline
variant and a simulation of the online one, beside self-consistency and adaptive consistency on the
same sample orders.

The confidence is :mod:`ttscale.strategies.deepconf`'s (the *sampled* token's log-prob, meaned over a
sliding window; the paper's top-k version needs log-probs the pools do not keep). Every replay here is
an expectation over ``N`` random orderings of each problem's K samples (the first k samples of an
ordering are a uniform random k-subset), and returns per problem x ordering arrays, so estimators
compared on the same orderings differ by their rules, not by their draws; bootstrap the problems for
intervals.

- **offline** (:func:`offline`): k traces, keep those whose lowest group confidence is in the top
  ``keep`` share of the k, vote weighted by ``exp(lowest)``; every trace is generated to the end.
- **online** (:func:`online`): the strategy's procedure on an engine that *can* stop a single trace
  (the paper's patched vLLM): the first ``warmup`` traces of an ordering run to the end and set the
  bar; later ones start in waves and are cut at the end of their first window below the bar (tokens
  counted up to there; they do not vote). Within a wave the traces decode in lockstep, so they finish
  in order of their (cut) length, ties by the pool's finish order; after each one that passes, the
  weighted vote is checked, and once the leader's share reaches ``threshold`` the traces still
  decoding are cut at that step (they do not vote either). With ``wave=1`` this is the paper's one
  trace at a time.
- :func:`self_consistency` and :func:`adaptive` (Aggarwal et al.'s Beta rule, one sample at a time,
  :func:`ttscale.replay.estimators.adaptive_stop`) on the same orderings, for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ttscale.errors import ConfigError, StoreError
from ttscale.replay import estimators as est
from ttscale.replay.pool import Pool, model_info_from_record, pool_from_samples, read_run, task_equivalence
from ttscale.store import Store
from ttscale.strategies.deepconf import calibrate, group_confidences, lowest_group_confidence


@dataclass
class ConfidencePool:
    """A :class:`Pool` with each sample's group confidences (window ``window``)."""

    pool: Pool
    window: int
    lowest: np.ndarray
    """float (P, K): lowest group confidence (``-inf``: the sample has no log-probs)."""
    running_min: list[list[np.ndarray]]
    """[p][j]: running minimum of the group confidences by window end (empty: shorter than a window)."""
    notes: list[str]
    """What was left out of the stored run, and why."""

    def stop_tokens(self, p: int, j: int, bar: float) -> float | None:
        """Tokens generated before sample j of problem p is cut at its first window below ``bar``."""
        m = self.running_min[p][j]
        i = int(np.searchsorted(-m, -bar, side="right"))  # first window end with running min < bar
        return float(i + self.window) if i < m.size else None


def confidence_pool(pool: Pool, token_logprobs: list[list[list[float] | None]], window: int,
                    notes: list[str] | None = None) -> ConfidencePool:
    """Group confidences for ``pool`` from its samples' token log-probs, ``[problem][sample]`` in pool order."""
    if window < 1:
        raise ConfigError(f"window must be >= 1, got {window}")
    P, K = pool.answer.shape
    lowest = np.full((P, K), -np.inf)
    running: list[list[np.ndarray]] = []
    for p in range(P):
        row = []
        for j in range(K):
            lps = token_logprobs[p][j] or []
            lowest[p, j] = lowest_group_confidence(lps, window)
            g = group_confidences(lps, window) if len(lps) >= window else np.empty(0)
            row.append(np.minimum.accumulate(g) if g.size else g)
        running.append(row)
    return ConfidencePool(pool, window, lowest, running, list(notes or []))


def load_confidence_pool(store: Store, run_id: str, window: int) -> ConfidencePool:
    """A stored run's pool with confidences, answers grouped by the task's equivalence as in
    :func:`~ttscale.replay.pool.load_pool`. Only problems with the run's full sample count are kept
    (a pool still being made has problems with none, and the one in progress with fewer)."""
    rec, by_problem, task = read_run(store, run_id)
    full = max(len(ss) for ss in by_problem.values())
    complete = {pid: ss for pid, ss in by_problem.items() if len(ss) >= full}
    partial = sum(1 for ss in by_problem.values() if 0 < len(ss) < full)
    empty = sum(1 for ss in by_problem.values() if not ss)
    pool = pool_from_samples(complete, info=model_info_from_record(rec.model), k=full, run_id=run_id, task=task,
                             model=str(rec.model.get("name", "")), equivalent=task_equivalence(task))
    ordered = {pid: sorted(ss, key=lambda s: s.index)[:full] for pid, ss in complete.items()}
    lps = [[s.token_logprobs for s in ordered[pid]] for pid in pool.problem_ids]
    notes = []
    if empty or partial:
        parts = [f"{empty} without samples yet"] * bool(empty) + [f"{partial} with fewer than {full}"] * bool(partial)
        notes.append(f"{len(by_problem)} problems in the run: {' and '.join(parts)} left out")
    ungraded = len(complete) - pool.n_problems
    if ungraded:
        notes.append(f"{ungraded} problems without a graded sample were left out")
    missing = sum(1 for row in lps for x in row if not x)
    if missing:
        notes.append(f"{missing} samples have no token log-probs (they never pass a confidence filter)")
    if pool.n_problems == 0:
        raise StoreError(f"run {run_id!r} has no problem with {full} graded samples")
    return confidence_pool(pool, lps, window, notes)


@dataclass
class Replayed:
    """One strategy replayed on N orderings of each problem: arrays (P, N)."""

    correct: np.ndarray
    tokens: np.ndarray
    """Generated tokens."""
    traces: np.ndarray
    """Samples (traces) started."""

    @property
    def accuracy(self) -> np.ndarray:
        """(P,) expected accuracy per problem."""
        return self.correct.mean(axis=1)

    @property
    def mean_tokens(self) -> np.ndarray:
        return self.tokens.mean(axis=1)


def orderings(pool: Pool, n_orders: int, seed: int = 0) -> np.ndarray:
    """(P, N, K) random orderings, the same ``ttscale curves`` draws for that seed."""
    return est.random_orders(pool.n_problems, pool.k, n_orders, np.random.default_rng(seed))


def _prefix_tokens(pool: Pool, order: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Generated tokens of the first ``n`` (P, N) samples of each ordering."""
    cum = np.cumsum(est._gather(pool.n_tokens, order), axis=-1)
    return np.take_along_axis(cum, (n - 1)[..., None], axis=-1)[..., 0]


def self_consistency(pool: Pool, order: np.ndarray, k: int) -> Replayed:
    """Majority vote over the first k samples of each ordering (voting's tie rule)."""
    w = est.vote_winners(pool.answer, order[..., :k], [k], pool.n_answers, None, pool.logprob)[..., 0]
    n = np.full(order.shape[:2], k)
    return Replayed(est.winners_correct(pool.answer_correct, w), _prefix_tokens(pool, order, n), n.astype(float))


def adaptive(pool: Pool, order: np.ndarray, threshold: float = 0.95) -> Replayed:
    """Adaptive consistency (Beta rule), one sample at a time, at most K: the same rule as ``ttscale curves``."""
    stop = est.adaptive_stop(pool.answer, order, threshold)
    drawn = np.where(np.arange(pool.k) < stop[..., None], order, -1)
    w = est.vote_winners(pool.answer, drawn, [pool.k], pool.n_answers, None, pool.logprob)[..., 0]
    return Replayed(est.winners_correct(pool.answer_correct, w), _prefix_tokens(pool, order, stop), stop.astype(float))


def _bar(lowest: np.ndarray, keep: float) -> np.ndarray:
    """Per-row threshold over the last axis (rows of samples without log-probs count as very low)."""
    finite = np.where(np.isfinite(lowest), lowest, -1e9)
    return np.percentile(finite, 100.0 * (1.0 - keep), axis=-1, keepdims=True)


def offline(cp: ConfidencePool, order: np.ndarray, k: int, keep: float) -> Replayed:
    """DeepConf-offline on the first k samples of each ordering: top ``keep`` share by lowest group
    confidence, vote weighted by exp(lowest); if no trace with an answer passes, all k vote (weighted)."""
    pool = cp.pool
    sub = order[..., :k]
    low = est._gather(cp.lowest, sub)
    ok = (low >= _bar(low, keep)) & (est._gather(pool.answer, sub) >= 0)
    weights = np.exp(np.where(np.isfinite(cp.lowest), cp.lowest, -np.inf))
    filt = est.vote_winners(pool.answer, np.where(ok, sub, -1), [k], pool.n_answers, weights, pool.logprob)[..., 0]
    every = est.vote_winners(pool.answer, sub, [k], pool.n_answers, weights, pool.logprob)[..., 0]
    w = np.where(ok.any(axis=-1), filt, every)
    n = np.full(order.shape[:2], k)
    return Replayed(est.winners_correct(pool.answer_correct, w), _prefix_tokens(pool, order, n), n.astype(float))


@dataclass(frozen=True)
class OnlineSettings:
    warmup: int = 4
    keep: float = 0.9
    threshold: float = 0.95
    """Consensus share of the weighted vote at which sampling stops."""
    wave: int | None = None
    """Traces per wave after the warm-up; ``None``: all the rest in one wave (the reference code's choice)."""
    k: int | None = None
    """Maximum traces (default: the pool's K)."""

    def __post_init__(self) -> None:
        if self.warmup < 1 or not 0 < self.keep <= 1 or not 0.5 < self.threshold <= 1:
            raise ConfigError("online DeepConf needs warmup >= 1, keep in (0, 1], threshold in (0.5, 1]")
        if self.wave is not None and self.wave < 1:
            raise ConfigError(f"wave must be >= 1, got {self.wave}")


def _vote(ids: list[int], answer: np.ndarray, weight: np.ndarray, logprob: np.ndarray) -> tuple[int, float]:
    """(winning answer id, its share) of the weighted vote over samples ``ids`` (voting's tie rule)."""
    mass: dict[int, float] = {}
    key: dict[int, tuple[float, float, int]] = {}
    for j in ids:
        a = int(answer[j])
        if a < 0:
            continue
        mass[a] = mass.get(a, 0.0) + float(weight[j])
        m, lp, first = key.get(a, (0.0, 0.0, j))
        key[a] = (mass[a], lp + float(logprob[j]), min(first, j))
    if not mass:
        return -1, 0.0
    best = max(key, key=lambda a: (key[a][0], key[a][1], -key[a][2]))
    total = sum(mass.values())
    return best, (mass[best] / total if total > 0 else 0.0)


def online(cp: ConfidencePool, order: np.ndarray, settings: OnlineSettings) -> Replayed:
    """Simulated DeepConf-online on each ordering (module docstring): correctness, generated tokens and
    traces started, (P, N)."""
    pool, s = cp.pool, settings
    P, N, K = order.shape
    k = min(s.k or K, K)
    warm_n = min(s.warmup, k)
    wave = s.wave or max(1, k - warm_n)
    weight = np.exp(np.where(np.isfinite(cp.lowest), cp.lowest, -np.inf))
    correct = np.zeros((P, N), dtype=bool)
    tokens = np.zeros((P, N))
    traces = np.zeros((P, N))
    for p in range(P):
        ans, low, n_tok, rank = pool.answer[p], cp.lowest[p], pool.n_tokens[p], pool.finish_rank[p]
        w, lp = weight[p], pool.logprob[p]
        for r in range(N):
            o = order[p, r]
            warm = [int(j) for j in o[:warm_n]]
            bar = calibrate([float(low[j]) for j in warm], s.keep)
            voters = [j for j in warm if ans[j] >= 0 and low[j] >= bar]
            spent = float(n_tok[warm].sum())
            started = warm_n
            while started < k:
                batch = [int(j) for j in o[started: started + wave]]
                started += len(batch)
                cut = {j: cp.stop_tokens(p, j, bar) for j in batch}
                length = {j: n_tok[j] if cut[j] is None else min(n_tok[j], cut[j]) for j in batch}
                settled_at = math.inf
                for j in sorted(batch, key=lambda j: (length[j], rank[j])):  # lockstep: shortest finishes first
                    if cut[j] is None and ans[j] >= 0 and low[j] >= bar:
                        voters.append(j)
                        if _vote(voters, ans, w, lp)[1] >= s.threshold:
                            settled_at = length[j]
                            break
                spent += sum(min(length[j], settled_at) for j in batch)
                # the strategy checks the vote after every wave (warm-up voters may settle it alone)
                if math.isfinite(settled_at) or _vote(voters, ans, w, lp)[1] >= s.threshold:
                    break
            win, _ = _vote(voters if voters else warm, ans, w, lp)
            correct[p, r] = win >= 0 and bool(pool.answer_correct[p, win])
            tokens[p, r] = spent
            traces[p, r] = started
    return Replayed(correct, tokens, traces)
