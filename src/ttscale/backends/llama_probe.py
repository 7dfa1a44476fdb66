"""Next-token probes on the embedded engine: P(candidate) right after each prompt (LLM-as-judge).

A mixin of :class:`~ttscale.backends.llama_cpp.LlamaCppBackend`: it reuses the engine's holder
sequence for the prompts' common prefix, evaluates each distinct suffix once and reads only the
last position's logits. Nothing is sampled.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ttscale.backends.base import GenerationRequest
from ttscale.errors import ConfigError


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class TokenProbe:
    """Next-token log-probabilities of candidate strings after one prompt, and what it cost."""

    logprobs: dict[str, float]
    """Candidate string -> log-probability of its first token (full-vocabulary softmax)."""
    prompt_tokens: int
    prefilled_tokens: int


class NextTokenProbes:
    """What the probe needs from the engine (provided by ``LlamaCppBackend``)."""

    _lc: Any
    _mem: Any
    _ctx: Any
    _vocab: Any
    _lock: threading.Lock
    n_ctx: int
    n_seq_max: int
    n_batch: int
    n_vocab: int

    if TYPE_CHECKING:  # defined by the engine class; declared here only for the type checker
        def tokenize(self, text: str) -> list[int]: ...
        def render(self, request: GenerationRequest) -> str: ...
        def _decode(self, items: list[tuple[int, int, int, bool]]) -> None: ...
        def _hold_prefix(self, shared: list[int]) -> int: ...
        def _make_room(self, cells: int) -> None: ...

    def next_token_logprobs(
        self, requests: Sequence[GenerationRequest], candidates: Sequence[str]
    ) -> list[TokenProbe]:
        """Log-probability of each candidate's first token as the token right after each prompt.

        Used by generative verifiers (P("Yes")). Prompts share the holder prefix exactly
        as in :meth:`generate`; each distinct prompt suffix is evaluated once, and only
        its last position's logits are read. Nothing is sampled or generated.
        """
        if not requests:
            return []
        with self._lock:
            lc, mem = self._lc, self._mem
            cand: dict[str, int] = {}
            for c in candidates:
                data = c.encode("utf-8")
                arr = (lc.llama_token * (len(data) + 8))()
                n = lc.llama_tokenize(self._vocab, data, len(data), arr, len(data) + 8, False, False)
                if n < 1:
                    raise ConfigError(f"candidate {c!r} does not tokenize")
                if int(arr[0]) not in cand.values():  # candidates sharing a first token are reported once
                    cand[c] = int(arr[0])
            prompts = [self.tokenize(self.render(r)) for r in requests]
            for toks in prompts:
                if not toks or len(toks) + 1 > self.n_ctx:
                    raise ConfigError(f"probe prompt of {len(toks)} tokens does not fit the context of {self.n_ctx}")
            out: list[TokenProbe | None] = [None] * len(prompts)
            first: dict[tuple[int, ...], int] = {}
            distinct: list[int] = []
            for i, t in enumerate(prompts):
                key = tuple(t)
                if key in first:
                    continue
                first[key] = i
                distinct.append(i)
            # Groups of distinct prompts that fit the sequences and the KV cells together.
            groups: list[list[int]] = []
            cur: list[int] = []
            cells = 0
            for i in distinct:
                if cur and (len(cur) >= self.n_seq_max or cells + len(prompts[i]) > self.n_ctx):
                    groups.append(cur)
                    cur, cells = [], 0
                cur.append(i)
                cells += len(prompts[i])
            if cur:
                groups.append(cur)
            for group in groups:
                shared = prompts[group[0]][: len(prompts[group[0]]) - 1]
                for i in group[1:]:
                    shared = shared[: min(_lcp(shared, prompts[i]), len(prompts[i]) - 1)]
                prefilled = {i: 0 for i in group}
                self._make_room(sum(len(prompts[i]) for i in group))
                prefilled[group[0]] += self._hold_prefix(shared)
                p = len(shared)
                pending: list[tuple[int, int, int, bool]] = []
                ends: list[tuple[int, int]] = []

                def flush(pending: list[tuple[int, int, int, bool]], ends: list[tuple[int, int]],
                          prefilled: dict[int, int]) -> None:
                    if not pending:
                        return
                    self._decode(pending)
                    for i, idx in ends:
                        ptr = lc.llama_get_logits_ith(self._ctx, idx)
                        row = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
                        m = float(row.max())
                        lse = m + float(np.log(np.exp(row - m, dtype=np.float32).sum(dtype=np.float64)))
                        out[i] = TokenProbe({c: float(row[t]) - lse for c, t in cand.items()}, len(prompts[i]), prefilled[i])
                    pending.clear()
                    ends.clear()

                try:
                    for seq, i in enumerate(group, start=1):
                        lc.llama_memory_seq_cp(mem, 0, seq, -1, -1)
                        suffix = prompts[i][p:]
                        prefilled[i] += len(suffix)
                        for j, tok in enumerate(suffix):
                            if len(pending) >= self.n_batch:
                                flush(pending, ends, prefilled)
                            last = j == len(suffix) - 1
                            pending.append((tok, p + j, seq, last))
                            if last:
                                ends.append((i, len(pending) - 1))
                    flush(pending, ends, prefilled)
                finally:
                    for seq in range(1, len(group) + 1):
                        lc.llama_memory_seq_rm(mem, seq, -1, -1)
            # Repeated prompts reuse the first one's logits: nothing was prefilled for them.
            for i, t in enumerate(prompts):
                src = out[first[tuple(t)]]
                assert src is not None
                if out[i] is None:
                    out[i] = TokenProbe(dict(src.logprobs), src.prompt_tokens, 0)
            return [o for o in out if o is not None]

