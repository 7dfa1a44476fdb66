"""The sandbox launcher: run as a script by :mod:`ttscale.sandbox`, one process per check.

``python -I -S -B sandbox_launch.py CONFIG`` reads the JSON config the parent wrote, sets
up isolation (see :mod:`ttscale.sandbox` for the two modes), forks the sandboxed process,
execs Python on the program in it, waits, and writes ``status.json`` (exit code or signal,
the protections applied, or why setup failed). It imports only cheap standard-library
modules: its start-up time is part of every check's overhead.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

SETUP_FAILED = 125  # exit code of the sandboxed child when setup failed (the program never ran)
SIGKILL = 9

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
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

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


def _isolate(cfg: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Namespaces and mounts (as root): everything of isolated mode before a process drops privileges."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    # Private propagation first, so nothing below ever leaks into the host's mounts.
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    python = cfg["python"]
    prefix = os.path.dirname(os.path.dirname(python))
    # /tmp becomes an empty tmpfs below, which already hides whatever lived under it (a HOME there).
    hide = [d for d in _hide_dirs(python, cfg["home"]) if d != "/tmp" and not d.startswith("/tmp/")]
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
    return libc, {"mount_ns": True, "net_ns": True, "pid_ns": True, "readonly_root": True,
                  "hidden": hide, "fresh_proc": fresh_proc}


def _enter(libc: Any, work: str, program: bytes, uid: int, lim: dict[str, Any]) -> None:
    """Make ``work`` (owned by ``uid``, mode 0700) hold ``solution.py``, go there and drop to ``uid``."""
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
    libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)


def _setup_isolated(cfg: dict[str, Any], program: bytes) -> dict[str, Any]:
    libc, prot = _isolate(cfg)
    uid = int(cfg["uid"])
    _enter(libc, "/tmp/work", program, uid, cfg["limits"])
    return prot | {"uid": uid, "work": "/tmp/work"}


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
    own_proc = "/proc/%d" % _os.getpid()
    bad_modules = {"ctypes", "_ctypes", "_posixsubprocess", "_socket", "socket", "multiprocessing"}
    realpath, isabs, join, sep, fsdecode = _os.path.realpath, _os.path.isabs, _os.path.join, _os.sep, _os.fsdecode
    created = [0]  # files opened for writing: caps total disk use at max_files * RLIMIT_FSIZE
    def inside(p):
        if isinstance(p, int):
            return True
        p = fsdecode(p)
        p = realpath(p if isabs(p) else join(root, p))
        return p == root or p.startswith(root + sep) or p == "/dev/null"
    def hook(event, args):
        if event in deny:
            raise PermissionError("sandbox: " + event + " is not allowed")
        if event == "import" and args[0].split(".")[0] in bad_modules:
            raise ImportError("sandbox: module " + args[0] + " is not allowed")
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            if isinstance(path, (str, bytes)):
                # Other processes' /proc entries (environ, cmdline, mem) hold the host's secrets.
                real = realpath(fsdecode(path))
                if real.startswith("/proc/") and not (real == own_proc or real.startswith(own_proc + "/")):
                    raise PermissionError("sandbox: reading other processes' /proc entries is not allowed")
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (flags & 0o3) or (flags & 0o100)
            if writing and path is not None:
                if not inside(path):
                    raise PermissionError("sandbox: writing outside the sandbox directory is not allowed")
                created[0] += 1
                if created[0] > MAX_FILES:
                    raise PermissionError("sandbox: too many files opened for writing")
        elif event in path_events:
            for a in args[:2]:
                if isinstance(a, (str, bytes)) and not inside(a):
                    raise PermissionError("sandbox: " + event + " outside the sandbox directory is not allowed")
    _sys.addaudithook(hook)
_ttscale_guard()
del _ttscale_guard
'''


GUARD_MAX_WRITE_OPENS = 32


def _guarded_env(cfg: dict[str, Any]) -> dict[str, Any]:
    """Guarded mode's network namespace (where one can be had)."""
    prot: dict[str, Any] = {"net_ns": False, "audit_guard": True}
    try:
        if not cfg.get("network_namespace", True):
            raise OSError("network namespace disabled by configuration")
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
    return prot


def _enter_guarded(work: str, program: bytes, guard: bool, lim: dict[str, Any]) -> None:
    with open(os.path.join(work, "solution.py"), "wb") as f:
        f.write((_GUARD.replace("MAX_FILES", str(GUARD_MAX_WRITE_OPENS)).encode() + b"\n" if guard else b"") + program)
    os.chdir(work)
    _set_rlimits(lim)
    try:
        _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        _libc().prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    except OSError:
        pass


