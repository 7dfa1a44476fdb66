"""pytest fixtures for plugin authors: ``pytest -p ttscale.testing.fixtures`` (or list it in conftest).

``fake_backend`` is a scripted one-call engine, ``step_backend`` a scripted multi-step one, and
``numeric_task`` a three-problem JSONL task whose answers are numbers, enough to solve problems
end to end with any strategy without a model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.testing.fake_steps import ScriptedStepBackend
from ttscale.types import Problem


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend(answers={"42": 0.6, "41": 0.3, "7": 0.1})


@pytest.fixture
def step_backend() -> ScriptedStepBackend:
    return ScriptedStepBackend(answers={"42": 0.7, "41": 0.3})


@pytest.fixture
def numeric_task(tmp_path: Path):  # type: ignore[no-untyped-def]
    from ttscale.registry import make_task

    data = tmp_path / "numeric.jsonl"
    data.write_text("\n".join(f'{{"id": "p{i}", "prompt": "What is 6 times 7?", "answer": "42"}}' for i in range(3)) + "\n")
    return make_task("jsonl", data=str(data), style="completion")


@pytest.fixture
def problem() -> Problem:
    return Problem("p0", "What is 6 times 7?", "42", {})
