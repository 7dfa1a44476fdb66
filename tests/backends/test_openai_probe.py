"""Next-token probes over HTTP against scripted servers (no model): llama-server's native answer matched
by token id, an OpenAI-style answer matched by token text, -inf outside the top, prefill from the server."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import httpx
import pytest

from ttscale.backends.fake import FAKE_MODEL_INFO
from ttscale.backends.openai_http import OpenAIHttpBackend
from ttscale.backends.openai_probe import parse_native_probe, parse_openai_probe
from ttscale.backends.openai_wire import MalformedResponse
from ttscale.errors import BudgetExceededError, UnsupportedFeatureError
from ttscale.types import ChatMessage, GenerationRequest, Problem, Sample
from ttscale.verifiers.judge import JudgeVerifier

VOCAB = {"Yes": 11, " Yes": 12, "No": 13, " No": 14, "7": 17, "9": 19, "terday": 30}
LOWEST = -3.4028234663852886e38  # llama-server's log(0)


class MockLlamaServer:
    """Answers like llama-server: /props, /tokenize (whitespace words, split off a known prefix), /apply-template,
    and a native /completion whose top log-probs depend on the prompt's last word."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.seen: set[str] = set()

    def tokens(self, text: str) -> list[int]:
        if text.startswith("Yes") and text != "Yes":  # "Yesterday" -> "Yes" + "terday": shares "Yes"'s first token
            return [VOCAB["Yes"], *self.tokens(text[3:])]
        return [VOCAB.get(text, 99)] if text in VOCAB else [100 + i for i, _ in enumerate(text.split())]

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/props":
            return httpx.Response(200, json={"default_generation_settings": {}, "total_slots": 2})
        body = json.loads(request.content or b"{}")
        if path == "/tokenize":
            assert body["add_special"] is False or "prompt" in body
            return httpx.Response(200, json={"tokens": self.tokens(body["content"])})
        if path == "/apply-template":
            return httpx.Response(200, json={"prompt": "".join(f"<{m['role']}>{m['content']}" for m in body["messages"])})
        assert path == "/completion", path
        self.bodies.append(body)
        prompt = body["prompt"]
        n = len(prompt.split())
        cached = prompt in self.seen
        self.seen.add(prompt)
        yes = -0.2 if prompt.rstrip().endswith("good?") else -2.0
        entries = [{"id": 11, "token": "Yes", "logprob": yes}, {"id": 13, "token": "No", "logprob": -0.5},
                   {"id": 12, "token": " Yes", "logprob": -3.0}, {"id": 17, "token": "7", "logprob": LOWEST}]
        return httpx.Response(200, json={
            "content": "Yes", "tokens_evaluated": n, "tokens_predicted": 1, "timings": {"prompt_n": 1 if cached else n},
            "completion_probabilities": [{"id": 11, "token": "Yes", "logprob": yes,
                                          "top_logprobs": entries[: body["n_probs"]]}],
        })


@pytest.fixture
def mock() -> MockLlamaServer:
    return MockLlamaServer()


@pytest.fixture
def llama(mock: MockLlamaServer) -> Iterator[OpenAIHttpBackend]:
    be = OpenAIHttpBackend("http://test/v1", "m", info=FAKE_MODEL_INFO, transport=httpx.MockTransport(mock.handler),
                           backoff_base=0.0)
    yield be
    be.close()


def test_llama_server_declares_probes_and_scores_by_token_id(llama: OpenAIHttpBackend, mock: MockLlamaServer) -> None:
    caps = llama.capabilities
    assert caps.next_token_probes and caps.renders_prompts
    reqs = [GenerationRequest(prompt="is it good?"), GenerationRequest(prompt="is it bad ?"),
            GenerationRequest(prompt="is it good?")]
    probes = llama.next_token_logprobs(reqs, ["Yes", " Yes", "No", "7", "9", "Yesterday"])
    first = probes[0].logprobs
    assert first["Yes"] == -0.2 and first[" Yes"] == -3.0 and first["No"] == -0.5
    assert first["7"] == -math.inf  # the server's log(0)
    assert first["9"] == -math.inf  # not among the returned top tokens
    assert "Yesterday" not in first  # shares "Yes"'s first token: reported once, as the embedded probe does
    assert probes[1].logprobs["Yes"] == -2.0
    # the repeated prompt was sent once and prefilled nothing; counts are the server's
    assert len(mock.bodies) == 2
    assert [(p.prompt_tokens, p.prefilled_tokens) for p in probes] == [(3, 3), (4, 4), (3, 0)]
    assert all(b["n_predict"] == 1 and b["n_probs"] == 100 and b["post_sampling_probs"] is False for b in mock.bodies)
    # a later probe of a cached prompt: the server's prompt_n says what it prefilled
    again = llama.next_token_logprobs([GenerationRequest(prompt="is it good?")], ["Yes"])[0]
    assert (again.prompt_tokens, again.prefilled_tokens) == (3, 1)


def test_chat_probes_are_rendered_by_the_server_and_top_is_an_option(mock: MockLlamaServer) -> None:
    be = OpenAIHttpBackend("http://test/v1", "m", info=FAKE_MODEL_INFO, transport=httpx.MockTransport(mock.handler),
                           probe_top=2)
    try:
        req = GenerationRequest(messages=(ChatMessage("user", "is it good?"),))
        assert be.render(req) == "<user>is it good?"
        probe = be.next_token_logprobs([req], ["Yes", " Yes"])[0]
    finally:
        be.close()
    assert mock.bodies[0]["prompt"] == "<user>is it good?" and mock.bodies[0]["n_probs"] == 2
    assert probe.logprobs == {"Yes": -0.2, " Yes": -math.inf}  # " Yes" is third: cut by probe_top=2


