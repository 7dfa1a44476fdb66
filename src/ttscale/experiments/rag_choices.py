"""The rag-scaling page's section on input against output compute: documents, demonstrations, iterations
or samples, chosen per budget by :mod:`ttscale.planner.input_output` and checked on held-out questions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ttscale.experiments.common import tokens_label
from ttscale.experiments.page import ci, table
from ttscale.planner.input_output import Arm, ChoiceTable, best_within, budgets_for, choice_table, held_out

SPLITS = 200
METRIC = "f1"
UNIT_TEXT = {
    "effective": "effective context (the paper's budget: input tokens over every call, so s samples cost s calls)",
    "processed": "tokens the engine processes (a DRAG question's samples share one prefilled prompt, so a further "
                 "sample costs only its generated tokens)",
}


def section(arms: Sequence[Arm], seed: int = 0) -> tuple[str, str]:
    """The page section and a one-line verdict for the claims table."""
    tab = choice_table(arms, seed=seed)
    depth = {a.label: a.depth for a in arms}
    Q = len(arms[0].samples)
    parts = [
        "## Documents, demonstrations, iterations or samples?", "",
        f"Every configuration is an arm on the same {Q} questions; a choice is an arm, an aggregation rule "
        "(majority vote, or best-of-n by the free certainty score) and a number s of its samples, replayed over 50 "
        f"orderings of each question's stored samples (at most {max(depth.values())} per configuration here). "
        "`ttscale.planner.input_output` fits the best choice within each budget on a random half of the "
        f"questions and scores it on the other half ({SPLITS} halvings): its share of the held-out oracle (the "
        "other half's best choice), and its F1 minus that of the best one-sample choice fitted the same way "
        "(the budget spent on input only). Intervals: the middle 95% of the splits.", ""]
    verdicts: list[str] = []
    for unit in ("effective", "processed"):
        rows = _rows(tab, unit, seed)  # the held-out fits, once per unit for the table and the verdict
        parts += [f"Budget: {UNIT_TEXT[unit]}.", "", _unit_table(rows), ""]
        verdicts.append(_verdict(rows, unit))
    parts.append(" ".join(verdicts))
    return "\n".join(parts), " ".join(verdicts)


Rows = list[tuple[int, str, float, np.ndarray, np.ndarray, int, int]]
"""Per budget: the best choice's label and F1 on all questions, and the held-out shares, gains, splits
choosing more than one sample, and splits."""


def _rows(tab: ChoiceTable, unit: str, seed: int) -> Rows:
    sc, co = tab.score[METRIC].mean(axis=1), tab.cost[unit].mean(axis=1)
    budgets = budgets_for(co)
    out = []
    for h in held_out(tab, METRIC, unit, budgets, splits=SPLITS, seed=seed):
        best = best_within(sc, co, h.budget)
        label = tab.choices[best].label if best is not None else "-"
        out.append((h.budget, label, float(sc[best]) if best is not None else float("nan"), h.shares,
                    h.gain_over_input_only, h.more_samples, len(h.gain_over_input_only)))
    return out


def _unit_table(fits: Rows) -> str:
    rows = []
    for b, label, f1, shares, gains, more, n in fits:
        share = (f"{100 * shares.mean():.1f}% {ci(100 * np.percentile(shares, 2.5), 100 * np.percentile(shares, 97.5), 1)}"
                 if len(shares) else "-")
        rows.append([tokens_label(b), label, f"{f1:.3f}", share,
                     f"{gains.mean():+.3f} {ci(np.percentile(gains, 2.5), np.percentile(gains, 97.5))}",
                     f"{more} of {n}"])
    return table(["budget", "best choice (all questions)", "its F1", "fitted choice: share of held-out oracle",
                  "fitted minus input-only F1", "splits choosing s > 1"], rows)


def _verdict(rows: Rows, unit: str) -> str:
    if not rows:
        return f"In {unit} tokens: no budget holds a choice."
    gains = np.concatenate([r[4] for r in rows])
    more = sum(r[5] for r in rows)
    total = sum(r[6] for r in rows)
    resolved = [r for r in rows if np.percentile(r[4], 2.5) > 0]
    return (f"In {unit} tokens, the fitted choice draws more than one sample in {more} of {total} fits "
            f"({100 * more / max(total, 1):.0f}%); its held-out F1 over the input-only choice is {gains.mean():+.3f} "
            "on average over budgets and splits"
            + (f", above zero in 95% of splits at {', '.join(tokens_label(r[0]) for r in resolved)} tokens."
               if resolved else ", with no budget where 95% of splits put it above zero."))
