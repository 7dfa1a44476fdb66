"""llama.cpp's own ``llama-server``: build it once, cache it, start it on loopback.

The binary is built from the llama.cpp sources vendored in the llama-cpp-python
sdist of the installed version (so server and embedded backend run the same
llama.cpp), statically linked, and cached as
``$TTSCALE_CACHE/bin/llama-server-<version>``. The build takes ~8 minutes on
two cores; later calls return the cached path at once.

    python -m ttscale.backends.llama_server build     # build (or find) and print the path
    python -m ttscale.backends.llama_server path      # print the cached path, exit 1 if not built
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import httpx

from ttscale.backends.llama_cpu import server_args
from ttscale.errors import BackendError, ConfigError
from ttscale.paths import cache_dir
from ttscale.types import KV_CACHE_TYPES

CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary that can be cached and copied
)


class BuildUnavailable(BackendError):
    """The tools to build llama-server (cmake, a C++ compiler) are missing."""


def llama_cpp_version() -> str:
    try:
        return version("llama-cpp-python")
    except PackageNotFoundError as e:
        raise BuildUnavailable("llama-cpp-python is not installed; its version pins the llama.cpp sources") from e


def cached_binary() -> Path:
    return cache_dir("bin") / f"llama-server-{llama_cpp_version()}"


def find_llama_server() -> Path | None:
    """``$TTSCALE_LLAMA_SERVER`` if set, else the cached build, else None."""
    env = os.environ.get("TTSCALE_LLAMA_SERVER")
    if env:
        return Path(env) if Path(env).is_file() else None
    p = cached_binary()
    return p if p.is_file() and os.access(p, os.X_OK) else None


def build_llama_server(jobs: int | None = None, log: Path | None = None) -> Path:
    """Build llama-server from the sdist's vendored llama.cpp and cache it; returns the binary path."""
    found = find_llama_server()
    if found:
        return found
    missing = [t for t in ("cmake", "c++") if shutil.which(t) is None]
    if missing:
        raise BuildUnavailable(f"cannot build llama-server: {', '.join(missing)} not found (apt-get install cmake g++)")
    target = cached_binary()
    lock_path = target.with_suffix(".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; waiters then find the cached binary
        if target.is_file():
            return target
        ver = llama_cpp_version()
        log_file = open(log or target.with_suffix(".build.log"), "w")  # noqa: SIM115
        with tempfile.TemporaryDirectory(prefix="llama-server-build-") as tmp, log_file:
            def run(cmd: Sequence[str], cwd: str | Path | None = None) -> None:
                log_file.write(f"$ {' '.join(cmd)}\n")
                log_file.flush()
                rc = subprocess.call(list(cmd), cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT)
                if rc != 0:
                    raise BackendError(f"llama-server build step failed ({rc}): {' '.join(cmd)}; see {log_file.name}")

            run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                 f"llama-cpp-python=={ver}", "-d", tmp])
            sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
            with tarfile.open(sdist) as tf:
                tf.extractall(tmp, filter="data")
            src = next(Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp"))
            run(["cmake", "-S", str(src), "-B", str(src / "build"), *CMAKE_FLAGS])
            run(["cmake", "--build", str(src / "build"), "--target", "llama-server", "-j", str(jobs or os.cpu_count() or 1)])
            built = src / "build" / "bin" / "llama-server"
            tmp_target = target.with_suffix(".tmp")
            shutil.copy2(built, tmp_target)
            os.replace(tmp_target, target)  # atomic: a half-copied binary is never found
    return target


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the process that started it dies (no orphaned servers)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LlamaServer:
    """A running ``llama-server`` on 127.0.0.1 (use as a context manager)."""

    model_path: Path
    parallel: int = 8
    ctx_per_slot: int = 1024
    threads: int | None = None
    port: int = 0
    binary: Path | None = None
    extra_args: Sequence[str] = ()
    kv_type: str = "f16"
    """KV-cache type of K (and V unless ``kv_type_v``): ``--cache-type-k/-v``; quantized types turn
    flash attention on."""
    kv_type_v: str | None = None
    startup_timeout: float = 120.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: object = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        binary = self.binary or find_llama_server()
        if binary is None:
            raise BuildUnavailable("llama-server is not built: run `make llama-server` "
                                   "(or python -m ttscale.backends.llama_server build)")
        if self.parallel < 1:
            raise ConfigError(f"parallel must be >= 1, got {self.parallel}")
        self.port = self.port or free_port()
        cmd = [str(binary), "-m", str(self.model_path), "--host", "127.0.0.1", "--port", str(self.port),
               "--parallel", str(self.parallel), "--ctx-size", str(self.ctx_per_slot * self.parallel),
               "--cont-batching", "--metrics", "--threads", str(self.threads or os.cpu_count() or 1),
               "--no-webui", *server_args(), *self._kv_args(), *self.extra_args]
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,  # type: ignore[arg-type]
                                      preexec_fn=_die_with_parent)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BackendError(f"llama-server exited with {self._proc.returncode}; log: {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise BackendError(f"llama-server did not become healthy in {self.startup_timeout:.0f} s; log: {self.log_path}")

    def _kv_args(self) -> list[str]:
        v_type = self.kv_type_v or self.kv_type
        for t in (self.kv_type, v_type):
            if t not in KV_CACHE_TYPES:
                raise ConfigError(f"unknown KV cache type {t!r}; llama.cpp takes: {', '.join(KV_CACHE_TYPES)}")
        if self.kv_type == v_type == "f16":
            return []
        extra = list(self.extra_args)
        for i, a in enumerate(extra):  # a later flag would override ours, and llama.cpp then refuses quantized V
            value = a.split("=", 1)[1] if "=" in a else (extra[i + 1] if i + 1 < len(extra) else "")
            if a.split("=", 1)[0] in ("-fa", "--flash-attn") and value in ("off", "0", "false"):
                raise ConfigError(f"a {self.kv_type}/{v_type} KV cache needs flash attention: drop {a} {value} from the "
                                  "llama-server arguments")
        return ["--cache-type-k", self.kv_type, "--cache-type-v", v_type, "--flash-attn", "on"]

    @property
    def log_path(self) -> str:
        return str(getattr(self._log, "name", ""))

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def llama_server(model_path: str | Path, **kw: object) -> Iterator[LlamaServer]:
    srv = LlamaServer(Path(model_path), **kw)  # type: ignore[arg-type]
    with srv:
        yield srv


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = args[0] if args else "build"
    if cmd == "path":
        p = find_llama_server()
        print(p or "not built")
        return 0 if p else 1
    if cmd == "build":
        try:
            print(build_llama_server())
        except BackendError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    print("usage: python -m ttscale.backends.llama_server [build|path]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
