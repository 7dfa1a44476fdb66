"""``rag-scaling``: input compute for retrieval-augmented generation (Yue et al. 2024) on MuSiQue.

The pools: one stored run per configuration (k retrieved passages, m demonstrations, n IterDRAG rounds;
n = 0 is DRAG), run ids ``<prefix>-k<k>-m<m>-n<n>``. DRAG configurations are ``ttscale sweep``s (several
samples per question, replayable like any pool); IterDRAG configurations are ``ttscale run --strategy
iterdrag`` (one sample per question) and ship beside the sweeps in ``ttscale/pools/iterdrag/``.
``scripts/rag_pool.py`` makes them resumably (:data:`PILOT`, :func:`run_command`, :func:`too_long`).

The page reads per sample the exact-match and F1 grades and the effective context length (prompt tokens
summed over the sample's calls; for a DRAG sample its one prompt), and per configuration the tokens the
engine actually prefilled. Nothing is generated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.experiments.common import BOOTSTRAP, SEED, stored_run, tokens_label
from ttscale.experiments.page import Page, ci, table
from ttscale.experiments.rag_choices import section as choices_section
from ttscale.planner.input_output import Arm, ArmSample
from ttscale.store import Store
from ttscale.tasks.rag_data import normalize_answer

K_GRID = (0, 1, 2, 5, 10, 20, 50)
M_GRID = (0, 1, 2, 4)
N_GRID = (0, 1, 2, 3, 4)


@dataclass(frozen=True, order=True)
class RagConfig:
    """One input-compute configuration: k passages per (sub-)query, m demonstrations, n IterDRAG rounds
    (0: DRAG, one call)."""

    k: int
    m: int
    n: int = 0

    def run_id(self, prefix: str) -> str:
        return f"{prefix}-k{self.k}-m{self.m}-n{self.n}"

    @property
    def method(self) -> str:
        return "DRAG" if self.n == 0 else "IterDRAG"

    @property
    def label(self) -> str:
        return f"k={self.k} m={self.m}" + (f" n={self.n}" if self.n else "")


PILOT: tuple[RagConfig, ...] = (
    *(RagConfig(k, m) for k in (0, 1, 2, 5) for m in (0, 1, 2)),
    RagConfig(2, 1, 1), RagConfig(2, 1, 2),
    *(RagConfig(10, m) for m in (0, 1, 2)),
    RagConfig(20, 0),
    RagConfig(5, 1, 1), RagConfig(5, 1, 2),
    RagConfig(20, 1), RagConfig(20, 2),
)
"""The pilot grid, cheapest first (so a partial pool still spans the budgets): DRAG at k in {0, 1, 2, 5,
10, 20} x m in {0, 1, 2}, IterDRAG n in {1, 2} at (k, m) = (2, 1) and (5, 1)."""

EXTENSION: tuple[RagConfig, ...] = (
    *(RagConfig(k, 4) for k in (0, 1, 2, 5)),
    RagConfig(2, 1, 3), RagConfig(2, 1, 4),
    RagConfig(50, 0),
    RagConfig(10, 4), RagConfig(5, 1, 3), RagConfig(5, 1, 4),
    RagConfig(20, 4), RagConfig(50, 1),
)
"""Beyond the pilot, cheapest first: m = 4, IterDRAG n in {3, 4}, k = 50."""

FULL: tuple[RagConfig, ...] = PILOT + EXTENSION
"""The smaller model's grid: every value of k, m and n the issue names, on a cross-section of the 7 x 4 x 5 cube
(the whole cube is about 15 hours of model time on 2 cores)."""

LARGER: tuple[RagConfig, ...] = (
    RagConfig(0, 0), RagConfig(1, 0), RagConfig(0, 1), RagConfig(2, 1), RagConfig(5, 1), RagConfig(2, 1, 1),
    RagConfig(10, 1),
    RagConfig(2, 0), RagConfig(1, 1), RagConfig(0, 2), RagConfig(5, 0), RagConfig(2, 2), RagConfig(2, 1, 2),
    RagConfig(10, 0), RagConfig(5, 2), RagConfig(5, 1, 1), RagConfig(10, 2),
)
"""The larger model's fewer configurations: zero-shot and the two one-step gains first (its own i_doc and i_shot,
so the allocation model's a and b separate across the two models), then the middle of the smaller model's grid
(k up to 10, m up to 2, IterDRAG n up to 2)."""

GRIDS: dict[str, tuple[RagConfig, ...]] = {"pilot": PILOT, "full": FULL, "larger": LARGER}


def run_command(cfg: RagConfig, *, model: str, store: str, limit: int, samples: int, max_tokens: int,
                prefix: str, temperature: float = 0.8, seed: int = 0) -> list[str]:
    """The ``ttscale`` command that makes configuration ``cfg``'s pool (resumable under its run id)."""
    common = ["--store", store, "--run-id", cfg.run_id(prefix), "--task", "rag", "-T", f"docs={cfg.k}",
              "--shots", str(cfg.m), "--max-tokens", str(max_tokens), "--temperature", str(temperature),
              "--seed", str(seed), "--limit", str(limit), "--model", model, "--no-progress"]
    if cfg.n == 0:
        return ["ttscale", "sweep", *common, "-k", str(samples), "--wave", str(samples)]
    return ["ttscale", "run", *common, "--strategy", "iterdrag", "--option", f"rounds={cfg.n}"]


