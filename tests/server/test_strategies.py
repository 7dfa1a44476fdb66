"""Every registered strategy through the API (fake backend, in-process): an answer with honest usage,
or a 400 that says why; never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ttscale.backends.fake import FakeBackend
from ttscale.registry import STRATEGY_KNOBS, strategy_names
from ttscale.server.app import create_app
from ttscale.server.config import ServerConfig

MSG = [{"role": "user", "content": "What is 6 times 7?"}]
# Strategies that must answer on the plain fake backend (search strategies need a step-capable engine).
MUST_ANSWER = {"single", "self-consistency", "best-of-n", "weighted-best-of-n", "short-m@k",
               "adaptive-consistency", "revision"}


@pytest.fixture(scope="module")
def api() -> Iterator[TestClient]:
    with TestClient(create_app(ServerConfig(backend=FakeBackend(answers={"42": 0.7, "41": 0.3}),
                                            model_name="fake"))) as c:
        yield c


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_registered_strategy(api: TestClient, strategy: str) -> None:
    ttscale: dict[str, object] = {"strategy": strategy}
    if "k" in STRATEGY_KNOBS[strategy]:
        ttscale["k"] = 4
    r = api.post("/v1/chat/completions", json={"model": "fake", "messages": MSG, "max_tokens": 32, "ttscale": ttscale})
    assert r.status_code in (200, 400), r.text
    body = r.json()
    if r.status_code == 400:
        assert strategy not in MUST_ANSWER, body
        assert body["error"]["message"]
        return
    ext = body["ttscale"]
    assert ext["strategy"] == strategy
    assert body["usage"]["total_tokens"] == ext["usage"]["total_tokens"] > 0
    assert body["usage"]["completion_tokens"] >= sum(s["generated_tokens"] for s in ext["choices"][0]["samples"])


def test_strategy_options(api: TestClient) -> None:
    ok = api.post("/v1/chat/completions", json={"model": "fake", "messages": MSG, "max_tokens": 32,
                                                "ttscale": {"strategy": "short-m@k", "k": 4, "options": {"m": 2}}})
    assert ok.status_code == 200, ok.text
    assert ok.json()["ttscale"]["strategy_config"]["m"] == 2
    for options, param in (({"m": "two"}, "ttscale.options.m"), ({"beam_width": 2}, "ttscale.options.beam_width")):
        r = api.post("/v1/chat/completions", json={"model": "fake", "messages": MSG,
                                                   "ttscale": {"strategy": "short-m@k", "options": options}})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
