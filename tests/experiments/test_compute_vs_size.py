"""compute-vs-size: FLOPs matching, difficulty bins, win shares and the two-model planner, on synthetic pools;
and the page from the shipped pools."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ttscale.cli import app
from ttscale.experiments import experiments
from ttscale.experiments.matched_flops import (
    ModelPair,
    bin_curves,
    compare_bins,
    full_cost,
    pair_pools,
    predicted_pass_rate,
    quantile_bins,
    take,
    win_share,
)
from ttscale.experiments.two_model_plan import FixedPoint, flops_plan_pool, mix_at, plan_two_models
from ttscale.replay.pool import Pool
from ttscale.testing.synthetic import synthetic_pool


def _model(pool: Pool, model: str, flops_scale: float, run_id: str) -> Pool:
    """The synthetic pool as one model's sweep: its own name, a token ``flops_scale`` times as dear."""
    return dataclasses.replace(pool, model=model, run_id=run_id, task="arith",
                               prefill_flops=pool.prefill_flops * flops_scale,
                               sample_flops=pool.sample_flops * flops_scale)


def _pair(small_difficulty: tuple[float, float], large_difficulty: tuple[float, float], n: int = 40) -> ModelPair:
    small = _model(synthetic_pool(n, 16, difficulty=small_difficulty, seed=1), "small", 1.0, "s")
    large = _model(synthetic_pool(n, 16, difficulty=large_difficulty, seed=2), "large", 3.0, "l")
    pairs, notes = pair_pools({"l": large, "s": small})
    assert not notes
    return pairs[0]


def test_pairs_the_cheaper_token_as_the_small_model_on_the_shared_problems_row_by_row() -> None:
    small = _model(synthetic_pool(12, 8, seed=1), "small", 1.0, "s")
    large = _model(synthetic_pool(12, 8, seed=2), "large", 3.0, "l")
    partial = take(large, np.arange(11, 2, -1))  # a pool still being made: 9 problems, in another order
    other = dataclasses.replace(synthetic_pool(5, 8, seed=3), task="elsewhere", run_id="x")
    (pair,), notes = pair_pools({"l": partial, "s": small, "x": other})
    assert (pair.small_id, pair.large_id) == ("s", "l") and pair.large_total == 9
    assert pair.small.problem_ids == pair.large.problem_ids == [f"synthetic-{i}" for i in range(3, 12)]
    i = small.problem_ids.index("synthetic-7")
    assert np.array_equal(pair.small.answer[pair.small.problem_ids.index("synthetic-7")], small.answer[i])
    assert np.array_equal(pair.large.answer[pair.large.problem_ids.index("synthetic-7")],
                          large.answer[large.problem_ids.index("synthetic-7")])
    assert pair.small_full.n_problems == 12
    assert len(notes) == 1 and "elsewhere" in notes[0] and "not compared" in notes[0]


def test_quantile_bins_keep_ties_together_and_are_ordered() -> None:
    v = np.array([0, 0, 0, 0, 0, 0.25, 0.5, 0.5, 0.75, 1.0, 1.0, 1.0])
    bins, edges = quantile_bins(v, 3)
    assert edges == sorted(edges) and len(set(bins.tolist())) <= 3
    for a in np.unique(v):  # equal values share a bin
        assert len(set(bins[v == a].tolist())) == 1
    order = np.argsort(v, kind="stable")
    assert np.all(np.diff(bins[order]) >= 0)  # a higher value never lands in a lower bin
    assert bins[v == 0][0] == 0 and bins[v == 1.0][0] == bins.max() > 0
    assert set(quantile_bins(np.zeros(6), 3)[0].tolist()) == {0}  # all tied: one bin


def test_predicted_pass_rate_never_reads_the_problems_own_reference() -> None:
    full = synthetic_pool(30, 8, seed=4)
    targets = full.problem_ids[:10]
    base = predicted_pass_rate(full, targets, n_orders=8)
    assert 0 < full.correct[0].mean() < 1
    wrong = full.answer_correct.copy()
    wrong[0] = False  # the reference of target 0 changes (now none of its samples is right); its samples do not
    moved = predicted_pass_rate(dataclasses.replace(full, answer_correct=wrong), targets, n_orders=8)
    assert moved[0] == pytest.approx(base[0])
    assert not np.allclose(moved[1:], base[1:])  # others were fitted on problem 0's pass rate
    assert np.all((base >= 0) & (base <= 1))


def test_bins_are_numbered_over_the_non_empty_ones() -> None:
    pair = _pair((2.0, 2.0), (2.0, 2.0), n=12)
    values = np.where(np.arange(12) < 6, 0.0, 1.0)  # quantile edges fall between the two values
    binned = bin_curves(pair, "oracle", values, 4, n_orders=4, n_bootstrap=5)
    assert [b.index for b in binned] == [0, 1]
    assert [len(b.problems) for b in binned] == [6, 6] and binned[1].lo == 1.0


