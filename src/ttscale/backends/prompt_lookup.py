"""Prompt-lookup drafts: guess the next tokens by finding the last few tokens earlier in the context.

A revision restates most of its previous attempt, and code repair copies most of the first function: the
tokens that followed the latest n-gram's earlier occurrence are then a good guess of what comes next. The
engine decodes the guess together with the next token and keeps the longest prefix that its own sampler
reproduces (``llama_cpp.LlamaCppBackend``), so the output is what sampling without drafts would give; a guess
that is wrong costs only the extra positions of that one forward step.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

_ITEM = array("i").itemsize


def draft_tokens(history: Sequence[int], *, ngram: int = 3, max_draft: int = 10, min_ngram: int = 1) -> list[int]:
    """Up to ``max_draft`` tokens that followed the most recent earlier occurrence of the history's last n
    tokens, trying n = ``ngram`` down to ``min_ngram``; empty when no such suffix recurs. (A lone recurring
    token is a weak guess: with ``min_ngram`` 2 or more, drafts come only from longer matches.)

    >>> draft_tokens([5, 6, 7, 8, 9, 1, 5, 6, 7], ngram=3, max_draft=2)
    [8, 9]
    >>> draft_tokens([1, 2, 3], ngram=2, max_draft=4)
    []
    >>> draft_tokens([4, 1, 2, 4], ngram=3, max_draft=2, min_ngram=2)
    []
    """
    size = len(history)
    if max_draft < 1 or size < 2:
        return []
    buf = array("i", history).tobytes()
    for n in range(min(ngram, size - 1), max(min_ngram, 1) - 1, -1):
        pattern = buf[(size - n) * _ITEM:]
        # an occurrence must start before the suffix itself and leave a token after it
        end = (size - 1) * _ITEM
        pos = buf.rfind(pattern, 0, end)
        while pos >= 0 and pos % _ITEM:  # a match across token boundaries: look further back
            end = pos + len(pattern) - 1
            pos = buf.rfind(pattern, 0, end)
        if pos >= 0:
            start = pos // _ITEM + n
            return list(history[start: start + max_draft])
    return []
