"""The embedded engine's prompt-prefix cache: one object that generation and next-token probes share.

A *holder* sequence (seq 0) holds the longest common prefix of the current call's prompts;
samples are copies of it (``llama_memory_seq_cp`` tags cells, nothing is copied). Before the
holder is cut back to a different prefix, what it held is kept in a spare sequence (a *slot*),
so calls that alternate between a few few-shot headers do not prefill them again each time.
Kept prefixes are bounded in number (the slots) and in KV cells (``n_ctx // 8``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

DecodeFn = Callable[[list[tuple[int, int, int, bool]]], None]
"""One ``llama_decode`` of (token, position, sequence, want_logits) items."""

HOLDER = 0
"""The sequence that holds the current shared prefix."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """The holder prefix and the kept ones, over an engine's KV memory.

    ``mem`` is the context's ``llama_memory_t``; ``decode`` evaluates tokens; ``slots`` are the
    sequence ids reserved for kept prefixes. Callers hold the engine's lock.
    """

    def __init__(self, lc: Any, mem: Any, decode: DecodeFn, n_ctx: int, n_batch: int, slots: Sequence[int]) -> None:
        self._lc, self._mem, self._decode = lc, mem, decode
        self.n_ctx, self.n_batch = n_ctx, n_batch
        self.cached: list[int] = []
        """Tokens the holder sequence holds now."""
        self._slots = list(slots)
        self._stash: list[tuple[int, list[int]]] = []  # (sequence, tokens), most recently used last
        self._stash_limit = n_ctx // 8

    @property
    def kept(self) -> list[list[int]]:
        """The prefixes kept in slots (most recently used last)."""
        return [list(t) for _, t in self._stash]

    def forget(self) -> None:
        """Drop every cached prefix (the holder's and the kept ones): the next call prefills in full."""
        self._lc.llama_memory_seq_rm(self._mem, HOLDER, -1, -1)
        self._drop_kept()
        self.cached = []

    def make_room(self, cells: int) -> None:
        """Free the kept prefixes if a job of ``cells`` KV cells might not fit next to them."""
        if self._stash and cells + sum(len(t) for _, t in self._stash) > self.n_ctx:
            self._drop_kept()

    def hold(self, shared: list[int]) -> int:
        """Make the holder hold exactly ``shared``, starting from whichever cached prefix (the holder's
        own or a kept one) has the most in common with it; returns the tokens prefilled now."""
        lc, mem = self._lc, self._mem
        reuse = common_prefix(self.cached, shared)
        best = max(self._stash, key=lambda e: common_prefix(e[1], shared), default=None)
        switch = best is not None and common_prefix(best[1], shared) > reuse
        if reuse < len(self.cached) or switch:
            self._keep_current(protect=best[0] if switch and best is not None else None)
        if switch and best is not None:
            seq, toks = best
            lc.llama_memory_seq_rm(mem, HOLDER, -1, -1)
            lc.llama_memory_seq_cp(mem, seq, HOLDER, -1, -1)
            self.cached = list(toks)
            self._stash.remove(best)
            self._stash.append(best)  # most recently used
            reuse = common_prefix(self.cached, shared)
        lc.llama_memory_seq_rm(mem, HOLDER, reuse, -1)
        self.cached = self.cached[:reuse]
        for start in range(reuse, len(shared), self.n_batch):
            chunk = shared[start : start + self.n_batch]
            self._decode([(t, start + i, HOLDER, False) for i, t in enumerate(chunk)])
        self.cached = list(shared)
        return len(shared) - reuse

    def _drop_kept(self) -> None:
        for seq, _ in self._stash:
            self._lc.llama_memory_seq_rm(self._mem, seq, -1, -1)
        self._stash.clear()

    def _keep_current(self, protect: int | None = None) -> None:
        """Before the holder is cut back, keep what it holds in a slot (least recently used slots are
        freed when all are taken or the kept cells would pass their limit; ``protect`` is not)."""
        lc, mem = self._lc, self._mem
        toks = self.cached
        if len(toks) < 16 or not self._slots or len(toks) > self._stash_limit:
            return  # too short to be worth a slot, or too long to keep
        if any(t[: len(toks)] == toks for _, t in self._stash):
            return  # a kept prefix already covers it
        for q, t in [e for e in self._stash if e[1] == toks[: len(e[1])] and e[0] != protect]:
            lc.llama_memory_seq_rm(mem, q, -1, -1)  # covered by the longer one kept now
            self._stash.remove((q, t))
        while True:
            over = (len(self._stash) >= len(self._slots)
                    or sum(len(t) for _, t in self._stash) + len(toks) > self._stash_limit)
            victims = [e for e in self._stash if e[0] != protect]
            if not over or not victims:
                break
            q, t = victims[0]
            lc.llama_memory_seq_rm(mem, q, -1, -1)
            self._stash.remove((q, t))
        used = {q for q, _ in self._stash}
        free = next((q for q in self._slots if q not in used), None)
        if free is None:
            return
        lc.llama_memory_seq_rm(mem, free, -1, -1)
        lc.llama_memory_seq_cp(mem, HOLDER, free, -1, -1)  # tags the holder's cells: nothing is copied
        self._stash.append((free, list(toks)))
