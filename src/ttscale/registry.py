"""Components by name: strategies, verifiers, tasks and backends.

Each component declares one record beside its class (``SPEC``/``SPECS`` in its module); the
registry discovers them in the package, then from the entry points of installed plugins. The
CLI, the server and the library all build components through these functions, so a new
component becomes available everywhere by adding one module.

Discovery imports every component module and reads the installed distributions' entry points,
which takes milliseconds; the server builds components per request, so the records are found once
per process and kept, keyed by ``sys.path`` (a plugin put on the path later is still found).
"""

from __future__ import annotations

import functools
import sys
from typing import Any, TypeVar

from ttscale.backends.base import Backend
from ttscale.backends.spec import BackendKind
from ttscale.errors import ConfigError, UnknownNameError
from ttscale.strategies.base import Strategy
from ttscale.strategies.spec import StrategySpec
from ttscale.tasks.base import Task
from ttscale.tasks.spec import TaskArgs, TaskSpec
from ttscale.verifiers.base import Verifier
from ttscale.verifiers.spec import VerifierArgs, VerifierSpec

_KINDS: dict[str, type[StrategySpec | VerifierSpec | TaskSpec | BackendKind]] = {
    k.__name__: k for k in (StrategySpec, VerifierSpec, TaskSpec, BackendKind)}
ENTRY_POINT_GROUP = "ttscale.strategies"
"""Third-party strategies: each entry point in this group names a ``StrategySpec``."""

_S = TypeVar("_S", StrategySpec, VerifierSpec, TaskSpec, BackendKind)
VERIFIER_ENTRY_POINT_GROUP = "ttscale.verifiers"


def _discover(package: str, kind: type[_S], group: str | None) -> dict[str, _S]:
    """The records of ``package`` and ``group``, found once per ``sys.path`` (see :func:`_scan`)."""
    # keyed by the kind's name: the scan is cached, and record classes are not hashable for mypy
    return dict(_scan(package, kind.__name__, group, tuple(sys.path)))


@functools.lru_cache(maxsize=64)
def _scan(package: str, kind_name: str, group: str | None, path: tuple[str, ...]) -> dict[str, Any]:
    """The ``SPEC``/``SPECS`` records of type ``kind`` in every module of ``package``, then the records
    that installed distributions declare under the entry-point ``group`` (a plugin cannot replace one;
    one that fails to load is named, it never crashes the tool)."""
    import importlib
    import pkgutil
    from importlib.metadata import entry_points

    kind = _KINDS[kind_name]
    pkg = importlib.import_module(package)
    specs: dict[str, Any] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{package}.{info.name}")
        for spec in getattr(mod, "SPECS", None) or ([mod.SPEC] if hasattr(mod, "SPEC") else []):
            if isinstance(spec, kind):
                specs[spec.name] = spec
    for ep in entry_points(group=group) if group else ():
        try:
            spec = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin is named, never crashes the tool
            raise ConfigError(f"plugin {ep.name!r} ({ep.value}) failed to load: {e}") from e
        if not isinstance(spec, kind) or spec.name in specs:
            raise ConfigError(f"plugin {ep.name!r} ({ep.value}) is not a new {kind.__name__}")
        specs[spec.name] = spec
    return specs


def builtin_strategy_specs() -> list[StrategySpec]:
    """The strategies that ship with ttscale: the ``SPEC``/``SPECS`` of every module in
    ``ttscale.strategies`` (so a new strategy is one new module, nothing else)."""
    return list(_discover("ttscale.strategies", StrategySpec, None).values())


def strategy_specs() -> dict[str, StrategySpec]:
    """Every strategy by name: built-ins first, then plugins (a plugin cannot replace a built-in)."""
    return _discover("ttscale.strategies", StrategySpec, ENTRY_POINT_GROUP)


def strategy_spec(name: str) -> StrategySpec:
    specs = strategy_specs()
    if name not in specs:
        raise UnknownNameError("strategy", name, list(specs))
    return specs[name]


# The built-in strategies' options, as a table (the server's per-request check reads it).
STRATEGY_KNOBS: dict[str, tuple[str, ...]] = {s.name: s.knobs for s in builtin_strategy_specs()}


