"""Serving behaviour against a real uvicorn server: 429 when full, cancellation, timeout, shutdown, auth, limits."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
from typer.testing import CliRunner

from ttscale.cli import app as cli_app
from ttscale.errors import ConfigError
from ttscale.server.config import ServerConfig, check_bind, is_loopback

from .conftest import GatedBackend, run_server

MSG = [{"role": "user", "content": "What is 6 times 7?"}]
BODY = {"model": "fake", "messages": MSG, "ttscale": {"k": 2}}


def _post_in_thread(url: str, body: dict, out: dict, **kw: object) -> threading.Thread:
    def go() -> None:
        try:
            out["response"] = httpx.post(url, json=body, timeout=30, **kw)  # type: ignore[arg-type]
        except Exception as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def _wait_for(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_full_queue_answers_429_with_retry_after() -> None:
    be = GatedBackend()
    with run_server(ServerConfig(backend=be, model_name="fake", max_concurrency=1, max_queue=1, retry_after_s=3)) as s:
        url = f"{s.base_url}/v1/chat/completions"
        first, second = {}, {}
        t1 = _post_in_thread(url, BODY, first)
        assert be.entered.wait(10)
        t2 = _post_in_thread(url, BODY, second)  # waits in the queue (no worker free)
        assert _wait_for(lambda: s.service.in_flight == 2)
        r = httpx.post(url, json=BODY, timeout=10)
        assert r.status_code == 429
        assert r.headers["retry-after"] == "3"
        assert r.json()["error"]["code"] == "queue_full"
        c = openai.OpenAI(base_url=f"{s.base_url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="fake", messages=MSG)
        be.gate.set()
        t1.join(10)
        t2.join(10)
        assert first["response"].status_code == 200 and second["response"].status_code == 200
        assert _wait_for(lambda: s.service.in_flight == 0)
        assert 'ttscale_rejected_total{reason="queue_full"} 2.0' in httpx.get(f"{s.base_url}/metrics").text


def test_client_disconnect_cancels_the_work() -> None:
    be = GatedBackend()
    with run_server(ServerConfig(backend=be, model_name="fake")) as s:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{s.base_url}/v1/chat/completions", json=BODY, timeout=httpx.Timeout(10, read=0.5))
        assert be.stopped.wait(10), "the backend was never told to stop"
        assert _wait_for(lambda: s.service.in_flight == 0)
        assert 'ttscale_cancelled_total{reason="disconnect"} 1.0' in httpx.get(f"{s.base_url}/metrics").text


def test_stream_disconnect_cancels_the_work() -> None:
    be = GatedBackend()
    with run_server(ServerConfig(backend=be, model_name="fake")) as s:
        with httpx.Client(timeout=10) as h:
            with h.stream("POST", f"{s.base_url}/v1/chat/completions", json={**BODY, "stream": True}) as r:
                first = next(r.iter_lines())
                assert first.startswith(": ttscale")
        # The work stops whichever way the race goes: the engine is told to stop mid-generation, or the
        # request is cancelled before its generation starts (the engine then never runs it).
        assert _wait_for(lambda: s.service.in_flight == 0)
        assert be.stopped.is_set() or not be.entered.is_set()
        be.gate.set()
        time.sleep(0.2)
        assert be.batch_sizes == [] or be.stopped.is_set()


def test_request_timeout_is_504_and_stops_the_work() -> None:
    be = GatedBackend()
    with run_server(ServerConfig(backend=be, model_name="fake", timeout_s=0.3)) as s:
        r = httpx.post(f"{s.base_url}/v1/chat/completions", json=BODY, timeout=10)
        assert r.status_code == 504
        assert r.json()["error"]["type"] == "timeout_error"
        assert be.stopped.wait(10)


def test_graceful_shutdown_finishes_in_flight_requests() -> None:
    be = GatedBackend()
    out: dict = {}
    with run_server(ServerConfig(backend=be, model_name="fake"), graceful_s=20) as s:
        t = _post_in_thread(f"{s.base_url}/v1/chat/completions", BODY, out)
        assert be.entered.wait(10)
        stopper = threading.Thread(target=s.stop, daemon=True)
        stopper.start()
        time.sleep(0.2)
        assert s.thread.is_alive()  # waiting for the in-flight request
        be.gate.set()
        t.join(10)
        stopper.join(20)
        assert out["response"].status_code == 200
        assert not s.thread.is_alive()
        assert s.service.draining


def test_shutdown_past_the_grace_period_cancels_in_flight_work() -> None:
    be = GatedBackend()
    out: dict = {}
    with run_server(ServerConfig(backend=be, model_name="fake"), graceful_s=0.3) as s:
        t = _post_in_thread(f"{s.base_url}/v1/chat/completions", BODY, out)
        assert be.entered.wait(10)
        s.stop(timeout=20)
        assert not s.thread.is_alive()
        assert be.stopped.is_set()  # the backend was told to stop, not left running
        t.join(10)
        assert "error" in out or out["response"].status_code >= 500


def test_bearer_auth() -> None:
    with run_server(ServerConfig(backend=GatedBackend(gate=_open()), model_name="fake", api_key="sekrit")) as s:
        bad = openai.OpenAI(base_url=f"{s.base_url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="fake", messages=MSG)
        r = httpx.post(f"{s.base_url}/v1/chat/completions", json=BODY)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{s.base_url}/metrics").status_code == 401
        assert httpx.get(f"{s.base_url}/health").status_code == 200
        good = openai.OpenAI(base_url=f"{s.base_url}/v1", api_key="sekrit", max_retries=0)
        assert good.chat.completions.create(model="fake", messages=MSG).choices[0].message.content


def _open() -> threading.Event:
    e = threading.Event()
    e.set()
    return e


def test_body_size_limit_declared_and_chunked() -> None:
    with run_server(ServerConfig(backend=GatedBackend(gate=_open()), model_name="fake", max_body_bytes=2000)) as s:
        big = {"model": "fake", "messages": [{"role": "user", "content": "x" * 5000}]}
        r = httpx.post(f"{s.base_url}/v1/chat/completions", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

        def chunks():  # no Content-Length: the limit must hold for streamed uploads too
            yield b'{"model": "fake", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}]}'

        r = httpx.post(f"{s.base_url}/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_bind_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")
    check_bind("127.0.0.1", None, False)
    check_bind("0.0.0.0", "key", False)
    check_bind("0.0.0.0", None, True)
    with pytest.raises(ConfigError, match="--api-key"):
        check_bind("0.0.0.0", None, False)


def test_cli_refuses_unauthenticated_remote_bind(monkeypatch) -> None:
    monkeypatch.delenv("TTSCALE_API_KEY", raising=False)
    r = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--backend", "fake"])
    assert r.exit_code == 2
    assert "--allow-unauthenticated-remote" in r.output
