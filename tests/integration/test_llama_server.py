"""The HTTP backend against real local servers on 127.0.0.1 with the embedded models.

* llama.cpp's ``llama-server`` (built from the vendored sources by ``make externals`` and
  cached; ~8 min on two cores; the tests skip, saying so, without it) with parallel slots: ``n`` is honoured, and our
  counts are checked against the server's own ``/metrics`` counters.
* llama-cpp-python's bundled server, which ignores ``n``: detected and fanned out.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ttscale.backends.llama_server import LlamaServer, free_port
from ttscale.backends.models import resolve_model_path
from ttscale.backends.openai_http import OpenAIHttpBackend, parse_prometheus
from ttscale.registry import make_strategy, make_task
from ttscale.run import Executor, Solve, execute
from ttscale.store import Store
from ttscale.types import ChatMessage, GenerationRequest

pytestmark = [pytest.mark.model, pytest.mark.timeout(2700)]
MODEL = "smollm2-135m"
PROMPT = "Question: What is 3 times 4?\nAnswer:"


@pytest.fixture(scope="module")
def llama_server(llama_server_binary: Path) -> Iterator[LlamaServer]:
    binary = llama_server_binary
    # 1 thread: on a shared, loaded 2-core machine 2 spinning threads were 20x slower (measured)
    with LlamaServer(resolve_model_path(MODEL), parallel=4, ctx_per_slot=1024, threads=1, binary=binary) as srv:
        yield srv


@pytest.fixture
def http(llama_server: LlamaServer) -> Iterator[OpenAIHttpBackend]:
    be = OpenAIHttpBackend(llama_server.base_url, MODEL, info_model=MODEL, concurrency=4)
    yield be
    be.close()


def _delta(before: dict[str, float], after: dict[str, float], key: str) -> float:
    return after.get(f"llamacpp:{key}", 0.0) - before.get(f"llamacpp:{key}", 0.0)


def test_n_samples_counted_against_server_counters(http: OpenAIHttpBackend, smollm: object) -> None:
    req = GenerationRequest(prompt=PROMPT, n=4, max_tokens=16, seed=7, temperature=1.0)
    before = http.metrics()
    gen = http.generate([req])[0]
    after = http.metrics()
    assert len(gen.completions) == 4 and http.client.honours_n is True and http.client.flavor == "llama-server"
    assert gen.generated_tokens == _delta(before, after, "tokens_predicted_total")
    assert gen.prefilled_tokens == _delta(before, after, "prompt_tokens_total")
    # same tokenizer, same prompt count as the in-process backend
    assert gen.prompt_tokens == http.count_prompt_tokens(req) == smollm.count_prompt_tokens(req)  # type: ignore[attr-defined]
    assert all(c.token_logprobs and all(lp <= 0 for lp in c.token_logprobs) for c in gen.completions)


def test_more_samples_than_slots_go_in_parts(http: OpenAIHttpBackend) -> None:
    """llama-server refuses n_cmpl above its slot count (400); the client splits such a request."""
    req = GenerationRequest(prompt=PROMPT, n=10, max_tokens=8, seed=3, temperature=1.0)
    before = http.metrics()
    gen = http.generate([req])[0]
    after = http.metrics()
    assert http.client.server_slots == 4
    assert sorted(c.index for c in gen.completions) == list(range(10))
    assert gen.generated_tokens == _delta(before, after, "tokens_predicted_total")
    assert gen.prefilled_tokens == _delta(before, after, "prompt_tokens_total")


def test_why_usage_is_not_trusted_for_several_choices(llama_server: LlamaServer) -> None:
    """The server's own OpenAI-style usage for n > 1 undercounts; its /metrics counter does not."""
    root = llama_server.base_url[:-3]
    before = httpx.get(f"{root}/metrics").text
    body = {"prompt": PROMPT, "n": 4, "max_tokens": 16, "seed": 5, "temperature": 1.0, "logprobs": 1}
    data = httpx.post(f"{llama_server.base_url}/completions", json=body, timeout=120).json()
    after = httpx.get(f"{root}/metrics").text
    served = _delta(parse_prometheus(before), parse_prometheus(after), "tokens_predicted_total")
    assert len(data["choices"]) == 4
    assert data["usage"]["completion_tokens"] < served


