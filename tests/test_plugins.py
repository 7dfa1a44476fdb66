"""Strategy plugins through entry points: the docs' example plugin as a real distribution on the path."""

from __future__ import annotations

import importlib
import json
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


def test_a_plugin_rule_is_replayed_planned_and_served(plugin_site: Path) -> None:
    """One file (the plugin) and no other edit: its rule shows up in replay's curves, the planner's
    choices, and the server's aliases, and replay agrees with applying the rule to the samples."""
    from ttscale.planner.options import Choice, _rule_outcomes, aggregate, choice_kinds
    from ttscale.replay.curves import compute_curves, default_curves, parse_strategy
    from ttscale.server.control import aliases
    from ttscale.testing.synthetic import synthetic_pool

    assert "first-answer" in [c.name for c in default_curves()]
    assert "first" in choice_kinds() and aliases()["first"] == "first-answer"
    pool = synthetic_pool(30, 8, seed=3)
    curves = compute_curves(pool, [parse_strategy("first"), parse_strategy("pass")], [1, 4], n_orders=8,
                            n_bootstrap=5)
    first, single = curves.curve("first"), curves.curve("pass@k")
    # the first answered sample of a random order is a random answered sample: at k=1, accuracy is pass@1
    assert first[0].accuracy == pytest.approx(single[0].accuracy, abs=0.08)
    import numpy as np

    order = np.broadcast_to(np.arange(8), (30, 1, 8))
    replayed = _rule_outcomes(pool, order, "first", [4])[4][:, 0]
    expected = [next((bool(pool.correct[p, j]) for j in range(4) if pool.answer[p, j] >= 0), False) for p in range(30)]
    assert list(replayed.astype(bool)) == expected
    assert Choice("first", 4).label == "first@4" and aggregate(Choice("first", 4), []) == (None, {})


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


# A second distribution adds one verifier, one task and one backend through their entry-point groups.
COMPONENTS = '''
from dataclasses import dataclass, field

import dataclasses

from ttscale.backends.fake import FAKE_MODEL_INFO, FakeBackend
from ttscale.backends.spec import BackendKind, BackendOptions
from ttscale.tasks.base import build_request
from ttscale.tasks.spec import TaskSpec
from ttscale.types import Problem, PromptFormat
from ttscale.verifiers.base import Scores
from ttscale.verifiers.spec import VerifierSpec


@dataclass
class ShortestFirst:
    name: str = "shortest"
    uses_reference: bool = False

    def score(self, problem, candidates):
        return Scores([-float(s.usage.generated_tokens) for s in candidates])


@dataclass
class SixTimesSeven:
    name: str = "six-times-seven"
    fmt: PromptFormat = field(default_factory=lambda: PromptFormat(style="completion"))

    def problems(self, limit=None):
        return [Problem(id=f"q{i}", prompt="What is 6 times 7?", reference="42") for i in range(limit or 2)]

    def request(self, problem):
        return build_request(problem.prompt, [], self.fmt)

    def extract(self, text):
        return text.split()[-1].rstrip(".") if text.split() else None

    def equivalent(self, a, b):
        return a == b

    def grade(self, problem, answer):
        return answer == problem.reference

    def describe(self):
        return {"name": self.name}


VERIFIER = VerifierSpec("shortest", lambda args: ShortestFirst(), "prefers the shortest sample")
TASK = TaskSpec("six-times-seven", lambda args: SixTimesSeven(), "one question, asked twice")
BACKEND = BackendKind("always-42", lambda model, options: FakeBackend(answers={"42": 1.0}), None, "answers 42")


class AlwaysOptions(BackendOptions):
    answer: str = "42"


def build_always(model, options):
    info = dataclasses.replace(FAKE_MODEL_INFO, name=model or "always")
    return FakeBackend(answers={options.get("answer", "42"): 1.0}, info=info)


ALWAYS = BackendKind("always", build_always, AlwaysOptions, "answers what -B answer= says, as --model")
'''


@pytest.fixture
def components_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site2"
    site.mkdir()
    (site / "more_components.py").write_text(COMPONENTS)
    info = site / "more_components-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: more-components\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[ttscale.verifiers]\nshortest = more_components:VERIFIER\n"
        "[ttscale.tasks]\nsix-times-seven = more_components:TASK\n"
        "[ttscale.backends]\nalways-42 = more_components:BACKEND\nalways = more_components:ALWAYS\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    sys.modules.pop("more_components", None)


def test_plugin_verifier_task_and_backend_are_found_and_built(components_site: Path) -> None:
    from ttscale.registry import backend_kinds, make_backend, make_task, make_verifier, task_names, verifier_names

    assert "shortest" in verifier_names() and "six-times-seven" in task_names() and "always-42" in backend_kinds()
    task = make_task("six-times-seven")
    assert [p.id for p in task.problems(limit=3)] == ["q0", "q1", "q2"]
    assert make_verifier("shortest", task).name == "shortest"
    assert make_backend("always-42").name.startswith("fake")


def test_the_cli_runs_plugin_components_together(components_site: Path, tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(components_site)}
    run = subprocess.run([sys.executable, "-m", "ttscale", "run", "--backend", "always-42", "--task", "six-times-seven",
                          "--strategy", "best-of-n", "-k", "3", "--verifier", "shortest", "--store",
                          str(tmp_path / "s.sqlite"), "--no-progress", "--output", str(tmp_path / "o.json")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1.000" in run.stdout  # both problems answered 42
    listed = subprocess.run([sys.executable, "-m", "ttscale", "tasks"], capture_output=True, text=True, env=env)
    assert all(n in listed.stdout for n in ("shortest", "six-times-seven", "always-42"))


def test_a_plugin_backend_gets_the_model_and_its_options_from_the_cli(components_site: Path, tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(components_site)}

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ttscale", "run", "--backend", "always", "--task", "six-times-seven",
                               "--strategy", "single", "--store", str(tmp_path / "s.sqlite"), "--no-progress",
                               "--output", str(tmp_path / "o.json"), *extra], capture_output=True, text=True, env=env)

    wrong = run("--model", "my-model", "-B", "answer=41", "--run-id", "wrong")
    assert wrong.returncode == 0, wrong.stdout + wrong.stderr
    out = json.loads((tmp_path / "o.json").read_text())
    assert out["model"] == out["config"]["model"] == "my-model" and out["accuracy"] == 0.0
    right = run("--model", "my-model", "--run-id", "right")
    assert right.returncode == 0 and json.loads((tmp_path / "o.json").read_text())["accuracy"] == 1.0
    bad = run("-B", "anwser=41", "--run-id", "bad")
    assert bad.returncode == 2 and "anwser" in bad.stderr and "Traceback" not in bad.stderr


def test_a_plugin_cannot_replace_a_built_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ttscale.errors import ConfigError
    from ttscale.registry import backend_kinds

    site = tmp_path / "site3"
    site.mkdir()
    (site / "clash.py").write_text("from ttscale.backends.fake import SPEC\n")
    info = site / "clash-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: clash\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ttscale.backends]\nfake = clash:SPEC\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    with pytest.raises(ConfigError, match="not a new BackendKind"):
        backend_kinds()
    sys.modules.pop("clash", None)
