"""``ttscale run --draft-model / --draft-base-url``: the draft backend of a drafting strategy, built from the
run's engine settings (or as an HTTP client), passed to the strategy, closed at the end; clear refusals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.backends.fake import FAKE_MODEL_INFO
from ttscale.cli import app
from ttscale.cli.bundle import EngineChoice
from ttscale.cli.draft_opts import DraftChoice
from ttscale.run import BackendSpec
from ttscale.testing.fake_steps import ScriptedStepBackend
from ttscale.testing.openai_fake_server import FakeOpenAIServer

SPEC = ["--strategy", "speculative-reasoning"]


def _run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "TERM": "dumb"})
    return r.exit_code, r.output


@pytest.mark.parametrize(("args", "says"), [
    (["--strategy", "self-consistency", "--draft-model", "smollm2-135m"], "does not draft with a second model: --draft-model"),
    (["--strategy", "single", "--draft-base-url", "http://127.0.0.1:9/v1"], "--draft-base-url goes with speculative-reasoning"),
    ([*SPEC, "-o", "draft=smollm2-135m", "--draft-model", "smollm2-135m"], "give the draft model once"),
    ([*SPEC, "--ray", "--draft-model", "smollm2-135m"], "run without --ray"),
    (["--policy", "p.json", "--budget-tokens", "100", "--draft-model", "smollm2-135m"], "not with --policy"),
])
def test_draft_flags_refused_where_they_cannot_apply(args: list[str], says: str, tmp_path: Path) -> None:
    code, out = _run("run", "--backend", "fake", "--store", str(tmp_path / "s.sqlite"), "--no-progress", *args)
    assert code == 2 and says in " ".join(out.split()), out


def test_help_documents_the_draft_flags() -> None:
    code, out = _run("run", "--help")
    assert code == 0 and "--draft-model" in out and "--draft-base-url" in out and "Draft model" in out


def test_embedded_draft_gets_the_runs_engine_settings() -> None:
    engine = EngineChoice(backend="llama-cpp", threads=1, kv_type="q8_0", kv_type_v="q4_0",
                          backend_option=["n_ctx=4096", "n_batch=256"])
    spec = DraftChoice(draft_model="qwen2.5-coder-0.5b").spec(engine, {"n_ctx": 2048, "n_seq_max": 8})
    assert spec == BackendSpec("llama-cpp", "qwen2.5-coder-0.5b", {
        "n_threads": 1, "kv_type": "q8_0", "kv_type_v": "q4_0", "n_ctx": 4096, "n_batch": 256, "n_seq_max": 8})
    # a base on another engine: the embedded draft still gets the threads and KV types
    other = DraftChoice(draft_model="d.gguf").spec(EngineChoice(backend="fake", threads=2, kv_type="q8_0"))
    assert other == BackendSpec("llama-cpp", "d.gguf", {"n_threads": 2, "kv_type": "q8_0"})
    assert DraftChoice().spec(engine) is None


def test_http_draft_is_built_like_the_base_url_client() -> None:
    engine = EngineChoice(backend="llama-cpp", api_key="k", concurrency=3, kv_type="q8_0")
    named = DraftChoice(draft_model="smollm2-135m", draft_base_url="http://h:1/v1").spec(engine)
    assert named == BackendSpec("openai", "smollm2-135m", {
        "concurrency": 3, "api_key": "k", "info_model": "smollm2-135m", "kv_type": "q8_0", "base_url": "http://h:1/v1"})
    bare = DraftChoice(draft_base_url="http://h:1/v1").spec(engine)
    assert bare == BackendSpec("openai", None, {"concurrency": 3, "api_key": "k", "base_url": "http://h:1/v1"})


def test_run_drafts_over_http_and_counts_the_drafts_tokens(tmp_path: Path) -> None:
    """threshold 0 keeps every draft step: the fake base never generates, the HTTP draft writes everything."""
    out = tmp_path / "o.json"
    with FakeOpenAIServer() as srv:
        code, text = _run("run", "--backend", "fake", "--task", "arithmetic", "--style", "completion", *SPEC,
                          "-o", "threshold=0", "--draft-model", "smollm2-135m", "--draft-base-url", srv.base_url,
                          "--limit", "2", "--store", str(tmp_path / "s.sqlite"), "--output", str(out), "--no-progress")
        delivered, requests = srv.delivered_completion_tokens, srv.requests
    assert code == 0, text
    data = json.loads(out.read_text())
    assert data["config"]["strategy"]["draft"] == "smollm2-135m"
    metas = [r["meta"]["speculative"] for r in data["results"]]
    assert all(m["draft_model"] == "smollm2-135m" and m["accepted"] == m["drafted"] >= 1 for m in metas)
    assert requests == sum(m["drafted"] for m in metas)
    drafted = sum(m["usage"]["draft"]["generated_tokens"] for m in metas)
    assert drafted == delivered == data["usage"]["generated_tokens"]
    # the draft's calls are priced at its own shapes (read from the GGUF header), not the fake base's
    assert sum(m["usage"]["draft"]["flops"] for m in metas) > 0


class ClosingDraft(ScriptedStepBackend):
    closed = 0

    def close(self) -> None:
        ClosingDraft.closed += 1


@pytest.mark.parametrize("flag", [["--draft-model", "tiny-draft"], ["-o", "draft=tiny-draft"]])
def test_the_opened_draft_is_passed_to_the_strategy_and_closed(flag: list[str], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``-o draft=NAME`` is opened like ``--draft-model NAME``: once for the run, not once per problem."""
    built: list[ClosingDraft] = []
    real_build = BackendSpec.build

    def build(self: BackendSpec) -> object:
        if self.model != "tiny-draft":
            return real_build(self)  # the base model
        built.append(ClosingDraft(answers={"7": 1.0}, info=replace(FAKE_MODEL_INFO, name="tiny-draft")))
        return built[-1]

    def spec(self: DraftChoice, engine: EngineChoice, options: object = None) -> BackendSpec:
        assert self.draft_model == "tiny-draft"
        return BackendSpec("llama-cpp", "tiny-draft")

    monkeypatch.setattr(DraftChoice, "spec", spec)
    monkeypatch.setattr(BackendSpec, "build", build)
    out = tmp_path / "o.json"
    ClosingDraft.closed = 0
    code, text = _run("run", "--backend", "fake", "--task", "arithmetic", "--style", "completion", *SPEC,
                      "-o", "threshold=0", *flag, "--limit", "2",
                      "--store", str(tmp_path / "s.sqlite"), "--output", str(out), "--no-progress")
    assert code == 0, text
    assert len(built) == 1 and ClosingDraft.closed == 1  # opened once for the run, closed at its end
    metas = [r["meta"]["speculative"] for r in json.loads(out.read_text())["results"]]
    # the scripted draft wrote every step of both problems
    assert [m["draft_model"] for m in metas] == ["tiny-draft", "tiny-draft"]
    assert all(c["kinds"] and set(c["kinds"]) == {"draft"} for m in metas for c in m["chains"])
