"""``ttscale hardware`` (the profiles the cost model prices compute on) and ``ttscale calibrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ttscale.cli.common import cli_errors, console, err_console


@cli_errors
def hardware(
    profile: Annotated[Optional[str], typer.Argument(help="Show one profile (a built-in name or a .toml path).")] = None,
    model: Annotated[str, typer.Option(help="Price this model's steps on each profile (name or .gguf path).")] = "qwen2.5-coder-0.5b",
) -> None:
    """List hardware profiles and what one decode step and a 1,000-token prefill of MODEL cost on each."""
    from ttscale.backends.kv_sizing import header_info
    from ttscale.roofline import builtin_profiles, decode_step_seconds, load_profile, prefill_seconds

    info = header_info(model, "f16", None)
    names = [profile] if profile else list(builtin_profiles())
    t = Table(title=f"hardware profiles (steps of {info.name})")
    for col in ("profile", "eff. TFLOP/s", "eff. GB/s", "$/hour", "prefill 1k", "decode x1", "decode x16",
                "calibrated"):
        t.add_column(col)
    for name in names:
        hw = load_profile(name)
        t.add_row(hw.name, f"{hw.effective_flops / 1e12:.3g}", f"{hw.effective_bandwidth / 1e9:.3g}",
                  f"{hw.usd_per_hour:g}", f"{prefill_seconds(info, hw, 1000) * 1e3:.1f} ms",
                  f"{decode_step_seconds(info, hw, 1, 512) * 1e3:.2f} ms",
                  f"{decode_step_seconds(info, hw, 16, 512) * 1e3:.2f} ms",
                  "yes" if hw.calibration.get("points") else "no (spec sheet)")
    console.print(t)


@cli_errors
def calibrate(
    model: Annotated[Optional[list[str]], typer.Option(help="Model(s) to time (repeatable; both Qwen models by default).")] = None,
    base: Annotated[str, typer.Option(help="Profile whose peaks and price the fit starts from.")] = "cpu-2core",
    out: Annotated[Path, typer.Option(help="Where to write the calibrated profile (TOML).")] = Path("runs/hardware.toml"),
    name: Annotated[Optional[str], typer.Option(help="The new profile's name (default: BASE-calibrated).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="llama.cpp threads (default: every core).", min=1)] = None,
    quick: Annotated[bool, typer.Option(help="Time a few short steps only: a rough fit in seconds.")] = False,
    base_url: Annotated[Optional[str], typer.Option(help="Time this running llama-server instead (its /completion "
                                                    "timings; --model names the one model it serves, whose shapes "
                                                    "are read locally): a profile that prices that server's steps.")] = None,
) -> None:
    """Time prefills and decode steps of the embedded engine here (or of a llama-server with --base-url) and
    fit the roofline's effective compute, bandwidth and per-step overhead to them; writes a profile that
    --hardware accepts.

    A profile fitted to the embedded engine misprices a server whose steps cost otherwise (on this machine,
    llama-server's narrow waves): calibrate on the engine the plan will run on.
    """
    from dataclasses import replace

    from ttscale.backends.calibration import calibrate as run_calibration
    from ttscale.roofline import load_profile

    models = model or ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    start = load_profile(base)
    start = replace(start, name=name or f"{start.name}-calibrated")
    say = lambda m: err_console.print(m, highlight=False)  # noqa: E731
    if base_url is not None:
        from ttscale.backends.kv_sizing import header_info
        from ttscale.backends.server_calibration import calibrate_server
        from ttscale.errors import ConfigError

        if len(models) != 1:
            raise ConfigError("--base-url times one server: give the one --model it serves")
        fitted, points = calibrate_server(base_url, header_info(models[0], "f16", None), start, quick=quick, progress=say)
    else:
        fitted, points = run_calibration(models, start, threads=threads, quick=quick, progress=say)
    out.parent.mkdir(parents=True, exist_ok=True)
    fitted.save(out)
    c = fitted.calibration
    console.print(f"{fitted.name}: effective {fitted.effective_flops / 1e9:.1f} GFLOP/s, "
                  f"{fitted.effective_bandwidth / 1e9:.1f} GB/s, {fitted.step_overhead_s * 1e3:.2f} ms per step; "
                  f"fit on {c['points']} steps, median error {c['median_abs_error']:.1%} "
                  f"(max {c['max_abs_error']:.1%}); written to {out}")
