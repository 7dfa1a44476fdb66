"""What inference costs: usage records, the budget, and the meter that enforces it.

Tokens are the engine's counts. FLOPs follow Kaplan et al. (2020): each token at
position ``c`` costs ``2 * N_params + 2 * n_layers * c * d_attn`` forward FLOPs,
with the shapes taken from the model's own metadata (:class:`ModelInfo`).

A budget counts *processed* tokens: prompt tokens actually prefilled plus
generated tokens. A prompt served from a shared KV cache costs nothing again,
which is exactly the saving prefix sharing buys.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ttscale.errors import ConfigError
from ttscale.roofline import HardwareProfile, generation_seconds
from ttscale.types import (
    Generation,
    ModelInfo,
    Usage,
)


def generation_usage(gen: Generation, info: ModelInfo) -> Usage:
    """Exact usage of one generation: prefill positions plus each sample's decode positions."""
    p = gen.prompt_tokens
    flops = info.flops_for_positions(p - gen.prefilled_tokens, p)
    for c in gen.completions:
        flops += info.flops_for_positions(c.prompt_tokens, c.prompt_tokens + c.n_tokens)
    return Usage(
        prompt_tokens=p,
        prefilled_tokens=gen.prefilled_tokens,
        generated_tokens=gen.generated_tokens,
        flops=flops,
        wall_s=gen.wall_s,
        peak_kv_bytes=info.kv_bytes(gen.peak_kv_tokens),
        requests=1,
        samples=len(gen.completions),
    )


