"""The one per-problem step: fresh strategy state per problem, one resume for every run loop."""

from __future__ import annotations

from pathlib import Path

from ttscale.backends.fake import FakeBackend
from ttscale.cost import Budget
from ttscale.registry import make_task
from ttscale.run.executor import SweepStrategy, fresh, solve_problem
from ttscale.store import Store
from ttscale.strategies.beam import BeamSearch
from ttscale.testing.fake_steps import ScriptedRewardModel, ScriptedStepBackend
from ttscale.types import Problem, Sampling


def test_each_problem_gets_its_own_strategy_state() -> None:
    beam = BeamSearch(verifier=ScriptedRewardModel(), k=4, beam_width=2)
    a, b = fresh(beam), fresh(beam)
    assert a is not beam and a.trace is not b.trace and a.verifier is beam.verifier and a.k == 4


def test_solve_problem_leaves_the_callers_strategy_untouched(tmp_path: Path) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text('{"id": "a", "prompt": "q", "answer": "42"}\n')
    task = make_task("jsonl", data=str(data), style="completion")
    beam = BeamSearch(verifier=ScriptedRewardModel(), k=4, beam_width=2)
    samples, result = solve_problem(task.problems()[0], ScriptedStepBackend(), task, beam, Sampling(), Budget(), (), None)
    assert samples and result.answer == "42" and beam.trace == []


def test_store_resume_reports_what_an_earlier_invocation_left(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    probs = [Problem("a", "q", "42", {}), Problem("b", "q", "42", {})]
    first = store.resume("r", {"x": 1}, {"m": 1}, probs, kind="sweep")
    assert not first.resumed and first.done == set() and first.stored == {}
    data = tmp_path / "q.jsonl"
    data.write_text('{"id": "a", "prompt": "q", "answer": "42"}\n')
    task = make_task("jsonl", data=str(data), style="completion")
    samples, result = solve_problem(probs[0], FakeBackend(), task, SweepStrategy(k=3), Sampling(), Budget(), (),
                                    lambda p, new: store.add_samples("r", p.id, new))
    store.finish_problem("r", result)
    again = store.resume("r", {"x": 1}, {"m": 1}, probs, kind="sweep")
    assert again.resumed and again.done == {"a"} and [s.index for s in again.stored["a"]] == [0, 1, 2]
