"""Seconds and dollars of LLM inference on a given machine: a roofline model, calibrated per machine.

A forward step reads every weight once and each sequence's KV cache, and does the step's FLOPs; on a
given machine it takes the longer of its compute time (FLOPs over the machine's effective FLOP/s)
and its memory time (bytes moved over the effective bandwidth), plus a fixed per-step overhead (the
roofline of "LLM Inference Unveiled: Survey and Roofline Model Insights", with the idealized runtime
fitted per machine as in "Cheaply Evaluating Inference Efficiency Metrics for Autoregressive
Transformer APIs"). Prefill of T tokens is one step of T tokens (compute-bound); a decode step of N
sequences is N tokens sharing one read of the weights (memory-bound at small N on a GPU, compute-bound
sooner on a CPU). FLOPs alone flatter long generations of small models: at every decode step each
sequence also reads its whole KV cache, which the bytes term counts.

A :class:`HardwareProfile` holds a machine's spec-sheet peaks, the efficiencies that turn them into
effective rates (assumed for spec sheets, measured by ``ttscale calibrate`` for this machine), and
its price per hour. Profiles are small TOML files: the built-in ones in ``ttscale/hardware/``, any
other by path.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError
from ttscale.types import ModelInfo

PROFILE_DIR = Path(__file__).parent / "hardware"


@dataclass(frozen=True)
class HardwareProfile:
    """A machine as the roofline sees it."""

    name: str
    peak_flops: float
    """Spec-sheet dense FLOP/s for the precision the model's matmuls run in (``dtype``)."""
    mem_bandwidth: float
    """Spec-sheet memory bandwidth, bytes/s."""
    mem_bytes: float
    usd_per_hour: float
    dtype: str = "f16"
    compute_efficiency: float = 0.6
    """Effective / peak FLOP/s reached by real kernels (measured by calibration, else assumed)."""
    bandwidth_efficiency: float = 0.8
    step_overhead_s: float = 0.0
    """Fixed cost of one forward step (kernel launches, synchronisation, sampling)."""
    overlap: float = 1.0
    """How far compute and memory traffic overlap: 1 is the roofline (the larger wins), 0 adds them (a
    CPU whose cores both dequantize weights and multiply measures in between)."""
    attention_efficiency: float | None = None
    """Effective / peak FLOP/s of attention over the KV cache, where it differs from the matmuls' (CPU
    attention kernels run far below their matmuls); None: ``compute_efficiency``."""
    prefill_attention_efficiency: float | None = None
    """The same for a step of many new tokens (a prefill), whose attention is a matrix product rather
    than a decode step's read of the cache; None: ``attention_efficiency``."""
    size_exponent: float = 0.0
    """Matmul efficiency grows as ``(d_model / 1024) ** size_exponent``: on a CPU the small matrices of a
    small model run further from peak (fitted: about 1.2 here); 0 for spec-sheet profiles."""
    sources: tuple[str, ...] = ()
    calibration: dict[str, Any] = field(default_factory=dict)
    """How the efficiencies were measured (model, points, fit error); empty for spec-sheet profiles."""

    def __post_init__(self) -> None:
        for name in ("peak_flops", "mem_bandwidth", "compute_efficiency", "bandwidth_efficiency"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"hardware profile {self.name!r}: {name} must be > 0")
        if self.usd_per_hour < 0 or self.step_overhead_s < 0:
            raise ConfigError(f"hardware profile {self.name!r}: price and overhead must be >= 0")
        if not 0 <= self.overlap <= 1 or any(e is not None and not e > 0 for e in (
                self.attention_efficiency, self.prefill_attention_efficiency)):
            raise ConfigError(f"hardware profile {self.name!r}: overlap must be in [0, 1], attention efficiencies > 0")
        if not -4 <= self.size_exponent <= 4:
            raise ConfigError(f"hardware profile {self.name!r}: size_exponent must be in [-4, 4]")

    @property
    def effective_flops(self) -> float:
        return self.peak_flops * self.compute_efficiency

    @property
    def effective_attention_flops(self) -> float:
        return self.peak_flops * (self.attention_efficiency or self.compute_efficiency)

    @property
    def effective_prefill_attention_flops(self) -> float:
        return self.peak_flops * (self.prefill_attention_efficiency or self.attention_efficiency
                                  or self.compute_efficiency)

    def matmul_flops_for(self, info: ModelInfo) -> float:
        """Effective matmul FLOP/s for this model's matrices (see :attr:`size_exponent`)."""
        if not self.size_exponent or not info.d_model:
            return self.effective_flops
        return self.effective_flops * (info.d_model / 1024) ** self.size_exponent

    @property
    def effective_bandwidth(self) -> float:
        return self.mem_bandwidth * self.bandwidth_efficiency

    def usd(self, seconds: float) -> float:
        return seconds * self.usd_per_hour / 3600.0

    def to_toml(self) -> str:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        cal = d.pop("calibration")
        lines = []
        for k, v in d.items():
            if isinstance(v, (list, tuple)):
                lines.append(f"{k} = [" + ", ".join(_toml_value(x) for x in v) + "]")
            else:
                lines.append(f"{k} = {_toml_value(v)}")
        if cal:
            lines.append("\n[calibration]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in cal.items()]
        return "\n".join(lines) + "\n"

    def save(self, path: Path) -> None:
        path.write_text(self.to_toml())

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "") -> HardwareProfile:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"hardware profile {where}: unknown field(s) {', '.join(unknown)}")
        try:
            return cls(**{**d, "sources": tuple(d.get("sources", ())), "calibration": dict(d.get("calibration", {}))})
        except TypeError as e:
            raise ConfigError(f"hardware profile {where}: {e}") from None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(float(v)) if isinstance(v, float) else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def builtin_profiles() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PROFILE_DIR.glob("*.toml"))}


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """A built-in profile by name (``h100``, ``a100``, ``l4``, ``cpu-2core``) or a TOML file by path."""
    path = builtin_profiles().get(str(name_or_path)) or Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"no hardware profile {name_or_path!r}: built-in ones are {', '.join(builtin_profiles())}, "
                          "or give a path to a .toml file (ttscale calibrate writes one)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return HardwareProfile.from_dict(data, str(path))