def test_concurrent_run_matches_server_counters(http: OpenAIHttpBackend, tmp_path: Path) -> None:
    task = make_task("arithmetic", subtask="arithmetic/1_digit_multiplication", max_tokens=8, shots=2)
    st = Store(tmp_path / "s.db")
    before = http.metrics()
    try:
        summary = execute(Solve(task, make_strategy("self-consistency", k=3)), store=st, run_id="ls", executor=Executor(mode="threads", workers=2, backend=http), limit=2)
        rows = st.samples("ls")
    finally:
        st.close()
    time.sleep(1.0)  # closed streams are counted by the server once it notices them
    after = http.metrics()
    assert summary.finished == 2 and len(rows) == 6
    assert sum(s.n_tokens for _, s in rows) == _delta(before, after, "tokens_predicted_total")
    assert sum(s.prefilled_tokens for _, s in rows) == _delta(before, after, "prompt_tokens_total")


def test_greedy_matches_in_process_backend(http: OpenAIHttpBackend, smollm: object) -> None:
    """Same model, same prompt, greedy: same text and the same token count (EOS included) as in-process."""
    req = GenerationRequest(prompt=PROMPT, n=1, max_tokens=12, temperature=0.0)
    remote = http.generate([req])[0].completions[0]
    smollm.forget_prefixes()  # type: ignore[attr-defined]  # prefill the whole prompt in one batch, as the server does
    local = smollm.generate([req])[0].completions[0]  # type: ignore[attr-defined]
    assert remote.text == local.text
    assert remote.n_tokens == local.n_tokens and remote.finish_reason == local.finish_reason
    assert remote.token_logprobs is not None and local.token_logprobs is not None
    assert all(abs(a - b) < 0.05 for a, b in zip(remote.token_logprobs, local.token_logprobs, strict=True))


def test_stopped_streams_are_counted_against_server_counters(http: OpenAIHttpBackend) -> None:
    """Stop hooks stream each sample; after the stop the server's decode count grows by at most a
    token or two per closed stream beyond what the client counted, and nothing unsent is decoded."""
    req = GenerationRequest(prompt=PROMPT, n=8, max_tokens=48, seed=11, temperature=1.0)
    finished: list[int] = []
    before = http.metrics()
    gen = http.generate([req], should_stop=lambda: len(finished) >= 2, on_finish=lambda _r, i: finished.append(i))[0]
    time.sleep(0.5)  # let the server notice the closed connections
    after = http.metrics()
    stopped = [c for c in gen.completions if c.finish_reason == "cancelled"]
    served = _delta(before, after, "tokens_predicted_total")
    assert len(finished) >= 2 and stopped, [c.finish_reason for c in gen.completions]
    # measured: the server decodes 1-3 tokens past the close before it notices (a decode step or two)
    assert gen.generated_tokens <= served <= gen.generated_tokens + 4 * len(stopped)
    # a stopped stream's prefill is not reported: it is charged the whole prompt,
    # never less than the server did
    assert _delta(before, after, "prompt_tokens_total") <= gen.prefilled_tokens


def test_short_m_at_k_over_http_stops_the_slow_samples(http: OpenAIHttpBackend, tmp_path: Path) -> None:

    task = make_task("gsm-symbolic", style="completion", shots=2, max_tokens=64)
    strat = make_strategy("short-m@k", k=8, m=2)
    before = http.metrics()
    st = Store(tmp_path / "s.sqlite")
    try:
        summary = execute(Solve(task, strat), store=st, run_id="smk", backend=http, limit=2)
        results = st.results("smk")
    finally:
        st.close()
    time.sleep(1.0)  # closed streams are counted by the server once it notices them
    after = http.metrics()
    assert summary.problems == 2 and all(r["meta"]["online_cancellation"] for r in results)
    assert all(r["meta"]["cancelled"] > 0 for r in results)
    served = _delta(before, after, "tokens_predicted_total")
    assert summary.usage.generated_tokens <= served <= summary.usage.generated_tokens + 4 * 12


def test_chat_request(http: OpenAIHttpBackend) -> None:
    req = GenerationRequest(messages=(ChatMessage("user", "What is 2 + 2?"),), n=2, max_tokens=8, seed=1)
    gen = http.generate([req])[0]
    assert len(gen.completions) == 2 and gen.prompt_tokens == http.count_prompt_tokens(req)


