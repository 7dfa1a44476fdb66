"""The roofline cost model: profiles, the two regimes, pricing, and a fit that recovers known efficiencies."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ttscale.errors import ConfigError
from ttscale.roofline import (
    HardwareProfile,
    TimedStep,
    builtin_profiles,
    decode_step_seconds,
    draft_step_speedup,
    fit_profile,
    generation_seconds,
    load_profile,
    prefill_seconds,
)
from ttscale.types import ModelInfo

QWEN05 = ModelInfo("qwen05", 630_167_424, 24, 14, 2, 64, 896, 32768, extra={"file_bytes": "491400064"})


def test_builtin_profiles_load_and_round_trip(tmp_path: Path) -> None:
    assert {"h100", "a100", "l4", "cpu-2core"} <= set(builtin_profiles())
    for name in builtin_profiles():
        hw = load_profile(name)
        assert hw.effective_flops > 0 and hw.sources
        hw.save(tmp_path / f"{name}.toml")
        assert load_profile(tmp_path / f"{name}.toml") == hw


def test_bad_profiles_are_named_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="built-in ones are"):
        load_profile("tpu-v9")
    (tmp_path / "x.toml").write_text('name = "x"\npeak_flops = 1e12\nmem_bandwidth = 1e9\nmem_bytes = 1\n'
                                     'usd_per_hour = 1\nbogus = 3\n')
    with pytest.raises(ConfigError, match="bogus"):
        load_profile(tmp_path / "x.toml")


def test_gpu_decode_is_memory_bound_and_batches_almost_free_cpu_decode_is_not() -> None:
    gpu, cpu = load_profile("h100"), load_profile("cpu-2core")
    # 16 samples of one prompt in one batch cost little more than one on a GPU (weights read once) ...
    assert decode_step_seconds(QWEN05, gpu, 16, 512) < 1.1 * decode_step_seconds(QWEN05, gpu, 1, 512)
    # ... while on this CPU the FLOPs of 16 sequences dominate
    assert decode_step_seconds(QWEN05, cpu, 16, 512) > 4 * decode_step_seconds(QWEN05, cpu, 1, 512)
    # prefill is compute-bound everywhere: ~linear in tokens
    assert prefill_seconds(QWEN05, gpu, 4000) == pytest.approx(4 * prefill_seconds(QWEN05, gpu, 1000), rel=0.15)


def test_long_contexts_cost_kv_reads_that_flops_do_not_show() -> None:
    gpu = load_profile("h100")
    short, long = decode_step_seconds(QWEN05, gpu, 16, 256), decode_step_seconds(QWEN05, gpu, 16, 30_000)
    assert long > 1.5 * short  # 16 caches of 30k tokens outweigh the 0.5 GB of weights


def test_generation_time_and_money() -> None:
    hw = load_profile("l4")
    t = generation_seconds(QWEN05, hw, prompt_tokens=200, samples=8, generated_tokens=300)
    steps = sum(decode_step_seconds(QWEN05, hw, 8, 200 + i) for i in range(300))
    assert t == pytest.approx(prefill_seconds(QWEN05, hw, 200) + steps, rel=0.01)
    assert hw.usd(3600) == pytest.approx(hw.usd_per_hour)


def test_the_fit_recovers_the_efficiencies_that_made_the_times() -> None:
    # one model: its matrices' size exponent cannot be told apart from the matmul efficiency, so none here
    truth = replace(load_profile("cpu-2core"), compute_efficiency=0.21, bandwidth_efficiency=0.37,
                    step_overhead_s=0.004, size_exponent=0.0)
    steps = [TimedStep("prefill", 1, n, 0, 0.0) for n in (128, 512, 2048)] + [
        TimedStep("decode", n, 1, c, 0.0) for n in (1, 2, 4, 8, 16) for c in (256, 2048)]
    points = [(QWEN05, replace(s, seconds=s.predict(QWEN05, truth))) for s in steps]
    start = HardwareProfile("guess", truth.peak_flops, truth.mem_bandwidth, 1, 0)
    fitted = fit_profile(start, points)
    assert fitted.compute_efficiency == pytest.approx(0.21, rel=0.02)
    assert fitted.bandwidth_efficiency == pytest.approx(0.37, rel=0.05)
    assert fitted.calibration["median_abs_error"] < 0.01 and fitted.size_exponent == 0.0


def test_two_model_sizes_fit_the_size_exponent() -> None:
    """Steps of two models whose times were made with matmuls slower on the smaller matrices: the fit finds
    the exponent, and the per-model rates it implies."""
    from ttscale.types import ModelInfo

    big = ModelInfo("big", 4 * QWEN05.n_params, QWEN05.n_layers, QWEN05.n_heads, QWEN05.n_kv_heads,
                    QWEN05.head_dim, 2048, QWEN05.n_ctx_train)
    truth = replace(load_profile("cpu-2core"), compute_efficiency=0.3, size_exponent=0.8)
    steps = [TimedStep("prefill", 1, n, 0, 0.0) for n in (128, 512, 2048)] + [
        TimedStep("decode", n, 1, c, 0.0) for n in (1, 4, 16) for c in (256, 2048)]
    points = [(m, replace(s, seconds=s.predict(m, truth))) for m in (QWEN05, big) for s in steps]
    fitted = fit_profile(HardwareProfile("guess", truth.peak_flops, truth.mem_bandwidth, 1, 0), points)
    assert fitted.size_exponent == pytest.approx(0.8, abs=0.05)
    assert fitted.matmul_flops_for(big) == pytest.approx(truth.matmul_flops_for(big), rel=0.05)
    assert fitted.calibration["median_abs_error"] < 0.01


def test_replayed_curves_priced_per_machine_rank_batching_differently() -> None:
    """Same points, two machines: on the GPU a wide batch is nearly free per sample, on the CPU it is not."""
    from ttscale.replay.curves import CurvePoint
    from ttscale.replay.pricing import cheapest_reaching, price_curve

    wide = CurvePoint("majority", 16, 0.70, 0.6, 0.8, 16.0, 16 * 280.0, 16 * 280.0 + 150, 0.0, True)
    narrow = CurvePoint("adaptive", 16, 0.70, 0.6, 0.8, 6.0, 6 * 280.0, 6 * 280.0 + 150, 0.0, False)
    gpu, cpu = load_profile("h100"), load_profile("cpu-2core")
    g_wide, g_narrow = price_curve([wide, narrow], QWEN05, gpu)
    c_wide, c_narrow = price_curve([wide, narrow], QWEN05, cpu)
    assert g_wide.seconds < 1.2 * g_narrow.seconds  # 16 in one batch ~ 6 in one batch on a GPU
    assert c_wide.seconds > 2 * c_narrow.seconds  # ... but ~16/6 times the work on the CPU
    assert cheapest_reaching([c_wide, c_narrow], 0.7) is c_narrow
    assert g_wide.usd == pytest.approx(gpu.usd(g_wide.seconds))


def test_drafting_pays_where_a_wider_step_is_nearly_free() -> None:
    gpu, cpu = load_profile("h100"), load_profile("cpu-2core")
    # nothing drafted, or every guess rejected: one token per step at the cost of a wider step (at most 1x)
    assert draft_step_speedup(QWEN05, gpu, draft=0, acceptance=0.9) == pytest.approx(1.0)
    assert draft_step_speedup(QWEN05, gpu, draft=8, acceptance=0.0) <= 1.0
    # memory-bound decode: 9 positions cost about one, so accepted guesses are nearly free tokens
    assert draft_step_speedup(QWEN05, gpu, draft=8, acceptance=0.8) > 3.0
    # compute-bound (this CPU): the same guesses buy much less, and poor ones cost speed
    assert draft_step_speedup(QWEN05, cpu, draft=8, acceptance=0.8) < draft_step_speedup(QWEN05, gpu, draft=8,
                                                                                          acceptance=0.8) / 2
    assert draft_step_speedup(QWEN05, cpu, draft=8, acceptance=0.3) < 1.0
    with pytest.raises(ConfigError, match="acceptance"):
        draft_step_speedup(QWEN05, gpu, draft=4, acceptance=1.5)
