"""``deepconf``: confidence-filtered, confidence-weighted voting and its online early stop (Fu et al.
2025, "Deep Think with Confidence") against self-consistency and adaptive consistency, from the pools'
per-token log-probs (:mod:`ttscale.replay.confidence`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttscale.errors import ConfigError, StoreError
from ttscale.experiments.common import BOOTSTRAP, bootstrap
from ttscale.experiments.page import Page, ci, table
from ttscale.replay import confidence as conf
from ttscale.store import Store
from ttscale.strategies.deepconf import CONFIDENCE_PROXY

CLAIM = ("Deep Think with Confidence (Fu et al. 2025): score each reasoning trace by the model's own token "
         "confidence over a sliding window; offline, keep the most confident traces and vote weighted by "
         "confidence; online, calibrate a bar on a few warm-up traces, stop any trace whose windowed confidence "
         "falls below it, and stop sampling once the weighted vote is settled. Against self-consistency at the "
         "same budget this generates 53-85% fewer tokens at equal or better accuracy: up to 84.7% fewer on "
         "AIME 2025 with 512 traces and 16 warm-up traces, 52.9% fewer in the reference code's BRUMO25 run; "
         "DeepConf-low (keep the top 10%) saves the most, DeepConf-high (the top 90%) is the safer one.")
WINDOW = 64
"""Tokens per group: traces here are ~300 tokens, so this is ~20% of one (the paper: 2048 of many thousand)."""
WARMUP = 4
THRESHOLD = 0.95
N_ORDERS = 128
PAPER = (0.53, 0.85)
EQUAL = 0.01
"""Equal accuracy: at most this far below SC@K, and not significantly below it."""
MATCH_TOL = 0.005
"""Accuracies within half a point count as matched (the orderings' Monte Carlo noise is of that order)."""


@dataclass(frozen=True)
class Method:
    name: str
    replay: Callable[[conf.ConfidencePool, np.ndarray], conf.Replayed]
    family: str


def methods(K: int) -> list[Method]:
    """The compared procedures, all with at most K traces per problem."""
    def online(keep: float, wave: int | None) -> Callable[[conf.ConfidencePool, np.ndarray], conf.Replayed]:
        settings = conf.OnlineSettings(warmup=WARMUP, keep=keep, threshold=THRESHOLD, wave=wave)
        return lambda cp, o: conf.online(cp, o, settings)

    return [
        Method(f"adaptive consistency (Beta, {THRESHOLD})", lambda cp, o: conf.adaptive(cp.pool, o, THRESHOLD), "ac"),
        Method("DeepConf-low offline (top 10%)", lambda cp, o: conf.offline(cp, o, K, 0.1), "offline"),
        Method("DeepConf-high offline (top 90%)", lambda cp, o: conf.offline(cp, o, K, 0.9), "offline"),
        Method("DeepConf-low online, one wave", online(0.1, None), "online"),
        Method("DeepConf-high online, one wave", online(0.9, None), "online"),
        Method("DeepConf-low online, one at a time", online(0.1, 1), "online"),
        Method("DeepConf-high online, one at a time", online(0.9, 1), "online"),
    ]


def _sc_tokens_at(acc: float, sc_acc: np.ndarray, sc_tok: np.ndarray) -> tuple[float, bool]:
    """Generated tokens self-consistency needs for accuracy ``acc``, interpolated along its k-curve
    (its running best, so a dip at some k is never the answer); (tokens at K, False) if it never gets there."""
    env = np.maximum.accumulate(sc_acc)
    hit = np.flatnonzero(env >= acc - MATCH_TOL)
    if not hit.size:
        return float(sc_tok[-1]), False
    i = int(hit[0])
    if i == 0:
        return float(sc_tok[0]), True
    frac = min(1.0, (acc - env[i - 1]) / max(env[i] - env[i - 1], 1e-12))
    return float(sc_tok[i - 1] + frac * (sc_tok[i] - sc_tok[i - 1])), True


def within_problem_auroc(lowest: np.ndarray, correct: np.ndarray) -> float:
    """Mean over problems with both right and wrong samples of P(a right sample's confidence > a wrong one's)."""
    vals = []
    for x, y in zip(lowest, correct, strict=True):
        pos, neg = x[y], x[~y]
        if pos.size and neg.size:
            d = pos[:, None] - neg[None, :]
            vals.append(float((d > 0).mean() + 0.5 * (d == 0).mean()))
    return float(np.mean(vals)) if vals else math.nan


Interval = tuple[float, float, float]
"""(estimate, 95% low, 95% high)."""


@dataclass
class Outcome:
    """One procedure on one pool, against self-consistency@K on the same orderings."""

    name: str
    family: str
    acc: Interval
    dacc: Interval
    """Accuracy minus SC@K's."""
    tokens: float
    traces: float
    saved: Interval
    """1 - its generated tokens / SC@K's."""
    need: float
    """Generated tokens self-consistency needs for the same accuracy (SC@K's if it never gets there)."""
    reached: bool
    matched: Interval
    """1 - its tokens / ``need``."""


@dataclass
class PoolResult:
    rid: str
    model: str
    P: int
    K: int
    sc_acc: np.ndarray
    """(K,) self-consistency@k accuracy, k = 1..K."""
    sc_tok: np.ndarray
    sc_ci: tuple[float, float]
    outcomes: list[Outcome]

    def rows(self) -> list[list[str]]:
        K = self.K
        rows = [[f"self-consistency@{K}", f"{self.sc_acc[-1]:.3f} {ci(*self.sc_ci)}", "-", f"{self.sc_tok[-1]:.0f}",
                 f"{float(K):.1f}", "-", "-", "-"]]
        for o in self.outcomes:
            lower = "" if o.reached else ">= "
            rows.append([o.name, f"{o.acc[0]:.3f} {ci(*o.acc[1:])}", f"{o.dacc[0]:+.3f} {ci(*o.dacc[1:])}",
                         f"{o.tokens:.0f}", f"{o.traces:.1f}", f"{o.saved[0]:.0%} {ci(*o.saved[1:], 2)}",
                         ("" if o.reached else "> ") + f"{o.need:.0f}",
                         f"{lower}{o.matched[0]:.0%} {ci(*o.matched[1:], 2)}"])
        return rows


def _interval(P: int, stat: Callable[[np.ndarray], float]) -> Interval:
    return (stat(np.arange(P)), *bootstrap(P, stat))


def _measure(rid: str, cp: conf.ConfidencePool) -> PoolResult:
    pool = cp.pool
    P, K = pool.n_problems, pool.k
    order = conf.orderings(pool, N_ORDERS)
    sc = [conf.self_consistency(pool, order, k) for k in range(1, K + 1)]
    sc_acc = np.stack([r.accuracy for r in sc])  # (K, P)
    sc_tok = np.stack([r.mean_tokens for r in sc])
    base_acc, base_tok = sc_acc[-1], sc_tok[-1]
    outcomes = []
    for m in methods(K):
        r = m.replay(cp, order)
        acc, tok = r.accuracy, r.mean_tokens

        def mean_acc(idx: np.ndarray, acc: np.ndarray = acc) -> float:
            return float(acc[idx].mean())

        def gain(idx: np.ndarray, acc: np.ndarray = acc) -> float:
            return float((acc[idx] - base_acc[idx]).mean())

        def saved(idx: np.ndarray, tok: np.ndarray = tok) -> float:
            return 1.0 - float(tok[idx].sum() / base_tok[idx].sum())

        def matched(idx: np.ndarray, acc: np.ndarray = acc, tok: np.ndarray = tok) -> float:
            need, _ = _sc_tokens_at(float(acc[idx].mean()), sc_acc[:, idx].mean(axis=1), sc_tok[:, idx].mean(axis=1))
            return 1.0 - float(tok[idx].mean()) / need

        need, reached = _sc_tokens_at(float(acc.mean()), sc_acc.mean(axis=1), sc_tok.mean(axis=1))
        outcomes.append(Outcome(m.name, m.family, _interval(P, mean_acc), _interval(P, gain), float(tok.mean()),
                                float(r.traces.mean()), _interval(P, saved), need, reached, _interval(P, matched)))
    sc_ci = bootstrap(P, lambda idx: float(base_acc[idx].mean()))
    return PoolResult(rid, pool.model, P, K, sc_acc.mean(axis=1), sc_tok.mean(axis=1), sc_ci, outcomes)


def _verdict(res: PoolResult) -> str:
    K = res.K
    online = [o for o in res.outcomes if o.family == "online"]
    # equal accuracy at the same budget: within EQUAL of SC@K and not significantly below it
    equal = [o for o in online if o.dacc[0] >= -EQUAL and o.dacc[2] >= 0]
    out = (f"`{res.rid}` ({res.model}, {res.P} problems x {K}): self-consistency@{K} scores "
           f"{res.sc_acc[-1]:.3f} with {res.sc_tok[-1]:.0f} generated tokens per problem. ")
    if equal:
        b = max(equal, key=lambda o: o.saved[0])
        s, s_lo, s_hi = b.saved
        word = ("holds here" if s_lo >= PAPER[0] else "does not hold here" if s_hi < PAPER[0]
                else "cannot be decided here")
        out += (f"At equal accuracy the largest online saving is {b.name}'s: {s:.0%} fewer generated tokens "
                f"(95% CI {ci(s_lo, s_hi, 2)}) at {b.dacc[0]:+.3f} accuracy {ci(*b.dacc[1:])}; against the "
                f"paper's {PAPER[0] * 100:.0f}-{PAPER[1]:.0%} the claim {word}. ")
    else:
        out += "No online DeepConf variant keeps self-consistency's accuracy here, so the claim does not hold. "
    for o in online:
        if o not in equal and o.saved[0] >= PAPER[0]:
            m = o.matched[0]
            out += (f"{o.name} does save {o.saved[0]:.0%}, but at {o.dacc[0]:+.3f} accuracy {ci(*o.dacc[1:])}"
                    + (f", and self-consistency with fewer samples reaches that accuracy on {o.need:.0f} tokens, "
                       f"{1 - m:.1f}x fewer than it spends. " if m < 0 else
                       f" ({m:.0%} fewer tokens than self-consistency at that accuracy). "))
    ac = next(o for o in res.outcomes if o.family == "ac")
    offline = "; ".join(f"{o.name} {o.dacc[0]:+.3f} {ci(*o.dacc[1:])}" for o in res.outcomes if o.family == "offline")
    return out + (f"Adaptive consistency saves {ac.saved[0]:.0%} {ci(*ac.saved[1:], 2)} at {ac.dacc[0]:+.3f} "
                  f"accuracy {ci(*ac.dacc[1:])}. Offline (every trace generated, nothing saved), accuracy against "
                  f"self-consistency: {offline}.")


def _figure(path: Path, results: list[PoolResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(results), figsize=(6.0 * len(results), 5.0), dpi=110, squeeze=False)
    marks = {"ac": "D", "offline": "s", "online": "^"}
    for ax, res in zip(axes[0], results, strict=True):
        ax.plot(res.sc_tok, res.sc_acc, "o-", color="black", ms=3, label=f"self-consistency@k, k = 1..{res.K}")
        for o in res.outcomes:
            ax.plot([o.tokens], [o.acc[0]], marks[o.family], ms=7, label=o.name)
        ax.set_title(f"{res.rid} ({res.P} problems)", fontsize=9)
        ax.set_xlabel("generated tokens per problem")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path)
    plt.close(fig)


AUROC_WINDOWS = (16, 32, WINDOW, 128, 100_000)
"""Windows in the separation table; the last is longer than any trace (the whole trace's mean)."""


def _auroc_rows(store: Store, rid: str) -> list[str]:
    row = [f"`{rid}`"]
    for w in AUROC_WINDOWS:
        cp = conf.load_confidence_pool(store, rid, w)
        row.append(f"{within_problem_auroc(cp.lowest, cp.pool.correct):.3f}")
    return row


def run(store: Store, pools: list[str], out: Path) -> Page:
    loaded, missing = {}, []
    for rid in pools:
        try:
            loaded[rid] = conf.load_confidence_pool(store, rid, WINDOW)
        except StoreError as e:
            missing.append(f"`{rid}`: {e}")
    if not loaded:
        raise ConfigError("no pool to run on: " + "; ".join(missing))
    sections, verdicts, results, notes = [], [], [], []
    header = ["procedure", "accuracy [95% CI]", "vs SC@K [95% CI]", "generated tokens / problem", "traces started",
              "tokens saved vs SC@K [95% CI]", "SC tokens for that accuracy", "saved vs those [95% CI]"]
    for rid, cp in loaded.items():
        res = _measure(rid, cp)
        results.append(res)
        verdicts.append(_verdict(res))
        sections.append(f"## `{rid}` ({cp.pool.model}, {cp.pool.n_problems} problems x {cp.pool.k} samples)\n\n"
                        + table(header, res.rows()))
        notes += [f"`{rid}`: {n}." for n in cp.notes]
    _figure(out / "deepconf.png", results)
    sections.append("![accuracy vs generated tokens](deepconf.png)")
    auroc = [_auroc_rows(store, rid) for rid in loaded]
    used = [float(r[1 + AUROC_WINDOWS.index(WINDOW)]) for r in auroc]
    verdicts.append(f"Why so little: the sampled-token proxy separates a problem's right traces from its wrong ones "
                    f"only weakly here (within-problem AUROC {min(used):.2f}-{max(used):.2f} at the {WINDOW}-token "
                    f"window, 0.5 = chance), so a bar strict enough to cut many traces also cuts right ones; and with "
                    f"{WARMUP} warm-up traces of 16 at most {1 - WARMUP / 16:.0%} could be saved at all.")
    sections.append("## Does the confidence separate right from wrong traces?\n\nWithin-problem AUROC of the lowest "
                    "group confidence for a sample being correct (problems with both kinds of samples), by window; "
                    "0.5 is chance, the last column is the whole trace's mean log-prob.\n\n"
                    + table(["pool", *(f"{w}" + (" (used)" if w == WINDOW else "") for w in AUROC_WINDOWS[:-1]),
                                   "whole trace"], auroc))
    sections.append(
        "## Method\n\n"
        f"Confidence proxy: {CONFIDENCE_PROXY}. The paper averages the negative log-probs of the top-k candidate "
        "tokens at each position; the pools keep only the sampled token's log-prob, so the group confidence here "
        f"is the mean sampled-token log-prob over a window of {WINDOW} tokens (higher = more certain, as the "
        "paper's), a trace's confidence is its lowest window and its vote weight exp(that). This is a weaker "
        "signal than the top-k one: it sees how likely the chosen token was, not how peaked the distribution was."
        f"\n\nOffline: all K traces, the top 10% (low) or 90% (high) by confidence vote, weighted. Online: the "
        f"first {WARMUP} traces of a random ordering run to the end and set the bar (the 90th or 10th percentile "
        f"of their confidences); later traces are cut at the end of their first window below the bar and do not "
        f"vote (tokens counted to the cut); sampling stops once the weighted vote's leader holds {THRESHOLD:.0%}, "
        "or at K traces. 'One wave': the remaining traces decode together, finish in order of their (cut) length "
        "and the ones still decoding when the vote settles are cut there (the reference code runs them as one "
        "batch); 'one at a time': the paper's Algorithm 2. Adaptive consistency is Aggarwal et al.'s Beta rule, "
        f"one sample at a time ({THRESHOLD}). Every figure is the expectation over {N_ORDERS} random orderings of "
        f"each problem's samples, the same orderings for every procedure; intervals are percentile bootstraps "
        f"over problems ({BOOTSTRAP} resamples). The verdict compares at the same budget, as the paper does "
        f"(at most K traces): 'equal accuracy' means at most {EQUAL:.2f} below SC@K and not significantly below "
        "it. The last two columns compare instead with the tokens self-consistency needs for the same accuracy, "
        f"interpolated along its k = 1..K curve (accuracies within {MATCH_TOL} count as matched, the orderings' "
        "Monte Carlo noise; where SC@K does not reach it, its tokens at K are used, so the "
        "saving shown is a lower bound, marked >=); where that curve is flat a small change in accuracy moves "
        "those tokens a lot, hence the wide intervals. Generated tokens only: the "
        f"prompt's prefill is the same for all. With K = 16 and {WARMUP} warm-up traces, at most "
        f"{1 - WARMUP / 16:.0%} of SC@16's traces can be saved; the paper's 16 of 512 leaves far more room."
        "\n\nOnline, `ttscale run --strategy deepconf -o warmup=4 -o keep=0.9` runs this procedure on a real "
        "backend, but no backend's step hooks can stop one sequence on its log-probs while decoding, so there "
        "the low-confidence traces run to the end and are dropped after the fact (the result records "
        "`trace_stop: after-the-fact` and `tokens_if_stopped_online`); the online rows above are what an engine "
        "with that hook would spend.")
    if notes:
        sections.append("Pool notes: " + " ".join(notes))
    if missing:
        sections.append("Pools not available in this store (not measured): " + "; ".join(missing))
    return Page("deepconf", "DeepConf: confidence-filtered voting and online early stopping (Deep Think with "
                "Confidence)", CLAIM, " ".join(verdicts), sections)


def _experiment():  # type: ignore[no-untyped-def]
    from ttscale.experiments import Experiment

    return Experiment("deepconf", "DeepConf", ("gsm8k-qwen05-k16", "gsm8k-qwen15-k16"), run)


EXPERIMENT = _experiment()
