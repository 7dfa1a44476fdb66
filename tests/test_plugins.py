"""Strategy plugins through entry points: the docs' example plugin as a real distribution on the path."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "first_answer_plugin.py"


def _install(site: Path) -> Path:
    """What pip leaves in site-packages for a one-module distribution: the module and its dist-info."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE, site / "first_answer_plugin.py")
    info = site / "first_answer_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: first-answer-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ttscale.strategies]\nfirst-answer = first_answer_plugin:SPEC\n")
    return site


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = _install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    sys.modules.pop("first_answer_plugin", None)


def test_a_plugin_strategy_is_found_built_and_validated(plugin_site: Path) -> None:
    from ttscale.errors import ConfigError
    from ttscale.registry import make_strategy, strategy_knobs, strategy_names

    assert "first-answer" in strategy_names() and strategy_knobs("first-answer") == ("k",)
    strat = make_strategy("first-answer", k=3)
    assert strat.k == 3  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="first-answer.*k"):
        make_strategy("first-answer", k=0)


def test_the_cli_runs_a_plugin_strategy(plugin_site: Path, tmp_path: Path) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text('{"id": "a", "prompt": "What is 6 times 7?", "answer": "42"}\n')
    env = os.environ | {"PYTHONPATH": str(plugin_site)}
    base = [sys.executable, "-m", "ttscale", "run", "--backend", "fake", "--task", "jsonl", "--data", str(data),
            "--style", "completion", "--store", str(tmp_path / "s.sqlite"), "--no-progress"]
    ok = subprocess.run([*base, "--strategy", "first-answer", "-o", "k=2", "--output", str(tmp_path / "o.json")],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "first-answer" in ok.stdout and "1.000" in ok.stdout
    bad = subprocess.run([*base, "--strategy", "first-answer", "-o", "width=2"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "takes no option 'width'" in bad.stdout + bad.stderr
    listed = subprocess.run([sys.executable, "-m", "ttscale", "tasks"], capture_output=True, text=True, env=env)
    assert "first-answer" in listed.stdout
