"""The completion fast path (pure ASGI, one pydantic parse) answers exactly as the FastAPI route does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ttscale.backends.fake import FakeBackend
from ttscale.server.app import create_app
from ttscale.server.config import ServerConfig

# "application/json" takes the fast path; a "+json" type is JSON to FastAPI, so it takes the route.
FAST, ROUTE = "application/json", "application/vnd.test+json"


@pytest.fixture(scope="module")
def api() -> Iterator[TestClient]:
    with TestClient(create_app(ServerConfig(backend=FakeBackend(), model_name="fake"))) as c:
        yield c


def post(api: TestClient, path: str, body: object, content_type: str) -> tuple[int, dict[str, Any]]:
    r = api.post(path, content=json.dumps(body).encode(), headers={"content-type": content_type})
    return r.status_code, r.json()


def comparable(out: Any) -> Any:
    """The response without what differs between two identical requests: id, time stamps, wall times."""
    if isinstance(out, dict):
        return {k: comparable(v) for k, v in out.items() if k not in ("id", "created", "wall_s")}
    if isinstance(out, list):
        return [comparable(v) for v in out]
    return out


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"model": "fake", "seed": 3, "messages": [{"role": "user", "content": "6 times 7?"}]}),
    ("/v1/chat/completions", {"model": "sc3/fake", "seed": 1, "n": 2, "messages": [{"role": "user", "content": "hi"}],
                              "ttscale": {"trace": True, "budget": {"tokens": 500}}}),
    ("/v1/completions", {"model": "fake", "seed": 2, "prompt": ["a", "b"], "max_tokens": 8}),
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "hi"}],
                              "ttscale": {"strategy": "nope"}}),  # an APIError from the handler
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "k": 2}),  # invalid
    ("/v1/chat/completions", {"model": "other", "messages": [{"role": "user", "content": "hi"}]}),  # unknown model
])
def test_fast_path_and_route_answer_alike(api: TestClient, path: str, body: object) -> None:
    fast, route = post(api, path, body, FAST), post(api, path, body, ROUTE)
    assert fast[0] == route[0]
    assert comparable(fast[1]) == comparable(route[1])


def test_fast_path_ids_and_usage(api: TestClient) -> None:
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    status, out = post(api, "/v1/chat/completions", body, FAST)
    assert status == 200 and out["id"].startswith("chatcmpl-") and len(out["id"]) == len("chatcmpl-") + 24
    u, t = out["usage"], out["ttscale"]["usage"]
    assert u["prompt_tokens"] == t["prefilled_tokens"] and u["completion_tokens"] == t["generated_tokens"]
    assert t["sampling"]["generated_tokens"] + t["verifier"]["generated_tokens"] == t["generated_tokens"]


def test_streams_still_go_through_the_route(api: TestClient) -> None:
    body = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    r = api.post("/v1/chat/completions", content=json.dumps(body).encode(), headers={"content-type": FAST})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.rstrip().endswith("data: [DONE]")
