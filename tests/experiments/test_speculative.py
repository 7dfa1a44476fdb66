"""speculative-reasoning: run ids, the paired comparison against the base model, and the page."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttscale.errors import ConfigError
from ttscale.experiments.speculative import default_run_ids, parse_run_id, pool_dir, run
from ttscale.store import Store
from ttscale.types import Problem, Result, Usage

PREFIX = "syn"
SECTIONS = ("## Configurations", "## Where the time goes", "## Where it would pay (roofline)",
            "## Accuracy against wall time")


def test_run_ids_name_their_configuration() -> None:
    assert parse_run_id("spec-gsm20-t384-base-qwen2.5-coder-1.5b") == ("spec-gsm20-t384", "base", None)
    assert parse_run_id("spec-gsm20-t384-draft-qwen2.5-coder-0.5b") == ("spec-gsm20-t384", "draft", None)
    assert parse_run_id("spec-gsm20-t384-st128-thr5.5") == ("spec-gsm20-t384", "spec", 5.5)
    assert parse_run_id("gsm8k-qwen05-k16") is None
    assert all(parse_run_id(r) is not None for r in default_run_ids())


def _spec_meta(accepted: int, rejected: int, walls: tuple[float, float, float]) -> dict[str, object]:
    usage = {"prompt_tokens": 100, "prefilled_tokens": 50, "generated_tokens": 40, "flops": 1.0, "wall_s": 0.0,
             "peak_kv_bytes": 0, "requests": 1, "samples": 1, "total_tokens": 90}
    return {"speculative": {"accepted": accepted, "rejected": rejected, "usage": dict.fromkeys(("draft", "score", "rewrite"), usage),
                            "wall_s": {"draft": walls[0], "score": walls[1], "rewrite": walls[2], "total": sum(walls)}}}


def _store(path: Path, n: int = 12) -> Store:
    """Base right on even problems (10 s each); draft alone right on a third (4 s); threshold 5 right where
    the base is (12 s: slower); threshold 0 right on a quarter (3 s)."""
    st = Store(path)
    probs = [Problem(id=f"p{i}", prompt="q", reference="1") for i in range(n)]
    model = {"name": "qwen2.5-coder-1.5b"}
    cases = {f"{PREFIX}-base-qwen2.5-coder-1.5b": lambda i: (i % 2 == 0, 10.0, None),
             f"{PREFIX}-draft-qwen2.5-coder-0.5b": lambda i: (i % 3 == 0, 4.0, None),
             f"{PREFIX}-st128-thr5": lambda i: (i % 2 == 0, 12.0, _spec_meta(3, 1, (5.0, 5.0, 2.0))),
             f"{PREFIX}-st128-thr0": lambda i: (i % 4 == 0, 3.0, _spec_meta(4, 0, (3.0, 0.0, 0.0)))}
    for rid, case in cases.items():
        st.open_run(rid, {}, model)
        st.add_problems(rid, probs)
        for i, p in enumerate(probs):
            ok, wall, meta = case(i)
            st.finish_problem(rid, Result(p.id, "1" if ok else "2", ok, "x", [0], {}, Usage(wall_s=wall),
                                          meta or {}))
    return st


def test_the_page_compares_every_configuration_with_the_base_model(tmp_path: Path) -> None:
    st = _store(tmp_path / "s.sqlite")
    ids = [f"{PREFIX}-base-qwen2.5-coder-1.5b", f"{PREFIX}-draft-qwen2.5-coder-0.5b", f"{PREFIX}-st128-thr0",
           f"{PREFIX}-st128-thr5", f"{PREFIX}-st128-thr10"]
    page = run(st, ids, tmp_path)
    md = page.markdown()
    for s in SECTIONS[:2]:
        assert s in md
    # threshold 5: same answers as the base (diff 0), 10/12 of its speed; threshold 0 is faster but outside
    assert "| speculative, threshold 5 | 0.500 [0.254, 0.746] | +0.000 [0.000, 0.000] | 144 s | 0.83" in md
    assert "is 5: 0.83x the base model's speed" in page.verdict and "does not hold" in page.verdict
    assert "speculative, threshold 0 (draft steps all kept)" in md
    assert "`syn-st128-thr10`" in md  # reported missing, not silently dropped
    assert "| 5 | 48 | 36 |" in md  # 12 problems x (3 kept + 1 rejected)
    assert (tmp_path / "speculative-reasoning.png").stat().st_size > 5_000


def test_without_the_base_models_run_the_page_says_what_is_missing(tmp_path: Path) -> None:
    st = _store(tmp_path / "s.sqlite")
    with pytest.raises(ConfigError, match="base model's run"):
        run(st, [f"{PREFIX}-st128-thr5"], tmp_path)


def test_the_page_builds_from_the_shipped_pools(tmp_path: Path) -> None:
    if not all((pool_dir() / f"{r}.jsonl.gz").exists() for r in default_run_ids()):
        pytest.skip("the speculative-reasoning pools are not shipped in this checkout")
    from typer.testing import CliRunner

    from ttscale.cli import app

    res = CliRunner().invoke(app, ["experiment", "speculative-reasoning", "--output", str(tmp_path)],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    md = (tmp_path / "speculative-reasoning.md").read_text()
    for s in SECTIONS:
        assert s in md
    assert "qwen2.5-coder-1.5b alone" in md and "Pools not found" not in md
