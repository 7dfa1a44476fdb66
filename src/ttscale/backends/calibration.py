"""Calibrate a hardware profile on this machine: time the embedded engine's prefills and decode steps
for one or more models, and fit the roofline's effective compute, bandwidth and step overhead to them
(:func:`ttscale.roofline.fit_profile`). ``ttscale calibrate`` runs it; ``bench/cost_model.py`` checks
the fitted profile on steps it was not fitted on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from ttscale.backends.llama_engine import LlamaEngine
from ttscale.backends.llama_timing import decode_step_seconds, prefill_seconds
from ttscale.roofline import HardwareProfile, TimedStep, fit_profile
from ttscale.types import ModelInfo

CALIBRATION_PREFILLS: tuple[int, ...] = (128, 512, 2048)
"""Prompt lengths timed for calibration."""
CALIBRATION_DECODES: tuple[tuple[int, int], ...] = ((1, 256), (2, 256), (4, 256), (8, 256), (16, 256),
                                                    (1, 2048), (8, 2048), (16, 2048))
"""(sequences, context) of the decode steps timed for calibration."""
QUICK_PREFILLS: tuple[int, ...] = (128, 512)
QUICK_DECODES: tuple[tuple[int, int], ...] = ((1, 128), (4, 128), (16, 128))
"""A quick calibration (``--quick``): a rough fit in seconds, for a first look or a test."""


def time_steps(engine: LlamaEngine, prefills: Sequence[int], decodes: Sequence[tuple[int, int]], *,
               steps: int = 8, repeats: int = 2,
               progress: Callable[[str], None] | None = None) -> list[TimedStep]:
    """Measured prefills (short ones the fastest of ``repeats``: other load only adds time) and decode steps
    (the median of ``steps`` steps after one prefill of the context)."""
    out = []
    for length in prefills:
        # long prefills are seconds each: one is enough; short ones are repeated, the fastest kept
        secs = min(prefill_seconds(engine, length) for _ in range(repeats if length <= 512 else 1))
        out.append(TimedStep("prefill", 1, length, 0, secs))
        if progress:
            progress(f"prefill {length} tokens: {secs * 1e3:.0f} ms")
    engine.clear_memory()
    for n, ctx in decodes:
        secs = decode_step_seconds(engine, n, ctx, steps)  # the median of its steps: one context prefill
        out.append(TimedStep("decode", n, 1, ctx, secs))
        if progress:
            progress(f"decode {n} x 1 token at context {ctx}: {secs * 1e3:.1f} ms")
    return out


def engine_for(model: str, *, threads: int | None = None, longest: int = 4096, sequences: int = 16) -> LlamaEngine:
    """An engine sized for timing runs: contexts up to ``longest`` shared by ``sequences`` sequences."""
    return LlamaEngine(model, n_ctx=longest + 2 * sequences * 64 + 512, n_seq_max=sequences, n_threads=threads,
                       prefix_slots=0)


def calibrate(models: Sequence[str], base: HardwareProfile, *, threads: int | None = None, quick: bool = False,
              progress: Callable[[str], None] | None = None) -> tuple[HardwareProfile, list[tuple[ModelInfo, TimedStep]]]:
    """``base`` fitted to steps timed on every model; returns the profile and the points it was fitted on."""
    points: list[tuple[ModelInfo, TimedStep]] = []
    for model in models:
        engine = engine_for(model, threads=threads, longest=1024 if quick else 4096)
        try:
            info = engine.model_info()
            def said(message: str, _model: str = model) -> None:
                if progress is not None:
                    progress(f"{_model}: {message}")

            prefills, decodes = (QUICK_PREFILLS, QUICK_DECODES) if quick else (CALIBRATION_PREFILLS, CALIBRATION_DECODES)
            for step in time_steps(engine, prefills, decodes, repeats=1 if quick else 2, progress=said):
                points.append((info, step))
        finally:
            engine.close()
    fitted = fit_profile(replace(base, calibration={"models": ", ".join(models), "threads": threads or 0,
                                                    "quick": quick}), points)
    return fitted, points
