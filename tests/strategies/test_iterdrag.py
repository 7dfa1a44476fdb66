"""IterDRAG on the RAG task with a scripted backend: rounds, retrieval per follow-up, metering, refusals."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ttscale.backends.fake import FAKE_MODEL_INFO, FakeBackend
from ttscale.cost import Budget, Meter
from ttscale.errors import ConfigError
from ttscale.registry import make_strategy, make_task
from ttscale.strategies.base import SolveContext
from ttscale.strategies.iterdrag import IterativeRetrieval, IterDRAG
from ttscale.tasks.rag import CONTINUE, FINAL, RagTask, gold_sub_question
from ttscale.tasks.retrieval import Hop
from ttscale.types import Completion, GenerationRequest, Problem, Sampling

from .helpers import one_problem_task


def _last_user(prompt: str) -> str:
    return prompt.rsplit("<user> ", 1)[1].removesuffix("\n<assistant>")


@dataclass
class ScriptedRag(FakeBackend):
    """Writes follow-ups while it may (``follow_ups`` of them), answers each, then the final answer ``final``.
    Token counts are the fake engine's (whitespace words)."""

    follow_ups: int = 2
    final: str = "Paris"

    def _sample(self, prompt: str, request: GenerationRequest, i: int, seed: int) -> Completion:
        last = _last_user(prompt)
        mine = prompt.rsplit("Question: ", 1)[1].count("<assistant> Follow up: ")  # this question's follow-ups
        if last.startswith(FINAL) or last.endswith(FINAL):
            text = f"So the final answer is: {self.final}."
        elif "Answer the follow-up question:" in last:
            text = f"Intermediate answer: answer{mine}\nFollow up: ignored"
        else:  # a follow-up call (after the question, or after CONTINUE)
            text = (f"Follow up: Where is sub-question {mine + 1} located?\nIntermediate answer: made up"
                    if mine < self.follow_ups else f"So the final answer is: {self.final}.")
        for s in request.stop:
            text = text.split(s)[0]
        text = text.strip()
        n = len(text.split())
        return Completion(text=text, n_tokens=n, finish_reason="stop", prompt_tokens=len(prompt.split()), index=i,
                          logprob=-0.1 * n, token_logprobs=[-0.1] * n)


@pytest.fixture(scope="module")
def task() -> RagTask:
    t = make_task("rag", shots=2, max_tokens=24, options={"docs": 2})
    assert isinstance(t, RagTask)
    return t


def _solve(task: RagTask, backend: FakeBackend, rounds: int = 2, budget: Budget | None = None,
           problem: Problem | None = None) -> tuple[object, SolveContext]:
    p = problem or task.problems(limit=1)[0]
    ctx = SolveContext(p, backend, task, Meter(backend.model_info(), budget or Budget()), Sampling(seed=0))
    return IterDRAG(rounds=rounds).solve(p, ctx), ctx


def _rendered(backend: FakeBackend) -> list[str]:
    from ttscale.backends.fake import _render

    return [_render(r) for r in backend.history]


def test_the_rag_task_satisfies_the_protocol_and_the_strategy_is_registered(task: RagTask) -> None:
    assert isinstance(task, IterativeRetrieval)
    s = make_strategy("iterdrag", rounds=3)
    assert isinstance(s, IterDRAG) and s.rounds == 3
    with pytest.raises(ConfigError, match="rounds"):
        make_strategy("iterdrag", rounds=0)


