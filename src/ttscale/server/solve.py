"""One request's prompt, solved by a strategy: the server's twin of ``runner.solve_problems``.

A request has no reference answer, so it becomes a :class:`Problem` without one,
and :class:`RequestTask` adapts the request to the Task protocol: its generation
request is the client's prompt, and an "answer" (what samples vote on) is the
final number in a sample when there is one, else its normalized text.

The strategy runs in a worker thread with a :class:`SolveContext` whose backend is
:class:`BatchedBackend`: generations go through the micro-batcher, and a
cancelled request stops at the next generation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ttscale.backends.base import Backend, prober_of, render_prompt, report_finished, tokenizer_of
from ttscale.cost import Budget, Meter
from ttscale.errors import UnsupportedFeatureError
from ttscale.planner.policy import Policy
from ttscale.planner.strategy import PolicyStrategy
from ttscale.registry import make_verifier, strategy_spec
from ttscale.server.batcher import MicroBatcher
from ttscale.server.control import POLICY, Plan
from ttscale.server.errors import APIError, RequestCancelled
from ttscale.strategies.base import SolveContext
from ttscale.tasks.answers import answers_equivalent, extract_numeric_answer
from ttscale.tasks.base import Task
from ttscale.types import (
    Cancelled,
    Capabilities,
    Generation,
    GenerationRequest,
    ModelInfo,
    OnFinish,
    OnSample,
    Problem,
    PromptFormat,
    Result,
    Sample,
    Sampling,
    ShouldStop,
    Usage,
    capabilities_of,
)

_WS = re.compile(r"\s+")

ProgressFn = Callable[[dict[str, Any]], None]


class StopFlag(Protocol):
    """A request's cancellation as the worker threads see it (``threading.Event`` is one)."""

    def is_set(self) -> bool: ...


def normalize_text(text: str) -> str | None:
    """Text compared for voting on free-form answers: case- and whitespace-insensitive.

    >>> normalize_text("  The  Answer.\\n")
    'the answer'
    """
    t = _WS.sub(" ", text).strip().rstrip(".!").strip().lower()
    return t or None


@dataclass
class RequestTask:
    """The Task protocol over one client request."""

    template: GenerationRequest
    answer_mode: str = "auto"
    name: str = "request"
    fmt: PromptFormat = field(default_factory=PromptFormat)

    def problems(self, limit: int | None = None) -> list[Problem]:
        return []

    def request(self, problem: Problem) -> GenerationRequest:
        return self.template

    def extract(self, text: str) -> str | None:
        if self.answer_mode != "text":
            num = extract_numeric_answer(text)
            if num is not None or self.answer_mode == "numeric":
                return num
        return normalize_text(text)

    def equivalent(self, a: str | None, b: str | None) -> bool:
        return answers_equivalent(a, b)

    def grade(self, problem: Problem, answer: str | None) -> bool | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "answer": self.answer_mode}


class BatchedBackend:
    """The Backend protocol over the micro-batcher, for one strategy run.

    Hooks pass through to the engine when it declares ``cancellation`` (the batcher then runs
    the request in a call of its own, so a strategy's early stop cannot cut its batch-mates);
    judge probes (``next_token_logprobs``) go straight to the backend, which serializes them.
    """

    def __init__(self, inner: Backend, batcher: MicroBatcher, cancel: StopFlag,
                 progress: ProgressFn | None = None, trace: list[dict[str, Any]] | None = None) -> None:
        self._inner = inner
        self._batcher = batcher
        self._cancel = cancel
        self._progress = progress
        caps = capabilities_of(inner)
        self._hooks = caps.cancellation
        # per-request cancellation belongs to the batcher (a client that goes away), not to strategies
        self._caps = replace(caps, request_cancellation=False)
        self.trace = trace
        """When a list, each backend call appends what it asked and got (``ttscale.trace``); None costs nothing."""

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def model_info(self) -> ModelInfo:
        return self._inner.model_info()

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return self._inner.count_prompt_tokens(request)

    def generate(self, requests: Sequence[GenerationRequest], *, should_stop: ShouldStop | None = None,
                 on_finish: OnFinish | None = None, on_sample: OnSample | None = None,
                 cancelled: Cancelled | None = None) -> list[Generation]:
        given = {"should_stop": should_stop, "on_finish": on_finish, "on_sample": on_sample}
        hooks = {k: v for k, v in given.items() if v is not None} if self._hooks else {}
        if self._cancel.is_set():
            raise RequestCancelled("request cancelled")
        t0 = time.perf_counter() if self.trace is not None else 0.0
        gens = self._batcher.generate(list(requests), self._cancel.is_set, hooks or None)
        if self.trace is not None:
            self.trace.append({
                "call": "generate", "wall_s": round(time.perf_counter() - t0, 6),
                "requests": [{"n": r.n, "max_tokens": r.max_tokens, "temperature": r.temperature,
                              "prefilled_tokens": g.prefilled_tokens, "generated_tokens": g.generated_tokens,
                              "finish_reasons": [c.finish_reason for c in g.completions]}
                             for r, g in zip(requests, gens, strict=False)]})
        if self._cancel.is_set():
            raise RequestCancelled("request cancelled")
        if not self._hooks:
            report_finished(gens, on_finish, on_sample)
        if self._progress is not None:
            self._progress({"event": "samples", "n": sum(len(g.completions) for g in gens),
                            "generated_tokens": sum(g.generated_tokens for g in gens)})
        return gens

    def render(self, request: GenerationRequest) -> str:
        """The inner engine's exact prompt text (step-level strategies continue it); read-only, so not batched."""
        return render_prompt(self._inner, request)

    def tokenize(self, text: str) -> list[int]:
        return tokenizer_of(self._inner).tokenize(text)

    def next_token_logprobs(self, *args: Any, **kwargs: Any) -> Any:
        if not capabilities_of(self._inner).next_token_probes:
            raise UnsupportedFeatureError(f"backend {self._inner.name} has no next-token probes")
        if self._cancel.is_set():
            raise RequestCancelled("request cancelled")
        t0 = time.perf_counter() if self.trace is not None else 0.0
        probes = prober_of(self._inner).next_token_logprobs(*args, **kwargs)
        if self.trace is not None:
            self.trace.append({"call": "next_token_probes", "prompts": len(probes),
                               "wall_s": round(time.perf_counter() - t0, 6),
                               "prefilled_tokens": sum(getattr(p, "prefilled_tokens", 0) for p in probes)})
        return probes

    def close(self) -> None:
        pass


