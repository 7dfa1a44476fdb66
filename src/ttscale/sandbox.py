"""Run untrusted (model-written) Python programs in a sandbox, one process per check.

Two isolation modes, chosen per :class:`Sandbox` (``mode="auto"`` picks the best the host allows):

``isolated`` (needs root, i.e. CAP_SYS_ADMIN and CAP_SETUID; what runs here)
    The launcher (:mod:`ttscale.sandbox_launch`) enters a new PID namespace and forks an
    init process that enters new mount, network, IPC and UTS namespaces, makes every
    mount read-only, mounts a fresh size-capped tmpfs on ``/tmp`` (``/tmp/work`` is the
    only writable place), hides the home directory (and any unreadable directory above
    the Python install, which is re-exposed read-only at its own path) behind an empty
    tmpfs, mounts a fresh ``/proc``, applies rlimits, drops to a random unprivileged
    uid that no other process uses (so RLIMIT_NPROC really bounds a fork bomb), sets
    no_new_privs and a parent-death SIGKILL, then execs Python on the program. The
    network namespace has only a downed loopback: no socket can reach anything, not
    even 127.0.0.1. When the program exits (or is killed) the kernel kills everything
    left in its PID namespace, so daemons cannot outlive a check.

``guarded`` (fallback for non-root hosts; best effort)
    rlimits, a scrubbed environment, a fresh temporary directory as working directory,
    a new network namespace when one can be created (``unshare(CLONE_NEWNET)`` as root,
    ``CLONE_NEWUSER|CLONE_NEWNET`` for ordinary users where unprivileged user
    namespaces are enabled), and an audit hook installed before the program runs that
    refuses sockets, process creation (fork, exec, spawn, subprocess, os.system),
    ctypes, and writes/deletes outside the temporary directory. Audit hooks are not a
    security boundary against a determined attacker (see docs/code.md), which is why
    ``isolated`` is preferred whenever available.

In both modes the parent puts the launcher in its own session and process group, kills
the whole group (SIGKILL) at the wall-clock timeout, and reads stdout/stderr from files
whose size the RLIMIT_FSIZE limit bounds. Checks run in parallel on a thread pool of
``os.cpu_count()`` workers by default.

The launcher is :mod:`ttscale.sandbox_launch`, executed as a script
(``python -I -S -B sandbox_launch.py CONFIG``) with cheap standard-library imports only.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ttscale.code_check import CheckPrograms

Status = Literal["pass", "fail", "timeout", "crash"]
Mode = Literal["auto", "isolated", "guarded"]

_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_launch.py")
_TAIL = 2000  # characters of stdout/stderr kept in a result


@dataclass(frozen=True)
class Limits:
    """Resource limits for one check."""

    cpu_s: int = 5
    """RLIMIT_CPU: CPU seconds before SIGXCPU (reported as ``timeout``)."""
    wall_s: float = 10.0
    """Wall-clock seconds before the whole process group is killed."""
    memory_bytes: int = 1 << 30
    """RLIMIT_AS: address space per process."""
    file_bytes: int = 16 << 20
    """RLIMIT_FSIZE: largest file a process may write (stdout/stderr included)."""
    disk_bytes: int = 64 << 20
    """Size of the tmpfs holding the writable directory (isolated mode)."""
    nproc: int = 1
    """RLIMIT_NPROC: processes+threads of the sandbox uid. Isolated mode gives every check its own
    uid, so this is per check; 1 means no process or thread creation at all. (Root ignores this
    limit, which is why isolated mode drops to an unprivileged uid.)"""
    nofile: int = 64
    """RLIMIT_NOFILE: open file descriptors."""

    def __post_init__(self) -> None:
        for name in ("cpu_s", "wall_s", "memory_bytes", "file_bytes", "disk_bytes", "nproc", "nofile"):
            if getattr(self, name) <= 0:
                # Imported lazily: the launcher runs this file without the ttscale package.
                from ttscale.errors import ConfigError

                raise ConfigError(f"sandbox limit {name} must be positive, got {getattr(self, name)}")


@dataclass
class CheckResult:
    """The outcome of running one program."""

    status: Status
    """``pass``: exit 0; ``fail``: non-zero exit (failed assert or exception); ``timeout``: wall or
    CPU limit; ``crash``: killed by another signal, or the sandbox could not start the program."""
    returncode: int | None
    signal: int | None
    stdout_tail: str
    stderr_tail: str
    duration_s: float
    mode: str
    protections: dict[str, Any] = field(default_factory=dict)
    """What the launcher actually applied (namespaces, uid, ...)."""
    reason: str = ""
    """Why a unit-test check did not pass (``run_check``), in one line."""
    suspicious: str | None = None
    """A unit-test check whose answer tried to game it: ``early-exit`` (ended the interpreter with
    status 0 or raised SystemExit before the tests finished), ``fake-equality`` (returned an object of
    its own class that overrides ``__eq__``/``__ne__``), ``foreign-object`` (returned some other
    non-builtin object), ``tampered`` (its process sent something the protocol does not allow)."""

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def error(self) -> str:
        """Why a check failed (its reason), else the last line of stderr, for one-line reports."""
        if self.reason:
            return self.reason
        lines = [ln for ln in self.stderr_tail.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Capability probe
# ---------------------------------------------------------------------------------------------


def isolation_available() -> bool:
    """Whether ``isolated`` mode can run here (root with namespace and mount rights).

    Probed by running a trivial program; cheap enough to call once per Sandbox.
    """
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False
    try:
        r = _run_one("pass\n", Limits(wall_s=10), "isolated")
    except OSError:
        return False
    return r.status == "pass"


@dataclass
class Sandbox:
    """Runs programs under :class:`Limits`, in parallel up to ``workers`` at once."""

    limits: Limits = field(default_factory=Limits)
    mode: Mode = "auto"
    workers: int | None = None
    """Parallel checks; default: the number of CPU cores."""
    network_namespace: bool = True
    """Guarded mode: also try a new network namespace (False tests the audit guard alone)."""
    _resolved: str | None = None

    @property
    def resolved_mode(self) -> str:
        if self._resolved is None:
            if self.mode == "auto":
                self._resolved = "isolated" if isolation_available() else "guarded"
            else:
                if self.mode not in ("isolated", "guarded"):
                    from ttscale.errors import ConfigError

                    raise ConfigError(f"sandbox mode must be auto, isolated or guarded, got {self.mode!r}")
                self._resolved = self.mode
        return self._resolved

    def run(self, program: str) -> CheckResult:
        """Run one Python program; pass means it exited with status 0."""
        return _run_one(program, self.limits, self.resolved_mode, self.network_namespace)

    def run_check(self, check: CheckPrograms) -> CheckResult:
        """Run a unit-test check as two processes (:mod:`ttscale.code_check`); pass means the test
        process reported that ``check`` ran to completion, on a pipe the answer cannot reach."""
        return _run_one(check, self.limits, self.resolved_mode, self.network_namespace)

    def run_checks(self, checks: Sequence[CheckPrograms]) -> list[CheckResult]:
        """:meth:`run_check` for many checks in parallel (results in input order)."""
        return self.run_many(checks)  # type: ignore[arg-type]

    def run_many(self, programs: Sequence[str | CheckPrograms]) -> list[CheckResult]:
        """Run programs in parallel (results in input order)."""
        mode, net = self.resolved_mode, self.network_namespace
        workers = max(1, min(self.workers or os.cpu_count() or 1, len(programs) or 1))
        if workers == 1:
            return [_run_one(p, self.limits, mode, net) for p in programs]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda p: _run_one(p, self.limits, mode, net), programs))


# ---------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------

_SCRUBBED_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _python() -> str:
    # The real interpreter, not the venv shim: sandboxed code gets the standard library only.
    return os.path.realpath(sys.executable)


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4 * _TAIL))
            return f.read().decode("utf-8", "replace")[-_TAIL:]
    except OSError:
        return ""


def _run_one(program: str | CheckPrograms, limits: Limits, mode: str, network_namespace: bool = True) -> CheckResult:
    host_dir = tempfile.mkdtemp(prefix="ttscale-sbx-")
    try:
        return _run_in(host_dir, program, limits, mode, network_namespace)
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)


def _run_in(host_dir: str, program: str | CheckPrograms, limits: Limits, mode: str,
            network_namespace: bool) -> CheckResult:
    work = os.path.join(host_dir, "work")
    os.mkdir(work, 0o700)
    prog_path = os.path.join(host_dir, "program.py")
    check: dict[str, str] | None = None
    if isinstance(program, CheckPrograms):
        answer_path = os.path.join(host_dir, "answer.py")
        with open(answer_path, "w", encoding="utf-8") as f:
            f.write(program.answer)
        tests_dir = os.path.join(host_dir, "tests")
        os.mkdir(tests_dir, 0o700)
        check = {"answer": answer_path, "tests_dir": tests_dir}
        program = program.tests
    with open(prog_path, "w", encoding="utf-8") as f:
        f.write(program)
    python = _python()
    status_path = os.path.join(host_dir, "status.json")
    config: dict[str, Any] = {
        "mode": mode,
        "program": prog_path,
        "work": work,
        "status": status_path,
        "python": python,
        "limits": asdict(limits),
        # A fresh uid per check: RLIMIT_NPROC counts per uid, so bounds are per check and
        # no other process on the host shares the uid (nothing to signal or ptrace).
        "uid": 0x20000000 + secrets.randbelow(0x10000000),
        "home": os.path.expanduser("~"),
        "network_namespace": network_namespace,
    }
    if check is not None:
        config["check"] = check
    cfg_path = os.path.join(host_dir, "config.json")
    with open(cfg_path, "w") as f:
        json.dump(config, f)
    out_path, err_path = os.path.join(host_dir, "stdout"), os.path.join(host_dir, "stderr")
    t0 = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [python, "-I", "-S", "-B", _LAUNCHER, cfg_path],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=dict(_SCRUBBED_ENV),
            cwd=host_dir,
            start_new_session=True,  # own session and process group: one killpg reaches all
            close_fds=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc.pid)
            proc.wait()
    duration = time.perf_counter() - t0
    try:
        with open(status_path) as f:
            st = json.load(f)
    except (OSError, ValueError):
        st = {}
    result = _classify(st, proc.returncode, timed_out, duration, mode, _tail(out_path), _tail(err_path))
    if check is not None:
        result = _classify_check(result, st)
    result.protections["launcher_pid"] = proc.pid  # also the process group and session id
    return result


def _kill_group(pgid: int) -> None:
    # Always, even after a clean exit: anything left in the group dies with the check.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _classify(
    st: dict[str, Any], launcher_rc: int | None, timed_out: bool, duration: float, mode: str, out: str, err: str
) -> CheckResult:
    prot = st.get("protections", {})
    if timed_out:
        return CheckResult("timeout", None, None, out, err + "\n[sandbox] wall-clock timeout", duration, mode, prot)
    if st.get("setup_error"):
        return CheckResult(
            "crash", None, None, out, err + f"\n[sandbox] setup failed: {st['setup_error']}", duration, mode, prot
        )
    rc, sig = st.get("returncode"), st.get("signal")
    if rc is None and sig is None:
        # The launcher itself died without a status (e.g. killed): treat as a crash.
        return CheckResult("crash", launcher_rc, None, out, err + "\n[sandbox] no status from launcher", duration, mode, prot)
    if sig is not None:
        # SIGXCPU is the soft CPU limit; SIGKILL follows at the hard limit (soft + 1 s).
        status: Status = "timeout" if sig in (signal.SIGXCPU, signal.SIGKILL) else "crash"
        return CheckResult(status, None, sig, out, err + f"\n[sandbox] killed by signal {sig}", duration, mode, prot)
    return CheckResult("pass" if rc == 0 else "fail", rc, None, out, err, duration, mode, prot)


def _classify_check(r: CheckResult, st: dict[str, Any]) -> CheckResult:
    """A two-process check passes only with the test process's completion report."""
    report = st.get("report")
    if r.status in ("timeout", "crash"):
        r.reason = r.reason or ("time limit" if r.status == "timeout" else "the check could not run")
        return r
    if not isinstance(report, dict):
        r.status, r.reason = "fail", "the test process ended without a report (exit status 0 is not a pass)"
        return r
    complete = report.get("complete") is True
    r.status = "pass" if complete and r.returncode == 0 else "timeout" if report.get("timeout") is True else "fail"
    r.reason = "" if r.status == "pass" else str(report.get("reason") or "the tests did not finish")
    suspicious = report.get("suspicious")
    r.suspicious = str(suspicious) if suspicious else None
    return r