def strategy_knobs(name: str) -> tuple[str, ...]:
    """Options of a built-in or plugin strategy."""
    return STRATEGY_KNOBS[name] if name in STRATEGY_KNOBS else strategy_spec(name).knobs


def strategy_names() -> list[str]:
    return sorted(strategy_specs())


def make_strategy(name: str, **knobs: Any) -> Strategy:
    """Build a strategy from its record; knobs set to ``None`` keep their defaults, knobs it does not
    take are ignored (the CLI and the server refuse those first), values are validated by its options."""
    spec = strategy_spec(name)
    return spec.build(**{k: v for k, v in knobs.items() if k in spec.knobs})


def verifier_specs() -> dict[str, VerifierSpec]:
    """Every verifier by name: the records in ``ttscale.verifiers``, then plugins."""
    return _discover("ttscale.verifiers", VerifierSpec, VERIFIER_ENTRY_POINT_GROUP)


VERIFIER_HELP: dict[str, str] = {name: spec.help for name, spec in verifier_specs().items()}


def verifier_names() -> list[str]:
    return sorted(verifier_specs())


def make_verifier(
    name: str,
    task: Task,
    backend: Backend | None = None,
    *,
    url: str | None = None,
    verifications: int | None = None,
    rollouts: int | None = None,
) -> Verifier:
    specs = verifier_specs()
    if name not in specs:
        raise UnknownNameError("verifier", name, list(specs))
    return specs[name].build(VerifierArgs(task, backend, url, verifications, rollouts))


TASK_ENTRY_POINT_GROUP = "ttscale.tasks"


def task_specs() -> dict[str, TaskSpec]:
    """Every task by name: the records in ``ttscale.tasks``, then plugins."""
    return _discover("ttscale.tasks", TaskSpec, TASK_ENTRY_POINT_GROUP)




def task_names() -> list[str]:
    return sorted(task_specs())


def make_task(
    name: str,
    *,
    style: str | None = None,
    shots: int | None = None,
    max_tokens: int | None = None,
    instruction: str | None = None,
    seed: int | None = None,
    subtask: str | None = None,
    data: str | None = None,
    chat_model: bool = True,
    model: str | None = None,
    options: dict[str, Any] | None = None,
) -> Task:
    """Build a task from its record. Unset format fields take the task's default for the model kind.

    ``chat_model`` says whether the model has a chat template; base models default
    to few-shot completion prompts. ``model`` (an embedded model's name) brings that model's own
    sample cap for the task where it has one (the Qwen models need longer GSM8K solutions).
    ``options`` are the task's own (``--task-option``), checked by its record's options model.
    """
    from ttscale.backends.models import task_max_tokens

    specs = task_specs()
    if name not in specs:
        raise UnknownNameError("task", name, list(specs))
    if max_tokens is None:
        max_tokens = task_max_tokens(model, name)
    spec = specs[name]
    if data is not None and not spec.takes_data:
        takers = sorted(n for n, s in specs.items() if s.takes_data)
        raise ConfigError(f"task {name!r} reads no --data file (tasks that do: {', '.join(takers)})")
    checked = spec.check_options(options or {})
    return spec.factory(TaskArgs(style, shots, max_tokens, instruction, seed, subtask, data, chat_model, checked))


BACKEND_ENTRY_POINT_GROUP = "ttscale.backends"


def backend_kinds() -> dict[str, BackendKind]:
    """Every backend kind by name: the records in ``ttscale.backends``, then plugins."""
    return _discover("ttscale.backends", BackendKind, BACKEND_ENTRY_POINT_GROUP)


def make_backend(kind: str = "llama-cpp", model: str | None = None, **options: Any) -> Backend:
    """Build a backend from its record: ``llama-cpp`` (embedded, default), ``openai`` (HTTP), ``vllm``
    (offline) or ``fake`` (tests), or a plugin's; ``options`` are checked against its options model."""
    kinds = backend_kinds()
    if kind not in kinds:
        raise UnknownNameError("backend", kind, list(kinds))
    return kinds[kind].build(model, options)
