from __future__ import annotations

from pathlib import Path

import pytest

from ttscale.tasks.jsonl import JsonlTask

from .helpers import one_problem_task


@pytest.fixture
def task(tmp_path: Path) -> JsonlTask:
    return one_problem_task(tmp_path)
