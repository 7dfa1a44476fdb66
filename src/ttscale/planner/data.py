"""Pools for the planner: one or more stored runs merged, with prompt lengths and sources.

Replay's :class:`~ttscale.replay.pool.Pool` holds everything the estimators need; the planner
also needs each problem's prompt length (a difficulty feature) and the run it came from (so a
train/test split can be stratified over a mixed workload). Several runs (say one sweep per
BIG-bench subtask) merge into one pool; their problem ids are then prefixed ``run/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ttscale.errors import ConfigError, StoreError
from ttscale.replay.pool import (
    Pool,
    model_info_from_record,
    pool_from_samples,
    read_run,
    task_equivalence,
    task_family,
)
from ttscale.store import Store
from ttscale.types import Sample


@dataclass
class PlanPool:
    pool: Pool
    prompt_tokens: np.ndarray
    """float (P,): rendered prompt length of each problem."""
    group: list[str]
    """Source run of each problem."""
    alts: dict[str, PlanPool] = field(default_factory=dict)
    """Other models' pools of the *same* problems, row by row (model name -> pool): choices a
    policy can switch to after the probe (:func:`align_alternate`)."""
    family: list[str] = field(default_factory=list)
    """Each problem's family, when the task declares one (GSM-Symbolic's template): variants of one
    question, which a train/test split keeps on one side and a bootstrap resamples together.
    Empty: every problem is its own family."""

    @property
    def families(self) -> list[str]:
        """The family of each problem (its id where the task declares none)."""
        return self.family or list(self.problem_ids)

    @property
    def problem_ids(self) -> list[str]:
        return self.pool.problem_ids

    @property
    def n_problems(self) -> int:
        return self.pool.n_problems

    def subset(self, ids: Sequence[str]) -> PlanPool:
        """The problems ``ids`` (in that order) as a pool of their own."""
        pos = {pid: i for i, pid in enumerate(self.problem_ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise ConfigError(f"problems not in the pool: {', '.join(missing[:5])}")
        return self.take(np.array([pos[i] for i in ids], dtype=np.int64))

    def take(self, idx: np.ndarray) -> PlanPool:
        p = self.pool
        sub = Pool(
            problem_ids=[p.problem_ids[i] for i in idx], answer=p.answer[idx], answer_correct=p.answer_correct[idx],
            n_tokens=p.n_tokens[idx], logprob=p.logprob[idx], finish_rank=p.finish_rank[idx],
            prefill_tokens=p.prefill_tokens[idx], prefill_flops=p.prefill_flops[idx],
            sample_tokens=p.sample_tokens[idx], sample_flops=p.sample_flops[idx],
            scores={k: v[idx] for k, v in p.scores.items()}, run_id=p.run_id, task=p.task, model=p.model,
        )
        return PlanPool(sub, self.prompt_tokens[idx], [self.group[i] for i in idx],
                        {m: a.take(idx) for m, a in self.alts.items()},
                        [self.family[i] for i in idx] if self.family else [])


BUDGET_UNITS: dict[str, float] = {"tokens": 1.0, "gflops": 1e9}
"""Units a plan's budget levels can be in: processed tokens, or GFLOPs (the meter's model FLOPs) per problem."""


def in_budget_unit(pp: PlanPool, unit: str) -> PlanPool:
    """The pool with every cost the planner adds up (each problem's prefill, each sample's charge) in
    ``unit``. The planner and replay price choices from these two arrays only, so a policy fitted on
    the result has its levels in that unit; prompt and generation lengths (difficulty features, KV
    cells) stay in tokens."""
    if unit not in BUDGET_UNITS:
        raise ConfigError(f"unknown budget unit {unit!r}; known: {', '.join(BUDGET_UNITS)}")
    if unit == "tokens":
        return pp
    p, scale = pp.pool, BUDGET_UNITS[unit]
    if not np.any(p.sample_flops > 0):
        raise ConfigError(f"pool {p.run_id} records no FLOPs (made before the meter counted them): plan in tokens")
    pool = replace(p, prefill_tokens=p.prefill_flops / scale, sample_tokens=p.sample_flops / scale)
    return PlanPool(pool, pp.prompt_tokens, pp.group, {m: in_budget_unit(a, unit) for m, a in pp.alts.items()},
                    pp.family)


def merge(pools: Sequence[PlanPool]) -> PlanPool:
    """Concatenate pools with the same samples per problem (scores kept where all have them)."""
    if not pools:
        raise ConfigError("no pools to merge")
    if len(pools) == 1:
        return pools[0]
    ks = {pp.pool.k for pp in pools}
    if len(ks) != 1:
        raise ConfigError(f"pools to merge need the same samples per problem, got {sorted(ks)}")
    A = max(pp.pool.n_answers for pp in pools)

    def pad(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, A - a.shape[1])))

    cat = np.concatenate
    ps = [pp.pool for pp in pools]
    names = set.intersection(*(set(p.scores) for p in ps))
    pool = Pool(
        problem_ids=[i for p in ps for i in p.problem_ids], answer=cat([p.answer for p in ps]),
        answer_correct=cat([pad(p.answer_correct) for p in ps]), n_tokens=cat([p.n_tokens for p in ps]),
        logprob=cat([p.logprob for p in ps]), finish_rank=cat([p.finish_rank for p in ps]),
        prefill_tokens=cat([p.prefill_tokens for p in ps]), prefill_flops=cat([p.prefill_flops for p in ps]),
        sample_tokens=cat([p.sample_tokens for p in ps]), sample_flops=cat([p.sample_flops for p in ps]),
        scores={n: cat([p.scores[n] for p in ps]) for n in sorted(names)},
        run_id="+".join(p.run_id for p in ps), task="+".join(dict.fromkeys(p.task for p in ps)),
        model="+".join(dict.fromkeys(p.model for p in ps)),
    )
    if len(set(pool.problem_ids)) != pool.n_problems:
        raise ConfigError("merged pools share problem ids; prefix them by run")
    family = [f for pp in pools for f in pp.families] if any(pp.family for pp in pools) else []
    return PlanPool(pool, cat([pp.prompt_tokens for pp in pools]), [g for pp in pools for g in pp.group],
                    family=family)


def load_plan_pool(store: Store, run_ids: Sequence[str], k: int | None = None) -> PlanPool:
    """Load and merge stored runs (sweeps, or any run with samples) for planning."""
    if not run_ids:
        raise ConfigError("name at least one pool run (--pool RUN)")
    loaded: list[tuple[str, dict[str, list[Sample]], dict[str, object]]] = []
    for rid in run_ids:
        rec, by_problem, name = read_run(store, rid)
        by_problem = {pid: ss for pid, ss in by_problem.items() if ss}
        loaded.append((rid, by_problem, {"model": rec.model, "task": name}))
    width = min(len(ss) for _, bp, _ in loaded for ss in bp.values())
    if k is not None:
        if k > width:
            raise StoreError(f"asked for {k} samples per problem but some problem has only {width}")
        width = k
    prefix = len(loaded) > 1
    return merge([_plan_part(rid, by_problem, meta["model"], str(meta["task"]), width, prefix)
                  for rid, by_problem, meta in loaded])


def _plan_part(run_id: str, by_problem: dict[str, list[Sample]], model: object, task: str, k: int,
               prefix: bool) -> PlanPool:
    """One run's samples (``k`` per problem) as a plan pool; ids prefixed ``run/`` when merged with others."""
    info = model if isinstance(model, dict) else {}
    key = {pid: f"{run_id}/{pid}" if prefix else pid for pid in by_problem}
    pool = pool_from_samples({key[pid]: ss for pid, ss in by_problem.items()}, info=model_info_from_record(info),
                             k=k, run_id=run_id, task=task, model=str(info.get("name", "")),
                             equivalent=task_equivalence(task))
    lengths = {key[pid]: float(ss[0].prompt_tokens) for pid, ss in by_problem.items()}
    of = task_family(task)
    raw = {key[pid]: pid for pid in by_problem}
    family = [of(raw[i]) for i in pool.problem_ids] if of is not None else []
    return PlanPool(pool, np.array([lengths[i] for i in pool.problem_ids]), [run_id] * pool.n_problems,
                    family=family)


