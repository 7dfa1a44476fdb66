"""``speculative-reasoning``: SpecReason (a small model drafts each step, the base model scores it and rewrites
the steps it scores low) against the base model alone, on GSM8K.

The pools: one stored run per configuration, run ids ``<prefix>-base-<model>`` (the base model alone, one
greedy sample), ``<prefix>-draft-<model>`` (the draft model alone) and ``<prefix>-st<step tokens>-thr<X>``
(``speculative-reasoning`` at threshold X: 0 keeps every drafted step, 10 rewrites every one).
``bench/speculative.py`` makes them resumably; they ship in ``ttscale/pools/speculative/``. The page reads
each problem's result: correctness, the solve's wall time, and for the strategy its steps kept and rejected
and the wall time of each phase (draft decode, base scoring prefill, base rewrites). Nothing is generated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.experiments import Experiment
from ttscale.experiments.common import BOOTSTRAP, bootstrap, figure, save
from ttscale.experiments.page import Page, ci, table
from ttscale.replay.pool import model_info_from_record
from ttscale.store import Store
from ttscale.types import ModelInfo

PREFIX = "spec-gsm20-t384"
BASE, DRAFT = "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"
THRESHOLDS = (0.0, 5.0, 5.5, 10.0)
RUN_ID = re.compile(r"^(?P<prefix>.+?)-(?:base-(?P<base>.+)|draft-(?P<draft>.+)|st(?P<st>\d+)-thr(?P<thr>\d+(?:\.\d+)?))$")
PHASES = ("draft", "score", "rewrite")

CLAIM = ("Fast and Accurate Inference-Time Compute via Speculative Reasoning (SpecReason, Pan et al. 2025; "
         "QwQ-32B, Skywork-OR1-32B or R1-70B as the base model, R1-1.5B or Zyphra-1.5B drafting; AIME, MATH500, "
         "GPQA): a lightweight model writes each reasoning step, the base model only judges it (one prefill, a "
         "0-9 utility score read from its next-token log-probs) and regenerates the steps scored below a "
         "threshold. Against the base model alone this is 1.4-3.0x faster, with accuracy changes of +0.4 to "
         "+9.0 points; the threshold trades speed for accuracy.")


def parse_run_id(run_id: str) -> tuple[str, str, float | None] | None:
    """(prefix, kind, threshold) of a configuration's run id: kind ``base``, ``draft`` or ``spec``."""
    m = RUN_ID.match(run_id)
    if m is None:
        return None
    if m["thr"] is not None:
        return m["prefix"], "spec", float(m["thr"])
    return m["prefix"], "base" if m["base"] is not None else "draft", None


def default_run_ids(prefix: str = PREFIX, step_tokens: int = 128) -> tuple[str, ...]:
    return (f"{prefix}-base-{BASE}", f"{prefix}-draft-{DRAFT}",
            *(f"{prefix}-st{step_tokens}-thr{t:g}" for t in THRESHOLDS))


def pool_dir() -> Path:
    from ttscale.pools import POOL_DIR

    return POOL_DIR / "speculative"


@dataclass
class ConfigRun:
    """One configuration's results per problem."""

    run_id: str
    kind: str
    threshold: float | None
    model: str
    info: ModelInfo | None
    correct: dict[str, bool]
    wall: dict[str, float]
    """The solve's seconds per problem (the strategy's own clock for ``spec``, the engine's for one sample)."""
    accepted: int = 0
    rejected: int = 0
    phase_wall: dict[str, float] = field(default_factory=dict)
    phase_tokens: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.kind == "spec":
            t = self.threshold or 0.0
            note = " (draft steps all kept)" if t <= 0 else " (base rewrites every step)" if t >= 10 else ""
            return f"speculative, threshold {t:g}{note}"
        return f"{self.model} alone"


def _wall(result: dict[str, Any]) -> float:
    spec = result.get("meta", {}).get("speculative")
    if spec is not None:
        return float(spec["wall_s"]["total"])
    return float(result["usage"]["wall_s"])


