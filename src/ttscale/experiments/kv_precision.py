"""``kv-precision``: accuracy per KV-cache precision, and what the memory it saves buys.

Pools of the same problems made at f16, q8_0 and q4_0 (``ttscale sweep --kv-type``, same seeds and
waves) are grouped by task and model. Per precision: pass@1, majority@K (answers only), pass@K and
generated length, each with the difference from f16 on the same problems and a paired bootstrap
interval over problems; then what a fixed memory cap holds at each precision, and accuracy against
the KV bytes of k parallel samples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttscale.backends.kv_sizing import max_parallel_bytes
from ttscale.errors import ConfigError
from ttscale.experiments.common import BOOTSTRAP, SEED, figure, load_pools, save
from ttscale.experiments.matched_flops import take
from ttscale.experiments.page import Page, ci, table
from ttscale.planner.kv_pools import max_generation, recorded_kv_type
from ttscale.replay import estimators as est
from ttscale.replay.code_analysis import best_of_n_curve
from ttscale.replay.pool import Pool, model_info_from_record, read_run
from ttscale.store import Store
from ttscale.types import ModelInfo, split_precision

CLAIM = ("Quantizing the KV cache saves memory at little cost in quality: KIVI (Liu et al. 2024) keeps 2-bit "
         "keys (per channel) and values (per token) near-lossless on long generations; Hugging Face "
         "transformers' quantized cache reports int4 as \"roughly 2.5x memory saving\" with quality close to "
         "fp16 while int2 degrades; llama.cpp users report q8_0 as nearly lossless and q4_0 as harmful on "
         "some models. The memory buys parallel samples: under a fixed cap, more samples at lower precision "
         "may beat fewer at full precision.")
TYPES = ("f16", "q8_0", "q8_0/q4_0", "q4_0")
CAP_MIB = 64
"""The fixed memory cap of the page's "samples per cap" table and figure."""
VOTING_TASKS = ("gsm-symbolic", "gsm8k", "bigbench", "jsonl")
VISIBLE = "unit-tests"
"""The verifier score code pools carry: the visible tests' verdict (graded by all tests)."""


@dataclass
class Precision:
    run_id: str
    kv_type: str
    pool: Pool
    info: ModelInfo
    """The model's shapes at this precision."""
    max_gen: int
    longest_prompt: int
    """Longest rendered prompt of the pool (tokens): with ``max_gen``, one sample's worst-case cells."""


@dataclass
class Workload:
    task: str
    model: str
    precisions: dict[str, Precision]
    problems: list[str]
    """Problems every precision's pool holds."""
    shared: dict[str, list[str]]
    """Per precision: the problems its pool shares with f16's (each comparison is over these)."""

    @property
    def name(self) -> str:
        return f"{self.task} / {self.model}"

    @property
    def votes(self) -> bool:
        return self.task in VOTING_TASKS


def rows_of(pool: Pool, ids: list[str]) -> Pool:
    """The problems ``ids`` of ``pool`` (in that order)."""
    pos = {pid: i for i, pid in enumerate(pool.problem_ids)}
    return take(pool, [pos[i] for i in ids])


def group(store: Store, run_ids: list[str]) -> tuple[list[Workload], list[str]]:
    """The pools as workloads (task and model), each with its precisions; notes for what is missing."""
    found, notes = load_pools(store, run_ids)
    absent = [rid for rid in run_ids if rid not in found and store.get_run(rid) is None]
    missing = [f"{', '.join(f'`{r}`' for r in absent)} (not in this store)"] if absent else []
    missing += [n for n in notes if not any(n.startswith(f"`{r}`") for r in absent)]
    by: dict[tuple[str, str], dict[str, Precision]] = {}
    for rid, pool in found.items():
        rec, by_problem, _ = read_run(store, rid)
        longest = max(ss[0].prompt_tokens for ss in by_problem.values() if ss)
        kind = recorded_kv_type(rec.model)
        info = model_info_from_record(rec.model)
        if info is None:
            missing.append(f"`{rid}`: its record has no model shapes")
            continue
        k_type, v_type = split_precision(kind)
        info = dataclasses.replace(info, kv_type_k=k_type, kv_type_v=v_type)
        gen = max_generation(rec.config) or int(pool.n_tokens.max())
        slot = by.setdefault((pool.task, pool.model), {})
        if kind in slot:
            missing.append(f"`{rid}`: a second {kind} pool of {pool.task} / {pool.model} (kept `{slot[kind].run_id}`)")
            continue
        slot[kind] = Precision(rid, kind, pool, info, gen, longest)
    out = []
    for (task, model), precs in by.items():
        if "f16" not in precs or len(precs) < 2:
            missing.append(f"{task} / {model}: needs an f16 pool and another precision (has {', '.join(precs)})")
            continue
        ids = [pid for pid in precs["f16"].pool.problem_ids if all(pid in p.pool.problem_ids for p in precs.values())]
        shared = {t: [pid for pid in precs["f16"].pool.problem_ids if pid in set(p.pool.problem_ids)]
                  for t, p in precs.items()}
        k = min(p.pool.k for p in precs.values())
        for p in precs.values():
            if p.pool.k > k:
                p.pool = dataclasses.replace(p.pool, **{n: getattr(p.pool, n)[:, :k] for n in (
                    "answer", "n_tokens", "logprob", "finish_rank", "sample_tokens", "sample_flops")},
                    scores={s: v[:, :k] for s, v in p.pool.scores.items()})
        out.append(Workload(task, model, {t: precs[t] for t in TYPES if t in precs}
                            | {t: p for t, p in precs.items() if t not in TYPES}, ids, shared))
    return out, missing


