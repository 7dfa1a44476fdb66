"""Small model with test-time compute against a larger model at equal inference FLOPs, per difficulty bin.

The computations behind ``compute-vs-size`` (the page is :mod:`ttscale.experiments.compute_vs_size`):

- :func:`pair_pools`: pools grouped by task; in each task the model with the cheapest token (the
  cost model's FLOPs per token) is the small one, the dearest the large one, both restricted to the
  problems they share, row by row (a pool still being generated holds a subset of the problems);
- :func:`quantile_bins`: equal-count bins of a per-problem value, ties kept together (the planner's
  rule for its predicted pass rate), used on the small model's oracle pass rate, as Snell et al. do;
- :func:`predicted_pass_rate`: the planner's probe-feature regression, cross-fitted so no problem's
  own reference answers decide its bin;
- :func:`compare_bins`: in each bin and at each FLOPs level (the large model's mean FLOPs per problem
  at ``k`` samples in that bin) the best deployable strategy of each model within the level, and the
  paired bootstrap interval of their accuracy difference.

FLOPs are the pools' own: the prompt prefilled once per problem plus every drawn sample's decode
(and any per-sample prefill), from each model's shapes (:mod:`ttscale.cost`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ttscale.errors import ConfigError
from ttscale.experiments.common import bootstrap
from ttscale.planner.features import oracle_pass_rate, pool_probe_features
from ttscale.planner.predictor import fit_predictor
from ttscale.replay import estimators as est
from ttscale.replay.curves import CurvePoint, Curves, CurveSpec, compute_curves
from ttscale.replay.pool import Pool

LEVEL_KS = (1, 2, 4, 6, 8)
"""The large model's samples per problem that set the FLOPs levels. A level the small model's whole pool
cannot reach in a bin is left out there (with a ~3x dearer token, 16 small samples buy about 6 large)."""
N_BINS = 3
PROBE = 2
"""Probe size of the predicted bins (the planner's features over the small model's first samples)."""
EPS = 1e-9


def strategies(verifier: str) -> tuple[CurveSpec, ...]:
    """The deployable test-time strategies compared: majority, best-of-n with a verifier, adaptive stopping."""
    return (CurveSpec("majority", "majority"),
            CurveSpec(f"best-of-n[{verifier}]", "best-of-n", score=verifier),
            CurveSpec("adaptive", "adaptive", threshold=0.95))


def take(pool: Pool, idx: np.ndarray | Sequence[int]) -> Pool:
    """Rows ``idx`` of a pool (every per-problem array and score indexed alike)."""
    idx = np.asarray(idx, dtype=np.int64)
    arrays = {f.name: getattr(pool, f.name)[idx] for f in dataclasses.fields(pool)
              if isinstance(getattr(pool, f.name), np.ndarray)}
    return dataclasses.replace(pool, problem_ids=[pool.problem_ids[i] for i in idx.tolist()],
                               scores={k: v[idx] for k, v in pool.scores.items()}, **arrays)


def flops_per_token(pool: Pool) -> float:
    """Mean FLOPs of a charged token: how the cost model tells a larger model from a smaller one."""
    return float(pool.sample_flops.sum() / max(float(pool.sample_tokens.sum()), 1.0))


@dataclass
class ModelPair:
    task: str
    small_id: str
    large_id: str
    small: Pool
    """The small model's pool on the shared problems, rows in the same order as ``large``."""
    large: Pool
    small_full: Pool
    """Every problem of the small model's pool (the predicted bins' regression trains on the others)."""
    large_total: int
    """Problems in the large model's pool (it may still be generating the rest)."""

    @property
    def verifier(self) -> str:
        """A verifier both pools scored; the visible unit tests where there are any."""
        both = set(self.small.scores) & set(self.large.scores)
        return "unit-tests" if "unit-tests" in both else "certainty"