def test_token_cap_covers_probes(mock: MockLlamaServer) -> None:
    be = OpenAIHttpBackend("http://test/v1", "m", info=FAKE_MODEL_INFO, transport=httpx.MockTransport(mock.handler),
                           token_cap=5)
    try:
        be.next_token_logprobs([GenerationRequest(prompt="one two three")], ["Yes"])  # 3 prompt tokens
        with pytest.raises(BudgetExceededError):
            be.next_token_logprobs([GenerationRequest(prompt="four five six")], ["Yes"])
        assert be.client.ledger.spent == 3 and be.client.ledger.reserved == 0
    finally:
        be.close()


class MockOpenAIServer:
    """A plain OpenAI-compatible server (no /props): legacy and chat top log-probs, usage with cached tokens."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/props":
            return httpx.Response(404)
        body = json.loads(request.content)
        self.bodies.append(body)
        usage = {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 6}}
        if request.url.path.endswith("/chat/completions"):
            lp = {"content": [{"token": "Yes", "logprob": -0.1,
                               "top_logprobs": [{"token": "Yes", "logprob": -0.1}, {"token": "No", "logprob": -2.5}]}]}
            choice = {"index": 0, "message": {"role": "assistant", "content": "Yes"}, "logprobs": lp}
        else:
            lp = {"tokens": ["Yes"], "token_logprobs": [-0.3], "top_logprobs": [{"Yes": -0.3, " No": -1.4}]}
            choice = {"index": 0, "text": "Yes", "logprobs": lp, "finish_reason": "length"}
        return httpx.Response(200, json={"choices": [choice], "usage": usage})


def test_other_servers_probe_only_when_asked_and_match_by_text() -> None:
    srv = MockOpenAIServer()
    plain = OpenAIHttpBackend("http://test/v1", "m", info=FAKE_MODEL_INFO, transport=httpx.MockTransport(srv.handler))
    try:
        assert not plain.capabilities.next_token_probes and not plain.capabilities.renders_prompts
        with pytest.raises(UnsupportedFeatureError, match="probes=True"):
            plain.next_token_logprobs([GenerationRequest(prompt="q")], ["Yes"])
        with pytest.raises(UnsupportedFeatureError, match="next-token log-probs"):
            JudgeVerifier(plain)
    finally:
        plain.close()
    be = OpenAIHttpBackend("http://test/v1", "m", info=FAKE_MODEL_INFO, transport=httpx.MockTransport(srv.handler),
                           probes=True)
    try:
        legacy, chat = be.next_token_logprobs(
            [GenerationRequest(prompt="q"), GenerationRequest(messages=(ChatMessage("user", "q"),))],
            ["Yes", " No", "No"])
    finally:
        be.close()
    assert legacy.logprobs == {"Yes": -0.3, " No": -1.4, "No": -math.inf}
    assert chat.logprobs == {"Yes": -0.1, " No": -math.inf, "No": -2.5}
    assert (legacy.prompt_tokens, legacy.prefilled_tokens) == (10, 4)  # cached tokens are not prefilled
    legacy_body, chat_body = srv.bodies
    assert legacy_body["max_tokens"] == 1 and legacy_body["logprobs"] == 20
    assert chat_body["logprobs"] is True and chat_body["top_logprobs"] == 20


def test_judge_reads_p_yes_over_http(llama: OpenAIHttpBackend) -> None:
    judge = JudgeVerifier(llama, chat=False)
    sample = Sample(index=0, text="It is 1.", answer="1", correct=None, n_tokens=3, prompt_tokens=1,
                    prefilled_tokens=1, flops=0.0, finish_reason="stop")
    scores = judge.score(Problem("p", "What?", "1"), [sample])
    assert len(scores.scores) == 1
    p_yes, p_no = math.exp(-2.0) + math.exp(-3.0), math.exp(-0.5)  # "Yes"/" Yes" against "No"
    assert scores.scores[0] == pytest.approx(p_yes / (p_yes + p_no))
    assert scores.usage.prefilled_tokens > 0 and scores.usage.generated_tokens == 0


def test_probe_answers_parse_and_malformed_ones_are_refused() -> None:
    native = parse_native_probe({"tokens_evaluated": 5, "timings": {"prompt_n": 9},
                                 "completion_probabilities": [{"top_logprobs": [{"id": 3, "logprob": -1.0}]}]})
    assert native.top == {3: -1.0} and (native.prompt_tokens, native.prefilled_tokens) == (5, 5)
    with pytest.raises(MalformedResponse):
        parse_native_probe({"tokens_evaluated": 5, "timings": {"prompt_n": 5}, "completion_probabilities": []})
    with pytest.raises(MalformedResponse):
        parse_native_probe({"completion_probabilities": [{"top_logprobs": [{"id": 3, "logprob": -1.0}]}]})
    with pytest.raises(UnsupportedFeatureError):
        parse_openai_probe({"choices": [{"text": "x", "logprobs": None}], "usage": {"prompt_tokens": 3}})
    with pytest.raises(MalformedResponse):
        parse_openai_probe({"choices": [{"text": "x", "logprobs": {"top_logprobs": [{"x": "high"}]}}],
                            "usage": {"prompt_tokens": 3}})
