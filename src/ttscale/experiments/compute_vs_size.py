"""``compute-vs-size``: a small model with test-time compute against a larger one at equal inference FLOPs
(Snell et al. 2024, section 7; Liu et al. 2025, "Can 1B LLM Surpass 405B LLM?").

Per task with two models' pools: in each difficulty bin (oracle bins from the small model's pass rate,
as in the paper, and bins the planner's probe regression predicts without the reference) and at
each FLOPs level, the best of majority voting, best-of-n with a verifier and adaptive stopping on
each model within the level (:mod:`ttscale.experiments.matched_flops`); then the planner with both
models available against each model alone, held out (:mod:`ttscale.experiments.two_model_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttscale.errors import ConfigError
from ttscale.experiments.common import load_pools, save
from ttscale.experiments.matched_flops import (
    LEVEL_KS,
    N_BINS,
    PROBE,
    BinCurves,
    Cell,
    ModelPair,
    bin_curves,
    compare_bins,
    flops_per_token,
    full_cost,
    pair_pools,
    predicted_pass_rate,
    win_share,
)
from ttscale.experiments.page import Page, ci, table
from ttscale.experiments.priced_cells import priced_cells
from ttscale.experiments.two_model_plan import TwoModelPlan, plan_two_models
from ttscale.replay.curves import CurvePoint
from ttscale.replay.pool import model_info_from_record
from ttscale.replay.pricing import price_point
from ttscale.roofline import load_profile
from ttscale.store import Store

CLAIM = ("Snell et al. 2024 (\"Scaling LLM Test-Time Compute Optimally can be More Effective than Scaling Model "
         "Parameters\", section 7): in a FLOPs-matched comparison with a 14x larger model, test-time compute on the "
         "smaller model wins on easy and intermediate questions (bins of the small model's pass rate) when "
         "inference is light next to pretraining (R = inference tokens / pretraining tokens << 1), while on the "
         "hardest questions, or under a heavy inference load (R >> 1), the larger model is the better use of "
         "FLOPs. Liu et al. 2025 (\"Can 1B LLM Surpass 405B LLM?\"): with compute-optimal test-time scaling chosen "
         "per policy model and difficulty, a 1B model beats a 405B model on MATH-500 and a 0.5B model beats GPT-4o.")
PRETRAIN_TOKENS = 18e12 + 5.5e12
"""Qwen2.5 base pretraining (18T tokens, Qwen2.5 report) plus Qwen2.5-Coder's continued pretraining (5.5T
code-centric tokens, Qwen2.5-Coder report): the same for both sizes, an assumption stated on the page."""
SNELL_R = (0.16, 0.79, 22.0)
PROFILES = ("cpu-2core", "h100")
"""Hardware the oracle cells are re-priced on: this machine (calibrated) and a memory-bound GPU."""
TASK_NAMES = {"gsm-symbolic": "GSM8K", "humaneval": "HumanEval"}
SCHEMES = {"oracle": "oracle bins (the small model's pass rate)",
           "predicted": f"predicted bins (probe of {PROBE}, cross-fitted, no reference)", "all": "all shared problems"}


@dataclass
class PairResult:
    pair: ModelPair
    binned: dict[str, list[BinCurves]]
    cells: dict[str, list[Cell]]
    plan: TwoModelPlan | None
    plan_note: str
    n_params: tuple[float | None, float | None]
    large_run_problems: int
    priced: dict[str, list[Cell]]
    """Oracle-bin cells again with dollars on each profile of :data:`PROFILES` in place of FLOPs."""
    reach: dict[str, tuple[float, float, float, float]]
    """Per profile, over all shared problems: the small model's majority over its whole pool and the large
    model's one sample, each as (dollars per problem, accuracy)."""


