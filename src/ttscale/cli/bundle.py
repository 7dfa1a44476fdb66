"""Option bundles: the options several commands share, declared once as a dataclass each.

A command takes a bundle as one typed parameter (``engine: EngineChoice``); :func:`bundled` spreads
the bundle's fields into the command's signature for Typer (grouped in ``--help`` under the
bundle's panel) and hands the command one built bundle back. So ``run`` and ``sweep`` declare
their 24 shared options nowhere but here, and the code that turns them into a task, a sampling
setting, backends and an executor lives with them.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

from pydantic import BaseModel

from ttscale.backends.base import Backend
from ttscale.backends.spec import EngineArgs
from ttscale.cli.common import DEFAULT_STORE
from ttscale.cli.options import (
    ApiKeyOpt,
    BackendOpt,
    BackendOptionOpt,
    BaseUrlOpt,
    ConcurrencyOpt,
    DataOpt,
    KvCompressionOpt,
    KvPressOpt,
    KvTypeOpt,
    KvTypeVOpt,
    MaxTokensOpt,
    MinPOpt,
    ModelOpt,
    ProgressOpt,
    RayAddressOpt,
    RayOpt,
    RunIdOpt,
    SeedOpt,
    ShotsOpt,
    StoreOpt,
    StyleOpt,
    SubtaskOpt,
    TaskOpt,
    TaskOptionOpt,
    TaskSeedOpt,
    TemperatureOpt,
    ThreadsOpt,
    TopKOpt,
    TopPOpt,
    WorkersOpt,
    parse_pairs,
)
from ttscale.errors import ConfigError
from ttscale.registry import backend_kinds, make_task, task_specs
from ttscale.run import BackendSpec, Executor
from ttscale.tasks.base import Task
from ttscale.types import ModelInfo, Sampling

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class TaskChoice:
    """Which task and how its prompts are made."""

    task: TaskOpt = "gsm-symbolic"
    style: StyleOpt = None
    shots: ShotsOpt = None
    max_tokens: MaxTokensOpt = None
    task_seed: TaskSeedOpt = None
    subtask: SubtaskOpt = None
    data: DataOpt = None
    task_option: TaskOptionOpt = None

    panel = "Task"

    def options_model(self) -> type[BaseModel] | None:
        spec = task_specs().get(self.task)
        return spec.options if spec is not None else None

    def build(self, info: ModelInfo, style: str | None = "") -> Task:
        """The task for a model; ``style`` overrides ``--style`` (None: the task's default for the model)."""
        task = make_task(self.task, style=self.style if style == "" else style, shots=self.shots,
                         max_tokens=self.max_tokens, seed=self.task_seed, subtask=self.subtask,
                         data=str(self.data) if self.data else None, chat_model=info.has_chat_template,
                         model=info.name, options=parse_pairs(self.task_option, "--task-option", self.options_model()))
        if task.fmt.style == "chat" and not info.has_chat_template:
            raise ConfigError(f"model {info.name} has no chat template: use --style completion")
        return task


@dataclass
class SamplingChoice:
    """How each sample is drawn."""

    temperature: TemperatureOpt = 0.8
    top_p: TopPOpt = 1.0
    top_k: TopKOpt = 0
    min_p: MinPOpt = 0.0
    seed: SeedOpt = 0

    panel = "Sampling"

    def build(self, logprobs: bool = True) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
                        seed=self.seed, logprobs=logprobs)


