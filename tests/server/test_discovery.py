"""The registry discovers components once per process: serving a request scans nothing."""

from __future__ import annotations

import httpx

from ttscale import registry

from .conftest import RunningServer


def test_requests_after_start_up_run_no_discovery(fake_server: RunningServer) -> None:
    body = {"model": "fake", "messages": [{"role": "user", "content": "What is 6 times 7?"}]}
    with httpx.Client(base_url=fake_server.base_url, timeout=30) as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 200  # start-up work done
        before = registry._scan.cache_info()
        for strategy in ("self-consistency", "best-of-n", "adaptive-consistency", "self-consistency"):
            r = client.post("/v1/chat/completions", json=body | {"ttscale": {"strategy": strategy, "k": 3}})
            assert r.status_code == 200, r.text
        after = registry._scan.cache_info()
    assert after.misses == before.misses, "a request re-ran component discovery (a scan of modules and entry points)"
    assert after.hits > before.hits  # the records were looked up, and came from the cache
