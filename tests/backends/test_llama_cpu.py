"""The weight-repacking decision (llama.cpp's AMX crash), applied in every place that loads a model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ttscale.backends import llama_cpu
from ttscale.backends.llama_cpu import configure_model_params, decide, server_args
from ttscale.errors import ConfigError


class _Params:
    use_extra_bufts = True


def test_repacking_is_off_only_where_the_cpu_has_amx() -> None:
    assert decide(env="auto", amx=False).extra_buffers
    assert not decide(env="auto", amx=True).extra_buffers
    assert "AMX" in decide(env="auto", amx=True).reason


def test_environment_overrides_the_probe() -> None:
    assert decide(env="on", amx=True).extra_buffers
    assert not decide(env="off", amx=False).extra_buffers
    with pytest.raises(ConfigError, match="auto, on or off"):
        decide(env="sometimes", amx=False)


def test_the_decision_reaches_model_params_and_server_flags() -> None:
    p = _Params()
    configure_model_params(p, decide(env="auto", amx=True))
    assert p.use_extra_bufts is False
    configure_model_params(p, decide(env="auto", amx=False))
    assert p.use_extra_bufts is True
    assert server_args(decide(env="auto", amx=True)) == ["--no-repack"]
    assert server_args(decide(env="auto", amx=False)) == []


def test_llama_server_command_carries_the_flag(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ttscale.backends import llama_server

    seen: list[list[str]] = []

    class _Stop(Exception):
        pass

    def fake_popen(cmd, **kw):  # type: ignore[no-untyped-def]
        seen.append(cmd)
        raise _Stop

    monkeypatch.setattr(llama_server.subprocess, "Popen", fake_popen)
    monkeypatch.setenv(llama_cpu.ENV, "off")
    with pytest.raises(_Stop):
        llama_server.LlamaServer(tmp_path / "m.gguf", binary=tmp_path / "llama-server").start()
    assert "--no-repack" in seen[0]
    monkeypatch.setenv(llama_cpu.ENV, "on")
    with pytest.raises(_Stop):
        llama_server.LlamaServer(tmp_path / "m.gguf", binary=tmp_path / "llama-server").start()
    assert "--no-repack" not in seen[1]


def test_amx_probe_asks_the_bundled_ggml() -> None:
    # The symbol is exported by llama-cpp-python's ggml; the answer depends on the CPU.
    assert isinstance(llama_cpu.cpu_has_amx(), bool)
    flags = open("/proc/cpuinfo").read() if sys.platform.startswith("linux") else ""
    if sys.platform.startswith("linux"):
        assert llama_cpu.cpu_has_amx() == (" amx_int8" in flags)


@pytest.mark.model
def test_embedded_backend_and_plain_llama_follow_the_decision(smollm, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    expected = decide()
    assert smollm.repack == expected
    assert smollm.model_info().extra["weight_repack"] == ("on" if expected.extra_buffers else "off")
    import llama_cpp.llama as high

    monkeypatch.setenv(llama_cpu.ENV, "off")
    with llama_cpu._patched_default_params():
        assert high.llama_cpp.llama_model_default_params().use_extra_bufts is False
    assert high.llama_cpp.llama_model_default_params().use_extra_bufts is True  # restored afterwards


def test_show_prints_the_decision() -> None:
    out = subprocess.run([sys.executable, "-m", "ttscale.backends.llama_cpu", "show"], capture_output=True, text=True)
    assert out.returncode == 0 and "weight repacking" in out.stdout