def measure(store: Store, pools: list[str]) -> tuple[list[PairResult], list[str]]:
    """Every task with two models' pools, measured; and a note for every pool or task left out."""
    found, _ = load_pools(store, pools)
    pairs, notes = pair_pools(found)
    # the store's own error names its cache path; the page only needs the run id
    missing = [f"`{rid}` is not in this store" for rid in pools if rid not in found]
    results = []
    for pair in pairs:
        values = {"oracle": pair.small.correct.mean(axis=1),
                  "predicted": predicted_pass_rate(pair.small_full, pair.small.problem_ids),
                  "all": pair.small.correct.mean(axis=1)}
        binned = {s: bin_curves(pair, s, v) for s, v in values.items()}
        cells = {s: compare_bins(pair, b) for s, b in binned.items()}
        try:
            plan, plan_note = plan_two_models(pair), ""
        except ConfigError as e:
            plan, plan_note = None, str(e)
        params = []
        for rid in (pair.small_id, pair.large_id):
            rec = store.get_run(rid)
            n = rec.model.get("n_params") if rec is not None else None
            params.append(float(n) if isinstance(n, (int, float)) and n > 0 else None)
        big = found[pair.large_id]
        priced: dict[str, list[Cell]] = {}
        recs = [store.get_run(rid) for rid in (pair.small_id, pair.large_id)]
        small_info, large_info = (model_info_from_record(rec.model) if rec is not None else None for rec in recs)
        reach: dict[str, tuple[float, float, float, float]] = {}
        if small_info is not None and large_info is not None:
            for name in PROFILES:
                hw = load_profile(name)
                priced[name] = priced_cells(pair, binned["oracle"], (small_info, large_info), hw)
                whole = binned["all"][0]
                top = max(whole.small.curve("majority"), key=lambda p: p.k)
                one = min(whole.large.curve("majority"), key=lambda p: p.k)
                reach[name] = (price_point(top, small_info, hw).usd, top.accuracy,
                               price_point(one, large_info, hw).usd, one.accuracy)
        results.append(PairResult(pair, binned, cells, plan, plan_note, (params[0], params[1]),
                                  big.n_problems + big.dropped, priced, reach))
    return results, missing + notes


def oracle_win_share(results: list[PairResult]) -> float | None:
    """The bench figure: share of (oracle bin, FLOPs level) cells, over every task, the small model wins."""
    return win_share([c for r in results for c in r.cells["oracle"]])


def planner_gain(results: list[PairResult]) -> float | None:
    """The bench figure: mean over tasks and budget levels of the two-model policy's held-out gain."""
    g = [lv.gain for r in results if r.plan for lv in r.plan.levels if np.isfinite(lv.gain)]
    return float(np.mean(g)) if g else None


def _bin_name(bc: BinCurves, n: int) -> str:
    names = {1: ["all"], 2: ["harder", "easier"], 3: ["hard", "medium", "easy"]}.get(n, [f"bin {i + 1}" for i in range(n)])
    rng = f"{bc.lo:.2f}" if abs(bc.hi - bc.lo) < 5e-3 else f"{bc.lo:.2f}-{bc.hi:.2f}"
    return f"{names[bc.index] if bc.index < len(names) else bc.index} ({rng}, {len(bc.problems)})"


def _cells_table(r: PairResult) -> str:
    rows = []
    for scheme in ("oracle", "predicted", "all"):
        n = len(r.binned[scheme])
        for c in r.cells[scheme]:
            rows.append([scheme, _bin_name(c.bin, n), f"{r.pair.large.model}@{c.level_k}: {c.flops / 1e12:.2f}",
                         f"{c.small.label} {c.small.accuracy:.3f} ({c.small.flops / 1e12:.2f})",
                         f"{c.large.label} {c.large.accuracy:.3f} ({c.large.flops / 1e12:.2f})",
                         f"{c.diff:+.3f} {ci(*c.ci)}", c.outcome])
    return table(["bins", "bin (pass rate, problems)", "FLOPs level (TFLOPs/problem)",
                  f"{r.pair.small.model} best within (TFLOPs)", f"{r.pair.large.model} best within (TFLOPs)",
                  "small - large [95% CI]", "outcome"], rows)


@dataclass
class RatioRow:
    R: float
    factor: float
    """The small model's inference FLOPs over the large one's (one sample) when total FLOPs match."""
    budget: float
    best: CurvePoint | None
    reached: bool
    """Whether the small pool's samples can spend the whole budget."""