def too_long(cfg: RagConfig, *, model: str, limit: int, samples: int, max_tokens: int, n_ctx: int) -> str | None:
    """Why configuration ``cfg`` does not fit the engine's context of ``n_ctx`` tokens (its longest first
    prompt plus the tokens its samples generate), or None. Tokenizes with the model's own tokenizer; runs
    nothing. IterDRAG's later calls are checked by the strategy itself before each runs."""
    from ttscale.registry import make_backend, make_task
    from ttscale.tasks.rag import RagTask

    task = make_task("rag", shots=cfg.m, max_tokens=max_tokens, model=model, options={"docs": cfg.k})
    assert isinstance(task, RagTask)
    be = make_backend("llama-cpp", model, n_ctx=256, n_seq_max=1)
    try:
        count = be.count_prompt_tokens
        problems = task.problems(limit=limit)
        if cfg.n == 0:
            longest = max(count(task.request(p)) for p in problems)
            need = longest + samples * max_tokens + 1
        else:
            longest = max(count(task.iter_request(p, [], "follow_up")) for p in problems)
            need = longest + max_tokens + 1
    finally:
        be.close()
    if need > n_ctx:
        return (f"its longest prompt has {longest} tokens, plus {max_tokens} generated"
                f"{f' x {samples} samples' if cfg.n == 0 else ''} exceeds the context of {n_ctx} tokens")
    return None


# ---- the experiment ---------------------------------------------------------------------------------

PREFIX = "rag-qwen05"
LARGER_PREFIX = "rag-qwen15"
RUN_ID = re.compile(r"^(?P<prefix>.+)-k(?P<k>\d+)-m(?P<m>\d+)-n(?P<n>\d+)$")
METRICS = ("f1", "em")
SPLITS = 200
"""Random halvings of the questions for the held-out checks."""

CLAIM = ("Inference Scaling for Long-Context Retrieval Augmented Generation (Yue et al. 2024; Gemini 1.5 Flash on "
         "Bamboogle, HotpotQA, MuSiQue and 2WikiMultiHopQA, budgets of 16k to 5M tokens): the budget is the "
         "*effective context length*, input tokens summed over every model call. With the best configuration "
         "of k retrieved documents, m demonstrations and n IterDRAG iterations per budget, accuracy grows nearly "
         "linearly in the log of the budget (up to about 1M tokens); one-call DRAG is best at small budgets "
         "(16-32k), IterDRAG from 128k; the best configuration beats standard RAG by up to 58.9%. A "
         "computation-allocation model, `logit(P) = (a + b * i)^T log(k, m, n) + c` with i = (i_doc, i_shot, 0) the "
         "measured gains of one document and one demonstration over zero-shot, fits with R^2 = 0.903; the "
         "configuration it predicts reaches 96.6% of the oracle configuration's accuracy at 1M tokens, and "
         "extrapolating from budgets up to 128k to 1M misses by 2.8%.")


def parse_run_id(run_id: str) -> tuple[str, RagConfig] | None:
    """(prefix, configuration) of a run id ``<prefix>-k<k>-m<m>-n<n>``, or None."""
    m = RUN_ID.match(run_id)
    if m is None:
        return None
    return m["prefix"], RagConfig(int(m["k"]), int(m["m"]), int(m["n"]))


def pool_dirs() -> list[Path]:
    """Where shipped RAG pools live: the sweeps beside the other pools, IterDRAG runs under ``iterdrag/``."""
    from ttscale.pools import POOL_DIR

    return [POOL_DIR, POOL_DIR / "iterdrag"]


def shipped_rag_runs(prefix: str = PREFIX) -> list[str]:
    """Run ids of the shipped RAG configuration pools with ``prefix`` (sweeps and IterDRAG runs)."""
    ids = {p.name[: -len(".jsonl.gz")] for d in pool_dirs() for p in d.glob(f"{prefix}-*.jsonl.gz")}
    return sorted(i for i in ids if (parsed := parse_run_id(i)) is not None and parsed[0] == prefix)


@dataclass
class ConfigRun:
    """One configuration's run: per question, the mean over its samples of EM, F1 and the effective context
    length (prompt tokens summed over the sample's calls); the tokens the engine prefilled in all."""

    run_id: str
    cfg: RagConfig
    model: str
    em: dict[str, float]
    f1: dict[str, float]
    context: dict[str, float]
    prefilled: float
    samples: int
    refused: int = 0
    """IterDRAG samples that stopped on a refusal (context or budget) without a final answer."""
    per_sample: dict[str, list[ArmSample]] = field(default_factory=dict)
    """Each question's samples, for replaying aggregation rules over them (:mod:`ttscale.planner.input_output`)."""
    n_params: int = 0
    """The model's parameter count (from its record), for pricing prefill compute across models."""

    @property
    def questions(self) -> set[str]:
        return set(self.em)


def _grades(s: dict[str, Any]) -> tuple[float, float]:
    g = s.get("grade") or {}
    em = g.get("em", bool(s.get("correct")))
    return float(bool(em)), float(g.get("f1", float(bool(em))))


def _collect(run_id: str, cfg: RagConfig, model: str, rows: list[tuple[str, dict[str, Any]]],
             n_params: int = 0) -> ConfigRun | None:
    by: dict[str, list[dict[str, Any]]] = {}
    for pid, s in rows:
        by.setdefault(pid, []).append(s)
    if not by:
        return None
    em, f1, ctx, per = {}, {}, {}, {}
    for pid, ss in by.items():
        grades = [_grades(s) for s in ss]
        em[pid] = float(np.mean([g[0] for g in grades]))
        f1[pid] = float(np.mean([g[1] for g in grades]))
        ctx[pid] = float(np.mean([s.get("prompt_tokens") or 0 for s in ss]))
        per[pid] = [ArmSample(normalize_answer(s["answer"]) if s.get("answer") else None, {"em": g[0], "f1": g[1]},
                              s.get("logprob"), int(s.get("n_tokens") or 0), float(s.get("prompt_tokens") or 0),
                              float(s.get("prefilled_tokens") or 0)) for s, g in zip(ss, grades, strict=True)]
    return ConfigRun(run_id, cfg, model, em, f1, ctx, float(sum(s.get("prefilled_tokens") or 0 for _, s in rows)),
                     len(rows), refused=sum(1 for _, s in rows if s.get("finish_reason") == "refused"),
                     per_sample=per, n_params=n_params)


