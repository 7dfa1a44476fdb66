"""Score a stored pool with a verifier after the fact, without generating its samples again.

``ttscale pool score`` runs a verifier (typically the LLM judge, on the pool's own model or another
one) over the samples of a stored run and writes, for every sample it scores:

- ``scores[NAME]``: the verifier's score (for the judge: P(Yes), the mean over V verification chains);
- ``scores["NAME:prefilled"]``, ``["NAME:generated"]``, ``["NAME:flops"]``, ``["NAME:seconds"]``: what
  scoring this sample cost the verifier (tokens it prefilled and generated, forward FLOPs on the
  verifier's own model, wall seconds). Processed tokens are ``prefilled + generated``.

So the replay reads the judge's scores like any verifier's (``best-of-n:score=NAME``) and the experiments
read its compute, which sets the paper's lambda (verification cost over solution cost).

**How a call's cost is split over samples.** A verifier reports one :class:`~ttscale.cost.Usage` per
call (``Scores.usage``), for all the candidates it scored together. Each call's usage and wall time
are split over its candidates in proportion to each candidate's verifier prompt length in tokens
(the judge's request for that candidate, as the backend counts it; the candidate's own prompt plus
its tokens for verifiers without one). Shares are fractional and sum to the call's usage exactly.
For the direct judge (V = 1) the work is prefilling those prompts, so the split is near exact, except
that a prefix the backend shared between them (the question) is spread evenly instead of charged to
the first candidate; for V > 1 the chains' lengths are not reported per candidate and are spread the
same way. ``batch=1`` scores one candidate per call, which makes every share exact (and gives up
batching and prefix sharing between candidates).

Resumable: a sample that already has ``NAME`` is skipped, and each batch's scores are committed as
soon as they are computed. What made the score (verifier, model, V, prompt) is kept as the run's
note ``score:NAME``; resuming a name with other settings is refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from ttscale.errors import ConfigError, StoreError
from ttscale.registry import make_task
from ttscale.run.summary import Progress, ProgressFn, Summary
from ttscale.run.work import Score
from ttscale.store import Store, code_version
from ttscale.tasks.base import Task
from ttscale.types import Problem, Sample, Usage
from ttscale.verifiers.base import Verifier

COST_FIELDS = ("prefilled", "generated", "flops", "seconds")
"""Suffixes of the per-sample cost keys written beside a score (``NAME:flops``)."""
COST_RULE = ("each call's usage split over its candidates in proportion to their verifier prompt tokens "
             "(exact with batch=1)")
SETTINGS = ("verifier", "model", "verifications", "verify_tokens", "temperature", "prompt")
"""The note fields that must match to resume a score name."""


def cost_key(name: str, what: str) -> str:
    return f"{name}:{what}"


def is_cost_key(key: str) -> bool:
    return any(key.endswith(":" + f) for f in COST_FIELDS)


def paid_scores(names: Iterable[str]) -> list[str]:
    """The score names that carry their verifier's compute (those ``pool score`` wrote)."""
    have = set(names)
    return sorted(n for n in have if not is_cost_key(n) and cost_key(n, "flops") in have)


def default_name(verifier: str, model: str | None, verifications: int | None) -> str:
    """``judge-qwen2.5-coder-1.5b-v1``: the verifier, the model it ran on and V, so names never collide."""
    return "-".join([verifier, *([model] if model else []), *([f"v{verifications}"] if verifications else [])])


def task_from_record(task: dict[str, Any], chat_model: bool) -> tuple[Task | None, str]:
    """The run's task rebuilt from its recorded description, or (None, why not).

    The judge continues the task's own conversation when it has the task, so the rebuilt task must
    prompt exactly as the run did: a rebuilt format that differs from the record is refused.
    """
    name = task.get("name")
    fmt = task.get("format") or {}
    if not name:
        return None, "the run records no task name"
    try:
        t = make_task(str(name), style=fmt.get("style"), shots=fmt.get("shots"), max_tokens=fmt.get("max_tokens"),
                      instruction=fmt.get("instruction"), seed=task.get("seed", task.get("shuffle_seed")),
                      subtask=task.get("task"), data=task.get("path"), chat_model=chat_model)
    except Exception as e:  # noqa: BLE001 - any failure means the standalone prompt; the note says why
        return None, f"task {name!r} could not be rebuilt ({e})"
    if t.describe().get("format") != fmt:
        return None, f"task {name!r} rebuilt with a different prompt format than the run's"
    return t, ""


def describe_verifier(verifier: Verifier) -> dict[str, Any]:
    """What identifies a verifier's scores: its name, the model it runs on and its settings."""
    backend = getattr(verifier, "backend", None)
    out: dict[str, Any] = {"verifier": verifier.name, "model": None}
    if backend is not None:
        info = backend.model_info()
        out |= {"model": info.name, "n_params": info.n_params, "backend": backend.name}
    for key in ("verifications", "verify_tokens", "temperature"):
        if hasattr(verifier, key):
            out[key] = getattr(verifier, key)
    if hasattr(verifier, "task"):
        out["prompt"] = "standalone" if getattr(verifier, "task", None) is None else "followup"
    return out