def ratio_rows(r: PairResult) -> list[RatioRow]:
    """Snell et al.'s total-FLOPs matching at their R values (and R -> infinity), over all shared problems."""
    ns, nl = r.n_params
    if ns is None or nl is None or not r.binned["all"]:
        return []
    s, lg, bc = r.pair.small, r.pair.large, r.binned["all"][0]
    rows = []
    for R in (*SNELL_R, float("inf")):
        factor = 1 + 3 * (1 - ns / nl) / R
        budget = factor * full_cost(lg, 1)
        pts = [p for p in bc.small.points if not p.oracle and p.flops <= budget * (1 + 1e-9)]
        best = max(pts, key=lambda p: (p.accuracy, -p.flops)) if pts else None
        rows.append(RatioRow(R, factor, budget, best, full_cost(s, s.k) >= budget * (1 - 1e-6)))
    return rows


def _ratio_section(r: PairResult) -> str:
    ns, nl = r.n_params
    all_cells = {c.level_k: c for c in r.cells["all"]}
    if ns is None or nl is None or 1 not in all_cells:
        return "Pretraining vs inference: the pools' run records lack parameter counts; not stated."
    s, lg = r.pair.small, r.pair.large
    f1 = full_cost(lg, 1)
    tok1 = float((lg.prefill_tokens + lg.sample_tokens.mean(axis=1)).mean())
    base = all_cells[1].large
    rows = []
    for row in ratio_rows(r):
        b = row.best
        rows.append([("infinity (equal inference FLOPs)" if not np.isfinite(row.R) else f"{row.R:g}"),
                     f"{row.factor:.2f}", f"{row.budget / 1e12:.2f}",
                     (f"{b.strategy}@{b.k} {b.accuracy:.3f} [{b.ci_low:.3f}, {b.ci_high:.3f}]" if b else "-")
                     + ("" if row.reached else f" (the pool's {s.k} samples cannot spend it all)"),
                     f"{base.label} {base.accuracy:.3f}"])
    pre_s, pre_l = 6 * ns * PRETRAIN_TOKENS, 6 * nl * PRETRAIN_TOKENS
    return ("## Pretraining vs inference: the ratio R\n\n"
            f"Snell et al. match total FLOPs, pretraining `6 N D_pretrain` plus inference `2 N D_inference`, and "
            f"frame the outcome by R = D_inference / D_pretrain. Assumed here: both sizes saw the same "
            f"{PRETRAIN_TOKENS / 1e12:.1f}T pretraining tokens (18T for Qwen2.5, per the Qwen2.5 report, plus 5.5T "
            f"code-centric tokens of Qwen2.5-Coder's continued pretraining, per its report); N as the cost model "
            f"counts it from the GGUF metadata ({ns / 1e6:.0f}M and {nl / 1e6:.0f}M; the reports give 0.49B and "
            f"1.54B). Pretraining then cost ~{pre_s:.2g} and ~{pre_l:.2g} FLOPs. With the larger model drawing one "
            f"sample, the smaller one's inference budget is `1 + 3 (1 - N_small / N_large) / R` times the larger "
            f"one's; the measurements above, at equal inference FLOPs, are the R -> infinity end, the one least "
            f"favourable to test-time compute. One pass over these {s.n_problems} problems with one "
            f"{lg.model} sample each processes ~{tok1 * s.n_problems:,.0f} tokens, R ~ "
            f"{tok1 * s.n_problems / PRETRAIN_TOKENS:.0e}; R = 1 would take ~{PRETRAIN_TOKENS / tok1:.1e} queries "
            f"like these. All shared problems, against {lg.model}@1 ({f1 / 1e12:.2f} TFLOPs/problem):\n\n"
            + table(["R", "small's budget / large's", "small's budget (TFLOPs)",
                     f"{s.model} best within [95% CI]", f"{lg.model} one sample"], rows))


