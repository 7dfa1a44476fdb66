"""Question sets and passage corpora for retrieval-augmented tasks, and their answer grading.

Generic formats (JSONL, one object per line; a malformed line is an error naming its file and line):

- questions: ``{"id", "question", "answers": [...]}`` (``answer`` as one string is accepted too);
- corpus: ``{"id", "title", "text"}`` (``id`` optional: the line number).

MuSiQue as distributed (``musique-100.json.gz`` and ``musique-100-corpus.json.gz``, a JSON list each)
is read by :func:`read_musique`, keeping each question's gold decomposition for IterDRAG's
demonstrations. Grading is the literature's: exact match and token F1 after lower-casing and removing
punctuation, articles and extra whitespace, against every alias.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttscale.errors import DatasetError

PACKAGED = Path(__file__).resolve().parents[1] / "data" / "rag"
MUSIQUE_QUESTIONS = "musique-100.json.gz"
MUSIQUE_CORPUS = "musique-100-corpus.json.gz"


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str

    def render(self) -> str:
        return f"{self.title}: {self.text}" if self.title else self.text


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: tuple[str, ...]
    decomposition: tuple[tuple[str, str], ...] = ()
    """Gold single-hop (sub-question, answer) pairs, where the dataset has them (MuSiQue)."""
    meta: dict[str, Any] = field(default_factory=dict)


def _open(path: Path) -> Any:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DatasetError("no such file", path=str(path))
    with _open(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"not JSON: {e.msg}", path=str(path), line=n) from None
            if not isinstance(obj, dict):
                raise DatasetError("expected a JSON object", path=str(path), line=n)
            yield n, obj


def read_questions(path: Path) -> list[Question]:
    out, seen = [], set()
    for n, obj in _jsonl(path):
        answers = obj.get("answers", [obj["answer"]] if "answer" in obj else None)
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(obj.get("question"), str) or not answers or not all(isinstance(a, str) for a in answers):
            raise DatasetError('needs "question" (a string) and "answers" (strings)', path=str(path), line=n)
        qid = str(obj.get("id", n))
        if qid in seen:
            raise DatasetError(f"duplicate id {qid!r}", path=str(path), line=n)
        seen.add(qid)
        out.append(Question(qid, obj["question"], tuple(answers)))
    if not out:
        raise DatasetError("no questions", path=str(path))
    return out


def read_corpus(path: Path) -> list[Passage]:
    out = []
    for n, obj in _jsonl(path):
        if not isinstance(obj.get("text"), str):
            raise DatasetError('needs "text" (a string)', path=str(path), line=n)
        out.append(Passage(str(obj.get("id", n)), str(obj.get("title", "")), obj["text"]))
    if not out:
        raise DatasetError("no passages", path=str(path))
    return out


def read_musique(directory: Path = PACKAGED) -> tuple[list[Question], list[Passage]]:
    """The MuSiQue files as distributed (JSON lists, gzip): questions with aliases and decompositions."""
    qpath, cpath = directory / MUSIQUE_QUESTIONS, directory / MUSIQUE_CORPUS
    for p in (qpath, cpath):
        if not p.is_file():
            raise DatasetError(f"no {p.name} here (expected {MUSIQUE_QUESTIONS} and {MUSIQUE_CORPUS})", path=str(directory))
    with _open(qpath) as f:
        raw = json.load(f)
    questions = []
    for i, q in enumerate(raw):
        try:
            answers = (q["answer"], *q.get("answer_aliases", []))
            dec = tuple((d["question"], d["answer"]) for d in q.get("question_decomposition", []))
            questions.append(Question(str(q["id"]), q["question"], tuple(answers), dec,
                                      {"hops": len(dec), "answerable": bool(q.get("answerable", True))}))
        except (KeyError, TypeError) as e:
            raise DatasetError(f"question {i}: missing or bad field {e}", path=str(qpath)) from None
    with _open(cpath) as f:
        corpus = [Passage(str(i), str(p.get("title", "")), str(p["text"])) for i, p in enumerate(json.load(f))]
    return questions, corpus


# ---- grading ------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's normalisation).

    >>> normalize_answer("The  Eiffel Tower!")
    'eiffel tower'
    """
    return " ".join(_ARTICLES.sub(" ", s.lower().translate(_PUNCT)).split())


def exact_match(prediction: str | None, answers: tuple[str, ...] | list[str]) -> bool:
    if prediction is None:
        return False
    p = normalize_answer(prediction)
    return any(p == normalize_answer(a) for a in answers)


def token_f1(prediction: str | None, answers: tuple[str, ...] | list[str]) -> float:
    """Best token F1 against any alias.

    >>> round(token_f1("the city of Paris", ["Paris"]), 3)
    0.5
    """
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction).split()
    best = 0.0
    for a in answers:
        gold = normalize_answer(a).split()
        common = sum((collections.Counter(pred) & collections.Counter(gold)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred), common / len(gold)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best
