"""IterDRAG (Yue et al. 2024): follow-up sub-questions, each answered from its own retrieved passages.

Up to ``rounds`` (the paper's n) rounds of: the model writes a follow-up question (or, if it is done,
the final answer); the task's retriever adds the top-k passages for that question; the model writes
the intermediate answer. Then, if the model has not answered yet, one last call asks for the final
answer. The prompts are the task's (:class:`IterativeRetrieval`, which ``--task rag`` satisfies): its
demonstrations work through gold decompositions, and every call of a question extends the previous
call's prompt, so a prefix-caching engine prefills only each call's new part.

Cost: every call goes through the meter (its prompt tokens, i.e. the effective context length, its
prefilled and generated tokens, FLOPs). Before each call its worst case is checked, together with a
reserve for the final answer after it: a call whose prompt plus ``max_tokens`` would not fit the model's
context (the backend's ``context_length``, else the model's training context), or whose worst case
would pass the budget, is refused before it runs; the rounds stop there, the refusal (with its numbers)
is kept in the result's ``meta["refused"]``, and the final answer is asked for if it still fits. A
question whose very first call cannot fit the context is a :class:`~ttscale.errors.ConfigError` (fewer
passages or demonstrations), raised before anything is generated.

What is stored: one sample per question, whose text is the whole transcript and whose usage is the sum
over its calls (``prompt_tokens`` summed is the effective context length); the result's meta keeps each
round's follow-up question, retrieved passage ids and intermediate answer, and each call's counts. A
question finished in an interrupted run is not asked again; one interrupted between its calls is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import Field

from ttscale.cost import generation_usage
from ttscale.errors import ConfigError
from ttscale.strategies.base import SolveContext, sample_seed
from ttscale.strategies.spec import StrategyOptions, StrategySpec
from ttscale.tasks.base import grade_with_detail
from ttscale.tasks.retrieval import Hop, HopStep
from ttscale.types import GenerationRequest, Problem, Result, Sample, Usage, capabilities_of


@runtime_checkable
class IterativeRetrieval(Protocol):
    """A task IterDRAG can drive: it retrieves for follow-up questions and writes each call's prompt."""

    def retrieve_passages(self, question: str) -> list[str]:
        """Ids of the top-k passages for ``question``, best first."""
        ...

    def iter_request(self, problem: Problem, hops: Sequence[Hop], step: HopStep) -> GenerationRequest:
        """The prompt of the call that writes ``step`` after the rounds ``hops`` (sampling settings unset)."""
        ...

    def parse_follow_up(self, text: str) -> str | None:
        """The follow-up question a follow-up call wrote; None when it gave the final answer instead."""
        ...

    def parse_intermediate(self, text: str) -> str:
        """The intermediate answer an answer call wrote."""
        ...


class IterDragOptions(StrategyOptions):
    rounds: int = Field(2, ge=1, le=8, description="follow-up rounds at most (n): a follow-up question, its "
                                                   "passages and its answer each")


Refusal = tuple[Literal["context", "budget"], str]


@dataclass
class _Calls:
    """The model calls of one question: sampling settings applied, each checked, run and metered."""

    ctx: SolveContext
    n_ctx: int
    usages: list[Usage] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    has_logprobs: bool = True
    decode_s: float = 0.0
    finish: str = "stop"

    def prepare(self, req: GenerationRequest) -> GenerationRequest:
        s = self.ctx.sampling
        return req.with_(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p, n=1,
                         logprobs=req.logprobs and s.logprobs, max_tokens=s.max_tokens or req.max_tokens)

    def count(self, req: GenerationRequest) -> int:
        return self.ctx.backend.count_prompt_tokens(req)

    def refusal(self, what: str, req: GenerationRequest, final_prompt: int | None) -> Refusal | None:
        """Why the call ``req`` (followed by a final answer of about ``final_prompt`` prompt tokens, if given)
        must not run, or None."""
        prompt, m = self.count(req), req.max_tokens
        if prompt + m + 1 > self.n_ctx:
            return "context", (f"{what}: a prompt of {prompt} tokens plus max_tokens={m} exceeds the model's "
                               f"context of {self.n_ctx} tokens")
        if final_prompt is not None and final_prompt + m + 1 > self.n_ctx:
            return "context", (f"{what}: a prompt of {prompt} tokens fits, but the final answer after it (a prompt "
                               f"of about {final_prompt} tokens plus max_tokens={m}) would exceed the model's "
                               f"context of {self.n_ctx} tokens")
        meter = self.ctx.meter
        worst = meter.worst_case(prompt, 1, m)
        if final_prompt is not None:
            worst = worst + meter.worst_case(final_prompt, 1, m)
        if meter.fits(worst):
            return None
        b, spent = meter.budget, meter.usage
        reserve = f", then about {final_prompt} + {m} for the final answer" if final_prompt is not None else ""
        limits = "; ".join(x for x in (
            f"token budget {b.tokens} with {spent.total_tokens} spent" if b.tokens is not None else "",
            f"FLOPs budget {b.flops:.3g} with {spent.flops:.3g} spent" if b.flops is not None else "",
            f"KV budget {b.kv_bytes} bytes" if b.kv_bytes is not None else "") if x)
        return "budget", (f"{what}: up to {worst.total_tokens} more tokens ({prompt} prompt + {m} generated"
                          f"{reserve}) would pass the {limits}")

    def call(self, step: str, req: GenerationRequest) -> str:
        ctx = self.ctx
        r = req.with_(seed=sample_seed(ctx.sampling.seed, ctx.problem.id, len(self.usages)))
        gen = ctx.backend.generate([r])[0]
        usage = generation_usage(gen, ctx.meter.info)
        ctx.meter.charge(usage)
        self.usages.append(usage)
        c = gen.completions[0]
        self.log.append({"step": step, "prompt_tokens": gen.prompt_tokens, "prefilled_tokens": gen.prefilled_tokens,
                         "generated_tokens": c.n_tokens})
        if c.token_logprobs is None:
            self.has_logprobs = False
        else:
            self.logprobs += c.token_logprobs
        self.decode_s += c.decode_s
        self.finish = c.finish_reason
        return c.text