def candidate_weights(verifier: Verifier, problem: Problem, candidates: Sequence[Sample]) -> list[float]:
    """Each candidate's share key: its verifier prompt in tokens (see the module's cost rule)."""
    request = getattr(verifier, "request", None)
    backend = getattr(verifier, "backend", None)
    if callable(request) and backend is not None:
        return [float(max(1, backend.count_prompt_tokens(request(problem, c)))) for c in candidates]
    return [float(max(1, c.prompt_tokens + c.n_tokens)) for c in candidates]


def apportion(usage: Usage, wall_s: float, weights: Sequence[float]) -> list[dict[str, float]]:
    """One call's cost split over its candidates by ``weights`` (fractional shares summing to the whole)."""
    total = float(sum(weights))
    if total <= 0:
        raise ConfigError("cost shares need positive weights")
    return [{"prefilled": usage.prefilled_tokens * w / total, "generated": usage.generated_tokens * w / total,
             "flops": usage.flops * w / total, "seconds": wall_s * w / total} for w in weights]


def select(store: Store, run_id: str, limit_problems: int | None = None,
           samples_per_problem: int | None = None) -> list[tuple[Problem, list[Sample]]]:
    """The first ``limit_problems`` problems with samples (in the run's order), each with its first
    ``samples_per_problem`` samples by index: a fixed subset, so a resumed call picks the same one."""
    if store.get_run(run_id) is None:
        known = ", ".join(r.run_id for r in store.list_runs()) or "none"
        raise StoreError(f"no run {run_id!r} in {store.path} (runs: {known})")
    by_problem: dict[str, list[Sample]] = {}
    for pid, s in store.samples(run_id):
        by_problem.setdefault(pid, []).append(s)
    chosen = [(p, by_problem[p.id][:samples_per_problem]) for p in store.problems(run_id) if by_problem.get(p.id)]
    if not chosen:
        raise StoreError(f"run {run_id!r} has no samples to score")
    return chosen[:limit_problems]


def _check_settings(store: Store, run_id: str, name: str, info: dict[str, Any]) -> None:
    old = store.notes(run_id, f"score:{name}").get(f"score:{name}")
    if old is None:
        return
    diff = [k for k in SETTINGS if old.get(k) != info.get(k)]
    if diff:
        raise StoreError(f"run {run_id!r} already has scores {name!r} made with other settings (differs in: "
                         f"{', '.join(diff)}); use another --name")


def score_run(store: Store, run_id: str, work: Score, progress: ProgressFn | None = None) -> Summary:
    """Score the selected samples of ``run_id`` that lack ``work.name`` with ``work.verifier``; resumable.

    Each verifier call's scores and cost shares are committed before the next call starts."""
    verifier, name, batch = work.verifier, work.name, work.batch
    if not name or is_cost_key(name):
        raise ConfigError(f"bad score name {name!r} (it may not end in :{', :'.join(COST_FIELDS)})")
    if batch is not None and batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    for n, v in (("limit_problems", work.limit_problems), ("samples_per_problem", work.samples_per_problem)):
        if v is not None and v < 1:
            raise ConfigError(f"{n} must be >= 1, got {v}")
    chosen = select(store, run_id, work.limit_problems, work.samples_per_problem)
    note = describe_verifier(verifier) | (work.info or {})
    _check_settings(store, run_id, name, note)
    store.set_note(run_id, f"score:{name}", note | {"cost_rule": COST_RULE, "code_version": code_version(),
                                                    "cost_keys": [cost_key(name, f) for f in COST_FIELDS]})
    total = sum(len(ss) for _, ss in chosen)
    done = sum(1 for _, ss in chosen for s in ss if name in s.scores)
    run = store.get_run(run_id)
    task = str(run.config.get("task", {}).get("name", "?")) if run else "?"
    model = str(run.model.get("name", "?")) if run else "?"
    summary = Summary(run_id=run_id, kind="score", task=task, strategy=f"score:{name}", model=model,
                      problems=len(chosen), finished=len(chosen), skipped=0, resumed=done > 0, samples=total,
                      generated=0, usage=Usage(), spent=Usage(), wall_s=0.0)
    if progress:
        progress(Progress(done, total, "samples"))
    t0 = time.perf_counter()
    for problem, samples in chosen:
        pending = [s for s in samples if name not in s.scores]
        step = batch or max(1, len(pending))
        for i in range(0, len(pending), step):
            part = pending[i : i + step]
            start = time.perf_counter()
            scored = verifier.score(problem, part)
            wall = time.perf_counter() - start
            if len(scored.scores) != len(part):
                raise ConfigError(f"verifier {verifier.name!r} returned {len(scored.scores)} scores for "
                                  f"{len(part)} candidates")
            shares = apportion(scored.usage, wall, candidate_weights(verifier, problem, part))
            for s, score, share in zip(part, scored.scores, shares, strict=True):
                s.scores[name] = float(score)
                s.scores.update({cost_key(name, k): float(v) for k, v in share.items()})
            store.update_scores(run_id, problem.id, part)  # committed: an interruption keeps this call's scores
            summary.generated += len(part)
            summary.usage = summary.spent = summary.usage + scored.usage
            done += len(part)
            if progress:
                progress(Progress(done, total, "samples"))
    summary.wall_s = time.perf_counter() - t0
    return summary