def _collect(run_id: str, model: dict[str, Any], results: list[dict[str, Any]]) -> ConfigRun | None:
    parsed = parse_run_id(run_id)
    if parsed is None:
        raise ConfigError(f"{run_id!r} is not a speculative-reasoning configuration run id "
                          "(<prefix>-base-<model>, <prefix>-draft-<model> or <prefix>-st<N>-thr<X>)")
    if not results:
        return None
    run = ConfigRun(run_id, parsed[1], parsed[2], str(model.get("name", "")), model_info_from_record(model),
                    {r["problem_id"]: bool(r["correct"]) for r in results},
                    {r["problem_id"]: _wall(r) for r in results})
    run.phase_wall = dict.fromkeys(PHASES, 0.0)
    run.phase_tokens = {p: {"prefilled": 0, "generated": 0} for p in PHASES}
    for r in results:
        spec = r.get("meta", {}).get("speculative")
        if spec is None:
            continue
        run.accepted += int(spec["accepted"])
        run.rejected += int(spec["rejected"])
        for p in PHASES:
            run.phase_wall[p] += float(spec["wall_s"][p])
            run.phase_tokens[p]["prefilled"] += int(spec["usage"][p]["prefilled_tokens"])
            run.phase_tokens[p]["generated"] += int(spec["usage"][p]["generated_tokens"])
    return run


def read_config_run(store: Store, run_id: str) -> ConfigRun | None:
    """A configuration's results from ``store``, else from its shipped file; None when neither has it."""
    rec = store.get_run(run_id)
    if rec is not None:
        return _collect(run_id, rec.model, store.results(run_id))
    path = pool_dir() / f"{run_id}.jsonl.gz"
    if not path.exists():
        return None
    from ttscale.replay.pool_file import read_pool_file

    header, problems, _ = read_pool_file(path)
    return _collect(run_id, header.get("model", {}), [p["result"] for p in problems if p.get("result")])


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n."""
    if n == 0:
        return 0.0, 1.0
    p, d = k / n, 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * float(np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / d
    return max(0.0, c - h), min(1.0, c + h)


@dataclass(frozen=True)
class Versus:
    """A configuration against the base model alone, over the problems both solved."""

    accuracy: float
    acc_ci: tuple[float, float]
    diff: float
    diff_ci: tuple[float, float]
    speedup: float
    """Base wall / this configuration's wall, summed over the problems."""
    speedup_ci: tuple[float, float]


def versus(run: ConfigRun, base: ConfigRun, ids: list[str], reps: int = BOOTSTRAP) -> Versus:
    a = np.array([run.correct[i] for i in ids], dtype=float)
    b = np.array([base.correct[i] for i in ids], dtype=float)
    wa = np.array([run.wall[i] for i in ids])
    wb = np.array([base.wall[i] for i in ids])

    def speedup(idx: np.ndarray) -> float:
        return float(wb[idx].sum() / max(wa[idx].sum(), 1e-12))

    return Versus(float(a.mean()), wilson(int(a.sum()), len(ids)), float((a - b).mean()),
                  bootstrap(len(ids), lambda idx: float((a[idx] - b[idx]).mean()), reps),
                  speedup(np.arange(len(ids))), bootstrap(len(ids), speedup, reps))


def scoring_in_decode_steps(info: ModelInfo, hw_name: str, step_tokens: int = 150, context: int = 400) -> float:
    """A scoring prefill of ``step_tokens`` tokens after ``context`` cached ones, in the base model's decode
    steps, on hardware profile ``hw_name`` (the roofline): about 1 where decode is memory-bound (a GPU), many
    where compute-bound (this CPU)."""
    from ttscale.roofline import load_profile, prefill_seconds, step_seconds

    hw = load_profile(hw_name)
    return prefill_seconds(info, hw, step_tokens, context=context) / step_seconds(info, hw, sequences=1, new_tokens=1,
                                                                                  context=context)


