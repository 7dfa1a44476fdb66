"""The embedded backend against the real models (small settings)."""

from __future__ import annotations

import pytest

from ttscale.cost import generation_usage
from ttscale.errors import ConfigError, UnsupportedFeatureError
from ttscale.types import ChatMessage, GenerationRequest

pytestmark = pytest.mark.model

PROMPT = "Question: What is 3 times 4?\nAnswer: 12\n\nQuestion: What is 7 times 8?\nAnswer:"


def test_model_info_from_gguf(smollm, gemma) -> None:  # type: ignore[no-untyped-def]
    s = smollm.model_info()
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.head_dim, s.d_model) == (30, 9, 3, 64, 576)
    assert 130e6 < s.n_params < 140e6 and s.has_chat_template
    g = gemma.model_info()
    assert (g.n_layers, g.n_kv_heads, g.head_dim) == (18, 1, 256) and not g.has_chat_template
    assert 260e6 < g.n_params < 280e6


def test_samples_share_one_prefill(smollm) -> None:  # type: ignore[no-untyped-def]
    smollm.forget_prefixes()
    req = GenerationRequest(prompt=PROMPT, n=4, seed=7, max_tokens=12, stop=("\nQuestion",))
    [gen] = smollm.generate([req])
    n_prompt = len(smollm.tokenize(PROMPT))
    assert gen.prompt_tokens == n_prompt
    assert gen.prefilled_tokens == n_prompt  # once, not 4 times
    assert [c.prefilled_tokens for c in gen.completions] == [n_prompt, 0, 0, 0]
    assert len(gen.completions) == 4
    for c in gen.completions:
        assert 1 <= c.n_tokens <= 12
        assert c.token_logprobs is not None and len(c.token_logprobs) == c.n_tokens
        assert c.logprob == pytest.approx(sum(c.token_logprobs)) and c.logprob < 0
        assert "\nQuestion" not in c.text
        assert c.finish_reason in ("stop", "length")
        if c.finish_reason == "length":
            assert c.n_tokens == 12
    assert sorted(c.finish_order for c in gen.completions) == [0, 1, 2, 3]
    u = generation_usage(gen, smollm.model_info())
    assert u.generated_tokens == sum(c.n_tokens for c in gen.completions)
    # the same prompt again: the holder sequence keeps it, only the last token is re-evaluated
    [again] = smollm.generate([req])
    assert again.prefilled_tokens == 1


def test_seeded_and_greedy(smollm) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(prompt=PROMPT, n=2, seed=11, max_tokens=8)
    a = [c.text for c in smollm.generate([req])[0].completions]
    b = [c.text for c in smollm.generate([req])[0].completions]
    assert a == b
    greedy = smollm.generate([req.with_(temperature=0.0, n=3)])[0]
    assert len({c.text for c in greedy.completions}) == 1


def test_two_prompts_in_one_call(smollm) -> None:  # type: ignore[no-untyped-def]
    smollm.forget_prefixes()
    r1 = GenerationRequest(prompt=PROMPT, n=2, seed=1, max_tokens=6)
    r2 = GenerationRequest(prompt=PROMPT.replace("7 times 8", "2 times 9"), n=3, seed=1, max_tokens=6)
    g1, g2 = smollm.generate([r1, r2])
    assert len(g1.completions) == 2 and len(g2.completions) == 3
    n1, n2 = len(smollm.tokenize(r1.prompt)), len(smollm.tokenize(r2.prompt))  # type: ignore[arg-type]
    # the shared prefix is prefilled once in total, each suffix once
    assert g1.prefilled_tokens + g2.prefilled_tokens < n1 + n2
    assert g1.prefilled_tokens + g2.prefilled_tokens >= max(n1, n2)