def read_config_run(store: Store, run_id: str) -> ConfigRun | None:
    """A configuration's run from ``store``, else from a shipped file (IterDRAG runs are not in the shipped
    store, which holds sweeps); None when neither has it."""
    parsed = parse_run_id(run_id)
    if parsed is None:
        raise ConfigError(f"{run_id!r} is not a RAG configuration run id (<prefix>-k<k>-m<m>-n<n>)")
    found = stored_run(store, run_id, pool_dirs())
    if found is None:
        return None
    model, _, rows = found
    return _collect(run_id, parsed[1], str(model.get("name", "")), rows, int(model.get("n_params") or 0))


# ---- the computation-allocation model ---------------------------------------------------------------


def features(cfgs: Sequence[RagConfig]) -> np.ndarray:
    """log(1 + (k, m, n)) per configuration (n: IterDRAG rounds, 0 for DRAG; the 1 keeps k = 0, m = 0 and
    DRAG finite)."""
    return np.log1p(np.array([[c.k, c.m, c.n] for c in cfgs], dtype=float))


def logit(p: np.ndarray | float, eps: float) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=float), eps, 1 - eps)
    return np.asarray(np.log(q / (1 - q)))


@dataclass(frozen=True)
class AllocationFit:
    """``logit(P) = (a + b * i)^T x + c`` with x = log(1 + (k, m, n)) and i = (i_doc, i_shot, 0).

    ``b`` is None when every row has the same i (one task and model): then only ``a + b * i`` is identified,
    and ``a`` holds it."""

    a: np.ndarray
    b: np.ndarray | None
    c: float
    r2: float
    """On the logit scale, over the fitted rows."""

    def predict_logit(self, x: np.ndarray, i: np.ndarray) -> np.ndarray:
        w = np.broadcast_to(self.a, x.shape).copy()
        if self.b is not None:
            w[:, :2] += self.b * np.broadcast_to(i, (x.shape[0], 2))
        return np.asarray((w * x).sum(axis=1) + self.c)

    def predict(self, x: np.ndarray, i: np.ndarray) -> np.ndarray:
        return np.asarray(1 / (1 + np.exp(-self.predict_logit(x, i))))


def fit_allocation(x: np.ndarray, i: np.ndarray, y: np.ndarray) -> AllocationFit:
    """Least squares of the allocation model: ``x`` (R, 3) log features, ``i`` (R, 2) the row's task gains
    (i_doc, i_shot), ``y`` (R,) logit accuracy. Columns of x that never vary are left out (their weight 0)."""
    x, i, y = np.asarray(x, float), np.asarray(i, float), np.asarray(y, float)
    if len(y) < 2:
        raise ConfigError("the allocation model needs at least two configurations")
    one_task = bool(np.ptp(i[:, 0]) < 1e-12 and np.ptp(i[:, 1]) < 1e-12)
    cols = [x[:, 0], x[:, 1], x[:, 2]] + ([] if one_task else [i[:, 0] * x[:, 0], i[:, 1] * x[:, 1]])
    used = [j for j, col in enumerate(cols) if np.ptp(col) > 1e-12]
    design = np.column_stack([*(cols[j] for j in used), np.ones(len(y))])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    full = np.zeros(len(cols))
    full[used] = coef[:-1]
    pred = design @ coef
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else float("nan")
    return AllocationFit(full[:3], None if one_task else full[3:5], float(coef[-1]), r2)


# ---- the measurements -------------------------------------------------------------------------------


