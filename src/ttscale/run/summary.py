"""What a run reports: one :class:`Summary` for every kind of work, one :class:`Progress` event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ttscale.types import Result, Usage

Unit = Literal["problems", "samples"]


@dataclass(frozen=True)
class Progress:
    """One progress event: ``done`` of ``total`` ``unit`` so far (the ones an earlier invocation
    stored count as done); ``result`` is the problem just finished, when the unit is problems."""

    done: int
    total: int
    unit: Unit
    result: Result | None = None


ProgressFn = Callable[[Progress], None]


@dataclass
class Summary:
    """What one call of :func:`ttscale.run.execute` did, and where the run stands after it."""

    run_id: str
    kind: Literal["run", "sweep", "score"]
    task: str
    strategy: str
    """The strategy's name; ``sweep`` for a pool; ``score:NAME`` for a re-scoring."""
    model: str
    problems: int
    """Problems in the run (for ``score``: the problems selected)."""
    finished: int
    """Problems finished after this call (earlier invocations' included)."""
    skipped: int
    """Problems already finished before this call."""
    resumed: bool
    samples: int
    """Samples stored in the run after this call (for ``score``: the samples selected)."""
    generated: int
    """Samples this call generated (for ``score``: the samples it scored)."""
    usage: Usage
    """What the run's answers cost in all (every problem's result, earlier invocations' included);
    for ``score``, what this call's scoring cost the verifier."""
    spent: Usage
    """What this call generated (samples stored earlier are not charged again)."""
    wall_s: float
    graded: int = 0
    correct: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    """Problem id -> error, for problems left pending (rerun with the same run id to resume them)."""
    worker_deaths: int = 0
    requeued: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    """The stored results of the run's problems (``Store.results`` rows)."""

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None

    @property
    def already(self) -> int:
        """Samples that needed nothing from this call (stored, or already scored)."""
        return self.samples - self.generated

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "task": self.task,
            "strategy": self.strategy,
            "model": self.model,
            "problems": self.problems,
            "finished": self.finished,
            "graded": self.graded,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "samples": self.samples,
            "generated": self.generated,
            "usage": self.usage.to_dict(),
            "spent": self.spent.to_dict(),
            "tokens_per_problem": self.usage.total_tokens / self.problems if self.problems else 0.0,
            "wall_s": self.wall_s,
            "resumed": self.resumed,
            "skipped": self.skipped,
            "failures": self.failures,
            "worker_deaths": self.worker_deaths,
            "requeued": self.requeued,
        }
