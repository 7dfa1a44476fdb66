"""Synthetic sample pools with known structure, for tests and the replay benchmark."""

from __future__ import annotations

import numpy as np

from ttscale.replay.pool import Pool


def synthetic_pool(
    n_problems: int = 100,
    k: int = 64,
    *,
    n_distractors: int = 4,
    difficulty: tuple[float, float] = (1.0, 1.0),
    no_answer: float = 0.05,
    seed: int = 0,
) -> Pool:
    """A pool whose per-problem success rate p ~ Beta(*difficulty).

    Each sample is correct with probability p; otherwise it gives one of
    ``n_distractors`` wrong answers (Dirichlet-weighted, so some problems have a
    dominant wrong answer and voting cannot save them) or, with probability
    ``no_answer``, no answer. Correct samples are a little more confident
    (higher mean log-prob) and lengths vary, so every estimator has work to do.
    """
    rng = np.random.default_rng(seed)
    P, K, D = n_problems, k, n_distractors
    p = rng.beta(*difficulty, size=P)
    wrong = rng.dirichlet(np.full(D, 0.5), size=P)
    u = rng.random((P, K))
    is_ok = u < p[:, None]
    # wrong answers are ids 1..D by inverse-CDF sampling; id 0 is the correct answer
    cdf = np.cumsum(wrong, axis=1)
    pick = (rng.random((P, K, 1)) > cdf[:, None, :]).sum(-1) + 1
    ans = np.where(is_ok, 0, np.minimum(pick, D))
    ans = np.where(~is_ok & (rng.random((P, K)) < no_answer), -1, ans)
    n_tokens = rng.integers(20, 200, size=(P, K)).astype(float)
    mean_lp = rng.normal(-0.6, 0.2, size=(P, K)) + 0.15 * is_ok
    logprob = mean_lp * n_tokens
    answer_correct = np.zeros((P, D + 1), dtype=bool)
    answer_correct[:, 0] = True
    finish_rank = np.argsort(np.lexsort((np.tile(np.arange(K), (P, 1)), n_tokens)), axis=1)
    prompt = rng.integers(50, 150, size=P).astype(float)
    flops_per_token = 2.7e8
    return Pool(
        problem_ids=[f"synthetic-{i}" for i in range(P)],
        answer=ans.astype(np.int64),
        answer_correct=answer_correct,
        n_tokens=n_tokens,
        logprob=logprob,
        finish_rank=finish_rank,
        prefill_tokens=prompt,
        prefill_flops=prompt * flops_per_token,
        sample_tokens=n_tokens.copy(),
        sample_flops=n_tokens * flops_per_token,
        scores={"certainty": np.exp(mean_lp)},
        run_id="synthetic",
        task="synthetic",
        model="synthetic",
    )