@dataclass
class IterDRAG:
    """Iterative retrieval-augmented generation over a task that satisfies :class:`IterativeRetrieval`."""

    rounds: int = 2
    name: str = "iterdrag"

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"iterdrag needs rounds >= 1, got {self.rounds}")

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        task = ctx.task
        if not isinstance(task, IterativeRetrieval):
            raise ConfigError(f"strategy {self.name!r} needs a retrieval task that writes follow-up prompts "
                              f"(--task rag), not {task.name!r}")
        if ctx.next_index() > 0:  # its sample is stored (an interrupted run): charge it, do not ask again
            stored = ctx.sample(1)
            answer = stored[0].answer if stored else None
            return ctx.result(self.name, answer, stored, {answer: 1.0} if answer is not None else {}, resumed=True)
        backend_ctx = capabilities_of(ctx.backend).context_length or ctx.backend.model_info().n_ctx_train
        calls = _Calls(ctx, backend_ctx)
        hops: list[Hop] = []
        refused: Refusal | None = None
        final_text: str | None = None
        for r in range(1, self.rounds + 1):
            follow = calls.prepare(task.iter_request(problem, hops, "follow_up"))
            final = calls.prepare(task.iter_request(problem, hops, "final"))
            refused = calls.refusal(f"round {r} follow-up", follow, calls.count(final))
            if refused:
                break
            text = calls.call("follow_up", follow)
            sub = task.parse_follow_up(text)
            if sub is None:  # the model answered without another round
                final_text = text
                break
            hop = Hop(sub, tuple(task.retrieve_passages(sub)))
            ask = calls.prepare(task.iter_request(problem, [*hops, hop], "answer"))
            # the final answer after this round: this prompt, the intermediate answer and the closing turn
            after = calls.count(ask) + ask.max_tokens + max(calls.count(final) - calls.count(follow), 0) + 16
            refused = calls.refusal(f"round {r} answer", ask, after)
            if refused:
                break  # the round's follow-up is dropped: its passages never reach the final prompt
            hops.append(replace(hop, answer=task.parse_intermediate(calls.call("answer", ask))))
        if final_text is None:
            final = calls.prepare(task.iter_request(problem, hops, "final"))
            why = calls.refusal("final answer", final, None)
            if why is None:
                final_text = calls.call("final", final)
            elif why[0] == "context" and not calls.usages:
                raise ConfigError(f"IterDRAG cannot start on problem {problem.id}: {why[1]} (fewer passages, "
                                  "demonstrations or max tokens)")
            else:
                refused = why
        if refused and refused[0] == "budget":
            ctx.budget_exhausted = True
        samples = self._record(problem, ctx, calls, hops, final_text)
        answer = samples[0].answer if samples else None
        return ctx.result(self.name, answer, samples, {answer: 1.0} if answer is not None else {},
                          hops=[h.to_dict() for h in hops], calls=calls.log, refused=refused[1] if refused else None,
                          effective_context_tokens=sum(u.prompt_tokens for u in calls.usages))

    def _record(self, problem: Problem, ctx: SolveContext, calls: _Calls, hops: list[Hop],
                final_text: str | None) -> list[Sample]:
        """The question's one stored sample: the transcript, the final answer, the summed cost of its calls."""
        if not calls.usages:
            return []
        lines = [f"Follow up: {h.question}\nIntermediate answer: {h.answer}" for h in hops]
        text = "\n".join([*lines, final_text.strip()] if final_text is not None else lines)
        answer = ctx.task.extract(final_text) if final_text is not None else None
        correct, grade = grade_with_detail(ctx.task, problem, answer)
        u = Usage.total(calls.usages)
        sample = Sample(index=ctx.next_index(), text=text, answer=answer, correct=correct, n_tokens=u.generated_tokens,
                        prompt_tokens=u.prompt_tokens, prefilled_tokens=u.prefilled_tokens, flops=u.flops,
                        finish_reason=calls.finish if final_text is not None else "refused",
                        logprob=sum(calls.logprobs) if calls.has_logprobs else None,
                        token_logprobs=calls.logprobs if calls.has_logprobs else None,
                        decode_s=calls.decode_s, grade=grade)
        ctx.record([sample])
        return [sample]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "rounds": self.rounds}


SPEC = StrategySpec("iterdrag", IterDRAG, IterDragOptions,
                    "IterDRAG: up to `rounds` follow-up questions, each with its own retrieved passages and "
                    "answer, then the final answer (a retrieval task: --task rag)")