def per_problem(pool: Pool, votes: bool) -> dict[str, np.ndarray]:
    """Per problem: share of correct samples, majority@K correct, any correct, mean generated tokens."""
    ok = pool.correct
    out = {"pass@1": ok.mean(axis=1), "pass@K": ok.any(axis=1).astype(float), "tokens": pool.n_tokens.mean(axis=1)}
    if votes:
        win = est.vote_winners(pool.answer, np.arange(pool.k)[None, :], [pool.k], pool.n_answers, None, pool.logprob)
        out["majority@K"] = est.winners_correct(pool.answer_correct, win)[:, 0, 0].astype(float)
    return out


def paired_delta(a: np.ndarray, b: np.ndarray, reps: int = BOOTSTRAP, seed: int = SEED) -> tuple[float, float, float]:
    """mean(a) - mean(b) over the same problems, and its 95% bootstrap interval (problems resampled together)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(reps, len(a)))
    d = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    lo, hi = np.percentile(d, [2.5, 97.5])
    return float(a.mean() - b.mean()), float(lo), float(hi)


@dataclass
class Comparison:
    """One precision against f16 on the problems both pools hold."""

    problems: list[str]
    stats: dict[str, np.ndarray]
    """This precision's per-problem figures (:func:`per_problem`)."""
    reference: dict[str, np.ndarray]
    """f16's on the same problems."""
    pass1: tuple[float, float, float] | None
    """Δ pass@1 and its 95% interval (None for f16 itself)."""
    majority: tuple[float, float, float] | None
    at_cap: float
    """Share of this precision's samples that ran to the generation cap."""


def compare(w: Workload) -> dict[str, Comparison]:
    """Every precision of ``w`` against f16, each on the problems it shares with f16's pool."""
    f16 = w.precisions["f16"]
    out = {}
    for t, p in w.precisions.items():
        ids = w.shared[t]
        mine = rows_of(p.pool, ids)
        s, ref = per_problem(mine, w.votes), per_problem(rows_of(f16.pool, ids), w.votes)
        other = t != "f16"
        out[t] = Comparison(ids, s, ref, paired_delta(s["pass@1"], ref["pass@1"]) if other else None,
                            paired_delta(s["majority@K"], ref["majority@K"]) if other and w.votes else None,
                            float((mine.n_tokens >= p.max_gen).mean()))
    return out


def curve(pool: Pool, votes: bool, n_orders: int = 64, seed: int = SEED) -> np.ndarray:
    """Accuracy at k = 1..K of what a deployment would pick: majority@k over random orders (answers);
    for code, best-of-k by the visible tests when the pool has them, else pass@k (unbiased)."""
    K = pool.k
    if not votes:
        if VISIBLE in pool.scores:
            bon = best_of_n_curve(pool.scores[VISIBLE] > 0.5, pool.correct, list(range(1, K + 1)))
            return np.array([bon[k] for k in range(1, K + 1)])
        c = pool.correct.sum(axis=1)
        return np.array([float(est.pass_at_k(K, c, k).mean()) for k in range(1, K + 1)])
    order = est.random_orders(pool.n_problems, K, n_orders, np.random.default_rng(seed))
    win = est.vote_winners(pool.answer, order, list(range(1, K + 1)), pool.n_answers, None, pool.logprob)
    return est.winners_correct(pool.answer_correct, win).mean(axis=(0, 1))


def _deltas(all_comps: dict[str, dict[str, Comparison]], t: str) -> list[tuple[str, tuple[float, float, float]]]:
    return [(name, c[t].pass1) for name, c in all_comps.items() if t in c and c[t].pass1 is not None]  # type: ignore[misc]


