"""Streamed samples that hooks can stop: counted from what arrived, never sent when not needed."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from ttscale.backends.fake import FAKE_MODEL_INFO
from ttscale.backends.openai_http import OpenAIHttpBackend
from ttscale.backends.openai_stream import StreamState, apply_chunk, parse_sse_line, stream_completion
from ttscale.errors import BackendError
from ttscale.types import GenerationRequest

PROMPT = "Question: what is 6 times 7?\nAnswer:"


def chunk(text: str, lp: float = -0.5, finish: str | None = None) -> bytes:
    data = {"choices": [{"text": text, "index": 0, "finish_reason": finish,
                         "logprobs": {"content": [{"token": text, "logprob": lp}]} if text else None}]}
    return f"data: {json.dumps(data)}\n\n".encode()


def usage(completion: int, prompt: int = 9, prompt_n: int = 9) -> bytes:
    data = {"choices": [], "usage": {"completion_tokens": completion, "prompt_tokens": prompt},
            "timings": {"prompt_n": prompt_n}}
    return f"data: {json.dumps(data)}\n\ndata: [DONE]\n\n".encode()


def test_chunks_fold_into_a_completion() -> None:
    st = StreamState()
    for line in (chunk(" 4").decode() + chunk("2").decode() + chunk("", finish="stop").decode()
                 + usage(3).decode()).splitlines():
        d = parse_sse_line(line)
        if d is not None:
            apply_chunk(st, d)
    c = stream_completion(st, GenerationRequest(prompt=PROMPT), 0, 9, 0.1)
    assert c.text == " 42" and c.finish_reason == "stop"
    assert c.n_tokens == 3  # the server's count includes the end-of-generation token
    assert c.token_logprobs == [-0.5, -0.5] and c.prefilled_tokens == 9
    stopped = stream_completion(StreamState(text=["x"], logprobs=[-1.0], content_chunks=1),
                                GenerationRequest(prompt=PROMPT), 1, 9, 0.1, prefill_estimate=4)
    assert (stopped.finish_reason, stopped.n_tokens, stopped.prefilled_tokens) == ("cancelled", 1, 4)
    unsent = stream_completion(StreamState(), GenerationRequest(prompt=PROMPT), 2, 9, 0.0, started=False)
    assert (unsent.n_tokens, unsent.prefilled_tokens) == (0, 0)


class SlowServer:
    """Streams ``length`` tokens per request, ``delay`` seconds apart; seed s finishes after s + 2 tokens
    when ``by_seed`` (so samples finish one by one). Counts what it generated, as a server would."""

    def __init__(self, length: int = 40, delay: float = 0.01, by_seed: bool = True) -> None:
        self.length, self.delay, self.by_seed = length, delay, by_seed
        self.generated = 0
        self.started = 0
        self.closed_early = 0

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/props"):
            return httpx.Response(404)
        if path.endswith("/tokenize"):
            return httpx.Response(200, json={"tokens": list(range(9))})
        body = json.loads(request.content)
        assert body["stream"] and body["n"] == 1
        n = (body["seed"] % 100) + 2 if self.by_seed else self.length
        n = min(n, self.length)
        self.started += 1
        server = self

        async def events():  # type: ignore[no-untyped-def]
            sent = 0
            try:
                for t in range(n):
                    await asyncio.sleep(server.delay)
                    server.generated += 1
                    sent += 1
                    yield chunk(" 42" if t == n - 1 else " w")
                yield chunk("", finish="stop")
                yield usage(n)
            finally:
                if sent < n:
                    server.closed_early += 1

        return httpx.Response(200, content=events(), headers={"content-type": "text/event-stream"})


def backend(srv: SlowServer, concurrency: int = 4) -> OpenAIHttpBackend:
    return OpenAIHttpBackend("http://test/v1", "m", info=FAKE_MODEL_INFO, concurrency=concurrency,
                             transport=httpx.MockTransport(srv.handler), backoff_base=0.0)


def test_stop_closes_the_rest_and_counts_what_arrived() -> None:
    srv = SlowServer()
    be = backend(srv, concurrency=4)
    finished: list[int] = []
    try:
        gen = be.generate([GenerationRequest(prompt=PROMPT, n=8, seed=0, max_tokens=64)],
                          should_stop=lambda: len(finished) >= 2, on_finish=lambda _r, i: finished.append(i))[0]
    finally:
        be.close()
    done = [c for c in gen.completions if c.finish_reason == "stop"]
    stopped = [c for c in gen.completions if c.finish_reason == "cancelled"]
    assert [c.index for c in done][:2] == [0, 1] and len(done) >= 2 and stopped
    assert srv.started <= 4 + len(done)  # samples not yet sent when the stop came were never sent
    # what the client counts is what arrived; the server may be a token ahead per closed stream
    assert gen.generated_tokens <= srv.generated <= gen.generated_tokens + len(stopped)
    assert all(c.token_logprobs is not None and len(c.token_logprobs) == c.n_tokens for c in stopped if c.n_tokens)
    never_sent = [c for c in stopped if c.n_tokens == 0 and c.prefilled_tokens == 0]
    assert len(never_sent) == 8 - srv.started


def test_without_stop_hooks_the_per_sample_hooks_still_fire_in_finish_order() -> None:
    srv = SlowServer(by_seed=True)
    be = backend(srv)
    seen: list[tuple[int, str]] = []
    try:
        be.generate([GenerationRequest(prompt=PROMPT, n=3, seed=0, max_tokens=64)],
                    should_stop=lambda: False, on_sample=lambda _r, i, text: seen.append((i, text)))
    finally:
        be.close()
    assert [i for i, _ in seen] == [0, 1, 2] and all(t.endswith("42") for _, t in seen)


def test_a_request_can_be_cancelled_alone() -> None:
    srv = SlowServer(by_seed=False, length=30)
    be = backend(srv, concurrency=8)
    try:
        gens = be.generate([GenerationRequest(prompt=PROMPT, n=2, seed=0, max_tokens=64),
                            GenerationRequest(prompt=PROMPT + " ", n=2, seed=5, max_tokens=64)],
                           cancelled=lambda ri: ri == 1)
    finally:
        be.close()
    assert all(c.finish_reason == "stop" and c.n_tokens == 30 for c in gens[0].completions)
    assert all(c.finish_reason == "cancelled" and c.n_tokens < 30 for c in gens[1].completions)


def test_a_stream_that_breaks_after_tokens_is_an_error_not_a_retry() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/tokenize"):
            return httpx.Response(200, json={"tokens": [1, 2]})
        if request.url.path.endswith("/props"):
            return httpx.Response(404)
        return httpx.Response(200, content=chunk(" a") + chunk(" b"), headers={"content-type": "text/event-stream"})

    be = OpenAIHttpBackend("http://test/v1", "m", info=FAKE_MODEL_INFO, transport=httpx.MockTransport(handler),
                           backoff_base=0.0)
    try:
        with pytest.raises(BackendError, match="stream broke after 2 tokens"):
            be.generate([GenerationRequest(prompt=PROMPT, n=1, seed=0)], should_stop=lambda: False)
    finally:
        be.close()


def test_native_chunks_fold_per_choice() -> None:
    from ttscale.backends.openai_stream import apply_native_chunk

    states = {4: StreamState(), 5: StreamState()}
    assert apply_native_chunk(states, 4, {"index": 1, "content": " 4", "tokens": [7], "tokens_predicted": 1}) is None
    assert apply_native_chunk(states, 4, {"index": 0, "content": "x", "tokens": [9], "tokens_predicted": 1}) is None
    assert apply_native_chunk(states, 4, {"index": 1, "content": "2", "tokens": [8], "tokens_predicted": 2}) is None
    done = apply_native_chunk(states, 4, {"index": 1, "content": "", "tokens": [], "stop": True, "stop_type": "eos",
                                          "tokens_predicted": 3, "tokens_evaluated": 9, "timings": {"prompt_n": 9}})
    assert done == 5 and states[5].finish == "stop" and states[4].finish is None
    c = stream_completion(states[5], GenerationRequest(prompt=PROMPT), 5, 9, 0.1)
    assert (c.text, c.n_tokens) == (" 42", 3)  # the end-of-generation token is counted, as the server does
    stopped = stream_completion(states[4], GenerationRequest(prompt=PROMPT), 4, 9, 0.1)
    assert (stopped.finish_reason, stopped.n_tokens) == ("cancelled", 1)
    with pytest.raises(Exception, match="unknown choice"):
        apply_native_chunk(states, 4, {"index": 7, "content": "z"})
