"""Run untrusted (model-written) Python programs in a sandbox, one process per check.

Two isolation modes, chosen per :class:`Sandbox` (``mode="auto"`` picks the best the host allows):

``isolated`` (needs root, i.e. CAP_SYS_ADMIN and CAP_SETUID; what runs here)
    The launcher (this file, run as a script) enters a new PID namespace and forks an
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

This module must stay importable with the standard library only: it is executed as a
script (``python -I -S sandbox.py --launch CONFIG``) to become the launcher.
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

Status = Literal["pass", "fail", "timeout", "crash"]
Mode = Literal["auto", "isolated", "guarded"]

_SETUP_FAILED = 125  # exit code of the launcher when the sandbox could not be set up
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
    nproc: int = 16
    """RLIMIT_NPROC: processes+threads of the sandbox uid (isolated mode makes this per-check)."""
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

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def error(self) -> str:
        """The last line of stderr (usually the exception), for one-line reports."""
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
        return _run_one(program, self.limits, self.resolved_mode)

    def run_many(self, programs: Sequence[str]) -> list[CheckResult]:
        """Run programs in parallel (results in input order)."""
        mode = self.resolved_mode
        workers = max(1, min(self.workers or os.cpu_count() or 1, len(programs) or 1))
        if workers == 1:
            return [_run_one(p, self.limits, mode) for p in programs]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda p: _run_one(p, self.limits, mode), programs))


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


def _run_one(program: str, limits: Limits, mode: str) -> CheckResult:
    host_dir = tempfile.mkdtemp(prefix="ttscale-sbx-")
    try:
        return _run_in(host_dir, program, limits, mode)
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)


def _run_in(host_dir: str, program: str, limits: Limits, mode: str) -> CheckResult:
    work = os.path.join(host_dir, "work")
    os.mkdir(work, 0o700)
    prog_path = os.path.join(host_dir, "program.py")
    with open(prog_path, "w", encoding="utf-8") as f:
        f.write(program)
    python = _python()
    config = {
        "mode": mode,
        "program": prog_path,
        "work": work,
        "status": os.path.join(host_dir, "status.json"),
        "python": python,
        "limits": asdict(limits),
        # A fresh uid per check: RLIMIT_NPROC counts per uid, so bounds are per check and
        # no other process on the host shares the uid (nothing to signal or ptrace).
        "uid": 0x20000000 + secrets.randbelow(0x10000000),
        "home": os.path.expanduser("~"),
    }
    cfg_path = os.path.join(host_dir, "config.json")
    with open(cfg_path, "w") as f:
        json.dump(config, f)
    out_path, err_path = os.path.join(host_dir, "stdout"), os.path.join(host_dir, "stderr")
    t0 = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [python, "-I", "-S", "-B", os.path.abspath(__file__), "--launch", cfg_path],
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
        with open(config["status"]) as f:
            st = json.load(f)
    except (OSError, ValueError):
        st = {}
    return _classify(st, proc.returncode, timed_out, duration, mode, _tail(out_path), _tail(err_path))


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


# ---------------------------------------------------------------------------------------------
# Launcher side (runs as a script, standard library only)
# ---------------------------------------------------------------------------------------------

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 442, -100, 0x8000, 1, 2


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        import ctypes

        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _mount(libc: Any, src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _check(libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _readonly_everything(libc: Any) -> None:
    import ctypes

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    attr = MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    rc = libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))
    if rc == 0:
        return
    # Kernels before 5.12: remount each mount point read-only, one by one.
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for p in sorted(set(points), key=len):
        _mount(libc, None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def _hide_dirs(python: str, home: str) -> list[str]:
    """Directories to cover with an empty tmpfs: home, and the highest ancestor of the
    Python install that others cannot traverse (the install is re-exposed inside it)."""
    prefix = os.path.dirname(os.path.dirname(python))
    hide = []
    if home and home != "/" and os.path.isdir(home):
        hide.append(os.path.realpath(home))
    parts = prefix.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        d = "/" + "/".join(parts[:i])
        if not os.stat(d).st_mode & 0o001:
            hide.append(d)
            break
    # Outermost first, without directories nested in one already hidden.
    out: list[str] = []
    for d in sorted(set(hide), key=len):
        if not any(d == o or d.startswith(o + "/") for o in out):
            out.append(d)
    return out


def _setup_isolated(cfg: dict[str, Any], program: bytes) -> dict[str, Any]:
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    # Private propagation first, so nothing below ever leaks into the host's mounts.
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    python = cfg["python"]
    prefix = os.path.dirname(os.path.dirname(python))
    hide = _hide_dirs(python, cfg["home"])
    _readonly_everything(libc)
    lim = cfg["limits"]
    _mount(libc, "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={lim['disk_bytes']},mode=0755")
    stage = "/tmp/.python"
    needs_stage = any(prefix.startswith(d + "/") for d in hide)
    if needs_stage:
        os.mkdir(stage)
        _mount(libc, prefix, stage, None, MS_BIND | MS_REC)
    for d in hide:
        _mount(libc, "tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        if prefix.startswith(d + "/"):
            os.makedirs(prefix, 0o755)
            _mount(libc, stage, prefix, None, MS_MOVE)
            _mount(libc, None, prefix, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
        _mount(libc, None, d, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    if needs_stage:
        os.rmdir(stage)
    try:
        _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        fresh_proc = True
    except OSError:
        fresh_proc = False
    uid = int(cfg["uid"])
    work = "/tmp/work"
    os.mkdir(work, 0o700)
    os.chown(work, uid, uid)
    with open(os.path.join(work, "solution.py"), "wb") as f:
        f.write(program)
    os.chown(os.path.join(work, "solution.py"), uid, uid)
    os.chdir(work)
    _set_rlimits(lim)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return {"mount_ns": True, "net_ns": True, "pid_ns": True, "readonly_root": True, "uid": uid,
            "hidden": hide, "fresh_proc": fresh_proc, "work": work}


def _set_rlimits(lim: dict[str, Any]) -> None:
    import resource

    def cap(which: int, value: int, hard: int | None = None) -> None:
        resource.setrlimit(which, (value, value if hard is None else hard))

    cap(resource.RLIMIT_CPU, int(lim["cpu_s"]), int(lim["cpu_s"]) + 1)
    cap(resource.RLIMIT_AS, int(lim["memory_bytes"]))
    cap(resource.RLIMIT_FSIZE, int(lim["file_bytes"]))
    cap(resource.RLIMIT_NPROC, int(lim["nproc"]))
    cap(resource.RLIMIT_NOFILE, int(lim["nofile"]))
    cap(resource.RLIMIT_CORE, 0)


_GUARD = r'''
import os as _os, sys as _sys
def _ttscale_guard():
    root = _os.path.realpath(_os.getcwd())
    deny = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
            "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn", "os.system", "os.kill",
            "os.killpg", "subprocess.Popen", "pty.spawn", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
            "os.putenv", "sys.addaudithook"}
    path_events = {"os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.chmod", "os.chown", "os.link",
                   "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile",
                   "os.chdir", "os.chroot"}
    bad_modules = {"ctypes", "_ctypes", "_posixsubprocess", "_socket", "socket", "multiprocessing"}
    realpath, isabs, join, sep = _os.path.realpath, _os.path.isabs, _os.path.join, _os.sep
    def inside(p):
        if isinstance(p, int):
            return True
        p = _os.fsdecode(p)
        p = realpath(p if isabs(p) else join(root, p))
        return p == root or p.startswith(root + sep) or p == "/dev/null"
    def hook(event, args):
        if event in deny:
            raise PermissionError("sandbox: " + event + " is not allowed")
        if event == "import" and args[0].split(".")[0] in bad_modules:
            raise ImportError("sandbox: module " + args[0] + " is not allowed")
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (flags & 0o3) or (flags & 0o100)
            if writing and path is not None and not inside(path):
                raise PermissionError("sandbox: writing outside the sandbox directory is not allowed")
        elif event in path_events:
            for a in args[:2]:
                if isinstance(a, (str, bytes)) and not inside(a):
                    raise PermissionError("sandbox: " + event + " outside the sandbox directory is not allowed")
    _sys.addaudithook(hook)
_ttscale_guard()
del _ttscale_guard, _os, _sys
'''


def _setup_guarded(cfg: dict[str, Any], program: bytes) -> dict[str, Any]:
    prot: dict[str, Any] = {"net_ns": False, "audit_guard": True}
    try:
        libc = _libc()
        if os.geteuid() == 0:
            _check(libc.unshare(CLONE_NEWNET), "unshare")
        else:
            uid, gid = os.geteuid(), os.getegid()
            _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNET), "unshare")
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        prot["net_ns"] = True
    except OSError as e:  # no namespaces here: the audit guard is the only network barrier
        prot["net_ns_error"] = str(e)
    work = cfg["work"]
    with open(os.path.join(work, "solution.py"), "wb") as f:
        f.write(_GUARD.encode() + b"\n" + program)
    os.chdir(work)
    _set_rlimits(cfg["limits"])
    try:
        _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    except OSError:
        pass
    prot["work"] = work
    return prot


def _launch(cfg_path: str) -> int:
    with open(cfg_path) as f:
        cfg = json.load(f)
    with open(cfg["program"], "rb") as f:
        program = f.read()
    status_path = cfg["status"]
    isolated = cfg["mode"] == "isolated"
    if isolated:
        _check(_libc().unshare(CLONE_NEWPID), "unshare pid")
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the sandboxed process (PID 1 of its namespace in isolated mode)
        os.close(err_r)
        try:
            prot = (_setup_isolated if isolated else _setup_guarded)(cfg, program)
            os.write(err_w, b"P" + json.dumps(prot).encode() + b"\n")
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": os.getcwd(),
                   "TMPDIR": os.getcwd(), "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
            os.execve(cfg["python"], [cfg["python"], "-I", "-B", "solution.py"], env)
        except BaseException as e:  # report any setup failure to the launcher, never run the program
            try:
                os.write(err_w, b"E" + f"{type(e).__name__}: {e}".encode()[:4000])
            finally:
                os._exit(_SETUP_FAILED)
    os.close(err_w)
    chunks = []
    while chunk := os.read(err_r, 65536):
        chunks.append(chunk)
    msg = b"".join(chunks)
    _, wstatus = os.waitpid(pid, 0)
    status: dict[str, Any] = {}
    # "P<json>\n" once set up; "E<message>" if setup or exec failed (exec success closes the pipe).
    prot_line, _, rest = msg.partition(b"\n") if msg.startswith(b"P") else (b"", b"", msg)
    if prot_line:
        status["protections"] = json.loads(prot_line[1:])
    if rest or not prot_line:
        status["setup_error"] = rest[1:].decode("utf-8", "replace") or "child died during setup"
    if "setup_error" not in status:
        if os.WIFSIGNALED(wstatus):
            status["signal"] = os.WTERMSIG(wstatus)
        else:
            status["returncode"] = os.WEXITSTATUS(wstatus)
    with open(status_path, "w") as f:
        json.dump(status, f)
    return 0


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--launch":
    sys.exit(_launch(sys.argv[2]))
