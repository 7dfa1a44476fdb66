"""Strategies that draft with a second model get the server's one draft backend (``serve --draft-model``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from fastapi.testclient import TestClient

from ttscale.backends.fake import FAKE_MODEL_INFO, FakeBackend
from ttscale.backends.llama_probe import TokenProbe
from ttscale.server.app import create_app
from ttscale.server.config import ServerConfig
from ttscale.testing.fake_steps import ScriptedStepBackend, _render
from ttscale.types import Generation, GenerationRequest

MSG = [{"role": "user", "content": "What is 6 times 7?"}]
SPEC = {"strategy": "speculative-reasoning", "k": 2, "options": {"threshold": 5}}


@dataclass
class Rated(ScriptedStepBackend):
    """Steps from a script; next-token probes rate every step ``rating`` (0-9); calls counted."""

    rating: int = 9
    calls: list[int] = field(default_factory=list)

    def generate(self, requests: Sequence[GenerationRequest], **hooks: object) -> list[Generation]:  # type: ignore[override]
        self.calls.append(len(requests))
        return super().generate(requests, **hooks)  # type: ignore[arg-type]

    def next_token_logprobs(self, requests: Sequence[GenerationRequest], candidates: Sequence[str]) -> list[TokenProbe]:
        out = []
        for r in requests:
            n = len(_render(r).split())
            out.append(TokenProbe({c: math.log(0.9 if c == str(self.rating) else 0.1 / 9) for c in candidates}, n, n))
        return out


def _server(base: object, draft: object | None) -> TestClient:
    return TestClient(create_app(ServerConfig(backend=base, model_name="fake", draft_backend=draft)))  # type: ignore[arg-type]


def test_the_draft_writes_the_kept_steps_and_is_shared_by_requests() -> None:
    base = Rated(answers={"42": 1.0}, info=replace(FAKE_MODEL_INFO, name="base", n_params=3_000_000), rating=9)
    draft = Rated(answers={"7": 1.0}, info=replace(FAKE_MODEL_INFO, name="draft"))
    with _server(base, draft) as api:
        for _ in range(2):
            r = api.post("/v1/chat/completions", json={"model": "fake", "messages": MSG, "max_tokens": 64,
                                                      "ttscale": SPEC})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["ttscale"]["choices"][0]["answer"] == "7"  # every step scored 9: the draft's chain stands
            assert body["ttscale"]["strategy_config"]["draft"] == "draft"
    assert draft.calls and not base.calls  # the base model only scored (probes), it generated nothing


def test_low_scores_send_steps_to_the_base_model() -> None:
    base = Rated(answers={"42": 1.0}, info=replace(FAKE_MODEL_INFO, name="base"), rating=0)
    draft = Rated(answers={"7": 1.0}, info=replace(FAKE_MODEL_INFO, name="draft"))
    with _server(base, draft) as api:
        r = api.post("/v1/chat/completions", json={"model": "fake", "messages": MSG, "max_tokens": 64, "ttscale": SPEC})
    assert r.status_code == 200, r.text
    assert r.json()["ttscale"]["choices"][0]["answer"] == "42" and base.calls


def test_without_a_draft_model_or_with_a_draft_option_it_is_a_400() -> None:
    with _server(FakeBackend(), None) as api:
        r = api.post("/v1/chat/completions", json={"model": "fake", "messages": MSG, "ttscale": SPEC})
    assert r.status_code == 400 and "--draft-model" in r.json()["error"]["message"]
    asked = {**SPEC, "options": {"threshold": 5, "draft": "qwen2.5-coder-0.5b"}}
    with _server(Rated(), Rated()) as api:
        r = api.post("/v1/chat/completions", json={"model": "fake", "messages": MSG, "ttscale": asked})
    assert r.status_code == 400 and r.json()["error"]["param"] == "ttscale.options.draft"
