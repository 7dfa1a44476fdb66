"""rag-scaling: the computation-allocation model's fit, the configuration grid's commands, and the page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ttscale.errors import ConfigError
from ttscale.experiments.rag_scaling import (
    FULL,
    K_GRID,
    LARGER,
    M_GRID,
    N_GRID,
    PILOT,
    ConfigRun,
    RagConfig,
    features,
    fit_allocation,
    logit,
    page,
    parse_run_id,
    run_command,
    shipped_rag_runs,
)
from ttscale.planner.input_output import ArmSample

SECTIONS = ("## Configurations", "## Accuracy against effective context length", "## The computation-allocation model",
            "## Held out: the predicted configuration against the oracle", "## Extrapolation from smaller budgets",
            "## Documents, demonstrations, iterations or samples?", "## The paper's claims here")


def test_the_allocation_fit_recovers_known_coefficients_across_tasks() -> None:
    rng = np.random.default_rng(0)
    a, b, c = np.array([0.4, 0.2, 0.3]), np.array([2.0, -1.5]), -1.2
    cfgs = [RagConfig(k, m, n) for k in (0, 1, 2, 5, 10, 20, 50) for m in (0, 1, 2, 4) for n in (0, 1, 2)]
    x = features(cfgs)
    gains = [np.array([0.05, 0.02]), np.array([0.15, 0.10]), np.array([0.30, -0.05])]  # three "tasks"
    X = np.vstack([x] * 3)
    i = np.vstack([np.broadcast_to(g, (len(cfgs), 2)) for g in gains])
    w = a + np.hstack([b * i, np.zeros((len(X), 1))])
    y = (w * X).sum(axis=1) + c
    fit = fit_allocation(X, i, y)
    assert fit.b is not None and fit.r2 == pytest.approx(1.0)
    assert np.allclose(fit.a, a) and np.allclose(fit.b, b) and fit.c == pytest.approx(c)
    assert np.allclose(fit.predict_logit(x, gains[1]), y[len(cfgs): 2 * len(cfgs)])
    # with noise: still close, R^2 below 1
    noisy = fit_allocation(X, i, y + rng.normal(0, 0.05, len(y)))
    assert np.allclose(noisy.a, a, atol=0.05) and np.allclose(noisy.b, b, atol=0.6) and 0.9 < noisy.r2 < 1


def test_one_task_identifies_only_a_plus_b_times_i() -> None:
    cfgs = [RagConfig(k, m, n) for k in (0, 1, 5, 20) for m in (0, 1, 2) for n in (0, 1)]
    x = features(cfgs)
    i = np.broadcast_to(np.array([0.1, 0.05]), (len(cfgs), 2))
    w = np.array([0.5 + 2 * 0.1, 0.3 - 1 * 0.05, 0.2])
    fit = fit_allocation(x, i, x @ w - 2.0)
    assert fit.b is None and np.allclose(fit.a, w) and fit.c == pytest.approx(-2.0)
    # a feature that never varies (DRAG only: n = 0) gets weight 0 instead of breaking the fit
    drag = [c for c in cfgs if c.n == 0]
    xd = features(drag)
    only = fit_allocation(xd, i[: len(drag)], xd @ w - 2.0)
    assert only.a[2] == 0 and np.allclose(only.a[:2], w[:2])
    with pytest.raises(ConfigError):
        fit_allocation(xd[:1], i[:1], np.zeros(1))
    assert np.isfinite(logit(np.array([0.0, 1.0]), 0.01)).all()


def test_the_grid_names_its_runs_and_makes_resumable_commands() -> None:
    cfg = RagConfig(5, 2, 0)
    assert parse_run_id(cfg.run_id("rag-qwen05")) == ("rag-qwen05", cfg)
    assert parse_run_id("gsm8k-qwen05-k16") is None
    sweep = run_command(cfg, model="qwen2.5-coder-0.5b", store="s.sqlite", limit=30, samples=2, max_tokens=32,
                        prefix="rag-qwen05")
    assert sweep[:2] == ["ttscale", "sweep"] and "docs=5" in sweep and sweep[sweep.index("--shots") + 1] == "2"
    assert sweep[sweep.index("--run-id") + 1] == "rag-qwen05-k5-m2-n0"
    it = run_command(RagConfig(2, 1, 2), model="m", store="s", limit=30, samples=2, max_tokens=32, prefix="p")
    assert it[:2] == ["ttscale", "run"] and "rounds=2" in it and "iterdrag" in it
    assert len(set(PILOT)) == len(PILOT) and {c.n for c in PILOT} == {0, 1, 2}
    # the full grid reaches every value the issue names; the larger model's holds the gains' three configurations
    assert len(set(FULL)) == len(FULL) and set(FULL) >= set(PILOT)
    assert ({c.k for c in FULL}, {c.m for c in FULL}, {c.n for c in FULL}) == (set(K_GRID), set(M_GRID), set(N_GRID))
    assert len(set(LARGER)) == len(LARGER) and {RagConfig(0, 0), RagConfig(1, 0), RagConfig(0, 1)} <= set(LARGER)


def _synthetic(rng: np.random.Generator, prefix: str = "syn", cfgs: list[RagConfig] | None = None,
               shift: float = 0.0, n_params: int = 500_000_000) -> list[ConfigRun]:
    qs = [f"q{j}" for j in range(24)]
    runs = []
    if cfgs is None:
        cfgs = [RagConfig(k, m) for k in (0, 1, 2, 5, 10) for m in (0, 1, 2)] + [RagConfig(2, 1, 1), RagConfig(2, 1, 2)]
    for c in cfgs:
        x = features([c])[0]
        p = 1 / (1 + np.exp(-((0.5 + shift) * x[0] + 0.3 * x[1] + 0.2 * x[2] - 2 + shift)))
        length = (60 + 120 * c.k) * (1 + c.m) * (1 + 2 * c.n)
        n = 2 if c.n == 0 else 1
        # each sample right with p (its answer "gold", F1 1) or wrong in its own way (F1 0.2)
        per = {q: [ArmSample("gold" if (ok := rng.random() < p) else f"w{q}{i}", {"em": float(ok), "f1": 1.0 if ok else 0.2},
                             -1.0, 8, length, length if i == 0 else 0.0) for i in range(n)] for q in qs}
        runs.append(ConfigRun(c.run_id(prefix), c, f"fake-{prefix}",
                              {q: float(np.mean([x.scores["em"] for x in per[q]])) for q in qs},
                              {q: float(np.mean([x.scores["f1"] for x in per[q]])) for q in qs},
                              {q: length * (0.8 + 0.4 * rng.random()) for q in qs}, length * 8.0,
                              n * len(qs), per_sample=per, n_params=n_params))
    if prefix == "syn":
        runs.append(ConfigRun("syn-k20-m0-n0", RagConfig(20, 0), "fake", {"q0": 1.0}, {"q0": 1.0}, {"q0": 3000.0},
                              3000.0, 2))  # an unfinished pool: left out, and said so
    return runs


def test_the_page_from_synthetic_runs_has_every_section(tmp_path: Path) -> None:
    pg = page(_synthetic(np.random.default_rng(1)), ["`syn-k50-m0-n0`"], tmp_path)
    md = pg.markdown()
    for s in SECTIONS:
        assert s in md
    assert "R^2" in md and "incomplete pools left out: `syn-k20-m0-n0`" in md and "`syn-k50-m0-n0`" in md
    assert (tmp_path / "rag-scaling.png").stat().st_size > 10_000
    assert "## A larger model" not in md


def test_a_larger_model_gets_its_own_section_beside_the_grid(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    larger = [RagConfig(0, 0), RagConfig(1, 0), RagConfig(0, 1), RagConfig(2, 1), RagConfig(5, 1)]
    big = _synthetic(rng, "big", larger, shift=1.5, n_params=1_500_000_000)
    md = page(_synthetic(rng) + big, [], tmp_path).markdown()
    assert "## A larger model on fewer configurations (fake-big)" in md
    sec = md.split("## A larger model")[1].split("\n## ")[0]
    # every shared configuration is compared, and the much stronger model is shown better at most of them
    assert sec.count("| k=") == len(larger)
    claims = md.split("## The paper's claims here")[1]
    line = next(row for row in claims.splitlines() if "A larger model (fake-big)" in row)
    better = int(line.split("fake-big is better at ")[1].split(" of ")[0])
    assert better >= 3
    assert "both models" in sec  # the gains differ, so a and b separate
    # the main grid stays the smaller model's: its configurations table does not list the larger one's runs
    assert "`big-k5-m1-n0`" not in md.split("## Accuracy against")[0]


def test_the_page_builds_from_the_shipped_pools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if len(shipped_rag_runs()) < 2:
        pytest.skip("no shipped RAG configuration pools")
    from typer.testing import CliRunner

    from ttscale.cli import app

    res = CliRunner().invoke(app, ["experiment", "rag-scaling", "--output", str(tmp_path)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    md = (tmp_path / "rag-scaling.md").read_text()
    for s in SECTIONS:
        assert s in md
    assert "qwen2.5-coder-0.5b" in md and (tmp_path / "rag-scaling.png").exists()
    if len(shipped_rag_runs("rag-qwen15")) >= 2:
        assert "## A larger model on fewer configurations (qwen2.5-coder-1.5b)" in md