def weight_bytes(info: ModelInfo) -> float:
    """Bytes of weights read per forward step: the model file's size (quantized weights as stored),
    else 2 bytes per parameter."""
    size = info.extra.get("file_bytes") if info.extra else None
    return float(size) if size else 2.0 * info.n_params


def matmul_flops(info: ModelInfo, sequences: int, new_tokens: int) -> float:
    """Matmul FLOPs of one step: the transformer blocks for every new token, the output head for each
    sequence's last one (an engine computes logits where it samples), no FLOPs for embedding lookups.
    Without the embedding's size (older records) every parameter counts for every token, as the meter's
    FLOPs do.

    >>> m = ModelInfo("m", 1000, 1, 1, 1, 1, 10, 8, n_vocab=20, n_embedding_params=400)
    >>> matmul_flops(m, 1, 4)  # 2 * (600 body params * 4 tokens + 200 head params * 1)
    5200.0
    """
    if not info.n_vocab or not info.n_embedding_params:
        return sequences * 2.0 * info.n_params * new_tokens
    body = info.n_params - info.n_embedding_params
    return sequences * 2.0 * (body * new_tokens + info.n_vocab * info.d_model)


def step_seconds(info: ModelInfo, hw: HardwareProfile, *, sequences: int, new_tokens: int, context: int) -> float:
    """One forward step: ``sequences`` sequences each adding ``new_tokens`` after ``context`` cached tokens."""
    matmul = matmul_flops(info, sequences, new_tokens)
    attention = sequences * (info.flops_for_positions(context, context + new_tokens)
                             - 2.0 * info.n_params * new_tokens)
    att_rate = hw.effective_prefill_attention_flops if new_tokens > 1 else hw.effective_attention_flops
    compute = matmul / hw.matmul_flops_for(info) + attention / att_rate
    memory = (weight_bytes(info) + sequences * info.kv_bytes(context + new_tokens)) / hw.effective_bandwidth
    return max(compute, memory) + (1.0 - hw.overlap) * min(compute, memory) + hw.step_overhead_s


def prefill_seconds(info: ModelInfo, hw: HardwareProfile, tokens: int, *, context: int = 0, batch: int = 512) -> float:
    """A prompt of ``tokens`` new tokens after ``context`` cached ones, in engine batches of ``batch``."""
    total, done = 0.0, 0
    while done < tokens:
        n = min(batch, tokens - done)
        total += step_seconds(info, hw, sequences=1, new_tokens=n, context=context + done)
        done += n
    return total


def decode_step_seconds(info: ModelInfo, hw: HardwareProfile, sequences: int, context: int) -> float:
    """One decode step advancing ``sequences`` sequences by one token each, at ``context`` cached tokens."""
    return step_seconds(info, hw, sequences=sequences, new_tokens=1, context=context)


def draft_step_speedup(info: ModelInfo, hw: HardwareProfile, *, draft: int, acceptance: float,
                       context: int = 400) -> float:
    """Predicted decode speed-up of verifying ``draft`` guessed tokens with each next token (prompt lookup,
    speculative decoding): tokens gained per step, ``1 + a + ... + a^draft`` when each guess is kept with
    probability ``acceptance`` given the ones before it, over the cost of a step of ``draft + 1`` positions
    against one. Above 1 where a wider step costs little more (memory-bound decode), below where it costs
    as many times more as it has positions (compute-bound)."""
    if draft < 0 or not 0.0 <= acceptance <= 1.0:
        raise ConfigError(f"draft must be >= 0 and acceptance in [0, 1], got {draft}, {acceptance}")
    gained = sum(acceptance ** i for i in range(draft + 1))
    wider = step_seconds(info, hw, sequences=1, new_tokens=draft + 1, context=context)
    return gained * step_seconds(info, hw, sequences=1, new_tokens=1, context=context) / wider


