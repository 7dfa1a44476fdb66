"""`serve --task rag`: each request is a question of the task, which makes its prompt (retrieved passages,
demonstrations) and drives IterDRAG."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ttscale.backends.fake import FakeBackend, _render
from ttscale.registry import make_task
from ttscale.server.app import create_app
from ttscale.server.config import ServerConfig
from ttscale.tasks.rag import RagTask

QUESTION = "Who founded the company that makes the iPhone?"


@pytest.fixture(scope="module")
def rag() -> RagTask:
    t = make_task("rag", shots=1, max_tokens=24, options={"docs": 3})
    assert isinstance(t, RagTask)
    return t


@pytest.fixture
def served(rag: RagTask) -> Iterator[tuple[TestClient, FakeBackend]]:
    backend = FakeBackend(answers=lambda prompt: {"Steve Jobs": 0.8, "Tim Cook": 0.2})
    with TestClient(create_app(ServerConfig(backend=backend, model_name="fake", task=rag, k=4))) as api:
        yield api, backend


def test_the_task_makes_the_prompt_from_the_last_user_message(served: tuple[TestClient, FakeBackend],
                                                              rag: RagTask) -> None:
    api, backend = served
    r = api.post("/v1/chat/completions", json={"model": "fake", "messages": [
        {"role": "system", "content": "ignored: the task writes the prompt"},
        {"role": "user", "content": QUESTION}], "max_tokens": 32})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ttscale"]["choices"][0]["answer"] == "Steve Jobs"  # the task's extraction ("The answer is ...")
    prompt = _render(backend.history[-1])
    passages = rag.retriever.retrieve([QUESTION], 3)[0]
    for i in passages:  # the question's top passages, and one demonstration, are in the prompt
        assert rag.corpus[i].text[:60] in prompt
    assert prompt.count("Question:") == 2 and prompt.rstrip().endswith(f"Question: {QUESTION}\n<assistant>".rstrip())
    # usage counts the real prompt (passages and demonstration), far longer than the client's message
    assert body["usage"]["prompt_tokens"] > 10 * len(QUESTION.split())


def test_iterdrag_through_the_server(served: tuple[TestClient, FakeBackend]) -> None:
    api, backend = served
    # seeded: the scripted model says "Tim Cook" one time in five
    r = api.post("/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": QUESTION}],
                                              "seed": 3, "ttscale": {"strategy": "iterdrag", "options": {"rounds": 1}}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ttscale"]["strategy"] == "iterdrag" and body["ttscale"]["choices"][0]["answer"] == "Steve Jobs"
    first = backend.history[-1]  # a follow-up call: the model answered at once, so no round was needed
    assert first.stop == ("Intermediate answer",) and "Follow up" in _render(first)
    assert "So the final answer is" in _render(first)  # the demonstration, worked through its gold hops


def test_without_a_served_task_iterdrag_is_refused() -> None:
    with TestClient(create_app(ServerConfig(backend=FakeBackend(), model_name="fake"))) as api:
        r = api.post("/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "hi"}],
                                                  "ttscale": {"strategy": "iterdrag"}})
    assert r.status_code == 400 and "retriev" in r.json()["error"]["message"].lower()