def _plan_section(r: PairResult) -> tuple[str, str]:
    """The planner's table and its one-line verdict."""
    p, s, lg = r.plan, r.pair.small.model, r.pair.large.model
    if p is None:
        return f"Planner with both models: not run ({r.plan_note}).", f"the two-model planner was not run ({r.plan_note})"
    rows = []
    for lv in p.levels:
        bf = lv.best_fixed
        rows.append([f"{lv.budget / 1e3:.2f}", f"{lv.accuracy:.3f} {ci(*lv.ci)}", f"{lv.gflops / 1e3:.2f}",
                     f"{lv.large_share:.0%}",
                     f"{lv.single_accuracy:.3f} ({(lv.single_gflops or 0) / 1e3:.2f})"
                     if lv.single_accuracy is not None else "-",
                     *(f"{b.strategy}@{b.k} {b.accuracy:.3f} ({b.gflops / 1e3:.2f})" if b else "none fits"
                       for b in (lv.best_small, lv.best_large)),
                     f"{lv.gain:+.3f} {ci(*lv.gain_ci)}" if bf else "-",
                     f"{lv.mix_gain:+.3f} {ci(*lv.mix_gain_ci)}" if lv.mix else "-"])
    n = len(p.levels)
    wins = [lv for lv in p.levels if lv.best_fixed is not None and lv.gain > 1e-9]
    sig = [lv for lv in wins if lv.gain_ci[0] > 0]
    lose = [lv for lv in p.levels if lv.best_fixed is not None and lv.gain_ci[1] < 0]
    mix_wins = [lv for lv in p.levels if lv.mix is not None and lv.mix_gain > 1e-9]
    mix_sig = [lv for lv in mix_wins if lv.mix_gain_ci[0] > 0]
    mg = p.mean_gain
    if mix_sig and not lose:
        plain = "it does here"
    elif sig and not mix_sig:
        plain = (f"no: it is ahead of the best single fixed choice only at "
                 f"{', '.join(f'{lv.budget / 1e3:.2f}' for lv in sig)} TFLOPs, and a prompt-blind mix of the two "
                 f"models is not beaten there")
    elif sig or mix_sig:
        plain = "mixed: ahead at some budgets, behind at others"
    else:
        plain = "no significant gain over both fixed choices here"
    verdict = (f"choosing the model per prompt (the planner, probe on {s}, may switch to {lg}) beats the better of "
               f"the two fixed single-model choices at the same mean FLOPs at {len(wins)} of {n} budget levels "
               f"({len(sig)} with the 95% CI above zero, {len(lose)} significantly behind), mean gain "
               + (f"{mg:+.3f}" if mg is not None else "n/a")
               + f", and a prompt-blind random mix of fixed choices at the same FLOPs at {len(mix_wins)} of {n} "
               f"({len(mix_sig)} significantly): {plain}")
    section = ("## The planner with both models, held out\n\n"
               f"{p.problems} shared problems, cross-fitted in two halves (each policy fitted on one half, replayed "
               f"on the other; {p.n_bins} difficulty bin(s), probes 1, 2 or 4 samples of {s}); costs are FLOPs "
               "(the planner given GFLOPs where `ttscale plan` reads tokens). Fixed choices: every fixed strategy of "
               "the planner's evaluation (majority, weighted majority, best-of-n by certainty, short-1/3, adaptive) "
               "at every k on one model, the best within the policy's spend picked in hindsight; the prompt-blind mix "
               "gives each problem one of two fixed choices at random, in the proportion that spends what the "
               "policy spent (the upper hull of the fixed choices), which is what choosing per prompt has to beat "
               "to show it reads the prompt usefully.\n\n"
               + table(["budget (TFLOPs/problem)", "two-model policy [95% CI]", "spent", f"switched to {lg}",
                        f"{s}-only policy (spent)", f"best fixed {s} (TFLOPs)", f"best fixed {lg} (TFLOPs)",
                        "gain over best fixed [95% CI]", "gain over a prompt-blind mix [95% CI]"], rows)
               + ("\n\n" + "; ".join(p.notes) if p.notes else "")
               + (f"\n\nEach policy is fitted on {' or '.join(map(str, sorted(set(p.train_sizes))))} problems: too few "
                  "for its per-bin choices to carry over reliably, so a richer budget can do worse held out."
                  if p.train_sizes and min(p.train_sizes) < 20 else ""))
    return section, verdict


