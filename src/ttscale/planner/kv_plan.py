"""The KV precision as a planner choice: which cache type, strategy and k under a memory cap.

Given pools of the *same* problems made at several KV-cache precisions (``ttscale sweep --kv-type``)
and a cap on KV bytes, a configuration (precision, rule, k) is feasible only if its ``k`` samples
fit the cap together: ``k x (prompt + max generation)`` cells at that precision's real size (block
scales included), or ``prompt + k x generation`` where the engine shares the prompt among them
(``shared_prompt``: the embedded engine, and the meter's worst case). So a quantized cache buys
more parallel samples (q8_0 takes 34/64 of f16's bytes), and the question the planner answers is
whether they buy more accuracy than the quantization costs.

Per precision, the ordinary planner (:func:`~ttscale.planner.policy.fit_policy`) is fitted on the
training problems with every choice capped at that precision's largest feasible k; per budget level
the precision whose policy has the best training accuracy wins (ties: fewer tokens, then the more
precise cache), as probe sizes win in the planner itself. :func:`evaluate_kv_plan` then measures
the chosen configuration on held-out problems, next to the reference precision alone (f16).

A cache configuration may also evict: a pool made on the transformers backend with a KV press
(``ttscale sweep --backend transformers --kv-press snapkv --kv-compression 0.5``) is labelled
``f32+snapkv@0.5`` (:func:`split_cache`). Its cells are counted in that engine's layout
(:meth:`~ttscale.types.ModelInfo.wave_kv_cells`: each sample its own copy of the prompt, of which the press
keeps ``1 - ratio``), so press x ratio competes with precision, rule and k under the same cap.

Why "fit together" and not "fit in waves": the cap could be met by any k in sequential waves at
more latency, which the token budget alone prices; the memory question is how many samples run
*at once* on the memory there is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.backends.kv_sizing import cells_needed, max_cells, max_parallel_bytes
from ttscale.backends.transformers_backend import check_press, decode_label, press_label
from ttscale.errors import ConfigError
from ttscale.planner.data import PlanPool
from ttscale.planner.evaluate import level_outcomes
from ttscale.planner.policy import Level, Policy, default_budgets, fit_policy
from ttscale.types import ModelInfo, precision_bytes, split_precision

FORMAT = "ttscale-kv-plan/1"
REFERENCE = "f16"


@dataclass
class KvPool:
    """One precision's pool, with what its memory needs are computed from."""

    kv_type: str
    pool: PlanPool
    info: ModelInfo
    """The model's shapes at this precision (``kv_type_k``/``kv_type_v``)."""
    max_gen: int
    """Per-sample generation cap the pool was made with (the worst case a wave must hold)."""

    def __post_init__(self) -> None:
        split_cache(self.kv_type)  # an unknown type or press is a ConfigError naming the known ones
        if self.max_gen < 1:
            raise ConfigError(f"max generation must be >= 1, got {self.max_gen}")

    @property
    def engine_layout(self) -> bool:
        """Whether the model record fixes how the prompt is held (an evicting or per-sample-prompt engine),
        overriding the plan's ``shared_prompt``."""
        return self.info.kv_prompt_per_sample or self.info.kv_prompt_kept < 1.0

    def cells(self, k: int, prompt_tokens: float, shared_prompt: bool = False) -> int:
        """Cells ``k`` parallel samples of one prompt hold at their worst."""
        p = int(np.ceil(prompt_tokens))
        if self.engine_layout:
            return self.info.wave_kv_cells(p, k, self.max_gen)
        return cells_needed(k, p, self.max_gen, shared_prompt)

    def max_k(self, cap: int, shared_prompt: bool = False, prompt_tokens: float | None = None) -> int:
        """Most samples of the longest prompt (or ``prompt_tokens``) that fit ``cap`` together."""
        p = int(np.ceil(self.pool.prompt_tokens.max() if prompt_tokens is None else prompt_tokens))
        if not self.engine_layout:
            return max_parallel_bytes(self.info, cap, p, self.max_gen, shared_prompt)
        room, one, more = max_cells(self.info, cap), self.cells(1, p), self.cells(2, p) - self.cells(1, p)
        return 0 if room < one else 1 + (room - one) // more

    def peak_bytes(self, k: int, prompt_tokens: float, shared_prompt: bool = False) -> int:
        """Worst-case KV bytes of ``k`` parallel samples of one prompt."""
        return self.info.kv_bytes(self.cells(k, prompt_tokens, shared_prompt))

    def subset(self, ids: Sequence[str]) -> KvPool:
        return KvPool(self.kv_type, self.pool.subset(ids), self.info, self.max_gen)


