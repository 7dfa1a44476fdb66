"""One record per backend kind, declared beside its class; third parties add theirs through the
``ttscale.backends`` entry points (each naming a :class:`BackendKind`).

A record says how to build the backend (``factory(model, options)``), which options it takes
(a pydantic model with ``extra="forbid"``: a typo is a :class:`~ttscale.errors.ConfigError`
naming the option, not a ``TypeError`` from deep inside a constructor) and whether it needs a
model name. ``registry.make_backend`` and ``ttscale backends`` read these records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ttscale.backends.base import Backend
from ttscale.errors import ConfigError
from ttscale.types import KV_CACHE_TYPES, options_error


class BackendOptions(BaseModel):
    """Base of every backend's options model: unknown options are refused."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


@dataclass(frozen=True)
class BackendKind:
    name: str
    factory: Callable[[str | None, dict[str, Any]], Backend]
    """Builds the backend from a model (name, path or id; None: the kind's default) and checked options."""
    options: type[BackendOptions] | None = None
    """The options it takes; None: the factory checks them itself."""
    help: str = ""
    needs_model: bool = False

    def check(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` validated against :attr:`options`; only those given are returned."""
        if self.options is None:
            return options
        try:
            parsed = self.options(**options)
        except ValidationError as e:
            raise options_error(f"backend {self.name!r}", e, self.options.model_fields) from None
        for key in ("kv_type", "kv_type_v"):
            value = getattr(parsed, key, None)
            if value is not None and value not in KV_CACHE_TYPES:
                raise ConfigError(f"backend {self.name!r}: {key}: unknown KV cache type {value!r}; "
                                  f"llama.cpp takes: {', '.join(KV_CACHE_TYPES)}")
        return {k: getattr(parsed, k, options[k]) for k in options}

    def build(self, model: str | None, options: dict[str, Any]) -> Backend:
        if self.needs_model and not model:
            raise ConfigError(f"backend {self.name!r} needs a model")
        return self.factory(model, self.check(options))
