"""Speculative reasoning (SpecReason, 2025): a small draft model writes each step, the base model checks it.

Per step of every chain: the *draft* model writes one step (a step ends at a blank line, as in
:mod:`ttscale.strategies.steps`); the *base* model (the run's own backend) scores it from one prefill
of a short judge prompt, with no generation: the score is the expected digit under the base model's
next-token distribution over ``"0"`` .. ``"9"`` (renormalized over the ten digits) after a request
for a 0-9 utility rating of the latest step. A score at or above ``threshold`` keeps the draft's step;
below it, the base model writes that step itself. A chain ends at a step that states the final answer
(``The answer is ...``), an empty step (the model ended its turn), ``max_steps`` steps, or the run's
``max_tokens`` generated tokens; the answer is extracted as the task does.

``k`` chains run side by side (each phase is one batched call per model) and their answers are voted
by majority with the task's equivalence, so ``k > 1`` with a temperature is speculative
self-consistency. When the score cannot change the decision it is not computed: ``threshold <= 0``
keeps every draft step (the draft model stepping alone, never a base generation) and
``threshold > 9`` rejects every one, so neither draft nor score is made (the base model stepping alone).

The draft model is ``draft``: any :class:`~ttscale.backends.base.Backend` (``ttscale run --draft-model`` /
``--draft-base-url`` and ``ttscale serve --draft-model`` open one and pass it here; an HTTP one works), or
an embedded model name (``qwen2.5-coder-0.5b``, opened lazily on the embedded engine and closed with the
strategy; the executor solves each problem with a fresh copy, which opens its own, so pass a backend for
more than one problem). The base model must answer next-token probes (``prober_of``: the embedded engine,
and the HTTP backend on llama-server). Both models should share a tokenizer and prompt format (the
Qwen2.5-Coder family does); the draft's prompt is the task's request rendered by the draft backend, or
``draft_task``'s when given.

Costs: every call is charged to the run's meter at its own model's shapes (the draft's through
:meth:`Meter.for_model`), and checked against the budget before it is made (drafting reserves the
score's prefill), so the budget is a hard cap. ``Result.meta["speculative"]`` splits usage and wall
time by phase (``draft``, ``score``, ``rewrite``) and counts steps kept and rewritten.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from ttscale.backends.base import Backend, prober_of, render_prompt
from ttscale.errors import ConfigError, UnsupportedFeatureError
from ttscale.strategies.base import SolveContext, sample_seed
from ttscale.strategies.spec import StrategyOptions, StrategySpec
from ttscale.strategies.steps import Partial, StepGenerator, as_sample
from ttscale.strategies.voting import weighted_vote
from ttscale.tasks.base import Task
from ttscale.types import DEFAULT_DELIMITER, ChatMessage, GenerationRequest, Problem, Result, Usage, capabilities_of

DIGITS = tuple(str(d) for d in range(10))
SCORE_QUESTION = (
    "Rate the last step of the solution so far: is it correct and useful for solving the problem? "
    "Answer with one digit from 0 (wrong or useless) to 9 (correct and useful)."
)
DEFAULT_DRAFT = "qwen2.5-coder-0.5b"
PHASES = ("draft", "score", "rewrite")


def expected_digit(logprobs: dict[str, float]) -> float:
    """The expected value of a 0-9 rating from next-token log-probs of the digits (renormalized over them).

    >>> round(expected_digit({"9": math.log(0.6), "3": math.log(0.2), "x": 0.0}), 3)
    7.5
    """
    mass = {int(d): math.exp(v) for d, v in logprobs.items() if d in DIGITS}
    total = sum(mass.values())
    return sum(d * p for d, p in mass.items()) / total if total > 0 else 0.0


def score_request(base: GenerationRequest, solution: str, question: str = SCORE_QUESTION) -> GenerationRequest:
    """The base model's judge prompt: the task's conversation with the solution so far as the assistant's
    turn, then the rating question (it shares the generation prompt as a prefix, so the engine's prefix
    cache reuses the problem and earlier steps)."""
    if base.messages is not None:
        return GenerationRequest(messages=(*base.messages, ChatMessage("assistant", solution),
                                           ChatMessage("user", question)), max_tokens=1)
    assert base.prompt is not None
    return GenerationRequest(prompt=f"{base.prompt} {solution}\n\n{question}\nRating:", max_tokens=1)


class SpeculativeOptions(StrategyOptions):
    k: int = Field(1, ge=1, le=64, description="speculative chains per problem, voted by majority")
    threshold: float = Field(7.0, ge=0.0, le=10.0,
                             description="keep a draft step whose base-model score (0-9) is at least this; 0: keep all, >9: rewrite all")
    max_steps: int = Field(16, ge=1, le=256, description="steps per chain")
    step_tokens: int = Field(128, ge=1, le=4096, description="tokens per step")
    draft: str = Field(DEFAULT_DRAFT, min_length=1, description="the draft model (an embedded model name)")


@dataclass
class _Chain:
    uid: int
    steps: tuple[str, ...] = ()
    n_tokens: int = 0
    logprob: float = 0.0
    done: bool = False
    finish_reason: str = "partial"
    kinds: list[str] = field(default_factory=list)
    """Per step: ``draft`` (kept) or ``base`` (written by the base model)."""
    scores: list[float | None] = field(default_factory=list)

    def partial(self) -> Partial:
        return Partial(steps=self.steps, n_tokens=self.n_tokens, logprob=self.logprob, uid=self.uid)

    def extend(self, child: Partial, kind: str, score: float | None, max_tokens: int) -> None:
        self.steps, self.n_tokens, self.logprob = child.steps, child.n_tokens, child.logprob
        self.done, self.finish_reason = child.done, child.finish_reason
        if len(child.steps) > len(self.kinds):  # an empty final step adds no text
            self.kinds.append(kind)
            self.scores.append(score)
        if not self.done and self.n_tokens >= max_tokens:
            self.done, self.finish_reason = True, "length"


def _minus(after: Usage, before: Usage) -> Usage:
    return Usage(**{f: getattr(after, f) - getattr(before, f) for f in
                    ("prompt_tokens", "prefilled_tokens", "generated_tokens", "flops", "wall_s", "requests", "samples")})


@dataclass
class SpeculativeReasoning:
    k: int = 1
    threshold: float = 7.0
    max_steps: int = 16
    step_tokens: int = 128
    draft: str | Backend = DEFAULT_DRAFT
    """The draft model: an embedded model name (opened lazily, closed by :meth:`close`) or a backend."""
    draft_task: Task | None = None
    """The draft model's prompt format (default: the run's task)."""
    delimiter: str = DEFAULT_DELIMITER
    question: str = SCORE_QUESTION
    name: str = "speculative-reasoning"
    _opened: Backend | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.k < 1 or self.max_steps < 1 or self.step_tokens < 1:
            raise ConfigError("speculative-reasoning needs k, max_steps and step_tokens >= 1")
        if not 0.0 <= self.threshold <= 10.0:
            raise ConfigError(f"speculative-reasoning's threshold is on the 0-9 score scale (0-10), got {self.threshold}")

    # -- the draft model ---------------------------------------------------------------------------

    @property
    def draft_name(self) -> str:
        return self.draft if isinstance(self.draft, str) else self.draft.model_info().name

    def draft_backend(self) -> Backend:
        """The draft model's backend (an embedded model named by ``draft`` is opened on first use)."""
        if not isinstance(self.draft, str):
            return self.draft
        with self._lock:
            if self._opened is None:
                from ttscale.backends.llama_cpp import LlamaCppBackend

                opened = LlamaCppBackend(self.draft, n_ctx=8192, n_seq_max=max(4, self.k))
                weakref.finalize(self, opened.close)
                self._opened = opened
            return self._opened

    def close(self) -> None:
        """Close the draft backend this strategy opened (a backend passed in is the caller's)."""
        with self._lock:
            if self._opened is not None:
                self._opened.close()
                self._opened = None

    # -- solving -----------------------------------------------------------------------------------

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        t_start = time.perf_counter()
        drafting = self.threshold <= 9.0
        scoring = 0.0 < self.threshold <= 9.0
        if scoring and not capabilities_of(ctx.backend).next_token_probes:
            raise UnsupportedFeatureError(f"backend {ctx.backend.name} cannot report next-token log-probs: "
                                          "speculative-reasoning's base model scores steps with them")
        base_req = ctx.base_request()
        max_tokens = base_req.max_tokens
        seed = sample_seed(ctx.sampling.seed, problem.id, 0)
        base_gen = (StepGenerator(ctx.backend, base_req, delimiter=self.delimiter, step_tokens=self.step_tokens,
                                  max_steps=self.max_steps, seed=seed) if self.threshold > 0.0 else None)
        draft_gen: StepGenerator | None = None
        draft_meter = ctx.meter
        if drafting:
            db = self.draft_backend()
            dtask = self.draft_task or ctx.task
            s = ctx.sampling
            dreq = dtask.request(problem).with_(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                                                min_p=s.min_p, max_tokens=max_tokens)
            draft_gen = StepGenerator(db, dreq, delimiter=self.delimiter, step_tokens=self.step_tokens,
                                      max_steps=self.max_steps, seed=seed ^ 0x5EC)
            draft_meter = ctx.meter.for_model(db.model_info())
        chains = [_Chain(uid=i + 1) for i in range(self.k)]
        spent = {p: Usage() for p in PHASES}
        wall = dict.fromkeys(PHASES, 0.0)  # seconds per phase; then "total", the whole solve
        counts = {"accepted": 0, "rejected": 0, "drafted": 0}

        def phase(name: str, before: Usage, t0: float) -> None:
            spent[name] = spent[name] + _minus(ctx.meter.usage, before)
            wall[name] += time.perf_counter() - t0

        stopped = False
        while not stopped:
            live = [c for c in chains if not c.done]
            if not live:
                break
            keep: list[bool] = [False] * len(live)
            drafts: list[Partial] = []
            scores: list[float | None] = [None] * len(live)
            if draft_gen is not None:
                reserve = self._score_bound(ctx, base_req, live) if scoring else Usage()
                before, t0 = ctx.meter.usage, time.perf_counter()
                kids = draft_gen.expand([c.partial() for c in live], 1, meter=draft_meter, reserve=reserve)
                phase("draft", before, t0)
                if kids is None:
                    stopped = True
                    break
                drafts = [group[0] for group in kids]
                counts["drafted"] += len(drafts)
                if scoring:
                    before, t0 = ctx.meter.usage, time.perf_counter()
                    got = self._score(ctx, base_req, drafts)
                    phase("score", before, t0)
                    if got is None:
                        stopped = True
                        break
                    scores = list(got)
                    keep = [sc is not None and sc >= self.threshold for sc in scores]
                else:
                    keep = [True] * len(live)
            redo = [i for i, ok in enumerate(keep) if not ok]
            rewritten: dict[int, Partial] = {}
            if redo:
                assert base_gen is not None  # threshold 0 keeps every step
                before, t0 = ctx.meter.usage, time.perf_counter()
                kids = base_gen.expand([live[i].partial() for i in redo], 1, meter=ctx.meter)
                phase("rewrite", before, t0)
                if kids is None:
                    stopped = True
                    break
                rewritten = {i: group[0] for i, group in zip(redo, kids, strict=True)}
            for i, c in enumerate(live):
                if keep[i]:
                    counts["accepted"] += 1
                    c.extend(drafts[i], "draft", scores[i], max_tokens)
                else:
                    counts["rejected"] += int(draft_gen is not None)
                    c.extend(rewritten[i], "base", scores[i], max_tokens)
        if stopped:
            ctx.budget_exhausted = True
        wall["total"] = time.perf_counter() - t_start
        return self._result(problem, ctx, chains, spent, wall, counts)

    def _score_prompts(self, ctx: SolveContext, base_req: GenerationRequest,
                       partials: Sequence[Partial]) -> list[GenerationRequest]:
        reqs = []
        for p in partials:
            text = p.text(self.delimiter).strip() or "(empty)"
            rendered = render_prompt(ctx.backend, score_request(base_req, text, self.question))
            reqs.append(GenerationRequest(prompt=rendered, max_tokens=1))
        return reqs

    def _score_bound(self, ctx: SolveContext, base_req: GenerationRequest, live: Sequence[_Chain]) -> Usage:
        """Most scoring the chains' next draft steps can cost: every judge prompt in full, each grown by a
        full step (and a few tokens of re-tokenization at the join)."""
        info = ctx.meter.info
        total = Usage()
        for r in self._score_prompts(ctx, base_req, [c.partial() for c in live]):
            n = ctx.backend.count_prompt_tokens(r) + self.step_tokens + 4
            total = total + Usage(prefilled_tokens=n, flops=info.flops_for_positions(0, n))
        return total

    def _score(self, ctx: SolveContext, base_req: GenerationRequest, drafts: Sequence[Partial]) -> list[float] | None:
        """The base model's 0-9 score of each draft's last step, from one prefill each (None: over budget)."""
        reqs = self._score_prompts(ctx, base_req, drafts)
        info = ctx.meter.info
        bound = Usage.total(Usage(prefilled_tokens=(n := ctx.backend.count_prompt_tokens(r)),
                                  flops=info.flops_for_positions(0, n)) for r in reqs)
        if not ctx.meter.fits(bound):
            return None
        t0 = time.perf_counter()
        probes = prober_of(ctx.backend).next_token_logprobs(reqs, DIGITS)
        ctx.meter.charge(Usage(
            prompt_tokens=sum(p.prompt_tokens for p in probes),
            prefilled_tokens=sum(p.prefilled_tokens for p in probes),
            flops=sum(info.flops_for_positions(p.prompt_tokens - p.prefilled_tokens, p.prompt_tokens) for p in probes),
            wall_s=time.perf_counter() - t0, requests=len(probes),
        ))
        return [expected_digit(p.logprobs) for p in probes]

    def _result(self, problem: Problem, ctx: SolveContext, chains: Sequence[_Chain], spent: dict[str, Usage],
                wall: dict[str, float], counts: dict[str, int]) -> Result:
        start = ctx.next_index()
        samples = []
        for i, c in enumerate(chains):
            p = c.partial()
            s = as_sample(Partial(steps=p.steps, n_tokens=c.n_tokens, logprob=c.logprob, done=True,
                                  finish_reason=c.finish_reason if c.done else "partial"),
                          ctx.task, problem, start + i, self.delimiter)
            samples.append(s)
        ctx.record(samples)
        answer, votes = weighted_vote(samples, None, ctx.task.equivalent)
        judged = counts["accepted"] + counts["rejected"] if self.threshold <= 9.0 else 0
        return ctx.result(self.name, answer, samples, votes, speculative={
            "draft_model": self.draft_name, "base_model": ctx.meter.info.name, "threshold": self.threshold,
            "steps": sum(len(c.kinds) for c in chains), "drafted": counts["drafted"],
            "accepted": counts["accepted"] if self.threshold <= 9.0 else 0, "rejected": counts["rejected"],
            "accept_rate": round(counts["accepted"] / judged, 4) if judged else None,
            "usage": {p: spent[p].to_dict() for p in PHASES},
            "wall_s": {p: round(w, 4) for p, w in wall.items()},
            "chains": [{"kinds": c.kinds, "scores": [None if s is None else round(s, 3) for s in c.scores],
                        "finish_reason": c.finish_reason} for c in chains],
        })

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "threshold": self.threshold, "max_steps": self.max_steps,
                "step_tokens": self.step_tokens, "draft": self.draft_name}


SPEC = StrategySpec(
    "speculative-reasoning", SpeculativeReasoning, SpeculativeOptions,
    "SpecReason: a draft model (--draft-model NAME or --draft-base-url URL) writes each step, the base model "
    "scores it (0-9, one prefill) and rewrites steps below -o threshold; k chains voted",
    draft_option="draft",
)
