"""Scoring a stored pool after the fact (``ttscale pool score``): scores under the name, the judge's costs
per sample summing to what it reported, resumable (and refused with other settings), carried by pool files."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.backends.fake import FakeBackend
from ttscale.backends.spec import BackendKind
from ttscale.errors import StoreError
from ttscale.replay.pool import load_pool
from ttscale.replay.pool_file import export_run, import_pool_file, read_pool_file
from ttscale.run import Score, Sweep, execute
from ttscale.run.scoring import (
    COST_FIELDS,
    apportion,
    cost_key,
    default_name,
    paid_scores,
    task_from_record,
)
from ttscale.store import Store
from ttscale.tasks.jsonl import JsonlTask
from ttscale.testing.fake_steps import ScriptedStepBackend
from ttscale.types import Problem, PromptFormat, Sample, Usage
from ttscale.verifiers.base import Scores
from ttscale.verifiers.judge import JudgeVerifier

P, K = 4, 6
RUN = "pool"


def _judge_p(text: str) -> float:
    return 0.9 if "is 42." in text else 0.2


def _pool(tmp_path: Path) -> tuple[Store, JsonlTask]:
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"What is 6 times 7, case {i}?", "answer": "42"})
                            + "\n" for i in range(P)))
    task = JsonlTask(path=str(data), fmt=PromptFormat(style="chat", max_tokens=64))
    st = Store(tmp_path / "s.sqlite")
    execute(Sweep(task, K), store=st, run_id=RUN, backend=FakeBackend(answers={"42": 0.5, "41": 0.5}))
    return st, task


def _judge(task: JsonlTask | None, v: int = 1) -> tuple[JudgeVerifier, ScriptedStepBackend]:
    be = ScriptedStepBackend(judge=_judge_p)
    return JudgeVerifier(be, verifications=v, verify_tokens=8, task=task), be


class Counting:
    """A verifier wrapper that counts candidates and can fail on the n-th call (an interruption)."""

    def __init__(self, inner: JudgeVerifier, fail_on: int | None = None) -> None:
        self.inner, self.fail_on, self.calls, self.seen = inner, fail_on, 0, 0
        self.name, self.uses_reference = inner.name, False
        self.backend, self.verifications = inner.backend, inner.verifications

    def request(self, problem: Problem, c: Sample):  # type: ignore[no-untyped-def]
        return self.inner.request(problem, c)

    def score(self, problem: Problem, candidates: Sequence[Sample]) -> Scores:
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt
        self.seen += len(candidates)
        return self.inner.score(problem, candidates)


def test_scores_and_the_judges_costs_are_stored_per_sample(tmp_path: Path) -> None:
    st, task = _pool(tmp_path)
    rebuilt, why = task_from_record(st.get_run(RUN).config["task"], chat_model=True)  # type: ignore[union-attr]
    assert rebuilt is not None and not why  # the judge continues the run's own conversation
    judge, _ = _judge(rebuilt)
    out = execute(Score(judge, "j"), store=st, run_id=RUN)
    assert (out.problems, out.samples, out.generated) == (P, P * K, P * K)
    pairs = st.samples(RUN)
    for _, s in pairs:
        assert math.isclose(s.scores["j"], 0.9 if s.answer == "42" else 0.2, rel_tol=1e-6)
        assert all(cost_key("j", f) in s.scores for f in COST_FIELDS)
        assert s.scores["j:generated"] == 0 and s.scores["j:prefilled"] > s.n_tokens  # V = 1: prefill only
    # the shares add up to exactly what the judge reported
    assert math.isclose(sum(s.scores["j:prefilled"] for _, s in pairs), out.usage.prefilled_tokens)
    assert math.isclose(sum(s.scores["j:flops"] for _, s in pairs), out.usage.flops)
    note = st.notes(RUN, "score:")["score:j"]
    assert note["model"] == "fake" and note["verifications"] == 1 and note["prompt"] == "followup"
    pool = load_pool(st, RUN)
    assert paid_scores(pool.scores) == ["j"] and pool.scores["j:flops"].shape == (P, K)


def test_v_chains_record_generated_tokens_and_batch_one_is_exact(tmp_path: Path) -> None:
    st, task = _pool(tmp_path)
    judge, _ = _judge(task, v=2)
    execute(Score(judge, "v2", limit_problems=1, batch=1), store=st, run_id=RUN)
    (pid, first), *_ = st.samples(RUN)
    problem = st.problems(RUN)[0]
    alone = _judge(task, v=2)[0].score(problem, [Sample(**{**first.__dict__, "scores": {}})])
    assert first.scores["v2:generated"] == alone.usage.generated_tokens > 0
    assert math.isclose(first.scores["v2:flops"], alone.usage.flops)


def test_scoring_resumes_and_a_subset_extends(tmp_path: Path) -> None:
    st, task = _pool(tmp_path)
    judge = Counting(_judge(task)[0], fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        execute(Score(judge, "j", samples_per_problem=4), store=st, run_id=RUN)  # type: ignore[arg-type]
    kept = {(pid, s.index) for pid, s in st.samples(RUN) if "j" in s.scores}
    assert len(kept) == 2 * 4  # the two problems scored before the interruption were committed
    again = Counting(_judge(task)[0])
    out = execute(Score(again, "j", samples_per_problem=4), store=st, run_id=RUN)  # type: ignore[arg-type]
    assert again.seen == out.generated == 2 * 4 and out.already == 2 * 4
    more = Counting(_judge(task)[0])
    execute(Score(more, "j"), store=st, run_id=RUN)  # type: ignore[arg-type]
    assert more.seen == P * (K - 4)  # only the samples beyond the first four
    assert all("j" in s.scores for _, s in st.samples(RUN))


def test_a_name_is_not_resumed_with_other_settings(tmp_path: Path) -> None:
    st, task = _pool(tmp_path)
    execute(Score(_judge(task)[0], "j", limit_problems=1), store=st, run_id=RUN)
    with pytest.raises(StoreError, match="verifications"):
        execute(Score(_judge(task, v=2)[0], "j"), store=st, run_id=RUN)


def test_apportion_and_default_name() -> None:
    shares = apportion(Usage(prefilled_tokens=10, generated_tokens=3, flops=9.0), 2.0, [1, 2])
    assert [round(s["prefilled"], 6) for s in shares] == [3.333333, 6.666667]
    assert math.isclose(sum(s["flops"] for s in shares), 9.0) and math.isclose(sum(s["seconds"] for s in shares), 2.0)
    assert default_name("judge", "qwen2.5-coder-1.5b", 1) == "judge-qwen2.5-coder-1.5b-v1"
    assert paid_scores(["certainty", "j", "j:flops", "j:prefilled"]) == ["j"]


def test_pool_files_carry_scores_notes_and_the_sweep_command(tmp_path: Path) -> None:
    st, task = _pool(tmp_path)
    st.set_note(RUN, "command", "ttscale sweep --k 6")
    bare = export_run(st, RUN, tmp_path / "bare.jsonl.gz")
    execute(Score(_judge(task)[0], "j"), store=st, run_id=RUN)
    f = export_run(st, RUN, tmp_path / "p.jsonl.gz")
    header, _, samples = read_pool_file(f.path)
    assert header["command"] == "ttscale sweep --k 6" and header["notes"]["score:j"]["model"] == "fake"
    assert all("j:flops" in s["scores"] for _, s in samples)
    other = Store(tmp_path / "other.sqlite")
    import_pool_file(bare.path, other)
    import_pool_file(f.path, other)  # the same run again: its new scores are added
    assert all("j" in s.scores for _, s in other.samples(RUN))
    assert other.notes(RUN)["command"] == "ttscale sweep --k 6" and "score:j" in other.notes(RUN)


def test_cli_scores_a_pool_with_a_judge_on_another_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ttscale.registry as registry
    from ttscale.cli import app

    st, _ = _pool(tmp_path)
    st.close()
    kinds = registry.backend_kinds()
    kinds["fake-judge"] = BackendKind("fake-judge", lambda _m, _o: ScriptedStepBackend(judge=_judge_p))
    monkeypatch.setattr(registry, "backend_kinds", lambda: kinds)
    args = ["pool", "score", RUN, "--store", str(tmp_path / "s.sqlite"), "--backend", "fake-judge", "--model", "x",
            "--limit-problems", "2", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "judge-fake-v1" in res.output and f"{2 * K} scored now" in res.output
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "0 scored now" in res.output.replace("\n", " ")
    st = Store(tmp_path / "s.sqlite")
    assert sum("judge-fake-v1" in s.scores for _, s in st.samples(RUN)) == 2 * K
    res = CliRunner().invoke(app, ["pool", "score", RUN, "--store", "shipped", "--model", "x"])
    assert res.exit_code != 0 and "import" in res.output
    res = CliRunner().invoke(app, ["pool", "score", RUN, "--store", str(tmp_path / "s.sqlite")])
    assert res.exit_code != 0 and "--model" in res.output
