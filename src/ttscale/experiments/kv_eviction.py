"""``kv-eviction``: which lever buys the most accuracy per byte of KV cache on long retrieved contexts.

One workload (retrieval-augmented questions with many passages, several sampled answers each), one pool per
cache configuration (``scripts/kv_eviction_pool.py``): the transformers backend without a press and with
each KV press at each ratio, llama.cpp at f16 and at quantized precisions, and the transformers backend
with fewer passages. Fewer samples are replayed from the reference pools. A configuration's KV bytes are
the worst case of its answers held together in its engine's layout (:meth:`ModelInfo.wave_kv_cells`: the
transformers backend keeps a copy of the prompt per sample, of which the press keeps ``1 - ratio``;
llama.cpp shares one); its score is the F1 (and EM) of the majority vote over its samples. Each is
compared with its own engine's reference (same questions, paired bootstrap), and the levers at equal
relative bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.experiments.common import BOOTSTRAP, SEED, bootstrap, figure, save, stored_run
from ttscale.experiments.page import Page, ci, table
from ttscale.planner.input_output import Arm, ArmSample, choice_table
from ttscale.planner.kv_plan import split_cache
from ttscale.planner.kv_pools import max_generation, recorded_kv_type
from ttscale.replay.pool import model_info_from_record
from ttscale.store import Store
from ttscale.tasks.rag_data import normalize_answer
from ttscale.types import ModelInfo

POOL_SUBDIR = "kv_eviction"
PREFIX = "kvev-qwen05"
GRID_PRESSES = ("snapkv", "streaming_llm", "tova", "knorm")
"""The presses of both grids: question-aware, sink plus window, attention heavy hitters, score-free."""
GRID_RATIOS = (0.25, 0.5, 0.75)
GRID_CAPS = (128, 256, 384)
"""The chain grid's decoding caps (cells per sample, prompt included): a chain of up to 512 tokens after its
question needs several hundred more, so these keep from a small share of the longest chains to most of them."""
CAPS = (0.3, 0.55, 0.8)
"""Relative KV bytes (of the engine's reference) at which the levers are compared: just above where a
press at 0.75, 0.5 and 0.25 lands once the answers' own cells are counted (26%, 51%, 76% here)."""

CLAIM = (
    "KV-cache eviction keeps only the entries that matter. SnapKV (Li et al. 2024) selects, per head, the "
    "prompt positions the question's last window attends to and reports accuracy on long-context QA close to "
    "the full cache while keeping a small share of it; TOVA (Oren et al. 2024) and H2O (Zhang et al. 2023) keep "
    "the attention heavy hitters (H2O: a 20% cache with little loss); StreamingLLM (Xiao et al. 2024) keeps "
    "attention sinks and a recent window, which serves streaming but drops the middle of a long context, where "
    "retrieved evidence sits. Beside them, an 8-bit KV cache is reported about lossless (llama.cpp's q8_0, "
    "KIVI). The user's question under one memory cap: evict, quantize, retrieve fewer passages or draw fewer "
    "samples?")


@dataclass(frozen=True)
class PoolConfig:
    """One cache configuration of a workload: its engine, passages, press (at prefill, or capping the cells
    while decoding) or precision."""

    engine: str
    """``transformers`` or ``llama-cpp``."""
    docs: int
    press: str | None = None
    ratio: float = 0.0
    kv_type: str = "f16"
    kv_type_v: str | None = None
    decode_kv: int | None = None
    """With a press: evict each sample down to this many cells while decoding (long reasoning chains)."""
    dtype: str = "float32"
    """The transformers backend's weights and cache: ``float32`` or ``bfloat16`` (2.5x the decode speed on a
    CPU with AVX-512 BF16, and the cache in the bytes of llama.cpp's f16)."""

    def run_id(self, prefix: str) -> str:
        where = f"k{self.docs}" if self.docs else "gsm8k"
        if self.engine == "transformers":
            cache = "none" if self.press is None else f"{self.press}-{round(100 * self.ratio)}"
            if self.decode_kv is not None:
                cache = f"{self.press}-d{self.decode_kv}"
            return f"{prefix}-{where}-tf-{'bf16-' if self.dtype == 'bfloat16' else ''}{cache}"
        return f"{prefix}-{where}-lc-{self.kv_type}" + (f"-{self.kv_type_v}" if self.kv_type_v else "")

    def engine_flags(self) -> list[str]:
        if self.engine == "transformers":
            press = ["--kv-press", self.press, "--kv-compression", f"{self.ratio:g}"] if self.press else []
            decoding = ["-B", f"decode_kv={self.decode_kv}"] if self.decode_kv is not None else []
            dtype = ["-B", f"dtype={self.dtype}"] if self.dtype != "float32" else []
            return ["--backend", "transformers", *dtype, *press, *decoding]
        return ["--kv-type", self.kv_type, *(["--kv-type-v", self.kv_type_v] if self.kv_type_v else [])]


def grid(presses: Sequence[str], ratios: Sequence[float], docs: int, fewer_docs: Sequence[int]) -> list[PoolConfig]:
    """The references first (so a partial pool still compares), then presses, precisions and fewer passages."""
    return [PoolConfig("transformers", docs), PoolConfig("llama-cpp", docs),
            *(PoolConfig("transformers", docs, p, r) for r in ratios for p in presses),
            PoolConfig("llama-cpp", docs, kv_type="q8_0"), PoolConfig("llama-cpp", docs, kv_type="q8_0", kv_type_v="q4_0"),
            *(PoolConfig("transformers", d) for d in fewer_docs)]


def chain_grid(presses: Sequence[str], caps: Sequence[int], dtype: str = "bfloat16") -> list[PoolConfig]:
    """The reasoning-chain workload's transformers pools: the reference, then each press capping the cells
    while decoding. Its llama.cpp references and precisions are the shipped GSM8K pools (:data:`CHAIN_LC`).
    Bfloat16 by default: a 512-token chain is decode-bound, and bfloat16 decodes 2.5x faster here."""
    return [PoolConfig("transformers", 0, dtype=dtype),
            *(PoolConfig("transformers", 0, p, decode_kv=c, dtype=dtype) for c in caps for p in presses)]


CHAIN_LC = {
    "kvev-qwen05": ("gsm8k-qwen05-k16", "gsm8k-qwen05-q8-k16", "gsm8k-qwen05-q4-k16"),
    "kvev-qwen15": ("gsm8k-qwen15-k16", "gsm8k-qwen15-q8-k16", "gsm8k-qwen15-q4-k16"),
}
"""Per model prefix, the shipped llama.cpp GSM8K pools (f16, then 8-bit and 4-bit caches): the chains'
engine reference and precision lever."""


@dataclass
class CacheRun:
    """One configuration's pool: its cache label, engine, passages, shapes and per-question samples."""

    run_id: str
    cache: str
    engine: str
    docs: int
    info: ModelInfo
    max_gen: int
    samples: dict[str, list[ArmSample]]
    workload: str = "rag"
    """``rag`` (long retrieved contexts) or ``chains`` (long reasoning: GSM8K)."""

    @property
    def press(self) -> str | None:
        return split_cache(self.cache)[1]

    def kv_bytes(self, question: str, s: int) -> int:
        """Worst-case KV bytes of ``s`` answers to ``question`` held together in this engine's layout."""
        prompt = int(np.ceil(np.mean([x.effective for x in self.samples[question]])))
        return self.info.kv_bytes(self.info.wave_kv_cells(prompt, s, self.max_gen))


def _run_of(run_id: str, model: Mapping[str, Any], config: Mapping[str, Any],
            rows: Sequence[tuple[str, Mapping[str, Any]]]) -> CacheRun:
    info = model_info_from_record(dict(model))
    if info is None:
        raise ConfigError(f"run {run_id!r} records no model shapes: its KV bytes cannot be computed")
    extra = model.get("extra") or {}
    task = config.get("task") or {}
    rag = task.get("name", "rag") == "rag"
    by: dict[str, list[ArmSample]] = {}
    for pid, s in rows:
        g = s.get("grade") or {}
        em = float(bool(g.get("em", s.get("correct"))))
        # a numeric task's answers are already canonical; the QA normalisation would drop a minus sign
        answer = (normalize_answer(s["answer"]) if rag else str(s["answer"])) if s.get("answer") else None
        by.setdefault(pid, []).append(ArmSample(
            answer, {"em": em, "f1": float(g.get("f1", em))},
            s.get("logprob"), int(s.get("n_tokens") or 0), float(s.get("prompt_tokens") or 0),
            float(s.get("prefilled_tokens") or 0)))
    return CacheRun(run_id, recorded_kv_type(model), "transformers" if extra.get("engine") == "transformers"
                    else "llama-cpp", int(task.get("docs", 0)), info, max_generation(config) or 1, by,
                    "rag" if rag else "chains")


def read_cache_run(store: Store, run_id: str) -> CacheRun | None:
    """A configuration's pool from ``store``, else from the shipped files; None when neither has it."""
    from ttscale.pools import POOL_DIR

    found = stored_run(store, run_id, [POOL_DIR / POOL_SUBDIR, POOL_DIR])  # the chains' llama.cpp pools: POOL_DIR
    return None if found is None else _run_of(run_id, *found)


def shipped_runs() -> list[str]:
    from ttscale.pools import POOL_DIR

    return sorted(p.name[: -len(".jsonl.gz")] for p in (POOL_DIR / POOL_SUBDIR).glob("*.jsonl.gz"))


# ---- the measurement ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One configuration at ``s`` samples: per-question scores and bytes, and its lever and reference."""

    label: str
    cache: str
    lever: str
    """``reference``, ``press``, ``precision``, ``passages`` or ``samples``."""
    engine: str
    s: int
    score: dict[str, np.ndarray]
    """Metric -> (Q,) expected score of the majority over s samples."""
    bytes: np.ndarray
    """(Q,) worst-case KV bytes."""


def lever_of(run: CacheRun, docs: int) -> str:
    if run.press is not None:
        return "press"
    if run.docs < docs:
        return "passages"
    return "reference" if run.cache in ("f16", "f32", "bf16") else "precision"


def measure(runs: Sequence[CacheRun], seed: int = SEED) -> tuple[list[Row], list[str]]:
    """Every configuration at its full sample count, and the references at fewer samples, on the questions
    all pools hold."""
    if not runs:
        raise ConfigError("no kv-eviction pools")
    common = sorted(set.intersection(*(set(r.samples) for r in runs)))
    if not common:
        raise ConfigError("the kv-eviction pools share no question")
    docs = max(r.docs for r in runs)
    arms = [Arm(r.run_id, [r.samples[q] for q in common]) for r in runs]
    tab = choice_table(arms, rules=("majority",), seed=seed)
    index = {(c.arm, c.s): i for i, c in enumerate(tab.choices)}
    rows: list[Row] = []
    for r, arm in zip(runs, arms, strict=True):
        lever = lever_of(r, docs)
        # the sampling lever at 1, 2, 4, ... samples (a 16-sample pool would otherwise list 15 rows)
        sizes = [s for s in range(1, arm.depth) if s & (s - 1) == 0] if lever == "reference" else []
        sizes.append(arm.depth)
        for s in sizes:
            i = index[(r.run_id, s)]
            label = _label(r) + ("" if s == arm.depth else f", {s} of {arm.depth} samples")
            rows.append(Row(label, r.cache, "samples" if s < arm.depth else lever, r.engine, s,
                            {m: v[i] for m, v in tab.score.items()},
                            np.array([r.kv_bytes(q, s) for q in common], dtype=float)))
    return rows, common


def _label(r: CacheRun) -> str:
    engine = "transformers" if r.engine == "transformers" else "llama.cpp"
    return f"{engine} {r.cache}" if r.workload == "chains" else f"{engine} {r.cache}, {r.docs} passages"


def reference(rows: Sequence[Row], engine: str) -> Row | None:
    full = [r for r in rows if r.lever == "reference" and r.engine == engine]
    return max(full, key=lambda r: r.s) if full else None


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean of a - b over questions, and its percentile bootstrap interval."""
    d = a - b
    lo, hi = bootstrap(len(d), lambda ix: float(d[ix].mean()))
    return float(d.mean()), lo, hi


# ---- the page ------------------------------------------------------------------------------------------


def run(store: Store, pools: list[str], out: Path) -> Page:
    found = [r for r in (read_cache_run(store, rid) for rid in pools) if r is not None]
    missing = [rid for rid in pools if rid not in {r.run_id for r in found}]
    if not found:
        raise ConfigError("kv-eviction needs its pools (scripts/kv_eviction_pool.py); found none of "
                          + ", ".join(pools[:4]) + ("..." if len(pools) > 4 else ""))
    return page(found, missing, out)


def page(runs: Sequence[CacheRun], missing: Sequence[str], out: Path, metric: str = "f1") -> Page:
    rag = [r for r in runs if r.workload == "rag"]
    # the chains' llama.cpp pools are shipped for other pages: without a transformers chain pool there is no
    # press to compare, and the precisions alone are the kv-precision page's
    chains = [r for r in runs if r.workload == "chains"]
    chains = chains if any(r.engine == "transformers" for r in chains) else []
    if not rag and not chains:
        raise ConfigError("kv-eviction: of its pools only the shipped llama.cpp GSM8K ones were found; make the "
                          "transformers pools (scripts/kv_eviction_pool.py)")
    sections: list[str] = []
    verdicts: list[str] = []
    partial: list[str] = []
    for workload, group in [("rag", rag), ("chains", chains)]:
        models = list(dict.fromkeys(r.info.name for r in group))
        for i, model in enumerate(models):
            # one section set per model: a lever is judged against its own model's reference
            mine, short = complete_runs([r for r in group if r.info.name == model])
            partial += short
            secs, verdict = _workload(mine, out,
                                      "em" if workload == "chains" else metric, chains=workload == "chains",
                                      model_head=f"{model}: " if len(models) > 1 else "",
                                      suffix=f"-{model}" if i else "", after=models[i + 1:])
            sections += secs
            verdicts.append(verdict)
    if partial:
        sections.append("Left out until their pools are finished (the comparisons are paired over the same "
                        "questions): " + ", ".join(partial) + ".")
    if missing:
        sections.append("Not measured yet (pools not made): " + ", ".join(f"`{m}`" for m in missing) + ".")
    if unmade := _unmade_chains(chains):
        sections.append("Reasoning-chain configurations of the grid not made yet (`scripts/kv_eviction_pool.py "
                        "--workload chains` continues them): " + ", ".join(f"`{m}`" for m in unmade) + ".")
    if not chains:
        sections.append("Long reasoning chains (GSM8K, the presses evicting while the chain is written: "
                        "`-B decode_kv=N`) are not measured here yet: their pools are made by "
                        "`scripts/kv_eviction_pool.py --workload chains`, about 19 minutes per configuration "
                        "of 20 problems x 4 samples for the 0.5B on this CPU (bfloat16).")
    return Page("kv-eviction", "KV-cache eviction as a budget lever: presses against precision, passages and samples",
                CLAIM, "\n\n".join(verdicts), sections)


def complete_runs(runs: Sequence[CacheRun]) -> tuple[list[CacheRun], list[str]]:
    """The runs that hold every question of the fullest transformers run (a pool stopped part-way would
    otherwise shrink every comparison to its few questions), and a note on each one left out."""
    tf = [set(r.samples) for r in runs if r.engine == "transformers"]
    if not tf:
        return list(runs), []
    want = max(tf, key=len)
    keep = [r for r in runs if want <= set(r.samples)]
    return keep, [f"`{r.run_id}` ({len(want & set(r.samples))} of {len(want)} questions)" for r in runs
                  if r not in keep]


def _unmade_chains(chains: Sequence[CacheRun]) -> list[str]:
    """The chain grid's run ids, for each model prefix and dtype with a transformers chain pool, not among ``chains``."""
    have = {r.run_id for r in chains}
    want: list[str] = []
    for r in chains:
        if r.engine != "transformers" or "-gsm8k-tf-" not in r.run_id:
            continue
        prefix = r.run_id.split("-gsm8k-")[0]
        want += [c.run_id(prefix) for c in chain_grid(GRID_PRESSES, GRID_CAPS, _dtype(r)) if c.run_id(prefix) not in want]
    return [w for w in want if w not in have]


def _workload(runs: Sequence[CacheRun], out: Path, metric: str, chains: bool, model_head: str = "",
              suffix: str = "", after: Sequence[str] = ()) -> tuple[list[str], str]:
    """One workload's sections (configurations, levers, claims, figure) and its verdict, for one model;
    ``model_head`` names the model in the headings and ``suffix`` its figure's file, when the page has several;
    ``after`` names the models whose sections of this workload follow (a weak model's caveat points to them)."""
    stronger = f"a stronger model (the {after[0]}'s, below)" if after else "a stronger model"
    rows, questions = measure(runs)
    Q = len(questions)
    refs = {e: reference(rows, e) for e in ("transformers", "llama-cpp")}
    name = "accuracy" if chains else metric.upper()
    head = ("Reasoning chains, " + model_head if model_head else "Reasoning chains: ") if chains else model_head
    body: list[list[str]] = []
    for r in rows:
        ref = refs.get(r.engine)
        rel = float(r.bytes.mean() / ref.bytes.mean()) if ref is not None else float("nan")
        if ref is not None and r is not ref:
            d, lo, hi = paired(r.score[metric], ref.score[metric])
            diff = f"{d:+.3f} {ci(lo, hi)}"
        else:
            diff = ""
        scores = [f"{r.score[metric].mean():.3f}"] + ([] if chains else [f"{r.score['em'].mean():.3f}"])
        body.append([r.label, r.lever, f"{r.bytes.mean() / 2**20:.2f}", f"{rel:.0%}", *scores, diff])
    units = "problems" if chains else "questions"
    sections = [f"## {head}Configurations\n\n" + table(
        ["configuration", "lever", "KV MiB per question", "of its engine's reference", name,
         *([] if chains else ["EM"]), f"{name} - reference [95%]"], body) + "\n\n"
        f"Each configuration's score is the expected {name} of the majority vote over its samples (50 "
        f"orderings of each question's stored samples); KV bytes are the worst case of those samples held together. "
        f"Differences are paired over the {Q} {units}, against the same engine's full configuration "
        f"(percentile bootstrap, {BOOTSTRAP} resamples)." + _label_note(runs)]
    levers, lever_verdict = _levers(rows, refs, metric, name, head)
    sections.append(levers)
    claims = _chain_claims(rows, refs) if chains else _claims(rows, refs, metric)
    claims.append(("The user's question: under one memory cap, evict, quantize, " + ("" if chains else
                   "retrieve fewer passages ") + "or draw fewer samples?", lever_verdict))
    sections.append(f"## {head}The published claims here\n\n" + table(["claim", f"here ({Q} {units})"],
                                                                       [[a, b] for a, b in claims]))
    figure_name = ("kv-eviction-chains" if chains else "kv-eviction") + suffix + ".png"
    _figure(rows, refs, metric, out / figure_name, name)
    what = ", ".join(w for w in ("reasoning chains" if chains else "", model_head.rstrip(": ")) if w)
    sections.append(f"![accuracy change against KV bytes{f' ({what})' if what else ''}]({figure_name})")
    model = runs[0].info.name
    if chains:
        names: tuple[str, ...] = ("SnapKV", "Heavy hitters", "StreamingLLM", "KNorm", "8-bit KV", "Which lever")
        tf = refs.get("transformers")
        base = float(tf.score[metric].mean()) if tf is not None else 1.0
        # a press can lose at most what its reference solves: below a fifth, intervals cannot resolve a loss
        low = (f" Read the presses' verdicts for what they are: the transformers reference solves {base:.3f} of the "
               f"problems by majority, so a press can lose at most that much, and with {Q} problems an interval "
               f"rarely excludes it; {stronger} is what would make them mean more."
               if base < 0.2 else "")
        return sections, _verdict(f"**Reasoning chains, {model}** ({len(runs)} cache configurations on {Q} GSM8K "
                                  "problems, the presses evicting while the chain is written):", names, claims, low)
    best = max(float(r.score[metric].mean()) for r in rows)
    floor = (f" Read these for what they are: the best configuration's {metric.upper()} is {best:.3f} and exact match "
             f"is {max(float(r.score['em'].mean()) for r in rows):.3f} at most, so {model} answers almost none of "
             "these questions with or without a full cache; \"no resolved loss\" then says a lever does not make a "
             f"near-useless reader worse, not that it keeps a good one good. {stronger[0].upper()}{stronger[1:]} or "
             "more questions is what would make these verdicts mean more." if best < 0.2 else "")
    names = ("SnapKV", "Heavy hitters", "StreamingLLM against SnapKV", "8-bit KV", "Which lever")
    return sections, _verdict(f"**Long retrieved contexts, {model}** ({len(runs)} cache configurations on {Q} MuSiQue "
                              f"questions with their top {max(r.docs for r in runs)} passages):", names, claims, floor)


def _verdict(lead: str, names: Sequence[str], claims: Sequence[tuple[str, str]], caveat: str) -> str:
    """A workload's verdict: the user's question answered first (the last claim), then each published claim."""
    items = [(names[-1], claims[-1][1]), *((n, b) for n, (_, b) in zip(names[:-1], claims[:-1], strict=True))]
    lines = [lead, "", *(f"- **{n}**: {b.rstrip('.')}." for n, b in items)]
    return "\n".join(lines) + (f"\n\n{caveat.strip()}" if caveat else "")


def _dtype(run: CacheRun) -> str:
    """The transformers backend's recorded weights and cache type (its pools before bfloat16 record none: float32)."""
    return str(run.info.extra.get("dtype", "float32"))


def _label_note(runs: Sequence[CacheRun]) -> str:
    """How to read a pressed cache's label, on one of ``runs``' own (empty when none is pressed)."""
    pressed = [r for r in runs if r.press is not None]
    if not pressed:
        return ""
    r = max(pressed, key=lambda r: r.info.kv_decode_cap)
    _, press, ratio = split_cache(r.cache)
    cells = _dtype(r)
    if r.info.kv_decode_cap:
        cap, every = r.info.kv_decode_cap, r.info.kv_decode_interval
        return (f" A pressed cache reads PRECISION+PRESS@RATIO+decodeN: `{r.cache}` keeps {cells} cells and "
                f"{'the whole prompt (ratio 0)' if ratio == 0 else f'{1 - ratio:.0%} of the prompt'}, and has "
                f"the `{press}` press evict each sample's cache back to {cap} cells every {every} tokens while the "
                f"chain is written (a sample holds at most {cap + every} cells, or its prompt and {every} more when "
                "the prompt is longer).")
    return (f" A pressed cache reads PRECISION+PRESS@RATIO: `{r.cache}` keeps {cells} cells and has the `{press}` press evict "
            f"{ratio:.0%} of each prompt's cells after the prefill, before the answer is written.")


def _levers(rows: Sequence[Row], refs: Mapping[str, Row | None], metric: str, name: str = "",
            head: str = "") -> tuple[str, str]:
    """At each share of the reference's bytes, the lever whose best fitting configuration loses least against
    its own engine's reference (engines differ in layout and numerics, so levers are compared by what they
    cost their engine, paired per question)."""

    def delta(r: Row) -> np.ndarray:
        ref = refs[r.engine]
        assert ref is not None
        return r.score[metric] - ref.score[metric]

    table_rows: list[list[str]] = []
    verdicts: list[str] = []
    for cap in CAPS:
        best: dict[str, Row] = {}
        for r in rows:
            ref = refs.get(r.engine)
            if ref is None or r.lever == "reference" or r.bytes.mean() > cap * ref.bytes.mean() + 1e-9:
                continue
            if r.lever not in best or delta(r).mean() > delta(best[r.lever]).mean():
                best[r.lever] = r
        if not best:
            table_rows.append([f"{cap:.0%}", "-", "-", "-"])
            continue
        ranked = sorted(best.values(), key=lambda r: -delta(r).mean())
        win = ranked[0]
        cells = "; ".join(f"{r.lever}: {r.label} {delta(r).mean():+.3f}" for r in ranked)
        if len(ranked) > 1:
            d, lo, hi = paired(delta(win), delta(ranked[1]))
            vs = f"{d:+.3f} {ci(lo, hi)} over {ranked[1].lever}"
            verdicts.append(f"at {cap:.0%} of the bytes {win.lever} leads ({win.label}; {vs}, "
                            + ("resolved)" if lo > 0 else "not resolved)"))
        else:
            vs = "the only lever that fits"
            verdicts.append(f"at {cap:.0%} of the bytes only {win.lever} fits ({win.label}, {delta(win).mean():+.3f})")
        table_rows.append([f"{cap:.0%}", win.lever, cells, vs])
    name = name or metric.upper()
    text = (f"## {head}Which lever buys the most accuracy per byte\n\n"
            "At each share of its engine's reference bytes, the best configuration of each lever that fits, by its "
            f"{name} change against its own engine's full configuration (the engines differ in layout and "
            "numerics, so a lever is judged by what it costs its engine), and the leader's paired advantage over "
            "the next lever.\n\n"
            + table(["KV bytes (of the reference)", "leader", f"best {name} change per lever",
                     "leader - next"], table_rows))
    return text, ("; ".join(verdicts) + "." if verdicts else "no lever fits below the reference's bytes.")


def _find(rows: Sequence[Row], lever: str, name: str) -> list[Row]:
    """Rows of ``lever`` whose cache is the press or precision ``name``."""
    return [r for r in rows if r.lever == lever and (split_cache(r.cache)[1] == name or split_cache(r.cache)[0] == name)]


def _holds(d: float, lo: float, hi: float, loss: bool = True) -> str:
    """Whether a paired difference shows a loss (``loss``), or whether a gain is resolved."""
    if loss:
        return "no resolved loss" if hi >= 0 else "a resolved loss"
    return "resolved" if lo > 0 else ("not resolved" if hi >= 0 else "the opposite, resolved")


def _against(ref: Row | None, cands: list[Row], metric: str) -> str:
    """Each candidate's paired change against ``ref``, cheapest first, and whether it shows a loss."""
    if ref is None or not cands:
        return "not measured (no pool)"
    parts = []
    for r in sorted(cands, key=lambda r: r.bytes.mean()):
        d, lo, hi = paired(r.score[metric], ref.score[metric])
        parts.append(f"{r.label}: {d:+.3f} {ci(lo, hi)}, {_holds(d, lo, hi)}")
    return "; ".join(parts)


def _claims(rows: Sequence[Row], refs: Mapping[str, Row | None], metric: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    tf, lc = refs.get("transformers"), refs.get("llama-cpp")

    def against(ref: Row | None, cands: list[Row]) -> str:
        return _against(ref, cands, metric)

    out.append(("SnapKV keeps long-context QA accuracy while evicting most of the prompt (Li et al. 2024)",
                against(tf, _find(rows, "press", "snapkv"))))
    out.append(("Heavy hitters keep accuracy with a fraction of the cache (TOVA, Oren et al. 2024; H2O)",
                against(tf, _find(rows, "press", "tova") + _find(rows, "press", "observed_attention"))))
    snap = {split_cache(r.cache)[2]: r for r in _find(rows, "press", "snapkv")}
    stream = {split_cache(r.cache)[2]: r for r in _find(rows, "press", "streaming_llm")}
    pairs = []
    for ratio in sorted(set(snap) & set(stream)):
        d, lo, hi = paired(snap[ratio].score[metric], stream[ratio].score[metric])
        pairs.append(f"at {ratio:g}: SnapKV - StreamingLLM {d:+.3f} {ci(lo, hi)}, {_holds(d, lo, hi, False)}")
    out.append(("A sink and a recent window lose the middle of a long context, where question-aware selection "
                "keeps the evidence (StreamingLLM against SnapKV)", "; ".join(pairs) or "not measured (no pool)"))
    out.append(("An 8-bit KV cache is about lossless (llama.cpp q8_0; KIVI)",
                against(lc, _find(rows, "precision", "q8_0"))))
    return out


def _chain_claims(rows: Sequence[Row], refs: Mapping[str, Row | None]) -> list[tuple[str, str]]:
    """The decoding-time claims, on reasoning chains (accuracy: exact match of the final number)."""
    tf, lc = refs.get("transformers"), refs.get("llama-cpp")

    def against(ref: Row | None, cands: list[Row]) -> str:
        return _against(ref, cands, "em")

    return [
        ("(this project) SnapKV's selection, by the attention of the latest tokens, applied while the chain is "
         "written keeps its accuracy (SnapKV itself compresses the prompt only, before generation)",
         against(tf, _find(rows, "press", "snapkv"))),
        ("Keeping the attention heavy hitters while generating keeps quality with a fraction of the cache (H2O, "
         "Zhang et al. 2023: a 20% cache; TOVA, Oren et al. 2024)",
         against(tf, _find(rows, "press", "tova") + _find(rows, "press", "observed_attention"))),
        ("Attention sinks plus a recent window keep long generation stable (StreamingLLM, Xiao et al. 2024); a "
         "reasoning chain also needs its question and early steps, which the window drops",
         against(tf, _find(rows, "press", "streaming_llm"))),
        ("Keys of small norm are the ones attended to, so norms alone choose what to keep (KNorm, Devoto et al. 2024)",
         against(tf, _find(rows, "press", "knorm"))),
        ("An 8-bit KV cache is about lossless (llama.cpp q8_0; KIVI)", against(lc, _find(rows, "precision", "q8_0"))),
    ]


def _figure(rows: Sequence[Row], refs: Mapping[str, Row | None], metric: str, path: Path, name: str = "") -> None:
    """Each configuration's change against its own engine's full configuration (how the page judges a lever),
    against its share of that reference's bytes; filled markers are transformers, hollow ones llama.cpp."""
    fig, ax = figure(path)
    marks = {"reference": "*", "press": "o", "precision": "s", "passages": "^", "samples": "v"}
    colors = {lever: f"C{i}" for i, lever in enumerate(marks)}
    for lever, mark in marks.items():
        for engine, hollow in (("transformers", False), ("llama-cpp", True)):
            ref = refs.get(engine)
            mine = [r for r in rows if r.lever == lever and r.engine == engine]
            if not mine or ref is None:
                continue
            pts = [(r.bytes.mean() / ref.bytes.mean(), r.score[metric].mean() - ref.score[metric].mean()) for r in mine]
            x, y = zip(*pts, strict=True)
            if lever in ("press", "precision"):  # several share one share of the bytes: name each
                names: dict[tuple[float, float], list[str]] = {}
                for r, (px, py) in zip(mine, pts, strict=True):
                    precision, press, _ = split_cache(r.cache)
                    names.setdefault((round(px, 3), round(py, 3)), []).append(press or precision)
                for (px, py), at in names.items():  # points that coincide share one label
                    ax.annotate(", ".join(at), (px, py), xytext=(5, -3),  # type: ignore[attr-defined]
                                textcoords="offset points", fontsize=7, color=colors[lever])
            label = f"{lever} ({'llama.cpp' if hollow else 'transformers'})"
            ax.scatter(x, y, marker=mark, label=label, s=60 if mark == "*" else 36,  # type: ignore[attr-defined]
                       facecolors="none" if hollow else colors[lever], edgecolors=colors[lever])
    ax.axhline(0.0, color="0.6", linewidth=0.8)  # type: ignore[attr-defined]
    ax.set_xlabel("KV bytes, share of the engine's full configuration")  # type: ignore[attr-defined]
    ax.set_ylabel(f"{name or metric.upper()} change against it (majority vote)")  # type: ignore[attr-defined]
    # outside the axes: the presses' names label their points, and a legend inside would cover some
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # type: ignore[attr-defined]
    save(fig)


def _experiment():  # type: ignore[no-untyped-def]
    from ttscale.experiments import Experiment

    shipped = shipped_runs() or [c.run_id(PREFIX) for c in grid(GRID_PRESSES, GRID_RATIOS, 10, [5, 2])]
    # each model with a chain pool gets its engine reference and precisions from the shipped GSM8K pools
    chains = [lc for prefix, pools in CHAIN_LC.items() if any(r.startswith(f"{prefix}-gsm8k-") for r in shipped)
              for lc in pools]
    default = tuple(shipped + chains)
    return Experiment("kv-eviction", "kv-eviction", default, run)


EXPERIMENT = _experiment()