def pair_pools(found: dict[str, Pool]) -> tuple[list[ModelPair], list[str]]:
    """One small/large pair per task with two models' pools, and a note for each task without one."""
    by_task: dict[str, list[tuple[str, Pool]]] = {}
    for rid, p in found.items():
        by_task.setdefault(p.task or rid, []).append((rid, p))
    pairs, notes = [], []
    for task, items in by_task.items():
        models = {p.model for _, p in items}
        if len(models) < 2:
            notes.append(f"{task}: only {', '.join(f'`{r}`' for r, _ in items)} ({', '.join(sorted(models))}), "
                         "no pool of a second model: not compared")
            continue
        items.sort(key=lambda t: flops_per_token(t[1]))
        (s_id, s), (l_id, big) = items[0], items[-1]
        where = {pid: i for i, pid in enumerate(big.problem_ids)}
        shared = [i for i, pid in enumerate(s.problem_ids) if pid in where]
        if len(shared) < 2:
            notes.append(f"{task}: `{s_id}` and `{l_id}` share {len(shared)} problems: not compared")
            continue
        pairs.append(ModelPair(task, s_id, l_id, take(s, shared),
                               take(big, [where[s.problem_ids[i]] for i in shared]), s, big.n_problems))
    return pairs, notes


def quantile_bins(values: np.ndarray, n_bins: int = N_BINS) -> tuple[np.ndarray, list[float]]:
    """Bins of equal counts by ``values`` (ascending: bin 0 lowest), as the planner bins its prediction.

    Edges are quantiles; an edge equal to the minimum is dropped, so tied values share a bin and
    there may be fewer than ``n_bins`` (a third of the problems at pass rate 0 make one bin).
    """
    v = np.asarray(values, dtype=float)
    qs = np.quantile(v, [i / n_bins for i in range(1, n_bins)]) if n_bins > 1 else np.array([])
    edges = sorted({round(float(q), 9) for q in qs if v.min() < q <= v.max()})
    return np.searchsorted(np.array(edges), v, side="right"), edges


def predicted_pass_rate(full: Pool, target_ids: Sequence[str], *, probe: int = PROBE, folds: int = 5,
                        n_orders: int = 32, seed: int = 0) -> np.ndarray:
    """Each target problem's pass rate as the planner predicts it from a probe, never from its own answers.

    The planner's ridge regression (probe features -> oracle pass rate) is fitted on every problem of
    ``full`` outside the target's fold (so the small model's other problems help), and the target's
    prediction is its mean over ``n_orders`` random probes of ``probe`` samples.
    """
    pos = {pid: i for i, pid in enumerate(full.problem_ids)}
    idx = np.array([pos[t] for t in target_ids], dtype=np.int64)
    probe = min(probe, full.k)
    rng = np.random.default_rng(seed)
    order = est.random_orders(full.n_problems, full.k, n_orders, rng)
    X = pool_probe_features(full.answer, full.mean_logprob, full.scores["certainty"], full.prefill_tokens,
                            order[..., :probe], full.n_tokens)
    F = X.shape[-1]
    y = oracle_pass_rate(full.correct)
    fold = rng.permutation(len(idx)) % max(1, min(folds, len(idx)))
    out = np.zeros(len(idx))
    for f in np.unique(fold):
        test = idx[fold == f]
        train = np.setdiff1d(np.arange(full.n_problems), test)
        if len(train) < 2:
            raise ConfigError("predicted bins need at least two problems outside each fold")
        pred = fit_predictor(X[train].reshape(-1, F), np.repeat(y[train], n_orders), probe, 1)
        out[fold == f] = pred.predict(X[test].reshape(-1, F)).reshape(len(test), n_orders).mean(axis=1)
    return out


@dataclass
class Pick:
    """One model's best deployable point within a FLOPs level."""

    strategy: str
    k: int
    accuracy: float
    flops: float
    per_problem: np.ndarray

    @property
    def label(self) -> str:
        return f"{self.strategy}@{self.k}"


@dataclass
class BinCurves:
    scheme: str
    """``oracle`` (the small model's pass rate), ``predicted`` (cross-fitted probe regression) or ``all``."""
    index: int
    lo: float
    hi: float
    """Range of the binned value (pass rate, oracle or predicted) over the bin's problems."""
    problems: list[str]
    small: Curves
    large: Curves


