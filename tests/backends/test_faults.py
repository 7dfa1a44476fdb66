"""Fault injection: a real flaky server on loopback; sweeps complete, samples are stored once, budgets hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttscale.backends.fake import FAKE_MODEL_INFO
from ttscale.backends.openai_http import OpenAIHttpBackend
from ttscale.cost import Budget
from ttscale.errors import BackendError
from ttscale.registry import make_strategy, make_task
from ttscale.run import Executor, Solve, execute
from ttscale.store import Store
from ttscale.testing.openai_fake_server import FAULTS, FakeOpenAIServer
from ttscale.types import GenerationRequest, Usage

PROMPT = "Question: 2 plus 2?\nAnswer:"


def flaky_backend(srv: FakeOpenAIServer, **kw: object) -> OpenAIHttpBackend:
    # timeout 1 s: an honest answer on a loaded 2-core machine can still time out now and then; the
    # assertions below allow extra timeouts, never any other extra failure.
    opts: dict[str, object] = {"timeout": 1.0, "backoff_base": 0.01, "backoff_max": 0.05, "max_retries": 4,
                               "jitter_seed": 0} | kw
    return OpenAIHttpBackend(srv.base_url, "fake", info=FAKE_MODEL_INFO, **opts)  # type: ignore[arg-type]


def expected_kind(fault: str) -> str:
    return {"drop": "connection", "truncated": "connection", "500": "http_500", "429": "http_429",
            "stall": "timeout", "invalid": "invalid_response", "shape": "invalid_response"}[fault]


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_retried_and_counted_once(fault: str) -> None:
    with FakeOpenAIServer(faults=(fault,), faulty_attempts=2, stall_s=2.5) as srv:
        be = flaky_backend(srv)
        try:
            gen = be.generate([GenerationRequest(prompt=PROMPT, n=3, seed=4, max_tokens=16)])[0]
            stats = be.stats
        finally:
            be.close()
    assert srv.injected[fault] == 2
    assert stats.failures[expected_kind(fault)] >= 2
    assert sum(n for kind, n in stats.failures.items() if kind != "timeout") == (0 if fault == "stall" else 2)
    assert stats.retries == sum(stats.failures.values())
    assert len(gen.completions) == 3
    # only the one accepted response is counted, never the failed attempts
    assert gen.generated_tokens == srv.delivered_completion_tokens
    assert gen.prefilled_tokens == srv.delivered_prompt_tokens


def test_retries_exhausted_is_a_clear_error() -> None:
    with FakeOpenAIServer(faults=("500",), faulty_attempts=10) as srv:
        be = flaky_backend(srv, max_retries=2)
        try:
            with pytest.raises(BackendError, match=r"gave up after 3 attempts \(last failure: http_500"):
                be.generate([GenerationRequest(prompt=PROMPT)])
        finally:
            be.close()
    assert srv.requests == 3


def _task(tmp_path: Path, n: int):  # type: ignore[no-untyped-def]
    data = tmp_path / "p.jsonl"
    data.write_text("".join(f'{{"id": "p{i}", "prompt": "what is {i} + {42 - i}?", "answer": "42"}}\n'
                            for i in range(n)))
    return make_task("jsonl", data=str(data), style="completion", max_tokens=16)


def test_concurrent_sweep_through_every_fault(tmp_path: Path) -> None:
    n_problems, k, cap = 12, 6, 50
    with FakeOpenAIServer(faults=FAULTS, faulty_attempts=2, stall_s=2.0) as srv:
        be = flaky_backend(srv, concurrency=6)
        st = Store(tmp_path / "s.db")
        try:
            summary = execute(Solve(_task(tmp_path, n_problems), make_strategy("self-consistency", k=k), budget=Budget(tokens=cap)), store=st, run_id="flaky", executor=Executor(mode="threads", workers=6, backend=be))
            rows = st.samples("flaky")
            stats = be.stats
        finally:
            st.close()
            be.close()
    assert not summary.failures and summary.finished == n_problems
    keys = [(pid, s.index) for pid, s in rows]
    assert len(keys) == len(set(keys)), "a sample was stored twice"
    per_problem = {pid: sorted(s.index for p, s in rows if p == pid) for pid, _ in rows}
    assert all(idx == list(range(len(idx))) for idx in per_problem.values()), "a sample index is missing"
    # every delivered token is stored exactly once; no failed attempt was counted
    assert sum(s.n_tokens for _, s in rows) == srv.delivered_completion_tokens
    assert sum(s.prefilled_tokens for _, s in rows) == srv.delivered_prompt_tokens
    # the budget is a hard cap per problem even with 6 problems in flight
    assert all(Usage.from_dict(r["usage"]).total_tokens <= cap for r in summary.results)
    assert any(len(idx) < k for idx in per_problem.values()), "the cap should bind for some problems"
    # failures are reported with counts by kind, and match what the server injected
    by_kind: dict[str, int] = {}
    for fault, n in srv.injected.items():
        by_kind[expected_kind(fault)] = by_kind.get(expected_kind(fault), 0) + n
    assert set(by_kind) == set(stats.failures) and sum(by_kind.values()) > 0
    for kind, n in by_kind.items():  # exact, except that a slow honest answer may also time out
        assert stats.failures[kind] == n if kind != "timeout" else stats.failures[kind] >= n
    assert stats.retries == sum(stats.failures.values())


def test_failed_problem_stays_pending_and_resumes(tmp_path: Path) -> None:
    task = _task(tmp_path, 3)
    st = Store(tmp_path / "s.db")
    strategy = make_strategy("self-consistency", k=2)
    try:
        with FakeOpenAIServer(faults=("500",), faulty_attempts=100) as srv:
            be = flaky_backend(srv, max_retries=1)
            s1 = execute(Solve(task, strategy), store=st, run_id="r", executor=Executor(mode="threads", workers=2, backend=be))
            be.close()
        assert set(s1.failures) == {"p0", "p1", "p2"} and "gave up" in s1.failures["p0"]
        assert st.done_problems("r") == set()
        with FakeOpenAIServer() as srv:
            be = flaky_backend(srv)
            s2 = execute(Solve(task, strategy), store=st, run_id="r", executor=Executor(mode="threads", workers=2, backend=be))
            be.close()
        assert not s2.failures and st.done_problems("r") == {"p0", "p1", "p2"}
        assert len(st.samples("r")) == 6
    finally:
        st.close()


def test_budget_holds_when_the_server_ignores_n(tmp_path: Path) -> None:
    """Fanned-out samples each prefill the prompt; the per-problem budget must still be a hard cap."""
    long_prompt = " ".join(["word"] * 40)
    data = tmp_path / "p.jsonl"
    data.write_text("".join(f'{{"id": "p{i}", "prompt": "{long_prompt} {i}?", "answer": "42"}}\n' for i in range(3)))
    task = make_task("jsonl", data=str(data), style="completion", max_tokens=16)
    cap = 150
    with FakeOpenAIServer(honour_n=False) as srv:
        be = flaky_backend(srv)
        st = Store(tmp_path / "s.db")
        try:
            summary = execute(Solve(task, make_strategy("self-consistency", k=6), budget=Budget(tokens=cap)), store=st, run_id="b", executor=Executor(mode="threads", workers=3, backend=be))
            rows = st.samples("b")
        finally:
            st.close()
            be.close()
    assert summary.finished == 3 and be.client.honours_n is False
    assert all(0 < Usage.from_dict(r["usage"]).total_tokens <= cap for r in summary.results)
    assert sum(Usage.from_dict(r["usage"]).total_tokens for r in summary.results) == srv.delivered_prompt_tokens + srv.delivered_completion_tokens
    assert len(rows) >= 3
