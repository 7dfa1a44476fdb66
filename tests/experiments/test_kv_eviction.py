"""The kv-eviction page: levers compared per byte, from synthetic configuration pools."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ttscale.errors import ConfigError
from ttscale.experiments.kv_eviction import CacheRun, PoolConfig, chain_grid, grid, lever_of, measure, page
from ttscale.planner.input_output import ArmSample
from ttscale.types import ModelInfo

QWEN05 = ModelInfo("qwen2.5-coder-0.5b", 630_167_424, 24, 14, 2, 64, 896, 32768)
PROMPT = {10: 1200.0, 5: 650.0, 2: 300.0}


def _info(engine: str, kept: float = 1.0, kv: str = "f16", kv_v: str | None = None) -> ModelInfo:
    if engine == "transformers":
        return dataclasses.replace(QWEN05, kv_type_k="f32", kv_type_v="f32", kv_bytes_per_elem=4,
                                   kv_prompt_per_sample=True, kv_prompt_kept=kept, kv_press_min_tokens=16)
    return dataclasses.replace(QWEN05, kv_type_k=kv, kv_type_v=kv_v or kv)


def _run(cfg: PoolConfig, p_right: float, rng: np.random.Generator, questions: int = 40, s: int = 4) -> CacheRun:
    cache = ("f32" if cfg.press is None else f"f32+{cfg.press}@{cfg.ratio:g}") if cfg.engine == "transformers" \
        else (cfg.kv_type if cfg.kv_type_v is None else f"{cfg.kv_type}/{cfg.kv_type_v}")
    samples = {f"q{j}": [ArmSample("gold" if (ok := rng.random() < p_right) else f"w{j}-{i}",
                                   {"em": float(ok), "f1": 1.0 if ok else 0.1}, -1.0, 10, PROMPT[cfg.docs],
                                   PROMPT[cfg.docs] if i == 0 else 0.0) for i in range(s)] for j in range(questions)}
    info = _info(cfg.engine, 1.0 - cfg.ratio, cfg.kv_type, cfg.kv_type_v)
    return CacheRun(cfg.run_id("syn"), cache, cfg.engine, cfg.docs, info, 24, samples)


def _pools() -> list[CacheRun]:
    rng = np.random.default_rng(0)
    # SnapKV keeps the evidence, StreamingLLM loses it as it evicts more; q8_0 is lossless, fewer passages hurt
    acc = {None: 0.5, "snapkv": 0.5, "streaming_llm": 0.15}
    runs = []
    for cfg in grid(["snapkv", "streaming_llm"], [0.5, 0.75], 10, [5, 2]):
        if cfg.engine == "llama-cpp":
            p = 0.5
        elif cfg.docs < 10:
            p = 0.2
        else:
            p = acc[cfg.press]
        runs.append(_run(cfg, p, rng))
    return runs


def test_the_grid_names_its_runs_and_engine_flags() -> None:
    cfgs = grid(["snapkv"], [0.5], 10, [5])
    ids = [c.run_id("kvev") for c in cfgs]
    assert ids == ["kvev-k10-tf-none", "kvev-k10-lc-f16", "kvev-k10-tf-snapkv-50", "kvev-k10-lc-q8_0",
                   "kvev-k10-lc-q8_0-q4_0", "kvev-k5-tf-none"]
    assert cfgs[2].engine_flags() == ["--backend", "transformers", "--kv-press", "snapkv", "--kv-compression", "0.5"]
    assert cfgs[4].engine_flags() == ["--kv-type", "q8_0", "--kv-type-v", "q4_0"]


def test_bytes_follow_each_engines_layout_and_levers_are_named() -> None:
    runs = {r.run_id: r for r in _pools()}
    ref, half = runs["syn-k10-tf-none"], runs["syn-k10-tf-snapkv-50"]
    # a prompt copy per sample: 4 x (1200 + 24) cells at f32, and the press keeps half of each prompt
    assert ref.kv_bytes("q0", 4) == ref.info.kv_bytes(4 * (1200 + 24))
    assert half.kv_bytes("q0", 4) == half.info.kv_bytes(4 * (600 + 24))
    lc = runs["syn-k10-lc-f16"]
    assert lc.kv_bytes("q0", 4) == lc.info.kv_bytes(1200 + 4 * 24)  # llama.cpp shares the prompt
    assert [lever_of(runs[k], 10) for k in ("syn-k10-tf-none", "syn-k10-tf-snapkv-50", "syn-k10-lc-q8_0",
                                            "syn-k5-tf-none")] == ["reference", "press", "precision", "passages"]
    rows, questions = measure(list(runs.values()))
    assert len(questions) == 40
    # the references also appear at fewer samples (the sampling lever), with fewer bytes
    few = [r for r in rows if r.lever == "samples" and r.engine == "transformers"]
    assert [r.s for r in few] == [1, 2] and few[0].bytes.mean() < ref.kv_bytes("q0", 4)  # powers of two


def test_the_page_finds_what_the_pools_hold(tmp_path: Path) -> None:
    pg = page(_pools(), ["syn-k10-tf-tova-50"], tmp_path)
    md = pg.markdown()
    for section in ("## Configurations", "## Which lever buys the most accuracy per byte", "## The published claims here"):
        assert section in md
    # SnapKV loses nothing resolved; StreamingLLM at 0.75 loses, and SnapKV beats it there, resolved
    snap = next(line for line in md.splitlines() if line.startswith("| SnapKV keeps"))
    assert "a resolved loss" not in snap
    stream = next(line for line in md.splitlines() if line.startswith("| A sink and a recent window"))
    assert "at 0.75: SnapKV - StreamingLLM" in stream and ", resolved" in stream
    assert "`syn-k10-tf-tova-50`" in md and "not measured (no pool)" in md  # no tova pool
    assert (tmp_path / "kv-eviction.png").stat().st_size > 5_000


def test_pools_without_a_common_question_are_refused(tmp_path: Path) -> None:
    a, b = _pools()[:2]
    b = dataclasses.replace(b, samples={f"x{k}": v for k, v in b.samples.items()})
    with pytest.raises(ConfigError, match="share no question"):
        measure([a, b])
    # the page sets aside the pool that lacks the reference's questions, and says so
    assert f"`{b.run_id}` (0 of 40 questions)" in page([a, b], [], tmp_path).markdown()


def test_the_page_builds_from_the_shipped_pools(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ttscale.cli import app
    from ttscale.experiments.kv_eviction import shipped_runs

    if len(shipped_runs()) < 2:
        pytest.skip("no shipped kv-eviction pools")
    res = CliRunner().invoke(app, ["experiment", "kv-eviction", "--output", str(tmp_path)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    md = (tmp_path / "kv-eviction.md").read_text()
    assert "## Which lever buys the most accuracy per byte" in md and "qwen2.5-coder-0.5b" in md
    assert "Not measured yet" not in md  # every configuration of the grid is shipped


def _chain_run(cfg: PoolConfig, p_right: float, rng: np.random.Generator, problems: int = 40, s: int = 4) -> CacheRun:
    """A GSM8K chain pool: 100-token prompts, chains of up to 512 tokens; a decoding cap bounds each sample."""
    if cfg.engine == "transformers":
        info = dataclasses.replace(_info("transformers"), kv_decode_cap=cfg.decode_kv or 0,
                                   kv_decode_interval=32 if cfg.decode_kv else 0, extra={"dtype": cfg.dtype})
        precision = "bf16" if cfg.dtype == "bfloat16" else "f32"
        cache = precision if cfg.press is None else f"{precision}+{cfg.press}@0+decode{cfg.decode_kv}"
    else:
        info, cache = _info("llama-cpp", kv=cfg.kv_type, kv_v=cfg.kv_type_v), cfg.kv_type
    samples = {f"p{j}": [ArmSample("18" if (ok := rng.random() < p_right) else f"{j}{i}", {"em": float(ok), "f1": float(ok)},
                                   -1.0, 250, 100.0, 100.0 if i == 0 else 0.0) for i in range(s)] for j in range(problems)}
    return CacheRun(cfg.run_id("syn"), cache, cfg.engine, 0, info, 512, samples, "chains")


def test_reasoning_chains_get_their_own_sections(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    cfgs = chain_grid(["tova", "streaming_llm", "snapkv"], [128, 256])
    assert [c.run_id("kvev") for c in cfgs[:2]] == ["kvev-gsm8k-tf-bf16-none", "kvev-gsm8k-tf-bf16-tova-d128"]
    assert cfgs[1].engine_flags() == ["--backend", "transformers", "-B", "dtype=bfloat16", "--kv-press", "tova",
                                      "--kv-compression", "0", "-B", "decode_kv=128"]
    f32 = chain_grid(["tova"], [128], dtype="float32")
    assert f32[1].run_id("kvev") == "kvev-gsm8k-tf-tova-d128" and "dtype=bfloat16" not in f32[1].engine_flags()
    # heavy hitters keep the chain; a recent window forgets the question at the tight cap
    acc = {None: 0.6, "tova": 0.6}
    chains = [_chain_run(c, acc.get(c.press, 0.1 if c.decode_kv == 128 else 0.6), rng) for c in cfgs]
    chains.append(_chain_run(PoolConfig("llama-cpp", 0), 0.6, rng))
    chains.append(_chain_run(PoolConfig("llama-cpp", 0, kv_type="q8_0"), 0.6, rng))
    capped = chains[1]
    assert capped.kv_bytes("p0", 4) == capped.info.kv_bytes(4 * (128 + 32))  # the cap, not 100 + 512 cells
    md = page([*_pools(), *chains], [], tmp_path).markdown()
    for section in ("## Configurations", "## Reasoning chains: Configurations",
                    "## Reasoning chains: Which lever buys the most accuracy per byte",
                    "## Reasoning chains: The published claims here"):
        assert section in md
    window = next(line for line in md.splitlines() if line.startswith("| Attention sinks plus a recent window"))
    assert "streaming_llm@0+decode128" in window and "a resolved loss" in window
    hitters = next(line for line in md.splitlines() if line.startswith("| Keeping the attention heavy hitters"))
    assert "a resolved loss" not in hitters
    # SnapKV's scorer used while decoding is this project's claim, with a verdict of its own
    snap = next(line for line in md.splitlines() if line.startswith("| (this project) SnapKV's selection"))
    assert "snapkv@0+decode128" in snap and "a resolved loss" in snap
    here = md.split("**Reasoning chains, qwen2.5-coder-0.5b**")[1]
    assert "snapkv@0+decode128" in here[here.index("**SnapKV**"):here.index("**Heavy hitters**")]
    # the user's question is answered first, then each claim, one a line
    assert here.index("- **Which lever**: at 30% of the bytes") < here.index("- **SnapKV**: ")
    assert (tmp_path / "kv-eviction-chains.png").exists()
    unmade = next(line for line in md.splitlines() if line.startswith("Reasoning-chain configurations of the grid"))
    assert "`syn-gsm8k-tf-bf16-snapkv-d384`" in unmade and "tova-d128" not in unmade  # made ones are not listed
    # the grid's dtype is the one the pools recorded in their cache label, not one spelled in their run ids
    f32_chains = [dataclasses.replace(r, run_id=r.run_id.replace("-bf16-", "-"), cache=r.cache.replace("bf16", "f32"),
                                      info=dataclasses.replace(r.info, extra={"dtype": "float32"})) for r in chains]
    unmade32 = next(line for line in page(f32_chains, [], tmp_path).markdown().splitlines()
                    if line.startswith("Reasoning-chain configurations of the grid"))
    assert "`syn-gsm8k-tf-snapkv-d384`" in unmade32 and "bf16" not in unmade32
    # each workload's verdict is a paragraph of its own; each section says how to read a pressed cache's label
    assert "\n\n**Reasoning chains, qwen2.5-coder-0.5b** (9 cache configurations on 40 GSM8K problems" in md
    assert "\n\n**Long retrieved contexts, qwen2.5-coder-0.5b** (10 cache configurations on 40 MuSiQue" in md
    assert ("`bf16+tova@0+decode256` keeps bfloat16 cells and the whole prompt (ratio 0), and has the `tova` press "
            "evict each sample's cache back to 256 cells every 32 tokens") in md
    assert "a sample holds at most 288 cells" in md
    assert "`f32+snapkv@0.5` keeps float32 cells and has the `snapkv` press evict 50% of each prompt's cells" in md
    # the shipped llama.cpp chains alone (no press to compare) make no chains section
    assert "Reasoning chains" not in page([*_pools(), *chains[-2:]], [], tmp_path).markdown()


def test_each_model_gets_its_own_sections_and_figure(tmp_path: Path) -> None:
    """A second model's pools are judged against that model's references, in sections and a figure of its own."""
    rng = np.random.default_rng(2)
    cfgs = chain_grid(["tova"], [128])
    small = [_chain_run(c, 0.5, rng) for c in cfgs] + [_chain_run(PoolConfig("llama-cpp", 0), 0.5, rng)]
    large = []
    for c in [*cfgs, PoolConfig("llama-cpp", 0)]:
        r = _chain_run(c, 0.8, rng)
        large.append(dataclasses.replace(r, run_id=r.run_id.replace("syn", "big"),
                                         info=dataclasses.replace(r.info, name="qwen2.5-coder-1.5b")))
    md = page([*small, *large], [], tmp_path).markdown()
    assert "## Reasoning chains, qwen2.5-coder-0.5b: Configurations" in md
    assert "## Reasoning chains, qwen2.5-coder-1.5b: Configurations" in md
    assert (tmp_path / "kv-eviction-chains.png").exists()
    assert (tmp_path / "kv-eviction-chains-qwen2.5-coder-1.5b.png").exists()
    assert "![accuracy change against KV bytes (reasoning chains, qwen2.5-coder-1.5b)](kv-eviction-chains-qwen2.5-coder-1.5b.png)" in md
    # the 1.5B's press is measured against the 1.5B's own full cache, not the 0.5B's
    big = md[md.index("## Reasoning chains, qwen2.5-coder-1.5b: Configurations"):]
    assert big.count("| reference |") == 2 and "0.5b" not in big.split("## ")[1]


def test_a_pool_stopped_part_way_is_left_out_not_shrinking_the_comparison(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    cfgs = chain_grid(["tova", "knorm"], [128])
    runs = [_chain_run(c, 0.5, rng) for c in cfgs] + [_chain_run(PoolConfig("llama-cpp", 0), 0.5, rng)]
    half = runs[2]
    runs[2] = dataclasses.replace(half, samples={q: v for q, v in half.samples.items() if q in {"p0", "p1", "p2"}})
    md = page(runs, [], tmp_path).markdown()
    assert f"`{half.run_id}` (3 of 40 questions)" in md
    assert "on 40 GSM8K problems" in md  # the finished pools are still compared over all their problems
    assert "Read the presses' verdicts for what they are" not in md  # a reference at 0.5 is no floor
    weak = [_chain_run(c, 0.05, np.random.default_rng(4)) for c in cfgs]
    weak_md = page(weak, [], tmp_path).markdown()
    assert "Read the presses' verdicts for what they are" in weak_md and "a stronger model is what" in weak_md
    # beside a second model's sections, the weak model's caveat points to them
    big = [dataclasses.replace(r, run_id=r.run_id.replace("syn", "big"), info=dataclasses.replace(r.info, name="big"))
           for r in runs]
    assert "a stronger model (the big's, below) is what would make them mean more" in page([*weak, *big], [],
                                                                                            tmp_path).markdown()


def test_the_figure_names_each_press_and_precision_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Presses at one cap share one share of the bytes: each point is named, coinciding ones in one label."""
    import ttscale.experiments.kv_eviction as kv

    figs: list[object] = []
    monkeypatch.setattr(kv, "save", figs.append)
    rng = np.random.default_rng(5)
    cfgs = chain_grid(["tova", "knorm", "snapkv"], [128])
    # TOVA and KNorm solve every problem, so their points coincide (ties in a vote are broken by chance)
    runs = [_chain_run(c, 1.0 if c.press in ("tova", "knorm") else 0.5, rng) for c in cfgs]
    runs += [_chain_run(PoolConfig("llama-cpp", 0), 0.5, rng), _chain_run(PoolConfig("llama-cpp", 0, kv_type="q8_0"), 0.5, rng)]
    page(runs, [], tmp_path)
    texts = sorted(t.get_text() for t in figs[-1].axes[0].texts)  # type: ignore[attr-defined]
    assert "q8_0" in texts and "snapkv" in texts and "tova, knorm" in texts and "tova" not in texts
