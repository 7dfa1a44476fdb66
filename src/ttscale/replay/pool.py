"""A sample pool as numpy arrays: problems x K samples, everything replay needs.

Answers become small integers per problem (``-1``: no extractable answer), so
votes are ``bincount`` calls; costs are split into a per-problem part (the
prompt prefill, paid once when the backend shares the prefix across a
problem's samples, as llama.cpp, vLLM and SGLang do) and a per-sample part
(generated tokens, their decode FLOPs, and any prefill the engine did charge
per sample).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from ttscale.errors import StoreError
from ttscale.store import RunRecord, Store
from ttscale.types import ModelInfo, Sample


@dataclass
class Pool:
    """``P`` graded problems x ``K`` samples. Arrays are indexed ``[problem, sample]``."""

    problem_ids: list[str]
    answer: np.ndarray
    """int (P, K): answer id within its problem, -1 when no answer was extracted."""
    answer_correct: np.ndarray
    """bool (P, A): whether answer id ``a`` of problem ``p`` is correct (A = most distinct answers)."""
    n_tokens: np.ndarray
    """float (P, K): generated tokens per sample."""
    logprob: np.ndarray
    """float (P, K): summed token log-prob (0 where the engine gave none)."""
    finish_rank: np.ndarray
    """int (P, K): order in which the samples would finish when decoded together (0 first)."""
    prefill_tokens: np.ndarray
    """float (P,): prompt tokens prefilled once per problem (shared prefix)."""
    prefill_flops: np.ndarray
    """float (P,): FLOPs of that prefill."""
    sample_tokens: np.ndarray
    """float (P, K): tokens charged per sample: generated plus any per-sample prefill."""
    sample_flops: np.ndarray
    """float (P, K): FLOPs charged per sample (decode, plus any per-sample prefill)."""
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    """Verifier scores by name, float (P, K); ``certainty`` is always present (from log-probs)."""
    run_id: str = ""
    task: str = ""
    model: str = ""
    dropped: int = 0
    """Problems left out: no reference answer, or no samples."""
    gaming: dict[str, int] = field(default_factory=dict)
    """Samples whose grade flagged an attempt to game the tests, by kind (``early-exit``,
    ``fake-equality``, ...; see :class:`ttscale.sandbox.CheckResult`)."""

    @property
    def n_problems(self) -> int:
        return int(self.answer.shape[0])

    @property
    def k(self) -> int:
        return int(self.answer.shape[1])

    @property
    def n_answers(self) -> int:
        return int(self.answer_correct.shape[1])

    @property
    def correct(self) -> np.ndarray:
        """bool (P, K): sample correctness."""
        ids = np.where(self.answer < 0, 0, self.answer)
        return np.take_along_axis(self.answer_correct, ids, axis=1) & (self.answer >= 0)

    def drawn(self, problem: int, indices: Sequence[int] | np.ndarray) -> list[Sample]:
        """Samples ``indices`` of row ``problem`` as the rules over drawn samples see them: each answer is
        its equivalence group's id as a string (so a rule needs no task), with tokens and log-prob."""
        return [Sample(int(j), "", str(self.answer[problem, j]) if self.answer[problem, j] >= 0 else None, None,
                       int(self.n_tokens[problem, j]), 0, 0, 0.0, "stop", logprob=float(self.logprob[problem, j]))
                for j in indices]

    def answer_is_correct(self, problem: int, answer: str | None) -> bool:
        """Whether an answer returned by a rule over :meth:`drawn` samples is correct."""
        return answer is not None and bool(self.answer_correct[problem, int(answer)])

    @property
    def mean_logprob(self) -> np.ndarray:
        return self.logprob / np.maximum(self.n_tokens, 1.0)

    def summary(self) -> dict[str, object]:
        return {
            "run_id": self.run_id, "task": self.task, "model": self.model, "problems": self.n_problems,
            "k": self.k, "dropped_problems": self.dropped, "sample_accuracy": float(self.correct.mean()),
            "mean_generated_tokens": float(self.n_tokens.mean()),
            "mean_prefill_tokens": float(self.prefill_tokens.mean()),
            "scores": sorted(self.scores),
        }


def model_info_from_record(model: dict[str, object]) -> ModelInfo | None:
    """Rebuild the model's shapes from a run record (None if the record lacks them)."""
    names = {f.name for f in fields(ModelInfo)}
    try:
        return ModelInfo(**{k: v for k, v in model.items() if k in names})  # type: ignore[arg-type]
    except TypeError:
        return None


