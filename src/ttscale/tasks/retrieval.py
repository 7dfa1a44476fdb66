"""Retrievers over a passage corpus: a protocol, and BM25 through ``bm25s`` (built once per corpus, cached).

A retriever returns passage indices, best first. The BM25 index of a corpus is saved in the cache under
the SHA-256 of the corpus's text, so a second process (a resumed run, a replay, a test) loads it instead
of indexing again; a dense retriever can plug in behind the same protocol later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from ttscale.paths import cache_dir
from ttscale.tasks.rag_data import Passage


@runtime_checkable
class Retriever(Protocol):
    name: str

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[int]]:
        """For each query, the indices of its ``k`` best passages, best first."""
        ...


def corpus_key(corpus: Sequence[Passage]) -> str:
    h = hashlib.sha256()
    for p in corpus:
        h.update(p.title.encode())
        h.update(b"\x00")
        h.update(p.text.encode())
        h.update(b"\x01")
    return h.hexdigest()[:24]


class BM25Retriever:
    """Okapi BM25 (``bm25s``, English stop words removed) over titles and texts."""

    name = "bm25"

    def __init__(self, corpus: Sequence[Passage]) -> None:
        import bm25s

        self._bm25s = bm25s
        self.size = len(corpus)
        where = cache_dir("bm25", corpus_key(corpus))
        if (where / "params.index.json").exists():
            self.index = bm25s.BM25.load(str(where), show_progress=False)
        else:
            tokens = bm25s.tokenize([p.render() for p in corpus], stopwords="en", show_progress=False)
            self.index = bm25s.BM25()
            self.index.index(tokens, show_progress=False)
            tmp = where.with_name(where.name + ".tmp")
            self.index.save(str(tmp), show_progress=False)
            if not (where / "params.index.json").exists():  # another process may have finished first
                for f in tmp.iterdir():
                    f.replace(where / f.name)
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[int]]:
        if k <= 0 or not queries:
            return [[] for _ in queries]
        k = min(k, self.size)
        tokens = self._bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=False)
        # A query without any indexed word still gets k passages (scores 0), in a stable order.
        docs, _ = self.index.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [[int(i) for i in row] for row in docs]


@dataclass(frozen=True)
class Hop:
    """One retrieve-then-reason round of IterDRAG: a follow-up sub-question, the passages retrieved for it
    (ids, best first) and the model's intermediate answer (``None`` until it is written)."""

    question: str
    passages: tuple[str, ...]
    answer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "retrieved": list(self.passages), "answer": self.answer}


HopStep = Literal["follow_up", "answer", "final"]
"""Which call of IterDRAG a prompt is for: the next follow-up question (or the final answer, if the model
is done), the intermediate answer of the last follow-up, or the final answer (rounds spent)."""