@dataclass
class EngineChoice:
    """Which engine runs the model, and how many problems are in flight."""

    model: ModelOpt = "smollm2-135m"
    backend: BackendOpt = "llama-cpp"
    backend_option: BackendOptionOpt = None
    base_url: BaseUrlOpt = None
    api_key: ApiKeyOpt = None
    concurrency: ConcurrencyOpt = 8
    threads: ThreadsOpt = None
    kv_type: KvTypeOpt = "f16"
    kv_type_v: KvTypeVOpt = None
    kv_press: KvPressOpt = None
    kv_compression: KvCompressionOpt = 0.0
    workers: WorkersOpt = 1
    ray: RayOpt = False
    ray_address: RayAddressOpt = None

    panel = "Engine"

    def check(self) -> None:
        if self.workers < 1:
            raise ConfigError("--workers must be at least 1")
        kinds = backend_kinds()
        if self.backend not in kinds:
            raise ConfigError(f"unknown backend {self.backend!r}; available: {', '.join(sorted(kinds))}")

    def args(self, engine_options: dict[str, Any] | None = None, model: str | None = None) -> EngineArgs:
        return EngineArgs(model=model or self.model, base_urls=tuple(self.base_url or ()), api_key=self.api_key,
                          concurrency=self.concurrency, threads=self.threads, kv_type=self.kv_type,
                          kv_type_v=self.kv_type_v, kv_press=self.kv_press, kv_compression=self.kv_compression,
                          options=parse_pairs(self.backend_option, "--backend-option",
                                                     backend_kinds()[self.backend].options),
                          engine_options=dict(engine_options or {}))

    def specs(self, engine_options: dict[str, Any] | None = None, model: str | None = None) -> list[BackendSpec]:
        """One backend spec per endpoint, as the backend's record builds them from these options."""
        self.check()
        kind = backend_kinds()[self.backend]
        return [BackendSpec(self.backend, m, o) for m, o in kind.endpoints(self.args(engine_options, model))]

    @property
    def parallel(self) -> bool:
        return self.ray or self.workers > 1

    def executor(self, backend: Backend, specs: list[BackendSpec]) -> Executor:
        """Where problems run: one after another on ``backend``, threads sharing it, or Ray workers
        building their own from ``specs``."""
        if self.ray:
            return Executor("ray", self.workers, None, tuple(specs), self.ray_address)
        if self.workers > 1:
            return Executor("threads", self.workers, backend, tuple(specs))
        return Executor(backend=backend)


@dataclass
class RunPlace:
    """Where a run is stored and how it reports."""

    store: StoreOpt = DEFAULT_STORE
    run_id: RunIdOpt = None
    progress: ProgressOpt = True

    panel = "Run"

    def run_id_or(self, *parts: object) -> str:
        """The given ``--run-id``, or a new one from ``parts`` and the time."""
        return self.run_id or "-".join(str(p) for p in parts if p) + time.strftime("-%Y%m%d-%H%M%S")

    def summary_path(self, run_id: str, output: Path | None = None) -> Path:
        return output or self.store.parent / f"{run_id}.json"


def is_bundle(kind: object) -> bool:
    """A dataclass with a ``panel``: its fields are options shown together under that panel."""
    return isinstance(kind, type) and dataclasses.is_dataclass(kind) and isinstance(getattr(kind, "panel", None), str)


def _with_panel(annotation: Any, panel: str) -> Any:
    """``Annotated[T, typer.Option(...)]`` with the option shown under ``panel`` in ``--help``."""
    if get_origin(annotation) is not Annotated:
        return annotation
    base, *meta = get_args(annotation)
    moved = []
    for m in meta:
        if hasattr(m, "rich_help_panel"):
            m = copy.copy(m)
            m.rich_help_panel = panel
        moved.append(m)
    return Annotated[(base, *moved)]  # type: ignore[valid-type]


def bundled(fn: F) -> F:
    """Spread each bundle-typed parameter of ``fn`` into its fields for Typer, and rebuild the bundle on call."""
    hints = get_type_hints(fn, include_extras=True)
    sig = inspect.signature(fn)
    own: list[inspect.Parameter] = []
    spread: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, list[str]]] = {}
    for p in sig.parameters.values():
        kind = hints.get(p.name)
        if is_bundle(kind):
            assert isinstance(kind, type)
            fields = dataclasses.fields(kind)
            groups[p.name] = (kind, [f.name for f in fields])
            field_hints = get_type_hints(kind, include_extras=True)
            for f in fields:
                spread.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                                annotation=_with_panel(field_hints[f.name], kind.panel)))  # type: ignore[attr-defined]
        else:
            own.append(p.replace(annotation=hints.get(p.name, p.annotation)))
    names = [p.name for p in own]
    clash = sorted({q.name for q in spread} & set(names))
    if clash:
        raise TypeError(f"{fn.__name__}: parameters {clash} clash with a bundle's options")

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        for param, (kind, fields) in groups.items():
            kwargs[param] = kind(**{f: kwargs.pop(f) for f in fields})
        return fn(**kwargs)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + spread
    wrapper.__signature__ = sig.replace(parameters=params, return_annotation=None)  # type: ignore[attr-defined]
    # resolved objects, not the strings of ``from __future__ import annotations``: Typer evaluates these
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    del wrapper.__wrapped__  # Typer must read the spread signature, not the original
    return wrapper  # type: ignore[return-value]