def test_cells_match_flops_and_pick_the_best_point_within_the_level() -> None:
    pair = _pair((2.0, 2.0), (2.0, 2.0))
    binned = bin_curves(pair, "oracle", pair.small.correct.mean(axis=1), n_orders=16, n_bootstrap=20)
    cells = compare_bins(pair, binned, reps=50)
    assert cells and {c.level_k for c in cells} <= {1, 2, 4, 6, 8}
    pos = {pid: i for i, pid in enumerate(pair.small.problem_ids)}
    for c in cells:
        rows = np.array([pos[p] for p in c.bin.problems])
        assert c.flops == pytest.approx(full_cost(take(pair.large, rows), c.level_k))
        assert c.small.flops <= c.flops * (1 + 1e-9) and c.large.flops <= c.flops * (1 + 1e-9)
        within = [p.accuracy for p in c.bin.small.points if p.flops <= c.flops * (1 + 1e-9)]
        assert c.small.accuracy == pytest.approx(max(within))
        # a token 3x dearer: the small model can afford about 3x the samples at a level
        assert c.small.k >= c.level_k or c.small.strategy == "adaptive"
        assert c.ci[0] <= c.diff <= c.ci[1]
        assert np.mean(c.small.per_problem) == pytest.approx(c.small.accuracy)
    # a level the small pool cannot reach is left out, never compared with less compute
    assert all(full_cost(take(pair.small, [pos[p] for p in c.bin.problems]), 16) >= c.flops * (1 - 1e-6)
               for c in cells)


def test_win_share_follows_which_model_is_better() -> None:
    easy_small = _pair((8.0, 1.0), (1.0, 8.0))
    hard_small = _pair((1.0, 8.0), (8.0, 1.0))
    shares = []
    for pair in (easy_small, hard_small):
        binned = bin_curves(pair, "oracle", pair.small.correct.mean(axis=1), n_orders=16, n_bootstrap=20)
        cells = compare_bins(pair, binned, reps=50)
        shares.append(win_share(cells))
    assert shares == [1.0, 0.0]
    assert win_share([]) is None


def test_prompt_blind_mix_interpolates_on_the_upper_hull() -> None:
    pp = np.zeros(4)
    pts = [FixedPoint("a", "m", 1, 0.2, 1.0, pp + 0.2), FixedPoint("a", "m", 2, 0.3, 1.5, pp + 0.3),
           FixedPoint("b", "m", 1, 0.8, 2.0, pp + 0.8), FixedPoint("b", "m", 2, 0.85, 3.0, pp + 0.85)]
    mid = mix_at(pts, 1.5)  # (1.5, 0.3) lies below the chord from (1, 0.2) to (2, 0.8)
    assert mid is not None and mid.accuracy == pytest.approx(0.5) and np.allclose(mid.per_problem, 0.5)
    top = mix_at(pts, 10.0)
    assert top is not None and top.accuracy == 0.85
    assert mix_at(pts, 0.5) is None


def test_planner_pools_cost_flops_and_keep_prompt_lengths() -> None:
    pool = _model(synthetic_pool(6, 4, seed=5), "small", 2.0, "s")
    pp = flops_plan_pool(pool)
    assert np.allclose(pp.pool.sample_tokens, pool.sample_flops / 1e9)
    assert np.allclose(pp.pool.prefill_tokens, pool.prefill_flops / 1e9)
    assert np.allclose(pp.prompt_tokens, pool.prefill_tokens)


def test_two_model_plan_is_held_out_and_compared_at_its_own_spend() -> None:
    pair = _pair((1.5, 1.5), (4.0, 1.0), n=24)
    plan = plan_two_models(pair, n_orders=8, reps=50)
    assert plan.problems == 24 and plan.levels
    for lv in plan.levels:
        assert 0 <= lv.large_share <= 1 and 0 <= lv.accuracy <= 1
        for b in (lv.best_small, lv.best_large, lv.mix):
            assert b is None or b.gflops <= lv.gflops * (1 + 1e-9)
        if lv.mix is not None and lv.best_fixed is not None:
            assert lv.mix.accuracy >= lv.best_fixed.accuracy - 1e-9  # a mix never does worse than a point it holds
    assert plan.mean_gain is not None and np.isfinite(plan.mean_gain)


def test_compute_vs_size_page_builds_from_the_shipped_pools(tmp_path: Path) -> None:
    assert "compute-vs-size" in experiments()
    res = CliRunner().invoke(app, ["experiment", "compute-vs-size", "--output", str(tmp_path)])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "compute-vs-size.md").read_text()
    assert "## The claim" in page and "Snell et al." in page and "95% CI" in page
    assert "GSM8K" in page and "samples for" in page  # the 1.5B pool's size is stated
    assert "humaneval-qwen15-k16" in page  # compared, or named as absent
    assert "| oracle |" in page and "| predicted |" in page and "The planner with both models" in page
    assert "R = D_inference / D_pretrain" in page
    # re-priced on this CPU's calibrated profile and an H100's: a verdict per profile, or why no cell exists
    assert page.count("### Re-priced on hardware") == 2
    assert "Priced on hardware instead of FLOPs, on cpu-2core" in page and "on h100" in page
    assert (tmp_path / "compute-vs-size.png").read_bytes()[:4] == b"\x89PNG"