@dataclass
class ChoiceResult:
    """One returned choice: the strategy's result and the sample whose text is returned."""

    result: Result
    samples: list[Sample]
    text: str
    finish_reason: str
    strategy: dict[str, Any]
    trace: list[dict[str, Any]] | None = None
    """The backend calls the strategy made (only when the request asked for a trace)."""

    @property
    def usage(self) -> Usage:
        return self.result.usage


def pick_text(result: Result, samples: Sequence[Sample], verifier: str | None) -> tuple[str, str]:
    """The text returned for a result: the best-scored (else first) sample carrying the chosen answer."""
    carriers = [s for s in samples if result.answer is not None and s.answer == result.answer]
    if not carriers:
        carriers = list(samples)
    if not carriers:
        return "", "length"
    if verifier is not None and any(verifier in s.scores for s in carriers):
        best = max(carriers, key=lambda s: (s.scores.get(verifier, float("-inf")), -s.index))
    else:
        best = min(carriers, key=lambda s: s.index)
    return best.text, ("length" if best.finish_reason == "length" else "stop")


def solve_choice(
    *,
    template: GenerationRequest,
    plan: Plan,
    backend: Backend,
    batcher: MicroBatcher,
    cancel: StopFlag,
    problem_id: str,
    seed: int,
    budget: Budget,
    progress: ProgressFn | None = None,
    policy: Policy | None = None,
    draft_batcher: MicroBatcher | None = None,
    served_task: Task | None = None,
) -> ChoiceResult:
    """Run the plan's strategy on one prompt (called in a worker thread); a strategy that takes a draft
    model gets the server's, through ``draft_batcher``."""
    batcher.run_started()
    try:
        proxy = BatchedBackend(backend, batcher, cancel, progress, [] if plan.trace else None)
        task: Any
        if served_task is not None:  # the request is one of the task's problems: its question, the task's prompt
            task, problem = served_task, Problem(id=problem_id, prompt=question_of(template))
        else:
            task, problem = RequestTask(template, plan.answer_mode), Problem(id=problem_id, prompt=template.prompt or "")
        if plan.strategy == POLICY:
            assert policy is not None
            # The level: what the request's budget buys (the policy's richest level when it sets none),
            # in the unit the policy was fitted in.
            given = plan.budget_flops / 1e9 if policy.budget_unit == "gflops" and plan.budget_flops else (
                plan.budget_tokens if policy.budget_unit != "gflops" else None)
            level_budget = given or max(lv.budget for lv in policy.levels)
            return _run(PolicyStrategy(policy, float(level_budget)), template, plan, proxy, task, problem,
                        seed, budget, backend)
        verifier = make_verifier(plan.verifier, task, proxy) if plan.verifier else None
        if verifier is not None and verifier.uses_reference:
            raise APIError(400, f"verifier {plan.verifier!r} reads reference answers, which requests do not have",
                           param="ttscale.verifier", code="invalid_value")
        # the options were checked by the strategy's record when the request was resolved (control.resolve)
        spec = strategy_spec(plan.strategy)
        options = dict(plan.validated)
        if spec.draft_option is not None:
            if draft_batcher is None:  # control.resolve refuses such requests first
                raise APIError(400, f"strategy {plan.strategy!r} needs a draft model (--draft-model)")
            options[spec.draft_option] = BatchedBackend(draft_batcher.backend, draft_batcher, cancel)
            draft_batcher.run_started()  # its batcher waits for the runs that draft, as the base's does
            try:
                return _run(spec.build_validated(options, verifier), template, plan, proxy, task, problem, seed,
                            budget, backend)
            finally:
                draft_batcher.run_finished()
        strategy = spec.build_validated(options, verifier)
        return _run(strategy, template, plan, proxy, task, problem, seed, budget, backend)
    finally:
        batcher.run_finished()


