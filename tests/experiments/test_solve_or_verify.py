"""solve-or-verify: the matched-compute accounting finds a constructed crossover, and the page reads judge
scores (and their stored costs) from a synthetic pool: a cheap perfect judge beats self-consistency from the
first budget, a dear useless one never does, and a pool without judge scores says which command makes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ttscale.experiments import experiments
from ttscale.experiments.solve_or_verify import measure, run
from ttscale.experiments.verify_budget import at_budget, compare, crossover
from ttscale.store import Store
from ttscale.types import Problem, Sample

RUN = "synthetic-k16"
NAME = "judge-big-v1"
P, K, FLOPS = 40, 16, 1e9
TASK = {"name": "gsm-symbolic", "seed": None,
        "format": {"style": "chat", "shots": 0, "instruction": "", "max_tokens": 64, "stop": []}}


def _store(tmp_path: Path, answers: dict[str, float], judge: str | None, judge_flops: float = 0.0,
           judged_problems: int = 30, judged_samples: int = 8, seed: int = 0) -> Store:
    """P problems (reference "42") x K samples drawn from ``answers``; a judge scores the first
    ``judged_samples`` of the first ``judged_problems``: ``perfect`` (1 if right), ``random``, or none."""
    rng = np.random.default_rng(seed)
    st = Store(tmp_path / "s.sqlite")
    st.open_run(RUN, {"task": TASK}, {"name": "policy"}, kind="sweep")
    st.add_problems(RUN, [Problem(f"p{i}", f"question {i}", "42") for i in range(P)])
    names, probs = list(answers), np.array(list(answers.values()))
    for i in range(P):
        samples = []
        for j in range(K):
            a = str(rng.choice(names, p=probs / probs.sum()))
            s = Sample(j, f"The answer is {a}.", a, a == "42", 100, 50, 50 if j == 0 else 0, FLOPS, "stop")
            if judge and i < judged_problems and j < judged_samples:
                s.scores = {NAME: float(a == "42") if judge == "perfect" else float(rng.random()),
                            f"{NAME}:prefilled": 160.0, f"{NAME}:generated": 0.0, f"{NAME}:flops": judge_flops,
                            f"{NAME}:seconds": 1.0}
            samples.append(s)
        st.add_samples(RUN, f"p{i}", samples)
    if judge:
        st.set_note(RUN, f"score:{NAME}", {"verifier": "judge", "model": "big", "verifications": 1})
    return st


def test_at_budget_interpolates_holds_and_starts_at_the_first_point() -> None:
    acc = np.array([[0.0, 1.0, 0.5]])
    costs = np.array([2.0, 4.0, 6.0])
    assert at_budget(acc, costs, 1.0) is None
    assert at_budget(acc, costs, 3.0)[0] == pytest.approx(0.5)  # type: ignore[index]
    assert at_budget(acc, costs, 9.0)[0] == pytest.approx(0.5)  # type: ignore[index]


def test_compare_finds_the_constructed_crossover_and_match_multiple() -> None:
    # SC flat at 0.5; best-of-S' at 0.1 S'. At unit 2 (verification costs a solution), S' = B / 2:
    # 0.05 B passes 0.5 after B = 10, so from budget 11 on; SC's best (0.5 at k = 1) is reached at S' = 5, cost 10.
    sc = np.full((20, K), 0.5)
    genrm = np.tile(0.1 * np.arange(1, K + 1), (20, 1))
    m = compare("best-of-n", "flops", 2.0, sc, genrm, list(range(1, K + 1)), reps=50)
    assert m.crossover == 11 and m.first_significant == 11
    assert m.sc_significant == [2, 3, 4, 5, 6, 7, 8, 9]  # 10 is a tie
    assert m.match_multiple == pytest.approx(10.0)
    assert [b.solutions for b in m.beyond] == list(range(9, K + 1))  # dearer than SC@16
    assert crossover([1, 2, 3], [0.1, -0.1, 0.2]) == 3


def test_a_cheap_perfect_judge_wins_from_the_first_budget(tmp_path: Path) -> None:
    # the right answer is a minority: majority voting settles on "41", a perfect judge finds "42"
    st = _store(tmp_path, {"42": 0.35, "41": 0.45, "7": 0.2}, "perfect", judge_flops=0.01 * FLOPS)
    (res,), policy = measure(st, RUN)
    assert policy == "policy" and (res.problems, res.S, res.K) == (30, 8, K)
    assert res.unit("flops") == pytest.approx(1.01) and res.unit("generated") == pytest.approx(1.0)
    m = res.matched[("best-of-n", "flops")]
    assert m.crossover == m.rows[0].budget == 2  # one solution plus its verification costs 1.01
    page = run(st, [RUN], tmp_path / "out")
    assert "does not hold here" in page.verdict and "every budget from the first" in page.verdict
    assert (tmp_path / "out" / "solve-or-verify.png").exists()
    assert "| budget (solutions) |" in page.markdown() and "big" in page.verdict


def test_a_dear_useless_judge_never_crosses(tmp_path: Path) -> None:
    st = _store(tmp_path, {"42": 0.6, "41": 0.1, "40": 0.1, "7": 0.1, "8": 0.1}, "random", judge_flops=3 * FLOPS)
    page = run(st, [RUN], tmp_path / "out")
    (res,), _ = measure(st, RUN)
    m = res.matched[("best-of-n", "flops")]
    assert res.unit("flops") == pytest.approx(4.0) and m.crossover is None and m.first_significant is None
    assert m.sc_significant and m.match_multiple is None
    assert "holds here" in page.verdict and f"no crossover within {K}" in page.verdict


def test_without_judge_scores_the_page_says_how_to_make_them(tmp_path: Path) -> None:
    st = _store(tmp_path, {"42": 0.6, "41": 0.4}, None)
    page = run(st, [RUN, "missing-pool"], tmp_path / "out")
    assert page.verdict.startswith("Not measured") and "ttscale pool score" in page.verdict
    assert "missing-pool" in page.verdict
    assert "solve-or-verify" in experiments()
