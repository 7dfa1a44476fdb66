"""The compute-vs-size cells again, with dollars on a hardware profile in place of FLOPs.

FLOPs count a sample of the small model as cheap as its parameters make it, whatever the batch; a
machine's roofline does not (:mod:`ttscale.roofline`): on a memory-bound GPU the k samples of one
prompt decode together for little more than one (each step reads the weights once), so the small
model's extra samples are almost free while the large model pays its weights' bytes at every step;
on a compute-bound 2-core CPU a decode step of k sequences costs several times one, close to FLOPs.
:func:`priced_cells` re-runs :func:`~ttscale.experiments.matched_flops.compare_bins`'s comparison
with each point priced by :func:`ttscale.replay.pricing.price_point` (one prefill, the point's
samples decoded together, each model by its own shapes): the level is the large model's majority@k
in dollars per problem, each side's entry its most accurate strategy within it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ttscale.experiments.matched_flops import EPS, LEVEL_KS, BinCurves, Cell, ModelPair, Pick, mean_ci, take
from ttscale.replay.curves import Curves
from ttscale.replay.pricing import price_point
from ttscale.roofline import HardwareProfile
from ttscale.types import ModelInfo


def _best_within(curves: Curves, info: ModelInfo, hw: HardwareProfile, usd: float, ks: Sequence[int]) -> Pick | None:
    priced = [(p, price_point(p, info, hw).usd) for p in curves.points if not p.oracle]
    ok = [(p, u) for p, u in priced if u <= usd * (1 + EPS)]
    if not ok:
        return None
    best, cost = max(ok, key=lambda pu: (round(pu[0].accuracy, 12), -pu[1]))
    col = list(ks).index(best.k)
    return Pick(best.strategy, best.k, best.accuracy, cost, curves.per_problem[best.strategy][:, col])


def priced_cells(pair: ModelPair, binned: Sequence[BinCurves], infos: tuple[ModelInfo, ModelInfo],
                 hw: HardwareProfile, level_ks: Sequence[int] = LEVEL_KS, reps: int = 400,
                 seed: int = 0) -> list[Cell]:
    """Every (bin, dollar level) cell on ``hw``: each model's best strategy within the level and the
    paired interval of their difference (:class:`Cell` with ``flops`` and the picks' ``flops`` holding
    dollars per problem). ``infos``: the (small, large) models' shapes."""
    small_info, large_info = infos
    pos = {pid: i for i, pid in enumerate(pair.small.problem_ids)}
    cells = []
    for bc in binned:
        m = np.array([pos[p] for p in bc.problems], dtype=np.int64)
        s, lg = take(pair.small, m), take(pair.large, m)
        levels = {p.k: price_point(p, large_info, hw).usd for p in bc.large.curve("majority")}
        richest_small = max((price_point(p, small_info, hw).usd for p in bc.small.points if not p.oracle),
                            default=0.0)
        for k in (k for k in level_ks if k <= lg.k and k in levels):
            usd = levels[k]
            if richest_small < usd * (1 - 1e-6):  # beyond what the small pool can spend: it could only be under-spent
                continue
            sp = _best_within(bc.small, small_info, hw, usd, range(1, s.k + 1))
            lp = _best_within(bc.large, large_info, hw, usd, range(1, lg.k + 1))
            if sp is None or lp is None:
                continue
            cells.append(Cell(bc, k, usd, sp, lp, mean_ci(sp.per_problem - lp.per_problem, reps, seed)))
    return cells
