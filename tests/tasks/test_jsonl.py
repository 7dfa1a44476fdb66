from __future__ import annotations

from pathlib import Path

import pytest

from ttscale.errors import DatasetError
from ttscale.tasks.jsonl import JsonlTask, load_jsonl_problems


def test_loads_valid(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"id": "a", "prompt": "1+1?", "answer": 2}\n\n{"id": 2, "prompt": "x?", "extra": 1}\n')
    probs = load_jsonl_problems(p)
    assert [q.id for q in probs] == ["a", "2"]
    assert probs[0].reference == "2" and probs[1].reference is None
    assert probs[1].meta == {"extra": 1}
    task = JsonlTask(str(p))
    assert task.grade(probs[0], "2.0") is True
    assert task.grade(probs[1], "5") is None


@pytest.mark.parametrize(
    "body, line, fragment",
    [
        ('{"id": "a", "prompt": "q"}\n{not json}\n', 2, "invalid JSON"),
        ('{"id": "a", "prompt": "q"}\n{"prompt": "q"}\n', 2, "missing field"),
        ('[1, 2]\n', 1, "expected a JSON object"),
        ('{"id": "a", "prompt": "q"}\n{"id": "a", "prompt": "r"}\n', 2, "duplicate id"),
        ('{"id": "a", "prompt": ""}\n', 1, "non-empty"),
    ],
)
def test_malformed_lines_named(tmp_path: Path, body: str, line: int, fragment: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text(body)
    with pytest.raises(DatasetError) as e:
        load_jsonl_problems(p)
    assert e.value.line == line
    assert f"bad.jsonl:{line}:" in str(e.value)
    assert fragment in str(e.value)


def test_invalid_utf8_named(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"id": "a", "prompt": "q"}\n{"id": "b", "prompt": "\xff\xfe"}\n')
    with pytest.raises(DatasetError, match="bad.jsonl:2: not valid UTF-8"):
        load_jsonl_problems(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="file not found"):
        load_jsonl_problems(tmp_path / "nope.jsonl")
