"""The KV precision as a planner choice: under a memory cap a quantized cache buys more parallel samples."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ttscale.backends.fake import FAKE_MODEL_INFO, FakeBackend
from ttscale.backends.kv_sizing import with_kv_types
from ttscale.cli import app
from ttscale.errors import ConfigError
from ttscale.planner.data import from_pool, load_plan_pool
from ttscale.planner.evaluate import split_problems
from ttscale.planner.kv_plan import KvPlan, KvPool, evaluate_kv_plan, fit_kv_plan
from ttscale.planner.kv_pools import parse_kv_pools
from ttscale.run import Sweep, execute
from ttscale.store import Store
from ttscale.tasks.jsonl import JsonlTask
from ttscale.testing.synthetic import synthetic_pool
from ttscale.types import ModelInfo, PromptFormat

SMOL = ModelInfo("smol", 134_515_008, 30, 9, 3, 64, 576, 8192)
GEN = 200  # the synthetic pools' samples run to < 200 tokens


def pools(degrade: float = 0.0, seed: int = 0) -> dict[str, KvPool]:
    """The same problems at f16 and q8_0; ``degrade``: share of q8_0 samples whose answer is spoiled."""
    pp = from_pool(synthetic_pool(160, 16, n_distractors=8, difficulty=(2.0, 2.5), no_answer=0.0, seed=seed))
    q8 = pp
    if degrade:
        rng = np.random.default_rng(seed + 1)
        spoil = rng.random(pp.pool.answer.shape) < degrade
        q8 = dataclasses.replace(pp, pool=dataclasses.replace(pp.pool, answer=np.where(spoil, 3, pp.pool.answer)))
    return {"f16": KvPool("f16", pp, with_kv_types(SMOL, "f16"), GEN),
            "q8_0": KvPool("q8_0", q8, with_kv_types(SMOL, "q8_0"), GEN)}


def cap_for(kp: dict[str, KvPool]) -> int:
    """16 samples of the longest prompt fit at q8_0 (34/64 of f16's bytes), so 8 at f16."""
    longest = int(np.ceil(kp["f16"].pool.prompt_tokens.max()))
    return with_kv_types(SMOL, "q8_0").kv_bytes(16 * (longest + GEN))


def split(kp: dict[str, KvPool]) -> tuple[dict[str, KvPool], dict[str, KvPool]]:
    s = split_problems(kp["f16"].pool.problem_ids, seed=0)
    return {t: p.subset(s.train) for t, p in kp.items()}, {t: p.subset(s.test) for t, p in kp.items()}


def full_budget(kp: dict[str, KvPool]) -> float:
    p = kp["f16"].pool.pool
    return float((p.prefill_tokens + p.sample_tokens.mean(axis=1) * 16).mean())


def test_the_cap_allows_8_samples_at_f16_and_16_at_q8() -> None:
    kp = pools()
    cap = cap_for(kp)
    assert (kp["f16"].max_k(cap), kp["q8_0"].max_k(cap)) == (8, 16)
    # sharing the prompt among the samples (the embedded engine) fits more at both
    assert kp["f16"].max_k(cap, shared_prompt=True) > 8


def test_more_samples_at_q8_0_win_when_the_cache_costs_nothing_in_accuracy() -> None:
    kp = pools()
    cap = cap_for(kp)
    train, test = split(kp)
    plan = fit_kv_plan(train, cap, [full_budget(kp)], probes=(1,), n_bins=2, n_orders=16)
    (lv,) = plan.levels
    assert lv.kv_type == "q8_0", lv.candidates
    assert lv.candidates["f16"]["k"] <= 8 and lv.candidates["q8_0"]["k"] == 16
    assert lv.expected_accuracy > lv.candidates["f16"]["expected_accuracy"]
    ev = evaluate_kv_plan(plan, test, n_orders=16)
    (row,) = ev["levels"]
    assert row["kv_type"] == "q8_0" and row["gain_over_reference"] > 0
    assert row["held_out"]["q8_0"]["fits_test_prompts"] == 1.0  # the test prompts are no longer


def test_no_chosen_configuration_exceeds_the_cap() -> None:
    kp = pools()
    for cap in (cap_for(kp) // 3, cap_for(kp) // 2, cap_for(kp), 10 * cap_for(kp)):
        train, _ = split(kp)
        plan = fit_kv_plan(train, cap, probes=(1, 2), n_bins=2, n_orders=8)
        for t, pol in plan.policies.items():
            longest = float(train[t].pool.prompt_tokens.max())
            for lv in pol.levels:
                for b in lv.bins:
                    assert b.choice.k <= plan.precisions[t]["max_k"]
                    assert train[t].peak_bytes(b.choice.k, longest) <= cap
                assert train[t].peak_bytes(lv.probe, longest) <= cap


def test_a_cache_that_spoils_answers_loses_to_f16() -> None:
    kp = pools(degrade=0.6)
    train, _ = split(kp)
    plan = fit_kv_plan(train, cap_for(kp), [full_budget(kp)], probes=(1,), n_bins=2, n_orders=16)
    assert plan.levels[0].kv_type == "f16"


def test_ties_keep_the_more_precise_cache_and_a_cap_too_small_is_an_error() -> None:
    kp = pools()
    train, _ = split(kp)
    plan = fit_kv_plan(train, 100 * cap_for(kp), [full_budget(kp)], probes=(1,), n_bins=2, n_orders=8)
    assert plan.levels[0].kv_type == "f16"  # both fit all 16: nothing to gain from quantizing
    with pytest.raises(ConfigError, match="no precision fits one sample"):
        fit_kv_plan(train, 1000, probes=(1,), n_bins=2, n_orders=8)


def test_plan_round_trips_through_json_and_picks_the_level_for_a_budget(tmp_path: Path) -> None:
    kp = pools()
    train, _ = split(kp)
    budget = full_budget(kp)
    plan = fit_kv_plan(train, cap_for(kp), [budget / 4, budget], probes=(1,), n_bins=2, n_orders=8)
    plan.save(tmp_path / "kv.json")
    back = KvPlan.load(tmp_path / "kv.json")
    kind, policy, level = back.level_for(budget)
    assert kind == "q8_0" and max(b.choice.k for b in level.bins) <= 16
    assert policy.source["kv_type"] == "q8_0"
    with pytest.raises(ConfigError, match="below the plan's smallest level"):
        back.level_for(1.0)


def test_kv_pool_specs() -> None:
    assert parse_kv_pools(["q8_0=r1", "r2"]) == [("q8_0", "r1"), (None, "r2")]
    for bad in ("=r", "q8_0=", "int3=r"):
        with pytest.raises(ConfigError):
            parse_kv_pools([bad])


# -- `ttscale plan --kv-pool ... --max-kv-bytes` on stored pools ------------------------------------

runner = CliRunner()


def script(prompt: str) -> dict[str, float]:
    """Problem i: settled (i % 3 == 0), contested (1: more samples help), scattered and wrong (2)."""
    i = int(prompt.split("Problem ")[-1].split()[0])
    if i % 3 == 0:
        return {"42": 1.0}
    if i % 3 == 1:
        return {"42": 0.34, **{str(a): 0.66 / 6 for a in range(100, 106)}}
    return {str(a): 1.0 for a in range(100, 140)}


def make_store(tmp_path: Path, n: int = 36) -> Path:
    data = tmp_path / "q.jsonl"
    data.write_text("".join(f'{{"id": "q{i}", "prompt": "Problem {i} here", "answer": "42"}}\n' for i in range(n)))
    task = JsonlTask(path=str(data), fmt=PromptFormat(style="completion", max_tokens=16))
    store = tmp_path / "s.sqlite"
    st = Store(store)
    for kind, rid in (("f16", "pool-f16"), ("q8_0", "pool-q8")):
        be = FakeBackend(answers=script, filler_tokens=2, info=with_kv_types(FAKE_MODEL_INFO, kind))
        execute(Sweep(task, 16), store=st, run_id=rid, backend=be)
    st.close()
    return store


def test_plan_cli_chooses_the_precision_under_a_cap(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    st = Store(store)
    longest = int(load_plan_pool(st, ["pool-f16"]).prompt_tokens.max())
    st.close()
    # fake cells: 512 bytes at f16, 272 at q8_0: 16 samples of (prompt + 16) fit at q8_0, 8 at f16
    cap = with_kv_types(FAKE_MODEL_INFO, "q8_0").kv_bytes(16 * (longest + 16))
    out = tmp_path / "kv.json"
    args = ["plan", "--pool", "pool-f16", "--kv-pool", "q8_0=pool-q8", "--max-kv-bytes", str(cap),
            "--store", str(store), "--bins", "2", "--probe", "1", "--orders", "8", "--output", str(out)]
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "q8_0" in r.output and "KV plan written" in r.output
    plan = json.loads(out.read_text())
    assert plan["format"] == "ttscale-kv-plan/1"
    assert plan["precisions"]["f16"]["max_k"] == 8 and plan["precisions"]["q8_0"]["max_k"] == 16
    assert plan["levels"][-1]["kv_type"] == "q8_0"
    assert plan["evaluation"]["levels"][-1]["gain_over_reference"] is not None
    # the run's record names the precision: --kv-pool RUN alone works too; a wrong TYPE is refused
    r = runner.invoke(app, [*args[:3], "--kv-pool", "pool-q8", *args[5:]], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*args[:3], "--kv-pool", "q4_0=pool-q8", *args[5:]], env={"COLUMNS": "200"})
    assert r.exit_code != 0 and "made at q8_0" in r.output
    r = runner.invoke(app, [*args[:5], "--store", str(store)], env={"COLUMNS": "200"})
    assert r.exit_code != 0 and "--max-kv-bytes" in r.output

    # applying it: the level's precision must be the run's, and the plan's cap becomes the run's budget
    budget = str(plan["levels"][-1]["budget_tokens"])
    run = ["run", "--policy", str(out), "--budget-tokens", budget, "--backend", "fake", "--task", "jsonl",
           "--data", str(tmp_path / "q.jsonl"), "--limit", "3", "--store", str(tmp_path / "run.sqlite"),
           "--no-progress", "--output", str(tmp_path / "run.json")]
    r = runner.invoke(app, run, env={"COLUMNS": "200"})
    assert r.exit_code != 0 and "--kv-type q8_0" in r.output
    r = runner.invoke(app, [*run, "--kv-type", "q8_0"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run.json").read_text())["config"]["budget"]["kv_bytes"] == cap


def test_a_flops_budget_plans_the_precision_in_gflops_and_runs_by_it(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    st = Store(store)
    f16 = load_plan_pool(st, ["pool-f16"])
    st.close()
    longest = int(f16.prompt_tokens.max())
    cap = with_kv_types(FAKE_MODEL_INFO, "q8_0").kv_bytes(16 * (longest + 16))
    out = tmp_path / "kv-gflops.json"
    r = runner.invoke(app, ["plan", "--pool", "pool-f16", "--kv-pool", "q8_0=pool-q8", "--max-kv-bytes", str(cap),
                            "--budget-unit", "gflops", "--store", str(store), "--bins", "2", "--probe", "1",
                            "--orders", "8", "--output", str(out)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "budget gflops/problem" in r.output and "--budget-gflops" in r.output
    plan = json.loads(out.read_text())
    assert plan["source"]["budget_unit"] == "gflops"
    # the richest level is majority@16's cost on the training split, in GFLOPs: FLOPs, not tokens
    train = f16.subset(plan["source"]["train_problems"]).pool
    full = float((train.prefill_flops + train.sample_flops.sum(axis=1)).mean()) / 1e9
    full_tokens = float((train.prefill_tokens + train.sample_tokens.sum(axis=1)).mean())
    assert max(lv["budget_tokens"] for lv in plan["levels"]) == pytest.approx(full, rel=5e-3)
    assert abs(full - full_tokens) > 1  # not the tokens
    assert plan["levels"][-1]["kv_type"] == "q8_0"

    budget = str(plan["levels"][-1]["budget_tokens"])
    run = ["run", "--policy", str(out), "--backend", "fake", "--task", "jsonl", "--data", str(tmp_path / "q.jsonl"),
           "--limit", "3", "--store", str(tmp_path / "run.sqlite"), "--no-progress", "--kv-type", "q8_0"]
    r = runner.invoke(app, [*run, "--budget-tokens", budget], env={"COLUMNS": "200"})
    assert r.exit_code != 0 and "--budget-gflops" in r.output
    r = runner.invoke(app, [*run, "--budget-gflops", budget], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output


def test_keys_and_values_at_different_types_are_one_more_precision(tmp_path: Path) -> None:
    """A pool swept with --kv-type q8_0 --kv-type-v q4_0 is the precision ``q8_0/q4_0``: its bytes are
    the two types' averaged, the planner may choose it, and a run must name both types."""
    data = tmp_path / "q.jsonl"
    data.write_text("".join(f'{{"id": "q{i}", "prompt": "Problem {i} here", "answer": "42"}}\n' for i in range(36)))
    task = JsonlTask(path=str(data), fmt=PromptFormat(style="completion", max_tokens=16))
    store = tmp_path / "s.sqlite"
    st = Store(store)
    for info, rid in ((FAKE_MODEL_INFO, "pool-f16"), (with_kv_types(FAKE_MODEL_INFO, "q8_0", "q4_0"), "pool-mixed")):
        execute(Sweep(task, 16), store=st, run_id=rid, backend=FakeBackend(answers=script, filler_tokens=2, info=info))
    longest = int(load_plan_pool(st, ["pool-f16"]).prompt_tokens.max())
    st.close()
    mixed = with_kv_types(FAKE_MODEL_INFO, "q8_0", "q4_0")
    assert mixed.kv_bytes(64) * 64 == FAKE_MODEL_INFO.kv_bytes(64) * 26  # (34 + 18) / 2 bytes per 32 values
    cap = mixed.kv_bytes(16 * (longest + 16))
    out = tmp_path / "kv.json"
    r = runner.invoke(app, ["plan", "--pool", "pool-f16", "--kv-pool", "pool-mixed", "--max-kv-bytes", str(cap),
                            "--store", str(store), "--bins", "2", "--probe", "1", "--orders", "8", "--output", str(out)],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    plan = json.loads(out.read_text())
    assert plan["precisions"]["q8_0/q4_0"]["max_k"] == 16 and plan["precisions"]["f16"]["max_k"] == 6
    assert plan["levels"][-1]["kv_type"] == "q8_0/q4_0"
    assert parse_kv_pools(["q8_0/q4_0=pool-mixed"]) == [("q8_0/q4_0", "pool-mixed")]
    run = ["run", "--policy", str(out), "--budget-tokens", str(plan["levels"][-1]["budget_tokens"]), "--backend",
           "fake", "--task", "jsonl", "--data", str(data), "--limit", "2", "--store", str(tmp_path / "r.sqlite"),
           "--no-progress"]
    r = runner.invoke(app, [*run, "--kv-type", "q8_0"], env={"COLUMNS": "200"})
    assert r.exit_code != 0 and "--kv-type q8_0 --kv-type-v q4_0" in r.output
    r = runner.invoke(app, [*run, "--kv-type", "q8_0", "--kv-type-v", "q4_0"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output


# -- presses: evicting the prompt's cells is one more cache configuration -------------------------------

def pressed(info: ModelInfo, ratio: float) -> ModelInfo:
    """The transformers backend's layout: each sample its own prompt copy, of which the press keeps 1 - ratio."""
    return dataclasses.replace(with_kv_types(info, "f32"), kv_prompt_per_sample=True, kv_prompt_kept=1.0 - ratio,
                               kv_press_min_tokens=16)


def test_a_press_label_is_read_and_refused_when_malformed() -> None:
    from ttscale.planner.kv_plan import cache_label, split_cache

    assert split_cache("f32+snapkv@0.5") == ("f32", "snapkv", 0.5)
    assert cache_label("f32", "knorm", 0.25) == "f32+knorm@0.25"
    for bad, msg in (("f32+snapkv", "PRECISION\\+PRESS@RATIO"), ("f32+snapkv@x", "PRECISION\\+PRESS@RATIO"),
                     ("f32+magic@0.5", "unknown KV press"), ("f32+snapkv@0.95", "compression"),
                     ("f7+snapkv@0.5", "unknown KV cache type")):
        with pytest.raises(ConfigError, match=msg):
            split_cache(bad)
    assert parse_kv_pools(["f32+tova@0.75=run-a"]) == [("f32+tova@0.75", "run-a")]


def test_a_press_holds_more_samples_in_the_cap_by_the_cells_it_keeps() -> None:
    pp = from_pool(synthetic_pool(40, 16, seed=0))
    longest = int(np.ceil(pp.prompt_tokens.max()))
    whole = KvPool("f32", pp, pressed(SMOL, 0.0), GEN)
    half = KvPool("f32+snapkv@0.5", pp, pressed(SMOL, 0.5), GEN)
    cap = whole.info.kv_bytes(4 * (longest + GEN))  # four samples, each with its own copy of the prompt
    assert whole.max_k(cap) == 4
    kept = int(np.ceil(longest * 0.5)) if longest >= 16 else longest
    assert half.max_k(cap) == (4 * (longest + GEN)) // (kept + GEN)
    # the engine's layout wins over the plan's shared-prompt flag: these samples never share a prompt
    assert half.max_k(cap, shared_prompt=True) == half.max_k(cap)
    assert half.peak_bytes(2, longest) == half.info.kv_bytes(2 * (kept + GEN))


def test_a_decoding_cap_holds_more_long_chains_in_the_cap() -> None:
    pp = from_pool(synthetic_pool(40, 16, seed=0))
    pp = dataclasses.replace(pp, prompt_tokens=np.minimum(pp.prompt_tokens, 40.0))  # short prompts, long chains
    longest = int(np.ceil(pp.prompt_tokens.max()))
    whole = KvPool("f32", pp, pressed(SMOL, 0.0), GEN)
    info = dataclasses.replace(pressed(SMOL, 0.0), kv_decode_cap=64, kv_decode_interval=16)
    capped = KvPool("f32+knorm@0+decode64", pp, info, GEN)
    cap = whole.info.kv_bytes(4 * (longest + GEN))
    assert whole.max_k(cap) == 4
    assert capped.max_k(cap) == (4 * (longest + GEN)) // (max(longest, 64) + 16)  # 4 x 240 cells / 80 = 12


def test_the_planner_picks_a_press_that_buys_samples_without_spoiling_answers(tmp_path: Path) -> None:
    # long prompts, so that evicting three quarters of them frees room for many more samples
    base = synthetic_pool(160, 16, n_distractors=8, difficulty=(2.0, 2.5), no_answer=0.0, seed=0)
    pp = from_pool(base)
    pp = dataclasses.replace(pp, prompt_tokens=pp.prompt_tokens + 2000)
    kp = {"f32": KvPool("f32", pp, pressed(SMOL, 0.0), GEN),
          "f32+streaming_llm@0.75": KvPool("f32+streaming_llm@0.75", pp, pressed(SMOL, 0.75), GEN)}
    longest = int(np.ceil(pp.prompt_tokens.max()))
    cap = kp["f32"].info.kv_bytes(4 * (longest + GEN))
    assert kp["f32"].max_k(cap) == 4 and kp["f32+streaming_llm@0.75"].max_k(cap) >= 12
    s = split_problems(pp.problem_ids, seed=0)
    train = {t: p.subset(s.train) for t, p in kp.items()}
    test = {t: p.subset(s.test) for t, p in kp.items()}
    p0 = pp.pool
    budget = float((p0.prefill_tokens + p0.sample_tokens.mean(axis=1) * 16).mean())
    plan = fit_kv_plan(train, cap, [budget], probes=(1,), n_bins=2, n_orders=16)
    (lv,) = plan.levels
    assert lv.kv_type == "f32+streaming_llm@0.75", lv.candidates
    assert plan.source["reference"] == "f32"  # the most faithful cache: no eviction
    ev = evaluate_kv_plan(plan, test, n_orders=16)
    assert ev["levels"][0]["gain_over_reference"] > 0
    # applying the plan at that level asks for the engine that evicts, with the same press and ratio
    path = tmp_path / "kvplan.json"
    plan.save(path)
    data = tmp_path / "q.jsonl"
    data.write_text('{"id": "a", "question": "2+2?", "answer": "4"}\n')
    run = ["run", "--policy", str(path), "--budget-tokens", str(budget), "--backend", "fake", "--task", "jsonl",
           "--data", str(data), "--limit", "1", "--store", str(tmp_path / "r.sqlite"), "--no-progress"]
    r = CliRunner().invoke(app, run, env={"COLUMNS": "200"})
    assert r.exit_code == 2, r.output
    assert "--backend transformers --kv-press streaming_llm --kv-compression 0.75" in " ".join(r.output.split())
    # a level that also evicted while decoding asks for the same cap (-B decode_kv=N)
    path.write_text(path.read_text().replace("f32+streaming_llm@0.75", "f32+streaming_llm@0+decode128"))
    r = CliRunner().invoke(app, run, env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "-B decode_kv=128" in " ".join(r.output.split()), r.output


def test_recorded_kv_type_names_the_press_of_a_transformers_run() -> None:
    from ttscale.planner.kv_pools import recorded_kv_type

    rec = {"kv_type_k": "f32", "kv_type_v": "f32", "extra": {"kv_press": "snapkv", "kv_compression": "0.5"}}
    assert recorded_kv_type(rec) == "f32+snapkv@0.5"
    assert recorded_kv_type({**rec, "extra": {"kv_press": "none", "kv_compression": "0"}}) == "f32"
    assert recorded_kv_type({}) == "f16"
    capped = {**rec, "extra": {"kv_press": "knorm", "kv_compression": "0", "kv_decode": "128"}}
    assert recorded_kv_type(capped) == "f32+knorm@0+decode128"


def test_a_decoding_cap_is_part_of_the_cache_label() -> None:
    from ttscale.planner.kv_plan import cache_label, decode_cap, split_cache

    label = cache_label("f32", "tova", 0.5, 256)
    assert label == "f32+tova@0.5+decode256" and decode_cap(label) == 256
    assert split_cache(label) == ("f32", "tova", 0.5) and decode_cap("f32+tova@0.5") is None
    assert cache_label("f32", "tova", 0.0) == "f32"  # a press that evicts nothing is no cache configuration
    with pytest.raises(ConfigError, match="decodeN"):
        decode_cap("f32+tova@0.5+decodeall")
