"""Markdown tables of `ttscale plan --compare-output` files, as docs/planner.md shows them.

    python scripts/plan_tables.py cmp.json [cmp-seed1.json cmp-seed2.json ...]

The first file gives the per-budget tables (tokens, then dollars per hardware profile); with several
files (the same pools split with other `--seed`s), a last table summarises each token level across the
splits: the mean paired difference and how many splits show the policy better or worse. The tables are
printed, not written into the docs, so that a reader checks them before they replace the old ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _ci(lo_hi: list[float]) -> str:
    return f"[{lo_hi[0]:+.3f}, {lo_hi[1]:+.3f}]"


def _serves(row: dict[str, Any]) -> str:
    """What the level serves: the policy, or the best fixed choice within the level's own budget."""
    if row["paired"]["verdict"] == "policy better":
        return "policy"
    served = row.get("fixed_in_budget", row["fixed"])
    return "policy (no fixed choice fits)" if served is None else served["label"]


def _within(r: dict[str, Any], fmt: str, scale: float) -> str:
    """The fixed choice's own budget, where the policy's held-out spend raised it above the level's."""
    within = r.get("fixed_budget", r["budget"])
    return f" within {fmt.format(scale * within)}" if within > r["budget"] else ""


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def token_table(cmp: dict[str, Any]) -> str:
    header = ["budget tok/problem", "policy acc (tok)", "best fixed on train (train acc)", "fixed acc (tok)",
              "policy - fixed [95% paired CI]", "verdict -> serves"]
    return _table(header, [
        [f"{r['budget']:.0f}", f"{r['paired']['policy']:.3f} ({r['policy_cost']:.0f})",
         f"{r['fixed']['label']} ({r['fixed']['train_accuracy']:.3f})" + _within(r, "{:.0f}", 1.0),
         f"{r['paired']['fixed']:.3f} ({r['fixed_cost']:.0f})",
         f"{r['paired']['difference']:+.3f} {_ci(r['paired']['difference_ci'])}",
         f"{r['paired']['verdict']} -> {_serves(r)}"] for r in cmp["tokens"]])


def usd_table(rows: list[dict[str, Any]]) -> str:
    header = ["budget $/1k problems", "policy level (tok)", "policy acc ($/1k)", "best fixed on train",
              "fixed acc ($/1k)", "policy - fixed [95% paired CI]", "verdict"]
    return _table(header, [
        [f"{1000 * r['budget']:.3f}", f"{r['level_budget_tokens']:.0f}",
         f"{r['paired']['policy']:.3f} ({1000 * r['policy_cost']:.3f})", r["fixed"]["label"] + _within(r, "{:.3f}", 1000.0),
         f"{r['paired']['fixed']:.3f} ({1000 * r['fixed_cost']:.3f})",
         f"{r['paired']['difference']:+.3f} {_ci(r['paired']['difference_ci'])}", r["paired"]["verdict"]]
        for r in rows])


def splits_table(cmps: list[dict[str, Any]]) -> str:
    """One row per token level (as a share of the richest level, which is majority@K's tokens)."""
    n_levels = min(len(c["tokens"]) for c in cmps)
    out = [f"| level (share of majority@K's tokens) | mean policy - fixed over {len(cmps)} splits "
           "| splits policy better | splits fixed better |", "|---|---|---|---|"]
    for i in range(n_levels):
        rows = [c["tokens"][i] for c in cmps]
        shares = [r["budget"] / c["tokens"][-1]["budget"] for r, c in zip(rows, cmps, strict=True)]
        diffs = [r["paired"]["difference"] for r in rows]
        better = sum(r["paired"]["verdict"] == "policy better" for r in rows)
        worse = sum(r["paired"]["verdict"] == "fixed better" for r in rows)
        out.append(f"| {100 * sum(shares) / len(shares):.0f}% | {sum(diffs) / len(diffs):+.3f} | {better} | {worse} |")
    pairs = n_levels * len(cmps)
    better = sum(c["tokens"][i]["paired"]["verdict"] == "policy better" for c in cmps for i in range(n_levels))
    worse = sum(c["tokens"][i]["paired"]["verdict"] == "fixed better" for c in cmps for i in range(n_levels))
    out.append(f"\n{better} of {pairs} (split, level) pairs show the policy better and {worse} worse.")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="comparison JSON files; the first gives the per-budget tables")
    args = ap.parse_args()
    cmps = [json.loads(f.read_text()) for f in args.files]
    first = cmps[0]
    print(f"{first['train_problems']} train / {first['test_problems']} held-out problems "
          f"({first.get('test_families', first['test_problems'])} held-out families), split seed {first['seed']}\n")
    print(token_table(first))
    for profile, rows in first.get("usd", {}).items():
        print(f"\nPer dollar on `{profile}`:\n")
        print(usd_table(rows))
    if len(cmps) > 1:
        print("\nAcross splits (seeds " + ", ".join(str(c["seed"]) for c in cmps) + "):\n")
        print(splits_table(cmps))


if __name__ == "__main__":
    main()
