"""Step-level generation: continue many partial solutions by one step each, in one backend call.

A step ends at a delimiter (default: a blank line). A *partial solution* is the
problem's rendered prompt followed by the steps generated so far, joined by the
delimiter. Expanding a set of partials sends one request per partial (``n`` =
children wanted) in a single ``generate`` call, so the engine shares what the
partials have in common: on llama.cpp the longest common prefix of the call (the
prompt plus any steps all partials share) lives in the holder sequence and is
not prefilled again across steps, each distinct partial's remaining suffix is
prefilled once, and its children get the KV cells by sequence copy.

Accounting is exact: :class:`StepStats` adds up the engine's own prefilled and
generated counts, and also the prompt tokens each request would have cost
without any prefix reuse (the full prompt of every distinct partial, every
step), which is the baseline for the ``prefill_saving`` figure.

When a partial is finished (heuristic, since engines do not say which stop
string fired): its last step states a final answer (``answer is``, ``####``,
``\\boxed{``), or the model produced an empty step (it ended its turn right after
a delimiter), or it hit ``max_steps``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ttscale.backends.base import Backend, render_prompt, shares_prompt_prefix, tokenizer_of
from ttscale.cost import Meter, generation_usage
from ttscale.errors import ConfigError
from ttscale.strategies.base import SolveContext, sample_seed
from ttscale.tasks.base import Task
from ttscale.types import DEFAULT_DELIMITER, GenerationRequest, Problem, Sample, Usage

FINAL_PATTERN = re.compile(r"answer is|####|\\boxed\{", re.IGNORECASE)


@dataclass(frozen=True)
class Partial:
    """A partial (or finished) solution: its steps, their scores, and its lineage."""

    steps: tuple[str, ...] = ()
    step_scores: tuple[float, ...] = ()
    """One verifier score per scored step, in order."""
    done: bool = False
    n_tokens: int = 0
    """Generated tokens along this path (the steps' own tokens)."""
    logprob: float = 0.0
    finish_reason: str = "partial"
    """``partial`` while unfinished; ``stop`` (answer or end of turn) or ``length`` (max steps)."""
    uid: int = 0
    parent: int | None = None
    group: int = 0
    """The subtree (DVTS) or lineage this partial belongs to."""

    def text(self, delimiter: str = DEFAULT_DELIMITER) -> str:
        return delimiter.join(self.steps)

    def scored(self, score: float) -> Partial:
        return replace(self, step_scores=self.step_scores + (float(score),))


@dataclass
class StepStats:
    """What step-level generation cost, with and without prefix reuse."""

    calls: int = 0
    requests: int = 0
    prefilled_tokens: int = 0
    """Prompt tokens the engine actually evaluated (prefix reuse applied)."""
    full_prompt_tokens: int = 0
    """Prompt tokens of every request in full: the prefill with no reuse across partials or steps."""
    generated_tokens: int = 0

    @property
    def prefill_saving(self) -> float:
        """Prefill without reuse divided by prefill with reuse (higher is better)."""
        return self.full_prompt_tokens / max(self.prefilled_tokens, 1)

    def __add__(self, other: StepStats) -> StepStats:
        return StepStats(*(getattr(self, f) + getattr(other, f) for f in
                           ("calls", "requests", "prefilled_tokens", "full_prompt_tokens", "generated_tokens")))

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "requests": self.requests, "prefilled_tokens": self.prefilled_tokens,
                "full_prompt_tokens": self.full_prompt_tokens, "generated_tokens": self.generated_tokens,
                "prefill_saving": round(self.prefill_saving, 3)}


def _lcp_len(seqs: Sequence[Sequence[int]]) -> int:
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(x) for x in seqs)
    i = 0
    while i < n and all(x[i] == first[i] for x in seqs):
        i += 1
    return i


def prefill_bound(backend: Backend, texts: Sequence[str], extra: Sequence[int] | None = None, margin: int = 0) -> int:
    """Most prompt tokens one call over ``texts`` can prefill (``extra[i]`` tokens may be added to text i).

    With a prefix-sharing backend, the common token prefix (less ``margin`` tokens, for
    re-tokenization where text is later inserted) counts once; otherwise every prompt counts in full.
    """
    extra = list(extra) if extra is not None else [0] * len(texts)
    if not shares_prompt_prefix(backend) or not texts:
        return sum(backend.count_prompt_tokens(GenerationRequest(prompt=t)) for t in texts) + sum(extra)
    toks = [tokenizer_of(backend).tokenize(t) for t in texts]
    shared = max(0, min(_lcp_len(toks), min(len(t) for t in toks) - 1) - margin)
    return shared + sum(len(t) - shared + e for t, e in zip(toks, extra, strict=False))


