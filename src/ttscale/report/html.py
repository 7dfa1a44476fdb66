"""One self-contained HTML page for a replay analysis: figures embedded as base64 PNGs, no network."""

from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path

from ttscale.replay.analysis import Analysis
from ttscale.replay.code_analysis import CodeAnalysis
from ttscale.report.plots import coverage_fit_skipped, write_plots

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}th{background:#f4f4f4}
td.s,th.s{text-align:left}tr.front td{background:#fff6e0}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}.note{color:#7a4b00;font-size:.9rem}
"""


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if abs(x) >= 1e5:
        return f"{x:.3g}"
    return f"{x:,.{digits}f}" if isinstance(x, float) and abs(x) < 100 else f"{x:,.0f}"


def _img(path: Path, name: str, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure id="fig-{name}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _gaming(c: CodeAnalysis) -> str:
    if not c.gaming:
        return "none"
    return ", ".join(f"{kind}: {n}" for kind, n in c.gaming.items())


def _code_section(c: CodeAnalysis, fig: Path) -> list[str]:
    """Coverage, best-of-k with the visible-test verifier vs hidden-test truth, false positives, ceiling."""
    esc = html.escape
    fp = c.false_positives
    parts = ["<h2>Unit-test verifier: coverage and false positives</h2>",
             "<p>Samples were scored by the <code>unit-tests</code> verifier, which runs only the visible tests; "
             "the grade runs all (hidden) tests. A false positive passes the visible tests and fails the hidden ones "
             "(Stroebl et al. 2024): best-of-k then returns a wrong program, and no number of samples lifts accuracy "
             "above the precision of the visible tests, while coverage keeps climbing.</p>"]
    ks = list(c.coverage)
    parts.append("<table id='code-curves'><thead><tr><th class='s'>k</th>" + "".join(f"<th>{k}</th>" for k in ks)
                 + "</tr></thead><tbody>"
                 + "<tr><td class='s'>coverage (pass@k, hidden tests)</td>"
                 + "".join(f"<td>{c.coverage[k]:.3f}</td>" for k in ks) + "</tr>"
                 + "<tr><td class='s'>best-of-k, visible-test verifier, graded by hidden tests</td>"
                 + "".join(f"<td>{c.best_of_n_visible[k]:.3f}</td>" for k in ks) + "</tr></tbody></table>")
    f = c.coverage_fit
    if f is not None:
        targets = ", ".join(f"{int(float(t) * 100)}%: k≈{_fmt(v, 0)}" for t, v in f["k_for"].items())
        parts.append(f"<p id='code-coverage-fit'>log coverage(k) = a·k<sup>b</sup> with a = {f['a']:.4f}, "
                     f"b = {f['b']:.4f}, R² = {f['r2']:.4f} ({f['n_points']} points). "
                     f"Extrapolated samples for coverage {esc(targets)}.</p>")
    else:
        parts.append(f"<p id='code-coverage-fit' class='note'>Coverage fit skipped: {esc(str(coverage_fit_skipped(c)))}.</p>")
    per = "–" if fp.per_problem_rate is None else f"{fp.per_problem_rate:.3f}"
    parts.append("<table id='code-verifier'><tbody>" + "".join(
        f"<tr><th class='s'>{esc(k)}</th><td>{v}</td></tr>" for k, v in [
            ("problems × samples", f"{c.problems} × {c.samples}"),
            ("samples passing the visible tests", f"{fp.visible_pass} ({c.visible_pass_at_1:.3f} of all)"),
            ("of those, failing the hidden tests", f"{fp.false_positive}"),
            ("false-positive rate (pooled)", f"{fp.rate:.3f}"),
            ("false-positive rate (mean over problems with a visible pass)", per),
            ("problems with a false positive / with a visible pass",
             f"{fp.problems_with_false_positive} / {fp.problems_with_visible_pass}"),
            ("accuracy ceiling of verifier-filtered resampling (k → ∞)", f"{c.accuracy_ceiling:.3f}"),
            ("samples caught gaming the tests (early exit, fake equality, ...)", _gaming(c)),
        ]) + "</tbody></table>")
    parts.append(_img(fig, "code_verifier", "Left: coverage against k with the exponentiated power-law fit when there "
                      "is one. Right: best-of-k with the visible-test verifier, graded by the hidden tests, against "
                      "a perfect verifier (coverage) and the ceiling the false positives imply."))
    return parts


def render_html(a: Analysis, fig_dir: Path, code: CodeAnalysis | None = None) -> str:
    """The report page as a string (figures are written to ``fig_dir`` and embedded).

    ``code`` (from :func:`ttscale.replay.code_analysis.analyze_pool`) adds the unit-test verifier section."""
    figs = write_plots(a, fig_dir, code)
    pool = a.curves.pool
    esc = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>ttscale replay: {esc(str(pool['run_id']))}</title>"
             f"<style>{_CSS}</style></head><body>"]
    parts.append(f"<h1>Replay report: {esc(str(pool['run_id']))}</h1>")
    parts.append("<table id='pool'><tbody>" + "".join(
        f"<tr><th class='s'>{esc(k)}</th><td class='s'>{esc(str(v))}</td></tr>" for k, v in [
            ("task", pool.get("task")), ("model", pool.get("model")), ("problems", pool["problems"]),
            ("samples per problem (K)", pool["k"]), ("problems left out (no reference / no samples)", pool["dropped_problems"]),
            ("single-sample accuracy", _fmt(pool["sample_accuracy"])),
            ("mean generated tokens per sample", _fmt(pool["mean_generated_tokens"], 1)),
            ("mean prefill tokens per problem", _fmt(pool["mean_prefill_tokens"], 1)),
            ("bootstrap", f"{a.curves.settings['n_bootstrap']} resamples over problems, "
                          f"{int(a.curves.settings['ci'] * 100)}% CI; {a.curves.settings['n_orders']} orderings per problem"),
            ("generated", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
        ]) + "</tbody></table>")
    for n in a.notes:
        parts.append(f"<p class='note'>{esc(n)}</p>")

    parts.append("<h2>Accuracy against compute</h2>")
    parts.append(_img(figs["accuracy_vs_tokens"], "accuracy_vs_tokens",
                      "Expected accuracy of each strategy at each budget k against total tokens per problem; "
                      "bands are bootstrap CIs across problems; the black step is the Pareto frontier."))
    parts.append(_img(figs["accuracy_vs_flops"], "accuracy_vs_flops", "The same curves against forward FLOPs."))
    if "coverage" in figs:
        parts.append("<h2>Coverage scaling law</h2>")
        f = a.coverage_fit
        if f is not None:
            ks = ", ".join(f"{int(t * 100)}%: k≈{_fmt(f.k_for(t), 0)}" for t in (0.5, 0.9, 0.95, 0.99))
            parts.append(f"<p id='coverage-fit'>log coverage(k) = a·k<sup>b</sup> with a = {f.a:.4f}, b = {f.b:.4f}, "
                         f"R² = {f.r2:.4f} ({f.n_points} points). Extrapolated samples for coverage {esc(ks)}.</p>")
        s = a.saturation_fit
        if s is not None:
            parts.append(f"<p id='saturation-fit'>Majority@k saturates at {s.ceiling:.3f} (fit acc = s − d·k<sup>−e</sup>, "
                         f"d = {s.d:.3f}, e = {s.e:.3f}, R² = {s.r2:.3f}); 95% of the gain over one sample is reached "
                         f"by k ≈ {_fmt(s.k_for_fraction(0.95), 0)}.</p>")
        parts.append(_img(figs["coverage"], "coverage", "Coverage (pass@k) and majority@k with their fits, "
                                                         "extrapolated past the pool size."))
    if code is not None:
        parts.extend(_code_section(code, figs["code_verifier"]))
    parts.append("<h2>Pareto frontier</h2>")
    parts.append(_img(figs["frontier"], "frontier", "Non-dominated (strategy, k) points against tokens and FLOPs."))
    for title, rows, cost in (("tokens", a.cheapest_tokens, "total tokens"), ("flops", a.cheapest_flops, "FLOPs")):
        parts.append(f"<h3>Cheapest strategy reaching each accuracy ({esc(cost)})</h3>")
        parts.append(f"<table id='cheapest-{title}'><thead><tr><th>target</th><th class='s'>strategy</th><th>k</th>"
                     f"<th>accuracy</th><th>{esc(cost)} / problem</th></tr></thead><tbody>")
        for c in rows:
            parts.append(f"<tr><td>{c.target:.2f}</td><td class='s'>{esc(c.strategy or 'none reaches it')}</td>"
                         f"<td>{c.k if c.k is not None else '–'}</td><td>{_fmt(c.accuracy)}</td><td>{_fmt(c.cost)}</td></tr>")
        parts.append("</tbody></table>")

    parts.append("<h2>All points</h2>")
    parts.append("<table id='points'><thead><tr><th class='s'>strategy</th><th>k</th><th>accuracy</th><th>CI low</th>"
                 "<th>CI high</th><th>samples</th><th>generated tokens</th><th>total tokens</th><th>FLOPs</th>"
                 "<th class='s'>estimate</th></tr></thead><tbody>")
    front = {(p.strategy, p.k) for p in a.frontier_tokens}
    for r in a.rows():
        cls = " class='front'" if (r["strategy"], r["k"]) in front else ""
        parts.append(
            f"<tr{cls}><td class='s'>{esc(r['strategy'])}{' (oracle)' if r['oracle'] else ''}</td><td>{r['k']}</td>"
            f"<td>{r['accuracy']:.3f}</td><td>{r['ci_low']:.3f}</td><td>{r['ci_high']:.3f}</td>"
            f"<td>{r['samples']:.1f}</td><td>{_fmt(r['generated_tokens'])}</td><td>{_fmt(r['total_tokens'])}</td>"
            f"<td>{r['flops']:.3g}</td><td class='s'>{'exact' if r['exact'] else 'resampled'}</td></tr>")
    parts.append("</tbody></table><p>Highlighted rows are on the tokens Pareto frontier. Costs are expected values "
                 "per problem; prompt prefill is counted once per problem when the engine shared it.</p>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(a: Analysis, out_dir: Path, code: CodeAnalysis | None = None) -> Path:
    """``out_dir/report.html`` (self-contained) plus the PNGs next to it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    page = render_html(a, out_dir, code)
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