def question_of(template: GenerationRequest) -> str:
    """What a request asks, as a served task's question: its last user message, or its prompt."""
    if template.prompt is not None:
        return template.prompt
    users = [m.content for m in template.messages or () if m.role == "user"]
    if not users:
        raise APIError(400, "this server answers a task's questions: send a user message", param="messages",
                       code="invalid_value")
    return users[-1]


def _run(strategy: Any, template: GenerationRequest, plan: Plan, proxy: BatchedBackend, task: Any,
         problem: Problem, seed: int, budget: Budget, backend: Backend) -> ChoiceResult:
    sampling = Sampling(temperature=template.temperature, top_p=template.top_p, top_k=template.top_k,
                        min_p=template.min_p, seed=seed, max_tokens=template.max_tokens)
    ctx = SolveContext(problem, proxy, task, Meter(backend.model_info(), budget), sampling)
    result = strategy.solve(problem, ctx)
    text, finish = pick_text(result, ctx.samples, plan.verifier)
    return ChoiceResult(result, list(ctx.samples), text, finish, strategy.describe(), proxy.trace)


def total_usage(usages: Iterable[Usage]) -> Usage:
    """``Usage.total``, without its field-by-field sum where there is one usage (a request's one choice).

    >>> u = Usage(prefilled_tokens=3, generated_tokens=5)
    >>> total_usage([u]) == Usage.total([u]), total_usage([u, u]).generated_tokens
    (True, 10)
    """
    items = list(usages)
    return items[0] if len(items) == 1 else Usage.total(items)


def usage_breakdown(choices: Sequence[ChoiceResult], total: Usage | None = None) -> dict[str, Any]:
    """What the request spent, split into sampling and verification (``total``: the choices' usage summed,
    when the caller has it already)."""
    total = total if total is not None else total_usage(c.usage for c in choices)
    samples = [s for c in choices for s in c.samples]
    # a sample's usage is its prefilled and generated tokens and FLOPs: summed as Usage.total would, in order
    s_prefilled = sum(s.prefilled_tokens for s in samples)
    s_generated = sum(s.n_tokens for s in samples)
    s_flops = sum((s.flops for s in samples), 0.0)
    return {
        "prefilled_tokens": total.prefilled_tokens,
        "generated_tokens": total.generated_tokens,
        "total_tokens": total.total_tokens,
        "prompt_tokens_logical": sum(s.prompt_tokens for c in choices for s in c.samples[:1]),
        "flops": total.flops,
        "peak_kv_bytes_per_choice": max((c.usage.peak_kv_bytes for c in choices), default=0),
        "samples": len(samples),
        "sampling": {"prefilled_tokens": s_prefilled, "generated_tokens": s_generated, "flops": s_flops},
        "verifier": {"prefilled_tokens": total.prefilled_tokens - s_prefilled,
                     "generated_tokens": total.generated_tokens - s_generated,
                     "flops": total.flops - s_flops},
    }


def ttscale_object(plan: Plan, choices: Sequence[ChoiceResult], budget: Budget, wall_s: float,
                   total: Usage | None = None) -> dict[str, Any]:
    """The ``ttscale`` extension of a response: strategy, cost breakdown, votes per choice."""
    return {
        "strategy": plan.strategy,
        "strategy_config": choices[0].strategy if choices else {},
        "strategy_source": plan.source,
        "verifier": plan.verifier,
        "budget": {"tokens": plan.budget_tokens, "flops": plan.budget_flops, "kv_bytes": plan.budget_kv_bytes,
                   "per_choice_tokens": budget.tokens, "per_choice_flops": budget.flops,
                   "per_choice_kv_bytes": budget.kv_bytes},
        "usage": usage_breakdown(choices, total),
        "wall_s": round(wall_s, 6),
        "choices": [
            {
                "index": i,
                "answer": c.result.answer,
                "votes": c.result.votes,
                "samples": [{"index": s.index, "answer": s.answer, "generated_tokens": s.n_tokens,
                             "finish_reason": s.finish_reason, **({"scores": s.scores} if s.scores else {})}
                            for s in c.samples],
                "budget_exhausted": bool(c.result.meta.get("budget_exhausted", False)),
                **({"policy": c.result.meta["policy"]} if "policy" in c.result.meta else {}),
                **({"trace": c.trace} if c.trace is not None else {}),
            }
            for i, c in enumerate(choices)
        ],
    }