def load_stacked_pool(store: Store, stacks: Sequence[Sequence[str]], k: int) -> PlanPool:
    """Pools with more samples per problem: each stack is a list of runs over the same problems
    (say a sweep and two more sweeps of it with other sampling seeds), and every problem present
    in all runs of its stack gets the first ``k`` samples of each, ``k * len(stack)`` in all (so
    every stack needs as many runs).

    Problem ids are the first run's (prefixed ``run/`` when there are several stacks, as
    :func:`load_plan_pool` does), so rows line up with a pool loaded from the first runs alone.
    """
    if not stacks or any(not runs for runs in stacks):
        raise ConfigError("give at least one run per stack")
    if k < 1:
        raise ConfigError(f"samples per run must be >= 1, got {k}")
    parts = []
    for runs in stacks:
        read = [read_run(store, rid) for rid in runs]
        first = runs[0]
        common = [pid for pid in read[0][1] if all(len(bp.get(pid, [])) >= k for _, bp, _ in read)]
        if not common:
            raise StoreError(f"no problem has {k} samples in every run of {', '.join(runs)}")
        by_problem: dict[str, list[Sample]] = {}
        for j, (_, bp, _) in enumerate(read):
            for pid in common:
                # renumbered so that every run's samples (and the waves their prefill belongs to) stay distinct
                by_problem.setdefault(pid, []).extend(
                    replace(s, index=j * k + n, wave=j * k + s.wave)
                    for n, s in enumerate(sorted(bp[pid], key=lambda s: s.index)[:k]))
        rec, _, task = read[0]
        parts.append(_plan_part(first, by_problem, rec.model, task, k * len(runs), len(stacks) > 1))
    return merge(parts)


