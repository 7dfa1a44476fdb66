"""Next-token probes on the embedded engine: P(candidate) right after each prompt (LLM-as-judge).

:func:`probe_next_tokens` works through a small engine interface (:class:`ProbeEngine`, which
:class:`~ttscale.backends.llama_cpp.LlamaCppBackend` provides): it shares the engine's
:class:`~ttscale.backends.llama_prefix.PrefixCache` with generation, evaluates each distinct
suffix once and reads only the last position's logits. Nothing is sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ttscale.backends.llama_prefix import HOLDER, PrefixCache, common_prefix
from ttscale.errors import ConfigError
from ttscale.types import GenerationRequest


@dataclass
class TokenProbe:
    """Next-token log-probabilities of candidate strings after one prompt, and what it cost."""

    logprobs: dict[str, float]
    """Candidate string -> log-probability of its first token (full-vocabulary softmax)."""
    prompt_tokens: int
    prefilled_tokens: int


class ProbeEngine(Protocol):
    """What a probe needs from the engine (``LlamaCppBackend`` provides it; the caller holds its lock)."""

    @property
    def prefixes(self) -> PrefixCache: ...

    n_ctx: int
    n_seq_max: int
    n_batch: int

    def tokenize(self, text: str) -> list[int]: ...
    def render(self, request: GenerationRequest) -> str: ...
    def decode(self, items: list[tuple[int, int, int, bool]]) -> None: ...
    def first_token(self, text: str) -> int | None: ...
    def logits_row(self, idx: int) -> np.ndarray: ...
    def copy_sequence(self, src: int, dst: int) -> None: ...
    def drop_sequence(self, seq: int) -> None: ...


def probe_next_tokens(engine: ProbeEngine, requests: Sequence[GenerationRequest],
                      candidates: Sequence[str]) -> list[TokenProbe]:
    """Log-probability of each candidate's first token as the token right after each prompt.

    Used by generative verifiers (P("Yes")). Prompts share the holder prefix exactly as in
    generation (the engine's :class:`PrefixCache`); each distinct prompt suffix is evaluated once,
    and only its last position's logits are read. Nothing is sampled or generated.
    """
    if not requests:
        return []
    cand: dict[str, int] = {}
    for c in candidates:
        tok = engine.first_token(c)
        if tok is None:
            raise ConfigError(f"candidate {c!r} does not tokenize")
        if tok not in cand.values():  # candidates sharing a first token are reported once
            cand[c] = tok
    prompts = [engine.tokenize(engine.render(r)) for r in requests]
    for toks in prompts:
        if not toks or len(toks) + 1 > engine.n_ctx:
            raise ConfigError(f"probe prompt of {len(toks)} tokens does not fit the context of {engine.n_ctx}")
    out: list[TokenProbe | None] = [None] * len(prompts)
    first: dict[tuple[int, ...], int] = {}
    distinct: list[int] = []
    for i, t in enumerate(prompts):
        key = tuple(t)
        if key in first:
            continue
        first[key] = i
        distinct.append(i)
    for group in _groups(distinct, prompts, engine.n_seq_max, engine.n_ctx):
        _probe_group(engine, group, prompts, cand, out)
    # Repeated prompts reuse the first one's logits: nothing was prefilled for them.
    for i, t in enumerate(prompts):
        src = out[first[tuple(t)]]
        assert src is not None
        if out[i] is None:
            out[i] = TokenProbe(dict(src.logprobs), src.prompt_tokens, 0)
    return [o for o in out if o is not None]


def _groups(distinct: list[int], prompts: list[list[int]], n_seq: int, n_ctx: int) -> list[list[int]]:
    """Groups of distinct prompts that fit the sequences and the KV cells together."""
    groups: list[list[int]] = []
    cur: list[int] = []
    cells = 0
    for i in distinct:
        if cur and (len(cur) >= n_seq or cells + len(prompts[i]) > n_ctx):
            groups.append(cur)
            cur, cells = [], 0
        cur.append(i)
        cells += len(prompts[i])
    if cur:
        groups.append(cur)
    return groups


def _probe_group(engine: ProbeEngine, group: list[int], prompts: list[list[int]], cand: dict[str, int],
                 out: list[TokenProbe | None]) -> None:
    shared = prompts[group[0]][: len(prompts[group[0]]) - 1]
    for i in group[1:]:
        shared = shared[: min(common_prefix(shared, prompts[i]), len(prompts[i]) - 1)]
    prefilled = {i: 0 for i in group}
    engine.prefixes.make_room(sum(len(prompts[i]) for i in group))
    prefilled[group[0]] += engine.prefixes.hold(shared)
    p = len(shared)
    pending: list[tuple[int, int, int, bool]] = []
    ends: list[tuple[int, int]] = []

    def flush() -> None:
        if not pending:
            return
        engine.decode(pending)
        for i, idx in ends:
            row = engine.logits_row(idx)
            m = float(row.max())
            lse = m + float(np.log(np.exp(row - m, dtype=np.float32).sum(dtype=np.float64)))
            out[i] = TokenProbe({c: float(row[t]) - lse for c, t in cand.items()}, len(prompts[i]), prefilled[i])
        pending.clear()
        ends.clear()

    try:
        for seq, i in enumerate(group, start=1):
            engine.copy_sequence(HOLDER, seq)
            suffix = prompts[i][p:]
            prefilled[i] += len(suffix)
            for j, tok in enumerate(suffix):
                if len(pending) >= engine.n_batch:
                    flush()
                last = j == len(suffix) - 1
                pending.append((tok, p + j, seq, last))
                if last:
                    ends.append((i, len(pending) - 1))
        flush()
    finally:
        for seq in range(1, len(group) + 1):
            engine.drop_sequence(seq)
