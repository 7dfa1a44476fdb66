"""HTTP backend against our scripted OpenAI-compatible server on loopback (no model needed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ttscale.backends.fake import FAKE_MODEL_INFO
from ttscale.backends.openai_client import TokenLedger
from ttscale.backends.openai_http import OpenAIHttpBackend, parse_prometheus
from ttscale.backends.openai_wire import MalformedResponse, parse_response
from ttscale.errors import BackendError, BudgetExceededError, ConfigError, UnsupportedFeatureError
from ttscale.registry import make_backend, make_strategy, make_task
from ttscale.run import Solve, execute
from ttscale.store import Store
from ttscale.testing.openai_fake_server import FakeOpenAIServer
from ttscale.types import ChatMessage, GenerationRequest

PROMPT = "Question: what is 6 times 7?\nAnswer:"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as s:
        yield s


def backend_for(srv: FakeOpenAIServer, **kw: object) -> OpenAIHttpBackend:
    kw.setdefault("backoff_base", 0.01)
    return OpenAIHttpBackend(srv.base_url, "fake", info=FAKE_MODEL_INFO, **kw)  # type: ignore[arg-type]


def test_n_samples_in_one_request_counted_from_choices(server: FakeOpenAIServer) -> None:
    be = backend_for(server)
    try:
        gen = be.generate([GenerationRequest(prompt=PROMPT, n=4, seed=1, max_tokens=16)])[0]
    finally:
        be.close()
    assert server.requests == 1
    assert [c.index for c in gen.completions] == [0, 1, 2, 3]
    assert gen.generated_tokens == server.delivered_completion_tokens
    assert gen.prompt_tokens == len(PROMPT.split()) + 1
    assert gen.prefilled_tokens == gen.prompt_tokens  # the shared prompt is prefilled once
    assert [c.prefilled_tokens > 0 for c in gen.completions] == [True, False, False, False]
    assert all(c.token_logprobs is not None and len(c.token_logprobs) == c.n_tokens for c in gen.completions)
    assert sorted(c.finish_order for c in gen.completions) == [0, 1, 2, 3]


def test_usage_reporting_one_choice_is_not_trusted() -> None:
    with FakeOpenAIServer(usage_first_choice_only=True) as srv:
        be = backend_for(srv)
        try:
            gen = be.generate([GenerationRequest(prompt=PROMPT, n=8, seed=3, max_tokens=16)])[0]
            stats = be.stats
        finally:
            be.close()
    assert gen.generated_tokens == srv.delivered_completion_tokens
    assert stats.reported_completion_tokens < stats.counted_completion_tokens == srv.delivered_completion_tokens


def test_server_ignoring_n_is_detected_and_fanned_out() -> None:
    with FakeOpenAIServer(honour_n=False) as srv:
        be = backend_for(srv)
        try:
            gen = be.generate([GenerationRequest(prompt=PROMPT, n=4, seed=5, max_tokens=16)])[0]
            assert be.client.honours_n is False
            first = srv.requests
            gen2 = be.generate([GenerationRequest(prompt=PROMPT, n=3, seed=9, max_tokens=16)])[0]
        finally:
            be.close()
    assert first == 4  # one n=4 answered with 1 choice, then 3 single-sample requests
    assert srv.requests - first == 3  # known now: straight to fan-out
    assert [c.index for c in gen.completions] == [0, 1, 2, 3]
    assert len(gen2.completions) == 3
    assert gen.generated_tokens + gen2.generated_tokens == srv.delivered_completion_tokens
    # every request prefilled the prompt again: counted honestly, once per request
    assert gen.prefilled_tokens + gen2.prefilled_tokens == srv.delivered_prompt_tokens
    seeds = [b["seed"] for b in srv.bodies[1:4]]
    assert sorted(seeds) == [6, 7, 8]  # sample i seeded with seed + i; fan-out requests run concurrently


def test_missing_logprobs_is_a_clear_error_or_a_fanout() -> None:
    with FakeOpenAIServer(logprobs=False) as srv:
        be = backend_for(srv)
        try:
            with pytest.raises(UnsupportedFeatureError, match="no log-probs"):
                be.generate([GenerationRequest(prompt=PROMPT, n=2, logprobs=True)])
            gen = be.generate([GenerationRequest(prompt=PROMPT, n=3, seed=0, logprobs=False)])[0]
        finally:
            be.close()
    assert len(gen.completions) == 3 and all(c.logprob is None for c in gen.completions)
    assert gen.generated_tokens > 0


def test_server_rejecting_logprobs_raises_unsupported() -> None:
    with FakeOpenAIServer(reject_logprobs=True) as srv:
        be = backend_for(srv)
        try:
            with pytest.raises(UnsupportedFeatureError, match="log-probs"):
                be.generate([GenerationRequest(prompt=PROMPT, n=1)])
        finally:
            be.close()
    assert srv.requests == 1  # a 400 is not retried


def test_chat_request_and_prompt_tokens(server: FakeOpenAIServer) -> None:
    be = backend_for(server)
    req = GenerationRequest(messages=(ChatMessage("user", "what is six times seven?"),), n=2, seed=0, max_tokens=12)
    try:
        gen = be.generate([req])[0]
        assert be.count_prompt_tokens(GenerationRequest(prompt=PROMPT)) == len(PROMPT.split()) + 1
    finally:
        be.close()
    assert server.bodies[0]["messages"][0]["content"] == "what is six times seven?"
    assert len(gen.completions) == 2 and "answer" in gen.completions[0].text


def test_stop_and_max_tokens(server: FakeOpenAIServer) -> None:
    be = backend_for(server)
    try:
        gen = be.generate([GenerationRequest(prompt=PROMPT, n=1, seed=2, max_tokens=2),
                           GenerationRequest(prompt=PROMPT, n=1, seed=2, stop=("answer",))])
    finally:
        be.close()
    assert gen[0].completions[0].finish_reason == "length" and gen[0].completions[0].n_tokens == 2
    assert "answer" not in gen[1].completions[0].text


def test_token_cap_holds_across_concurrent_requests(server: FakeOpenAIServer) -> None:
    cap = 150
    be = backend_for(server, token_cap=cap, concurrency=4)
    errors: list[Exception] = []

    def one(i: int) -> None:
        try:
            be.generate([GenerationRequest(prompt=PROMPT, n=2, seed=i, max_tokens=16)])
        except BudgetExceededError as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent = be.client.ledger.spent
    be.close()
    assert errors, "the cap must refuse some of the 10 concurrent requests"
    assert spent <= cap
    assert spent == server.delivered_prompt_tokens + server.delivered_completion_tokens


def test_non_retryable_status_fails_fast() -> None:
    with FakeOpenAIServer() as srv:
        be = OpenAIHttpBackend(srv.base_url.replace("/v1", "/nope"), info=FAKE_MODEL_INFO, backoff_base=0.01)
        try:
            with pytest.raises(BackendError, match="404"):
                be.generate([GenerationRequest(prompt=PROMPT)])
        finally:
            be.close()


def test_registry_and_strategy_run_unchanged(tmp_path: Path, server: FakeOpenAIServer) -> None:
    with pytest.raises(ConfigError, match="base URL"):
        make_backend("openai", "m")
    be = make_backend("openai", "fake", base_url=server.base_url, info=FAKE_MODEL_INFO)
    data = tmp_path / "p.jsonl"
    data.write_text("".join(f'{{"id": "p{i}", "prompt": "what is {i}?", "answer": "42"}}\n' for i in range(3)))
    task = make_task("jsonl", data=str(data), style="completion")
    st = Store(tmp_path / "s.db")
    try:
        summary = execute(Solve(task, make_strategy("self-consistency", k=4)), store=st, run_id="r", backend=be)
        samples = st.samples("r")
    finally:
        st.close()
        be.close()
    assert summary.problems == 3 and len(samples) == 12
    assert summary.usage.generated_tokens == server.delivered_completion_tokens
    assert summary.correct >= 1


def test_wire_parsing_rejects_bad_shapes() -> None:
    with pytest.raises(MalformedResponse):
        parse_response({"object": "x"})
    with pytest.raises(MalformedResponse):
        parse_response({"choices": [{"text": "a"}]})  # no usage
    p = parse_response({"choices": [{"text": "a", "finish_reason": "length"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 3}, "timings": {"prompt_n": 4}})
    assert p.cached_tokens == 6 and p.choices[0].finish_reason == "length"
    assert parse_prometheus("# HELP x\nllamacpp:tokens_predicted_total 12\n") == {"llamacpp:tokens_predicted_total": 12.0}
    led = TokenLedger(10)
    led.reserve(8)
    with pytest.raises(BudgetExceededError):
        led.reserve(3)
    led.settle(8, 5)
    led.reserve(5)


def test_cli_run_and_sweep_through_http(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ttscale.cli import app

    data = tmp_path / "p.jsonl"
    data.write_text("".join(f'{{"id": "p{i}", "prompt": "what is {i}?", "answer": "42"}}\n' for i in range(4)))
    common = ["--task", "jsonl", "--data", str(data), "--style", "completion", "--backend", "openai", "--model", "fake",
              "--store", str(tmp_path / "s.db"), "--no-progress"]
    with FakeOpenAIServer(faults=("500",), faulty_attempts=1) as srv:
        r = CliRunner().invoke(app, ["run", *common, "--base-url", srv.base_url, "-k", "3", "--workers", "2",
                                     "--run-id", "r1"])
        assert r.exit_code == 0, r.output
        assert "http: " in r.output and "http_500" in r.output
        r = CliRunner().invoke(app, ["sweep", *common, "--base-url", srv.base_url, "-k", "5", "--workers", "3",
                                     "--run-id", "s1"])
        assert r.exit_code == 0, r.output
    st = Store(tmp_path / "s.db")
    try:
        assert len(st.samples("r1")) == 12 and len(st.samples("s1")) == 20
        assert st.get_run("s1").kind == "sweep"  # type: ignore[union-attr]
    finally:
        st.close()
    r = CliRunner().invoke(app, ["run", *common])
    assert r.exit_code != 0 and "needs --base-url" in r.output


def test_llama_server_native_results_count_each_choice() -> None:
    from ttscale.backends.openai_wire import native_body, parse_native, to_completions

    req = GenerationRequest(prompt="p", n=2, max_tokens=8, stop=("\n",), seed=3)
    body = native_body("p", req, 2, 3, True)
    assert body["n_cmpl"] == 2 and body["n_predict"] == 8 and body["n_probs"] == 1 and body["stop"] == ["\n"]
    results = [
        {"index": 0, "content": " 12", "tokens_predicted": 4, "tokens_evaluated": 9, "stop_type": "word",
         "timings": {"prompt_n": 7}, "completion_probabilities": [{"logprob": -0.1}, {"logprob": -0.2}]},
        {"index": 1, "content": " 1 2 3", "tokens_predicted": 8, "tokens_evaluated": 9, "stop_type": "limit",
         "timings": {"prompt_n": 7}, "completion_probabilities": [{"logprob": -0.1}] * 8},
    ]
    parsed = parse_native(results)
    comps = to_completions(parsed, 0, True, 0.0)
    # the stop string's tokens are missing from the log-probs but counted by tokens_predicted
    assert [c.n_tokens for c in comps] == [4, 8]
    assert [c.finish_reason for c in comps] == ["stop", "length"]
    assert [c.prefilled_tokens for c in comps] == [7, 0]  # the children share the parent's prefill
    with pytest.raises(MalformedResponse):
        parse_native([{"content": "x"}])


def test_llama_server_build_needs_cmake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import ttscale.backends.llama_server as ls

    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path))
    monkeypatch.delenv("TTSCALE_LLAMA_SERVER", raising=False)
    monkeypatch.setattr(ls.shutil, "which", lambda name: None)
    assert ls.find_llama_server() is None
    with pytest.raises(ls.BuildUnavailable, match="cmake"):
        ls.build_llama_server()
    assert ls.main(["path"]) == 1
    with pytest.raises(ls.BuildUnavailable, match="not built"):
        ls.LlamaServer(tmp_path / "m.gguf").start()


def test_uncountable_choices_are_a_backend_error_not_a_bare_value_error() -> None:
    """Several choices without log-probs or counts cannot be counted: the error is in ttscale's tree."""
    from ttscale.backends.openai_wire import to_completions
    from ttscale.errors import BackendError

    body = {"choices": [{"index": 0, "text": "a", "finish_reason": "stop"},
                        {"index": 1, "text": "b", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    with pytest.raises(BackendError, match="several choices"):
        to_completions(parse_response(body), 0, False, 0.0)