def _verdict(r: PairResult) -> str:
    pr = r.pair
    name = TASK_NAMES.get(pr.task, pr.task)
    parts = [f"{name}: `{pr.small_id}` ({pr.small.model}) against `{pr.large_id}` ({pr.large.model}) on the "
             f"{pr.small.n_problems} problems both hold (the {pr.large.model} pool has samples for {pr.large_total} "
             f"of its run's {r.large_run_problems} problems, the {pr.small.model} pool for {pr.small_full.n_problems})."]
    for scheme in ("oracle", "predicted"):
        cells = r.cells[scheme]
        share = win_share(cells)
        sig = sum(c.ci[0] > 0 for c in cells)
        big = sum(c.ci[1] < 0 for c in cells)
        by_bin = {bc.index: np.mean([c.diff for c in cells if c.bin is bc]) for bc in r.binned[scheme]}
        narrow = max(by_bin, key=lambda b: by_bin[b]) if by_bin else None
        parts.append(f"With {SCHEMES[scheme]}, the {pr.small.model} with test-time compute beats the "
                     f"{pr.large.model} at equal FLOPs in {sum(c.small_wins for c in cells)} of {len(cells)} "
                     f"(bin, FLOPs level) cells" + (f" (share {share:.2f})" if share is not None else "")
                     + f", {sig} with the 95% CI above zero; the {pr.large.model} is significantly ahead in {big}"
                     + (f"; the gap is narrowest in the {_bin_name(r.binned[scheme][narrow], len(by_bin))} bin "
                        f"({by_bin[narrow]:+.3f} on average)" if narrow is not None else "") + ".")
    allc = r.cells["all"]
    if allc:
        c = allc[0]
        parts.append(f"Over all shared problems at the FLOPs of one {pr.large.model} sample ({c.flops / 1e12:.2f} "
                     f"TFLOPs/problem), the {pr.small.model}'s best is {c.small.label} {c.small.accuracy:.3f} against "
                     f"{c.large.accuracy:.3f} ({c.diff:+.3f} {ci(*c.ci)}).")
    near_one = [row for row in ratio_rows(r) if 0.5 < row.R < 2 and row.best is not None and row.reached]
    if near_one and allc:
        row, b = near_one[0], near_one[0].best
        assert b is not None
        parts.append(f"Matching total FLOPs instead, at the paper's R = {row.R:g} the {pr.small.model} may spend "
                     f"{row.factor:.2f}x the {pr.large.model}'s one sample and reaches {b.accuracy:.3f} "
                     f"({b.strategy}@{b.k}) against {allc[0].large.accuracy:.3f}.")
    oc = r.cells["oracle"]
    if oc:
        top = max(oc, key=lambda c: c.diff)
        easiest = top.bin.index == max(bc.index for bc in r.binned["oracle"])
        parts.append(f"The closest cell is {_bin_name(top.bin, len(r.binned['oracle']))} at {pr.large.model}@"
                     f"{top.level_k} ({top.small.label} {top.small.accuracy:.3f} against {top.large.label} "
                     f"{top.large.accuracy:.3f}, {top.diff:+.3f} {ci(*top.ci)})"
                     + ("; the gap closes where the small model's pass rate is highest and its budget largest, the "
                        "direction the paper reports." if easiest else "."))
    sig_small = [c for c in oc if c.ci[0] > 0]
    if sig_small:
        verdict = ("The claim holds in part here: the small model wins significantly in "
                   + ", ".join(f"{_bin_name(c.bin, len(r.binned['oracle']))} at {pr.large.model}@{c.level_k}"
                               for c in sig_small) + ".")
    elif oc and not any(c.small_wins for c in oc):
        verdict = (f"The claim does not hold here: at equal inference FLOPs the {pr.large.model} is ahead in every "
                   f"cell, in the easier bins too: test-time compute on the {pr.small.model} does not make up for a "
                   f"model whose token costs {flops_ratio(pr):.1f}x more on these problems (the paper's wins against "
                   "a 14x larger model are on questions where the small model has non-trivial success, with R << 1; "
                   "here R -> infinity, see below).")
    else:
        verdict = ("Not settled by these problems: the small model is ahead on point estimates in some cells but no "
                   "interval excludes zero.")
    _, plan_verdict = _plan_section(r)
    parts.append(verdict + " Planner: " + plan_verdict + ".")
    if r.priced:
        parts.append(_priced_verdict(r))
    return " ".join(parts)


