"""``--max-kv-bytes`` on the command line: run, sweep and serve size the embedded engine to the cap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.backends.kv_sizing import fit_kv, header_info
from ttscale.cli import app
from ttscale.store import Store

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, list(args), env={"COLUMNS": "200", "TERM": "dumb"})
    return r.exit_code, r.output


def test_help_texts_name_the_cap() -> None:
    for cmd in ("run", "sweep", "serve", "plan"):
        code, out = _run(cmd, "--help")
        assert code == 0 and "--max-kv-bytes" in out, cmd
    assert "--kv-pool" in _run("plan", "--help")[1] and "--kv-type" in _run("serve", "--help")[1]


def test_sweep_cap_needs_the_embedded_engine(tmp_path: Path) -> None:
    code, out = _run("sweep", "--backend", "fake", "--max-kv-bytes", "1000000", "--store", str(tmp_path / "s.db"))
    assert code != 0 and "--backend llama-cpp" in out


def test_run_cap_on_another_backend_is_the_meters_budget(tmp_path: Path) -> None:
    code, out = _run("run", "--backend", "fake", "--task", "arithmetic", "--limit", "2", "-k", "8",
                     "--max-kv-bytes", str(512 * 60), "--store", str(tmp_path / "s.db"), "--run-id", "r",
                     "--no-progress", "--output", str(tmp_path / "r.json"))
    assert code == 0, out
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["config"]["budget"]["kv_bytes"] == 512 * 60
    st = Store(tmp_path / "s.db")
    try:  # the fake model's cells are 512 bytes: waves of fewer than k samples, each within 60 cells
        waves = {(pid, s.wave) for pid, s in st.samples("r")}
        assert len(waves) > 2 and len(st.samples("r")) == 2 * 8
    finally:
        st.close()
    for r in summary["results"]:
        assert 0 < r["usage"]["peak_kv_bytes"] <= 512 * 60


def test_a_cap_too_small_for_the_engine_is_one_line() -> None:
    code, out = _run("run", "--task", "arithmetic", "--limit", "1", "--max-kv-bytes", "1000", "--no-progress")
    assert code != 0 and "KV cap" in out and "cells" in out and "Traceback" not in out


@pytest.mark.model
def test_run_sizes_the_engine_from_the_cap(tmp_path: Path) -> None:
    cap = 12 * 2**20
    code, out = _run("run", "--task", "arithmetic", "--subtask", "arithmetic/1_digit_addition", "--limit", "1",
                     "-k", "4", "--max-tokens", "6", "--max-kv-bytes", str(cap), "--store", str(tmp_path / "s.db"),
                     "--run-id", "r", "--no-progress", "--output", str(tmp_path / "r.json"))
    assert code == 0, out
    fit = fit_kv(header_info("smollm2-135m"), cap, 6)
    assert f"n_ctx {fit.n_ctx} cells" in out and fit.kv_bytes <= cap


@pytest.mark.parametrize("args, fragment", [
    (["--max-kv-bytes", "1000"], "KV cap"),
    (["--max-kv-bytes", "100000000", "--n-ctx", "1024"], "not both"),
    (["--backend", "vllm", "--kv-type", "q8_0"], "--backend openai, not vllm"),
])
def test_serve_refuses_bad_kv_settings_before_serving(args: list[str], fragment: str) -> None:
    code, out = _run("serve", *args)
    assert code != 0 and fragment in out and "Traceback" not in out


@pytest.mark.model
def test_serve_sizes_the_engine_and_caps_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    seen: dict[str, object] = {}

    def fake_run(app: object, **_: object) -> None:  # no socket: look at what would be served
        svc = app.state.service  # type: ignore[attr-defined]
        seen["cap"] = svc.config.max_kv_bytes
        seen["batcher_cap"] = svc.batcher.kv_cap
        be = svc.config.backend
        seen["bytes"] = be.model_info().kv_bytes(be.n_ctx)
        seen["kv"] = be.model_info().kv_type_k

    monkeypatch.setattr(uvicorn, "run", fake_run)
    cap = 30 * 2**20
    code, out = _run("serve", "--max-kv-bytes", str(cap), "--kv-type", "q8_0", "--max-tokens", "128")
    assert code == 0, out
    assert seen["cap"] == seen["batcher_cap"] == cap and seen["kv"] == "q8_0"
    assert isinstance(seen["bytes"], int) and cap - 256 * 12240 < seen["bytes"] <= cap  # q8_0 cells of SmolLM2


def test_kv_types_reach_every_backend_that_has_a_cache_and_are_refused_elsewhere() -> None:
    from ttscale.backends.openai_http import OpenAIHttpBackend
    from ttscale.backends.spec import EngineArgs
    from ttscale.errors import ConfigError
    from ttscale.registry import backend_kinds, make_backend

    kinds = backend_kinds()
    ((model, opts),) = kinds["llama-cpp"].endpoints(EngineArgs("smollm2-135m", kv_type="q8_0", kv_type_v="q4_0"))
    assert (model, opts) == ("smollm2-135m", {"kv_type": "q8_0", "kv_type_v": "q4_0"})
    ((model, opts),) = kinds["openai"].endpoints(EngineArgs("smollm2-135m", ("http://127.0.0.1:9/v1",), kv_type="q8_0"))
    assert opts["kv_type"] == "q8_0" and opts["info_model"] == "smollm2-135m"
    be = make_backend("openai", model, **opts)
    try:  # the served cache's type is what the meter counts its bytes at
        info = be.model_info()
        assert (info.kv_type_k, info.kv_type_v) == ("q8_0", "q8_0")
        assert info.kv_bytes(64) * 64 == header_info("smollm2-135m").kv_bytes(64) * 34
    finally:
        be.close()
    ((model, opts),) = kinds["fake"].endpoints(EngineArgs("x", kv_type_v="q4_0"))
    assert make_backend("fake", model, **opts).model_info().kv_type_v == "q4_0"
    with pytest.raises(ConfigError, match="not vllm"):
        kinds["vllm"].endpoints(EngineArgs("m", kv_type="q8_0"))
    with pytest.raises(ConfigError, match="info_model"):
        OpenAIHttpBackend("http://127.0.0.1:9/v1", "served", kv_type="q8_0")


def test_run_records_separate_key_and_value_types(tmp_path: Path) -> None:
    code, out = _run("run", "--backend", "fake", "--task", "arithmetic", "--limit", "1", "-k", "2", "--kv-type", "q8_0",
                     "--kv-type-v", "q4_0", "--store", str(tmp_path / "s.db"), "--run-id", "r", "--no-progress")
    assert code == 0, out
    st = Store(tmp_path / "s.db")
    try:
        rec = st.get_run("r")
        assert rec is not None and (rec.model["kv_type_k"], rec.model["kv_type_v"]) == ("q8_0", "q4_0")
    finally:
        st.close()
    assert "--kv-type-v" in _run("sweep", "--help")[1] and "--kv-type-v" in _run("serve", "--help")[1]
