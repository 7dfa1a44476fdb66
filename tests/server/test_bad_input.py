"""Bad input gets a 4xx with an OpenAI-style error body naming the problem; never a 500 (in-process ASGI)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ttscale.backends.fake import FakeBackend
from ttscale.server.app import create_app
from ttscale.server.config import ServerConfig

OK_MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def api() -> Iterator[TestClient]:
    cfg = ServerConfig(backend=FakeBackend(), model_name="fake", max_prompt_tokens=200, max_k=16,
                       max_budget_tokens=10_000, max_max_tokens=512)
    with TestClient(create_app(cfg)) as c:
        yield c


def chat(**overrides: object) -> dict:
    return {"model": "fake", "messages": OK_MSG} | overrides


CASES = [
    ("malformed JSON", b'{"model": "fake", "messages": [', 400, None),
    ("invalid UTF-8", b'{"model": "fake", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, None),
    ("not an object", b"[1, 2, 3]", 400, None),
    ("empty body", b"", 400, None),
    ("messages wrong type", chat(messages="hello"), 400, "messages"),
    ("no messages", chat(messages=[]), 400, "messages"),
    ("bad role", chat(messages=[{"role": "wizard", "content": "x"}]), 400, "messages.0.role"),
    ("tool role unsupported", chat(messages=[{"role": "tool", "content": "x"}]), 400, "messages.0.role"),
    ("temperature string", chat(temperature="hot"), 400, "temperature"),
    ("temperature too high", chat(temperature=7), 400, "temperature"),
    ("top_k negative", chat(top_k=-1), 400, "top_k"),
    ("min_p of one", chat(min_p=1.0), 400, "min_p"),
    ("n as float", chat(n=1.5), 400, "n"),
    ("n absurd", chat(n=1000), 400, "n"),
    ("negative max_tokens", chat(max_tokens=-1), 400, "max_tokens"),
    ("absurd max_tokens", chat(max_tokens=10**9), 400, "max_tokens"),
    ("too many stops", chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("unsupported parameter", chat(tools=[{"type": "function"}]), 400, "tools"),
    ("logprobs requested", chat(logprobs=True), 400, "logprobs"),
    ("unknown strategy", chat(ttscale={"strategy": "magic"}), 400, "ttscale.strategy"),
    ("unknown strategy header", None, 400, "x-ttscale-strategy"),
    ("unknown ttscale field", chat(ttscale={"strategey": "single"}), 400, "ttscale.strategey"),
    ("k zero", chat(ttscale={"k": 0}), 400, "ttscale.k"),
    ("k absurd", chat(ttscale={"k": 10**6}), 400, "ttscale.k"),
    ("k for single", chat(ttscale={"strategy": "single", "k": 3}), 400, "ttscale.k"),
    ("negative budget", chat(ttscale={"budget": {"tokens": -5}}), 400, "ttscale.budget.tokens"),
    ("absurd budget", chat(ttscale={"budget": {"tokens": 10**12}}), 400, "ttscale.budget.tokens"),
    ("budget below the prompt", chat(ttscale={"budget": {"tokens": 2}}), 400, "ttscale.budget.tokens"),
    ("NaN flops budget", b'{"model": "fake", "messages": [{"role": "user", "content": "x"}], '
                         b'"ttscale": {"budget": {"flops": NaN}}}', 400, None),
    ("reference-reading verifier", chat(ttscale={"strategy": "best-of-n", "verifier": "oracle"}), 400,
     "ttscale.verifier"),
    ("unknown verifier", chat(ttscale={"strategy": "best-of-n", "verifier": "vibes"}), 400, "ttscale.verifier"),
    # requests carry no tests: no verdict of unit tests can come from the server (docs/code.md)
    ("unit-test verifier without tests", chat(ttscale={"strategy": "best-of-n", "verifier": "unit-tests"}), 400,
     "ttscale.verifier"),
    ("oversized prompt", chat(messages=[{"role": "user", "content": "word " * 500}]), 400, "messages"),
    ("unknown model", chat(model="gpt-4o"), 404, "model"),
    ("unknown model prefix", chat(model="zz9/fake"), 404, "model"),
    ("budget header not a number", None, 400, "x-ttscale-budget-tokens"),
]


@pytest.mark.parametrize("name,body,status,param", CASES, ids=[c[0] for c in CASES])
def test_bad_chat_input(api: TestClient, name: str, body: object, status: int, param: str | None) -> None:
    headers = {"content-type": "application/json"}
    if name == "unknown strategy header":
        body, headers["X-Ttscale-Strategy"] = chat(), "magic"
    if name == "budget header not a number":
        body, headers["X-Ttscale-Budget-Tokens"] = chat(), "lots"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = api.post("/v1/chat/completions", content=content, headers=headers)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "Traceback" not in err["message"]
    if param is not None:
        assert err["param"] == param


def test_bad_completion_input(api: TestClient) -> None:
    for body in ({"model": "fake", "prompt": 42}, {"model": "fake", "prompt": ""}, {"model": "fake", "prompt": []},
                 {"model": "fake", "prompt": ["a"] * 20}, {"model": "fake", "prompt": "x", "echo": True}):
        r = api.post("/v1/completions", json=body)
        assert r.status_code == 400, (body, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_unknown_route_and_method(api: TestClient) -> None:
    r = api.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = api.get("/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_metrics_and_health(api: TestClient) -> None:
    assert api.post("/v1/chat/completions", json=chat()).status_code == 200
    text = api.get("/metrics").text
    for name in ("ttscale_requests_total", "ttscale_tokens_total", "ttscale_strategy_requests_total",
                 "ttscale_request_latency_seconds_bucket", "ttscale_queue_depth", "ttscale_in_flight",
                 "ttscale_batch_requests_bucket"):
        assert name in text
    assert 'ttscale_strategy_requests_total{strategy="self-consistency"}' in text
    h = api.get("/health").json()
    assert h["status"] == "ok" and h["model"] == "fake"


def test_two_apps_do_not_share_metrics() -> None:
    a = create_app(ServerConfig(backend=FakeBackend(), model_name="fake"))
    b = create_app(ServerConfig(backend=FakeBackend(), model_name="fake"))
    with TestClient(a) as ca, TestClient(b) as cb:
        assert ca.post("/v1/chat/completions", json=chat()).status_code == 200
        assert 'strategy="self-consistency"' not in cb.get("/metrics").text


class RemoteLike:
    """A backend that is neither the fake nor an in-process tokenizer: prompt checks run off the loop."""

    def __init__(self) -> None:
        self._inner = FakeBackend()
        self.name = "remote-like"

    def model_info(self):  # type: ignore[no-untyped-def]
        return self._inner.model_info()

    def count_prompt_tokens(self, request):  # type: ignore[no-untyped-def]
        return self._inner.count_prompt_tokens(request)

    def generate(self, requests):  # type: ignore[no-untyped-def]
        return self._inner.generate(requests)

    def close(self) -> None:
        pass


def test_prompt_checks_for_a_remote_style_backend() -> None:
    app = create_app(ServerConfig(backend=RemoteLike(), model_name="fake", max_prompt_tokens=50))  # type: ignore[arg-type]
    assert not app.state.service.local_tokenizer
    with TestClient(app) as c:
        assert c.post("/v1/chat/completions", json=chat()).status_code == 200
        r = c.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": "w " * 100}]))
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_sampling_extensions_reach_the_backend() -> None:
    be = FakeBackend()
    cfg = ServerConfig(backend=be, model_name="fake")
    with TestClient(create_app(cfg)) as c:
        r = c.post("/v1/chat/completions", json=chat(top_k=40, min_p=0.05))
    assert r.status_code == 200, r.text
    assert (be.history[-1].top_k, be.history[-1].min_p) == (40, 0.05)