def anchors(all_comps: dict[str, dict[str, Comparison]]) -> str:
    """The published anchors, each against the measured pass@1 differences (workload name -> comparisons)."""
    def fmt(rows: list[tuple[str, tuple[float, float, float]]]) -> str:
        return "; ".join(f"{name} {d:+.3f} {ci(lo, hi)}" for name, (d, lo, hi) in rows)

    out = []
    q8, q4, mixed = _deltas(all_comps, "q8_0"), _deltas(all_comps, "q4_0"), _deltas(all_comps, "q8_0/q4_0")
    if q8:
        lossless = all(hi >= 0 for _, (_, _lo, hi) in q8)  # no interval entirely below zero
        bound = max(max(abs(lo), abs(hi)) for _, (_, lo, hi) in q8)
        out.append(f"**q8_0 nearly lossless** (llama.cpp users): {'holds' if lossless else 'does not hold'} here "
                   f"({fmt(q8)}; {'no loss resolved, any effect within ' + f'{bound:.2f}' if lossless else 'a loss'}).")
    if q4:
        harmful = [r for r in q4 if r[1][2] < 0]
        out.append(f"**q4_0 harmful on some models** (llama.cpp users): "
                   f"{'holds, and strongly' if harmful else 'not seen'} ({fmt(q4)}). "
                   f"**transformers' int4 close to fp16**: {'does not hold for' if harmful else 'holds for'} "
                   "llama.cpp's q4_0 on these models (transformers' quantized cache quantizes in groups of 64 and "
                   "keeps the latest 128 tokens in full precision; q4_0 puts one scale on 32 consecutive values "
                   "and keeps nothing, so its saving here is 64/18 = 3.6x, not 2.5x).")
    if mixed:
        kept = all(hi >= 0 for _, (_, _lo, hi) in mixed)
        out.append(f"**Keys at q8_0, values at q4_0** (0.41x f16's bytes): "
                   f"{'no loss resolved' if kept else 'a loss'} ({fmt(mixed)}).")
    out.append("**KIVI's 2-bit keys and values near-lossless**: not measured (llama.cpp has no 2-bit cache type). "
               "Its premise shows here: the damage is in the keys (4-bit keys garble the output while 4-bit values "
               "do not: `bench/kv_precision.py --agreement`, docs/benchmarks.md), which is why KIVI quantizes keys "
               "per channel rather than per token.")
    return "\n\n".join(out)


