"""Request budgets in seconds and dollars, priced on the server's hardware profile (``--hardware``)."""

from __future__ import annotations

import dataclasses

from fastapi.testclient import TestClient

from ttscale.backends.fake import FakeBackend
from ttscale.roofline import load_profile
from ttscale.server.app import create_app
from ttscale.server.config import ServerConfig
from ttscale.types import ModelInfo

MSG = [{"role": "user", "content": "What is 6 times 7?"}]
# Qwen2.5-Coder-0.5B's shapes: the roofline needs a real model's balance of work
QWEN05 = ModelInfo(name="fake", n_params=494_032_768, n_layers=24, n_heads=14, n_kv_heads=2, head_dim=64,
                   d_model=896, n_ctx_train=32768, architecture="qwen2", has_chat_template=True)


def post(client: TestClient, budget: dict[str, object]) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = client.post("/v1/chat/completions", json={"model": "fake", "messages": MSG, "max_tokens": 16,
                                                  "ttscale": {"strategy": "self-consistency", "k": 16,
                                                              "budget": budget}})
    return r.status_code, r.json()


def test_a_dollar_budget_is_a_hard_cap_on_the_servers_profile() -> None:
    cpu = load_profile("cpu-2core")
    backend = FakeBackend(answers={"42": 1.0}, filler_tokens=4, info=QWEN05)
    with TestClient(create_app(ServerConfig(backend=backend, model_name="fake", hardware=cpu))) as c:
        code, full = post(c, {})
        assert code == 200 and len(full["ttscale"]["choices"][0]["samples"]) == 16
        code, capped = post(c, {"usd": 2e-5})
        assert code == 200, capped
        assert 0 < len(capped["ttscale"]["choices"][0]["samples"]) < 16
        code, tiny = post(c, {"seconds": 1e-9})
        assert code == 200 and tiny["ttscale"]["choices"][0]["samples"] == []
        code, bad = post(c, {"usd": -1.0})
        assert code == 400 and bad["error"]["param"].startswith("ttscale.budget")


def test_without_a_profile_priced_budgets_are_refused() -> None:
    backend = FakeBackend(answers={"42": 1.0}, info=dataclasses.replace(QWEN05))
    with TestClient(create_app(ServerConfig(backend=backend, model_name="fake"))) as c:
        code, body = post(c, {"seconds": 1.0})
        assert code == 400 and body["error"]["param"] == "ttscale.budget.seconds" and "--hardware" in body["error"]["message"]
