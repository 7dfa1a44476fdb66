"""Pools of the same problems at several KV-cache configurations, loaded from a store for the KV planner.

A configuration is read from each run's model record (:func:`recorded_kv_type`: precision, and the press
when the engine evicted); the runs of every configuration are aligned row by row on the primary ``--pool``'s
problems, so one train/test split holds for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.planner.data import PlanPool
from ttscale.planner.kv_plan import REFERENCE, KvPool, cache_label, split_cache
from ttscale.types import ModelInfo, precision_label, split_precision


def parse_kv_pools(specs: Sequence[str]) -> list[tuple[str | None, str]]:
    """``TYPE=RUN`` or ``RUN`` (its type read from the run's model record), in order.

    >>> parse_kv_pools(["q8_0=sweep-q8", "sweep-q4"])
    [('q8_0', 'sweep-q8'), (None, 'sweep-q4')]
    """
    out: list[tuple[str | None, str]] = []
    for spec in specs:
        kind, sep, run = spec.partition("=")
        if sep and (not kind or not run):
            raise ConfigError(f"--kv-pool takes TYPE=RUN or RUN, got {spec!r}")
        if sep:
            split_cache(kind)
        out.append((kind, run) if sep else (None, spec))
    return out


def recorded_kv_type(model: Mapping[str, Any]) -> str:
    """The cache label of a run (``q8_0``, ``q8_0/q4_0`` for keys and values at different types, and
    ``+PRESS@RATIO`` when its engine evicted with a KV press, ``+decodeN`` when it also capped the cells while
    decoding); f16 for records made before the engine took one."""
    k, v = str(model.get("kv_type_k", REFERENCE)), str(model.get("kv_type_v", model.get("kv_type_k", REFERENCE)))
    extra = model.get("extra")
    press = extra.get("kv_press") if isinstance(extra, Mapping) else None
    if isinstance(press, str) and press != "none":
        decoding = extra.get("kv_decode")  # type: ignore[union-attr]
        return cache_label(precision_label(k, v), press, float(extra.get("kv_compression", 0.0)),  # type: ignore[union-attr]
                           int(decoding) if decoding else None)
    return precision_label(k, v)


def max_generation(config: Mapping[str, Any]) -> int | None:
    """The per-sample cap a run was made with (its task's prompt format), when recorded."""
    task = config.get("task")
    fmt = task.get("format") if isinstance(task, dict) else None
    mt = fmt.get("max_tokens") if isinstance(fmt, dict) else None
    return int(mt) if isinstance(mt, (int, float)) and mt > 0 else None


def load_kv_pools(store: Any, pool_runs: Sequence[str], kv_specs: Sequence[str],
                  k: int | None = None) -> dict[str, KvPool]:
    """The ``--pool`` runs and, per other precision, its runs of the same problems (one per ``--pool``,
    in the same order), aligned row by row on the primary's problem ids."""
    from dataclasses import replace

    from ttscale.planner.data import load_plan_pool
    from ttscale.replay.pool import model_info_from_record

    def meta(runs: Sequence[str], want: str | None) -> tuple[str, ModelInfo, int | None, str]:
        recs = [store.get_run(r) for r in runs]
        missing = [r for r, rec in zip(runs, recs, strict=True) if rec is None]
        if missing:
            raise ConfigError(f"no run {missing[0]!r} in the store")
        kinds = {recorded_kv_type(rec.model) for rec in recs}
        if len(kinds) != 1:
            raise ConfigError(f"runs {', '.join(runs)} were made at different KV precisions: {', '.join(sorted(kinds))}")
        kind = kinds.pop()
        if want is not None and "kv_type_k" in recs[0].model and kind != want:
            raise ConfigError(f"run {runs[0]} was made at {kind}, not {want}")
        info = model_info_from_record(recs[0].model)
        if info is None:
            raise ConfigError(f"run {runs[0]} records no model shapes: its KV bytes cannot be computed")
        gens = [g for rec in recs if (g := max_generation(rec.config)) is not None]
        return want or kind, info, max(gens) if gens else None, str(recs[0].model.get("name", ""))

    def kv_pool(kind: str, pp: PlanPool, info: ModelInfo, gen: int | None) -> KvPool:
        observed = int(np.ceil(pp.pool.n_tokens.max()))  # runs that did not record their cap: what they used
        k_type, v_type = split_precision(split_cache(kind)[0])
        return KvPool(kind, pp, replace(info, kv_type_k=k_type, kv_type_v=v_type), gen or max(observed, 1))

    primary = load_plan_pool(store, pool_runs, k)
    kind, info, gen, model = meta(pool_runs, None)
    out = {kind: kv_pool(kind, primary, info, gen)}
    by_type: dict[str, list[str]] = {}
    for want, run in parse_kv_pools(kv_specs):
        if want is None:
            rec = store.get_run(run)
            if rec is None:
                raise ConfigError(f"no run {run!r} in the store")
            want = recorded_kv_type(rec.model)
        by_type.setdefault(want, []).append(run)
    for want, runs in by_type.items():
        if want in out:
            raise ConfigError(f"two pools at {want}: give one precision per --kv-pool type (the --pool is {kind})")
        t, t_info, t_gen, t_model = meta(runs, want)
        if t_model != model:
            raise ConfigError(f"the {want} pools are of model {t_model!r}, the --pool of {model!r}: "
                              "KV precisions are compared on one model")
        out[t] = align_kv(out[kind], kv_pool(t, load_plan_pool(store, runs, primary.pool.k), t_info, t_gen))
    return out


def align_kv(primary: KvPool, other: KvPool) -> KvPool:
    """``other`` (the same problems at another precision) row by row in ``primary``'s order, under
    ``primary``'s problem ids, so that one train/test split holds for both."""
    from dataclasses import replace

    from ttscale.planner.data import align_alternate

    o = align_alternate(primary.pool, other.pool, "kv").alts["kv"]
    rows = replace(o.pool, problem_ids=list(primary.pool.problem_ids))
    return KvPool(other.kv_type, PlanPool(rows, o.prompt_tokens, list(primary.pool.group)), other.info, other.max_gen)