def _priced_counts(cells: list[Cell]) -> tuple[int, int, int, int]:
    """(cells, small ahead on the point estimate, small significantly ahead, large significantly ahead)."""
    return (len(cells), sum(c.small_wins for c in cells), sum(c.ci[0] > 0 for c in cells),
            sum(c.ci[1] < 0 for c in cells))


def _priced_section(r: PairResult) -> str:
    """The oracle cells in dollars per profile beside the FLOPs cells, and whether the verdict moves."""
    if not r.priced:
        return "### Re-priced on hardware\n\nNot priced: a pool's run record has no model shapes."
    pr = r.pair
    rows = [["FLOPs (the cells above)", *map(str, _priced_counts(r.cells["oracle"])), "-"]]
    detail = []
    for name, cells in r.priced.items():
        rows.append([f"dollars on {name}", *map(str, _priced_counts(cells)),
                     ", ".join(f"{c.small.label}/{c.large.label}" for c in cells[:4]) + (" ..." if len(cells) > 4 else "")])
        detail += [[name, _bin_name(c.bin, len(r.binned["oracle"])), f"{pr.large.model}@{c.level_k}: "
                    f"${c.flops * 1000:.3f}", f"{c.small.label} {c.small.accuracy:.3f} (${c.small.flops * 1000:.3f})",
                    f"{c.large.label} {c.large.accuracy:.3f} (${c.large.flops * 1000:.3f})",
                    f"{c.diff:+.3f} {ci(*c.ci)}"] for c in cells]
    return ("### Re-priced on hardware (roofline, dollars per 1,000 problems)\n\n"
            "The oracle-bin cells with each point priced on a hardware profile (`ttscale hardware`): one prefill per "
            "problem, the point's samples decoded together, each model by its own shapes; the level is the large "
            "model's majority@k in dollars. Counts of cells:\n\n"
            + table(["currency", "cells", "small ahead", "small sig. ahead", "large sig. ahead",
                     "entries (small/large)"], rows) + "\n\n"
            + table(["profile", "bin (pass rate, problems)", "dollar level (per 1,000)", f"{pr.small.model} best within",
                     f"{pr.large.model} best within", "small - large [95% CI]"], detail) + "\n\n" + _priced_verdict(r))


def _priced_verdict(r: PairResult) -> str:
    pr = r.pair
    flops = _priced_counts(r.cells["oracle"])
    parts = []
    for name, cells in r.priced.items():
        n, ahead, sig, big = _priced_counts(cells)
        if n == 0:
            s_usd, s_acc, l_usd, l_acc = r.reach[name]
            parts.append(f"on {name} no bin has a dollar level both models can fill, because there dollars hardly "
                         f"depend on the model or on k (a decode step of models this small costs the step's fixed "
                         f"overhead, and samples decode together): the {pr.small.model}'s majority over its whole "
                         f"pool of {pr.small.k} samples costs ${s_usd * 1000:.3f} per 1,000 problems for "
                         f"{s_acc:.3f}, one {pr.large.model} sample ${l_usd * 1000:.3f} for {l_acc:.3f}; at about "
                         f"equal dollars the larger model is the better buy")
            continue
        same = (sig > 0) == (flops[2] > 0) and (big > 0) == (flops[3] > 0)
        parts.append(f"on {name} the {pr.small.model} is ahead in {ahead} of {n} dollar-matched cells ({sig} "
                     f"significantly, the {pr.large.model} in {big}): the FLOPs-matched verdict "
                     + ("holds" if same else "changes"))
    return ("Priced on hardware instead of FLOPs, " + "; ".join(parts) + f" (FLOPs: {flops[1]} of {flops[0]} ahead, "
            f"{flops[2]} significantly, the {pr.large.model} in {flops[3]}).")


def flops_ratio(pair: ModelPair) -> float:
    return flops_per_token(pair.large) / flops_per_token(pair.small)


