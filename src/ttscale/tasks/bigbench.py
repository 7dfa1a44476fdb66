"""BIG-bench JSON tasks, read from a copy of BIG-bench that the user supplies.

The package index no longer serves the ``bigbench==1.0.0`` sdist that carried the task data, so
ttscale downloads nothing for BIG-bench: it reads the ``task.json`` files from, in order,

1. ``--data PATH`` (``TaskArgs.data``): the sdist (``bigbench-1.0.0.tar.gz``) or a checkout of
   the BIG-bench repository (a directory holding ``bigbench/benchmark_tasks``);
2. ``$TTSCALE_DOWNLOADS/bigbench-1.0.0.tar.gz``;
3. a copy an earlier version of ttscale downloaded into the cache.

Without any of them the error is one line that says so and points at ``--task arithmetic``, which
generates BIG-bench's arithmetic subtasks in-process. From an archive, the task list and each task
that is asked for are extracted once into the cache (a key per archive), since reading a 358 MB
gzip stream takes seconds. Prompting and grading: :class:`~ttscale.tasks.examples.ExamplesTask`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttscale.errors import DatasetError, UnknownNameError
from ttscale.package_index import ENV_DOWNLOADS
from ttscale.paths import cache_dir
from ttscale.tasks.answers import answers_equivalent
from ttscale.tasks.examples import LETTERS, ExamplesTask, normalize_text
from ttscale.tasks.spec import TaskArgs, TaskSpec
from ttscale.types import PromptFormat

__all__ = ["LETTERS", "SDIST", "BigBenchSource", "BigBenchTask", "find_source", "normalize_text"]

SDIST = "bigbench-1.0.0.tar.gz"
_TASKS_DIR = "bigbench/benchmark_tasks/"


def missing_message() -> str:
    return (f"BIG-bench is not here: the package index no longer serves {SDIST}; pass --data PATH (that sdist "
            f"or a checkout of BIG-bench) or put {SDIST} in ${ENV_DOWNLOADS} (for arithmetic, --task arithmetic "
            "generates BIG-bench's subtasks in-process)")


@dataclass(frozen=True)
class BigBenchSource:
    """A BIG-bench copy: an sdist-style archive or a directory whose ``bigbench/benchmark_tasks`` holds the tasks."""

    path: Path

    @property
    def is_archive(self) -> bool:
        return self.path.is_file()

    def _tasks_root(self) -> Path:
        for root in (self.path / _TASKS_DIR, self.path / "benchmark_tasks", self.path):
            if root.is_dir() and (any(root.glob("*/task.json")) or any(root.glob("*/*/task.json"))):
                return root
        raise DatasetError("no BIG-bench tasks here (expected bigbench/benchmark_tasks/<task>/task.json)",
                           path=str(self.path))

    def _cache(self) -> Path:
        st = self.path.stat()
        key = hashlib.sha256(f"{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
        return cache_dir("bigbench", f"{self.path.name}-{key}")

    def _archive_prefix(self, tar: tarfile.TarFile) -> tuple[str, list[str]]:
        names: list[str] = []
        prefix = ""
        for m in tar:
            i = m.name.find(_TASKS_DIR)
            if i >= 0 and m.name.endswith("/task.json"):
                prefix = m.name[: i + len(_TASKS_DIR)]
                names.append(m.name[len(prefix) : -len("/task.json")])
        if not names:
            raise DatasetError(f"no {_TASKS_DIR}<task>/task.json in this archive", path=str(self.path))
        return prefix, sorted(names)

    def list_tasks(self) -> list[str]:
        """Names of every JSON task, as ``task`` or ``task/subtask``."""
        if not self.is_archive:
            root = self._tasks_root()
            return sorted(str(p.parent.relative_to(root)) for p in root.rglob("task.json"))
        idx = self._cache() / "index.json"
        if idx.exists():
            cached: dict[str, Any] = json.loads(idx.read_text())
            return list(cached["tasks"])
        try:
            with tarfile.open(self.path) as tar:
                prefix, names = self._archive_prefix(tar)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DatasetError(f"not a readable tar archive: {e}", path=str(self.path)) from None
        idx.write_text(json.dumps({"prefix": prefix, "tasks": names}))
        return names

    def task_json_path(self, task: str) -> Path:
        """The ``task.json`` of ``task`` on disk (extracted once from an archive)."""
        names = self.list_tasks()
        if task not in names:
            raise UnknownNameError("BIG-bench task", task, [n for n in names if "/" not in n][:50] + ["..."])
        if not self.is_archive:
            return self._tasks_root() / task / "task.json"
        target = self._cache().joinpath("tasks", *task.split("/"), "task.json")
        if not target.exists():
            prefix = json.loads((self._cache() / "index.json").read_text())["prefix"]
            with tarfile.open(self.path) as tar:
                member = tar.extractfile(f"{prefix}{task}/task.json")
                if member is None:
                    raise DatasetError(f"task {task} has no task.json", path=str(self.path))
                data = member.read()
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        return target

    def load_task_json(self, task: str) -> dict[str, Any]:
        """The parsed ``task.json`` of ``task`` (``"arithmetic/1_digit_addition"``)."""
        path = self.task_json_path(task)
        try:
            parsed: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"invalid JSON: {e.msg}", path=str(path), line=e.lineno) from e
        if not parsed.get("examples"):
            raise DatasetError(f"task {task} has no examples (it may be a parent of subtasks)", path=str(path))
        return parsed


def find_source(data: str | Path | None = None) -> BigBenchSource:
    """The BIG-bench copy to read: ``data``, then ``$TTSCALE_DOWNLOADS``, then an earlier download in the cache."""
    if data is not None:
        path = Path(data).expanduser()
        if not path.exists():
            raise DatasetError(f"no such file or directory (expected {SDIST} or a BIG-bench checkout)", path=str(path))
        return BigBenchSource(path)
    candidates = []
    if os.environ.get(ENV_DOWNLOADS):
        candidates.append(Path(os.environ[ENV_DOWNLOADS]) / SDIST)
    candidates.append(cache_dir("bigbench") / SDIST)
    for path in candidates:
        if path.is_file():
            return BigBenchSource(path)
    raise DatasetError(missing_message())


@dataclass
class BigBenchTask(ExamplesTask):
    """One BIG-bench JSON task (or subtask), read from ``source`` (default: :func:`find_source`)."""

    task: str = "arithmetic/1_digit_multiplication"
    name: str = "bigbench"
    id_prefix: str = "bb"
    source: str | None = None

    def load(self) -> dict[str, Any]:
        return find_source(self.source).load_task_json(self.task)


def _build(a: TaskArgs) -> BigBenchTask:
    # Plain few-shot completion suits the embedded models best on BIG-bench (see docs).
    base = PromptFormat(style="completion", shots=5, max_tokens=16)
    return BigBenchTask(task=a.subtask or "arithmetic/1_digit_multiplication", fmt=a.format(base),
                        shuffle_seed=a.seed or 0, source=a.data)


SPEC = TaskSpec("bigbench", _build, "a BIG-bench JSON task from a copy you supply (--data SDIST_OR_CHECKOUT or "
                f"${ENV_DOWNLOADS}/{SDIST}), e.g. --subtask arithmetic/1_digit_multiplication", answers_equivalent,
                takes_data=True)