def _setup_guarded(cfg: dict[str, Any], program: bytes) -> dict[str, Any]:
    prot = _guarded_env(cfg)
    _enter_guarded(cfg["work"], program, True, cfg["limits"])
    return prot | {"work": cfg["work"]}


def _setup_check(cfg: dict[str, Any], tests: bytes, report_w: int) -> tuple[dict[str, Any], list[str]]:
    """Two processes for a unit-test check (see ttscale.code_check): the answer's, forked here and
    exec'd at once, and the test process's, which this process becomes. Returns the protections
    and the test process's argv; only the test process keeps the report pipe."""
    with open(cfg["check"]["answer"], "rb") as f:
        answer = f.read()
    isolated = cfg["mode"] == "isolated"
    if isolated:
        libc, prot = _isolate(cfg)
    else:
        libc, prot = None, _guarded_env(cfg)
    uid = int(cfg["uid"])
    to_a_r, to_a_w = os.pipe()
    from_a_r, from_a_w = os.pipe()
    env = _child_env()
    pid = os.fork()
    if pid == 0:  # the answer's process: another uid than the tests (isolated), the audit guard (guarded)
        try:
            os.close(to_a_w)
            os.close(from_a_r)
            os.close(report_w)
            if isolated:
                _enter(libc, "/tmp/answer", answer, uid + 1, cfg["limits"])
            else:
                _enter_guarded(cfg["work"], answer, True, cfg["limits"])
            os.set_inheritable(to_a_r, True)
            os.set_inheritable(from_a_w, True)
            os.execve(cfg["python"], [cfg["python"], "-I", "-S", "-B", "solution.py", str(to_a_r), str(from_a_w)],
                      env | {"HOME": os.getcwd(), "TMPDIR": os.getcwd()})
        finally:
            os._exit(SETUP_FAILED)
    os.close(to_a_r)
    os.close(from_a_w)
    if isolated:
        _enter(libc, "/tmp/work", tests, uid, cfg["limits"])
        prot |= {"uid": uid, "answer_uid": uid + 1, "work": "/tmp/work"}
    else:
        tests_dir = cfg["check"]["tests_dir"]
        _enter_guarded(tests_dir, tests, False, cfg["limits"])
        prot |= {"work": cfg["work"]}
    for fd in (report_w, to_a_w, from_a_r):
        os.set_inheritable(fd, True)
    prot["check"] = "two-process"
    return prot, ["solution.py", str(report_w), str(to_a_w), str(from_a_r), str(pid)]


def _child_env() -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": os.getcwd(),
            "TMPDIR": os.getcwd(), "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}


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
    check = "check" in cfg
    report_r, report_w = os.pipe() if check else (-1, -1)
    pid = os.fork()
    if pid == 0:  # the sandboxed process (PID 1 of its namespace in isolated mode)
        os.close(err_r)
        try:
            if check:
                os.close(report_r)
                prot, argv = _setup_check(cfg, program, report_w)
            else:
                prot = (_setup_isolated if isolated else _setup_guarded)(cfg, program)
                argv = ["solution.py"]
            os.write(err_w, b"P" + json.dumps(prot).encode() + b"\n")
            os.execve(cfg["python"], [cfg["python"], "-I", "-S", "-B", *argv], _child_env())
        except BaseException as e:  # report any setup failure to the launcher, never run the program
            try:
                os.write(err_w, b"E" + f"{type(e).__name__}: {e}".encode()[:4000])
            finally:
                os._exit(SETUP_FAILED)
    os.close(err_w)
    chunks = []
    while chunk := os.read(err_r, 65536):
        chunks.append(chunk)
    msg = b"".join(chunks)
    _, wstatus = os.waitpid(pid, 0)
    status: dict[str, Any] = {}
    if check:
        os.close(report_w)
        report = b""
        while chunk := os.read(report_r, 65536):
            report += chunk
        lines = [ln for ln in report.decode("utf-8", "replace").splitlines() if ln.strip()]
        try:
            status["report"] = json.loads(lines[-1]) if lines else None
        except ValueError:
            status["report"] = {"complete": False, "reason": "unreadable report from the test process"}
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


if __name__ == "__main__" and len(sys.argv) == 2:
    sys.exit(_launch(sys.argv[1]))
