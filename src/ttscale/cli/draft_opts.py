"""``ttscale run``'s draft model: the second, smaller model of a strategy that drafts (speculative reasoning).

``--draft-model NAME`` opens an embedded model with the run's own engine settings; ``--draft-base-url URL``
reaches one over HTTP (an OpenAI-compatible server such as llama-server), built the way ``--base-url``
builds the base model's client. Either is opened once for the whole run, passed to the strategy through its
record's ``draft_option`` (as ``ttscale serve --draft-model`` does), and closed at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer

from ttscale.backends.spec import EngineArgs
from ttscale.cli.bundle import EngineChoice
from ttscale.errors import ConfigError
from ttscale.registry import backend_kinds, strategy_specs
from ttscale.run import BackendSpec

DRAFT_MODEL_HELP = (
    "The draft model of a strategy that drafts with a second, smaller model (speculative-reasoning): an embedded "
    "model name or .gguf path, opened once with this run's engine settings (--threads, --kv-type/--kv-type-v, the "
    "base engine's n_ctx and -B options when it is llama-cpp too). With --draft-base-url: the model that server "
    "serves (its shapes are read locally, so the meter prices its calls). -o draft=NAME is the same as --draft-model "
    "NAME (give one of them).")
DRAFT_BASE_URL_HELP = (
    "The draft model over HTTP: an OpenAI-compatible server such as llama-server, e.g. http://127.0.0.1:8081/v1 "
    "(--api-key and --concurrency as for --base-url). Name its model with --draft-model.")


def drafting_strategies() -> list[str]:
    """Strategies whose record declares a draft model option."""
    return sorted(name for name, spec in strategy_specs().items() if spec.draft_option is not None)


@dataclass
class DraftChoice:
    """The draft backend of a drafting strategy, from ``--draft-model`` / ``--draft-base-url``."""

    draft_model: Annotated[Optional[str], typer.Option(help=DRAFT_MODEL_HELP)] = None
    draft_base_url: Annotated[Optional[str], typer.Option(help=DRAFT_BASE_URL_HELP)] = None

    panel = "Draft model"

    @property
    def flag(self) -> str | None:
        """The flag that asked for a draft backend (None: neither was given)."""
        return "--draft-base-url" if self.draft_base_url else "--draft-model" if self.draft_model else None

    def check(self, strategy: str, knobs: dict[str, Any], policy: bool, ray: bool) -> None:
        """Refuse a draft flag the run cannot use: with a strategy that does not draft, with ``-o draft=``
        (the same model named twice), with ``--policy``, or with Ray workers (the backend lives here)."""
        flag = self.flag
        if flag is None:
            return
        if policy:
            raise ConfigError(f"{flag} goes with a strategy that drafts ({', '.join(drafting_strategies())}), "
                              "not with --policy")
        option = strategy_specs()[strategy].draft_option
        if option is None:
            raise ConfigError(f"strategy {strategy!r} does not draft with a second model: {flag} goes with "
                              f"{', '.join(drafting_strategies())}")
        if knobs.get(option) is not None:
            raise ConfigError(f"give the draft model once: -o {option}=... or {flag}, not both")
        if ray:
            raise ConfigError(f"{flag}: the draft backend is opened once in this process; run without --ray "
                              "(--workers N shares it between threads)")

    def take_option(self, strategy: str, knobs: dict[str, Any], ray: bool) -> None:
        """``-o draft=NAME`` becomes ``--draft-model NAME`` (taken out of ``knobs``): the strategy would
        otherwise open its named draft itself, with default engine settings, again for every problem (each
        problem solves with a fresh copy of the strategy). Ray workers keep that path: each opens its own."""
        option = strategy_specs()[strategy].draft_option
        if option is not None and self.flag is None and not ray and isinstance(knobs.get(option), str):
            self.draft_model = knobs.pop(option)

    def spec(self, engine: EngineChoice, engine_options: dict[str, Any] | None = None) -> BackendSpec | None:
        """How to build the draft backend (None without a draft flag).

        Embedded: the base engine's own arguments with the draft's model when the base runs on llama-cpp
        too (threads, KV types, ``engine_options`` such as a KV cap's n_ctx, ``-B`` options), else threads
        and KV types alone. Over HTTP: the openai kind's client, as ``--base-url`` builds the base's."""
        if self.flag is None:
            return None
        if self.draft_base_url:
            # the served draft's KV types are known only with its shapes, i.e. when --draft-model names it
            named = self.draft_model is not None
            args = EngineArgs(model=self.draft_model, base_urls=(self.draft_base_url,), api_key=engine.api_key,
                              concurrency=engine.concurrency, kv_type=engine.kv_type if named else "f16",
                              kv_type_v=engine.kv_type_v if named else None)
            ((model, options),) = backend_kinds()["openai"].endpoints(args)
            return BackendSpec("openai", model, options)
        if engine.backend == "llama-cpp":
            return engine.specs(engine_options, model=self.draft_model)[0]
        args = EngineArgs(model=self.draft_model, threads=engine.threads, kv_type=engine.kv_type,
                          kv_type_v=engine.kv_type_v)
        ((model, options),) = backend_kinds()["llama-cpp"].endpoints(args)
        return BackendSpec("llama-cpp", model, options)
