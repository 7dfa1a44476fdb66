"""KV-memory caps in the server: per request (``ttscale.budget.kv_bytes``) and server-wide (``max_kv_bytes``).

The fake model's KV cell is 512 bytes (4 layers x 2 KV heads x 16 dims, K and V, f16); a chat prompt
"hi" renders to 3 fake tokens, so k samples of up to 16 tokens need ``3 + 16 k`` cells at worst.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from ttscale.backends.fake import FAKE_MODEL_INFO, FakeBackend
from ttscale.errors import ConfigError
from ttscale.server.app import create_app
from ttscale.server.batcher import MicroBatcher
from ttscale.server.config import ServerConfig
from ttscale.types import Generation, GenerationRequest

from .conftest import run_server

CELL = FAKE_MODEL_INFO.kv_bytes(1)
PROMPT = 3


class CallLog(FakeBackend):
    """Records each backend call's requests (n and max_tokens), thread-safely."""

    def __init__(self) -> None:
        super().__init__(answers={"42": 0.6, "7": 0.4}, filler_tokens=8)
        self.calls: list[list[tuple[int, int]]] = []
        self._mu = threading.Lock()

    def generate(self, requests: Sequence[GenerationRequest], **hooks: object) -> list[Generation]:  # type: ignore[override]
        with self._mu:
            self.calls.append([(r.n, r.max_tokens) for r in requests])
        return super().generate(requests, **hooks)  # type: ignore[arg-type]


def worst(n: int, max_tokens: int) -> int:
    return FAKE_MODEL_INFO.kv_bytes(PROMPT + n * max_tokens)


def body(**ttscale: object) -> dict[str, object]:
    return {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16,
            "ttscale": {"strategy": "self-consistency", "k": 4, **ttscale}}


@pytest.fixture
def log() -> CallLog:
    return CallLog()


@pytest.fixture
def api(log: CallLog) -> Iterator[TestClient]:
    with TestClient(create_app(ServerConfig(backend=log, model_name="fake", max_kv_bytes=40 * CELL))) as c:
        yield c


def test_a_request_cap_sizes_the_waves(api: TestClient, log: CallLog) -> None:
    cap = 39 * CELL  # 3 + 16 n <= 39: two samples at a time
    r = api.post("/v1/chat/completions", json=body(budget={"kv_bytes": cap}))
    assert r.status_code == 200, r.text
    tt = r.json()["ttscale"]
    assert tt["budget"]["kv_bytes"] == cap and tt["budget"]["per_choice_kv_bytes"] == cap
    assert [n for call in log.calls for n, _ in call] == [2, 2]
    assert 0 < tt["usage"]["peak_kv_bytes_per_choice"] <= cap
    assert len(tt["choices"][0]["samples"]) == 4


def test_the_server_cap_applies_when_a_request_names_none(api: TestClient, log: CallLog) -> None:
    r = api.post("/v1/chat/completions", json=body())
    assert r.status_code == 200, r.text
    assert r.json()["ttscale"]["budget"]["kv_bytes"] == 40 * CELL
    assert all(worst(n, mt) <= 40 * CELL for call in log.calls for n, mt in call)


def test_choices_share_the_request_cap(api: TestClient, log: CallLog) -> None:
    r = api.post("/v1/chat/completions", json=body(budget={"kv_bytes": 39 * CELL}) | {"n": 2})
    assert r.status_code == 200, r.text
    assert r.json()["ttscale"]["budget"]["per_choice_kv_bytes"] == 39 * CELL // 2  # 19 cells: one sample
    assert {n for call in log.calls for n, _ in call} == {1}


def test_the_header_sets_the_cap(api: TestClient, log: CallLog) -> None:
    r = api.post("/v1/chat/completions", json=body(), headers={"X-Ttscale-Budget-Kv-Bytes": str(19 * CELL)})
    assert r.status_code == 200, r.text
    assert {n for call in log.calls for n, _ in call} == {1}


