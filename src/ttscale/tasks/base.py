"""The task protocol: problems, how to prompt for them, and how to grade answers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ttscale.backends.base import ChatMessage, GenerationRequest
from ttscale.errors import ConfigError

PromptStyle = Literal["chat", "completion"]


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str
    """The question as a person would read it (no few-shot context)."""
    reference: str | None = None
    """The reference answer, if known; only graders and oracle verifiers may read it."""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a model input; recorded with every run."""

    style: PromptStyle = "chat"
    """``chat``: messages rendered with the model's chat template; ``completion``: raw text."""
    shots: int = 0
    """Worked examples placed before the question (never the problem itself)."""
    instruction: str = ""
    """Chat: system-ish instruction prepended to the question. Completion: header text."""
    max_tokens: int = 256
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.style not in ("chat", "completion"):
            raise ConfigError(f"prompt style must be 'chat' or 'completion', got {self.style!r}")
        if self.shots < 0:
            raise ConfigError(f"shots must be >= 0, got {self.shots}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass(frozen=True)
class Shot:
    question: str
    answer: str
    """A worked answer ending in the format the extractor reads."""


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


def grade_with_detail(task: Task, problem: Problem, answer: str | None) -> tuple[bool | None, dict[str, Any]]:
    """``task.grade`` plus the task's explanation of it (empty where the task gives none)."""
    correct = task.grade(problem, answer)
    detail = task.grade_detail(problem, answer) if isinstance(task, ExplainsGrades) else {}
    return correct, detail
