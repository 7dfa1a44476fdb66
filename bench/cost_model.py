"""Does the calibrated roofline predict this machine's wall time? Calibrate, then time steps it never saw.

1. Calibrate the ``--base`` profile (``ttscale calibrate``'s procedure) on both Qwen2.5-Coder models:
   prefills of 128/512/2048 tokens, decode steps of N = 1..16 sequences at contexts 256 and 2048.
2. Time held-out steps on both models: prefills of 100, 1,000 and 4,000 tokens, and decode steps of
   N = 3, 5, 6, 12 (and 1, 16) sequences at contexts from 100 to 4,000; compare with the prediction.
3. Baseline, fitted on the same calibration points: time proportional to FLOPs alone (one constant),
   the currency ttscale priced in before.

Ends with ``bench: cost_model_median_abs_error = <fraction>`` (target <= 0.15) and
``bench: flops_only_median_abs_error = <fraction>``.

    python bench/cost_model.py [--threads 2] [--out runs/cpu-calibrated.toml] [--steps runs/cost-steps.json]

Timing both models takes about 25 minutes here; ``--steps FILE`` keeps the measured steps (written on
the first run, read on the next) so the model can be refitted and checked without timing again.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, replace
from pathlib import Path

from ttscale.backends.calibration import CALIBRATION_DECODES, CALIBRATION_PREFILLS, engine_for, time_steps
from ttscale.backends.kv_sizing import header_info
from ttscale.roofline import TimedStep, fit_profile, load_profile, median_abs_error

MODELS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
HELD_OUT_PREFILLS = (100, 1000, 4000)
HELD_OUT_DECODES = ((1, 4000), (3, 100), (5, 2500), (6, 1000), (12, 4000), (16, 1000))


def flops_of(info, step) -> float:  # type: ignore[no-untyped-def]
    if step.kind == "prefill":
        return info.flops_for_positions(step.context, step.context + step.tokens)
    return step.sequences * info.flops_for_positions(step.context, step.context + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="cpu-2core")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/cpu-calibrated.toml"))
    ap.add_argument("--steps", type=Path, default=None, help="keep the measured steps here and reuse them")
    args = ap.parse_args()

    base = replace(load_profile(args.base), name=f"{args.base}-calibrated")
    if args.steps and args.steps.exists():
        saved = json.loads(args.steps.read_text())
        print(f"steps measured earlier, read from {args.steps} (delete it to time them again)")
    else:
        saved = {"calibration": [], "held_out": []}
        for model in MODELS:
            engine = engine_for(model, threads=args.threads)
            try:
                cal = time_steps(engine, CALIBRATION_PREFILLS, CALIBRATION_DECODES,
                                 progress=lambda m, _m=model: print(f"{_m}: {m}"))
                held_steps = time_steps(engine, HELD_OUT_PREFILLS, HELD_OUT_DECODES)
            finally:
                engine.close()
            saved["calibration"] += [{"model": model, **asdict(s)} for s in cal]
            saved["held_out"] += [{"model": model, **asdict(s)} for s in held_steps]
        if args.steps:
            args.steps.parent.mkdir(parents=True, exist_ok=True)
            args.steps.write_text(json.dumps(saved, indent=1))
    infos = {m: header_info(m) for m in MODELS}

    def points(rows: list[dict[str, object]]) -> list[tuple[object, TimedStep]]:
        return [(infos[str(r["model"])], TimedStep(**{k: v for k, v in r.items() if k != "model"}))  # type: ignore[arg-type]
                for r in rows]

    cal_points, held = points(saved["calibration"]), points(saved["held_out"])
    fitted = fit_profile(replace(base, calibration={"models": ", ".join(MODELS), "threads": args.threads or 0}),
                         cal_points)  # type: ignore[arg-type]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fitted.save(args.out)
    print(f"calibrated: {fitted.effective_flops / 1e9:.1f} GFLOP/s matmul at d_model 1024 (x (d/1024)^"
          f"{fitted.size_exponent:.2f}), attention {fitted.effective_attention_flops / 1e9:.1f} (decode) / "
          f"{fitted.effective_prefill_attention_flops / 1e9:.1f} (prefill), "
          f"{fitted.effective_bandwidth / 1e9:.1f} GB/s, overlap {fitted.overlap:.2f}, "
          f"{fitted.step_overhead_s * 1e3:.2f} ms/step; fit error median {fitted.calibration['median_abs_error']:.1%} "
          f"on {len(cal_points)} calibration steps; profile written to {args.out}")

    print(f"{'model':20s} {'step':28s} {'measured':>10s} {'roofline':>10s} {'error':>7s}")
    for info, s in held:
        what = (f"prefill {s.tokens}" if s.kind == "prefill" else f"decode {s.sequences} x 1 @ ctx {s.context}")
        pred = s.predict(info, fitted)
        print(f"{info.name:20s} {what:28s} {s.seconds * 1e3:8.1f}ms {pred * 1e3:8.1f}ms {pred / s.seconds - 1:+7.1%}")

    # baseline: seconds per FLOP, one constant fitted on the calibration points (median ratio)
    per_flop = statistics.median(s.seconds / flops_of(i, s) for i, s in cal_points)
    flops_err = statistics.median(abs(per_flop * flops_of(i, s) / s.seconds - 1) for i, s in held)
    err = median_abs_error(fitted, held)  # type: ignore[arg-type]
    print(f"held-out steps: {len(held)}; roofline median |error| {err:.1%}; FLOPs-only median |error| {flops_err:.1%}")
    print(f"bench: cost_model_median_abs_error = {err:.3f}")
    print(f"bench: flops_only_median_abs_error = {flops_err:.3f}")


if __name__ == "__main__":
    main()
