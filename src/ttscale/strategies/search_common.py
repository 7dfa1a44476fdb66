"""What every verifier-guided search shares: expand-and-score under a hard budget, and the final pick.

:class:`Search` wraps one problem's :class:`~ttscale.strategies.steps.StepGenerator`, the
verifier and the meter. Before each expansion it checks the worst case of the
step *and* of scoring its children (when the verifier can bound its own cost,
``cost_bound``), so a search never passes the budget: when the next step would,
it stops and the strategy returns its best answer so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.errors import ConfigError
from ttscale.strategies.base import SolveContext
from ttscale.strategies.steps import DEFAULT_DELIMITER, Partial, as_sample, step_generator
from ttscale.types import Result, Sample, Usage
from ttscale.verifiers.aggregate import aggregate, check_aggregate
from ttscale.verifiers.base import Verifier, verifier_bound


@dataclass
class SearchKnobs:
    """Knobs shared by the step-level searches."""

    step_tokens: int = 48
    """Cap on tokens per step."""
    max_steps: int = 6
    """A path is finished after this many steps."""
    aggregate: str = "last"
    """How step scores become a path score: last, min, prod, mean."""
    delimiter: str = DEFAULT_DELIMITER

    def check_search_knobs(self) -> None:
        check_aggregate(self.aggregate)
        if self.step_tokens < 1 or self.max_steps < 1:
            raise ConfigError("step_tokens and max_steps must be >= 1")


class Search:
    """One problem's search: the step generator, the verifier, the meter and the path scores."""

    def __init__(self, ctx: SolveContext, verifier: Verifier, knobs: SearchKnobs) -> None:
        self.ctx = ctx
        self.verifier = verifier
        self.knobs = knobs
        self.gen = step_generator(ctx, delimiter=knobs.delimiter, step_tokens=knobs.step_tokens,
                                  max_steps=knobs.max_steps)
        self.stopped_by_budget = False
        self.verifier_usage = Usage()
        self.steps_taken = 0

    def value(self, p: Partial) -> float:
        return aggregate(p.step_scores, self.knobs.aggregate)

    def sample_of(self, p: Partial, index: int = 0) -> Sample:
        return as_sample(p, self.ctx.task, self.ctx.problem, index, self.knobs.delimiter)

    def step(self, partials: Sequence[Partial], n_each: int | Sequence[int]) -> list[list[Partial]] | None:
        """Expand ``partials`` by one step and score every child; ``None`` when the budget forbids it."""
        counts = [n_each] * len(partials) if isinstance(n_each, int) else list(n_each)
        parents = [self.sample_of(p) for p, k in zip(partials, counts, strict=False) for _ in range(k) if not p.done]
        reserve = verifier_bound(self.verifier, self.ctx.problem, parents, self.knobs.step_tokens)
        children = self.gen.expand(partials, counts, meter=self.ctx.meter, reserve=reserve)
        if children is None:
            self.stopped_by_budget = True
            self.ctx.budget_exhausted = True
            return None
        flat = [c for group in children for c in group]
        scored = iter(self.score(flat))
        self.steps_taken += 1
        return [[next(scored) for _ in group] for group in children]

    def score(self, partials: Sequence[Partial]) -> list[Partial]:
        if not partials:
            return []
        scores = self.verifier.score(self.ctx.problem, [self.sample_of(p, i) for i, p in enumerate(partials)])
        self.ctx.meter.charge(scores.usage)
        self.verifier_usage = self.verifier_usage + scores.usage
        return [p.scored(s) for p, s in zip(partials, scores.scores, strict=False)]

    def result(self, name: str, finished: Sequence[Partial], fallback: Sequence[Partial] = (),
               meta: dict[str, Any] | None = None) -> Result:
        """Pick the highest-valued finished path (ties: earliest created); record the candidates.

        With no finished path (budget ran out), the best unfinished one in
        ``fallback`` gives the answer its text contains so far.
        """
        ctx = self.ctx
        pool = list(finished) or list(fallback)
        start = ctx.next_index()
        samples = [self.sample_of(p, start + i) for i, p in enumerate(pool)]
        for s, p in zip(samples, pool, strict=False):
            s.scores[self.verifier.name] = self.value(p)
            if s.answer is None and not p.done:
                s.answer = ctx.task.extract(s.text) if s.text else None
                s.correct = ctx.task.grade(ctx.problem, s.answer)
        ctx.record(samples)
        answer = None
        votes: dict[str, float] = {}
        if pool:
            order = sorted(range(len(pool)), key=lambda i: (-self.value(pool[i]), pool[i].uid))
            answer = samples[order[0]].answer
            for i in order:
                a = samples[i].answer
                if a is not None:
                    votes[a] = max(votes.get(a, float("-inf")), self.value(pool[i]))
            if answer is None:  # best path has no extractable answer: take the best one that has
                answer = next((samples[i].answer for i in order if samples[i].answer is not None), None)
        return ctx.result(
            name, answer, samples, votes,
            verifier=self.verifier.name,
            verifier_uses_reference=self.verifier.uses_reference,
            aggregate=self.knobs.aggregate,
            steps=self.steps_taken,
            finished_paths=len(finished),
            budget_exhausted=self.stopped_by_budget,  # the search's own budget stop, not only sampling's
            step_stats=self.gen.stats.to_dict(),
            verifier_usage=self.verifier_usage.to_dict(),
            **(meta or {}),
        )
