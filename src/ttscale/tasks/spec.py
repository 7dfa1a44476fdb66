"""One record per task, declared beside its class; plugins through the ``ttscale.tasks`` entry points."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from pydantic import BaseModel

from ttscale.errors import OptionError
from ttscale.tasks.base import Task
from ttscale.types import PromptFormat, check_options


@dataclass(frozen=True)
class TaskArgs:
    """What the CLI, the server and the library may say about a task (``None``: the task's default)."""

    style: str | None = None
    shots: int | None = None
    max_tokens: int | None = None
    instruction: str | None = None
    seed: int | None = None
    subtask: str | None = None
    data: str | None = None
    chat_model: bool = True
    """Whether the model has a chat template (base models default to few-shot completion prompts)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The task's own options (``--task-option key=value``), validated by its record's ``options`` model."""

    @property
    def default_style(self) -> str:
        return self.style or ("chat" if self.chat_model else "completion")

    def format(self, default: PromptFormat) -> PromptFormat:
        """``default`` with the fields this request sets."""
        changes: dict[str, Any] = {k: v for k, v in (("style", self.style), ("shots", self.shots),
                                                     ("max_tokens", self.max_tokens),
                                                     ("instruction", self.instruction)) if v is not None}
        return PromptFormat(**({f.name: getattr(default, f.name) for f in fields(default)} | changes))


@dataclass(frozen=True)
class TaskSpec:
    name: str
    factory: Callable[[TaskArgs], Task]
    help: str = ""
    equivalent: Callable[[str, str], bool] | None = None
    """How the task compares two extracted answers (its ``Task.equivalent``), for replay, which
    groups stored samples into votes without building the task; None: the same string."""
    options: type[BaseModel] | None = None
    """The task's own options model (strict); None: the task takes none."""
    takes_data: bool = False
    """Whether the task reads a file the user names (``--data``)."""
    family: Callable[[str], str] | None = None
    """A problem id's family: problems of one family are variants of one question (GSM-Symbolic's
    instances of one template), so the planner keeps a family on one side of a train/test split
    and resamples it as one unit in a bootstrap. None: every problem is its own family."""

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` validated by the record's model (one ConfigError naming a bad one)."""
        if not options:
            return {}
        if self.options is None:
            raise OptionError(f"task {self.name!r} takes no options (got {', '.join(options)})", next(iter(options)))
        return check_options(f"task {self.name!r}", self.options, options)
