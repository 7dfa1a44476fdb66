"""Pools with known structure for planner tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ttscale.planner.data import PlanPool
from ttscale.replay.pool import Pool


@dataclass(frozen=True)
class Group:
    """``n`` problems where a sample is correct with probability ``p``; wrong samples spread over ``wrong``
    answers (the first one ``dominant`` of the time); correct samples' mean log-prob is raised by ``boost``."""

    n: int
    p: float
    wrong: int = 6
    dominant: float = 0.0
    boost: float = 0.0
    prompt: float = 50.0
    lp: float = -1.0
    """Mean log-prob level of the group's samples (models are less sure on harder problems)."""


def known_pool(groups: Sequence[Group], k: int = 16, seed: int = 0, tokens: int = 10) -> PlanPool:
    rng = np.random.default_rng(seed)
    rows_ans, rows_lp, prompts, names = [], [], [], []
    for gi, g in enumerate(groups):
        for j in range(g.n):
            ok = rng.random(k) < g.p
            wrong = np.where(rng.random(k) < g.dominant, 1, rng.integers(1, g.wrong + 1, k))
            rows_ans.append(np.where(ok, 0, wrong))
            rows_lp.append(rng.normal(g.lp, 0.05, k) + g.boost * ok)
            prompts.append(g.prompt)
            names.append(f"g{gi}-{j}")
    answer = np.array(rows_ans, dtype=np.int64)
    P = len(names)
    A = int(answer.max()) + 1
    ac = np.zeros((P, A), dtype=bool)
    ac[:, 0] = True
    n_tok = np.full((P, k), float(tokens))
    mlp = np.array(rows_lp)
    pool = Pool(
        problem_ids=names, answer=answer, answer_correct=ac, n_tokens=n_tok, logprob=mlp * n_tok,
        finish_rank=np.tile(np.arange(k), (P, 1)), prefill_tokens=np.full(P, 20.0), prefill_flops=np.zeros(P),
        sample_tokens=n_tok.copy(), sample_flops=np.zeros((P, k)), scores={"certainty": np.exp(mlp)},
        run_id="known", task="known", model="known",
    )
    return PlanPool(pool, np.array(prompts), ["known"] * P)