BAD = [
    ({"kv_bytes": 0}, "ttscale.budget.kv_bytes", None),
    ({"kv_bytes": -5}, "ttscale.budget.kv_bytes", None),
    ({"kv_bytes": "lots"}, "ttscale.budget.kv_bytes", None),
    ({"kv_bytes": 1.5}, "ttscale.budget.kv_bytes", None),
    ({"kv_bytes": 41 * CELL}, "ttscale.budget.kv_bytes", "invalid_value"),  # over the server's cap
    ({"kv_bytes": 3 * CELL}, "ttscale.budget.kv_bytes", "budget_too_small"),  # not even prompt + 1 token
]


@pytest.mark.parametrize("budget,param,code", BAD, ids=[str(b) for b, _, _ in BAD])
def test_bad_kv_caps_are_400s_naming_the_field(api: TestClient, budget: dict[str, object], param: str,
                                                code: str | None) -> None:
    r = api.post("/v1/chat/completions", json=body(budget=budget))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param
    assert code is None or err["code"] == code


def test_bad_header_caps_and_a_cap_below_the_choices(api: TestClient) -> None:
    for value in ("lots", "0", str(10**12)):
        r = api.post("/v1/chat/completions", json=body(), headers={"X-Ttscale-Budget-Kv-Bytes": value})
        assert r.status_code == 400 and r.json()["error"]["param"] == "x-ttscale-budget-kv-bytes", (value, r.text)
    r = api.post("/v1/completions", json={"model": "fake", "prompt": "hi", "n": 3, "ttscale": {"budget": {"kv_bytes": 2}}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "budget_too_small"


def test_server_config_refuses_a_nonpositive_cap() -> None:
    with pytest.raises(ConfigError, match="max_kv_bytes"):
        ServerConfig(backend=FakeBackend(), max_kv_bytes=0)


def _concurrently(fn: Callable[[int], object], n: int) -> list[object]:
    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(fn, range(n)))


def test_the_batcher_packs_calls_within_the_server_cap() -> None:
    log = CallLog()
    cap = worst(4, 16) * 2  # two 4-sample waves per call at most
    b = MicroBatcher(log, window_s=30.0, kv_cap=cap, kv_cost=lambda r: worst(r.n, r.max_tokens))
    for _ in range(3):
        b.run_started()  # three active runs: the leader waits for all three before its first call
    req = GenerationRequest(messages=None, prompt="a b c", n=4, max_tokens=16)

    def one(i: int) -> list[Generation]:
        try:
            return b.generate([req.with_(seed=i)], lambda: False)
        finally:
            b.run_finished()

    gens = _concurrently(one, 3)
    b.close()
    assert len(gens) == 3 and [len(c) for c in log.calls] == [2, 1]
    assert all(sum(worst(n, mt) for n, mt in call) <= cap for call in log.calls)
    with pytest.raises(ConfigError, match="kv_cost"):
        MicroBatcher(log, kv_cap=100)


def test_concurrent_requests_never_exceed_the_server_cap_together() -> None:
    log = CallLog()
    cap = 70 * CELL  # one 4-sample wave (67 cells) per backend call
    cfg = ServerConfig(backend=log, model_name="fake", max_kv_bytes=cap, batch_window_ms=200, batch_min_wait_ms=50)
    with run_server(cfg) as s:
        def one(i: int) -> int:
            r = httpx.post(f"{s.base_url}/v1/chat/completions", json=body() | {"seed": i}, timeout=30)
            assert r.status_code == 200, r.text
            return len(r.json()["ttscale"]["choices"][0]["samples"])

        assert _concurrently(one, 4) == [4] * 4
    assert all(sum(worst(n, mt) for n, mt in call) <= cap for call in log.calls)
    assert [len(call) for call in log.calls] == [1] * 4  # uncapped, these four waves share one call
