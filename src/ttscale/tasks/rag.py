"""Retrieval-augmented question answering (DRAG, Yue et al. 2024), over any question set and corpus.

A prompt is ``m`` demonstrations, then the question's top-``k`` retrieved passages, then the question.
The demonstrations come from a demonstration split that is never evaluated (the first
``DEMO_POOL`` questions of a seeded shuffle, so the evaluated questions are the same whatever ``m``),
each with its own top-``k`` passages and gold answer; they are the same for every question, so the
prompt's head is one shared prefix that an engine with prefix caching prefills once per run (the
embedded engine keeps it; llama-server's prompt cache does over HTTP) while the meter counts both the
full prompt (the paper's *effective context length*) and the tokens actually prefilled. The query's
passages are ordered with the best nearest the question.

IterDRAG (the ``iterdrag`` strategy) drives this task through :meth:`RagTask.iter_request` and
:meth:`RagTask.retrieve_passages`: follow-up sub-questions, each with its own retrieved passages and
intermediate answer, then the final answer; its demonstrations are the same demonstration questions
worked through their gold decompositions (MuSiQue's), with passages retrieved for every sub-question.

``--task rag`` reads MuSiQue (shipped in ``ttscale/data/rag``, or ``--data DIR`` with the two files),
or a generic question set with ``--data questions.jsonl --task-option corpus=corpus.jsonl``. Retrieval
is BM25 (:mod:`ttscale.tasks.retrieval`); each problem's retrieved passage ids are in its ``meta``,
which the store keeps with the run. Grading: exact match (the verdict) and token F1 (in the sample's
grade detail), both against every alias.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
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
from ttscale.tasks.retrieval import BM25Retriever, Hop, HopStep, Retriever
from ttscale.tasks.spec import TaskArgs, TaskSpec
from ttscale.types import ChatMessage, Problem, PromptFormat, Shot

DEMO_POOL = 8
"""Questions set aside (never evaluated) for demonstrations: m is at most this."""
INSTRUCTION = ("Answer the question using the documents. Think briefly if needed, then end with "
               "'The answer is <short answer>.'")
ITER_INSTRUCTION = ("Answer the question using the documents. If it needs several steps, ask one simple "
                    "follow-up question at a time ('Follow up: ...'); you will get documents for it, then answer it "
                    "('Intermediate answer: ...'). When you know the answer, write 'So the final answer is: "
                    "<short answer>.'")
CONTINUE = "Ask the next follow-up question, or give the final answer."
FINAL = "Give the final answer now: 'So the final answer is: <short answer>.'"
_FOLLOW_UP = re.compile(r"follow[- ]?up(?: question)?\s*:\s*(.+)", re.IGNORECASE)
_FINAL = re.compile(r"answer is", re.IGNORECASE)
_INTERMEDIATE = re.compile(r"intermediate answer\s*:\s*(.+)", re.IGNORECASE)
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

    @cached_property
    def _where(self) -> dict[str, int]:
        return {p.id: n for n, p in enumerate(self.corpus)}

    def _query_docs(self, problem: Problem) -> list[int]:
        """The problem's stored top-k passages (corpus indices), or retrieved now for a problem from elsewhere."""
        ids = problem.meta.get("retrieved")
        if ids is None or len(ids) != min(self.docs, len(self.corpus)):
            return self._retrieved([Question(problem.id, problem.prompt, (problem.reference or "",))])[0]
        return [self._where[i] for i in ids]

    def request(self, problem: Problem) -> GenerationRequest:
        return build_request(self._with_docs(problem.prompt, self._query_docs(problem)), self._shots, self.fmt,
                             qa_labels=("", "Answer:"))

    # ---- IterDRAG (driven by the iterdrag strategy) ---------------------------------------------------

    def retrieve_passages(self, question: str) -> list[str]:
        """Ids of the top-k passages for a follow-up question, best first."""
        return [self.corpus[i].id for i in self.retriever.retrieve([question], self.docs)[0]]

    @cached_property
    def _iter_demos(self) -> list[tuple[str, list[int], list[Hop], str]]:
        """IterDRAG's demonstrations: (question, its passages, its gold hops with their passages, answer)."""
        demos = self._split[0][: self.fmt.shots]
        missing = [q.id for q in demos if not q.decomposition]
        if missing:
            raise ConfigError(f"IterDRAG's demonstrations are worked through gold decompositions, and demonstration "
                              f"question(s) {', '.join(missing)} have none (MuSiQue has them): use --shots 0")
        out = []
        for q in demos:
            answers: list[str] = []
            subs = []
            for sub, a in q.decomposition:
                subs.append(gold_sub_question(sub, answers))
                answers.append(a)
            found = self.retriever.retrieve([q.question, *subs], self.docs)
            hops = [Hop(sq, tuple(self.corpus[i].id for i in ids), a)
                    for sq, ids, a in zip(subs, found[1:], answers, strict=True)]
            out.append((q.question, found[0], hops, q.answers[0]))
        return out

    def _iter_instruction(self) -> str:
        return self.fmt.instruction.strip() if self.fmt.instruction != INSTRUCTION else ITER_INSTRUCTION

    def _hop_docs(self, hop: Hop) -> str:
        ask = f"Answer the follow-up question: {hop.question}"
        return f"{self._context([self._where[i] for i in hop.passages])}\n\n{ask}" if hop.passages else ask

    def _iter_chat(self, question: str, docs: list[int], hops: Sequence[Hop], prefix: str) -> list[ChatMessage]:
        msgs = [ChatMessage("user", prefix + self._with_docs(question, docs))]
        for n, h in enumerate(hops):
            if n:
                msgs.append(ChatMessage("user", CONTINUE))
            msgs += [ChatMessage("assistant", f"Follow up: {h.question}"), ChatMessage("user", self._hop_docs(h))]
            if h.answer is not None:
                msgs.append(ChatMessage("assistant", f"Intermediate answer: {h.answer}"))
        return msgs

    def _iter_text(self, question: str, docs: list[int], hops: Sequence[Hop]) -> str:
        lines = [self._with_docs(question, docs)]
        for h in hops:
            lines.append(f"Follow up: {h.question}")
            if h.passages:
                lines.append(self._context([self._where[i] for i in h.passages]))
            if h.answer is not None:
                lines.append(f"Intermediate answer: {h.answer}")
        return "\n".join(lines)

    def iter_request(self, problem: Problem, hops: Sequence[Hop], step: HopStep) -> GenerationRequest:
        """The prompt of one IterDRAG call (without sampling settings): the demonstrations worked hop by hop,
        then the question with its passages and the rounds so far; ``step`` says what the model writes next.
        Every call of a question extends the previous call's prompt, and the demonstrations are the same for
        every question, so an engine with prefix caching prefills each call's new part only."""
        if step == "answer" and (not hops or hops[-1].answer is not None):
            raise ConfigError("an intermediate answer needs an unanswered last follow-up")
        if step != "answer" and any(h.answer is None for h in hops):
            raise ConfigError("every follow-up but the one being answered needs its answer")
        docs = self._query_docs(problem)
        max_tokens = self.fmt.max_tokens
        if self.fmt.style == "completion":
            blocks = [self._iter_instruction()]
            for q, d, h, a in self._iter_demos:
                blocks.append(f"{self._iter_text(q, d, h)}\nSo the final answer is: {a}.")
            now = self._iter_text(problem.prompt, docs, hops)
            tail = {"follow_up": "\n", "answer": "\nIntermediate answer:", "final": "\nSo the final answer is:"}[step]
            return GenerationRequest(prompt="\n\n".join(blocks) + "\n\n" + now + tail, stop=("\n",),
                                     max_tokens=max_tokens)
        prefix = f"{self._iter_instruction()}\n\n"
        msgs: list[ChatMessage] = []
        for q, d, h, a in self._iter_demos:
            msgs += self._iter_chat(q, d, h, prefix)
            if h:
                msgs.append(ChatMessage("user", CONTINUE))
            msgs.append(ChatMessage("assistant", f"So the final answer is: {a}."))
        msgs += self._iter_chat(problem.prompt, docs, hops, prefix)
        if step == "follow_up" and hops:
            msgs.append(ChatMessage("user", CONTINUE))
        elif step == "final":
            if hops:
                msgs.append(ChatMessage("user", FINAL))
            else:
                msgs[-1] = ChatMessage("user", f"{msgs[-1].content}\n\n{FINAL}")
        stop = {"follow_up": ("Intermediate answer",), "answer": ("Follow up",), "final": ()}[step]
        return GenerationRequest(messages=tuple(msgs), stop=stop, max_tokens=max_tokens)

    def parse_follow_up(self, text: str) -> str | None:
        """The follow-up question a follow-up call wrote, or None when it gave the final answer instead."""
        follow, final = _FOLLOW_UP.search(text), _FINAL.search(text)
        if follow is None or (final is not None and final.start() < follow.start()):
            return None
        return follow.group(1).strip().splitlines()[0].strip()[:300] or None

    def parse_intermediate(self, text: str) -> str:
        """The intermediate answer an answer call wrote (its first line, without the label)."""
        m = _INTERMEDIATE.search(text)
        found = m.group(1) if m else text
        lines = [ln.strip() for ln in found.strip().splitlines() if ln.strip()]
        return lines[0][:300] if lines else ""

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


def gold_sub_question(text: str, earlier: Sequence[str]) -> str:
    """A MuSiQue decomposition step as a question: ``#n`` replaced by the n-th earlier answer, and a
    knowledge-base step ``subject >> relation`` written as a question (a long relation, such as Wikidata's
    "located in the administrative territorial entity", as ``subject: relation?``).

    >>> gold_sub_question("Who was the first president of #1 ?", ["the APA"])
    'Who was the first president of the APA?'
    >>> gold_sub_question("Hello Love >> performer", [])
    'What is the performer of Hello Love?'
    >>> gold_sub_question("Rome >> located in the administrative territorial entity", [])
    'Rome: located in the administrative territorial entity?'
    """
    for n in range(len(earlier), 0, -1):
        text = text.replace(f"#{n}", earlier[n - 1])
    if ">>" in text:
        subject, relation = (t.strip() for t in text.split(">>", 1))
        text = f"What is the {relation} of {subject}?" if len(relation.split()) <= 2 else f"{subject}: {relation}?"
    return re.sub(r"\s+([?.,])", r"\1", " ".join(text.split()))


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
                lambda a, b: normalize_answer(a) == normalize_answer(b), options=RagOptions, takes_data=True)
