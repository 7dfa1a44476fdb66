"""Retrieval-augmented question answering (DRAG, Yue et al. 2024), over any question set and corpus.

A prompt is ``m`` demonstrations, then the question's top-``k`` retrieved passages, then the question.
The demonstrations come from a demonstration split that is never evaluated (the first
``DEMO_POOL`` questions of a seeded shuffle, so the evaluated questions are the same whatever ``m``),
each with its own top-``k`` passages and gold answer; they are the same for every question, so the
prompt's head is one shared prefix that an engine with prefix caching prefills once per run (the
embedded engine keeps it; llama-server's prompt cache does over HTTP) while the meter counts both the
full prompt (the paper's *effective context length*) and the tokens actually prefilled. The query's
passages are ordered with the best nearest the question.

``--task rag`` reads MuSiQue (shipped in ``ttscale/data/rag``, or ``--data DIR`` with the two files),
or a generic question set with ``--data questions.jsonl --task-option corpus=corpus.jsonl``. Retrieval
is BM25 (:mod:`ttscale.tasks.retrieval`); each problem's retrieved passage ids are in its ``meta``,
which the store keeps with the run. Grading: exact match (the verdict) and token F1 (in the sample's
grade detail), both against every alias.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ttscale.backends.base import GenerationRequest
from ttscale.errors import ConfigError
from ttscale.tasks.base import build_request
from ttscale.tasks.rag_data import (
    PACKAGED,
    Passage,
    Question,
    exact_match,
    normalize_answer,
    read_corpus,
    read_musique,
    read_questions,
    token_f1,
)
from ttscale.tasks.retrieval import BM25Retriever, Retriever
from ttscale.tasks.spec import TaskArgs, TaskSpec
from ttscale.types import Problem, PromptFormat, Shot

DEMO_POOL = 8
"""Questions set aside (never evaluated) for demonstrations: m is at most this."""
INSTRUCTION = ("Answer the question using the documents. Think briefly if needed, then end with "
               "'The answer is <short answer>.'")
_ANSWER = re.compile(r"answer is:?\s*(.+?)(?:\.\s*$|\.\s+|\n|$)", re.IGNORECASE | re.DOTALL)


class RagOptions(BaseModel):
    """What ``--task-option key=value`` may set for ``--task rag``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    docs: int = Field(5, ge=0, le=200, description="retrieved passages per question (k)")
    corpus: str | None = Field(None, description="passage corpus (JSONL) for a generic question set given by --data")


