"""Input against output compute: choices over (configuration, rule, samples), replayed and held out."""

from __future__ import annotations

import numpy as np
import pytest

from ttscale.errors import ConfigError
from ttscale.planner.input_output import Arm, ArmSample, Choice, best_within, choice_table, held_out


def s(answer: str | None, f1: float, *, lp: float = -1.0, n: int = 5, eff: float = 100.0, pre: float = 0.0) -> ArmSample:
    return ArmSample(answer, {"f1": f1, "em": float(f1 == 1.0)}, lp, n, eff, pre)


def test_majority_over_all_samples_is_exact_and_one_sample_is_the_mean() -> None:
    # two of three samples agree on the right answer: majority@3 is always right; one sample is right 2/3
    row = [s("x", 1.0, pre=90.0), s("y", 0.0), s("x", 1.0)]
    tab = choice_table([Arm("k=1 m=0", [row])], orders=400, seed=1)
    by = {c: i for i, c in enumerate(tab.choices)}
    assert tab.score["f1"][by[Choice("k=1 m=0", "majority", 3)], 0] == 1.0
    assert tab.score["f1"][by[Choice("k=1 m=0", "majority", 1)], 0] == pytest.approx(2 / 3, abs=0.06)
    # s = 1 is one choice, not one per rule
    assert sum(c.s == 1 for c in tab.choices) == 1


def test_costs_in_both_units() -> None:
    row = [s("x", 1.0, eff=300.0, pre=280.0, n=10), s("y", 0.0, eff=300.0, pre=0.0, n=20)]
    shared = choice_table([Arm("drag", [row], shared_prefill=True)], orders=4)
    own = choice_table([Arm("iter", [row], shared_prefill=False)], orders=4)
    i2 = next(i for i, c in enumerate(shared.choices) if c.s == 2 and c.rule == "majority")
    # the paper's budget: every sample is a call over the whole context
    assert shared.cost["effective"][i2, 0] == 600.0
    # the engine: one shared prefill, then each sample's generated tokens (mean 15)
    assert shared.cost["processed"][i2, 0] == 280.0 + 2 * 15.0
    # IterDRAG transcripts pay their own calls: mean prefilled 140 + mean generated 15, per sample
    assert own.cost["processed"][i2, 0] == 2 * (140.0 + 15.0)


def test_an_arms_scores_do_not_move_when_another_arm_joins() -> None:
    rng = np.random.default_rng(3)
    rows = [[s("x" if rng.random() < 0.5 else f"w{j}", 0.0) for j in range(4)] for _ in range(6)]
    rows = [[ArmSample(x.answer, {"f1": float(x.answer == "x")}, x.logprob, x.n_tokens, x.effective, x.prefilled)
             for x in row] for row in rows]
    alone = choice_table([Arm("b", rows)], orders=5, seed=0)
    joined = choice_table([Arm("a", rows), Arm("b", rows)], orders=5, seed=0)
    mine = [i for i, c in enumerate(joined.choices) if c.arm == "b"]
    assert np.array_equal(joined.score["f1"][mine], alone.score["f1"])
    # the orderings differ between arms: the same samples under another label are replayed otherwise
    theirs = [i for i, c in enumerate(joined.choices) if c.arm == "a"]
    assert not np.array_equal(joined.score["f1"][theirs], joined.score["f1"][mine])


def test_best_of_n_takes_the_most_certain_sample_and_ties_follow_the_live_vote() -> None:
    row = [s("y", 0.0, lp=-9.0), s("x", 1.0, lp=-1.0)]
    tab = choice_table([Arm("a", [row])], orders=50, seed=0)
    bo = next(i for i, c in enumerate(tab.choices) if c.rule == "best-of-n" and c.s == 2)
    maj = next(i for i, c in enumerate(tab.choices) if c.rule == "majority" and c.s == 2)
    assert tab.score["f1"][bo, 0] == 1.0
    # one vote each: the live rule breaks the tie by summed log-prob, so "x" wins in every ordering
    assert tab.score["f1"][maj, 0] == 1.0


def test_held_out_picks_samples_when_they_buy_more_than_input() -> None:
    rng = np.random.default_rng(0)
    Q = 40
    # cheap arm: each sample right with p = 0.6, so majority@5 ~ 0.68; a dear arm (5x the context): one
    # sample right with p = 0.55. At the budget of five cheap samples, samples should win.
    cheap = [[s("x" if rng.random() < 0.6 else f"w{j}", 0.0, eff=100.0) for j in range(5)] for _ in range(Q)]
    cheap = [[ArmSample(x.answer, {"f1": float(x.answer == "x")}, x.logprob, x.n_tokens, x.effective, x.prefilled)
              for x in row] for row in cheap]
    dear = [[ArmSample("x" if rng.random() < 0.55 else "z", {"f1": 0.0}, -1.0, 5, 500.0, 0.0)] for _ in range(Q)]
    dear = [[ArmSample(x.answer, {"f1": float(x.answer == "x")}, -1.0, 5, 500.0, 0.0) for x in row] for row in dear]
    tab = choice_table([Arm("k=1", cheap), Arm("k=5", dear)], orders=50, seed=0)
    [h] = held_out(tab, "f1", "effective", [512], splits=50, seed=0)
    assert h.more_samples == 50
    assert h.gain_over_input_only.mean() > 0
    assert h.shares.mean() > 0.9


def test_best_within_respects_budget_and_mask() -> None:
    score = np.array([0.1, 0.9, 0.5])
    cost = np.array([10.0, 100.0, 20.0])
    assert best_within(score, cost, 50) == 2
    assert best_within(score, cost, 500) == 1
    assert best_within(score, cost, 500, np.array([True, False, False])) == 0
    assert best_within(score, cost, 5) is None


def test_misaligned_questions_and_unknown_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="same questions"):
        choice_table([Arm("a", [[s("x", 1.0)]]), Arm("b", [[s("x", 1.0)], [s("x", 1.0)]])])
    with pytest.raises(ConfigError, match="unknown rule"):
        choice_table([Arm("a", [[s("x", 1.0)]])], rules=["median"])
    tab = choice_table([Arm("a", [[s("x", 1.0)]])])
    with pytest.raises(ConfigError, match="no metric"):
        held_out(tab, "bleu", "effective", [128])
    with pytest.raises(ConfigError, match="unknown unit"):
        held_out(tab, "f1", "dollars", [128])
