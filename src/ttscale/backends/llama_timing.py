"""Wall time of the embedded engine's two kinds of work, measured directly: a prefill of L tokens, and
one decode step that advances N sequences (sharing a context of L tokens) by one token each.

These are what a user's machine does per token; ``ttscale speed`` prints them, and a calibration of
the hardware cost model fits its effective compute and bandwidth to them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from ttscale.backends.llama_engine import LlamaEngine


def _tokens(engine: LlamaEngine, count: int, offset: int = 0) -> list[int]:
    # Ordinary vocabulary ids; what they say does not change the arithmetic of a forward pass.
    return [100 + (offset + j) % max(1, engine.n_vocab - 200) for j in range(count)]


def prefill_seconds(engine: LlamaEngine, length: int) -> float:
    """Seconds to prefill ``length`` new tokens into an empty cache, in the engine's batches."""
    engine.clear_memory()
    toks = _tokens(engine, length)
    start = time.perf_counter()
    for i in range(0, length, engine.n_batch):
        chunk = toks[i : i + engine.n_batch]
        engine.decode([(t, i + j, 1, i + j == length - 1) for j, t in enumerate(chunk)])
    return time.perf_counter() - start


def decode_step_seconds(engine: LlamaEngine, n: int, context: int = 64, steps: int = 8) -> float:
    """Median seconds of one decode step that advances ``n`` sequences by one token, each after a shared
    context of ``context`` tokens (the samples of one prompt, as ttscale draws them)."""
    if n > engine.n_seq_max:
        raise ValueError(f"n={n} exceeds the engine's n_seq_max={engine.n_seq_max}")
    prefill_seconds(engine, context)
    for s in range(2, n + 1):
        engine.copy_sequence(1, s)
    times = []
    for r in range(steps):
        items = [(t, context + r, s + 1, True) for s, t in enumerate(_tokens(engine, n, offset=r))]
        start = time.perf_counter()
        engine.decode(items)
        times.append(time.perf_counter() - start)
    engine.clear_memory()
    return statistics.median(times)


@dataclass(frozen=True)
class DecodeSpeed:
    """Decode speed of one model on this machine."""

    model: str
    ms_per_token_1: float
    """One sequence: milliseconds per generated token."""
    ms_per_token_8: float
    """Eight sequences of one prompt decoded together: milliseconds per token of each."""

    def scaled_minutes(self, reference_minutes: float, reference_ms_per_token: float) -> float:
        """A duration measured elsewhere at ``reference_ms_per_token``, scaled to this machine's speed."""
        return reference_minutes * self.ms_per_token_1 / reference_ms_per_token


def measure_decode_speed(engine: LlamaEngine, context: int = 256, steps: int = 8) -> DecodeSpeed:
    one = decode_step_seconds(engine, 1, context, steps)
    eight = decode_step_seconds(engine, min(8, engine.n_seq_max), context, steps)
    return DecodeSpeed(engine.model_ref, one * 1e3, eight * 1e3 / min(8, engine.n_seq_max))
