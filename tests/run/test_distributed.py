"""Scale-out: thread and Ray workers give the sequential runner's results; a dead Ray worker loses nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.registry import make_strategy, make_task
from ttscale.run import BackendSpec, DieOnce, Executor, Solve, execute
from ttscale.store import Store

ANSWERS = {"42": 0.6, "41": 0.3, "7": 0.1}


def _task(tmp_path: Path, n: int):  # type: ignore[no-untyped-def]
    data = tmp_path / "p.jsonl"
    data.write_text("".join(f'{{"id": "p{i}", "prompt": "what is {i} + {42 - i}?", "answer": "42"}}\n'
                            for i in range(n)))
    return make_task("jsonl", data=str(data), style="completion", max_tokens=32)


def _sequential(tmp_path: Path, task, k: int) -> dict[str, list[tuple[int, str | None, int]]]:  # type: ignore[no-untyped-def]
    st = Store(tmp_path / "seq.db")
    execute(Solve(task, make_strategy("self-consistency", k=k)), store=st, run_id="seq", backend=FakeBackend(answers=ANSWERS))
    out = _by_problem(st, "seq")
    st.close()
    return out


def _by_problem(st: Store, run_id: str) -> dict[str, list[tuple[int, str | None, int]]]:
    out: dict[str, list[tuple[int, str | None, int]]] = {}
    for pid, s in st.samples(run_id):
        out.setdefault(pid, []).append((s.index, s.answer, s.n_tokens))
    return out


def test_threads_match_sequential(tmp_path: Path) -> None:
    task = _task(tmp_path, 6)
    st = Store(tmp_path / "t.db")
    try:
        summary = execute(Solve(task, make_strategy("self-consistency", k=5)), store=st, run_id="thr", executor=Executor(mode="threads", workers=3, backend=FakeBackend(answers=ANSWERS)))
        got = _by_problem(st, "thr")
    finally:
        st.close()
    assert summary.finished == 6 and summary.generated == 30 and not summary.failures
    assert got == _sequential(tmp_path, task, 5)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="backend"):
        execute(Solve(None, None), store=None, run_id="x", executor=Executor(mode="threads", workers=2))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mode"):
        execute(Solve(None, None), store=None, run_id="x", executor=Executor(mode="mpi", workers=2, backend=FakeBackend()))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ray_local() -> Iterator[object]:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ttscale[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_two_workers_survive_a_dead_worker(tmp_path: Path, ray_local: object) -> None:
    task = _task(tmp_path, 8)
    st = Store(tmp_path / "r.db")
    spec = BackendSpec("fake", None, {"answers": ANSWERS})
    try:
        summary = execute(Solve(task, make_strategy("self-consistency", k=4), fault_hook=DieOnce("p3", str(tmp_path / "died"))), store=st, run_id="ray", executor=Executor(mode="ray", workers=2, backend_specs=tuple([spec])))
        got = _by_problem(st, "ray")
        status = st.get_run("ray").status  # type: ignore[union-attr]
    finally:
        st.close()
    assert (tmp_path / "died").exists(), "the fault hook must have killed a worker"
    assert summary.worker_deaths == 1 and summary.requeued == 1
    assert summary.finished == 8 and not summary.failures and status == "done"
    assert got == _sequential(tmp_path, task, 4)  # nothing lost, nothing duplicated, same samples


def test_ray_resumes_from_stored_samples(tmp_path: Path, ray_local: object) -> None:
    task = _task(tmp_path, 4)
    st = Store(tmp_path / "r.db")
    strategy = make_strategy("self-consistency", k=3)
    spec = BackendSpec("fake", None, {"answers": ANSWERS})
    try:
        execute(Solve(task, strategy), store=st, run_id="r", executor=Executor(mode="ray", workers=2, backend_specs=tuple([spec])), problems=task.problems()[:2])
        again = execute(Solve(task, strategy), store=st, run_id="r", executor=Executor(mode="ray", workers=2, backend_specs=tuple([spec])))
        got = _by_problem(st, "r")
    finally:
        st.close()
    assert again.finished == 4 and again.generated == 6  # only the two new problems were generated
    assert got == _sequential(tmp_path, task, 3)


@pytest.mark.model
def test_ray_with_embedded_model(tmp_path: Path, ray_local: object) -> None:
    task = make_task("arithmetic", subtask="arithmetic/1_digit_multiplication", max_tokens=8, shots=2)
    st = Store(tmp_path / "m.db")
    spec = BackendSpec("llama-cpp", "gemma3-270m", {"n_ctx": 1024, "n_seq_max": 4, "n_threads": 1})
    try:
        summary = execute(Solve(task, make_strategy("self-consistency", k=2)), store=st, run_id="m", executor=Executor(mode="ray", workers=2, backend_specs=tuple([spec])), limit=2)
        rows = st.samples("m")
    finally:
        st.close()
    assert summary.finished == 2 and len(rows) == 4
    assert all(s.n_tokens >= 1 and s.prompt_tokens > 0 for _, s in rows)
    assert summary.usage.generated_tokens == sum(s.n_tokens for _, s in rows)


def test_ray_workers_round_robin_over_http_endpoints(tmp_path: Path, ray_local: object) -> None:
    from ttscale.backends.fake import FAKE_MODEL_INFO
    from ttscale.testing.openai_fake_server import FakeOpenAIServer

    task = _task(tmp_path, 6)
    st = Store(tmp_path / "h.db")
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        specs = [BackendSpec("openai", "fake", {"base_url": s.base_url, "info": FAKE_MODEL_INFO}) for s in (a, b)]
        try:
            summary = execute(Solve(task, make_strategy("self-consistency", k=3)), store=st, run_id="h", executor=Executor(mode="ray", workers=2, backend_specs=tuple(specs)))
            rows = st.samples("h")
        finally:
            st.close()
        assert a.requests > 0 and b.requests > 0, "each worker talks to its own endpoint"
        assert summary.finished == 6 and len(rows) == 18
        assert sum(s.n_tokens for _, s in rows) == a.delivered_completion_tokens + b.delivered_completion_tokens
