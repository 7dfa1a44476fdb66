"""top-k / min-p: off by default (the model's own distribution), honoured when asked for."""

from __future__ import annotations

import pytest

from ttscale.backends.openai_wire import native_body, request_body
from ttscale.errors import ConfigError
from ttscale.run.executor import sampling_record
from ttscale.types import GenerationRequest, Sampling

PROMPT = "Question: What is 3 times 4?\nAnswer:"


def test_defaults_are_no_truncation_and_bad_values_are_refused() -> None:
    r = GenerationRequest(prompt=PROMPT)
    assert (r.top_k, r.min_p) == (0, 0.0)
    with pytest.raises(ConfigError, match="top_k"):
        GenerationRequest(prompt=PROMPT, top_k=-1)
    with pytest.raises(ConfigError, match="min_p"):
        GenerationRequest(prompt=PROMPT, min_p=1.0)
    with pytest.raises(ConfigError):
        Sampling(top_k=-2)


def test_run_records_omit_the_defaults_so_older_runs_resume() -> None:
    assert "top_k" not in sampling_record(Sampling()) and "min_p" not in sampling_record(Sampling())
    assert sampling_record(Sampling(top_k=40, min_p=0.05))["top_k"] == 40


def test_wire_bodies() -> None:
    plain = request_body(GenerationRequest(prompt=PROMPT), "m", 1, 0, False)
    assert "top_k" not in plain and "min_p" not in plain  # not OpenAI fields: hosted APIs may refuse them
    asked = request_body(GenerationRequest(prompt=PROMPT, top_k=40, min_p=0.05), "m", 1, 0, False)
    assert (asked["top_k"], asked["min_p"]) == (40, 0.05)
    native = native_body(PROMPT, GenerationRequest(prompt=PROMPT), 2, 0, False)
    assert (native["top_k"], native["min_p"]) == (0, 0.0)  # llama-server truncates unless told not to


@pytest.mark.model
def test_top_k_1_is_greedy_on_the_embedded_engine(smollm: object) -> None:
    greedy = smollm.generate([GenerationRequest(prompt=PROMPT, n=1, temperature=0.0, max_tokens=12)])[0]  # type: ignore[attr-defined]
    top1 = smollm.generate([GenerationRequest(prompt=PROMPT, n=4, temperature=1.5, top_k=1, max_tokens=12,  # type: ignore[attr-defined]
                                              seed=3)])[0]
    assert {c.text for c in top1.completions} == {greedy.completions[0].text}
    wide = smollm.generate([GenerationRequest(prompt=PROMPT, n=4, temperature=1.5, max_tokens=12, seed=3)])[0]  # type: ignore[attr-defined]
    assert len({c.text for c in wide.completions}) > 1
