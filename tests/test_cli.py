from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.cli import app

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, list(args), env={"COLUMNS": "200", "TERM": "dumb"})
    return r.exit_code, r.output


def test_help_lists_commands() -> None:
    code, out = _run("--help")
    assert code == 0 and "run" in out and "models" in out
    code, out = _run("run", "--help")
    assert code == 0 and "--max-tokens-per-problem" in out and "--run-id" in out


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "--strategy", "nope"], "unknown strategy"),
        (["run", "--strategy", "single", "-k", "4"], "takes no -k"),
        (["run", "--limit", "0"], "--limit"),
        (["run", "--task", "jsonl", "--backend", "fake"], "needs a data file"),
        (["run", "--backend", "fake", "--max-tokens-per-problem", "-5"], "token budget must be positive"),
        (["run", "--backend", "fake", "--strategy", "best-of-n"], "needs a verifier"),
        (["run", "--backend", "fake", "--task", "nope"], "unknown task"),
        (["run", "--backend", "fake", "--temperature", "-1"], "temperature"),
        (["run", "--model", "/no/such/model.gguf"], "model file not found"),
    ],
)
def test_bad_arguments_one_line(args: list[str], fragment: str, tmp_path: Path) -> None:
    code, out = _run(*args, "--store", str(tmp_path / "s.sqlite"))
    assert code == 2, out
    assert fragment in out
    assert "Traceback" not in out


def test_bad_jsonl_names_line(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": 1, "prompt": "q", "answer": 1}\n{oops\n')
    code, out = _run("run", "--backend", "fake", "--task", "jsonl", "--data", str(data), "--store", str(tmp_path / "s.sqlite"))
    assert code == 2 and "d.jsonl:2" in out and "Traceback" not in out


def test_run_with_fake_backend_writes_summary(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}", "answer": 42}) + "\n" for i in range(3)))
    out_json = tmp_path / "sum.json"
    code, out = _run("run", "--backend", "fake", "--task", "jsonl", "--data", str(data), "-k", "4",
                     "--store", str(tmp_path / "s.sqlite"), "--run-id", "t", "--output", str(out_json), "--no-progress")
    assert code == 0, out
    summary = json.loads(out_json.read_text())
    assert summary["accuracy"] == 1.0 and summary["problems"] == 3
    assert summary["usage"]["samples"] == 12
    assert summary["config"]["strategy"] == {"name": "self-consistency", "k": 4}
    # rerun resumes: nothing new to do
    code, out = _run("run", "--backend", "fake", "--task", "jsonl", "--data", str(data), "-k", "4",
                     "--store", str(tmp_path / "s.sqlite"), "--run-id", "t", "--output", str(out_json), "--no-progress")
    assert code == 0 and "3 resumed" in out


@pytest.mark.parametrize("args", [["--port", "99999"], ["--port", "0"], ["-k", "0"], ["--max-queue", "-1"],
                                  ["--temperature", "-0.5"], ["--n-ctx", "8"]])
def test_serve_refuses_out_of_range_numbers_before_starting(args: list[str]) -> None:
    r = CliRunner().invoke(app, ["serve", "--backend", "fake", *args])
    assert r.exit_code == 2 and args[0] in r.output


@pytest.mark.parametrize(("args", "says"), [
    (["--shots", "2"], "--task"),  # a served task's settings without the task
    (["--strategy", "speculative-reasoning"], "--draft-model"),
    (["--kv-press", "snapkv"], "transformers"),
    (["--kv-compression", "0.5"], "--kv-press"),
    (["--task", "no-such-task"], "no-such-task"),
])
def test_serve_refuses_what_it_cannot_serve_before_starting(args: list[str], says: str) -> None:
    r = CliRunner().invoke(app, ["serve", "--backend", "fake", *args])
    assert r.exit_code == 2 and says in r.output, r.output


def test_run_caps_seconds_and_dollars_on_a_hardware_profile(tmp_path: Path) -> None:
    code, out = _run("run", "--backend", "fake", "--task", "arithmetic", "--limit", "1", "--budget-seconds", "1",
                     "--store", str(tmp_path / "s.sqlite"), "--no-progress")
    assert code == 2 and "--hardware" in out
    out_json = tmp_path / "o.json"
    code, out = _run("run", "--backend", "fake", "--task", "arithmetic", "--limit", "2", "-k", "8", "--hardware", "h100",
                     "--budget-usd", "1", "--store", str(tmp_path / "s.sqlite"), "--no-progress", "--output", str(out_json))
    assert code == 0, out
    cfg = json.loads(out_json.read_text())["config"]["budget"]
    assert cfg["usd"] == 1.0 and cfg["hardware"]["name"] == "h100" and cfg["hardware"]["usd_per_hour"] > 0


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_generated_instances_show_loading_progress(command: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from ttscale.cli.progress import RunBar

    seen: list[str] = []
    monkeypatch.setattr(RunBar, "status", lambda self, text: seen.append(text))
    extra = ["-k", "2"] if command == "sweep" else []
    code, out = _run(command, "--backend", "fake", "--task", "gsm-symbolic", "--task-seed", "7", "--limit", "1",
                     "--store", str(tmp_path / "s.sqlite"), *extra)
    assert code == 0, out
    assert seen == ["loading problems 1/1"]


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_resume_takes_its_problems_from_the_store(command: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from ttscale.cli.progress import RunBar
    from ttscale.store import Store

    seen: list[str] = []
    monkeypatch.setattr(RunBar, "status", lambda self, text: seen.append(text))
    store = tmp_path / "s.sqlite"
    extra = ["-k", "2"] if command == "sweep" else []

    def go(limit: int) -> None:
        seen.clear()
        code, out = _run(command, "--backend", "fake", "--task", "gsm-symbolic", "--task-seed", "7", "--limit",
                         str(limit), "--store", str(store), "--run-id", "r", *extra)
        assert code == 0, out

    go(2)
    assert seen[-1] == "loading problems 2/2"
    go(1)  # a resume needing no other problem rebuilds none
    assert seen == []
    go(3)  # one more problem: the task is asked again, and the stored ones are kept
    assert seen[-1] == "loading problems 3/3"
    assert [p.id for p in Store(store).problems("r")] == ["gsms-7-0000", "gsms-7-0001", "gsms-7-0002"]