@dataclass(frozen=True)
class Budget:
    """Hard caps per problem; ``None`` means unlimited."""

    tokens: int | None = None
    """Cap on processed tokens (prefilled + generated, verifier calls included)."""
    flops: float | None = None
    """Cap on forward FLOPs."""
    kv_bytes: int | None = None
    """Cap on KV-cache memory in use at once (a wave's prompt plus its samples' worst case, at the
    engine's KV precision): memory is not summed over waves, each wave must fit on its own."""
    seconds: float | None = None
    """Cap on seconds as ``hardware`` would take for the work (its roofline, from the exact token counts
    of each call: one prefill and a batched decode of the call's samples), not this machine's wall clock."""
    usd: float | None = None
    """Cap on dollars: those seconds at ``hardware``'s price per hour."""
    hardware: HardwareProfile | None = None
    """The profile ``seconds`` and ``usd`` are priced on (``ttscale hardware`` lists them)."""

    def __post_init__(self) -> None:
        for name in ("seconds", "usd"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ConfigError(f"{name} budget must be a positive finite number, got {value}")
            if value is not None and self.hardware is None:
                raise ConfigError(f"a {name} budget is priced on a hardware profile: give one (--hardware NAME)")
        if self.kv_bytes is not None and self.kv_bytes <= 0:
            raise ConfigError(f"KV-memory budget must be positive, got {self.kv_bytes}")
        if self.tokens is not None and self.tokens <= 0:
            raise ConfigError(f"token budget must be positive, got {self.tokens}")
        if self.flops is not None and (not math.isfinite(self.flops) or self.flops <= 0):
            raise ConfigError(f"FLOPs budget must be a positive finite number, got {self.flops}")

    @property
    def unlimited(self) -> bool:
        return (self.tokens is None and self.flops is None and self.kv_bytes is None and self.seconds is None
                and self.usd is None)


class Meter:
    """Adds up usage against a budget and answers "can I afford this?" before work starts."""

    def __init__(self, info: ModelInfo, budget: Budget | None = None) -> None:
        self.info = info
        self.budget = budget or Budget()
        self.usage = Usage()
        self.priced_s = 0.0
        """Seconds of the work charged so far on the budget's hardware profile (0 without one)."""

    def charge(self, usage: Usage) -> None:
        self.usage = self.usage + usage
        self.priced_s += self.price(usage)

    def price(self, usage: Usage, info: ModelInfo | None = None) -> float:
        """Seconds ``usage`` takes on the budget's hardware profile (0.0 without one).

        ``usage`` is read as ``requests`` calls (at least one), each prefilling its share of the
        prefilled tokens and decoding its share of the samples together, so a wide wave costs what
        batching makes it cost on that hardware (little more than one sample on a memory-bound GPU)."""
        hw = self.budget.hardware
        if hw is None or usage.total_tokens == 0:
            return 0.0
        calls = max(usage.requests, 1)
        samples = max(1, round(usage.samples / calls)) if usage.samples else 1
        prompt = max(usage.prompt_tokens, usage.prefilled_tokens) // calls
        per_sample = usage.generated_tokens / (calls * samples)
        return calls * generation_seconds(info or self.info, hw, prompt_tokens=prompt, samples=samples,
                                          generated_tokens=per_sample, prefilled_tokens=usage.prefilled_tokens // calls)

    def for_model(self, info: ModelInfo) -> Meter:
        """A view of this meter for another model: the same budget and running usage, its own FLOPs."""
        return _MeterView(self, info)

    def charge_generations(self, gens: Iterable[Generation]) -> Usage:
        spent = Usage.total(generation_usage(g, self.info) for g in gens)
        self.charge(spent)
        return spent

    def worst_case(self, prompt_tokens: int, n: int, max_tokens: int, info: ModelInfo | None = None) -> Usage:
        """Most that sampling ``n`` x ``max_tokens`` after a fully prefilled prompt could cost."""
        m = info or self.info
        flops = m.flops_for_positions(0, prompt_tokens) + n * m.flops_for_positions(
            prompt_tokens, prompt_tokens + max_tokens
        )
        # KV cells at the peak: the prompt (once, or once per sample, after the engine's press) plus every
        # sample's own tokens.
        return Usage(prompt_tokens=prompt_tokens, prefilled_tokens=prompt_tokens, generated_tokens=n * max_tokens,
                     flops=flops, peak_kv_bytes=m.kv_bytes(m.wave_kv_cells(prompt_tokens, n, max_tokens)),
                     requests=1, samples=n)

    def fits(self, extra: Usage) -> bool:
        b, u = self.budget, self.usage
        if b.tokens is not None and u.total_tokens + extra.total_tokens > b.tokens:
            return False
        if b.flops is not None and u.flops + extra.flops > b.flops:
            return False
        if b.kv_bytes is not None and extra.peak_kv_bytes > b.kv_bytes:
            return False
        if b.hardware is not None and (b.seconds is not None or b.usd is not None):
            seconds = self.priced_s + self.price(extra)
            if b.seconds is not None and seconds > b.seconds:
                return False
            if b.usd is not None and b.hardware.usd(seconds) > b.usd:
                return False
        return True

    def affordable_samples(self, prompt_tokens: int, max_tokens: int, want: int) -> int:
        """Largest ``n <= want`` whose worst case still fits the budget."""
        if self.budget.unlimited:
            return want
        lo, hi = 0, want
        while lo < hi:  # binary search: worst case is monotone in n
            mid = (lo + hi + 1) // 2
            if self.fits(self.worst_case(prompt_tokens, mid, max_tokens)):
                lo = mid
            else:
                hi = mid - 1
        return lo

    def affordable_max_tokens(self, prompt_tokens: int, want: int) -> int:
        """Largest per-sample generation cap ``<= want`` for one sample that fits the budget."""
        if self.budget.unlimited:
            return want
        lo, hi = 0, want
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.fits(self.worst_case(prompt_tokens, 1, mid)):
                lo = mid
            else:
                hi = mid - 1
        return lo


class _MeterView(Meter):
    """Charges go to the parent meter; worst cases use this model's shapes."""

    def __init__(self, parent: Meter, info: ModelInfo) -> None:  # no super().__init__: it would reset usage
        self._parent = parent
        self.info = info
        self.budget = parent.budget

    @property  # type: ignore[override]
    def usage(self) -> Usage:
        return self._parent.usage

    @usage.setter
    def usage(self, value: Usage) -> None:
        self._parent.usage = value

    @property  # type: ignore[override]
    def priced_s(self) -> float:
        return self._parent.priced_s

    @priced_s.setter
    def priced_s(self, value: float) -> None:
        self._parent.priced_s = value