@dataclass
class RagTask:
    questions: list[Question]
    corpus: list[Passage]
    docs: int = 5
    fmt: PromptFormat = field(default_factory=lambda: PromptFormat(style="chat", shots=0, instruction=INSTRUCTION,
                                                                     max_tokens=96))
    seed: int = 0
    source: str = "musique"
    name: str = "rag"
    retriever_factory: Any = BM25Retriever

    def __post_init__(self) -> None:
        if self.fmt.shots > DEMO_POOL:
            raise ConfigError(f"at most {DEMO_POOL} demonstrations (--shots), got {self.fmt.shots}")
        if len(self.questions) <= DEMO_POOL:
            raise ConfigError(f"a RAG question set needs more than {DEMO_POOL} questions (the first {DEMO_POOL} of "
                              "a seeded shuffle are demonstrations)")

    @cached_property
    def retriever(self) -> Retriever:
        r: Retriever = self.retriever_factory(self.corpus)
        return r

    @cached_property
    def _split(self) -> tuple[list[Question], list[Question]]:
        order = list(self.questions)
        random.Random(self.seed).shuffle(order)
        return order[:DEMO_POOL], order[DEMO_POOL:]

    @cached_property
    def _by_id(self) -> dict[str, Question]:
        return {q.id: q for q in self.questions}

    def _retrieved(self, questions: list[Question]) -> list[list[int]]:
        return self.retriever.retrieve([q.question for q in questions], self.docs)

    def _context(self, ids: list[int]) -> str:
        # best passage last: nearest the question
        return "\n\n".join(f"Document [{n}] {self.corpus[i].render()}" for n, i in enumerate(reversed(ids), start=1))

    def _with_docs(self, question: str, ids: list[int]) -> str:
        return f"{self._context(ids)}\n\nQuestion: {question}" if ids else f"Question: {question}"

    @cached_property
    def _shots(self) -> list[Shot]:
        demos = self._split[0][: self.fmt.shots]
        ids = self._retrieved(demos) if demos else []
        return [Shot(self._with_docs(q.question, i), f"The answer is {q.answers[0]}.") for q, i in zip(demos, ids,
                                                                                                       strict=True)]

    def problems(self, limit: int | None = None) -> list[Problem]:
        test = self._split[1][:limit]
        retrieved = self._retrieved(test)
        return [Problem(q.id, q.question, q.answers[0],
                        {"answers": list(q.answers), "retrieved": [self.corpus[i].id for i in ids], "docs": self.docs,
                         **q.meta})
                for q, ids in zip(test, retrieved, strict=True)]

    def request(self, problem: Problem) -> GenerationRequest:
        ids = problem.meta.get("retrieved")
        if ids is None or len(ids) != min(self.docs, len(self.corpus)):  # a problem from elsewhere: retrieve now
            idx = self._retrieved([Question(problem.id, problem.prompt, (problem.reference or "",))])[0]
        else:
            where = {p.id: n for n, p in enumerate(self.corpus)}
            idx = [where[i] for i in ids]
        return build_request(self._with_docs(problem.prompt, idx), self._shots, self.fmt, qa_labels=("", "Answer:"))

    def extract(self, text: str) -> str | None:
        m = _ANSWER.search(text)
        if m:
            return m.group(1).strip().strip('"').strip() or None
        line = text.strip().splitlines()[0].strip() if text.strip() else ""
        return line or None

    def equivalent(self, a: str | None, b: str | None) -> bool:
        return a is not None and b is not None and normalize_answer(a) == normalize_answer(b)

    def _answers(self, problem: Problem) -> list[str]:
        return list(problem.meta.get("answers") or ([problem.reference] if problem.reference else []))

    def grade(self, problem: Problem, answer: str | None) -> bool | None:
        answers = self._answers(problem)
        return exact_match(answer, answers) if answers else None

    def grade_detail(self, problem: Problem, answer: str | None) -> dict[str, Any]:
        answers = self._answers(problem)
        return {"em": exact_match(answer, answers), "f1": round(token_f1(answer, answers), 4)}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "docs": self.docs, "demos": self.fmt.shots,
                "retriever": getattr(self.retriever_factory, "name", "custom"), "seed": self.seed,
                "format": self.fmt.to_dict()}


def _build(a: TaskArgs) -> RagTask:
    opts = RagOptions(**a.options)
    base = PromptFormat(style=a.default_style, shots=0, instruction=INSTRUCTION,  # type: ignore[arg-type]
                        max_tokens=96)
    fmt = a.format(base)
    if a.data and Path(a.data).is_file():
        if not opts.corpus:
            raise ConfigError("a question set given by --data needs its corpus: --task-option corpus=PATH.jsonl")
        questions, corpus, source = read_questions(Path(a.data)), read_corpus(Path(opts.corpus)), str(a.data)
    else:
        directory = Path(a.data) if a.data else PACKAGED
        questions, corpus = read_musique(directory)
        source = "musique" if not a.data else str(directory)
    return RagTask(questions, corpus, docs=opts.docs, fmt=fmt, seed=a.seed or 0, source=source)


SPEC = TaskSpec("rag", _build, "retrieval-augmented QA (DRAG): MuSiQue by default, or --data questions.jsonl "
                "--task-option corpus=corpus.jsonl; --task-option docs=K passages, --shots M demonstrations",
                lambda a, b: normalize_answer(a) == normalize_answer(b), options=RagOptions)
