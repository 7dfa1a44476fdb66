"""One record per strategy: its name, factory, typed options and what it needs, declared beside its class.

Every strategy module ends with ``SPEC = StrategySpec(...)`` (or ``SPECS``); the registry collects
them, and third-party packages add their own through the ``ttscale.strategies`` entry-point group
(each entry point names a :class:`StrategySpec`). The CLI, the server's per-request validation and
``ttscale tasks`` all read these records. Options are a pydantic model with ``extra="forbid"``:
a typo or an out-of-range value is a :class:`~ttscale.errors.ConfigError` naming the option.

A minimal plugin (docs/architecture.md shows it whole)::

    class EchoOptions(StrategyOptions):
        k: int = Field(4, ge=1, description="samples")

    SPEC = StrategySpec("first-answer", FirstAnswer, EchoOptions, "the first sample's answer")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ttscale.errors import ConfigError
from ttscale.strategies.base import Strategy
from ttscale.types import Sample, check_options

VerifierNeed = Literal["none", "required", "optional"]
Equivalence = Callable[[str | None, str | None], bool]
Aggregate = Callable[[Sequence[Sample], Sequence[float] | None, Equivalence | None], tuple[str | None, dict[str, float]]]
"""A rule over drawn samples: (samples, their scores or None, the task's answer equivalence) -> (answer, votes)."""


@dataclass(frozen=True)
class ReplayRule:
    """A strategy's rule as replay (``ttscale curves``/``report``) and the planner apply it to stored samples.

    Live runs, replay and the planner share ``aggregate``, so they agree by construction (a
    differential test checks each built-in). Replay evaluates a rule over many orderings of a pool's
    samples: through a vectorized implementation of ``kind`` where :mod:`ttscale.replay.curves` has one
    (the built-ins), else by calling ``aggregate`` on each ordering's first k samples (any plugin).
    """

    kind: str
    """The curve kind (``ttscale curves --strategy KIND[:key=value]``) and the planner's choice kind."""
    aggregate: Aggregate | None = None
    """The rule on k drawn samples; None when it depends on more than the samples (finish order,
    sequential stopping), which only a vectorized replay can model."""
    weighs: Literal["none", "score", "certainty"] = "none"
    """What ``aggregate``'s scores are: none, a stored verifier score (the curve's ``score`` option), or
    the free certainty score (``exp`` of the mean token log-prob)."""
    options: tuple[str, ...] = ()
    """Curve options it reads (``m``, ``threshold``, ``prune``, ``score``)."""
    curves: tuple[tuple[str, dict[str, Any]], ...] = ()
    """Default curves, as (label, options): what ``ttscale curves`` draws without ``--strategy``."""
    plannable: bool = False
    """The planner may choose it after its probe (the rule needs no score a live request lacks)."""


class StrategyOptions(BaseModel):
    """Base of every strategy's options: unknown options are errors, and types are strict
    (:func:`ttscale.types.check_options` validates them, the one check for CLI, server and library)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NoOptions(StrategyOptions):
    pass


class KOptions(StrategyOptions):
    k: int = Field(8, ge=1, le=4096, description="samples (or paths, particles, attempts) per problem")


class SearchOptions(KOptions):
    aggregate: Literal["last", "min", "prod"] | None = Field(None, description="how step scores combine")
    step_tokens: int | None = Field(None, ge=1, le=4096, description="tokens per step")
    max_steps: int | None = Field(None, ge=1, le=256, description="steps per path")


class BeamOptions(SearchOptions):
    beam_width: int | None = Field(None, ge=1, le=256, description="children per expanded path (M)")


@dataclass(frozen=True)
class StrategySpec:
    """A strategy as the CLI, the server and plugins see it."""

    name: str
    factory: Callable[..., Strategy]
    options: type[StrategyOptions] = NoOptions
    help: str = ""
    verifier: VerifierNeed = "none"
    """Whether it takes a verifier (``--verifier``): not at all, always, or optionally."""
    uses_logprobs: bool = False
    """It reads the samples' token log-probs (``ttscale run`` then asks the engine for them)."""
    replay: tuple[ReplayRule, ...] = field(default=())
    """Its rules over stored samples, for replay and the planner (empty: not replayable)."""
    alias: str | None = None
    """Short name for clients that can only set the model (``sc8/<model>`` in the server)."""
    draft_option: str | None = None
    """The option naming its second, smaller model (a draft), if it takes one: the server fills it with the
    backend it opened once (``ttscale serve --draft-model``) instead of a model per request."""

    @property
    def knobs(self) -> tuple[str, ...]:
        """Option names it takes (``verifier`` included when it takes one)."""
        names = tuple(self.options.model_fields)
        return (*names, "verifier") if self.verifier != "none" else names

    def validate(self, knobs: dict[str, Any]) -> dict[str, Any]:
        """Validated options (``None`` values left at their defaults); ConfigError names a bad one."""
        given = {k: v for k, v in knobs.items() if v is not None and k != "verifier"}
        # unset options keep the strategy's own defaults
        return check_options(f"strategy {self.name!r}", self.options, given, self.knobs)

    def build(self, **knobs: Any) -> Strategy:
        """A fresh strategy instance (one per problem is safe: search strategies keep traces on it)."""
        verifier = knobs.get("verifier")
        if self.verifier == "required" and verifier is None:
            raise ConfigError(f"strategy {self.name!r} needs a verifier (--verifier)")
        if self.verifier == "none" and verifier is not None:
            raise ConfigError(f"strategy {self.name!r} takes no verifier")
        return self.build_validated(self.validate(knobs), verifier)

    def build_validated(self, options: Mapping[str, Any], verifier: Any = None) -> Strategy:
        """A fresh instance from options :meth:`validate` has already returned (the server validates a
        request's once, when it resolves it, not again in the worker that runs it)."""
        kw = dict(options)
        if self.verifier != "none" and verifier is not None:
            kw["verifier"] = verifier
        return self.factory(**kw)
