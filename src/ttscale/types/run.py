"""Run-level core types: problems, prompt formats, samples, sampling settings, results, and helpers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from ttscale.errors import ConfigError, OptionError
from ttscale.types.engine import Usage

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


@dataclass
class Sample:
    """One completion, with what the task made of it and what it cost."""

    index: int
    """Position among this problem's samples (stable across resumes)."""
    text: str
    answer: str | None
    correct: bool | None
    n_tokens: int
    prompt_tokens: int
    prefilled_tokens: int
    flops: float
    finish_reason: str
    logprob: float | None = None
    token_logprobs: list[float] | None = None
    finish_order: int = 0
    """Order in which this sample finished among the samples generated with it."""
    wave: int = 0
    decode_s: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    """Verifier scores by verifier name."""
    grade: dict[str, Any] = field(default_factory=dict)
    """Why the grader said what it said, where the task explains it (code: status, reason, suspicious)."""

    @property
    def mean_logprob(self) -> float | None:
        if self.logprob is None or self.n_tokens == 0:
            return None
        return self.logprob / self.n_tokens

    @property
    def usage(self) -> Usage:
        return Usage(
            prefilled_tokens=self.prefilled_tokens,
            generated_tokens=self.n_tokens,
            flops=self.flops,
            samples=1,
        )


@dataclass(frozen=True)
class Sampling:
    """Sampling settings a run applies to every request."""

    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0
    """0: no top-k truncation (the model's own distribution; see GenerationRequest.top_k)."""
    min_p: float = 0.0
    seed: int = 0
    max_tokens: int | None = None
    """Overrides the task format's per-sample cap when set."""
    logprobs: bool = True
    """Ask the engine for each token's log-probability (stored with the samples; log-prob-based
    verifiers, DeepConf and the planner's features read them). On llama-server with full-vocabulary
    sampling they cost measurable decode time (docs/remote.md), so ``ttscale run`` asks for them only
    when something in the run reads them."""

    def __post_init__(self) -> None:
        if not 0 <= self.temperature <= 5:
            raise ConfigError(f"temperature must be in [0, 5], got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or not 0 <= self.min_p < 1:
            raise ConfigError(f"top_k must be >= 0 and min_p in [0, 1), got {self.top_k}, {self.min_p}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")


@dataclass
class Result:
    """A strategy's answer for one problem, with the evidence behind it."""

    problem_id: str
    answer: str | None
    correct: bool | None
    strategy: str
    samples: list[int]
    """Indices of the samples the strategy used."""
    votes: dict[str, float]
    """Vote mass (count, or summed score) per distinct answer."""
    usage: Usage
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "problem_id": self.problem_id,
            "answer": self.answer,
            "correct": self.correct,
            "strategy": self.strategy,
            "samples": self.samples,
            "votes": self.votes,
            "usage": self.usage.to_dict(),
            "meta": self.meta,
        }


def dataclass_knobs(obj: object) -> dict[str, Any]:
    """Public dataclass fields of ``obj`` (for recording a component's configuration)."""
    if not is_dataclass(obj):
        return {}
    return {f.name: getattr(obj, f.name) for f in fields(obj) if not f.name.startswith("_")}


def options_error(owner: str, error: Any, accepted: Iterable[str]) -> OptionError:
    """One line for a pydantic ``ValidationError`` of a component's options, naming the option.

    ``owner`` reads like "strategy 'beam'"; ``accepted`` lists the options it takes.
    """
    err = error.errors()[0]
    name = ".".join(str(p) for p in err.get("loc", ())) or "options"
    if err.get("type") == "extra_forbidden":
        return OptionError(f"{owner} takes no option {name!r}; it takes: {', '.join(accepted) or 'none'}", name)
    return OptionError(f"{owner}: {name}: {err.get('msg')} (got {err.get('input')!r})", name)


def check_options(owner: str, model: type[BaseModel], values: Mapping[str, Any],
                  accepted: Iterable[str] | None = None) -> dict[str, Any]:
    """The one check of a component's options (strategy, verifier, task or backend), wherever they
    come from: the CLI, the server or a library call.

    Strict types (no ``"2"`` for 2 and no ``True`` for 1; an int is fine for a float), the model's
    ranges, and no unknown name. Returns the given options, validated; a bad one is one
    :class:`~ttscale.errors.OptionError` naming it (the CLI prints it and exits 2; the server answers
    400 with it as the error body's ``param``)."""
    try:
        parsed = model.model_validate(dict(values), strict=True)
    except ValidationError as e:
        raise options_error(owner, e, list(model.model_fields) if accepted is None else accepted) from None
    return {k: getattr(parsed, k, values[k]) for k in values}