def _choices_k(level: Level) -> int:
    return max(max(b.choice.k for b in level.bins), level.probe)


@dataclass
class KvLevel:
    """One budget level: the precision chosen and what every precision offered on training problems."""

    budget: float
    kv_type: str
    expected_accuracy: float
    expected_tokens: float
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per precision with a level at this budget: its training accuracy, tokens and largest k."""

    def to_dict(self) -> dict[str, Any]:
        return {"budget_tokens": self.budget, "kv_type": self.kv_type, "expected_accuracy": self.expected_accuracy,
                "expected_tokens": self.expected_tokens, "candidates": self.candidates}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KvLevel:
        return cls(float(d["budget_tokens"]), str(d["kv_type"]), float(d["expected_accuracy"]),
                   float(d["expected_tokens"]), {k: dict(v) for k, v in d.get("candidates", {}).items()})


@dataclass
class KvPlan:
    cap_bytes: int
    shared_prompt: bool
    precisions: dict[str, dict[str, Any]]
    """Per precision: bytes per KV cell, the largest feasible k, the pool's max generation."""
    policies: dict[str, Policy]
    """Per feasible precision: the planner's policy with every choice within its k."""
    levels: list[KvLevel]
    source: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None

    @property
    def budget_unit(self) -> str:
        """What the levels' budgets count per problem: ``tokens`` or ``gflops``."""
        return str(self.source.get("budget_unit", "tokens"))

    def level_for(self, budget_tokens: float) -> tuple[str, Policy, Level]:
        """The richest level within ``budget_tokens`` (in :attr:`budget_unit`): its precision, that
        precision's policy and level."""
        fits = [lv for lv in self.levels if lv.budget <= budget_tokens + 1e-9]
        if not fits:
            lo = min(lv.budget for lv in self.levels)
            raise ConfigError(f"budget {budget_tokens:g} {self.budget_unit}/problem is below the plan's smallest "
                              f"level ({lo:g})")
        kv = max(fits, key=lambda lv: lv.budget)
        policy = self.policies[kv.kv_type]
        return kv.kv_type, policy, policy.level_for(kv.budget)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "cap_bytes": self.cap_bytes, "shared_prompt": self.shared_prompt,
                "precisions": self.precisions, "source": self.source,
                "levels": [lv.to_dict() for lv in self.levels],
                "policies": {t: p.to_dict() for t, p in self.policies.items()}, "evaluation": self.evaluation}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KvPlan:
        if d.get("format") != FORMAT:
            raise ConfigError(f"not a ttscale KV plan (format {d.get('format')!r}, expected {FORMAT!r})")
        try:
            return cls(int(d["cap_bytes"]), bool(d["shared_prompt"]), dict(d["precisions"]),
                       {t: Policy.from_dict(p) for t, p in d["policies"].items()},
                       [KvLevel.from_dict(lv) for lv in d["levels"]], dict(d.get("source", {})), d.get("evaluation"))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"malformed KV plan: {e}") from e

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> KvPlan:
        return cls.from_dict(json.loads(Path(path).read_text()))


