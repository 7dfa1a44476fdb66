"""Retrieval-augmented generation on the real embedded engine, kept short: DRAG's demonstrations prefilled
once across questions, and IterDRAG's calls metered one by one (2 questions, 2 rounds, small caps)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ttscale.cost import Meter
from ttscale.registry import make_strategy, make_task
from ttscale.strategies.base import SolveContext
from ttscale.strategies.iterdrag import IterDRAG
from ttscale.types import Sampling

pytestmark = [pytest.mark.model, pytest.mark.external("qwen2.5-coder-0.5b")]
MODEL = "qwen2.5-coder-0.5b"


@pytest.fixture(scope="module")
def qwen() -> Iterator[object]:
    from ttscale.backends.llama_cpp import LlamaCppBackend

    b = LlamaCppBackend(MODEL, n_ctx=4096, n_seq_max=2)
    yield b
    b.close()


def test_drag_demonstrations_are_prefilled_once_across_questions(qwen) -> None:  # type: ignore[no-untyped-def]
    task = make_task("rag", shots=2, max_tokens=8, options={"docs": 1}, model=MODEL)
    qwen.forget_prefixes()
    counts = []
    for p in task.problems(limit=3):
        ctx = SolveContext(p, qwen, task, Meter(qwen.model_info()), Sampling(seed=0, temperature=0.0))
        r = make_strategy("single").solve(p, ctx)
        counts.append((r.usage.prompt_tokens, r.usage.prefilled_tokens))
    (p0, f0), *later = counts
    assert f0 == p0  # nothing cached yet: the whole prompt
    for prompt, prefilled in later:  # the two demonstrations came from the cache
        assert 0 < prefilled < prompt / 2


def test_iterdrag_calls_are_metered_and_extend_each_other(qwen) -> None:  # type: ignore[no-untyped-def]
    task = make_task("rag", shots=1, max_tokens=24, options={"docs": 1}, model=MODEL)
    qwen.forget_prefixes()
    for n, p in enumerate(task.problems(limit=2)):
        ctx = SolveContext(p, qwen, task, Meter(qwen.model_info()), Sampling(seed=0, temperature=0.0))
        r = IterDRAG(rounds=2).solve(p, ctx)
        calls = r.meta["calls"]
        assert 1 <= len(calls) <= 5 and r.meta["refused"] is None
        assert ctx.meter.usage.requests == len(calls)
        assert ctx.meter.usage.prompt_tokens == sum(c["prompt_tokens"] for c in calls) == r.meta[
            "effective_context_tokens"]
        (sample,) = ctx.samples
        assert sample.prompt_tokens == ctx.meter.usage.prompt_tokens and sample.text
        assert {"em", "f1"} <= set(sample.grade)
        for h in r.meta["hops"]:
            assert len(h["retrieved"]) == 1 and h["question"]
        # each call after the first reads its predecessor's prompt from the cache; the second question
        # reads the demonstration from it too
        first = calls[0]
        if n:
            assert first["prefilled_tokens"] < first["prompt_tokens"] / 2
        for c in calls[1:]:
            assert c["prefilled_tokens"] < c["prompt_tokens"] / 2
