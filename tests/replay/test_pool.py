"""Pools group answers as the task compares them, so equivalent answers vote together in replay too."""

from __future__ import annotations

import numpy as np

from ttscale.replay.estimators import vote_winners, winners_correct
from ttscale.replay.pool import pool_from_samples, task_equivalence
from ttscale.tasks.answers import answers_equivalent
from ttscale.types import Sample


def _s(i: int, answer: str, correct: bool) -> Sample:
    return Sample(i, "", answer, correct, 5, 3, 3 if i == 0 else 0, 1.0, "stop")


def samples() -> dict[str, list[Sample]]:
    # "1/2" and "0.5" are one answer; as strings they split the vote and "3" wins
    return {"p": [_s(0, "1/2", True), _s(1, "0.5", True), _s(2, "3", False), _s(3, "3", False), _s(4, "0.50", True)]}


def test_equivalent_answers_share_an_id() -> None:
    exact = pool_from_samples(samples())
    grouped = pool_from_samples(samples(), equivalent=answers_equivalent)
    assert exact.answer[0].tolist() == [0, 1, 2, 2, 3]
    assert grouped.answer[0].tolist() == [0, 0, 1, 1, 0]
    assert grouped.correct[0].tolist() == [True, True, False, False, True]


def majority_of_all(pool) -> bool:  # type: ignore[no-untyped-def]
    winners = vote_winners(pool.answer, np.arange(pool.k)[None, :], [pool.k], pool.n_answers)
    return bool(winners_correct(pool.answer_correct, winners)[0, 0, 0])


def test_majority_follows_the_grouping() -> None:
    assert majority_of_all(pool_from_samples(samples(), equivalent=answers_equivalent))  # 3 votes for 1/2
    assert not majority_of_all(pool_from_samples(samples()))  # "3" has 2 votes, each spelling of 1/2 fewer


def test_task_records_declare_their_comparison() -> None:
    assert task_equivalence("gsm-symbolic") is answers_equivalent
    assert task_equivalence("humaneval") is None and task_equivalence("no-such-task") is None
