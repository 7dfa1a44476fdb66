"""Options are checked once (``ttscale.types.check_options``): the CLI and the server refuse a bad
option with the same message, the CLI as one line and exit 2, the server as a 400 naming it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from ttscale.backends.fake import FakeBackend
from ttscale.cli import app
from ttscale.errors import OptionError
from ttscale.registry import make_strategy, make_verifier
from ttscale.server.app import create_app
from ttscale.server.config import ServerConfig
from ttscale.tasks.jsonl import JsonlTask
from ttscale.types import check_options

MSG = [{"role": "user", "content": "What is 6 times 7?"}]


@pytest.fixture(scope="module")
def api() -> Iterator[TestClient]:
    with TestClient(create_app(ServerConfig(backend=FakeBackend(answers={"42": 0.7, "41": 0.3}),
                                            model_name="fake"))) as c:
        yield c


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["run", "--backend", "fake", "--task", "arithmetic", "--limit", "1", "--no-progress",
                                 *args], env={"COLUMNS": "300", "TERM": "dumb"})
    return r.exit_code, r.output


@pytest.mark.parametrize(("cli_value", "json_value", "fragment"), [
    ("0", 0, "greater than or equal to 1"),        # out of range
    ('"2"', "2", "valid integer"),                  # strict: a string is not an int
    ("true", True, "valid integer"),                # strict: a bool is not an int
])
def test_a_bad_strategy_option_is_the_same_error_in_the_cli_and_the_server(
        api: TestClient, tmp_path: object, cli_value: str, json_value: object, fragment: str) -> None:
    with pytest.raises(OptionError) as lib:
        make_strategy("short-m@k", k=4, m=json_value)
    assert lib.value.option == "m" and fragment in str(lib.value)
    code, out = cli("--strategy", "short-m@k", "-k", "4", "-o", f"m={cli_value}", "--store", f"{tmp_path}/s.sqlite")
    assert code == 2 and str(lib.value) in " ".join(out.split()), out
    r = api.post("/v1/chat/completions", json={"model": "fake", "messages": MSG, "max_tokens": 8,
                                               "ttscale": {"strategy": "short-m@k", "k": 4, "options": {"m": json_value}}})
    err = r.json()["error"]
    assert r.status_code == 400 and err["message"] == str(lib.value) and err["param"] == "ttscale.options.m"
    assert err["type"] == "invalid_request_error"


def test_an_int_option_reads_the_cli_string_and_a_float_takes_an_int(api: TestClient, tmp_path: object) -> None:
    class Knobs(BaseModel):
        model_config = ConfigDict(extra="forbid")
        scale: float = 1.0
        name: str = ""

    assert check_options("x", Knobs, {"scale": 2}) == {"scale": 2.0}
    with pytest.raises(OptionError, match="name"):
        check_options("x", Knobs, {"name": 41})
    code, out = cli("--strategy", "short-m@k", "-k", "4", "-o", "m=2", "--store", f"{tmp_path}/s.sqlite")
    assert code == 0, out
    r = api.post("/v1/chat/completions", json={"model": "fake", "messages": MSG, "max_tokens": 8,
                                               "ttscale": {"strategy": "short-m@k", "k": 4, "options": {"m": 2}}})
    assert r.status_code == 200, r.text


def test_verifier_options_are_checked_by_the_verifier_record(tmp_path: object) -> None:
    task = JsonlTask.__new__(JsonlTask)
    with pytest.raises(OptionError, match="verifier 'certainty' takes no option 'verifications'"):
        make_verifier("certainty", task, verifications=2)
    with pytest.raises(OptionError, match="verifications: Input should be greater than or equal to 1"):
        make_verifier("judge", task, FakeBackend(), verifications=0)
    code, out = cli("--strategy", "best-of-n", "-k", "2", "--verifier", "certainty", "--verifications", "2",
                    "--store", f"{tmp_path}/s.sqlite")
    assert code == 2 and "takes no option 'verifications'" in out and "Traceback" not in out
