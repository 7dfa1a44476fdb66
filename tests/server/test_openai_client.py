"""End to end: the official ``openai`` client against ``ttscale serve`` (uvicorn on 127.0.0.1, fake backend)."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import openai
import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.types import ChatMessage, GenerationRequest

MSG = [{"role": "user", "content": "What is 6 times 7?"}]
FILLER = 10  # FakeBackend default: 10 filler words + "The answer is N." = 14 tokens per sample


def client(base_url: str, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)  # type: ignore[arg-type]


def prompt_words(backend: FakeBackend) -> int:
    return backend.count_prompt_tokens(GenerationRequest(messages=(ChatMessage("user", MSG[0]["content"]),)))


def test_self_consistency_via_extra_body_counts_every_token(fake_server, scripted) -> None:
    c = client(fake_server.base_url)
    r = c.chat.completions.create(model="fake", messages=MSG, seed=3,
                                  extra_body={"ttscale": {"strategy": "self-consistency", "k": 8}})
    ext = r.model_extra["ttscale"]
    samples = ext["choices"][0]["samples"]
    assert ext["strategy"] == "self-consistency" and ext["strategy_source"] == "body"
    assert len(samples) == 8
    # Differential: the answer is the plain majority of the sampled answers.
    majority, _ = Counter(s["answer"] for s in samples).most_common(1)[0]
    assert ext["choices"][0]["answer"] == majority
    assert sum(ext["choices"][0]["votes"].values()) == 8
    assert r.choices[0].message.content.endswith(f"The answer is {majority}.")
    # usage is exactly what the engine spent: one prefill of the prompt, 8 samples of 14 tokens.
    assert r.usage.completion_tokens == 8 * (FILLER + 4)
    assert r.usage.prompt_tokens == prompt_words(scripted)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert ext["usage"]["total_tokens"] == r.usage.total_tokens
    assert [h.n for h in scripted.history] == [8]


def test_model_prefix_and_headers_choose_the_strategy(fake_server, scripted) -> None:
    c = client(fake_server.base_url)
    r = c.chat.completions.create(model="sc3/fake", messages=MSG)
    assert r.model_extra["ttscale"]["strategy_config"] == {"name": "self-consistency", "k": 3}
    assert r.model_extra["ttscale"]["strategy_source"] == "model"
    r = c.chat.completions.create(model="fake", messages=MSG, extra_headers={"X-Ttscale-Strategy": "single"})
    assert r.model_extra["ttscale"]["strategy"] == "single"
    assert r.usage.completion_tokens == FILLER + 4
    # body beats header beats model prefix
    r = c.chat.completions.create(model="sc3/fake", messages=MSG, extra_headers={"X-Ttscale-K": "5"},
                                  extra_body={"ttscale": {"k": 2}})
    assert len(r.model_extra["ttscale"]["choices"][0]["samples"]) == 2
    r = c.chat.completions.create(model="sc3/fake", messages=MSG, extra_headers={"X-Ttscale-K": "5"})
    assert len(r.model_extra["ttscale"]["choices"][0]["samples"]) == 5
    # server default: self-consistency with k=4
    r = c.chat.completions.create(model="fake", messages=MSG)
    assert r.model_extra["ttscale"]["strategy_source"] == "default"
    assert len(r.model_extra["ttscale"]["choices"][0]["samples"]) == 4


def test_budget_caps_the_tokens_spent(fake_server) -> None:
    c = client(fake_server.base_url)
    budget = 60  # prompt (~9 tokens) + 3 samples of 14 fit; 8 do not
    r = c.chat.completions.create(model="fake", messages=MSG, max_tokens=14,
                                  extra_headers={"X-Ttscale-Budget-Tokens": str(budget)},
                                  extra_body={"ttscale": {"k": 8}})
    ext = r.model_extra["ttscale"]
    assert r.usage.total_tokens <= budget
    assert 1 <= len(ext["choices"][0]["samples"]) < 8
    assert ext["choices"][0]["budget_exhausted"] is True


def test_n_returns_independent_choices_with_summed_usage(fake_server) -> None:
    c = client(fake_server.base_url)
    r = c.chat.completions.create(model="sc2/fake", messages=MSG, n=3)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    assert r.usage.completion_tokens == 3 * 2 * (FILLER + 4)
    assert len(r.model_extra["ttscale"]["choices"]) == 3


def test_best_of_n_with_a_verifier(fake_server) -> None:
    c = client(fake_server.base_url)
    r = c.chat.completions.create(model="fake", messages=MSG,
                                  extra_body={"ttscale": {"strategy": "best-of-n", "k": 4, "verifier": "certainty"}})
    ext = r.model_extra["ttscale"]
    assert ext["verifier"] == "certainty"
    assert all("certainty" in s["scores"] for s in ext["choices"][0]["samples"])
    assert ext["usage"]["verifier"]["generated_tokens"] == 0  # self-certainty costs nothing extra


def test_text_completions_and_models(fake_server) -> None:
    c = client(fake_server.base_url)
    assert [m.id for m in c.models.list()] == ["fake"]
    r = c.completions.create(model="sc2/fake", prompt="Q: 6*7?\nA:", max_tokens=32)
    assert r.object == "text_completion"
    assert r.choices[0].text.endswith(".")
    assert r.usage.completion_tokens == 2 * (FILLER + 4)


def test_streaming_matches_the_non_streamed_answer(fake_server) -> None:
    c = client(fake_server.base_url)
    plain = c.chat.completions.create(model="sc4/fake", messages=MSG, seed=11)
    chunks = list(c.chat.completions.create(model="sc4/fake", messages=MSG, seed=11, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == plain.choices[0].message.content
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == plain.usage.total_tokens
    assert chunks[-1].model_extra["ttscale"]["choices"][0]["answer"] == plain.model_extra["ttscale"]["choices"][0]["answer"]


def _parse_sse(raw: str) -> tuple[list[str], list[str]]:
    """(comments, data payloads) of an SSE stream, per the WHATWG event-stream rules."""
    comments, datas = [], []
    for block in raw.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln]
        comments += [ln[1:].strip() for ln in lines if ln.startswith(":")]
        data = [ln[len("data:"):].lstrip() for ln in lines if ln.startswith("data:")]
        if data:
            datas.append("\n".join(data))
    return comments, datas


def test_raw_sse_has_progress_comments_chunks_and_done(fake_server) -> None:
    body = {"model": "fake", "prompt": "Q: 6*7?\nA:", "stream": True, "ttscale": {"k": 3}}
    with httpx.Client(timeout=10) as h:
        with h.stream("POST", f"{fake_server.base_url}/v1/completions", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            raw = r.read().decode()
    comments, datas = _parse_sse(raw)
    assert comments and all(c.startswith("ttscale {") for c in comments)
    assert json.loads(comments[0].removeprefix("ttscale "))["event"] == "started"
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert all(ch["object"] == "text_completion" for ch in chunks)
    assert "ttscale" in chunks[-1] and chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_client_errors_arrive_as_openai_errors(fake_server) -> None:
    c = client(fake_server.base_url)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="fake", messages=MSG, extra_body={"ttscale": {"strategy": "nope"}})
    assert e.value.body["param"] == "ttscale.strategy"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-4o", messages=MSG)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="fake", messages=MSG, n=99)
