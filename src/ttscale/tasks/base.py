"""The task protocol: problems, how to prompt for them, and how to grade answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ttscale.types import ChatMessage, GenerationRequest, Problem, PromptFormat, Shot


def build_request(
    question: str, shots: list[Shot], fmt: PromptFormat, *, qa_labels: tuple[str, str] = ("Question: ", "Answer:")
) -> GenerationRequest:
    """Turn a question and its exemplars into a request in the given style.

    Completion style renders ``Question: ...\\nAnswer: ...`` blocks separated by blank
    lines and stops at the next ``Question:`` label, which is how base models are
    prompted few-shot. Chat style puts exemplars as prior user/assistant turns.
    """
    q_label, a_label = qa_labels
    if fmt.style == "completion":
        parts = [fmt.instruction.strip()] if fmt.instruction.strip() else []
        parts += [f"{q_label}{s.question}\n{a_label} {s.answer}" for s in shots]
        parts.append(f"{q_label}{question}\n{a_label}")
        stop = fmt.stop or (f"\n{q_label.strip()}", "\n\n\n")
        return GenerationRequest(prompt="\n\n".join(parts), stop=tuple(stop), max_tokens=fmt.max_tokens)
    messages: list[ChatMessage] = []
    prefix = f"{fmt.instruction.strip()}\n\n" if fmt.instruction.strip() else ""
    for s in shots:
        messages.append(ChatMessage("user", prefix + s.question))
        messages.append(ChatMessage("assistant", s.answer))
    messages.append(ChatMessage("user", prefix + question))
    return GenerationRequest(messages=tuple(messages), stop=tuple(fmt.stop), max_tokens=fmt.max_tokens)


@runtime_checkable
class Task(Protocol):
    """A source of problems plus the rules to prompt, extract and grade."""

    name: str
    fmt: PromptFormat

    def problems(self, limit: int | None = None) -> list[Problem]: ...

    def request(self, problem: Problem) -> GenerationRequest:
        """The generation request (without sampling parameters) for a problem."""
        ...

    def extract(self, text: str) -> str | None:
        """The final answer in a completion's text, normalized, or ``None``."""
        ...

    def equivalent(self, a: str | None, b: str | None) -> bool:
        """Whether two extracted answers are the same answer."""
        ...

    def grade(self, problem: Problem, answer: str | None) -> bool | None:
        """Correctness against the reference; ``None`` when there is no reference."""
        ...

    def describe(self) -> dict[str, Any]:
        """Configuration to record with a run."""
        ...


@runtime_checkable
class ExplainsGrades(Protocol):
    """A task that can say why an answer passed or failed (code tasks: the check's status and reason)."""

    def grade_detail(self, problem: Problem, answer: str | None) -> dict[str, Any]: ...


@runtime_checkable
class ReportsProgress(Protocol):
    """A task whose ``problems()`` takes a while (generated instances) and reports ``progress(i, n)``."""

    progress: Callable[[int, int], None] | None


@runtime_checkable
class HasChanceAccuracy(Protocol):
    """A task with a chance level (multiple choice): reports print it beside the accuracy."""

    def chance_accuracy(self, problems: list[Problem]) -> float | None: ...


def grade_with_detail(task: Task, problem: Problem, answer: str | None) -> tuple[bool | None, dict[str, Any]]:
    """``task.grade`` plus the task's explanation of it (empty where the task gives none)."""
    correct = task.grade(problem, answer)
    # getattr, not isinstance(task, ExplainsGrades): a runtime protocol check costs ~25 us, once per sample
    explain = getattr(task, "grade_detail", None)
    return correct, explain(problem, answer) if callable(explain) else {}