def raw_id(problem_id: str, group: str) -> str:
    """A merged pool's problem id without its ``run/`` prefix."""
    return problem_id[len(group) + 1:] if problem_id.startswith(group + "/") else problem_id


def align_alternate(primary: PlanPool, other: PlanPool, model: str) -> PlanPool:
    """``primary`` with ``other`` (another model's pool of the same problems) attached as ``alts[model]``.

    Pools are matched run by run in order (the i-th run of ``other`` holds the problems of the
    i-th run of ``primary``) and rows are reordered to follow ``primary``.
    """
    if model in primary.alts:
        raise ConfigError(f"model {model!r} already has a pool attached")
    if other.pool.k != primary.pool.k:
        raise ConfigError(f"the {model} pool has {other.pool.k} samples per problem, the primary {primary.pool.k}")
    p_runs, o_runs = list(dict.fromkeys(primary.group)), list(dict.fromkeys(other.group))
    if len(p_runs) != len(o_runs):
        raise ConfigError(f"{len(o_runs)} {model} pools for {len(p_runs)} primary pools: give one per primary pool, "
                          "in the same order")
    run_of = dict(zip(p_runs, o_runs, strict=True))
    where = {(g, raw_id(pid, g)): i for i, (pid, g) in enumerate(zip(other.problem_ids, other.group, strict=True))}
    idx = []
    for pid, g in zip(primary.problem_ids, primary.group, strict=True):
        key = (run_of[g], raw_id(pid, g))
        if key not in where:
            raise ConfigError(f"problem {key[1]!r} of {g} is missing from the {model} pool {run_of[g]}")
        idx.append(where[key])
    if len(set(idx)) != len(idx):
        raise ConfigError(f"the {model} pools repeat a problem")
    return PlanPool(primary.pool, primary.prompt_tokens, primary.group,
                    {**primary.alts, model: other.take(np.array(idx, dtype=np.int64))}, primary.family)


def from_pool(pool: Pool, prompt_tokens: np.ndarray | None = None, group: Sequence[str] | None = None) -> PlanPool:
    """Wrap a replay pool (e.g. a synthetic one); prompt lengths default to the prefill."""
    pt = np.asarray(prompt_tokens if prompt_tokens is not None else pool.prefill_tokens, dtype=float)
    return PlanPool(pool, pt, list(group) if group is not None else [pool.run_id] * pool.n_problems)