def test_chat_template_and_cancellation(smollm) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(messages=(ChatMessage("user", "Say hi."),), n=2, seed=3, max_tokens=30)
    assert "<|im_start|>user" in smollm.render(req)
    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    [gen] = smollm.generate([req], should_stop=stop_after_three)
    assert all(c.n_tokens <= 4 for c in gen.completions)
    assert any(c.finish_reason == "cancelled" for c in gen.completions) or all(
        c.finish_reason == "stop" for c in gen.completions
    )


def test_one_request_cancelled_inside_a_shared_call_while_the_other_goes_on(smollm) -> None:  # type: ignore[no-untyped-def]
    count = GenerationRequest(prompt="Count from 1 to 50: 1, 2, 3,", n=2, temperature=0, max_tokens=24)
    other = GenerationRequest(prompt="List the numbers from 10 to 60: 10, 11, 12,", temperature=0, max_tokens=24)
    polls = {"n": 0}

    def cancelled(i: int) -> bool:
        if i == 0:
            polls["n"] += 1
        return i == 0 and polls["n"] > 3  # request 0 is dropped after its third decode step

    g0, g1 = smollm.generate([count, other], cancelled=cancelled)
    assert [c.finish_reason for c in g0.completions] == ["cancelled", "cancelled"]
    assert all(c.n_tokens <= 4 for c in g0.completions)
    (c1,) = g1.completions
    assert c1.finish_reason == "length" and c1.n_tokens == 24  # the batch-mate ran to its end
    assert "13" in c1.text


def test_prefixes_of_alternating_calls_are_kept_and_not_prefilled_again(smollm) -> None:  # type: ignore[no-untyped-def]
    smollm.forget_prefixes()
    head_a = "".join(f"Q: What is {i} plus {i + 1}?\nA: {2 * i + 1}\n\n" for i in range(6))
    head_b = "".join(f"Q: What is {i + 2} times {i}?\nA: {(i + 2) * i}\n\n" for i in range(6))

    def call(head: str, q: str) -> int:
        reqs = [GenerationRequest(prompt=head + f"Q: {q} {j}?\nA:", n=2, seed=j, max_tokens=3) for j in (1, 2)]
        return sum(g.prefilled_tokens for g in smollm.generate(reqs))

    first_a, first_b = call(head_a, "What is 7 plus"), call(head_b, "What is 5 times")
    again_a, again_b = call(head_a, "What is 8 plus"), call(head_b, "What is 6 times")
    n_head = len(smollm.tokenize(head_a))
    assert first_a > n_head and first_b > len(smollm.tokenize(head_b))
    # the second visit to each header prefills only the two questions' own tokens
    assert again_a < first_a - n_head // 2 and again_b < first_b - n_head // 2
    # and the outputs are the same as from a cold cache (greedy)
    greedy = GenerationRequest(prompt=head_a + "Q: What is 9 plus 10?\nA:", temperature=0, max_tokens=4)
    warm = smollm.generate([greedy])[0].completions[0].text
    smollm.forget_prefixes()
    cold = smollm.generate([greedy])[0]
    assert cold.completions[0].text == warm and cold.prefilled_tokens == cold.prompt_tokens


def test_base_model_rejects_chat(gemma) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(messages=(ChatMessage("user", "hi"),))
    with pytest.raises(UnsupportedFeatureError, match="no chat template"):
        gemma.generate([req])
    [gen] = gemma.generate([GenerationRequest(prompt=PROMPT, n=2, seed=1, max_tokens=4)])
    assert len(gen.completions) == 2


def test_too_long_request_refused(smollm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="exceeds the context"):
        smollm.generate([GenerationRequest(prompt=PROMPT, max_tokens=smollm.n_ctx)])


def test_many_samples_split_into_waves(smollm) -> None:  # type: ignore[no-untyped-def]
    # more samples than sequences: the backend runs several jobs and still returns all of them
    req = GenerationRequest(prompt=PROMPT, n=smollm.n_seq_max + 3, seed=2, max_tokens=3)
    [gen] = smollm.generate([req])
    assert len(gen.completions) == smollm.n_seq_max + 3
    assert [c.index for c in gen.completions] == list(range(smollm.n_seq_max + 3))