def test_rounds_retrieve_for_each_follow_up_and_every_call_is_metered(task: RagTask) -> None:
    be = ScriptedRag(follow_ups=5, final="Paris")
    res, ctx = _solve(task, be, rounds=2)
    # two rounds (follow-up + answer each), then the final answer: five calls
    assert [c["step"] for c in res.meta["calls"]] == ["follow_up", "answer"] * 2 + ["final"]  # type: ignore[attr-defined]
    hops = res.meta["hops"]  # type: ignore[attr-defined]
    assert [h["question"] for h in hops] == ["Where is sub-question 1 located?", "Where is sub-question 2 located?"]
    for h in hops:  # each follow-up's own top-k passages, stored with the result
        assert h["retrieved"] == task.retrieve_passages(h["question"]) and len(h["retrieved"]) == 2
    assert [h["answer"] for h in hops] == ["answer1", "answer2"]  # the label and the rest of the text dropped
    # the meter holds every call: prompt tokens summed is the effective context length
    prompts = [be.count_prompt_tokens(r) for r in be.history]
    u = ctx.meter.usage
    assert u.requests == 5 and u.prompt_tokens == sum(prompts) == res.meta["effective_context_tokens"]  # type: ignore[attr-defined]
    assert u.prefilled_tokens == sum(prompts)  # the fake engine caches nothing
    (sample,) = ctx.samples
    assert sample.prompt_tokens == u.prompt_tokens and sample.n_tokens == u.generated_tokens
    assert sample.usage.total_tokens == u.total_tokens and sample.flops == pytest.approx(u.flops)
    assert sample.token_logprobs is not None and len(sample.token_logprobs) == sample.n_tokens
    assert sample.text.startswith("Follow up: Where is sub-question 1 located?\nIntermediate answer: answer1")
    assert res.answer == "Paris" and sample.answer == "Paris" and {"em", "f1"} <= set(sample.grade)  # type: ignore[attr-defined]
    assert res.meta["refused"] is None  # type: ignore[attr-defined]


def test_each_call_extends_the_previous_prompt_and_the_demonstrations_are_shared(task: RagTask) -> None:
    be = ScriptedRag(follow_ups=5)
    a, b = task.problems(limit=2)
    _solve(task, be, rounds=2, problem=a)
    first = _rendered(be)
    _solve(task, be, rounds=2, problem=b)
    second = _rendered(be)[len(first):]
    for prev, nxt in zip(first[:-1], first[1:], strict=True):  # what an engine with prefix caching reuses
        assert nxt.startswith(prev.removesuffix("\n<assistant>"))
    head = first[0].split(f"Question: {a.prompt}")[0]
    demos = head.rsplit("<user> ", 1)[0]
    assert second[0].startswith(demos) and demos.count("<assistant> So the final answer is:") == 2


def test_demonstrations_work_through_the_gold_decompositions(task: RagTask) -> None:
    req = task.iter_request(task.problems(limit=1)[0], [], "follow_up")
    assert req.messages is not None
    demo_q = task._split[0][0]
    answers: list[str] = []
    for sub, ans in demo_q.decomposition:
        sq = gold_sub_question(sub, answers)
        answers.append(ans)
        assert "#" not in sq
        i = next(n for n, m in enumerate(req.messages) if m.content == f"Follow up: {sq}")
        assert req.messages[i + 1].role == "user" and req.messages[i + 1].content.count("Document [") == 2
        assert req.messages[i + 2].content == f"Intermediate answer: {ans}"
    assert any(m.content == f"So the final answer is: {demo_q.answers[0]}." for m in req.messages)
    assert sum(m.content == CONTINUE for m in req.messages) >= 2


def test_the_model_may_answer_without_a_round(task: RagTask) -> None:
    be = ScriptedRag(follow_ups=0, final="Rome")
    res, ctx = _solve(task, be, rounds=3)
    assert len(be.history) == 1 and res.answer == "Rome" and res.meta["hops"] == []  # type: ignore[attr-defined]
    assert ctx.samples[0].text == "So the final answer is: Rome."