@pytest.fixture(scope="module")
def python_server() -> Iterator[str]:
    pytest.importorskip("sse_starlette", reason="llama-cpp-python's server extra is not installed")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ttscale.backends.llama_cpu", "server", "--model", str(resolve_model_path(MODEL)),
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ | {"PYTHONWARNINGS": "ignore"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("llama-cpp-python server did not start")
        yield f"{url}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def test_python_server_ignoring_n_is_fanned_out(python_server: str, smollm: object) -> None:
    be = OpenAIHttpBackend(python_server, MODEL, info_model=MODEL, concurrency=2)
    req = GenerationRequest(prompt=PROMPT, n=3, max_tokens=12, seed=3)
    try:
        gen = be.generate([req])[0]
        stats = be.stats
        assert be.client.honours_n is False
        assert be.count_prompt_tokens(req) == smollm.count_prompt_tokens(req)  # type: ignore[attr-defined]
    finally:
        be.close()
    assert [c.index for c in gen.completions] == [0, 1, 2]
    assert stats.fanout_requests == 2 and stats.responses == 3
    # each single-choice response's usage is exact: the totals are the server's own
    assert gen.generated_tokens == stats.reported_completion_tokens
    assert gen.prefilled_tokens == 3 * gen.prompt_tokens  # the server reports a full prefill per request


def test_a_quantized_kv_server_allocates_what_the_meter_counts(llama_server_binary: Path) -> None:
    """llama-server at q8_0 (flash attention on): its own KV buffer equals the meter's bytes, and it generates."""
    import re

    from ttscale.backends.kv_sizing import header_info

    binary = llama_server_binary
    # --verbose: the log then carries llama.cpp's own "KV buffer size" lines
    with LlamaServer(resolve_model_path(MODEL), parallel=2, ctx_per_slot=512, threads=1, binary=binary,
                     kv_type="q8_0", extra_args=["--verbose"]) as srv:
        be = OpenAIHttpBackend(srv.base_url, MODEL, info_model=MODEL, concurrency=2)
        try:
            gen = be.generate([GenerationRequest(prompt=PROMPT, n=2, max_tokens=8, seed=1, temperature=1.0)])[0]
        finally:
            be.close()
        log = Path(srv.log_path).read_text(errors="replace")
    assert len(gen.completions) == 2 and gen.generated_tokens > 0
    mib = sum(float(m) for m in re.findall(r"KV buffer size =\s+([\d.]+) MiB", log))
    assert "q8_0" in log and mib > 0
    assert mib * 2**20 == pytest.approx(header_info(MODEL, "q8_0").kv_bytes(1024), abs=0.01 * 2**20)
    with pytest.raises(Exception, match="needs flash attention"):
        LlamaServer(resolve_model_path(MODEL), kv_type="q4_0", extra_args=["--flash-attn", "off"])._kv_args()


def test_calibration_against_the_server_times_its_own_steps(llama_server: LlamaServer) -> None:
    """`ttscale calibrate --base-url`: prefills and decode steps timed through the server's timings, fitted."""
    from ttscale.backends.kv_sizing import header_info
    from ttscale.backends.server_calibration import calibrate_server, server_slots
    from ttscale.roofline import load_profile

    with httpx.Client(base_url=llama_server.base_url[: -len("/v1")]) as c:
        assert server_slots(c) == 4
    said: list[str] = []
    hw, points = calibrate_server(llama_server.base_url, header_info(MODEL), load_profile("cpu-2core"), quick=True,
                                  progress=said.append)
    kinds = [(s.kind, s.sequences, s.tokens) for _, s in points]
    assert kinds == [("prefill", 1, 64), ("prefill", 1, 256), ("decode", 1, 1), ("decode", 2, 1), ("decode", 4, 1)]
    assert all(s.seconds > 0 for _, s in points) and len(said) == 5
    assert hw.calibration["server"] == llama_server.base_url[: -len("/v1")] and hw.calibration["points"] == 5
    # the fitted profile prices the model's steps (no timing threshold: the fit's error is recorded, not judged)
    assert math.isfinite(hw.calibration["median_abs_error"]) and hw.effective_flops > 0


def test_proxy_workers_in_front_of_llama_server(llama_server: LlamaServer, http: OpenAIHttpBackend,
                                                tmp_path: Path) -> None:
    """``ttscale serve --workers 2 --backend openai``: two proxy processes share the engine; every answer's
    usage is what llama-server counted, and /metrics sums both processes."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ttscale", "serve", "--backend", "openai", "--base-url",
                             llama_server.base_url, "--model", MODEL, "--workers", "2", "--port", str(port),
                             "--max-tokens", "8", "-k", "2", "--log-level", "warning"],
                            env={**os.environ, "TMPDIR": str(tmp_path)}, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "proxy did not start"
                time.sleep(0.2)
        before = http.metrics()
        answers = []
        for i in range(4):
            with httpx.Client(timeout=300) as c:  # a new connection each: either worker may take it
                r = c.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": PROMPT, "seed": i})
            assert r.status_code == 200, r.text
            answers.append(r.json())
        after = http.metrics()
        generated = sum(a["usage"]["completion_tokens"] for a in answers)
        assert generated == _delta(before, after, "tokens_predicted_total") > 0
        text = httpx.get(f"{url}/metrics").text
        served = [ln for ln in text.splitlines() if ln.startswith('ttscale_requests_total{endpoint="/v1/completions"')]
        assert served and float(served[0].rsplit(" ", 1)[1]) == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
