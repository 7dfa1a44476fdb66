"""The micro-batcher, the per-request control resolution and the request task adapter (no HTTP)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.server.batcher import MicroBatcher
from ttscale.server.config import ServerConfig
from ttscale.server.control import resolve, split_model
from ttscale.server.errors import APIError, RequestCancelled
from ttscale.server.schemas import TtscaleOptions
from ttscale.server.solve import RequestTask, normalize_text
from ttscale.types import Capabilities, Generation, GenerationRequest


class CountingBackend(FakeBackend):
    def __init__(self, fail_on: str | None = None) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.fail_on = fail_on

    @property
    def capabilities(self) -> Capabilities:  # its generate takes no hooks at all
        return Capabilities(parallel_sequences=64, local_prompt_counts=True)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:  # type: ignore[override]
        self.calls.append(len(requests))
        if self.fail_on is not None and any(r.prompt == self.fail_on for r in requests):
            raise ConfigError("prompt too long")
        return super().generate(requests)


def _submit_concurrently(b: MicroBatcher, prompts: list[str]) -> list[object]:
    out: list[object] = [None] * len(prompts)
    for _ in prompts:
        b.run_started()

    def go(i: int) -> None:
        try:
            out[i] = b.generate([GenerationRequest(prompt=prompts[i])], lambda: False)[0]
        except Exception as e:  # noqa: BLE001
            out[i] = e
        finally:
            b.run_finished()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


def test_concurrent_runs_share_one_backend_call() -> None:
    be = CountingBackend()
    # A long window: the batch must close because all 6 active runs submitted, not because time ran out.
    b = MicroBatcher(be, window_s=30.0, max_batch=64)
    out = _submit_concurrently(b, [f"q{i} x" for i in range(6)])
    b.close()
    assert be.calls == [6]
    assert [g.request.prompt for g in out] == [f"q{i} x" for i in range(6)]  # type: ignore[union-attr]


def test_the_gathering_leader_is_woken_once_its_batch_is_complete_not_per_submission() -> None:
    """8 runs submit one after another while the first gathers: the leader sleeps until the last one is in
    (one wake-up), instead of being woken by each of the 7 submissions in between."""
    be = CountingBackend()
    b = MicroBatcher(be, window_s=30.0, max_batch=64)
    waits = [0]

    class Counting(threading.Condition):
        def wait(self, timeout: float | None = None) -> bool:
            waits[0] += 1
            return super().wait(timeout)

    b._lead_cv = Counting(b._lock)
    for _ in range(8):
        b.run_started()
    out: list[object] = []

    def go(i: int) -> None:
        out.append(b.generate([GenerationRequest(prompt=f"q{i} x")], lambda: False)[0])
        b.run_finished()

    first = threading.Thread(target=go, args=(0,))
    first.start()
    while not b._leading:
        time.sleep(0.001)
    rest = []
    for i in range(1, 8):
        time.sleep(0.005)  # one by one, while the leader waits
        t = threading.Thread(target=go, args=(i,))
        t.start()
        rest.append(t)
    for t in [first, *rest]:
        t.join(10)
    b.close()
    assert be.calls == [8] and len(out) == 8
    assert waits[0] <= 2  # slept once (a spurious return may add one), not once per submission


def test_a_lone_request_does_not_wait_for_the_window() -> None:
    be = CountingBackend()
    b = MicroBatcher(be, window_s=30.0)
    b.run_started()
    t0 = time.monotonic()
    gen = b.generate([GenerationRequest(prompt="alone")], lambda: False)[0]
    assert time.monotonic() - t0 < 20  # the 30 s window was not waited out
    b.run_finished()
    b.close()
    assert gen.request.prompt == "alone" and be.calls == [1]


def test_min_wait_gathers_requests_that_arrive_together() -> None:
    be = CountingBackend()
    b = MicroBatcher(be, window_s=30.0, min_wait_s=0.5)  # no active runs registered: only min_wait gathers
    out: list[object] = []
    first = threading.Thread(target=lambda: out.append(b.generate([GenerationRequest(prompt="a")], lambda: False)))
    first.start()
    time.sleep(0.05)
    out.append(b.generate([GenerationRequest(prompt="b")], lambda: False))
    first.join(10)
    b.close()
    assert be.calls == [2] and len(out) == 2


def test_max_batch_splits_calls() -> None:
    be = CountingBackend()
    b = MicroBatcher(be, window_s=30.0, max_batch=4)
    _submit_concurrently(b, [f"q{i}" for i in range(8)])
    b.close()
    assert sum(be.calls) == 8 and max(be.calls) <= 4


def test_one_bad_request_does_not_fail_its_batch_mates() -> None:
    be = CountingBackend(fail_on="bad")
    b = MicroBatcher(be, window_s=30.0)
    out = _submit_concurrently(b, ["good one", "bad", "good two"])
    b.close()
    assert isinstance(out[1], ConfigError)
    assert [o.request.prompt for o in (out[0], out[2])] == ["good one", "good two"]  # type: ignore[union-attr]


def test_cancelled_jobs_are_dropped_and_closed_batcher_refuses() -> None:
    be = CountingBackend()
    b = MicroBatcher(be, window_s=0.0)
    with pytest.raises(RequestCancelled):
        b.generate([GenerationRequest(prompt="x")], lambda: True)
    assert be.calls == []
    b.close()
    with pytest.raises(RequestCancelled):
        b.generate([GenerationRequest(prompt="x")], lambda: False)


def test_a_job_cancelled_during_a_shared_call_stops_alone() -> None:
    be = FakeBackend(answers={"42": 1.0})
    b = MicroBatcher(be, window_s=30.0, max_batch=8)
    polls = {"n": 0}

    def gone() -> bool:  # passes the check before the call, then the client disconnects
        polls["n"] += 1
        return polls["n"] > 1

    out: dict[str, Generation] = {}
    b.run_started()
    b.run_started()
    threads = [threading.Thread(target=lambda key=key, stop=stop: out.__setitem__(
        key, b.generate([GenerationRequest(prompt=key, n=2)], stop)[0])) for key, stop in
        (("leaving", gone), ("staying", lambda: False))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    b.close()
    assert len(be.history) == 2 and b.calls == 1  # one shared call
    assert {c.finish_reason for c in out["leaving"].completions} == {"cancelled"}
    assert {c.finish_reason for c in out["staying"].completions} == {"stop"}
    assert sum(c.n_tokens for c in out["leaving"].completions) == 0


CFG = ServerConfig(backend=FakeBackend(), model_name="m", k=4, max_k=16, budget_tokens=500)


def test_resolve_precedence_and_defaults() -> None:
    p = resolve(None, {}, "m", CFG)
    assert (p.strategy, p.k, p.budget_tokens, p.source) == ("self-consistency", 4, 500, "default")
    p = resolve(None, {"x-ttscale-strategy": "bon", "x-ttscale-budget-tokens": "900"}, "sc8/m", CFG)
    assert (p.strategy, p.k, p.verifier, p.budget_tokens, p.source) == ("best-of-n", 8, "certainty", 900, "header")
    p = resolve(TtscaleOptions(strategy="single"), {"x-ttscale-strategy": "bon"}, "sc8/m", CFG)
    assert (p.strategy, p.k) == ("single", None)


def test_split_model() -> None:
    assert split_model("wbon3/m", "m") == ("weighted-best-of-n", 3)
    assert split_model("self-consistency/m", "m") == ("self-consistency", None)
    with pytest.raises(APIError) as e:
        split_model("other", "m")
    assert e.value.status == 404


def test_request_task_answers() -> None:
    t = RequestTask(GenerationRequest(prompt="q"))
    assert t.extract("so the answer is 1,200.") == "1200"
    assert t.extract("  Paris.  ") == "paris"
    assert RequestTask(GenerationRequest(prompt="q"), "text").extract("It is 7.") == "it is 7"
    assert RequestTask(GenerationRequest(prompt="q"), "numeric").extract("Paris") is None
    assert normalize_text("   ") is None


class HookBackend(FakeBackend):
    """Records each call's requests and what its hooks said."""

    def __init__(self) -> None:
        super().__init__()
        self.calls_seen: list[tuple[list[str | None], bool, bool]] = []

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(parallel_sequences=64, cancellation=True, local_prompt_counts=True)

    def generate(self, requests: Sequence[GenerationRequest], should_stop=None, on_finish=None, on_sample=None):  # type: ignore[no-untyped-def,override]
        stopped = bool(should_stop and should_stop())
        self.calls_seen.append(([r.prompt for r in requests], stopped, on_finish is not None))
        if on_finish is not None:
            on_finish(0, 0)
        return super().generate(requests)


def test_jobs_with_their_own_hooks_run_alone_with_those_hooks() -> None:
    be = HookBackend()
    b = MicroBatcher(be, window_s=30.0)
    finished: list[tuple[int, int]] = []
    for _ in range(3):
        b.run_started()
    results: list[object] = []

    def plain(p: str) -> None:
        results.append(b.generate([GenerationRequest(prompt=p)], lambda: False))
        b.run_finished()

    def hooked() -> None:
        hooks = {"should_stop": lambda: True, "on_finish": lambda r, i: finished.append((r, i))}
        results.append(b.generate([GenerationRequest(prompt="hooked")], lambda: False, hooks))
        b.run_finished()

    threads = [threading.Thread(target=plain, args=("a",)), threading.Thread(target=plain, args=("b",)),
               threading.Thread(target=hooked)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    b.close()
    assert len(results) == 3
    by_prompts = {tuple(sorted(p or "" for p in ps)): (stopped, has_finish) for ps, stopped, has_finish in be.calls_seen}
    assert by_prompts == {("a", "b"): (False, False), ("hooked",): (True, True)}
    assert finished == [(0, 0)]
