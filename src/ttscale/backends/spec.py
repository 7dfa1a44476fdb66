"""One record per backend kind, declared beside its class; third parties add theirs through the
``ttscale.backends`` entry points (each naming a :class:`BackendKind`).

A record says how to build the backend (``factory(model, options)``), which options it takes
(a pydantic model with ``extra="forbid"``: a typo is a :class:`~ttscale.errors.ConfigError`
naming the option, not a ``TypeError`` from deep inside a constructor) and whether it needs a
model name. ``registry.make_backend`` and ``ttscale backends`` read these records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from ttscale.backends.base import Backend
from ttscale.errors import ConfigError
from ttscale.types import KV_CACHE_TYPES, check_options


class BackendOptions(BaseModel):
    """Base of every backend's options model: unknown options are refused, types are strict."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, strict=True)


@dataclass(frozen=True)
class EngineArgs:
    """What a user says about the engine on the command line (or in a config), before any backend exists."""

    model: str | None = None
    base_urls: tuple[str, ...] = ()
    api_key: str | None = None
    concurrency: int = 8
    threads: int | None = None
    kv_type: str = "f16"
    kv_type_v: str | None = None
    kv_press: str | None = None
    """``--kv-press``: the KV press of an engine that has them (the transformers backend)."""
    kv_compression: float = 0.0
    """``--kv-compression``: the fraction of prompt KV cells the press evicts."""
    options: dict[str, Any] = field(default_factory=dict)
    """``--backend-option key=value``: the kind's own options, checked by its options model."""
    engine_options: dict[str, Any] = field(default_factory=dict)
    """Sizes computed for the embedded engine (``n_ctx``/``n_seq_max`` under a KV cap)."""

    def kv_options(self) -> dict[str, Any]:
        """The KV-cache types asked for, left out at their defaults (so runs keyed without them resume)."""
        out: dict[str, Any] = {}
        if self.kv_type != "f16":
            out["kv_type"] = self.kv_type
        if self.kv_type_v is not None and self.kv_type_v != self.kv_type:
            out["kv_type_v"] = self.kv_type_v
        return out


    def press_options(self) -> dict[str, Any]:
        """The press asked for, as a press-taking backend's options (empty without one)."""
        if self.kv_press is None:
            if self.kv_compression:
                raise ConfigError("--kv-compression needs a press (--kv-press NAME)")
            return {}
        return {"press": self.kv_press, "compression": self.kv_compression}


Endpoint = tuple[str | None, dict[str, Any]]
"""A backend to build: (model, options)."""


def plain_endpoints(kind: str, args: EngineArgs) -> list[Endpoint]:
    """One backend of ``args.model`` with ``args.options``: what a kind without URLs or a KV choice takes."""
    if args.base_urls:
        raise ConfigError(f"--base-url is for HTTP backends such as openai, not {kind}")
    if args.kv_options():
        raise ConfigError(f"--kv-type / --kv-type-v are for the embedded engine and --backend openai, not {kind}")
    return [(args.model, dict(args.options))]


@dataclass(frozen=True)
class BackendKind:
    name: str
    factory: Callable[[str | None, dict[str, Any]], Backend]
    """Builds the backend from a model (name, path or id; None: the kind's default) and checked options."""
    options: type[BackendOptions] | None = None
    """The options it takes; None: the factory checks them itself."""
    help: str = ""
    needs_model: bool = False
    from_args: Callable[[EngineArgs], list[Endpoint]] | None = None
    """How the CLI's engine arguments become backends (one per endpoint); None: :func:`plain_endpoints`."""
    in_process: bool = False
    """The model runs inside this process (its weights and threads are ours): ``ttscale serve --workers``
    would load one copy per worker process, so it refuses such engines."""

    def endpoints(self, args: EngineArgs) -> list[Endpoint]:
        """The backends to build for ``args``, one per endpoint (threads and Ray workers spread over them)."""
        if (args.kv_press is not None or args.kv_compression) and not self.takes_presses:
            raise ConfigError(f"--kv-press / --kv-compression need an engine that exposes attention, such as "
                              f"--backend transformers; {self.name} has no KV presses")
        return self.from_args(args) if self.from_args is not None else plain_endpoints(self.name, args)

    @property
    def takes_presses(self) -> bool:
        """Whether its options include a KV press (``--kv-press``)."""
        return self.options is not None and "press" in self.options.model_fields

    def check(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` validated against :attr:`options`; only those given are returned."""
        if self.options is None:
            return options
        checked = check_options(f"backend {self.name!r}", self.options, options)
        for key in ("kv_type", "kv_type_v"):
            value = checked.get(key)
            if value is not None and value not in KV_CACHE_TYPES:
                raise ConfigError(f"backend {self.name!r}: {key}: unknown KV cache type {value!r}; "
                                  f"llama.cpp takes: {', '.join(KV_CACHE_TYPES)}")
        return checked

    def build(self, model: str | None, options: dict[str, Any]) -> Backend:
        if self.needs_model and not model:
            raise ConfigError(f"backend {self.name!r} needs a model")
        return self.factory(model, self.check(options))
