"""One record per verifier, declared beside its class; third parties add theirs through the
``ttscale.verifiers`` entry points (each naming a :class:`VerifierSpec`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ttscale.errors import ConfigError
from ttscale.verifiers.base import Verifier


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

    def build(self, args: VerifierArgs) -> Verifier:
        if self.needs_backend and args.backend is None:
            raise ConfigError(f"verifier {self.name!r} needs a backend")
        return self.factory(args)
