"""Monte Carlo rollout value (Math-Shepherd style). USES THE REFERENCE ANSWER.

The score of a partial solution is the fraction of ``rollouts`` completions,
sampled from it, whose final answer matches the reference; a finished solution
scores 1 or 0 by grading it directly. Because it reads the reference, it is for
research (what a perfect-information PRM would do) and for building difficulty
labels, never for deployment: ``uses_reference = True`` and every result that
uses it says so. Its generation cost is reported like any other verifier's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ttscale.backends.base import Backend, render_prompt
from ttscale.cost import Meter, generation_usage
from ttscale.errors import ConfigError
from ttscale.tasks.base import Task
from ttscale.types import DEFAULT_DELIMITER, GenerationRequest, Problem, Sample, Usage
from ttscale.verifiers.base import Scores
from ttscale.verifiers.spec import RolloutsOptions, VerifierSpec


@dataclass
class RolloutVerifier:
    backend: Backend
    task: Task
    rollouts: int = 4
    max_tokens: int = 128
    temperature: float = 0.8
    delimiter: str = DEFAULT_DELIMITER
    seed: int = 0
    name: str = "rollout"
    uses_reference: bool = True

    def __post_init__(self) -> None:
        if self.rollouts < 1 or self.max_tokens < 1:
            raise ConfigError("rollout verifier needs rollouts >= 1 and max_tokens >= 1")

    def request(self, problem: Problem, candidate: Sample, i: int) -> GenerationRequest:
        base = self.task.request(problem)
        text = candidate.text.strip()
        prompt = render_prompt(self.backend, base) + (text + self.delimiter if text else "")
        return GenerationRequest(prompt=prompt, n=self.rollouts, temperature=self.temperature, seed=self.seed + 97 * i,
                                 stop=base.stop, max_tokens=self.max_tokens)

    def score(self, problem: Problem, candidates: Sequence[Sample]) -> Scores:
        scores: list[float | None] = [None] * len(candidates)
        todo = []
        for i, c in enumerate(candidates):
            if c.finish_reason != "partial":
                scores[i] = 1.0 if self.task.grade(problem, c.answer) else 0.0
            else:
                todo.append(i)
        usage = Usage()
        if todo:
            gens = self.backend.generate([self.request(problem, candidates[i], i) for i in todo])
            info = self.backend.model_info()
            usage = Usage.total(generation_usage(g, info) for g in gens)
            for i, g in zip(todo, gens, strict=False):
                prefix = candidates[i].text.strip()
                hits = 0
                for comp in g.completions:
                    full = (prefix + self.delimiter if prefix else "") + comp.text
                    hits += bool(self.task.grade(problem, self.task.extract(full)))
                scores[i] = hits / len(g.completions)
        return Scores([float(s) for s in scores if s is not None], usage)

    def cost_bound(self, problem: Problem, candidates: Sequence[Sample], extra_tokens: int = 0) -> Usage:
        """Worst case: every candidate still partial, prompt prefilled in full, every rollout at the cap."""
        meter = Meter(self.backend.model_info())
        return Usage.total(
            meter.worst_case(self.backend.count_prompt_tokens(self.request(problem, c, 0)) + extra_tokens,
                             self.rollouts, self.max_tokens)
            for c in candidates
        )


SPEC = VerifierSpec("rollout", lambda a: RolloutVerifier(a.backend, a.task, rollouts=a.rollouts or 4),
                    "Monte Carlo rollout value, Math-Shepherd style (evaluation only: reads the reference)",
                    needs_backend=True, options=RolloutsOptions)
