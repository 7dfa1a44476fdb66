"""The policy's online vote equals replay's on every shipped pool: the rule a plan was fitted on is the
rule it applies, with the task's answer equivalence on both sides."""

from __future__ import annotations

import numpy as np
import pytest

from ttscale.planner.data import load_plan_pool
from ttscale.planner.options import Choice, _rule_outcomes, aggregate, choice_kinds
from ttscale.pools import shipped_runs, shipped_store
from ttscale.replay.pool import read_run, task_equivalence
from ttscale.store import Store

VOTING = [r for r in shipped_runs() if not r.startswith("humaneval")]


@pytest.fixture(scope="module")
def store() -> Store:
    return Store(shipped_store())


@pytest.mark.skipif(not VOTING, reason="no shipped voting pool in this checkout")
@pytest.mark.parametrize("run", VOTING)
def test_online_aggregation_equals_replay_on_the_shipped_pool(store: Store, run: str) -> None:
    pool = load_plan_pool(store, [run]).pool
    _, by_problem, task = read_run(store, run)
    equivalent = task_equivalence(task)
    assert equivalent is not None, f"task {task!r} of {run} declares no answer equivalence"
    P, K = pool.n_problems, pool.k
    first_k = np.broadcast_to(np.arange(K), (P, 1, K))  # the first k samples, as the policy draws them
    for kind in choice_kinds():
        ks = sorted(k for k in {1, 4, K} if k <= K)  # a pilot pool may hold fewer than 4 samples
        replayed = _rule_outcomes(pool, first_k, kind, ks)
        for k in ks:
            online = []
            for pid in pool.problem_ids:
                samples = sorted(by_problem[pid], key=lambda s: s.index)[:k]
                answer, _ = aggregate(Choice(kind, k), samples, equivalent)
                online.append(any(s.correct for s in samples if s.answer == answer))
            disagree = [pid for pid, a, b in zip(pool.problem_ids, online, replayed[k][:, 0], strict=True) if a != b]
            assert not disagree, f"{run} {kind}@{k}: online and replay disagree on {disagree[:5]}"


def test_equivalent_answers_vote_together_online_as_in_replay() -> None:
    from ttscale.replay.pool import pool_from_samples
    from ttscale.tasks.answers import answers_equivalent
    from ttscale.types import Sample

    def s(i: int, a: str, ok: bool) -> Sample:
        return Sample(i, a, a, ok, 4, 4, 4, 1.0, "stop", logprob=-1.0)

    samples = [s(0, "3", False), s(1, "0.5", True), s(2, "3", False), s(3, "1/2", True), s(4, "\\frac{1}{2}", True)]
    pool = pool_from_samples({"p": samples}, k=5, equivalent=answers_equivalent)
    first = np.broadcast_to(np.arange(5), (1, 1, 5))
    for kind in ("majority", "weighted-majority"):
        assert _rule_outcomes(pool, first, kind, [5])[5][0, 0] == 1.0
        answer, votes = aggregate(Choice(kind, 5), samples, answers_equivalent)
        assert answer == "0.5" and set(votes) == {"3", "0.5"}
        assert aggregate(Choice(kind, 5), samples)[0] == "3"  # without the task's equivalence: the wrong winner
