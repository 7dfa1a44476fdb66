"""Server-sent events in the OpenAI shape, plus progress comments clients ignore.

Progress is sent as SSE *comments* (lines starting with ``:``): every SSE parser,
the official OpenAI clients' included, skips them, while a client that wants them
can read ``: ttscale {...json...}`` lines. The answer itself is streamed as
ordinary ``data:`` chunks once the strategy has chosen it, then ``data: [DONE]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_PIECE = re.compile(r"\S*\s*")


def comment(payload: dict[str, Any]) -> str:
    return f": ttscale {json.dumps(payload, separators=(',', ':'))}\n\n"


def data(payload: dict[str, Any] | str) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {text}\n\n"


def pieces(text: str, size: int = 24) -> Iterator[str]:
    """The text cut at word boundaries into pieces of about ``size`` characters.

    >>> list(pieces("a bb ccc", size=3))
    ['a bb ', 'ccc']
    """
    buf = ""
    for m in _PIECE.finditer(text):
        buf += m.group(0)
        if len(buf) >= size:
            yield buf
            buf = ""
    if buf:
        yield buf


def chat_chunks(head: dict[str, Any], choices: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
    """Chunks of ``chat.completion.chunk`` for ``(text, finish_reason)`` choices."""
    for i, (text, finish) in enumerate(choices):
        yield {**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}]}
        for piece in pieces(text):
            yield {**head, "choices": [{"index": i, "delta": {"content": piece}, "logprobs": None,
                                        "finish_reason": None}]}
        yield {**head, "choices": [{"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}]}


def text_chunks(head: dict[str, Any], choices: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
    """Chunks of a streamed ``text_completion``."""
    for i, (text, finish) in enumerate(choices):
        for piece in pieces(text):
            yield {**head, "choices": [{"index": i, "text": piece, "logprobs": None, "finish_reason": None}]}
        yield {**head, "choices": [{"index": i, "text": "", "logprobs": None, "finish_reason": finish}]}
