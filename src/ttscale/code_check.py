"""Unit-test checks whose verdict model-written code cannot forge: two processes, plain data between them.

A check used to be one program: the answer's code, then the tests, and "pass" meant exit status 0.
Any answer that ended the interpreter early with status 0 (``SystemExit``, ``os._exit``, an exit
handler, ...) passed, and so did one returning an object whose ``__eq__`` always says yes.

Now a check is two programs run by the sandbox (:meth:`ttscale.sandbox.Sandbox.run_check`):

* the **answer process** runs the solution (prompt + model-written code), then serves calls:
  it reads ``(args, kwargs)`` from a pipe, calls the entry point, and writes back the return
  value encoded as *plain data* (:func:`encode`: None, bool, int, float, complex, str, bytes and
  lists, tuples, dicts, sets, frozensets of them; exact types only in strict mode);
* the **test process** runs the problem's trusted code (the prompt's helpers and the official
  ``check(candidate)``) with ``candidate`` a proxy that forwards each call to the answer process
  and rebuilds the returned value from the plain data (:func:`decode`). Only when ``check``
  returns normally does it write ``{"complete": true}`` to a report pipe that only it holds;
  the launcher puts that report in the status, and the parent passes a check only with it.

The answer's code never runs in the test process, so it cannot reach the report pipe, exit the
test process, patch ``check``, or hand it an object of its own class: whatever it does, the tests
compare builtin values that the test process built itself. The threat model and its limits are
in docs/code.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# ---- plain-data codec (the same source runs inside both sandboxed processes) --------------------

CODEC = r'''
def encode(v, strict=True, _depth=0):
    """A JSON-able form of a plain builtin value; raises TypeError naming any other type."""
    if _depth > 200:
        raise TypeError("value nested deeper than 200 levels")
    t = type(v)
    if v is None or t is bool or t is str:
        return v
    if t is int:
        return v
    if t is float:
        return v if v == v and v not in (float("inf"), float("-inf")) else {"f": repr(v)}
    if t is list:
        return [encode(x, strict, _depth + 1) for x in v]
    if t is tuple:
        return {"t": [encode(x, strict, _depth + 1) for x in v]}
    if t is dict:
        return {"d": [[encode(k, strict, _depth + 1), encode(x, strict, _depth + 1)] for k, x in v.items()]}
    if t is set:
        return {"s": [encode(x, strict, _depth + 1) for x in v]}
    if t is frozenset:
        return {"z": [encode(x, strict, _depth + 1) for x in v]}
    if t is bytes:
        return {"b": v.hex()}
    if t is complex:
        return {"c": [encode(v.real), encode(v.imag)]}
    if not strict:
        # Lenient mode: subclasses of builtin containers and scalars (namedtuple, Counter,
        # OrderedDict, IntEnum, ...) cross as their builtin base; anything else is still refused.
        for base in (bool, int, float, str, bytes, complex, tuple, list, dict, set, frozenset):
            if isinstance(v, base):
                if base in (dict,):
                    return encode(dict(dict.items(v)), strict, _depth + 1)
                if base in (tuple, list, set, frozenset):
                    return encode(base(base.__iter__(v)), strict, _depth + 1)
                return encode(base.__new__(base, v) if base is not bool else bool(int.__int__(v)), strict, _depth + 1)
    raise TypeError("%s.%s" % (t.__module__, t.__qualname__))


def decode(j):
    t = type(j)
    if j is None or t in (bool, int, float, str):
        return j
    if t is list:
        return [decode(x) for x in j]
    if t is dict and len(j) == 1:
        (tag, x), = j.items()
        if tag == "t":
            return tuple(decode(y) for y in x)
        if tag == "d":
            return {decode(k): decode(y) for k, y in x}
        if tag == "s":
            return {decode(y) for y in x}
        if tag == "z":
            return frozenset(decode(y) for y in x)
        if tag == "b":
            return bytes.fromhex(x)
        if tag == "c":
            return complex(decode(x[0]), decode(x[1]))
        if tag == "f" and x in ("nan", "inf", "-inf"):
            return float(x)
    raise ValueError("not a plain-data encoding")
'''

_ns: dict[str, Any] = {}
exec(CODEC, _ns)  # noqa: S102 - our own source, shared with the sandboxed programs
encode = _ns["encode"]
decode = _ns["decode"]


# ---- the answer process -----------------------------------------------------------------------

_ANSWER_SERVER = r'''
import json as _j, os as _o, sys as _s
def _ttscale_serve(_src, _entry, _strict, _rfd, _wfd):
    _rd = _o.fdopen(_rfd, "rb")
    def _send(obj):
        data = (_j.dumps(obj) + "\n").encode()
        while data:
            data = data[_o.write(_wfd, data):]
    _rd.read(1)  # the test process says go once it has made itself untraceable
    _ns = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(_src, "solution.py", "exec"), _ns)
    except SystemExit as e:
        _send({"event": "exit", "where": "load", "code": repr(e.code)})
        return
    except BaseException as e:
        _send({"event": "error", "where": "load", "type": type(e).__name__, "message": str(e)[:300]})
        return
    _fn = _ns.get(_entry)
    if not callable(_fn):
        _send({"event": "error", "where": "load", "type": "NameError", "message": "no function %r" % _entry})
        return
    _send({"event": "ready"})
    while True:
        _line = _rd.readline()
        if not _line.endswith(b"\n"):
            return
        _call = _j.loads(_line)
        try:
            _args = decode(_call["args"])
            _kw = decode(_call["kwargs"])
            _v = _fn(*_args, **_kw)
        except SystemExit as e:
            _send({"event": "exit", "where": "call", "code": repr(e.code)})
            return
        except BaseException as e:
            _send({"event": "error", "where": "call", "type": type(e).__name__, "message": str(e)[:300]})
            continue
        try:
            _send({"event": "value", "value": encode(_v, _strict)})
        except TypeError as e:
            _cls = type(_v)
            _own = getattr(_cls, "__module__", "") == "__main__"
            _eq = any(getattr(_cls, n, None) is not getattr(object, n) and
                      getattr(getattr(_cls, n, None), "__module__", "") == "__main__" for n in ("__eq__", "__ne__"))
            _send({"event": "foreign", "type": str(e), "answer_class": _own, "overrides_eq": _eq})
'''


def answer_program(solution_source: str, entry_point: str, *, strict: bool) -> str:
    """The program of the answer process: the codec, the call server, and the solution as data."""
    return (CODEC + _ANSWER_SERVER +
            f"_ttscale_serve({solution_source!r}, {entry_point!r}, {strict!r}, int(_s.argv[1]), int(_s.argv[2]))\n")


# ---- the test process -------------------------------------------------------------------------

_TEST_HARNESS = r'''
import json as _j, os as _o, sys as _s
_REPORT, _TO_A, _FROM_A, _APID = (int(x) for x in _s.argv[1:5])
def _report(obj):
    data = (_j.dumps(obj) + "\n").encode()
    while data:
        data = data[_o.write(_REPORT, data):]
try:  # not dumpable: a process of the same uid cannot ptrace us or open our /proc entries
    import ctypes as _ct
    _ct.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
except Exception:
    pass
try:
    _o.write(_TO_A, b"g")
except OSError:
    pass  # the answer's process is gone already: the first receive reports it
_inbox = _o.fdopen(_FROM_A, "rb")

class _CandidateFailed(Exception):
    def __init__(self, reason, suspicious=None):
        super().__init__(reason)
        self.reason, self.suspicious = reason, suspicious

def _answer_ended():
    try:
        pid, status = _o.waitpid(_APID, 0)
    except ChildProcessError:
        return "the answer's process ended before the tests finished", "early-exit"
    if _o.WIFEXITED(status):
        code = _o.WEXITSTATUS(status)
        return ("the answer exited (status %d) before the tests finished" % code,
                "early-exit" if code == 0 else None)
    sig = _o.WTERMSIG(status)
    return "the answer's process was killed by signal %d before the tests finished" % sig, "timeout" if sig in (9, 24) else None

def _receive():
    line = _inbox.readline()
    if not line.endswith(b"\n"):
        raise _CandidateFailed(*_answer_ended())
    try:
        return _j.loads(line)
    except ValueError:
        raise _CandidateFailed("the answer's process sent a malformed message", "tampered")

def _event(msg, where):
    ev = msg.get("event") if isinstance(msg, dict) else None
    if ev == "exit":
        raise _CandidateFailed("the answer raised SystemExit(%s) before the tests finished" % msg.get("code"), "early-exit")
    if ev == "error":
        raise _CandidateFailed("%s: %s" % (msg.get("type"), msg.get("message")))
    if ev == "foreign":
        fake = msg.get("overrides_eq") is True
        raise _CandidateFailed("the answer returned an object of class %s, not a plain builtin value" % msg.get("type"),
                               "fake-equality" if fake else "foreign-object")
    if where == "load" and ev == "ready":
        return None
    if where == "call" and ev == "value":
        try:
            return decode(msg.get("value"))
        except (ValueError, TypeError, KeyError, IndexError):
            raise _CandidateFailed("the answer's process sent a malformed value", "tampered")
    raise _CandidateFailed("the answer's process sent an unexpected message", "tampered")

_calls = [0]
def _candidate(*args, **kwargs):
    data = (_j.dumps({"args": encode(list(args)), "kwargs": encode(dict(kwargs))}) + "\n").encode()
    try:
        while data:
            data = data[_o.write(_TO_A, data):]
    except BrokenPipeError:
        raise _CandidateFailed(*_answer_ended())
    _calls[0] += 1
    return _event(_receive(), "call")

def _run(prompt_code, test_code, entry):
    ns = {"__name__": "__main__"}
    try:
        _event(_receive(), "load")
        exec(compile(prompt_code, "prompt.py", "exec"), ns)
        _candidate.__name__ = entry
        ns[entry] = _candidate  # tests may call the function by its own name (HumanEval/33)
        exec(compile(test_code, "test.py", "exec"), ns)
        ns["check"](_candidate)
    except _CandidateFailed as e:
        timeout = e.suspicious == "timeout"
        _report({"complete": False, "reason": e.reason, "suspicious": None if timeout else e.suspicious,
                 "timeout": timeout, "calls": _calls[0]})
        return 1
    except AssertionError as e:
        import traceback
        where = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "test.py"]
        line = ""
        if where:
            src = test_code.splitlines()
            n = where[-1].lineno or 0
            line = " at test line %d: %s" % (n, src[n - 1].strip()[:200] if 0 < n <= len(src) else "")
        _report({"complete": False, "reason": "AssertionError" + line + (" (%s)" % e if str(e) else ""),
                 "calls": _calls[0]})
        return 1
    except BaseException as e:
        _report({"complete": False, "reason": "the tests raised %s: %s" % (type(e).__name__, str(e)[:300]),
                 "calls": _calls[0]})
        return 1
    _report({"complete": True, "calls": _calls[0]})
    return 0
'''


def test_program(prompt_code: str, test_code: str, entry_point: str) -> str:
    """The program of the test process: the codec, the proxy, and the problem's own (trusted) code."""
    return CODEC + _TEST_HARNESS + f"_s.exit(_run({prompt_code!r}, {test_code!r}, {entry_point!r}))\n"


@dataclass(frozen=True)
class CheckPrograms:
    """The two programs of one check (see :meth:`ttscale.sandbox.Sandbox.run_check`)."""

    answer: str
    tests: str


def check_programs(solution_source: str, prompt_code: str, test_code: str, entry_point: str, *,
                   strict: bool = True) -> CheckPrograms:
    return CheckPrograms(answer_program(solution_source, entry_point, strict=strict),
                         test_program(prompt_code, test_code, entry_point))


def is_plain(v: Any) -> bool:
    """Whether ``v`` crosses the boundary in strict mode."""
    try:
        encode(v, True)
    except TypeError:
        return False
    return True
