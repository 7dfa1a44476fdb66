"""Prompt-lookup drafts: the n-gram search, and the embedded engine decoding drafts without changing outputs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ttscale.backends.prompt_lookup import draft_tokens
from ttscale.errors import ConfigError
from ttscale.types import GenerationRequest


def test_the_longest_recurring_suffix_gives_the_draft() -> None:
    # "7 8" recurs (after 1 2 and later); the most recent earlier occurrence wins
    assert draft_tokens([7, 8, 1, 2, 7, 8, 3, 4, 7, 8], ngram=2, max_draft=3) == [3, 4, 7]
    # no 3-gram recurs, a 1-gram does
    assert draft_tokens([4, 1, 2, 3, 9, 5, 3], ngram=3, max_draft=2) == [9, 5]
    assert draft_tokens([1, 2, 3, 4], ngram=3, max_draft=5) == []
    assert draft_tokens([1, 1], ngram=3, max_draft=5) == [1]
    assert draft_tokens([5, 5, 5], ngram=3, max_draft=0) == []


def test_a_match_across_token_boundaries_is_not_a_match() -> None:
    # little-endian bytes of 256 are 00 01 00 00; of 1 then 0: 01 00 00 00 00 00 00 00. A byte search for the
    # 1-gram [1] could hit inside 256; only whole tokens count.
    assert draft_tokens([256, 7, 1], ngram=1, max_draft=2) == []
    assert draft_tokens([1, 7, 256, 1], ngram=1, max_draft=2) == [7, 256]


def test_the_engine_refuses_bad_lookup_settings() -> None:
    from ttscale.backends.llama_cpp import LlamaCppBackend

    with pytest.raises(ConfigError, match="prompt_lookup"):
        LlamaCppBackend("smollm2-135m", prompt_lookup=-1)


TEXT = ("The lighthouse keeper wrote down the ships that passed: the Mary Ellen at dawn, the Northern Star "
        "at noon, and the Albatross after dark. Each entry gave the hour, the heading and the weather.")
COPY = GenerationRequest(prompt=f"Text: {TEXT}\n\nThe same text, copied exactly:\n\nText: The lighthouse",
                         temperature=0.0, max_tokens=48, seed=0)


@pytest.fixture(scope="module")
def looking() -> Iterator[object]:
    from ttscale.backends.llama_cpp import LlamaCppBackend

    b = LlamaCppBackend("smollm2-135m", n_ctx=4096, n_seq_max=16, prompt_lookup=8)
    yield b
    b.close()


def test_drafts_are_kept_where_the_model_copies_and_greedy_output_is_unchanged(smollm: object, looking: object) -> None:
    plain = smollm.generate([COPY])[0]  # type: ignore[attr-defined]
    drafted = looking.generate([COPY])[0]  # type: ignore[attr-defined]
    assert drafted.completions[0].text == plain.completions[0].text
    assert drafted.completions[0].n_tokens == plain.completions[0].n_tokens
    assert drafted.drafted_tokens > 10  # the copy recurs in the prompt
    assert plain.drafted_tokens == 0
    # rejected drafts were computed: they count as prefilled (input) tokens, never as generated ones
    rejected = drafted.prefilled_tokens - plain.prefilled_tokens
    assert 0 <= rejected <= drafted.drafted_tokens
    assert drafted.completions[0].prefilled_tokens >= rejected


def test_sampled_outputs_keep_their_seeds_with_drafts(smollm: object, looking: object) -> None:
    # One sampler draw per output token, drafts or not: each sample's draws follow its seed. The first token
    # comes from the same prefill either way, so it is the same draw of the same distribution; later ones
    # can part where a wider step's rounding moves a draw across a token boundary (2 to 4 of these 4
    # samples stay identical in full, measured), so only the first is held exact.
    req = COPY.with_(temperature=0.7, n=4, seed=11, logprobs=True)
    plain = smollm.generate([req])[0]  # type: ignore[attr-defined]
    drafted = looking.generate([req])[0]  # type: ignore[attr-defined]
    for a, b in zip(plain.completions, drafted.completions, strict=True):
        assert a.token_logprobs and b.token_logprobs
        assert b.token_logprobs[0] == pytest.approx(a.token_logprobs[0], abs=1e-3)  # the same first token
    assert drafted.drafted_tokens > 0
    for c in drafted.completions:
        assert c.token_logprobs is not None and len(c.token_logprobs) == c.n_tokens
        assert c.logprob == pytest.approx(sum(c.token_logprobs))