def run(store: Store, run_ids: list[str], out_dir: Path) -> Page:
    runs: dict[str, ConfigRun] = {}
    missing = []
    for rid in run_ids:
        got = read_config_run(store, rid)
        if got is None:
            missing.append(rid)
        else:
            runs[rid] = got
    bases = [r for r in runs.values() if r.kind == "base"]
    if not bases:
        raise ConfigError("speculative-reasoning needs the base model's run (<prefix>-base-<model>) among the pools; "
                          f"found: {', '.join(runs) or 'none'}")
    base = bases[0]
    ids = sorted(set.intersection(*(set(r.correct) for r in runs.values())))
    if not ids:
        raise ConfigError("the configurations share no solved problem")
    others = [r for r in runs.values() if r is not base]
    others.sort(key=lambda r: (r.kind != "draft", r.threshold or 0.0))
    vs = {r.run_id: versus(r, base, ids) for r in others}
    b_acc = float(np.mean([base.correct[i] for i in ids]))
    b_lo, b_hi = wilson(sum(base.correct[i] for i in ids), len(ids))
    b_wall = sum(base.wall[i] for i in ids)

    rows = [[f"{base.label}", f"{b_acc:.3f} {ci(b_lo, b_hi)}", "-", f"{b_wall:.0f} s", "1.00", "", ""]]
    for r in others:
        v = vs[r.run_id]
        kept = f"{r.accepted / (r.accepted + r.rejected):.2f}" if r.accepted + r.rejected else ""
        total = sum(r.phase_wall.values())
        split = " / ".join(f"{r.phase_wall[p] / total:.0%}" for p in PHASES) if r.kind == "spec" and total else ""
        rows.append([r.label, f"{v.accuracy:.3f} {ci(*v.acc_ci)}", f"{v.diff:+.3f} {ci(*v.diff_ci)}",
                     f"{sum(r.wall[i] for i in ids):.0f} s", f"{v.speedup:.2f} {ci(*v.speedup_ci, digits=2)}", kept,
                     split])
    main_table = table(["configuration", "accuracy [Wilson 95%]", "vs base alone [paired 95%]", "wall",
                        "x faster than base [95%]", "steps kept", "draft / score / rewrite time"], rows)

    in_loop = [r for r in others if r.kind == "spec" and 0.0 < (r.threshold or 0.0) < 10.0]
    matched = [r for r in in_loop if b_lo <= vs[r.run_id].accuracy <= b_hi]
    best = max(matched, key=lambda r: vs[r.run_id].speedup) if matched else None
    n = len(ids)
    if best is not None:
        v = vs[best.run_id]
        holds = v.speedup_ci[0] >= 1.4
        speed_verdict = (f"With the base model scoring steps, the fastest threshold whose accuracy stays inside the "
                         f"base model's 95% interval ({b_lo:.2f}-{b_hi:.2f}, {n} problems) is {best.threshold:g}: "
                         f"{v.speedup:.2f}x the base model's speed {ci(*v.speedup_ci, digits=2)}, accuracy "
                         f"{v.diff:+.3f} {ci(*v.diff_ci)} against it. The claimed 1.4-3.0x speed-up "
                         f"{'holds' if holds else 'does not hold'} here.")
    else:
        speed_verdict = ("No threshold with the base model in the loop keeps accuracy inside the base model's 95% "
                         f"interval ({b_lo:.2f}-{b_hi:.2f}, {n} problems), so the claim does not hold here.")
    drafts = [r for r in others if r.kind == "draft"]
    if drafts and b_lo <= vs[drafts[0].run_id].accuracy <= b_hi:
        speed_verdict += (f" At {n} problems the interval is wide: the draft model alone "
                          f"({vs[drafts[0].run_id].accuracy:.3f}, {vs[drafts[0].run_id].speedup:.2f}x) is inside it too.")
    why = _why(in_loop, base)
    verdict = " ".join(s for s in (speed_verdict, why) if s)

    sections = ["## Configurations",
                f"GSM8K (`gsm-symbolic`), the first {n} problems solved by every configuration; greedy decoding; "
                f"base {base.model}, draft {drafts[0].model if drafts else DRAFT}. Wall is each problem's solve time "
                "on this machine's 2 cores (one problem at a time, configurations interleaved per problem so load "
                "shifts hit all alike); the speed-up's interval resamples problems.", main_table]
    sections += _claims_section(in_loop, [r for r in others if r.kind == "spec"], best, vs, ids)
    sections += _phase_section(in_loop, base)
    sections += _roofline_section(base, in_loop)
    fig_name = _figure(base, others, vs, ids, out_dir)
    sections += ["## Accuracy against wall time", f"![accuracy vs wall time]({fig_name})"]
    if missing:
        sections += ["## Pools not found", "\n".join(f"- `{m}`" for m in missing)]
    return Page("speculative-reasoning", "Speculative reasoning: a small model drafts, the base model checks (SpecReason)",
                CLAIM, verdict, sections)


