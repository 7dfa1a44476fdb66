"""``coverage``: repeated-sampling coverage and its exponentiated power law (Brown et al. 2024)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ttscale.errors import ConfigError
from ttscale.experiments.common import bootstrap, figure, load_pools, save
from ttscale.experiments.page import Page, ci, table
from ttscale.replay.code_analysis import coverage_curve
from ttscale.replay.fit import fit_coverage
from ttscale.store import Store

CLAIM = ("Large Language Monkeys (Brown et al. 2024): coverage, the share of problems solved by at least one "
         "of k samples, grows with k over orders of magnitude and is fit well by an exponentiated power law, "
         "`log c(k) = a k^b` (a < 0, b < 0); GSM8K and MATH coverage with Llama-3 models passes 95% at "
         "10,000 samples.")


def _fit_on(hidden: np.ndarray, ks: list[int]) -> tuple[float, float]:
    cov = coverage_curve(hidden, ks)
    f = fit_coverage(list(cov), list(cov.values()))
    return f.a, f.b


def run(store: Store, pools: list[str], out: Path) -> Page:
    found, missing = load_pools(store, pools)
    if not found:
        raise ConfigError("no pool to run on: " + "; ".join(missing))
    rows, verdicts, sections = [], [], []
    fig, ax = figure(out / "coverage.png")
    for rid, pool in found.items():
        h = pool.correct
        P, K = h.shape
        ks = sorted({k for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64) if k <= K} | {K})
        fit_ks = [k for k in ks if k <= K // 2]  # fit on the first half, check on the larger k
        obs = coverage_curve(h, ks)
        try:
            a, b = _fit_on(h, fit_ks)
        except ConfigError as e:
            sections.append(f"`{rid}`: no fit ({e}).")
            continue
        pred_K = math.exp(a * K**b)
        def cov_at_k(idx: np.ndarray, h: np.ndarray = h, K: int = K) -> float:
            return float(coverage_curve(h[idx], [K])[K])

        lo_K, hi_K = bootstrap(P, cov_at_k)
        k90 = (math.log(0.9) / a) ** (1 / b) if a < 0 and b < 0 else math.inf

        def k90_of(idx: np.ndarray, h: np.ndarray = h, fit_ks: list[int] = fit_ks) -> float:
            try:
                aa, bb = _fit_on(h[idx], fit_ks)
            except ConfigError:
                return math.inf
            return (math.log(0.9) / aa) ** (1 / bb) if aa < 0 and bb < 0 else math.inf

        k90_lo, k90_hi = bootstrap(P, k90_of, reps=200)
        holds = lo_K <= pred_K <= hi_K
        rows.append([f"`{rid}`", pool.model, str(P), f"{obs[1]:.3f}", f"{obs[K]:.3f} {ci(lo_K, hi_K)}",
                     f"{a:.3f}", f"{b:.3f}", f"{pred_K:.3f}", "yes" if holds else "no",
                     f"{k90:.0f} {ci(k90_lo, k90_hi, 0)}" if math.isfinite(k90) else "never"])
        verdicts.append(f"`{rid}` ({pool.model}, {P} problems): fitted on k <= {K // 2}, the law predicts "
                        f"coverage {pred_K:.3f} at k = {K}; observed {obs[K]:.3f}, 95% CI {ci(lo_K, hi_K)}: "
                        f"{'inside, the law holds here' if holds else 'outside, the law misses here'}. "
                        f"90% coverage is reached at k ~ {k90:.0f} (95% CI {ci(k90_lo, k90_hi, 0)}).")
        xs = np.geomspace(1, max(1000, K), 200)
        line = ax.plot(list(obs), list(obs.values()), "o", label=f"{rid} observed")  # type: ignore[attr-defined]
        ax.plot(xs, np.exp(a * xs**b), "-", color=line[0].get_color(), alpha=0.7,  # type: ignore[attr-defined]
                label=f"{rid} fit on k<={K // 2}")
    ax.axhline(0.9, color="grey", lw=0.8, ls=":")  # type: ignore[attr-defined]
    ax.set_xscale("log")  # type: ignore[attr-defined]
    ax.set_xlabel("samples per problem k")  # type: ignore[attr-defined]
    ax.set_ylabel("coverage (pass@k)")  # type: ignore[attr-defined]
    ax.legend(fontsize=7)  # type: ignore[attr-defined]
    save(fig)
    sections.insert(0, "## Measurements\n\n" + table(
        ["pool", "model", "problems", "pass@1", "coverage at K [95% CI]", "a", "b", "predicted at K",
         "prediction inside CI", "k for 90% [95% CI]"], rows))
    sections.append("![coverage vs k with the fitted law](coverage.png)")
    sections.append("Method: unbiased pass@k (Chen et al. 2021) per problem, averaged; the law is fitted on the "
                    "log scale to the points with 0 < c < 1 at k up to half the pool, and checked against the "
                    "held-out coverage at the full pool size; intervals are percentile bootstraps over problems "
                    "(400 resamples for coverage, 200 refits for k at 90%).")
    if missing:
        sections.append("Pools not available in this store (not measured): " + "; ".join(missing))
    return Page("coverage", "Coverage vs samples: the exponentiated power law (Large Language Monkeys)", CLAIM,
                " ".join(verdicts) or "No pool could be fitted.", sections)


def _experiment():  # type: ignore[no-untyped-def]
    from ttscale.experiments import Experiment

    return Experiment("coverage", "coverage", ("humaneval-qwen05-k16", "gsm8k-qwen05-k16", "gsm8k-qwen15-k16"), run)


EXPERIMENT = _experiment()
