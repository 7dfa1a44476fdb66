"""ttscale: compute-optimal LLM inference.

The public API, importable from the package itself::

    from ttscale import Solve, Store, execute, make_backend, make_strategy, make_task

    backend = make_backend("llama-cpp", "smollm2-135m")
    task = make_task("arithmetic", subtask="1_digit_addition")
    summary = execute(Solve(task, make_strategy("self-consistency", k=8)), backend=backend,
                      store=Store("runs/lib.sqlite"), run_id="lib-demo", limit=20)
    print(summary.accuracy, summary.usage.total_tokens)

Names resolve on first use (PEP 562), so ``import ttscale`` stays cheap for the processes that
only need one submodule (the sandbox's checks, the CLI's ``--help``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # building components by name
    "make_backend": "ttscale.registry",
    "make_task": "ttscale.registry",
    "make_strategy": "ttscale.registry",
    "make_verifier": "ttscale.registry",
    "strategy_names": "ttscale.registry",
    "task_names": "ttscale.registry",
    "verifier_names": "ttscale.registry",
    "backend_kinds": "ttscale.registry",
    # running, storing, budgets
    "execute": "ttscale.run",
    "Solve": "ttscale.run",
    "Sweep": "ttscale.run",
    "Score": "ttscale.run",
    "Executor": "ttscale.run",
    "BackendSpec": "ttscale.run",
    "Summary": "ttscale.run",
    "Progress": "ttscale.run",
    "Store": "ttscale.store",
    "Budget": "ttscale.cost",
    "Meter": "ttscale.cost",
    # protocols
    "Backend": "ttscale.backends.base",
    "Task": "ttscale.tasks.base",
    "Verifier": "ttscale.verifiers.base",
    "Strategy": "ttscale.strategies.base",
    "StrategySpec": "ttscale.strategies.spec",
    "TaskSpec": "ttscale.tasks.spec",
    "VerifierSpec": "ttscale.verifiers.spec",
    "BackendKind": "ttscale.backends.spec",
    # data
    "GenerationRequest": "ttscale.types",
    "Generation": "ttscale.types",
    "Completion": "ttscale.types",
    "ModelInfo": "ttscale.types",
    "Usage": "ttscale.types",
    "Problem": "ttscale.types",
    "PromptFormat": "ttscale.types",
    "Sample": "ttscale.types",
    "Sampling": "ttscale.types",
    "Result": "ttscale.types",
    # replay and planning
    "load_pool": "ttscale.replay.pool",
    "Pool": "ttscale.replay.pool",
    "compute_curves": "ttscale.replay.curves",
    "Policy": "ttscale.planner.policy",
    # errors
    "TtscaleError": "ttscale.errors",
    "ConfigError": "ttscale.errors",
    "DatasetError": "ttscale.errors",
    "BudgetExceededError": "ttscale.errors",
}

__all__ = [  # literal, for linters and type checkers; a test keeps it equal to _EXPORTS
    "__version__", "make_backend", "make_task", "make_strategy", "make_verifier", "strategy_names",
    "task_names", "verifier_names", "backend_kinds", "execute", "Solve", "Sweep", "Score", "Executor",
    "BackendSpec", "Summary", "Progress", "Store",
    "Budget", "Meter", "Backend", "Task", "Verifier", "Strategy", "StrategySpec", "TaskSpec", "VerifierSpec",
    "BackendKind", "GenerationRequest", "Generation", "Completion", "ModelInfo", "Usage", "Problem",
    "PromptFormat", "Sample", "Sampling", "Result", "load_pool", "Pool", "compute_curves", "Policy",
    "TtscaleError", "ConfigError", "DatasetError", "BudgetExceededError",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ttscale' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from ttscale.backends.base import Backend
    from ttscale.backends.spec import BackendKind
    from ttscale.cost import Budget, Meter
    from ttscale.errors import BudgetExceededError, ConfigError, DatasetError, TtscaleError
    from ttscale.planner.policy import Policy
    from ttscale.registry import (
        backend_kinds,
        make_backend,
        make_strategy,
        make_task,
        make_verifier,
        strategy_names,
        task_names,
        verifier_names,
    )
    from ttscale.replay.curves import compute_curves
    from ttscale.replay.pool import Pool, load_pool
    from ttscale.run import BackendSpec, Executor, Progress, Score, Solve, Summary, Sweep, execute
    from ttscale.store import Store
    from ttscale.strategies.base import Strategy
    from ttscale.strategies.spec import StrategySpec
    from ttscale.tasks.base import Task
    from ttscale.tasks.spec import TaskSpec
    from ttscale.types import (
        Completion,
        Generation,
        GenerationRequest,
        ModelInfo,
        Problem,
        PromptFormat,
        Result,
        Sample,
        Sampling,
        Usage,
    )
    from ttscale.verifiers.base import Verifier
    from ttscale.verifiers.spec import VerifierSpec
