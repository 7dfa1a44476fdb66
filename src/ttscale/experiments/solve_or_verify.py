"""``solve-or-verify``: self-consistency against best-of-n with an LLM judge at matched compute (Singhi et
al. 2025, "When To Solve, When To Verify"), from a pool the judge scored after the fact (``ttscale pool
score``: scores and the judge's own tokens and FLOPs per sample). The accounting is
:mod:`ttscale.experiments.verify_budget`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ttscale.errors import StoreError
from ttscale.experiments.common import BOOTSTRAP
from ttscale.experiments.deepconf import within_problem_auroc
from ttscale.experiments.page import Page, ci, table
from ttscale.experiments.verify_budget import (
    ACCOUNTING_NAMES,
    ACCOUNTINGS,
    Matched,
    compare,
    cost_per_solution,
    judge_cost_per_solution,
    match_text,
)
from ttscale.replay.curves import CurveSpec, compute_curves
from ttscale.replay.pool import Pool, model_info_from_record, pool_from_samples, read_run, task_equivalence
from ttscale.run.scoring import cost_key, paid_scores
from ttscale.store import Store
from ttscale.types import Sample

CLAIM = ("When To Solve, When To Verify (Singhi et al. 2025): at a fixed inference budget, counted as "
         "C = S (1 + lambda V) solutions for S solutions each verified V times by a generative verifier "
         "(GenRM: V verification chains, score = mean P(\"Yes\")), with lambda = tokens per verification / tokens "
         "per solution, self-consistency (majority over S solutions, V = 0) is more compute-efficient than "
         "best-of-S with GenRM for most practical budgets: GenRM first matches SC after up to 8x the compute and "
         "needs much more to beat it, and compute-optimal budgets grow the number of solutions faster than the "
         "number of verifications (S_opt ~ C^0.57, V_opt ~ C^0.39). Measured on MATH, AIME24 and GPQA-Diamond "
         "with Llama-3.1-8B, Qwen-2.5-7B and larger models.")
PAPER_MULTIPLE = 8.0
METHODS = {"best-of-n": "best-of-n", "weighted": "weighted-best-of-n"}
"""Best-of-S' by the judge's score (the paper's GenRM), and the judge's scores summed per answer."""
ROWS_AT = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
N_ORDERS = 64


def how_to_score(rid: str) -> str:
    store = "runs/judge.sqlite"
    return (f"`ttscale pool import src/ttscale/pools/{rid}.jsonl.gz --store {store}`, then "
            f"`ttscale pool score {rid} --store {store} --model qwen2.5-coder-1.5b --limit-problems 30 "
            f"--samples-per-problem 8` (the 1.5B judge) and `ttscale pool score {rid} --store {store} --model "
            f"qwen2.5-coder-0.5b --limit-problems 60 --samples-per-problem 8` (the self-judge), then "
            f"`ttscale experiment solve-or-verify --store {store}` (or `ttscale pool export {rid} --store {store} "
            f"-o src/ttscale/pools/{rid}.jsonl.gz` to ship the scores)")


@dataclass
class JudgeResult:
    rid: str
    name: str
    model: str
    verifications: int
    self_judge: bool
    problems: int
    S: int
    """Judged samples per problem (the first S of each)."""
    K: int
    """Self-consistency's samples per problem."""
    sc: np.ndarray
    sc_band: tuple[np.ndarray, np.ndarray]
    genrm: dict[str, np.ndarray]
    policy_cost: dict[str, float]
    judge_cost: dict[str, float]
    auroc: float
    matched: dict[tuple[str, str], Matched] = field(default_factory=dict)

    def unit(self, accounting: str) -> float:
        return 1.0 + self.judge_cost[accounting] / max(self.policy_cost[accounting], 1e-12)


def judged_subsets(by_problem: dict[str, list[Sample]]) -> dict[str, tuple[list[str], int]]:
    """For each paid score: the problems whose first S samples all carry it, and S (the most common such
    prefix length over the problems it scored, ties to the larger)."""
    names = paid_scores({n for ss in by_problem.values() for s in ss for n in s.scores})
    out = {}
    for name in names:
        prefix = {}
        for pid, ss in by_problem.items():
            n = 0
            for s in sorted(ss, key=lambda s: s.index):
                if name not in s.scores:
                    break
                n += 1
            prefix[pid] = n
        counts = Counter(n for n in prefix.values() if n > 0)
        if not counts:
            continue
        S = max(counts, key=lambda n: (counts[n], n))
        out[name] = ([pid for pid, n in prefix.items() if n >= S], S)
    return out


def _v_from_name(name: str) -> int:
    """V from a default score name (``judge-MODEL-v4``) when the score has no note; else 1."""
    tail = name.rsplit("-v", 1)[-1]
    return int(tail) if tail.isdigit() else 1


def measure(store: Store, rid: str) -> tuple[list[JudgeResult], str]:
    """Every judge that scored pool ``rid``, against self-consistency on the problems it judged."""
    rec, by_problem, task = read_run(store, rid)
    info, equiv = model_info_from_record(rec.model), task_equivalence(task)
    policy = str(rec.model.get("name", ""))
    notes = store.notes(rid, "score:")
    results = []
    for name, (pids, S) in judged_subsets(by_problem).items():
        rows = {pid: by_problem[pid] for pid in pids}
        K = min(len(ss) for ss in rows.values())
        if K < 2 or S < 1:
            continue
        full: Pool = pool_from_samples(rows, info=info, k=K, run_id=rid, task=task, model=policy, equivalent=equiv)
        judged: Pool = pool_from_samples({p: sorted(ss, key=lambda s: s.index)[:S] for p, ss in rows.items()},
                                         info=info, k=S, run_id=rid, task=task, model=policy, equivalent=equiv)
        if judged.problem_ids != full.problem_ids:  # problems without a reference drop from both alike
            continue
        sc_curves = compute_curves(full, [CurveSpec("majority", "majority")], list(range(1, K + 1)),
                                   n_orders=N_ORDERS, n_bootstrap=BOOTSTRAP)
        specs = [CurveSpec(m, kind, score=name) for m, kind in METHODS.items()]
        g_curves = compute_curves(judged, specs, list(range(1, S + 1)), n_orders=N_ORDERS, n_bootstrap=BOOTSTRAP)
        pts = sc_curves.curve("majority")
        note = notes.get(f"score:{name}", {})
        model = str(note.get("model") or "?")
        V = int(note.get("verifications") or _v_from_name(name))
        jc = judge_cost_per_solution(*(judged.scores[cost_key(name, f)] for f in ("prefilled", "generated", "flops")))
        res = JudgeResult(rid, name, model, V, model == policy, full.n_problems, S, K,
                          sc_curves.per_problem["majority"], (np.array([p.ci_low for p in pts]),
                                                              np.array([p.ci_high for p in pts])),
                          {m: g_curves.per_problem[m] for m in METHODS},
                          cost_per_solution(full.n_tokens, full.sample_tokens, full.sample_flops), jc,
                          within_problem_auroc(judged.scores[name], judged.correct))
        for m in METHODS:
            for a in ACCOUNTINGS:
                res.matched[(m, a)] = compare(m, a, res.unit(a), res.sc, res.genrm[m], list(range(1, K + 1)),
                                              reps=BOOTSTRAP)
        results.append(res)
    return results, policy


def _who(r: JudgeResult) -> str:
    return f"`{r.name}` ({'self-judge: ' if r.self_judge else ''}{r.model} judging, V = {r.verifications})"


def _crossover_text(m: Matched, K: int) -> str:
    x = m.crossover
    if x is None:
        return f"no crossover within {K} solutions' compute (verification is not ahead at the largest budget)"
    if m.rows and x == m.rows[0].budget:
        return f"verification is ahead (point estimates) at every budget from the first it can run ({x:g})"
    return f"crossover at {x:g} solutions' compute (verification ahead from there to {K}, point estimates)"


def _verdict(r: JudgeResult) -> str:
    m = r.matched[("best-of-n", "flops")]
    g, sc_sig, x = m.first_significant, m.sc_significant, m.crossover
    sc_at = ", ".join(f"{b:g}" for b in sc_sig[:6]) + (" ..." if len(sc_sig) > 6 else "")
    if g is not None and not (sc_sig and min(sc_sig) < g):
        word = f"does not hold here: verification is significantly ahead already at {g:g} solutions' compute"
    elif g is None and not sc_sig:
        word = "cannot be decided here: neither is significantly ahead at any budget"
    elif x is None:
        word = f"holds here: self-consistency is as good or better at every budget (significantly at {sc_at})"
    else:
        word = (f"holds here in its shape: self-consistency leads at the low budgets (significantly at {sc_at}) and "
                f"verification's point estimate leads only from {x:g}"
                + (f", significantly from {g:g}" if g is not None else ", never significantly"))
    mult = (f"it reaches self-consistency's best accuracy at {m.match_multiple:.2g}x the compute SC needs for it"
            if m.match_multiple is not None else
            f"none of its points reaches self-consistency's best accuracy (SC@{m.sc_best_cost:g}; best-of-n's "
            f"points go to {m.top_cost:.3g} solutions' compute)")
    last = m.rows[-1] if m.rows else None
    at_k = (f"At {last.budget:g} solutions' compute self-consistency scores {last.sc:.3f} "
            f"{ci(r.sc_band[0][int(last.budget) - 1], r.sc_band[1][int(last.budget) - 1])} and best-of-"
            f"{last.solutions:.2g} by the judge {last.genrm:.3f}: {last.diff:+.3f} {ci(*last.ci)}. " if last else "")
    free = r.matched[("best-of-n", "generated")]
    free_txt = ("; even counting only generated tokens (the paper's lambda"
                + (", zero for a judge that generates nothing" if r.judge_cost["generated"] == 0 else "")
                + f", 1 + lambda V = {free.unit:.2f}), " + _crossover_text(free, r.K))
    return (f"{_who(r)} on {r.problems} problems of `{r.rid}` (first {r.S} of {r.K} samples judged; within-problem "
            f"AUROC of its score {r.auroc:.2f}): one solution plus its verification costs {r.unit('flops'):.2f} "
            f"solutions in FLOPs ({r.unit('tokens'):.2f} in processed tokens). In FLOPs, best-of-n by the judge "
            f"against self-consistency: {_crossover_text(m, r.K)}; {mult} (the paper: up to {PAPER_MULTIPLE:g}x). "
            f"{at_k}The claim {word}{free_txt}.")


def _rows_table(r: JudgeResult) -> str:
    cols = [("best-of-n", a) for a in ACCOUNTINGS] + [("weighted", "flops")]
    budgets = sorted({row.budget for c in cols for row in r.matched[c].rows if row.budget in ROWS_AT})
    out = []
    for b in budgets:
        sc_i = int(b) - 1
        line = [f"{b:g}", f"{r.sc[:, sc_i].mean():.3f} {ci(r.sc_band[0][sc_i], r.sc_band[1][sc_i])}"]
        for c in cols:
            row = next((x for x in r.matched[c].rows if x.budget == b), None)
            line.append(f"S'={row.solutions:.2g}: {row.genrm:.3f}, {row.diff:+.3f} {ci(*row.ci)}" if row else "-")
        out.append(line)
    head = ["budget (solutions)", "SC@budget [95% CI]",
            *(f"{m} by judge, {ACCOUNTING_NAMES[a]}: acc, vs SC [95% CI]" for m, a in cols)]
    return table(head, out)


def _summary_table(r: JudgeResult) -> str:
    out = []
    for (m, a), x in r.matched.items():
        mult = match_text(x)
        out.append([m, ACCOUNTING_NAMES[a], f"{x.unit:.2f}", f"{(x.unit - 1) / r.verifications:.3f}",
                    f"{x.crossover:g}" if x.crossover is not None else "none",
                    f"{x.first_significant:g}" if x.first_significant is not None else "none",
                    ", ".join(f"{b:g}" for b in x.sc_significant) or "none", mult])
    return table(["method", "accounting", "1 + lambda V", "lambda", "crossover (solutions)",
                  "first significant verify win", "budgets where SC is significantly ahead",
                  "compute to match SC's best"], out)


def _cost_table(r: JudgeResult) -> str:
    rows = [[ACCOUNTING_NAMES[a], f"{r.policy_cost[a]:,.4g}", f"{r.judge_cost[a]:,.4g}", f"{r.unit(a):.3f}"]
            for a in ACCOUNTINGS]
    return table(["accounting", "policy: one solution", "judge: one solution's V verifications",
                  "1 + lambda V"], rows)


def _beyond_table(r: JudgeResult) -> str:
    m = r.matched[("best-of-n", "flops")]
    if not m.beyond:
        return ""
    rows = [[str(b.solutions), f"{b.cost:.1f}", f"{b.genrm:.3f}", f"{b.diff:+.3f} {ci(*b.ci)}"] for b in m.beyond]
    return (f"Best-of-n by the judge where it costs more than the pool's {r.K} solutions (FLOPs), against "
            f"SC@{r.K} (SC's accuracy at larger budgets is not measured; where it keeps rising, these differences "
            "flatter verification):\n\n" + table(["S'", "compute (solutions)", "best-of-n", f"vs SC@{r.K} [95% CI]"],
                                                 rows))


def _figure(path: Path, results: list[JudgeResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(results), figsize=(6.0 * len(results), 4.6), dpi=110, squeeze=False)
    styles = {("best-of-n", "flops"): ("s-", "C1"), ("best-of-n", "tokens"): ("s--", "C2"),
              ("best-of-n", "generated"): ("s:", "C3"), ("weighted", "flops"): ("^-", "C4")}
    for ax, r in zip(axes[0], results, strict=True):
        ks = np.arange(1, r.K + 1)
        ax.plot(ks, r.sc.mean(axis=0), "o-", color="black", ms=3, label="self-consistency")
        ax.fill_between(ks, r.sc_band[0], r.sc_band[1], color="black", alpha=0.12)
        for (m, a), (fmt, color) in styles.items():
            x = r.unit(a) * np.arange(1, r.S + 1)
            ax.plot(x, r.genrm[m].mean(axis=0), fmt, color=color, ms=3, label=f"{m} by judge, {ACCOUNTING_NAMES[a]}")
        ax.axvline(r.K, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{r.name} on {r.problems} problems", fontsize=9)
        ax.set_xlabel("compute per problem, in the policy's solutions: S (1 + lambda V)")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path)
    plt.close(fig)


METHOD = (
    "## Method\n\n"
    "The judge (`ttscale pool score`, the `judge` verifier) continues the policy's own conversation: the question, "
    "the stored solution as the assistant's turn, then \"Is the solution above correct? Answer Yes or No.\"; with "
    "V = 1 the score is P(Yes) read from the next-token distribution at once (no chain is generated), with V > 1 "
    "it is the mean P(Yes) after each of V sampled verification chains (GenRM-Base style: an instruction-tuned "
    "model, not fine-tuned as a verifier). Its cost per sample is stored with the score: each judge call's tokens "
    "and FLOPs split over the call's solutions by their judge prompt lengths. Budgets are in the policy's "
    "solutions: self-consistency with S samples costs S, best-of-S' by the judge S' (1 + lambda V), with "
    "lambda V the judge's mean cost per solution over the policy's mean cost per solution, in generated tokens "
    "(the paper's lambda = T_V / T_S), processed tokens (the judge must prefill every solution it reads) and "
    "FLOPs (each model's own; the policy's prompt is prefilled once by both and left out). A fractional S' is "
    "the mix of its neighbours; past its largest point a method holds it. Self-consistency is the replay's "
    f"majority vote over random k-subsets of all the pool's samples of the judged problems ({N_ORDERS} "
    "orderings, exact where enumerable); best-of-S' is exact over subsets of the judged samples (the first S of "
    "each problem, a random sample of the same distribution, so both estimate expectations under the same "
    "policy); 'weighted' sums the judge's scores per answer. Intervals: 95% percentile bootstraps over problems "
    f"({BOOTSTRAP} resamples), paired for differences. The crossover is the smallest budget from which "
    "verification's point estimate stays ahead through the largest budget; 'compute to match' is the compute "
    "best-of-n needs to reach SC's best accuracy over the compute SC needs for it (the paper's 8x). Limits: "
    "budgets end at the pool's K samples, so the paper's large-budget regime (where it finds GenRM ahead) is "
    "out of reach; the judges are small, untuned models; few problems, wide intervals.")


def run(store: Store, pools: list[str], out: Path) -> Page:
    results: list[JudgeResult] = []
    notes: list[str] = []
    for rid in pools:
        try:
            found, _ = measure(store, rid)
        except StoreError as e:
            notes.append(f"`{rid}` is not usable here ({e})")
            continue
        if not found:
            notes.append(f"`{rid}` has no judge scores yet; make them with {how_to_score(rid)}")
        results += found
    title = ("Solve or verify: self-consistency against an LLM judge's best-of-n at matched compute "
             "(When To Solve, When To Verify)")
    if not results:
        return Page("solve-or-verify", title, CLAIM, "Not measured: " + "; ".join(notes) + ".", [METHOD])
    _figure(out / "solve-or-verify.png", results)
    sections = []
    for r in results:
        part = [f"## {_who(r)}", "", _cost_table(r), "", _summary_table(r), "",
                f"Accuracy at each budget (S' = solutions best-of-n draws there):\n\n{_rows_table(r)}"]
        if b := _beyond_table(r):
            part += ["", b]
        sections.append("\n".join(part))
    sections.append("![accuracy vs compute, self-consistency and best-of-n by the judge](solve-or-verify.png)")
    sections.append(METHOD)
    verdict = " ".join(_verdict(r) for r in results) + (" " + "; ".join(notes) + "." if notes else "")
    return Page("solve-or-verify", title, CLAIM, verdict, sections)


def _experiment():  # type: ignore[no-untyped-def]
    from ttscale.experiments import Experiment

    return Experiment("solve-or-verify", "solve or verify", ("gsm8k-qwen05-k16",), run)


EXPERIMENT = _experiment()
