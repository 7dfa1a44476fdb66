"""The BIG-bench reader on a small copy built here in the real sdist's layout (no 358 MB download)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from ttscale.errors import DatasetError, UnknownNameError
from ttscale.package_index import ENV_DOWNLOADS
from ttscale.registry import make_task
from ttscale.tasks.arithmetic import arithmetic_examples
from ttscale.tasks.bigbench import SDIST, BigBenchTask, find_source
from ttscale.types import PromptFormat

_NAVIGATE = {
    "name": "navigate",
    "examples": [{"input": f"Take {i} steps. Turn around. Take {i} steps.",
                  "target_scores": {"True": int(i % 2 == 0), "False": int(i % 2 == 1)}} for i in range(20)],
}
_MULT = {"name": "1_digit_multiplication", "examples": arithmetic_examples("1_digit_multiplication")}
_PARENT = {"name": "arithmetic", "description": "a parent of subtasks"}


def _tasks() -> dict[str, dict[str, object]]:
    return {"arithmetic": _PARENT, "arithmetic/1_digit_multiplication": _MULT, "navigate": _NAVIGATE}


def _sdist(path: Path) -> Path:
    """A tar.gz laid out as ``bigbench-1.0.0.tar.gz`` is: ``bigbench-1.0.0/bigbench/benchmark_tasks/<task>/task.json``."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [("bigbench-1.0.0/setup.py", b"# not read\n")] + [
            (f"bigbench-1.0.0/bigbench/benchmark_tasks/{t}/task.json", json.dumps(d).encode())
            for t, d in _tasks().items()
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _checkout(root: Path) -> Path:
    for t, d in _tasks().items():
        (root / "bigbench" / "benchmark_tasks" / t).mkdir(parents=True)
        (root / "bigbench" / "benchmark_tasks" / t / "task.json").write_text(json.dumps(d))
    return root


@pytest.fixture
def sdist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path / "cache"))
    return _sdist(tmp_path / SDIST)


def test_generative_task_from_the_sdist_matches_the_generated_one(sdist: Path) -> None:
    task = BigBenchTask("arithmetic/1_digit_multiplication", source=str(sdist))
    assert not task.multiple_choice
    probs = task.problems()
    assert len(probs) == 95  # 100 examples, 5 held out as the exemplar pool
    p = probs[0]
    assert p.id == "bb-arithmetic/1_digit_multiplication-13" and p.prompt == "What is 1 times 3?"
    req = task.request(p)
    assert req.prompt is not None and req.prompt.count("Question: ") == 6
    assert req.prompt.endswith(f"Question: {p.prompt}\nAnswer:")
    assert task.extract(" 32\n") == "32"
    assert task.grade(p, p.reference) and not task.grade(p, "banana")
    prefixes = {task.request(q).prompt.rsplit("Question: ", 1)[0] for q in probs}  # type: ignore[union-attr]
    assert len(prefixes) == 1
    # the in-process task asks the same questions with the same exemplars
    gen = make_task("arithmetic", subtask="1_digit_multiplication")
    assert [(q.prompt, q.reference) for q in gen.problems()] == [(q.prompt, q.reference) for q in probs]
    assert gen.request(gen.problems()[0]).prompt == req.prompt


def test_multiple_choice_from_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path / "cache"))
    root = _checkout(tmp_path / "BIG-bench")
    task = BigBenchTask("navigate", fmt=PromptFormat(style="completion", shots=3, max_tokens=8), source=str(root))
    assert task.multiple_choice
    probs = task.problems(limit=10)
    assert all(p.reference in ("A", "B") for p in probs)
    assert "(A) True" in probs[0].prompt
    assert task.chance_accuracy(probs) == pytest.approx(0.5)
    assert task.extract(" (B)\n") == "B" and task.extract("The answer is (A).") == "A"
    assert find_source(root).list_tasks() == sorted(_tasks())


def test_the_downloads_directory_is_found_and_an_archive_is_read_once(sdist: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DOWNLOADS, str(sdist.parent))
    task = make_task("bigbench", subtask="navigate")
    assert len(task.problems()) == 15
    sdist.write_bytes(b"")  # a changed file is a new key; the old extraction is not reused for it
    with pytest.raises(DatasetError, match="tar"):
        make_task("bigbench", subtask="navigate").problems()


def test_without_a_copy_the_error_is_one_line_that_says_what_to_do(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(ENV_DOWNLOADS, raising=False)
    with pytest.raises(DatasetError) as e:
        make_task("bigbench").problems()
    msg = str(e.value)
    assert "\n" not in msg and "--data" in msg and ENV_DOWNLOADS in msg and "--task arithmetic" in msg
    with pytest.raises(DatasetError, match="no such file"):
        make_task("bigbench", data=str(tmp_path / "nope.tar.gz")).problems()


def test_unknown_and_parent_tasks(sdist: Path) -> None:
    with pytest.raises(UnknownNameError):
        BigBenchTask("no_such_task_xyz", source=str(sdist)).problems()
    with pytest.raises(DatasetError, match="no examples"):
        BigBenchTask("arithmetic", source=str(sdist)).problems()