def _why(in_loop: list[ConfigRun], base: ConfigRun) -> str:
    """Where the strategy's time goes, against what the base model spends decoding alone."""
    if not in_loop:
        return ""
    score_s = sum(r.phase_wall["score"] for r in in_loop)
    scored = sum(r.accepted + r.rejected for r in in_loop)
    total = sum(sum(r.phase_wall.values()) for r in in_loop)
    if not scored or not total:
        return ""
    return (f"Why: scoring is not cheap on this CPU. Over the thresholds with the base model in the loop, scoring "
            f"took {score_s / total:.0%} of the time ({score_s / scored:.2f} s per scored step), and the draft's "
            f"own decoding comes on top; prefill runs only a few times faster than decode here (see the roofline "
            "below), while the paper's GPUs prefill a step in about one decode step's time.")


def _claims_section(in_loop: list[ConfigRun], spec: list[ConfigRun], best: ConfigRun | None,
                    vs: dict[str, Versus], ids: list[str]) -> list[str]:
    """Each of the paper's claims beside the measurement, with a verdict."""
    if not in_loop:
        return []
    rows = []
    pick = best or max(in_loop, key=lambda r: vs[r.run_id].speedup)
    v = vs[pick.run_id]
    speed = ("holds" if v.speedup_ci[0] >= 1.4 else "does not hold" if v.speedup_ci[1] < 1.4
             else "not resolved")
    rows.append(["1.4-3.0x faster than the base model alone", f"{v.speedup:.2f}x {ci(*v.speedup_ci, digits=2)} at "
                 f"threshold {pick.threshold:g}" + ("" if best else " (outside the base model's interval)"), speed])
    lo, hi = v.diff_ci
    acc = ("holds" if lo >= 0.004 else "does not hold" if hi < 0.004 else
           f"not resolved at {len(ids)} problems")
    rows.append(["accuracy +0.4 to +9.0 points against the base model alone",
                 f"{100 * v.diff:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}] at threshold {pick.threshold:g}", acc])
    if len(spec) >= 2:  # the whole curve, from keeping every drafted step (0) to rewriting every one (10)
        by_t = sorted(spec, key=lambda r: r.threshold or 0.0)
        walls = [sum(r.wall[i] for i in ids) for r in by_t]
        accs = [vs[r.run_id].accuracy for r in by_t]
        slower = all(b >= a for a, b in zip(walls, walls[1:], strict=False))
        better = all(b >= a for a, b in zip(accs, accs[1:], strict=False))
        trade = "holds" if slower and better else "partly" if slower or better else "does not hold"
        rows.append(["a higher threshold trades speed for accuracy",
                     ", ".join(f"{r.threshold:g}: {w / len(ids):.0f} s, {a:.2f}" for r, w, a in zip(by_t, walls, accs,
                                                                                               strict=True)), trade])
    return ["## The paper's claims here", table(["claim", "here", "verdict"], rows)]


