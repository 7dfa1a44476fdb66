"""One record per verifier, declared beside its class; third parties add theirs through the
``ttscale.verifiers`` entry points (each naming a :class:`VerifierSpec`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ttscale.errors import ConfigError, OptionError
from ttscale.types import check_options
from ttscale.verifiers.base import Verifier


class VerifierOptions(BaseModel):
    """Base of a verifier's options (what ``--verifier-url``, ``--verifications`` and ``--rollouts``
    set): unknown ones are refused, types are strict."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class VerificationsOptions(VerifierOptions):
    verifications: int = Field(1, ge=1, le=64, description="verification chains per candidate (V)")


class RolloutsOptions(VerifierOptions):
    rollouts: int = Field(4, ge=1, le=256, description="rollouts per partial solution")


class UrlOptions(VerifierOptions):
    url: str = Field(description="the reward model server's base URL")


@dataclass(frozen=True)
class VerifierArgs:
    """What a verifier may be built from: the task, the backend, and the CLI/server's verifier options."""

    task: Any
    backend: Any = None
    url: str | None = None
    verifications: int | None = None
    rollouts: int | None = None


@dataclass(frozen=True)
class VerifierSpec:
    name: str
    factory: Callable[[VerifierArgs], Verifier]
    help: str = ""
    needs_backend: bool = False
    """It scores with the backend's model (judge, rollout)."""
    uses_logprobs: bool = False
    """It reads the samples' token log-probs (certainty): ``ttscale run`` then asks the engine for them."""
    serves: bool = False
    """A server request may name it: it needs no reference answer, no task-specific data and no option
    beyond what the request carries."""
    options: type[VerifierOptions] | None = None
    """The options it takes (``url``, ``verifications``, ``rollouts`` of :class:`VerifierArgs`); None: none."""

    def check(self, args: VerifierArgs) -> None:
        """The options given in ``args`` (those not None), checked by the record's options model."""
        given = {k: v for k in ("url", "verifications", "rollouts") if (v := getattr(args, k)) is not None}
        if given and self.options is None:
            name = next(iter(given))
            raise OptionError(f"verifier {self.name!r} takes no option {name!r}; it takes: none", name)
        if self.options is not None:
            check_options(f"verifier {self.name!r}", self.options, given)

    def build(self, args: VerifierArgs) -> Verifier:
        if self.needs_backend and args.backend is None:
            raise ConfigError(f"verifier {self.name!r} needs a backend")
        self.check(args)
        return self.factory(args)
