"""End to end on the real embedded model: the CLI's run path, tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.cli import app
from ttscale.cost import Budget
from ttscale.registry import make_strategy, make_task
from ttscale.run import Solve, execute
from ttscale.store import Store
from ttscale.types import Sampling

pytestmark = pytest.mark.model


def test_self_consistency_on_arithmetic_costs_match_engine(smollm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    task = make_task("arithmetic", subtask="arithmetic/1_digit_addition", max_tokens=6)
    st = Store(tmp_path / "s.sqlite")
    summary = execute(Solve(task, make_strategy("self-consistency", k=2), sampling=Sampling(seed=0)), store=st, run_id="it", backend=smollm, limit=2)
    assert summary.problems == 2 and summary.graded == 2
    samples = [s for _, s in st.samples("it")]
    assert len(samples) == 4
    # what the run reports equals what the stored samples (engine counts) add up to
    assert summary.usage.generated_tokens == sum(s.n_tokens for s in samples)
    assert summary.usage.prefilled_tokens == sum(s.prefilled_tokens for s in samples)
    assert summary.usage.flops == pytest.approx(sum(s.flops for s in samples))
    for s in samples:
        assert s.token_logprobs is not None and len(s.token_logprobs) == s.n_tokens
        assert s.correct is not None


def test_budget_cap_on_real_model(smollm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    task = make_task("gsm-symbolic", max_tokens=64)
    st = Store(tmp_path / "s.sqlite")
    summary = execute(Solve(task, make_strategy("self-consistency", k=8), sampling=Sampling(seed=0), budget=Budget(tokens=260)), store=st, run_id="b", backend=smollm, limit=1)
    r = summary.results[0]
    assert r["usage"]["total_tokens"] <= 260
    assert 1 <= len(r["samples"]) < 8


def test_cli_run_on_embedded_model(tmp_path: Path) -> None:
    out = tmp_path / "sum.json"
    r = CliRunner().invoke(app, ["run", "--task", "arithmetic", "--subtask", "arithmetic/1_digit_multiplication",
                                 "--model", "gemma3-270m", "-k", "2", "--limit", "2", "--max-tokens", "6",
                                 "--store", str(tmp_path / "s.sqlite"), "--output", str(out), "--no-progress"],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["problems"] == 2 and data["usage"]["generated_tokens"] > 0
    assert data["model"] == "gemma3-270m" and "accuracy" in r.output


def test_speed_measures_the_engine_and_scales_a_reference_time() -> None:
    import re

    r = CliRunner().invoke(app, ["speed", "smollm2-135m", "--threads", "1", "--expect", "demo=10@5"])
    assert r.exit_code == 0, r.output
    one, eight = (float(x) for x in re.search(r"decode ([\d.]+) ms/token .*?([\d.]+) ms/token each", r.output,
                                              re.S).groups())  # type: ignore[union-attr]
    assert one > 0 and eight > 0
    minutes = float(re.search(r"demo: about (\d+) min", r.output).group(1))  # type: ignore[union-attr]
    assert minutes == pytest.approx(10 * one / 5, abs=0.6)
    bad = CliRunner().invoke(app, ["speed", "smollm2-135m", "--expect", "demo=ten@5"])
    assert bad.exit_code == 2 and "LABEL=MINUTES@MS" in bad.output


def test_rag_questions_answered_from_retrieved_passages(tmp_path: Path) -> None:
    """`ttscale run --task rag` on the real engine: DRAG prompts with passages and demonstrations; each
    sample's grade carries exact match and F1; the retrieved passage ids are stored with the problems."""
    store = tmp_path / "s.sqlite"
    r = CliRunner().invoke(app, ["run", "--task", "rag", "-T", "docs=2", "--shots", "1", "--limit", "2",
                                 "--strategy", "single", "--max-tokens", "24", "--store", str(store),
                                 "--run-id", "rag", "--no-progress", "--threads", "2"])
    assert r.exit_code == 0, r.output
    st = Store(store)
    try:
        problems = st.problems("rag")
        samples = [s for _, s in st.samples("rag")]
    finally:
        st.close()
    assert len(problems) == 2 and all(len(p.meta["retrieved"]) == 2 for p in problems)
    assert len(samples) == 2 and all({"em", "f1"} <= set(s.grade) for s in samples)
    # the prompt holds a demonstration and two passages per question: hundreds of tokens, not a bare question
    assert all(s.prompt_tokens > 200 for s in samples)
    bad = CliRunner().invoke(app, ["run", "--task", "rag", "-T", "docs=-3", "--limit", "1", "--no-progress",
                                   "--store", str(store)])
    assert bad.exit_code != 0 and "docs" in bad.output