def _phase_section(in_loop: list[ConfigRun], base: ConfigRun) -> list[str]:
    if not in_loop:
        return []
    rows = []
    for r in in_loop:
        t = r.phase_tokens
        rows.append([f"{r.threshold:g}", str(r.accepted + r.rejected), str(r.accepted),
                     *(f"{r.phase_wall[p]:.0f} s ({t[p]['prefilled']} / {t[p]['generated']})" for p in PHASES)])
    return ["## Where the time goes",
            "Per threshold with the base model in the loop: steps scored and kept, and each phase's seconds with "
            "(prefilled / generated tokens).",
            table(["threshold", "steps scored", "kept", "draft decode", "base scoring", "base rewrites"], rows)]


def _roofline_section(base: ConfigRun, in_loop: list[ConfigRun]) -> list[str]:
    if base.info is None:
        return []
    steps = sum(r.accepted + r.rejected for r in in_loop)
    per_step = sum(r.phase_tokens["draft"]["generated"] for r in in_loop) / steps if steps else 0.0
    size = f"about {per_step:.0f} tokens, so as many decode steps, per GSM8K step here" if per_step else "a GSM8K step"
    score_tokens = round(sum(r.phase_tokens["score"]["prefilled"] for r in in_loop) / steps) if steps else 150
    return ["## Where it would pay (roofline)",
            f"What one scoring prefill of {score_tokens} tokens (the mean prefilled per score here; after 400 cached "
            f"tokens) costs in {base.model}'s own "
            "decode steps, by the calibrated roofline (`ttscale hardware`). Speculative reasoning pays when a score "
            f"costs far less than the base model writing the step itself ({size}): on a GPU, where decode is memory-bound, the prefill is nearly free; on this CPU both are "
            "compute-bound and the score costs about as much as writing the step.",
            table(["hardware profile", "scoring prefill, in decode steps"],
                  [[hw, f"{scoring_in_decode_steps(base.info, hw, score_tokens):.1f}"]
                   for hw in ("cpu-2core", "h100", "a100", "l4")])]


def _figure(base: ConfigRun, others: list[ConfigRun], vs: dict[str, Versus], ids: list[str], out_dir: Path) -> str:
    name = "speculative-reasoning.png"
    fig, ax = figure(out_dir / name)
    n = len(ids)
    b_acc = float(np.mean([base.correct[i] for i in ids]))
    b_lo, b_hi = wilson(int(round(b_acc * n)), n)
    b_wall = sum(base.wall[i] for i in ids) / n
    ax.axhspan(b_lo, b_hi, color="0.9", label=f"{base.model} alone, 95% interval")  # type: ignore[attr-defined]
    ax.errorbar([b_wall], [b_acc], yerr=[[b_acc - b_lo], [b_hi - b_acc]], fmt="s", color="k",  # type: ignore[attr-defined]
                label=f"{base.model} alone")
    spec = [r for r in others if r.kind == "spec"]
    for r in others:
        v = vs[r.run_id]
        w = sum(r.wall[i] for i in ids) / n
        err = [[v.accuracy - v.acc_ci[0]], [v.acc_ci[1] - v.accuracy]]
        if r.kind == "draft":
            ax.errorbar([w], [v.accuracy], yerr=err, fmt="^", color="tab:green", label=f"{r.model} alone")  # type: ignore[attr-defined]
    if spec:
        xs = [sum(r.wall[i] for i in ids) / n for r in spec]
        ys = [vs[r.run_id].accuracy for r in spec]
        ax.plot(xs, ys, "o-", color="tab:blue", label="speculative, by threshold")  # type: ignore[attr-defined]
        for r, x, y in zip(spec, xs, ys, strict=True):
            ax.annotate(f"{r.threshold:g}", (x, y), textcoords="offset points", xytext=(4, 4))  # type: ignore[attr-defined]
    ax.set_xlabel("seconds per problem (this CPU)")  # type: ignore[attr-defined]
    ax.set_ylabel(f"accuracy ({n} GSM8K problems)")  # type: ignore[attr-defined]
    ax.legend(fontsize=8)  # type: ignore[attr-defined]
    save(fig)
    return name


EXPERIMENT = Experiment("speculative-reasoning", "Speculative reasoning (SpecReason)", default_run_ids(), run)
