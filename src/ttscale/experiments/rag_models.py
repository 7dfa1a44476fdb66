"""The rag-scaling page's section on two models: the larger model on fewer configurations beside the smaller.

Three measurements on the questions both models answered: accuracy per shared configuration (paired
differences), the computation-allocation model fitted across both models (their gains i differ, so its a and b
separate, which one model cannot do), and the question a user of input compute has before buying a bigger
model: at the same prefill compute, does the smaller model reading more beat the larger model reading less?
Prefill compute of an answer: 2 x parameters x its effective context length (the paper's budget, which leaves
out the few generated tokens).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ttscale.errors import ConfigError
from ttscale.experiments.common import bootstrap, tokens_label
from ttscale.experiments.page import ci, table
from ttscale.experiments.rag_scaling import (
    AllocationFit,
    Grid,
    allocation_rows,
    best_within,
    budgets_for,
    fit_allocation,
)


def _flops_label(f: float) -> str:
    return f"{f / 1e12:.1f} TFLOP" if f >= 1e12 else f"{f / 1e9:.0f} GFLOP"


def _params(grid: Grid) -> int:
    return max(r.n_params for r in grid.runs)


def section(small: Grid, large: Grid, metric: str = "f1") -> tuple[str, str]:
    """The markdown section and a one-line verdict for the claims table (``metric``: ``f1`` or ``em``)."""
    common = [q for q in small.questions if q in set(large.questions)]
    if not common:
        raise ConfigError(f"{small.runs[0].model} and {large.runs[0].model} share no question")
    si = np.array([small.questions.index(q) for q in common])
    li = np.array([large.questions.index(q) for q in common])
    Q = len(common)
    S, L = small.metric[metric][:, si], large.metric[metric][:, li]
    s_ctx, l_ctx = small.context[:, si].mean(axis=1), large.context[:, li].mean(axis=1)
    ns, nl = small.runs[0].model, large.runs[0].model
    name = metric.upper()

    # 1. the shared configurations
    rows, diffs = [], []
    for j, c in enumerate(large.cfgs):
        if c not in small.cfgs:
            continue
        k = small.cfgs.index(c)
        d = L[j] - S[k]
        lo, hi = bootstrap(Q, lambda q, d=d: float(d[q].mean()))  # type: ignore[misc]
        diffs.append((c, float(d.mean()), lo, hi))
        rows.append([c.label, tokens_label(float(s_ctx[k])), tokens_label(float(l_ctx[j])), f"{S[k].mean():.3f}",
                     f"{L[j].mean():.3f}", f"{d.mean():+.3f} {ci(lo, hi)}"])
    better = [c.label for c, _, lo, _ in diffs if lo > 0]
    worse = [c.label for c, _, _, hi in diffs if hi < 0]

    # 2. the allocation model across both models: each row carries its own model's gains
    def joint_fit(q: np.ndarray) -> AllocationFit | None:
        x_s, i_s, y_s = allocation_rows(small, metric, si[q])
        x_l, i_l, y_l = allocation_rows(large, metric, li[q])
        if not (np.abs(i_s[0] - i_l[0]) > 1e-12).all():
            return None
        return fit_allocation(np.vstack([x_s, x_l]), np.vstack([i_s, i_l]), np.concatenate([y_s, y_l]))

    everyone = np.arange(Q)
    _, i_s, _ = allocation_rows(small, metric, si)
    x_l, i_l, y_l = allocation_rows(large, metric, li)
    joint = joint_fit(everyone)

    def b_part(j: int) -> Callable[[np.ndarray], float]:
        def stat(q: np.ndarray) -> float:
            f = joint_fit(q)
            return float(f.b[j]) if f is not None and f.b is not None else float("nan")
        return stat

    # b rests on the two models' gains differing; where they nearly coincide it is not identified, and the
    # interval over resampled questions (the gains re-measured in each) says so
    b_ci = [bootstrap(Q, b_part(j), reps=200) for j in (0, 1)] if joint is not None else []
    own_large = fit_allocation(x_l, i_l, y_l) if len(y_l) >= 2 else None

    # 3. equal prefill compute: 2 x parameters x effective context per answer
    fs, fl = 2.0 * _params(small) * s_ctx, 2.0 * _params(large) * l_ctx
    budgets = budgets_for(np.concatenate([fs, fl]))
    acc_s, acc_l = S.mean(axis=1), L.mean(axis=1)
    eq_rows: list[list[str]] = []
    wins: dict[str, list[str]] = {"small": [], "large": [], "open": []}
    for b in budgets:
        js, jl = best_within(acc_s, fs, b), best_within(acc_l, fl, b)
        if js is None and jl is None:
            continue
        cell_s = f"{acc_s[js]:.3f} ({small.cfgs[js].label})" if js is not None else "-"
        cell_l = f"{acc_l[jl]:.3f} ({large.cfgs[jl].label})" if jl is not None else "-"
        if js is None or jl is None:
            eq_rows.append([_flops_label(b), cell_s, cell_l, "only one model fits"])
            continue

        def gap(q: np.ndarray, b: int = b) -> float:
            # re-pick both models' best configuration in each resample: the selection's optimism is included
            a, c = best_within(S[:, q].mean(axis=1), fs, b), best_within(L[:, q].mean(axis=1), fl, b)
            return float(L[c, q].mean() - S[a, q].mean()) if a is not None and c is not None else float("nan")

        lo, hi = bootstrap(Q, gap)
        g = float(acc_l[jl] - acc_s[js])
        key = "large" if lo > 0 else "small" if hi < 0 else "open"
        wins[key].append(_flops_label(b))
        eq_rows.append([_flops_label(b), cell_s, cell_l, f"{g:+.3f} {ci(lo, hi)}"])

    fit_rows = []
    if joint is not None and joint.b is not None:
        fit_rows.append(["both models", f"{joint.a[0]:+.3f}", f"{joint.a[1]:+.3f}", f"{joint.a[2]:+.3f}",
                         f"{joint.b[0]:+.3f} {ci(*b_ci[0])}", f"{joint.b[1]:+.3f} {ci(*b_ci[1])}",
                         f"{joint.c:+.3f}", f"{joint.r2:.3f}"])
    if own_large is not None:
        w = own_large.a
        fit_rows.append([f"{nl} alone (a + b i)", f"{w[0]:+.3f}", f"{w[1]:+.3f}", f"{w[2]:+.3f}", "-", "-",
                         f"{own_large.c:+.3f}", f"{own_large.r2:.3f}"])
    gains = (f"i = (i_doc, i_shot): {ns} ({i_s[0][0]:+.3f}, {i_s[0][1]:+.3f}), "
             f"{nl} ({i_l[0][0]:+.3f}, {i_l[0][1]:+.3f})")
    md = "\n".join([
        f"## A larger model on fewer configurations ({nl})", "",
        f"{nl} on {len(large.cfgs)} of the configurations, beside {ns} on the same {Q} questions. {name} per "
        "configuration, with the paired difference (percentile bootstrap over the questions):", "",
        table(["configuration", f"context {ns}", f"context {nl}", f"{name} {ns}", f"{name} {nl}",
               "larger minus smaller [95% CI]"], rows), "",
        f"The allocation model fitted across both models ({name}, logit scale). The two models' gains differ "
        f"({gains}), so `a` and `b` are identified separately, which one model's pools cannot do; with two "
        "models b rests on two values of i, and where the two gains nearly coincide b is not identified in "
        "practice: the intervals on b (200 resamples of the questions, the gains measured again in each) show "
        "how far to trust it:" if joint is not None else
        f"The two models' one-step gains coincide ({gains}): `a` and `b` cannot be separated.", "",
        table(["fit", "a_k", "a_m", "a_n", "b_k [95% CI]", "b_m [95% CI]", "c", "R^2"], fit_rows) if fit_rows else "", "",
        f"At the same prefill compute (2 x parameters x effective context per answer; {ns}: "
        f"{_params(small) / 1e6:.0f}M parameters, {nl}: {_params(large) / 1e6:.0f}M): the best configuration of each "
        "model within the budget (powers of two FLOPs), and the larger model's minus the smaller's, re-picking "
        "both in every bootstrap resample:", "",
        table(["prefill budget", f"best {ns}", f"best {nl}", "larger minus smaller [95% CI]"], eq_rows)])
    verdict = (f"{name}: per configuration, {nl} is better at {len(better)} of {len(diffs)} "
               f"({', '.join(better) or 'none'}), worse at {len(worse)}; at equal prefill compute the larger model "
               f"is better at {len(wins['large'])} budgets, the smaller reading more at {len(wins['small'])}, "
               f"{len(wins['open'])} not resolved"
               + (f"; allocation model across both: R^2 {joint.r2:.3f}" if joint is not None else ""))
    return md, verdict