def pool_from_samples(
    by_problem: dict[str, list[Sample]],
    *,
    info: ModelInfo | None = None,
    k: int | None = None,
    run_id: str = "",
    task: str = "",
    model: str = "",
    equivalent: Callable[[str, str], bool] | None = None,
) -> Pool:
    """Arrays from per-problem samples. Problems without graded samples are dropped.

    Every problem keeps its first ``k`` samples by index (default: the smallest
    count among problems), so all rows have the same width. Answers that ``equivalent`` (the
    task's comparison; default: the same string) calls the same get one id, so they vote together
    ("0.5" and "1/2" on a math task), as they do in a live run.
    """
    graded = {pid: sorted(ss, key=lambda s: s.index) for pid, ss in by_problem.items()
              if ss and all(s.correct is not None for s in ss)}
    dropped = len(by_problem) - len(graded)
    if not graded:
        raise StoreError("no problem has graded samples: replay needs reference answers")
    width = min(len(ss) for ss in graded.values())
    if k is not None:
        if k < 1:
            raise StoreError(f"samples per problem must be >= 1, got {k}")
        if k > width:
            raise StoreError(f"asked for {k} samples per problem but some problem has only {width}")
        width = k
    pids = list(graded)
    P, K = len(pids), width
    answer = np.full((P, K), -1, dtype=np.int64)
    n_tokens = np.zeros((P, K))
    logprob = np.zeros((P, K))
    finish_rank = np.zeros((P, K), dtype=np.int64)
    prefill_tokens = np.zeros(P)
    prefill_flops = np.zeros(P)
    sample_tokens = np.zeros((P, K))
    sample_flops = np.zeros((P, K))
    score_names = sorted({n for ss in graded.values() for s in ss[:K] for n in s.scores})
    scores = {n: np.zeros((P, K)) for n in score_names}
    correct_rows: list[list[bool]] = []
    gaming: dict[str, int] = {}
    for p, pid in enumerate(pids):
        ss = graded[pid][:K]
        for s in ss:
            if s.grade.get("suspicious"):
                gaming[str(s.grade["suspicious"])] = gaming.get(str(s.grade["suspicious"]), 0) + 1
        ids: dict[str, int] = {}
        ok: list[bool] = []
        for j, s in enumerate(ss):
            if s.answer is not None:
                if s.answer not in ids:
                    same = next((i for a, i in ids.items() if equivalent is not None and equivalent(a, s.answer)), None)
                    ids[s.answer] = len(ok) if same is None else same
                    if same is None:
                        ok.append(bool(s.correct))
                answer[p, j] = ids[s.answer]
            n_tokens[p, j] = s.n_tokens
            logprob[p, j] = s.logprob if s.logprob is not None and math.isfinite(s.logprob) else 0.0
            for n in score_names:
                scores[n][p, j] = s.scores.get(n, 0.0)
        correct_rows.append(ok)
        # Samples decode in lockstep, so the shortest finishes first; the engine's order breaks ties.
        finish_rank[p] = np.argsort(np.lexsort(([s.index for s in ss], [s.wave for s in ss],
                                                [s.finish_order for s in ss], n_tokens[p])))
        pre = np.array([s.prefilled_tokens for s in ss], dtype=float)
        decode_flops = np.array([
            info.flops_for_positions(s.prompt_tokens, s.prompt_tokens + s.n_tokens) if info else s.flops for s in ss
        ])
        pre_flops = np.maximum(np.array([s.flops for s in ss]) - decode_flops, 0.0)
        # Shared prefix: the engine charged the prompt to one sample per request (wave);
        # a strategy drawing k of these samples in one request pays it once.
        shared = np.count_nonzero(pre) <= max(1, len({s.wave for s in ss}))
        if shared:
            prefill_tokens[p] = pre[0] if pre[0] > 0 else pre.max(initial=0.0)
            prefill_flops[p] = pre_flops[0] if pre[0] > 0 else pre_flops.max(initial=0.0)
            sample_tokens[p] = n_tokens[p]
            sample_flops[p] = decode_flops
        else:
            sample_tokens[p] = n_tokens[p] + pre
            sample_flops[p] = decode_flops + pre_flops
    A = max(1, max(len(r) for r in correct_rows))
    answer_correct = np.zeros((P, A), dtype=bool)
    for p, r in enumerate(correct_rows):
        answer_correct[p, : len(r)] = r
    pool = Pool(pids, answer, answer_correct, n_tokens, logprob, finish_rank, prefill_tokens, prefill_flops,
                sample_tokens, sample_flops, scores, run_id, task, model, dropped, dict(sorted(gaming.items())))
    pool.scores.setdefault("certainty", np.exp(pool.mean_logprob))
    return pool


def read_run(store: Store, run_id: str) -> tuple[RunRecord, dict[str, list[Sample]], str]:
    """A stored run's record, its samples by problem (every problem of the run, possibly with none)
    and its task's name; a missing run or one without any sample is a :class:`StoreError`."""
    rec = store.get_run(run_id)
    if rec is None:
        known = ", ".join(r.run_id for r in store.list_runs()) or "none"
        raise StoreError(f"no run {run_id!r} in {store.path} (runs: {known})")
    by_problem: dict[str, list[Sample]] = {p.id: [] for p in store.problems(run_id)}
    for pid, s in store.samples(run_id):
        by_problem.setdefault(pid, []).append(s)
    if not any(by_problem.values()):
        raise StoreError(f"run {run_id!r} has no samples")
    task = rec.config.get("task", {})
    # The registered task name (its record holds the answer equivalence); BIG-bench runs also carry
    # their subtask under "task", which older readers preferred.
    name = str(task.get("name") or task.get("task") or "") if isinstance(task, dict) else str(task)
    return rec, by_problem, name


def task_equivalence(task: str) -> Callable[[str, str], bool] | None:
    """The answer comparison declared by the task's record (None for unknown tasks: exact strings)."""
    from ttscale.registry import task_specs

    spec = task_specs().get(task)
    return spec.equivalent if spec is not None else None


def task_family(task: str) -> Callable[[str], str] | None:
    """The task record's map from a problem id to its family (None: every problem is its own)."""
    from ttscale.registry import task_specs

    spec = task_specs().get(task)
    return spec.family if spec is not None else None


def load_pool(store: Store, run_id: str, k: int | None = None) -> Pool:
    """Load a run's samples (any kind of run; sweeps are made for this) as a :class:`Pool`; answers
    are grouped by the task's own equivalence."""
    rec, by_problem, task = read_run(store, run_id)
    return pool_from_samples(
        by_problem, info=model_info_from_record(rec.model), k=k, run_id=run_id, task=task,
        model=str(rec.model.get("name", "")), equivalent=task_equivalence(task),
    )
