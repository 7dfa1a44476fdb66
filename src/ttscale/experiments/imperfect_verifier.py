"""``imperfect-verifier``: best-of-k with the visible tests against the ceiling their false positives set
(Stroebl et al. 2024, "Inference Scaling fLaws")."""

from __future__ import annotations

from pathlib import Path

from ttscale.errors import ConfigError
from ttscale.experiments.common import bootstrap, figure, load_pools, save
from ttscale.experiments.page import Page, ci, table
from ttscale.replay.code_analysis import accuracy_ceiling, best_of_n_curve, coverage_curve, false_positives
from ttscale.store import Store

CLAIM = ("Inference Scaling fLaws (Stroebl et al. 2024): when a verifier accepts wrong answers with probability "
         "p > 0, resampling cannot push accuracy past a ceiling set by its false positives, however many samples "
         "are drawn, while coverage (a perfect verifier) keeps climbing; with a cost for wrong answers the best "
         "number of samples can be under 10.")
VERIFIER = "unit-tests"


def run(store: Store, pools: list[str], out: Path) -> Page:
    found, missing = load_pools(store, pools)
    found = {rid: p for rid, p in found.items() if VERIFIER in p.scores}
    if not found:
        raise ConfigError(f"no pool with {VERIFIER!r} scores: " + ("; ".join(missing) or "sweep with --verifier unit-tests"))
    rid, pool = next(iter(found.items()))
    v, h = pool.scores[VERIFIER] > 0.5, pool.correct
    P, K = h.shape
    ks = [k for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32) if k <= K]
    bon, cov = best_of_n_curve(v, h, ks), coverage_curve(h, ks)
    ceiling = accuracy_ceiling(v, h)
    fp = false_positives(v, h)
    def bon_at(k: int) -> tuple[float, float]:
        return bootstrap(P, lambda idx: best_of_n_curve(v[idx], h[idx], [k])[k])

    bon_ci = {k: bon_at(k) for k in ks}
    ceil_lo, ceil_hi = bootstrap(P, lambda idx: accuracy_ceiling(v[idx], h[idx]))
    fp_lo, fp_hi = bootstrap(P, lambda idx: false_positives(v[idx], h[idx]).rate)
    gains = [(ks[i], bon[ks[i]] - bon[ks[i - 1]]) for i in range(1, len(ks))]
    flat = next((k for k, g in gains if g < 0.01), None)
    rows = [[str(k), f"{cov[k]:.3f}", f"{bon[k]:.3f} {ci(*bon_ci[k])}", f"{ceiling - bon[k]:.3f}"] for k in ks]
    fig, ax = figure(out / "imperfect-verifier.png")
    ax.plot(ks, [cov[k] for k in ks], "o-", label="coverage (perfect verifier)")  # type: ignore[attr-defined]
    ax.plot(ks, [bon[k] for k in ks], "s-", label="best-of-k, visible tests (graded by all)")  # type: ignore[attr-defined]
    ax.fill_between(ks, [bon_ci[k][0] for k in ks], [bon_ci[k][1] for k in ks], alpha=0.2)  # type: ignore[attr-defined]
    ax.axhline(ceiling, color="red", ls="--", lw=1, label=f"ceiling {ceiling:.3f}")  # type: ignore[attr-defined]
    ax.set_xscale("log", base=2)  # type: ignore[attr-defined]
    ax.set_xlabel("samples per problem k")  # type: ignore[attr-defined]
    ax.set_ylabel("accuracy")  # type: ignore[attr-defined]
    ax.legend(fontsize=7)  # type: ignore[attr-defined]
    save(fig)
    half = max(k for k in ks if k <= K // 2)
    verdict = (f"`{rid}` ({pool.model}, {P} problems x {K} samples): {fp.false_positive} of {fp.visible_pass} "
               f"samples that pass the visible tests fail the hidden ones (false-positive rate {fp.rate:.3f}, 95% CI "
               f"{ci(fp_lo, fp_hi)}; {fp.problems_with_false_positive} of {fp.problems_with_visible_pass} problems "
               f"with a visible pass have one). The ceiling they imply (the per-problem precision of the visible "
               f"tests, which best-of-k approaches as k grows and cannot pass) is {ceiling:.3f} {ci(ceil_lo, ceil_hi)}. "
               f"Best-of-k climbs from {bon[1]:.3f} at k = 1 to {bon[half]:.3f} at k = {half} and {bon[K]:.3f} at "
               f"k = {K}, while coverage climbs to {cov[K]:.3f}: the claim holds here, the verifier's false "
               f"positives, not the number of samples, bound accuracy. Resampling stops paying "
               + (f"from k = {flat} (the step there gains under one point)" if flat else "nowhere within this pool")
               + f"; the {cov[K] - bon[K]:.3f} between coverage and best-of-{K} is what only a better verifier can buy.")
    sections = ["## Measurements\n\n" + table(["k", "coverage", "best-of-k [95% CI]", "gap to ceiling"], rows),
                "![best-of-k against the ceiling](imperfect-verifier.png)",
                "Method: visible tests = the first third of each problem's asserts (the `unit-tests` verifier), "
                "hidden = all of them (the grade, in the two-process sandbox); best-of-k in closed form from the "
                "pool (a random visible-passing sample among k, else a random sample); the ceiling is its k -> "
                "infinity limit, the per-problem precision of the visible tests; intervals are percentile "
                "bootstraps over problems (400 resamples)."]
    if pool.gaming:
        sections.append("Samples the grader caught gaming the tests (graded as failures): "
                        + ", ".join(f"{k}: {n}" for k, n in pool.gaming.items()) + ".")
    return Page("imperfect-verifier", "Imperfect verifiers: best-of-k against the false-positive ceiling "
                "(Inference Scaling fLaws)", CLAIM, verdict, sections)


def _experiment():  # type: ignore[no-untyped-def]
    from ttscale.experiments import Experiment

    return Experiment("imperfect-verifier", "imperfect verifier", ("humaneval-qwen05-k16",), run)


EXPERIMENT = _experiment()
