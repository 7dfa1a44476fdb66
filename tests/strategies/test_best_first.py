"""Best-first search: pops the highest-priority partial, returns the first finished pop, respects caps."""

from __future__ import annotations

import pytest

from ttscale.cost import Budget
from ttscale.strategies.best_first import BestFirstSearch
from ttscale.testing.fake_steps import ScriptedRewardModel, ScriptedStepBackend

from .helpers import solve


def test_pops_in_priority_order_and_stops_at_first_finished(task) -> None:
    be = ScriptedStepBackend(answers={"42": 0.5, "41": 0.5}, depth=2)
    # Deeper is better: the search dives (depth-first under this priority) and finishes in depth+1 expansions.
    rm = ScriptedRewardModel(lambda _c, _i, t: 0.2 + 0.2 * t.count("Step") + (0.3 if "answer is" in t else 0))
    st = BestFirstSearch(verifier=rm, k=20, beam_width=2, max_steps=10)
    res, _ = solve(st, task, be)
    assert res.meta["expansions"] == 3 and res.meta["finished_paths"] == 1
    assert len(rm.calls) == 3 and res.answer in ("41", "42")
    # Every pop is the best node on the frontier at that moment: replay with the logged scores.
    frontier: list[float] = [s for _, s in rm.calls[0]]
    for call in rm.calls[1:]:
        best = max(frontier)
        frontier.remove(best)
        frontier += [s for _, s in call]
    assert max(frontier) == max(s for _, s in rm.calls[-1])


def test_shallow_priority_explores_breadth_and_stops_at_k(task) -> None:
    be = ScriptedStepBackend(depth=3)
    rm = ScriptedRewardModel(lambda _c, _i, t: 1.0 - 0.2 * t.count("Step"))  # shallower is better: breadth-first
    st = BestFirstSearch(verifier=rm, k=4, beam_width=2, max_steps=10)
    res, _ = solve(st, task, be)
    assert res.meta["expansions"] == 4 and res.meta["finished_paths"] == 0
    assert res.samples  # the best partial so far is recorded and answers


def test_budget_is_a_hard_cap(task) -> None:
    be = ScriptedStepBackend(depth=30)
    res, ctx = solve(BestFirstSearch(verifier=ScriptedRewardModel(), k=50, step_tokens=16, max_steps=40), task, be,
                      Budget(tokens=250))
    assert ctx.meter.usage.total_tokens <= 250 and res.meta["budget_exhausted"]


@pytest.mark.model
def test_real_model_best_first(smollm) -> None:
    from ttscale.registry import make_task
    from ttscale.tasks.gsm_symbolic import DEFAULT_INSTRUCTION
    from ttscale.verifiers.judge import JudgeVerifier

    t = make_task("arithmetic", style="chat", shots=0, instruction=DEFAULT_INSTRUCTION, chat_model=True)
    res, ctx = solve(BestFirstSearch(verifier=JudgeVerifier(smollm), k=2, beam_width=2, step_tokens=6, max_steps=2),
                      t, smollm, Budget(tokens=2000))
    assert ctx.meter.usage.total_tokens <= 2000 and 1 <= res.meta["expansions"] <= 2
