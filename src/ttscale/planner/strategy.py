"""A strategy that applies a fitted compute-optimal policy to each problem.

Per problem: draw the level's probe, compute its cheap difficulty features, look up the bin
the predicted pass rate falls in, then draw the rest of that bin's choice (``k - p`` more
samples, the probe kept) and aggregate. A choice on another model draws its k samples from
that model's backend instead (its own prompt format; the same budget and meter; sample indices
from :data:`ALTERNATE_INDEX_OFFSET` up, so both live in one run of the store). What it saw and
chose is kept in ``Result.meta`` under ``"policy"`` (``ttscale run --explain`` prints it).

With ``Policy.follow_decisions`` (``ttscale serve``'s default), a level whose comparison with the best
fixed choice did not show the per-prompt policy better (:mod:`ttscale.planner.compare`) answers
every problem with that fixed choice instead: its k samples in one call, no probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttscale.backends.base import Backend
from ttscale.errors import ConfigError
from ttscale.planner.features import probe_features
from ttscale.planner.options import aggregate
from ttscale.planner.policy import Level, Policy
from ttscale.strategies.base import SolveContext
from ttscale.tasks.base import Task
from ttscale.types import Problem, Result

ALTERNATE_INDEX_OFFSET = 100_000
"""Stored sample indices of the first other model start here (the second's at twice this)."""


@dataclass
class PolicyStrategy:
    policy: Policy
    budget_tokens: float
    """Mean processed tokens per problem; selects the policy level (see :meth:`Policy.level_for`)."""
    alternates: dict[str, tuple[Backend, Task]] = field(default_factory=dict)
    """Backend and task (prompt format) of each other model the level may switch to."""
    name: str = "policy"
    level: Level = field(init=False)

    def __post_init__(self) -> None:
        self.level = self.policy.level_for(self.budget_tokens)
        missing = [m for m in self.policy.models(self.level) if m not in self.alternates]
        if missing:
            raise ConfigError(f"the policy's level for {self.budget_tokens:g} tokens/problem may switch to "
                              f"{', '.join(missing)}: give a backend for it")

    @classmethod
    def from_file(cls, path: Path, budget_tokens: float,
                  alternates: dict[str, tuple[Backend, Task]] | None = None) -> PolicyStrategy:
        return cls(Policy.load(path), budget_tokens, alternates or {})

    @property
    def serves_fixed(self) -> bool:
        """This level answers with its best fixed choice (``Policy.follow_decisions`` and the level's decision)."""
        return self.policy.follow_decisions and self.level.serves_fixed

    def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        lv = self.level
        if self.serves_fixed:
            return self._solve_fixed(ctx)
        probe = ctx.sample(lv.probe)
        feats = probe_features(probe, ctx.prompt_tokens())
        rule, predicted = self.policy.decide(lv, feats)
        model = rule.choice.model
        if model is not None:
            backend, task = self.alternates[model]
            offset = ALTERNATE_INDEX_OFFSET * (1 + sorted(self.alternates).index(model))
            other = ctx.fork(backend, task, offset)
            drawn = other.sample(rule.choice.k) if not ctx.budget_exhausted else []
            ctx.budget_exhausted = ctx.budget_exhausted or other.budget_exhausted
            answer, votes = aggregate(rule.choice, drawn, task.equivalent)  # the probe is set aside
            samples = probe + drawn
        else:
            more = (ctx.sample(rule.choice.k - len(probe))
                    if rule.choice.k > len(probe) and not ctx.budget_exhausted else [])
            samples = probe + more
            answer, votes = aggregate(rule.choice, samples[: rule.choice.k], ctx.task.equivalent)
        return ctx.result(self.name, answer, samples, votes, policy={
            "level_budget_tokens": lv.budget, "probe": lv.probe, "features": feats.to_dict(),
            "predicted_pass_rate": round(predicted, 4), "bin": rule.index, "choice": rule.choice.label,
            "served": "policy", "model": model or self.policy.primary_model,
            "expected_accuracy_in_bin": rule.expected_accuracy, "expected_tokens_in_bin": rule.expected_tokens,
        })

    def _solve_fixed(self, ctx: SolveContext) -> Result:
        """The level's best fixed choice: its k samples in one call, aggregated by its rule (no probe)."""
        lv = self.level
        choice = lv.fixed
        assert choice is not None
        samples = ctx.sample(choice.k)
        answer, votes = aggregate(choice, samples, ctx.task.equivalent)
        return ctx.result(self.name, answer, samples, votes, policy={
            "level_budget_tokens": lv.budget, "served": "fixed", "choice": choice.label,
            "model": self.policy.primary_model, "decision": lv.decision,
        })

    def describe(self) -> dict[str, Any]:
        d = {"name": self.name, "budget_tokens": self.budget_tokens, "level_budget_tokens": self.level.budget,
             "probe": self.level.probe, "bins": [r.choice.label for r in self.level.bins],
             "policy_source": self.policy.source.get("pools", [])}
        if self.level.fixed is not None:
            d |= {"serves": "fixed" if self.serves_fixed else "policy", "fixed": self.level.fixed.label}
        return d
