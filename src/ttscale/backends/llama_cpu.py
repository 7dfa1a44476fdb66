"""One place that decides how llama.cpp may lay out weights on this CPU (weight repacking).

llama.cpp can move a model's weights into an "extra buffer type" whose layout suits the CPU's
matrix kernels: ``CPU_REPACK`` (AVX2 / AVX-512 / NEON interleaved blocks) or ``AMX`` on Intel CPUs
with Advanced Matrix Extensions. The AMX path crashes in the llama.cpp that llama-cpp-python 0.3.36
vendors: the first matrix multiplication segfaults in ``ggml_backend_amx_mul_mat`` (upstream
ggml-org/llama.cpp issue 20824) for every model here. The only switch that reaches it from
outside is the one that turns off *all* extra buffer types (``use_extra_bufts`` in the model
params, ``--no-repack`` for ``llama-server``), which also turns off ``CPU_REPACK``.

So the narrowest fix: extra buffer types stay on, unless the CPU reports AMX (asked from the
bundled ggml itself, ``ggml_cpu_has_amx_int8``), in which case they are off. On a CPU without AMX
nothing changes. ``$TTSCALE_LLAMA_REPACK`` (``auto`` default, ``on``, ``off``) overrides the
decision, for example to try a future llama.cpp whose AMX kernels work.

Every place that loads a llama.cpp model goes through here: the embedded backend
(:func:`configure_model_params`), the ``llama-server`` command line (:func:`server_args`),
``llama_cpp.Llama`` for benchmarks and llama-cpp-python's bundled server
(:func:`plain_llama`, ``python -m ttscale.backends.llama_cpu server ...``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError

ENV = "TTSCALE_LLAMA_REPACK"


@dataclass(frozen=True)
class RepackDecision:
    """Whether llama.cpp may repack weights into extra buffer types, and why."""

    extra_buffers: bool
    reason: str


@functools.cache
def cpu_has_amx() -> bool:
    """Whether the bundled ggml CPU backend sees AMX (int8) on this CPU."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return False
    lib_dir = Path(next(iter(spec.submodule_search_locations))) / "lib"
    for name in ("libggml-cpu.so", "libggml-cpu.dylib", "ggml-cpu.dll", "libggml.so"):
        path = lib_dir / name
        if not path.exists():
            continue
        try:
            fn = ctypes.CDLL(str(path)).ggml_cpu_has_amx_int8
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int
        return bool(fn())
    return False


def decide(env: str | None = None, amx: bool | None = None) -> RepackDecision:
    """The repacking decision for this process (``env``/``amx`` override the probes in tests)."""
    choice = (os.environ.get(ENV, "auto") if env is None else env).strip().lower() or "auto"
    if choice == "on":
        return RepackDecision(True, f"{ENV}=on")
    if choice == "off":
        return RepackDecision(False, f"{ENV}=off")
    if choice != "auto":
        raise ConfigError(f"{ENV} must be auto, on or off, got {choice!r}")
    has_amx = cpu_has_amx() if amx is None else amx
    if has_amx:
        return RepackDecision(False, "CPU has AMX: llama.cpp's AMX weight buffers crash in this version, "
                                     "so weight repacking is off")
    return RepackDecision(True, "no AMX on this CPU: weight repacking stays on")


def configure_model_params(mparams: Any, decision: RepackDecision | None = None) -> RepackDecision:
    """Apply the decision to a ``llama_model_params`` struct; returns it (for the run record)."""
    d = decision or decide()
    mparams.use_extra_bufts = d.extra_buffers
    return d


def server_args(decision: RepackDecision | None = None) -> list[str]:
    """Extra ``llama-server`` flags for the decision."""
    d = decision or decide()
    return [] if d.extra_buffers else ["--no-repack"]


@contextlib.contextmanager
def _patched_default_params() -> Iterator[None]:
    # llama_cpp.Llama builds its model params from llama_model_default_params() inside __init__
    # and offers no argument for use_extra_bufts: wrap that one call for the duration.
    import llama_cpp.llama as high

    low = high.llama_cpp
    original = low.llama_model_default_params

    def default_params() -> Any:
        p = original()
        configure_model_params(p)
        return p

    low.llama_model_default_params = default_params
    try:
        yield
    finally:
        low.llama_model_default_params = original


def plain_llama(model_path: str | Path, **kwargs: Any) -> Any:
    """A ``llama_cpp.Llama`` loaded with this CPU's repacking decision (benchmark baselines)."""
    from llama_cpp import Llama

    with _patched_default_params():
        return Llama(model_path=str(model_path), **kwargs)


def main(argv: list[str] | None = None) -> int:
    """``python -m ttscale.backends.llama_cpu server ARGS``: llama-cpp-python's server, with the fix;
    ``... show``: print the decision."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["show"]:
        d = decide()
        print(f"extra buffer types (weight repacking): {'on' if d.extra_buffers else 'off'} ({d.reason})")
        return 0
    if args[:1] == ["server"]:
        import runpy

        sys.argv = ["llama_cpp.server", *args[1:]]
        with _patched_default_params():
            runpy.run_module("llama_cpp.server", run_name="__main__")
        return 0
    print("usage: python -m ttscale.backends.llama_cpu [show | server ARGS...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
