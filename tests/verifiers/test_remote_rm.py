"""Remote reward model client against a real local HTTP server speaking vLLM's /pooling contract."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ttscale.errors import BackendError, ConfigError
from ttscale.types import Problem, Sample
from ttscale.verifiers.remote_rm import RemoteRewardModel, reward_from_pooling

PROBLEM = Problem("p", "What is 6 times 7?", "42")


def _handler(mode: str, seen: list[dict]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "test-prm", "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            if mode == "fail":
                self._send(500, {"object": "error", "message": "model crashed", "type": "InternalServerError", "code": 500})
                return
            if self.path != "/pooling" or "messages" not in body:
                self._send(400, {"object": "error", "message": "bad request", "code": 400})
                return
            solution = body["messages"][-1]["content"]
            steps = [s for s in solution.split("<extra_0>") if s]
            # A PRM: one [p_wrong, p_right] row per step; a step mentioning 42 is right.
            rows = [[0.1, 0.9] if "42" in s else [0.7, 0.3] for s in steps] if mode == "prm" else [0.9 if "42" in solution else 0.3]
            self._send(200, {"id": "pool-1", "object": "list", "created": 0, "model": body["model"],
                             "data": [{"index": 0, "object": "pooling", "data": rows}],
                             "usage": {"prompt_tokens": 11, "total_tokens": 11, "completion_tokens": 0}})

    return Handler


@pytest.fixture
def server(request) -> Iterator[tuple[str, list[dict]]]:
    seen: list[dict] = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(request.param, seen))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()
    srv.server_close()


def _s(text: str, finish: str = "stop") -> Sample:
    return Sample(0, text, None, None, 5, 0, 0, 0.0, finish)


def test_reward_parsing() -> None:
    assert reward_from_pooling([[0.9, 0.1], [0.2, 0.8]]) == 0.8
    assert reward_from_pooling([0.25]) == 0.25
    with pytest.raises(BackendError):
        reward_from_pooling({"x": 1})


@pytest.mark.parametrize("server", ["orm"], indirect=True)
def test_outcome_rewards_and_usage(server) -> None:
    url, seen = server
    rm = RemoteRewardModel(url)
    out = rm.score(PROBLEM, [_s("The answer is 42."), _s("The answer is 41.")])
    assert out.scores == [0.9, 0.3]
    assert out.usage.prefilled_tokens == 22
    assert seen[0]["model"] == "test-prm" and seen[0]["messages"][0]["content"] == PROBLEM.prompt


@pytest.mark.parametrize("server", ["prm"], indirect=True)
def test_process_rewards_take_the_last_step(server) -> None:
    url, seen = server
    rm = RemoteRewardModel(url, model="m", step_tag="<extra_0>")
    out = rm.score(PROBLEM, [_s("6 x 7 = 42\n\nso 40", "partial"), _s("6 x 7 = 40\n\nThe answer is 42.")])
    assert out.scores == [0.3, 0.9]
    assert seen[0]["messages"][1]["content"] == "6 x 7 = 42<extra_0>so 40<extra_0>"


@pytest.mark.parametrize("server", ["fail"], indirect=True)
def test_server_error_is_a_clear_backend_error(server) -> None:
    url, _ = server
    with pytest.raises(BackendError, match="500: model crashed"):
        RemoteRewardModel(url, model="m").score(PROBLEM, [_s("x")])


def test_unreachable_and_bad_url() -> None:
    with pytest.raises(ConfigError):
        RemoteRewardModel("localhost:1")
    with pytest.raises(BackendError, match="unreachable"):
        RemoteRewardModel("http://127.0.0.1:9", model="m", timeout_s=2).score(PROBLEM, [_s("x")])