def is_kv_plan(path: Path) -> bool:
    """Whether ``path`` holds a KV plan (else, presumably, an ordinary policy)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def decode_cap(label: str) -> int | None:
    """A cache label's decoding cap (cells per sample a press keeps while decoding), if it has one.

    >>> decode_cap("f32+knorm@0+decode256"), decode_cap("f32+snapkv@0.5")
    (256, None)
    """
    head, sep, cap = label.rpartition("+decode")
    if not sep or not head:
        return None
    if not cap.isdigit():
        raise ConfigError(f"a decoding cap is labelled ...+decodeN with N cells, got {label!r}")
    return int(cap)


def split_cache(label: str) -> tuple[str, str | None, float]:
    """A cache label's precision, press and compression ratio: ``q8_0/q4_0`` evicts nothing,
    ``f32+snapkv@0.5`` keeps half the prompt's cells at f32 (a ``+decodeN`` suffix: :func:`decode_cap`).

    >>> split_cache("f32+snapkv@0.5"), split_cache("q8_0/q4_0"), split_cache("f32+knorm@0+decode128")
    (('f32', 'snapkv', 0.5), ('q8_0/q4_0', None, 0.0), ('f32', 'knorm', 0.0))
    """
    if decode_cap(label) is not None:
        label = label.rpartition("+decode")[0]
    precision, sep, press = label.partition("+")
    split_precision(precision)  # an unknown type is a ConfigError naming the known ones
    if not sep:
        return precision, None, 0.0
    name, at, ratio = press.partition("@")
    try:
        r = float(ratio) if at else float("nan")
    except ValueError:
        r = float("nan")
    if not at or r != r:
        raise ConfigError(f"a pressed cache is labelled PRECISION+PRESS@RATIO (e.g. f32+snapkv@0.5), got {label!r}")
    check_press(name, r)
    return precision, name, r


def cache_label(precision: str, press: str | None = None, compression: float = 0.0,
                decode_kv: int | None = None) -> str:
    """The label :func:`split_cache` and :func:`decode_cap` read.

    >>> cache_label("f32", "snapkv", 0.5), cache_label("q8_0"), cache_label("f32", "knorm", 0.0, 128)
    ('f32+snapkv@0.5', 'q8_0', 'f32+knorm@0+decode128')
    """
    if press is None or (compression <= 0 and decode_kv is None):
        return precision
    return f"{precision}+{press_label(press, compression)}{decode_label(decode_kv)}"


def _fidelity(label: str) -> tuple[float, float]:
    """How much of the cache a label keeps, for breaking ties: bytes per element, then share of the prompt."""
    precision, _, ratio = split_cache(label)
    return precision_bytes(precision), 1.0 - ratio


def _reference(pools: Mapping[str, KvPool]) -> str:
    """f16 when there is one, else the most faithful cache given (most bytes per element, no eviction)."""
    if REFERENCE in pools:
        return REFERENCE
    return max(pools, key=_fidelity)


def fit_kv_plan(
    train: Mapping[str, KvPool],
    cap_bytes: int,
    budgets: Sequence[float] | None = None,
    *,
    shared_prompt: bool = False,
    probes: Sequence[int] = (1, 2, 4),
    n_bins: int = 4,
    n_orders: int = 64,
    seed: int = 0,
    source: dict[str, Any] | None = None,
) -> KvPlan:
    """Fit one policy per precision within its feasible k, and pick a precision per budget level."""
    if not train:
        raise ConfigError("no pools to plan over")
    if cap_bytes < 1:
        raise ConfigError(f"the KV cap must be a positive number of bytes, got {cap_bytes}")
    ids = {t: kp.pool.problem_ids for t, kp in train.items()}
    first = next(iter(ids.values()))
    if any(v != first for v in ids.values()):
        raise ConfigError("the precisions' pools must hold the same problems in the same order (align them first)")
    ref = _reference(train)
    budgets = sorted(set(budgets or default_budgets(train[ref].pool)))
    precisions: dict[str, dict[str, Any]] = {}
    policies: dict[str, Policy] = {}
    for t, kp in train.items():
        k_cap = kp.max_k(cap_bytes, shared_prompt)
        k = min(k_cap, kp.pool.pool.k)  # no pool holds more samples per problem than it was swept with
        precisions[t] = {"bytes_per_cell": kp.info.kv_bytes(1024) / 1024, "max_k_under_cap": k_cap, "max_k": k,
                         "max_gen": kp.max_gen,
                         "longest_prompt": float(kp.pool.prompt_tokens.max()),
                         "peak_bytes_at_max_k": kp.peak_bytes(k, kp.pool.prompt_tokens.max(), shared_prompt)}
        if k < 1:
            continue  # not one sample fits: the precision is out
        try:
            policies[t] = fit_policy(kp.pool, budgets, probes=[p for p in probes if p <= k] or [1], n_bins=n_bins,
                                     n_orders=n_orders, seed=seed, max_k=k, source={"kv_type": t, **(source or {})})
        except ConfigError as e:  # e.g. every budget below this precision's cheapest probe
            precisions[t]["unfit"] = str(e)
            continue
        for lv in policies[t].levels:  # by construction; checked because the cap is a hard one
            if _choices_k(lv) > k:
                raise ConfigError(f"internal: {t} level {lv.budget:g} uses k={_choices_k(lv)} > feasible {k}")
    if not policies:
        unfit = [f"{t}: {p['unfit']}" for t, p in precisions.items() if "unfit" in p]
        if unfit:
            raise ConfigError("no precision could be planned: " + "; ".join(unfit))
        raise ConfigError(f"no precision fits one sample of the longest prompt in {cap_bytes:,} bytes: "
                          + ", ".join(f"{t} needs {kp_bytes(kp, shared_prompt):,}" for t, kp in train.items()))
    levels: list[KvLevel] = []
    for b in budgets:
        cands = {t: lv for t, pol in policies.items() for lv in pol.levels if abs(lv.budget - b) < 1e-9}
        if not cands:
            continue
        best = max(cands, key=lambda t: (round(cands[t].expected_accuracy, 9), -round(cands[t].expected_tokens, 6),
                                         _fidelity(t)))
        levels.append(KvLevel(b, best, float(cands[best].expected_accuracy), float(cands[best].expected_tokens),
                              {t: {"expected_accuracy": float(lv.expected_accuracy),
                                   "expected_tokens": float(lv.expected_tokens), "k": _choices_k(lv)}
                               for t, lv in cands.items()}))
    src = {"reference": ref, "train_problems": list(first), **(source or {})}
    return KvPlan(cap_bytes, shared_prompt, precisions, policies, levels, src)


def kp_bytes(kp: KvPool, shared_prompt: bool) -> int:
    """Bytes one sample of the longest prompt needs at this precision."""
    return kp.peak_bytes(1, kp.pool.prompt_tokens.max(), shared_prompt)


def evaluate_kv_plan(plan: KvPlan, test: Mapping[str, KvPool], *, n_orders: int = 64, seed: int = 0) -> dict[str, Any]:
    """Held-out accuracy per level: the chosen precision's, every precision's, and the reference's alone.

    ``gain_over_reference`` is the chosen configuration's held-out accuracy minus that of the best
    configuration the reference precision (f16) alone allows at the same budget and cap; a level's
    ``fits_test_prompts`` is the share of held-out problems whose prompt still lets its largest k fit.
    """
    trained = set(plan.source.get("train_problems", ()))
    ref = str(plan.source.get("reference", REFERENCE))
    rows = []
    for kv in plan.levels:
        per: dict[str, dict[str, float]] = {}
        for t, pol in plan.policies.items():
            if t not in test:
                continue
            leak = trained & set(test[t].pool.problem_ids)
            if leak:
                raise ConfigError(f"refusing to evaluate on {len(leak)} problems the plan was fitted on "
                                  f"(e.g. {sorted(leak)[0]})")
            try:
                lv = pol.level_for(kv.budget)
            except ConfigError:
                continue
            out = level_outcomes(pol, lv, test[t].pool, n_orders=n_orders, seed=seed)
            k = _choices_k(lv)
            fits = [test[t].peak_bytes(k, p, plan.shared_prompt) <= plan.cap_bytes for p in test[t].pool.prompt_tokens]
            per[t] = {"accuracy": float(out["acc"].mean()), "tokens": float(out["tokens"].mean()), "k": k,
                      "fits_test_prompts": float(np.mean(fits))}
        chosen = per.get(kv.kv_type)
        base = per.get(ref)
        rows.append({"budget_tokens": kv.budget, "kv_type": kv.kv_type, "held_out": per,
                     "accuracy": chosen["accuracy"] if chosen else None,
                     "reference_accuracy": base["accuracy"] if base else None,
                     "gain_over_reference": (chosen["accuracy"] - base["accuracy"]) if chosen and base else None})
    return {"reference": ref, "cap_bytes": plan.cap_bytes, "levels": rows,
            "test_problems": list(next(iter(test.values())).pool.problem_ids) if test else []}
