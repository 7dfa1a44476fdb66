"""Once against the real embedded model (SmolLM2-135M): the OpenAI client gets self-consistency answers
whose usage equals what the engine processed."""

from __future__ import annotations

import re
import threading

import httpx
import openai
import pytest

from ttscale.server.config import ServerConfig

from .conftest import run_server


@pytest.mark.model
def test_openai_client_gets_self_consistency_with_honest_usage(smollm) -> None:  # type: ignore[no-untyped-def]
    cfg = ServerConfig(backend=smollm, model_name="smollm2-135m", k=2, default_max_tokens=16, max_max_tokens=32)
    with run_server(cfg) as s:
        c = openai.OpenAI(base_url=f"{s.base_url}/v1", api_key="x", max_retries=0, timeout=120)
        results: list[object] = []

        def ask(q: str) -> None:
            results.append(c.chat.completions.create(
                model="sc2/smollm2-135m", messages=[{"role": "user", "content": q}], max_tokens=16, seed=1))

        # Two concurrent clients: their generations may share one batched backend call.
        threads = [threading.Thread(target=ask, args=(q,)) for q in ("What is 2 + 3?", "What is 4 + 4?")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(results) == 2
        for r in results:
            ext = r.model_extra["ttscale"]  # type: ignore[attr-defined]
            assert ext["strategy"] == "self-consistency" and len(ext["choices"][0]["samples"]) == 2
            assert 0 < r.usage.completion_tokens <= 2 * 16  # type: ignore[attr-defined]
            assert r.usage.completion_tokens == sum(x["generated_tokens"] for x in ext["choices"][0]["samples"])  # type: ignore[attr-defined]
            assert r.usage.total_tokens == ext["usage"]["total_tokens"]  # type: ignore[attr-defined]
            assert isinstance(r.choices[0].message.content, str)  # type: ignore[attr-defined]
        metrics = httpx.get(f"{s.base_url}/metrics").text

        def counter(kind: str) -> float:
            m = re.search(rf'ttscale_backend_tokens_total{{kind="{kind}"}} ([0-9.e+]+)', metrics)
            assert m, metrics
            return float(m.group(1))

        # Every token the engine processed is in some response's usage, and nothing else is.
        assert counter("generated") == sum(r.usage.completion_tokens for r in results)  # type: ignore[attr-defined]
        assert counter("prefilled") == sum(r.usage.prompt_tokens for r in results)  # type: ignore[attr-defined]
        assert sum(r.usage.prompt_tokens for r in results) > 0  # type: ignore[attr-defined]


@pytest.mark.model
def test_speculative_reasoning_with_the_servers_draft_model(smollm) -> None:  # type: ignore[no-untyped-def]
    """A real draft engine opened once (as `serve --draft-model` does): two requests through the OpenAI
    client, the draft's steps scored by the served model's next-token probes."""
    from ttscale.backends.llama_cpp import LlamaCppBackend

    draft = LlamaCppBackend("smollm2-135m", n_ctx=2048, n_seq_max=4)
    try:
        cfg = ServerConfig(backend=smollm, model_name="smollm2-135m", draft_backend=draft, default_max_tokens=48)
        with run_server(cfg) as s:
            c = openai.OpenAI(base_url=f"{s.base_url}/v1", api_key="x", max_retries=0, timeout=300)
            for q in ("What is 2 + 3?", "What is 4 + 4?"):
                r = c.chat.completions.create(
                    model="smollm2-135m", messages=[{"role": "user", "content": q}], max_tokens=48, seed=1,
                    extra_body={"ttscale": {"strategy": "speculative-reasoning", "k": 1,
                                            "options": {"threshold": 5, "max_steps": 3, "step_tokens": 16}}})
                ext = r.model_extra["ttscale"]  # type: ignore[attr-defined]
                assert ext["strategy"] == "speculative-reasoning"
                assert ext["strategy_config"]["draft"] == draft.model_info().name
                assert r.usage.total_tokens == ext["usage"]["total_tokens"] > 0  # type: ignore[attr-defined]
            assert s.service.draft_batcher.calls >= 2  # the draft wrote steps, through its own batcher
    finally:
        draft.close()


@pytest.mark.model
def test_a_served_rag_task_answers_with_retrieved_passages(smollm) -> None:  # type: ignore[no-untyped-def]
    """`serve --task rag` on the real engine: the OpenAI client sends a bare question; the prompt the engine
    prefilled held the retrieved passages (usage says so), and the answer is the task's extraction."""
    from ttscale.registry import make_task

    rag = make_task("rag", shots=0, max_tokens=32, options={"docs": 2}, chat_model=True)
    cfg = ServerConfig(backend=smollm, model_name="smollm2-135m", task=rag, k=2, default_max_tokens=32)
    with run_server(cfg) as s:
        c = openai.OpenAI(base_url=f"{s.base_url}/v1", api_key="x", max_retries=0, timeout=300)
        q = "Who is the performer of the song Hello Love?"
        r = c.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": q}], seed=1)
        ext = r.model_extra["ttscale"]  # type: ignore[attr-defined]
        assert r.usage.prompt_tokens > 100  # type: ignore[attr-defined]  # two passages, not just the question
        assert len(ext["choices"][0]["samples"]) == 2
        for sample in ext["choices"][0]["samples"]:
            assert sample["answer"] is None or isinstance(sample["answer"], str)