def generation_seconds(info: ModelInfo, hw: HardwareProfile, *, prompt_tokens: int, samples: int,
                       generated_tokens: float, shared_prefill: bool = True, prefilled_tokens: int | None = None) -> float:
    """Wall time of ``samples`` samples of one prompt decoded together, ``generated_tokens`` each on average:
    one prefill (``samples`` without prefix sharing), then decode steps over a growing context. The steps
    are summed in a few segments (the step time is close to linear in the context within one).
    ``prefilled_tokens``: the prompt's tail actually prefilled (the rest was cached); default all of it."""
    fresh = prompt_tokens if prefilled_tokens is None else max(0, min(prefilled_tokens, prompt_tokens))
    pre = prefill_seconds(info, hw, fresh, context=prompt_tokens - fresh) * (1 if shared_prefill else samples)
    steps = max(0, int(math.ceil(generated_tokens)))
    if steps == 0:
        return pre
    segments = min(steps, 16)
    edges = [round(i * steps / segments) for i in range(segments + 1)]
    dec = 0.0
    for a, b in zip(edges, edges[1:], strict=False):
        if b > a:
            dec += (b - a) * decode_step_seconds(info, hw, samples, prompt_tokens + (a + b) // 2)
    return pre + dec


@dataclass(frozen=True)
class TimedStep:
    """One measured forward step (or prefill) for calibration and validation."""

    kind: str
    """``prefill`` (``tokens`` new tokens, one sequence) or ``decode`` (``sequences`` x 1 token)."""
    sequences: int
    tokens: int
    context: int
    seconds: float

    def predict(self, info: ModelInfo, hw: HardwareProfile) -> float:
        if self.kind == "prefill":
            return prefill_seconds(info, hw, self.tokens, context=self.context)
        return decode_step_seconds(info, hw, self.sequences, self.context)


FIT_LOWER = (1e-4, 1e-3, 1e-7, 1e-3, 1e-5, 1e-5)
FIT_UPPER = (4.0, 4.0, 1.0, 1.0, 4.0, 4.0)
"""Bounds of the fitted efficiencies (matmul, bandwidth, attention, prefill attention: relative to the
profile's nominal peaks, which for a CPU are guesses, hence up to 4x), step overhead (s) and overlap."""


def fit_profile(base: HardwareProfile, points: Iterable[tuple[ModelInfo, TimedStep]]) -> HardwareProfile:
    """``base`` with its efficiencies (matmul, decode and prefill attention, bandwidth), the matmuls' size
    exponent (with steps of two model sizes or more), compute/memory overlap and step overhead fitted to
    measured steps (least squares on the log of predicted over measured time, so every
    point counts by its relative error)."""
    import numpy as np
    from scipy.optimize import least_squares

    pts = list(points)
    if len(pts) < 5:
        raise ConfigError("calibration needs at least 5 measured steps")

    def profile(x: Any) -> HardwareProfile:
        e = np.exp(x[:6])
        return replace(base, compute_efficiency=float(e[0]), bandwidth_efficiency=float(e[1]),
                       step_overhead_s=float(e[2]), overlap=float(e[3]), attention_efficiency=float(e[4]),
                       prefill_attention_efficiency=float(e[5]), size_exponent=float(x[6]) if sizes > 1 else 0.0)

    def residuals(x: Any) -> Any:
        hw = profile(x)
        return np.array([math.log(s.predict(i, hw) / s.seconds) for i, s in pts])

    sizes = len({i.d_model for i, _ in pts})  # the size exponent needs two model sizes to be measured
    # Nominal CPU peaks are guesses, so an efficiency may come out above 1 relative to them.
    lo = np.append(np.log(FIT_LOWER), -2.0)
    hi = np.append(np.log(FIT_UPPER), 3.0)
    att = base.attention_efficiency or base.compute_efficiency
    x0 = np.append(np.log([base.compute_efficiency, base.bandwidth_efficiency, max(base.step_overhead_s, 1e-4),
                           min(max(base.overlap, 2e-3), 0.99), att, base.prefill_attention_efficiency or att]),
                   base.size_exponent)
    fit = least_squares(residuals, np.clip(x0, lo + 1e-6, hi - 1e-6), bounds=(lo, hi))
    hw = profile(fit.x)
    errors = [abs(s.predict(i, hw) / s.seconds - 1) for i, s in pts]
    return replace(hw, calibration={**base.calibration, "points": len(pts),
                                    "median_abs_error": float(np.median(errors)), "max_abs_error": float(max(errors))})


def median_abs_error(hw: HardwareProfile, points: Iterable[tuple[ModelInfo, TimedStep]]) -> float:
    import numpy as np

    return float(np.median([abs(s.predict(i, hw) / s.seconds - 1) for i, s in points]))