@dataclass
class Grid:
    """The complete configurations on their common questions: per-question metrics as (C, Q) arrays."""

    runs: list[ConfigRun]
    questions: list[str]
    metric: dict[str, np.ndarray]
    """``f1`` and ``em``: (C, Q), the mean over each question's samples."""
    context: np.ndarray
    """(C, Q) effective context length per question."""
    left_out: list[str]

    @property
    def cfgs(self) -> list[RagConfig]:
        return [r.cfg for r in self.runs]

    def budget(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(C,) mean effective context length per configuration (over ``rows`` of the questions)."""
        c = self.context if rows is None else self.context[:, rows]
        return np.asarray(c.mean(axis=1))

    def gains(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """(i_doc, i_shot): accuracy with one document / one demonstration minus zero-shot (k = m = n = 0)."""
        p = self.metric[name] if rows is None else self.metric[name][:, rows]
        acc = {c: float(p[j].mean()) for j, c in enumerate(self.cfgs)}
        base = acc.get(RagConfig(0, 0))
        doc, shot = acc.get(RagConfig(1, 0)), acc.get(RagConfig(0, 1))
        if base is None or doc is None or shot is None:
            return np.zeros(2)
        return np.array([doc - base, shot - base])


def build_grid(found: list[ConfigRun], complete: float = 0.8) -> Grid:
    """Configurations holding at least ``complete`` of the largest question count, on the questions all of
    them hold; the rest are listed in ``left_out``."""
    most = max(len(r.questions) for r in found)
    keep = [r for r in found if len(r.questions) >= complete * most]
    left = [f"`{r.run_id}` ({len(r.questions)} of {most} questions so far)" for r in found if r not in keep]
    common = set.intersection(*(r.questions for r in keep))
    order = [q for q in keep[0].em if q in common]
    keep.sort(key=lambda r: (r.cfg.n > 0, r.cfg))
    metric = {"f1": np.array([[r.f1[q] for q in order] for r in keep]),
              "em": np.array([[r.em[q] for q in order] for r in keep])}
    context = np.array([[r.context[q] for q in order] for r in keep])
    return Grid(keep, order, metric, context, left)


def budgets_for(lengths: np.ndarray) -> list[int]:
    """Powers of two from the smallest configuration's length to the first that holds them all."""
    lo = 2 ** math.ceil(math.log2(max(float(lengths.min()), 1.0)))
    hi = 2 ** math.ceil(math.log2(max(float(lengths.max()), 1.0)))
    return [2**j for j in range(int(math.log2(lo)), int(math.log2(hi)) + 1)]


def best_within(acc: np.ndarray, lengths: np.ndarray, budget: float, mask: np.ndarray | None = None) -> int | None:
    """Index of the most accurate configuration whose effective context fits ``budget`` (among ``mask``)."""
    ok = lengths <= budget
    if mask is not None:
        ok &= mask
    if not ok.any():
        return None
    return int(np.flatnonzero(ok)[np.argmax(acc[ok])])


@dataclass
class Allocation:
    name: str
    fit: AllocationFit
    gains: np.ndarray
    r2_p: float
    """R^2 on the accuracy scale."""
    eps: float


def _eps(grid: Grid, p: np.ndarray) -> float:
    """Half a sample: the clipping before the logit."""
    return 0.5 / (p.shape[1] * max(1, min(r.samples // max(len(r.questions), 1) for r in grid.runs)))


def allocation_rows(grid: Grid, name: str, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The allocation model's rows, one per configuration on the questions ``rows``: features x (C, 3), the
    grid's gains i (C, 2) and the logit of the accuracy (C,)."""
    p = grid.metric[name] if rows is None else grid.metric[name][:, rows]
    x = features(grid.cfgs)
    return x, np.broadcast_to(grid.gains(name, rows), (len(x), 2)), logit(p.mean(axis=1), _eps(grid, p))


def allocation(grid: Grid, name: str, rows: np.ndarray | None = None, cfg_mask: np.ndarray | None = None) -> Allocation:
    """The allocation model fitted to the configurations (``cfg_mask``) on the questions ``rows``."""
    p = grid.metric[name] if rows is None else grid.metric[name][:, rows]
    acc = p.mean(axis=1)
    eps = _eps(grid, p)
    sel = np.ones(len(acc), bool) if cfg_mask is None else cfg_mask
    x_all, i_all, y_all = allocation_rows(grid, name, rows)
    x, gains = x_all[sel], np.array(i_all[0])
    fit = fit_allocation(x, i_all[sel], y_all[sel])
    pred = fit.predict(x, gains)
    ss = float(((acc[sel] - acc[sel].mean()) ** 2).sum())
    r2_p = 1 - float(((acc[sel] - pred) ** 2).sum()) / ss if ss > 0 else float("nan")
    return Allocation(name, fit, gains, r2_p, eps)


@dataclass
class HeldOut:
    budget: int
    shares: np.ndarray
    """Per split: held-out accuracy of the predicted configuration / of the held-out oracle's."""
    naive: np.ndarray
    """The same for the configuration that spends the most of the budget."""
    picks: dict[str, int]
    """How often each configuration was predicted."""


def held_out(grid: Grid, name: str, budgets: list[int], splits: int = SPLITS, seed: int = SEED,
             fit_below: float | None = None) -> list[HeldOut]:
    """Fit on a random half of the questions (only configurations up to ``fit_below`` tokens, if given),
    choose per budget the configuration the model predicts best, and score it on the other half against
    the other half's best configuration within the budget."""
    rng = np.random.default_rng(seed)
    Q = len(grid.questions)
    x = features(grid.cfgs)
    out = {b: ([], [], {}) for b in budgets}  # type: ignore[var-annotated]
    for _ in range(splits):
        perm = rng.permutation(Q)
        fit_rows, test_rows = perm[: Q // 2], perm[Q // 2:]
        lengths = grid.budget(fit_rows)
        mask = None if fit_below is None else lengths <= fit_below
        try:
            al = allocation(grid, name, fit_rows, mask)
        except ConfigError:
            continue
        pred = al.fit.predict(x, al.gains)
        test = grid.metric[name][:, test_rows].mean(axis=1)
        for b in budgets:
            oracle = best_within(test, lengths, b)
            chosen = best_within(pred, lengths, b)
            spend = best_within(lengths, lengths, b)
            if oracle is None or chosen is None or spend is None or test[oracle] <= 0:
                continue
            shares, naive, picks = out[b]
            shares.append(test[chosen] / test[oracle])
            naive.append(test[spend] / test[oracle])
            picks[grid.cfgs[chosen].label] = picks.get(grid.cfgs[chosen].label, 0) + 1
    return [HeldOut(b, np.array(s), np.array(nv), pk) for b, (s, nv, pk) in out.items() if s]


def boot(grid: Grid, stat: Any, reps: int = BOOTSTRAP, seed: int = SEED) -> tuple[float, float]:
    """95% percentile interval of ``stat(question indices)`` over resamples of the questions."""
    rng = np.random.default_rng(seed)
    Q = len(grid.questions)
    vals = np.array([stat(rng.integers(0, Q, Q)) for _ in range(reps)], dtype=float)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return float("nan"), float("nan")
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


# ---- the page ---------------------------------------------------------------------------------------



def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _config_table(grid: Grid) -> str:
    rows = []
    for j, r in enumerate(grid.runs):
        Q = len(grid.questions)
        em, f1 = grid.metric["em"][j], grid.metric["f1"][j]
        lo_e, hi_e = boot(grid, lambda q, em=em: float(em[q].mean()))
        lo_f, hi_f = boot(grid, lambda q, f1=f1: float(f1[q].mean()))
        eff = float(grid.context[j].sum())
        per_q = r.samples / max(len(r.questions), 1)
        prefilled = r.prefilled * Q / max(len(r.questions), 1)
        rows.append([r.cfg.method, str(r.cfg.k), str(r.cfg.m), str(r.cfg.n) if r.cfg.n else "-", f"`{r.run_id}`",
                     f"{per_q:.0f}", tokens_label(eff / Q), tokens_label(prefilled / Q),
                     f"{eff * per_q / max(prefilled, 1):.1f}x", f"{em.mean():.3f} {ci(lo_e, hi_e)}",
                     f"{f1.mean():.3f} {ci(lo_f, hi_f)}", str(r.refused) if r.cfg.n else "-"])
    return table(["method", "k", "m", "n", "pool", "samples/question", "effective context per answer",
                  "prefilled per question", "effective / prefilled", "EM [95% CI]", "F1 [95% CI]",
                  "refused"], rows)


Picks = dict[int, tuple[int, int | None, int | None, int | None]]
"""Per budget: the best configuration, the best DRAG, IterDRAG and zero-shot DRAG (indices; None: none fits)."""


def _envelope(grid: Grid, name: str, budgets: list[int]) -> tuple[list[list[str]], Picks]:
    lengths = grid.budget()
    acc = grid.metric[name].mean(axis=1)
    drag = np.array([c.n == 0 for c in grid.cfgs])
    zero = np.array([c.n == 0 and c.m == 0 for c in grid.cfgs])
    rows: list[list[str]] = []
    picks: Picks = {}
    for b in budgets:
        best = best_within(acc, lengths, b)
        if best is None:
            continue
        d, it, z = (best_within(acc, lengths, b, mask) for mask in (drag, ~drag, zero))
        picks[b] = (best, d, it, z)
        p = grid.metric[name][best]
        lo, hi = boot(grid, lambda q, p=p: float(p[q].mean()))

        def cell(j: int | None) -> str:
            return f"{acc[j]:.3f} ({grid.cfgs[j].label})" if j is not None else "-"

        rows.append([tokens_label(b), f"{acc[best]:.3f} {ci(lo, hi)}", grid.cfgs[best].label, cell(d), cell(it), cell(z)])
    return rows, picks


def _envelope_boot(grid: Grid, name: str, budgets: list[int], q: np.ndarray) -> np.ndarray:
    lengths = grid.budget()
    acc = grid.metric[name][:, q].mean(axis=1)
    return np.array([acc[j] if (j := best_within(acc, lengths, b)) is not None else np.nan for b in budgets])


def _slope(budgets: list[int], env: np.ndarray) -> float:
    ok = np.isfinite(env)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log2(np.array(budgets, float)[ok]), env[ok], 1)[0])


def _r2_line(xs: np.ndarray, ys: np.ndarray) -> float:
    coef = np.polyfit(xs, ys, 1)
    ss = float(((ys - ys.mean()) ** 2).sum())
    return 1 - float(((ys - np.polyval(coef, xs)) ** 2).sum()) / ss if ss > 0 else float("nan")


def _log_linear(grid: Grid, name: str, budgets: list[int]) -> str:
    """Claim 1: the envelope's slope per doubling, its linearity, and whether the upper half bends."""
    Q = len(grid.questions)
    env = _envelope_boot(grid, name, budgets, np.arange(Q))
    slope = _slope(budgets, env)
    s_lo, s_hi = boot(grid, lambda q: _slope(budgets, _envelope_boot(grid, name, budgets, q)))
    r2 = _r2_line(np.log2(np.array(budgets, float)), env) if len(budgets) > 2 else float("nan")
    half = len(budgets) // 2
    lower, upper = budgets[:half + 1], budgets[half:]

    def bend(q: np.ndarray) -> float:
        e = _envelope_boot(grid, name, budgets, q)
        return _slope(upper, e[half:]) - _slope(lower, e[:half + 1])

    d_lo, d_hi = boot(grid, bend)
    return (f"{name.upper()}: {slope:+.3f} per doubling of the budget {ci(s_lo, s_hi)}, linear in log budget with "
            f"R^2 {r2:.2f}; the slope over the upper budgets ({tokens_label(upper[0])}-{tokens_label(upper[-1])}) minus the lower "
            f"({tokens_label(lower[0])}-{tokens_label(lower[-1])}): {bend(np.arange(Q)):+.3f} {ci(d_lo, d_hi)}")


def _figure(grid: Grid, budgets: list[int], fits: dict[str, Allocation], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.0), dpi=100)
    lengths = grid.budget()
    colors = {0: "tab:blue", 1: "tab:orange", 2: "tab:green", 4: "tab:red"}
    for ax, name in zip(axes[:2], METRICS, strict=True):
        acc = grid.metric[name].mean(axis=1)
        for m in sorted({c.m for c in grid.cfgs}):
            idx = [j for j, c in enumerate(grid.cfgs) if c.m == m and c.n == 0]
            idx.sort(key=lambda j: grid.cfgs[j].k)
            if idx:
                ax.plot(lengths[idx], acc[idx], "o-", color=colors.get(m, "grey"), alpha=0.8, label=f"DRAG m={m}")
                for j in idx:
                    ax.annotate(f"k{grid.cfgs[j].k}", (lengths[j], acc[j]), fontsize=6, xytext=(2, 2),
                                textcoords="offset points")
        it = [j for j, c in enumerate(grid.cfgs) if c.n > 0]
        if it:
            ax.plot(lengths[it], acc[it], "^", color="black", ms=7, label="IterDRAG")
            for j in it:
                ax.annotate(grid.cfgs[j].label.replace(" ", ""), (lengths[j], acc[j]), fontsize=6, xytext=(2, -8),
                            textcoords="offset points")
        env = [(b, acc[w]) for b in budgets if (w := best_within(acc, lengths, b)) is not None]
        if env:
            ax.step([e[0] for e in env], [e[1] for e in env], where="post", color="grey", lw=1.5, ls="--",
                    label="best within budget")
        ax.set_xscale("log")
        ax.set_xlabel("effective context length per answer (tokens)")
        ax.set_ylabel(name.upper())
        ax.set_title(f"{name.upper()} vs effective context ({grid.runs[0].model})", fontsize=9)
        ax.legend(fontsize=6)
    ax = axes[2]
    x = features(grid.cfgs)
    for name, marker in zip(METRICS, ("o", "s"), strict=True):
        if name not in fits:
            continue
        al = fits[name]
        obs = logit(grid.metric[name].mean(axis=1), al.eps)
        ax.plot(al.fit.predict_logit(x, al.gains), obs, marker, alpha=0.7,
                label=f"{name.upper()}: R^2 {al.fit.r2:.2f}")
    lim = ax.get_xlim()
    ax.plot(lim, lim, color="grey", lw=0.8)
    ax.set_xlabel("allocation model: predicted logit")
    ax.set_ylabel("observed logit (accuracy)")
    ax.set_title("computation-allocation model fit", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(store: Store, pools: list[str], out: Path) -> Page:
    found, missing = [], []
    for rid in pools:
        r = read_config_run(store, rid)
        if r is None:
            missing.append(f"`{rid}`")
        else:
            found.append(r)
    return page(found, missing, out)


def _by_prefix(found: list[ConfigRun]) -> tuple[list[ConfigRun], list[list[ConfigRun]]]:
    """The main model's runs (prefix :data:`PREFIX` if it has two, else the prefix with the most) and the other
    prefixes' runs (the larger model's fewer configurations)."""
    groups: dict[str, list[ConfigRun]] = {}
    for r in found:
        parsed = parse_run_id(r.run_id)
        groups.setdefault(parsed[0] if parsed else "", []).append(r)
    main = PREFIX if len(groups.get(PREFIX, [])) >= 2 else max(groups, key=lambda g: len(groups[g]))
    return groups.pop(main), list(groups.values())


def page(found: list[ConfigRun], missing: list[str], out: Path) -> Page:
    """The page from configuration runs already read (``missing``: run ids not found). Runs of one prefix make
    the grid; another prefix's runs (a larger model) get a section of their own beside it."""
    if len(found) < 2:
        raise ConfigError("rag-scaling needs at least two configuration pools; found "
                          + (", ".join(r.run_id for r in found) or "none") + "; missing " + ", ".join(missing))
    found, others = _by_prefix(found)
    if len(found) < 2:
        raise ConfigError("rag-scaling needs at least two configuration pools of one model; found "
                          + ", ".join(r.run_id for r in found))
    grid = build_grid(found)
    lengths = grid.budget()
    budgets = budgets_for(lengths)
    Q = len(grid.questions)
    fitted = [n for n in METRICS if int((grid.metric[n].mean(axis=1) > 0).sum()) >= 3]
    """Metrics with at least three configurations above zero: a logit fit of the rest is clipping only."""
    fits = {name: allocation(grid, name) for name in fitted}
    sections = ["## Configurations\n\n" + _config_table(grid) + "\n\n"
                "Effective context per answer: prompt tokens summed over the answer's calls (DRAG: its one prompt; "
                "IterDRAG: every follow-up, intermediate-answer and final call), averaged over the questions. "
                "Prefilled: what the engine actually evaluated, per question (the demonstrations are one prefix "
                "shared across questions, and a question's samples share its prompt). Intervals: percentile "
                f"bootstrap over the {Q} questions ({BOOTSTRAP} resamples)."]

    # accuracy against the budget, and the oracle envelope
    env_rows: dict[str, list[list[str]]] = {}
    picks: dict[str, Picks] = {}
    for name in METRICS:
        env_rows[name], picks[name] = _envelope(grid, name, budgets)
    sec = ["## Accuracy against effective context length: the best configuration per budget", ""]
    for name in METRICS:
        sec += [f"{name.upper()}: the best configuration whose effective context length fits the budget (the "
                "oracle envelope), and the best of each method alone.", "",
                table(["budget (tokens)", f"best {name.upper()} [95% CI]", "configuration", "best DRAG",
                       "best IterDRAG", "best zero-shot DRAG (m=0)"], env_rows[name]), ""]
    sec.append("![accuracy against effective context length; allocation model fit](rag-scaling.png)")
    sections.append("\n".join(sec))

    # claim 1: log-linear growth of the envelope
    verdicts: dict[str, list[str]] = {}
    for name in METRICS:
        verdicts.setdefault("log", []).append(_log_linear(grid, name, budgets))
        # claim 2: DRAG at small budgets, IterDRAG at large
        both = [(b, pk) for b, pk in picks[name].items() if pk[1] is not None and pk[2] is not None]
        for b, (_, dj, ij, _) in both[-1:]:
            assert dj is not None and ij is not None
            pd_, pi_ = grid.metric[name][dj], grid.metric[name][ij]
            lo, hi = boot(grid, lambda q, pd_=pd_, pi_=pi_: float(pi_[q].mean() - pd_[q].mean()))
            verdicts.setdefault("iter", []).append(
                f"{name.upper()} at {tokens_label(b)} tokens: best IterDRAG ({grid.cfgs[ij].label}) minus best DRAG "
                f"({grid.cfgs[dj].label}) {pi_.mean() - pd_.mean():+.3f} {ci(lo, hi)}")
        small = [b for b, pk in picks[name].items() if pk[2] is None]
        if not any(c.n for c in grid.cfgs):
            verdicts.setdefault("iter", []).append(f"{name.upper()}: no IterDRAG configuration in these pools")
        elif small:
            first = min(b for b, pk in picks[name].items() if pk[2] is not None)
            verdicts.setdefault("iter", []).append(
                f"{name.upper()}: below {tokens_label(first)} tokens no IterDRAG configuration fits (its calls add up), so "
                "DRAG is best there by construction")
        # claim 6: over standard RAG (zero-shot DRAG) at the largest budget
        b_top = max(picks[name])
        best, _, _, z = picks[name][b_top]
        if z is not None:
            pb, pz = grid.metric[name][best], grid.metric[name][z]
            if pz.mean() <= 0:
                verdicts.setdefault("rag", []).append(
                    f"{name.upper()}: the best zero-shot DRAG scores 0 within {tokens_label(b_top)}, so no ratio (best "
                    f"configuration {grid.cfgs[best].label}: {pb.mean():.3f})")
                continue
            rel = pb.mean() / pz.mean() - 1
            lo, hi = boot(grid, lambda q, pb=pb, pz=pz: float(pb[q].mean() / pz[q].mean() - 1)
                          if pz[q].mean() > 0 else float("nan"))
            verdicts.setdefault("rag", []).append(
                f"{name.upper()}: best within {tokens_label(b_top)} ({grid.cfgs[best].label}, {pb.mean():.3f}) over the best "
                f"zero-shot DRAG ({grid.cfgs[z].label}, {pz.mean():.3f}): {_pct(rel)} {ci(100 * lo, 100 * hi, 1)}%")

    # the allocation model
    x = features(grid.cfgs)
    fit_rows = []
    for name in fitted:
        al = fits[name]
        r2_lo, r2_hi = boot(grid, lambda q, name=name: allocation(grid, name, q).fit.r2)
        w = al.fit.a
        fit_rows.append([name.upper(), f"{al.gains[0]:+.3f}", f"{al.gains[1]:+.3f}", f"{w[0]:+.3f}", f"{w[1]:+.3f}",
                         f"{w[2]:+.3f}", f"{al.fit.c:+.3f}", f"{al.fit.r2:.3f} {ci(r2_lo, r2_hi)}", f"{al.r2_p:.3f}"])
        verdicts.setdefault("r2", []).append(f"{name.upper()} R^2 {al.fit.r2:.3f} {ci(r2_lo, r2_hi)} (logit scale; "
                                             f"{al.r2_p:.3f} on the accuracy scale)")
    pred_rows = []
    for j, c in enumerate(grid.cfgs):
        pred_rows.append([c.label, f"{lengths[j]:.0f}"] + [
            f"{grid.metric[n].mean(axis=1)[j]:.3f} / {fits[n].fit.predict(x[j:j + 1], fits[n].gains)[0]:.3f}"
            for n in fitted])
    sections.append("\n".join([
        "## The computation-allocation model", "",
        "`logit(P) = (a + b * i)^T x + c`, x = (log(1 + k), log(1 + m), log(1 + n)) (the 1 keeps zero documents, "
        "zero demonstrations and DRAG's n = 0 finite), i = (i_doc, i_shot, 0) the measured gain of one document "
        "(k=1 m=0) and of one demonstration (k=0 m=1) over zero-shot (k=0 m=0), fitted by least squares over the "
        "configurations' accuracies (clipped to [eps, 1 - eps], eps = half a sample, before the logit). With one "
        "task and one model i is one constant vector, so only `a + b * i` is identified: the columns below are "
        "those sums. Separating a from b needs pools of further tasks or models (the paper fits across four "
        "datasets); `fit_allocation` does that when its rows carry different i (tested on synthetic data).", "",
        table(["metric", "i_doc", "i_shot", "a_k + b_k i_doc", "a_m + b_m i_shot", "a_n", "c",
               "R^2 (logit) [95% CI]", "R^2 (accuracy)"], fit_rows), "",
        "Observed / fitted accuracy per configuration:", "",
        table(["configuration", "effective context", *(f"{n.upper()} observed / fitted" for n in fitted)], pred_rows)]
        + [f"Not fitted: {', '.join(n.upper() for n in METRICS if n not in fitted)} (fewer than three configurations "
           "score above zero; its logit would be the clipping constant)." for _ in [0] if len(fitted) < len(METRICS)]))

    # held-out: predicted configuration against the oracle
    ho_rows, ex_rows = [], []
    cut = 2 ** math.floor(math.log2(float(np.median(lengths))))
    for name in fitted:
        for h in held_out(grid, name, budgets):
            top = max(h.picks, key=lambda k: h.picks[k])
            ho_rows.append([name.upper(), tokens_label(h.budget), f"{_pct(h.shares.mean())} "
                            f"{ci(100 * np.percentile(h.shares, 2.5), 100 * np.percentile(h.shares, 97.5), 1)}",
                            f"{_pct(h.naive.mean())}", f"{top} ({h.picks[top]} of {len(h.shares)})"])
        hs = held_out(grid, name, budgets)
        if hs:
            allv = np.concatenate([h.shares for h in hs])
            large = [h for h in hs if h.budget >= budgets[len(budgets) // 2]]
            lv = np.concatenate([h.shares for h in large]) if large else allv
            verdicts.setdefault("share", []).append(
                f"{name.upper()}: {_pct(allv.mean())} of the held-out oracle's accuracy over all budgets, "
                f"{_pct(lv.mean())} at budgets from {tokens_label(large[0].budget if large else budgets[0])} (middle 95% of "
                f"the splits: {ci(100 * np.percentile(lv, 2.5), 100 * np.percentile(lv, 97.5), 1)}%)")
        above = [b for b in budgets if b > cut]
        ex = held_out(grid, name, above, fit_below=cut)
        # prediction error of the configurations above the cut, fitted on those below (all questions)
        mask = lengths <= cut
        if mask.sum() >= 3 and (~mask).any():
            al = allocation(grid, name, None, mask)
            acc = grid.metric[name].mean(axis=1)
            err = np.abs(al.fit.predict(x[~mask], al.gains) - acc[~mask])
            for h in ex:
                ex_rows.append([name.upper(), tokens_label(h.budget), f"{_pct(h.shares.mean())} "
                                f"{ci(100 * np.percentile(h.shares, 2.5), 100 * np.percentile(h.shares, 97.5), 1)}",
                                f"{_pct(h.naive.mean())}"])
            if ex:
                sv = np.concatenate([h.shares for h in ex])
                verdicts.setdefault("extra", []).append(
                    f"{name.upper()}: fitted on configurations up to {tokens_label(cut)} tokens ({int(mask.sum())} of "
                    f"{len(mask)}), the predicted configuration at larger budgets reaches {_pct(sv.mean())} of the "
                    f"held-out oracle (a miss of {_pct(1 - sv.mean())}); the model's accuracy for the "
                    f"{int((~mask).sum())} larger configurations is off by {err.mean():.3f} on average "
                    f"(worst {err.max():.3f})")
    sections.append("\n".join([
        "## Held out: the predicted configuration against the oracle", "",
        f"{SPLITS} random halvings of the {Q} questions: the model (and i) fitted on one half, the configuration it "
        "predicts best within each budget scored on the other half, divided by the other half's best configuration "
        "within that budget (the oracle). Interval: the middle 95% of the splits (split-to-split spread, which "
        "includes the fit's noise and the test half's). Also shown: spending the whole budget (the configuration "
        "with the longest effective context that fits).", "",
        table(["metric", "budget", "share of oracle (mean) [2.5-97.5% of splits]", "spend-it-all share",
               "most often predicted"], ho_rows)]))
    sections.append("\n".join([
        "## Extrapolation from smaller budgets", "",
        f"The same, but the model fitted only on configurations whose effective context is at most {tokens_label(cut)} "
        "tokens (the median configuration's, rounded down to a power of two) and asked for the larger budgets.", "",
        table(["metric", "budget", "share of oracle [2.5-97.5% of splits]", "spend-it-all share"], ex_rows)]))

    def line(key: str) -> str:
        return "; ".join(verdicts.get(key, ["not measurable with these pools"]))

    paper = [
        ("Accuracy of the best configuration grows nearly linearly in log(budget)", line("log")),
        ("DRAG is best at small budgets, IterDRAG at large ones", line("iter")),
        ("Best configuration beats standard RAG by up to 58.9%", line("rag")),
        ("The allocation model fits with R^2 0.903", line("r2")),
        ("The predicted configuration reaches 96.6% of the oracle's accuracy", line("share")),
        ("Extrapolating to larger budgets misses by 2.8%", line("extra")),
    ]
    arms = [Arm(r.cfg.label, [r.per_sample[q] for q in grid.questions], shared_prefill=r.cfg.n == 0,
                features={"k": r.cfg.k, "m": r.cfg.m, "n": r.cfg.n}) for r in grid.runs]
    io_section, io_verdict = choices_section(arms, seed=SEED)
    sections.append(io_section)
    paper.append(("(the issue's question) At a given budget, buy more documents, examples, iterations, or samples?",
                  io_verdict))
    left_out = list(grid.left_out)
    larger: list[str] = []
    for group in others:
        other = build_grid(group)
        left_out += other.left_out
        if len(other.runs) < 2:
            left_out += [f"`{r.run_id}` (a second model needs two complete configurations)" for r in other.runs]
            continue
        from ttscale.experiments import rag_models  # imported here: it builds on this module (its grid and fit)

        md, line_f1 = rag_models.section(grid, other, "f1")
        sections.append(md)
        larger.append(f"Beside it, {other.runs[0].model} on {len(other.runs)} configurations: {line_f1}.")
        paper.append((f"(this project) A larger model ({other.runs[0].model}) or the smaller reading more, at the "
                      "same prefill compute?", line_f1))
    sections.append("## The paper's claims here\n\n" + table(["claim (Yue et al. 2024)", f"here ({grid.runs[0].model}, "
                                                              f"{Q} questions)"], [[a, b] for a, b in paper])
                    + "\n\n" + _judgement(grid, verdicts))
    if left_out or missing:
        sections.append("Not measured: " + "; ".join(
            ([f"incomplete pools left out: {', '.join(left_out)}"] if left_out else [])
            + ([f"pools not found: {', '.join(missing)}"] if missing else [])) + ".")
    sections.append(_method(grid))
    _figure(grid, budgets, fits, out / "rag-scaling.png")
    env_f1 = [r for r in env_rows["f1"]]
    verdict = (f"{len(grid.runs)} configurations ({sum(c.n == 0 for c in grid.cfgs)} DRAG, "
               f"{sum(c.n > 0 for c in grid.cfgs)} IterDRAG) of {grid.runs[0].model} on {Q} MuSiQue questions, "
               f"effective context {tokens_label(float(lengths.min()))} to {tokens_label(float(lengths.max()))} tokens per answer. "
               f"Best F1 within budget: {env_f1[0][1]} at {env_f1[0][0]} tokens, {env_f1[-1][1]} at "
               f"{env_f1[-1][0]}. " + " ".join(larger) + (" " if larger else "") + _judgement(grid, verdicts))
    return Page("rag-scaling", "Input compute for retrieval-augmented generation: DRAG, IterDRAG and the "
                "computation-allocation model (Yue et al. 2024)", CLAIM, verdict, sections)


def _judgement(grid: Grid, verdicts: dict[str, list[str]]) -> str:
    em = grid.metric["em"].mean(axis=1)
    floor = (f" Exact match is at the floor here (at most {em.max():.3f} for any configuration; {grid.runs[0].model} "
             "rarely writes the exact gold string of a multi-hop question), so the EM rows, and the logit fit on "
             "EM, are mostly clipping and noise; token F1 is the informative metric." if em.max() < 0.1 else "")
    return (f"With {len(grid.questions)} questions, differences in accuracy smaller than about 0.05 F1 are inside "
            "the noise (see the intervals): a claim about which configuration or method is best at a budget is "
            "resolved only where an interval excludes zero, and the R^2 and shares of the oracle are measured "
            "with wide intervals." + floor)


def _method(grid: Grid) -> str:
    return ("Method: each configuration is one stored run on the same evaluated questions (the 8 demonstration "
            "questions are never evaluated). A question's accuracy under a configuration is the mean over its "
            "samples (DRAG: several samples at temperature 0.8, so this is the expected accuracy of one sampled "
            "answer; IterDRAG: one sampled transcript), EM and token F1 against every alias. The budget of a "
            "configuration is its mean effective context length per answer, as in the paper (outputs and retrieval "
            "not counted); a configuration is admissible at a budget when that mean fits. Budgets are powers of "
            "two. The envelope and its intervals re-pick the best configuration in each bootstrap resample, so "
            "they include the selection's optimism.")


def _experiment():  # type: ignore[no-untyped-def]
    from ttscale.experiments import Experiment

    return Experiment("rag-scaling", "rag-scaling",
                      tuple((shipped_rag_runs() or [c.run_id(PREFIX) for c in FULL])
                            + shipped_rag_runs(LARGER_PREFIX)), run)


EXPERIMENT = _experiment()