def _figure(results: list[PairResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(r, s) for r in results for s in ("oracle", "predicted")]
    cols = max(len(r.binned[s]) for r, s in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.6 * cols, 3.0 * len(rows)), dpi=100, squeeze=False)
    fig.path = path  # type: ignore[attr-defined]
    styles = {"majority": ("-", "o"), "adaptive": (":", "^")}  # best-of-n: dashed squares
    for ri, (r, scheme) in enumerate(rows):
        for ci_, ax in enumerate(axes[ri]):
            if ci_ >= len(r.binned[scheme]):
                ax.axis("off")
                continue
            bc = r.binned[scheme][ci_]
            for curves, color, model in ((bc.small, "tab:blue", r.pair.small.model),
                                         (bc.large, "tab:orange", r.pair.large.model)):
                for name in curves.strategies:
                    pts = curves.curve(name)
                    ls, mk = styles.get(name, ("--", "s"))
                    ax.plot([p.flops / 1e12 for p in pts], [p.accuracy for p in pts], ls, color=color, marker=mk,
                            ms=2.5, lw=1, label=f"{model} {name}")
            for c in r.cells[scheme]:
                if c.bin is bc:
                    ax.axvline(c.flops / 1e12, color="grey", lw=0.6, ls=":")
            ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{TASK_NAMES.get(r.pair.task, r.pair.task)} {scheme}: {_bin_name(bc, len(r.binned[scheme]))}",
                         fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_xlabel("TFLOPs per problem", fontsize=7)
            ax.set_ylabel("accuracy", fontsize=7)
    axes[0][0].legend(fontsize=5.5, loc="upper left")
    save(fig)


def run(store: Store, pools: list[str], out: Path) -> Page:
    results, notes = measure(store, pools)
    if not results:
        raise ConfigError("no task with two models' pools of the same problems: " + "; ".join(notes))
    _figure(results, out / "compute-vs-size.png")
    sections = []
    for r in results:
        plan_sec, _ = _plan_section(r)
        sections += [f"## {TASK_NAMES.get(r.pair.task, r.pair.task)}: matched-FLOPs cells\n\n" + _cells_table(r),
                     _priced_section(r), _ratio_section(r), plan_sec]
    sections.append("![accuracy vs FLOPs per bin, both models](compute-vs-size.png)")
    sections.append(
        f"Method: FLOPs are the pools' own (the cost model: prompt prefilled once per problem, each sample's decode "
        f"at its positions, from each model's shapes). A FLOPs level is the large model's mean FLOPs per problem at "
        f"k = {', '.join(map(str, LEVEL_KS))} samples in the bin (levels beyond the small model's whole pool in that bin "
        f"are left out); each model's entry is its most accurate of majority "
        f"voting, best-of-n with a verifier (`unit-tests` where both pools have it, else the free `certainty`) and "
        f"adaptive consistency (Beta rule, threshold 0.95) at any k whose expected FLOPs stay within the level. "
        f"Accuracies are replay expectations over k-subsets of the stored samples. Oracle bins: equal-count quantile bins ({N_BINS} asked, tied pass "
        f"rates kept together) of the small model's pass rate over its samples, as Snell et al. bin by the base "
        f"model's; predicted bins: the planner's probe-feature ridge regression ({PROBE} samples of the small model), "
        f"each problem predicted by a fit on the small pool's problems outside its fold (5 folds). Intervals: 95% "
        f"percentile bootstraps over the bin's problems (400 resamples), paired for differences. Limits: the best "
        f"strategy on each side is picked on the same problems it is scored on (both sides, so the difference is "
        f"fairer than either accuracy); oracle bins read the small model's own samples, which pins its accuracy in "
        f"the pass-rate-0 bin at 0 and flatters it in the easiest; bins hold few problems while the large model's "
        f"pool is partial, so most intervals are wide.")
    verdict = " ".join(_verdict(r) for r in results) + (" Not measured: " + "; ".join(notes) + "." if notes else "")
    return Page("compute-vs-size", "Compute vs size: a small model with test-time compute against a larger one at "
                "equal FLOPs (Snell et al. 2024; Can 1B LLM Surpass 405B LLM?)", CLAIM, verdict, sections)


def _experiment():  # type: ignore[no-untyped-def]
    from ttscale.experiments import Experiment

    return Experiment("compute-vs-size", "compute vs size",
                      ("gsm8k-qwen05-k16", "gsm8k-qwen15-k16", "humaneval-qwen05-k16", "humaneval-qwen15-k16"), run)


EXPERIMENT = _experiment()