def run(store: Store, pools: list[str], out: Path) -> Page:
    workloads, missing = group(store, pools)
    if not workloads:
        raise ConfigError("no workload with pools at f16 and another precision: " + "; ".join(missing))
    cap = CAP_MIB * 2**20
    acc_rows, fit_rows, verdicts = [], [], []
    fig, axes = figure(out / "kv-precision.png")
    ax = axes
    colors = {"f16": "tab:blue", "q8_0": "tab:orange", "q8_0/q4_0": "tab:purple", "q4_0": "tab:green"}  # colour: precision; line: workload
    lines = ("-", "--", ":", "-.")
    all_comps: dict[str, dict[str, Comparison]] = {}
    for wi, w in enumerate(workloads):
        f16 = w.precisions["f16"]
        prompt = max(p.longest_prompt for p in w.precisions.values())
        comps = all_comps[w.name] = compare(w)
        for t, p in w.precisions.items():
            c = comps[t]
            s, ref, d1, dm, at_cap = c.stats, c.reference, c.pass1, c.majority, c.at_cap
            same = t == "f16"
            acc_rows.append([w.name, t, f"`{p.run_id}`", f"{len(c.problems)} x {p.pool.k}", f"{s['pass@1'].mean():.3f}",
                             "" if same else f"{ref['pass@1'].mean():.3f}",
                             "" if d1 is None else f"{d1[0]:+.3f} {ci(d1[1], d1[2])}",
                             f"{s['majority@K'].mean():.3f}" if w.votes else "n/a",
                             "" if same or not w.votes else f"{ref['majority@K'].mean():.3f}",
                             "" if dm is None else f"{dm[0]:+.3f} {ci(dm[1], dm[2])}",
                             f"{s['pass@K'].mean():.3f}", f"{s['tokens'].mean():.0f}", f"{at_cap:.2f}"])
            own = max_parallel_bytes(p.info, cap, prompt, p.max_gen, shared_prompt=False)
            shared = max_parallel_bytes(p.info, cap, prompt, p.max_gen, shared_prompt=True)
            fit_rows.append([w.model, t, f"{p.info.kv_bytes(1024) / 1024:,.0f}", f"{prompt} + {p.max_gen}",
                             str(own), str(shared)])
            # each curve over the problems its pool shares with f16; f16's over the largest such set
            ids = w.shared[t] if t != "f16" else max((v for k, v in w.shared.items() if k != "f16"), key=len)
            acc = curve(rows_of(p.pool, ids), w.votes)
            mib = np.array([p.info.kv_bytes((prompt + p.max_gen) * k) for k in range(1, p.pool.k + 1)]) / 2**20
            ax.plot(mib, acc, marker="o", ms=2.5, ls=lines[wi % len(lines)], color=colors.get(t),  # type: ignore[attr-defined]
                    label=f"{w.task} {w.model.replace('qwen2.5-coder-', '')} {t} ({len(ids)} problems)")
        parts = []
        for t, c in comps.items():
            if c.pass1 is None:
                continue
            (d, lo, hi), base, n = c.pass1, float(c.reference["pass@1"].mean()), len(c.problems)
            against = f"against f16's {base:.3f} on {n} problems"
            if lo <= 0 <= hi:
                size = max(abs(lo), abs(hi))
                parts.append(f"{t} {d:+.3f} {ci(lo, hi)} {against}: no difference resolved (any effect is within "
                             f"{size:.2f})")
            else:
                parts.append(f"{t} {d:+.3f} {ci(lo, hi)} {against}: {'worse' if hi < 0 else 'better'} than f16")
        verdicts.append(f"{w.name} ({f16.pool.k} samples per problem), pass@1: " + "; ".join(parts) + ".")
    ax.axvline(CAP_MIB, color="grey", lw=0.8, ls=":")  # type: ignore[attr-defined]
    ax.set_xscale("log", base=2)  # type: ignore[attr-defined]
    ax.set_xlabel("KV bytes of k parallel samples, each with its own prompt (MiB)")  # type: ignore[attr-defined]
    ax.set_ylabel("majority@k (GSM8K) / best-of-k by visible tests (HumanEval)")  # type: ignore[attr-defined]
    ax.legend(fontsize=6)  # type: ignore[attr-defined]
    save(fig)
    sections = [
        "## Against the published anchors\n\n" + anchors(all_comps),
        "## Accuracy per precision\n\n" + table(
            ["workload", "KV", "pool", "problems x k", "pass@1", "f16 on them", "Δ pass@1 vs f16 [95% CI]",
             "majority@K", "f16 on them", "Δ majority@K", "pass@K", "mean tokens", "share at the length cap"],
            acc_rows),
        f"## What {CAP_MIB} MiB of KV cache holds\n\n" + table(
            ["model", "KV", "bytes per token", "longest prompt + generation cap", "samples at once, own prompts",
             "sharing one prompt"], fit_rows),
        "![accuracy against the KV memory of k parallel samples](kv-precision.png)",
        ("Method: the pools were swept with the same seeds, waves and prompts at each precision, so sample i "
         "of a problem is drawn with the same seed everywhere (the trajectories still diverge after the first "
         "token whose distribution the cache changes). Each precision is compared with f16 on the problems both "
         "pools hold (\"f16 on them\"), with percentile intervals from 400 paired resamples of problems; in the "
         "figure each curve is over the problems its pool shares with f16 (f16's over the largest such set; "
         "the legend gives the count). Bytes are the engine's "
         "(block scales included: q8_0 34 bytes per 32 values, q4_0 18), checked against llama.cpp's own "
         "buffer sizes in tests/backends/test_kv_types.py and bench/kv_memory.py. llama.cpp has no 2-bit KV "
         "type, so KIVI's 2-bit setting is not measured here; its q4_0 is per-block symmetric 4-bit for keys "
         "and values alike (KIVI quantizes keys per channel), so it is the closest analogue of the int4 "
         "settings above, not the same method. The figure plots majority@k (GSM8K; 64 random sample orders) "
         "or best-of-k by the visible tests (HumanEval) against the KV bytes of k samples held at once, each "
         "with its own prompt (the longest) and a full-length generation: at a fixed cap (the dotted line) a "
         "quantized cache reaches further to the right."),
    ]
    if missing:
        sections.append("Not measured: " + "; ".join(missing))
    return Page("kv-precision", "KV-cache precision: accuracy, and samples per memory cap", CLAIM,
                " ".join(verdicts), sections)


def _experiment():  # type: ignore[no-untyped-def]
    from ttscale.experiments import Experiment

    pools = (*(f"{w}-{t}k16" for w in ("humaneval-qwen05", "gsm8k-qwen05", "gsm8k-qwen15") for t in ("", "q8-", "q4-")),
             "gsm8k-qwen05-q8q4-k16")  # keys at q8_0, values at q4_0
    return Experiment("kv-precision", "kv-precision", pools, run)


EXPERIMENT = _experiment()
