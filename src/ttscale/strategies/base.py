"""The strategy protocol and the context a strategy works in.

A strategy asks :class:`SolveContext` for samples; the context serves samples
already in the store first (a resumed run never re-generates them), generates
the rest in budget-checked waves, and persists each wave as soon as the engine
returns it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from itertools import groupby
from typing import Any, Protocol, runtime_checkable

from ttscale.backends.base import Backend
from ttscale.cost import Meter, generation_usage
from ttscale.errors import ConfigError
from ttscale.tasks.base import Task, grade_with_detail
from ttscale.types import Completion, GenerationRequest, Problem, Result, Sample, Sampling, Usage, capabilities_of

SampleSink = Callable[[Problem, list[Sample]], None]


def sample_seed(run_seed: int, problem_id: str, index: int) -> int:
    """Deterministic seed for the wave starting at sample ``index`` of a problem."""
    h = hashlib.sha256(f"{run_seed}:{problem_id}:{index}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


class SolveContext:
    """Everything a strategy needs for one problem: backend, task, meter, stored samples."""

    def __init__(
        self,
        problem: Problem,
        backend: Backend,
        task: Task,
        meter: Meter,
        sampling: Sampling | None = None,
        stored: Sequence[Sample] = (),
        sink: SampleSink | None = None,
        index_offset: int = 0,
    ) -> None:
        self.problem = problem
        self.backend = backend
        self.task = task
        self.meter = meter
        self.sampling = sampling or Sampling()
        self.samples: list[Sample] = []
        self._stored = sorted(stored, key=lambda s: s.index)
        self._sink = sink
        self._prompt_tokens: int | None = None
        self.budget_exhausted = False
        self._offset = index_offset

    # -- helpers ------------------------------------------------------------------------------

    def base_request(self) -> GenerationRequest:
        req = self.task.request(self.problem)
        s = self.sampling
        return req.with_(
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            logprobs=req.logprobs and s.logprobs,
            max_tokens=s.max_tokens or req.max_tokens,
        )

    def prompt_tokens(self) -> int:
        if self._prompt_tokens is None:
            self._prompt_tokens = self.backend.count_prompt_tokens(self.base_request())
        return self._prompt_tokens

    def _to_sample(self, c: Completion, index: int, wave: int, prefill_flops: float) -> Sample:
        info = self.meter.info
        answer = self.task.extract(c.text) if c.finish_reason != "error" else None
        flops = info.flops_for_positions(c.prompt_tokens, c.prompt_tokens + c.n_tokens)
        if c.prefilled_tokens:
            flops += prefill_flops
        correct, grade = grade_with_detail(self.task, self.problem, answer)
        return Sample(
            index=index,
            text=c.text,
            answer=answer,
            correct=correct,
            grade=grade,
            n_tokens=c.n_tokens,
            prompt_tokens=c.prompt_tokens,
            prefilled_tokens=c.prefilled_tokens,
            flops=flops,
            finish_reason=c.finish_reason,
            logprob=c.logprob,
            token_logprobs=c.token_logprobs,
            finish_order=c.finish_order,
            wave=wave,
            decode_s=c.decode_s,
        )

    def fork(self, backend: Backend, task: Task, index_offset: int) -> SolveContext:
        """A context for the same problem on another model: same budget and usage (that model's FLOPs),
        same store; its samples are numbered from ``index_offset`` so they never collide with ours,
        and stored samples in that range (an interrupted run) move over to it."""
        theirs = [s for s in self._stored if s.index >= index_offset]
        self._stored = [s for s in self._stored if s.index < index_offset]
        if index_offset < self.next_index():
            raise ConfigError(f"index offset {index_offset} overlaps this context's samples")
        child = SolveContext(self.problem, backend, task, self.meter.for_model(backend.model_info()), self.sampling,
                             theirs, self._sink, index_offset)
        child.budget_exhausted = self.budget_exhausted
        return child

    def next_index(self) -> int:
        """Index for a sample a strategy builds itself (search): after every stored or kept sample."""
        return max([s.index for s in self._stored] + [s.index for s in self.samples], default=-1) + 1

    def record(self, samples: Sequence[Sample]) -> None:
        """Keep and persist samples a strategy built itself (search); their cost is already metered."""
        self.samples.extend(samples)
        if self._sink is not None and samples:
            self._sink(self.problem, list(samples))

    def result(
        self,
        strategy: str,
        answer: str | None,
        samples: Sequence[Sample],
        votes: dict[str, float],
        **meta: Any,
    ) -> Result:
        """The :class:`Result` for this problem: graded answer, evidence and the meter's usage."""
        return Result(
            problem_id=self.problem.id,
            answer=answer,
            correct=self.task.grade(self.problem, answer),
            strategy=strategy,
            samples=[s.index for s in samples],
            votes=votes,
            usage=self.meter.usage,
            meta={"budget_exhausted": self.budget_exhausted, **meta},
        )

    # -- the one method strategies call --------------------------------------------------------

    def sample(
        self, n: int, request: GenerationRequest | None = None, hooks: dict[str, Any] | None = None
    ) -> list[Sample]:
        """Up to ``n`` new samples for this problem, never exceeding the budget.

        Stored samples (from an interrupted run) are returned first and charged to
        the meter at their recorded cost; the rest are generated in waves, each
        wave as large as the budget's worst case allows. Returns fewer than ``n``
        when the budget runs out (``budget_exhausted`` is then set). ``hooks`` are
        passed to ``backend.generate`` (e.g. ``should_stop``/``on_finish`` for early stopping).
        """
        out: list[Sample] = []
        while self._stored and len(out) < n:
            out.append(self._stored.pop(0))
        # charged a wave at a time: a hardware-priced budget prices a wave's samples decoded together, as made
        for _, wave_samples in groupby(out, key=lambda s: s.wave):
            self.meter.charge(Usage.total(s.usage for s in wave_samples))
        req = request or self.base_request()
        prompt_tokens = self.prompt_tokens() if request is None else self.backend.count_prompt_tokens(req)
        wave = max((s.wave for s in self.samples), default=-1) + 1
        while len(out) < n:
            want = n - len(out)
            max_tokens = req.max_tokens
            caps = capabilities_of(self.backend)
            if caps.prefill_per_sample or (hooks and caps.hooked_prefill_per_sample):
                # a server that ignores n gets one request per sample, each prefilling the prompt:
                # worst case n * (prompt + max_tokens), the same as n prompt-free samples of that length
                k = self.meter.affordable_samples(0, prompt_tokens + max_tokens, want)
            else:
                k = self.meter.affordable_samples(prompt_tokens, max_tokens, want)
            if k == 0:
                max_tokens = self.meter.affordable_max_tokens(prompt_tokens, max_tokens)
                if max_tokens < 1:
                    self.budget_exhausted = True
                    break
                k = 1
            start = self._offset + len(self.samples) + len(out)
            r = req.with_(n=k, max_tokens=max_tokens, seed=sample_seed(self.sampling.seed, self.problem.id, start))
            gen = self.backend.generate([r], **(hooks or {}))[0]
            self.meter.charge(generation_usage(gen, self.meter.info))
            p = gen.prompt_tokens
            prefill_flops = self.meter.info.flops_for_positions(p - gen.prefilled_tokens, p)
            new = [self._to_sample(c, start + i, wave, prefill_flops) for i, c in enumerate(gen.completions)]
            if self._sink is not None:
                self._sink(self.problem, new)
            out.extend(new)
            wave += 1
        self.samples.extend(out)
        return out


@runtime_checkable
class Strategy(Protocol):
    """Turns a problem into an answer by spending compute through a :class:`SolveContext`."""

    name: str

    def solve(self, problem: Problem, ctx: SolveContext) -> Result: ...

    def describe(self) -> dict[str, Any]:
        """Knobs to record with a run."""
        ...