@dataclass
class StepGenerator:
    """Continues partial solutions of one problem by one step each, batched in one call.

    ``base`` carries the problem's prompt (or messages) and the sampling settings
    (temperature, top_p, stop strings); its ``max_tokens`` is ignored in favour of
    ``step_tokens``, the cap per step.
    """

    backend: Backend
    base: GenerationRequest
    delimiter: str = DEFAULT_DELIMITER
    step_tokens: int = 64
    max_steps: int = 8
    final_pattern: re.Pattern[str] = FINAL_PATTERN
    seed: int = 0
    stats: StepStats = field(default_factory=StepStats)
    _next_uid: int = 1
    _calls: int = 0

    def __post_init__(self) -> None:
        if not self.delimiter:
            raise ConfigError("the step delimiter must be a non-empty string")
        if self.step_tokens < 1 or self.max_steps < 1:
            raise ConfigError("step_tokens and max_steps must be >= 1")
        self.prefix = render_prompt(self.backend, self.base)
        self.stop = tuple(dict.fromkeys((*self.base.stop, self.delimiter)))

    def root(self, group: int = 0) -> Partial:
        """An empty solution; each root gets its own uid, hence its own sampling seeds."""
        self._next_uid += 1
        return Partial(uid=self._next_uid - 1, group=group)

    def prompt_text(self, partial: Partial) -> str:
        body = partial.text(self.delimiter)
        return self.prefix + (body + self.delimiter if partial.steps else "")

    def request_for(self, partial: Partial, n: int) -> GenerationRequest:
        seed = (self.seed * 1_000_003 + self._calls * 7919 + partial.uid * 104_729) & 0x7FFFFFFF
        return GenerationRequest(
            prompt=self.prompt_text(partial), n=n, temperature=self.base.temperature, top_p=self.base.top_p,
            seed=seed, stop=self.stop, max_tokens=self.step_tokens, logprobs=True,
        )

    def worst_case(self, meter: Meter, requests: Sequence[GenerationRequest]) -> Usage:
        """Most the expansion can cost: every child at the step cap, and every prompt prefilled in
        full (on a prefix-sharing backend the call's common prefix counts once)."""
        full = Usage.total(
            meter.worst_case(self.backend.count_prompt_tokens(r), r.n, r.max_tokens) for r in requests
        )
        if shares_prompt_prefix(self.backend):
            full.prefilled_tokens = min(full.prefilled_tokens,
                                        prefill_bound(self.backend, [r.prompt or "" for r in requests]))
        return full

    def _is_final(self, step: str) -> bool:
        return not step or bool(self.final_pattern.search(step))

    def expand(
        self, partials: Sequence[Partial], n_each: int | Sequence[int], meter: Meter | None = None,
        reserve: Usage | None = None,
    ) -> list[list[Partial]] | None:
        """Children of each partial (``n_each`` per partial), or ``None`` if the budget forbids the step.

        The worst case of the whole step (plus ``reserve``, e.g. the verifier's bound
        for scoring the children) is checked against ``meter`` before any work; the
        actual usage is charged afterwards. Finished partials get no children.
        """
        counts = [n_each] * len(partials) if isinstance(n_each, int) else list(n_each)
        if len(counts) != len(partials):
            raise ConfigError("n_each must give one count per partial")
        todo = [(i, p, k) for i, (p, k) in enumerate(zip(partials, counts, strict=False)) if k > 0 and not p.done]
        out: list[list[Partial]] = [[] for _ in partials]
        if not todo:
            return out
        requests = [self.request_for(p, k) for _, p, k in todo]
        if meter is not None and not meter.fits(self.worst_case(meter, requests) + (reserve or Usage())):
            return None
        self._calls += 1
        gens = self.backend.generate(requests)
        info = self.backend.model_info()
        spent = Usage.total(generation_usage(g, info) for g in gens)
        if meter is not None:
            meter.charge(spent)
        self.stats = self.stats + StepStats(
            calls=1, requests=len(gens), prefilled_tokens=spent.prefilled_tokens,
            full_prompt_tokens=sum(g.prompt_tokens for g in gens), generated_tokens=spent.generated_tokens,
        )
        for (i, parent, _), gen in zip(todo, gens, strict=False):
            for c in gen.completions:
                step = c.text.strip()
                n_steps = len(parent.steps) + 1
                final = self._is_final(step) or c.finish_reason in ("error", "cancelled")
                done = final or n_steps >= self.max_steps
                steps = parent.steps + ((step,) if step else ())
                out[i].append(Partial(
                    steps=steps, step_scores=parent.step_scores, done=done,
                    n_tokens=parent.n_tokens + c.n_tokens, logprob=parent.logprob + (c.logprob or 0.0),
                    finish_reason=("stop" if final else "length") if done else "partial",
                    uid=self._next_uid, parent=parent.uid, group=parent.group,
                ))
                self._next_uid += 1
        return out


def step_generator(ctx: SolveContext, *, delimiter: str = DEFAULT_DELIMITER, step_tokens: int = 64,
                   max_steps: int = 8) -> StepGenerator:
    """A :class:`StepGenerator` for the context's problem, with the run's sampling settings."""
    seed = sample_seed(ctx.sampling.seed, ctx.problem.id, 0)
    return StepGenerator(ctx.backend, ctx.base_request(), delimiter=delimiter, step_tokens=step_tokens,
                         max_steps=max_steps, seed=seed)


def as_sample(partial: Partial, task: Task, problem: Problem, index: int, delimiter: str = DEFAULT_DELIMITER,
              info_flops: float = 0.0) -> Sample:
    """A partial solution as a :class:`Sample` (what verifiers score and the store keeps).

    Unfinished partials have no answer and finish reason ``partial``. Search shares
    prefills, so a path's own cost is its generated tokens; the run's exact total
    is on the meter.
    """
    text = partial.text(delimiter)
    answer = task.extract(text) if partial.done else None
    return Sample(
        index=index, text=text, answer=answer, correct=task.grade(problem, answer) if partial.done else None,
        n_tokens=partial.n_tokens, prompt_tokens=0, prefilled_tokens=0, flops=info_flops,
        finish_reason=partial.finish_reason, logprob=partial.logprob,
    )