def test_a_round_past_the_budget_is_refused_before_it_runs_with_the_numbers(task: RagTask) -> None:
    free, _ = _solve(task, ScriptedRag(follow_ups=5), rounds=3)
    full = free.usage.total_tokens  # type: ignore[attr-defined]
    seen_refusal = False
    for cap in sorted({full // 6, full // 3, full // 2, full, 2 * full, 4 * full, 8 * full}):
        be = ScriptedRag(follow_ups=5)
        res, ctx = _solve(task, be, rounds=3, budget=Budget(tokens=cap))
        assert ctx.meter.usage.total_tokens <= cap
        refused = res.meta["refused"]  # type: ignore[attr-defined]
        if refused:
            seen_refusal = True
            assert "budget" in refused and f"token budget {cap}" in refused and ctx.budget_exhausted
            assert any(ch.isdigit() for ch in refused.split("up to")[1])
        if res.meta.get("calls"):  # type: ignore[attr-defined]
            assert res.meta["calls"][-1]["step"] in ("final", "answer", "follow_up")  # type: ignore[attr-defined]
    assert seen_refusal
    none, ctx = _solve(task, ScriptedRag(), rounds=2, budget=Budget(tokens=10))
    assert none.answer is None and ctx.samples == [] and ctx.meter.usage.total_tokens == 0 and ctx.budget_exhausted  # type: ignore[attr-defined]


def test_the_model_context_bounds_the_rounds_and_a_first_call_too_long_is_an_error(task: RagTask) -> None:
    probe = ScriptedRag(follow_ups=5)
    _solve(task, probe, rounds=2)
    sizes = [probe.count_prompt_tokens(r) for r in probe.history]
    # room for round 1 and its final answer, not for round 2's follow-up and a final after it
    room = sizes[1] + 3 * 24 + 60
    assert room < sizes[2] + 24 + 200
    be = ScriptedRag(follow_ups=5, info=replace(FAKE_MODEL_INFO, n_ctx_train=room))
    res, _ = _solve(task, be, rounds=3)
    refused = res.meta["refused"]  # type: ignore[attr-defined]
    assert refused and "round 2" in refused and f"context of {room} tokens" in refused
    assert res.answer == "Paris" and res.meta["calls"][-1]["step"] == "final"  # type: ignore[attr-defined]
    assert all(be.count_prompt_tokens(r) + 24 < room for r in be.history)
    tiny = ScriptedRag(info=replace(FAKE_MODEL_INFO, n_ctx_train=sizes[0] // 2))
    with pytest.raises(ConfigError, match=rf"context of {sizes[0] // 2} tokens"):
        _solve(task, tiny, rounds=2)
    assert tiny.history == []  # refused before anything was generated


def test_a_task_without_retrieval_is_refused(tmp_path: Path) -> None:
    t = one_problem_task(tmp_path, style="chat")
    p = t.problems()[0]
    ctx = SolveContext(p, FakeBackend(), t, Meter(FAKE_MODEL_INFO))
    with pytest.raises(ConfigError, match="retrieval task"):
        IterDRAG().solve(p, ctx)


def test_generic_questions_without_decompositions_run_zero_shot(tmp_path: Path) -> None:
    rng = random.Random(0)
    qs = tmp_path / "q.jsonl"
    qs.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Where was person{i} born?",
                                      "answers": [f"town{i}"]}) + "\n" for i in range(12)))
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "title": f"person{i}",
                                          "text": f"person{i} was born in town{i} {rng.random()}"}) + "\n"
                              for i in range(12)))
    zero = make_task("rag", data=str(qs), options={"corpus": str(corpus), "docs": 1})
    assert isinstance(zero, RagTask)
    res, _ = _solve(zero, ScriptedRag(follow_ups=1, final="town"), rounds=2)
    assert res.meta["hops"][0]["retrieved"] and res.answer == "town"  # type: ignore[attr-defined]
    some = make_task("rag", data=str(qs), shots=1, options={"corpus": str(corpus), "docs": 1})
    assert isinstance(some, RagTask)
    with pytest.raises(ConfigError, match="gold decompositions"):
        some.iter_request(some.problems(limit=1)[0], [], "follow_up")


def test_iter_request_checks_its_hops(task: RagTask) -> None:
    p = task.problems(limit=1)[0]
    with pytest.raises(ConfigError):
        task.iter_request(p, [], "answer")
    with pytest.raises(ConfigError):
        task.iter_request(p, [Hop("q?", ())], "final")
    done = task.iter_request(p, [Hop("q?", (), "a")], "final")
    assert done.messages is not None and done.messages[-1].content == FINAL
    assert task.parse_follow_up("So the final answer is: 3. Follow up: no") is None
    assert task.parse_follow_up("Follow up: Who wrote it?\nIntermediate answer: x") == "Who wrote it?"