@dataclass
class Cell:
    bin: BinCurves
    level_k: int
    """The FLOPs level is the large model's mean FLOPs per problem at this many samples, in the bin."""
    flops: float
    """The level's cost per problem: FLOPs here, dollars in a cell priced on hardware (:mod:`.priced_cells`)."""
    small: Pick
    large: Pick
    ci: tuple[float, float]
    """95% paired bootstrap interval (over the bin's problems) of small minus large accuracy."""

    @property
    def diff(self) -> float:
        return self.small.accuracy - self.large.accuracy

    @property
    def small_wins(self) -> bool:
        return self.diff > EPS

    @property
    def outcome(self) -> str:
        if self.ci[0] > 0:
            return "small wins"
        if self.ci[1] < 0:
            return "large wins"
        return "within noise"


def mean_ci(x: np.ndarray, reps: int = 400, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean of per-problem values (a difference, for a paired interval)."""

    def stat(idx: np.ndarray) -> float:
        return float(x[idx].mean())

    return bootstrap(len(x), stat, reps=reps, seed=seed)


def best_within(curves: Curves, flops: float, per_problem_ks: Sequence[int]) -> Pick | None:
    """The most accurate non-oracle point costing at most ``flops`` per problem (ties: the cheaper)."""
    ok = [p for p in curves.points if not p.oracle and p.flops <= flops * (1 + EPS)]
    if not ok:
        return None
    best: CurvePoint = max(ok, key=lambda p: (round(p.accuracy, 12), -p.flops))
    col = list(per_problem_ks).index(best.k)
    return Pick(best.strategy, best.k, best.accuracy, best.flops, curves.per_problem[best.strategy][:, col])


def full_cost(pool: Pool, k: int) -> float:
    """Mean FLOPs per problem of ``k`` samples drawn to the end, prompt prefilled once."""
    return float((pool.prefill_flops + k * pool.sample_flops.mean(axis=1)).mean())


def bin_curves(pair: ModelPair, scheme: str, values: np.ndarray, n_bins: int = N_BINS, *, n_orders: int = 64,
               n_bootstrap: int = 200, seed: int = 0) -> list[BinCurves]:
    """Both models' accuracy-vs-FLOPs curves in each bin of ``values`` (one bin of all problems for ``all``)."""
    bins, _ = quantile_bins(values, n_bins) if scheme != "all" else (np.zeros(len(values), dtype=np.int64), [])
    specs = strategies(pair.verifier)
    out = []
    # renumbered over the non-empty bins: interpolated quantile edges can leave a bin with no problem
    for j, b in enumerate(np.unique(bins).tolist()):
        m = np.flatnonzero(bins == b)
        s, lg = take(pair.small, m), take(pair.large, m)
        cs = compute_curves(s, specs, list(range(1, s.k + 1)), n_orders=n_orders, n_bootstrap=n_bootstrap, seed=seed)
        cl = compute_curves(lg, specs, list(range(1, lg.k + 1)), n_orders=n_orders, n_bootstrap=n_bootstrap,
                            seed=seed)
        out.append(BinCurves(scheme, j, float(values[m].min()), float(values[m].max()),
                             [s.problem_ids[i] for i in range(len(m))], cs, cl))
    return out


def compare_bins(pair: ModelPair, binned: Sequence[BinCurves], level_ks: Sequence[int] = LEVEL_KS,
                 reps: int = 400, seed: int = 0) -> list[Cell]:
    """Every (bin, FLOPs level) cell: each model's best strategy within the level and their difference."""
    pos = {pid: i for i, pid in enumerate(pair.small.problem_ids)}
    cells = []
    for bc in binned:
        m = np.array([pos[p] for p in bc.problems], dtype=np.int64)
        s, lg = take(pair.small, m), take(pair.large, m)
        for k in (k for k in level_ks if k <= lg.k):
            level = full_cost(lg, k)
            if full_cost(s, s.k) < level * (1 - 1e-6):  # beyond the small pool: it could only be under-spent
                continue
            sp = best_within(bc.small, level, range(1, s.k + 1))
            lp = best_within(bc.large, level, range(1, lg.k + 1))
            if sp is None or lp is None:  # the small model's single sample dearer than the large one's: no cell
                continue
            cells.append(Cell(bc, k, level, sp, lp, mean_ci(sp.per_problem - lp.per_problem, reps, seed)))
    return cells


def win_share(cells: Sequence[Cell]) -> float | None:
    """Share of cells where the small model's point accuracy is above the large one's (None: no cell)."""
    return sum(c.small_wins for c in cells) / len(cells) if cells else None
