"""DVTS: N/M subtrees, each choosing only among its own children; subtrees stay independent."""

from __future__ import annotations

import pytest

from ttscale.cost import Budget
from ttscale.strategies.dvts import DiverseVerifierTreeSearch
from ttscale.testing.fake_steps import ScriptedRewardModel, ScriptedStepBackend, text_hash_score

from .helpers import solve


def test_subtrees_stay_independent(task) -> None:
    be = ScriptedStepBackend(answers={"42": 0.5, "41": 0.5}, depth=3)
    # A reward model that loves one lineage: a beam would collapse onto it, DVTS must not.
    lead = {"text": None}

    def score(c: int, i: int, text: str) -> float:
        if c == 0 and i == 0:
            lead["text"] = text
        return 0.99 if lead["text"] and text.startswith(lead["text"]) else text_hash_score(text) * 0.5

    rm = ScriptedRewardModel(score)
    st = DiverseVerifierTreeSearch(verifier=rm, k=6, beam_width=2, max_steps=10)
    res, _ = solve(st, task, be)
    assert len(st.paths) == 3
    for g, path in enumerate(st.paths):
        assert path and all(p.group == g for p in path)
        for prev, cur in zip(path, path[1:], strict=False):
            assert cur.parent == prev.uid  # grows only from its own previous choice
    # Step 0: subtree g picks the best of its own M first steps (positions g*M .. g*M+M-1 of the call).
    first = rm.calls[0]
    for g, path in enumerate(st.paths):
        own = [s for _, s in first[2 * g: 2 * g + 2]]
        assert path[0].step_scores[-1] == max(own)
    # Later steps: the choice is the max over its own siblings only.
    for path in st.paths:
        for t_, (prev, cur) in enumerate(zip(path, path[1:], strict=False), start=1):
            sib = [s for text, s in rm.calls[t_] if text.startswith(prev.text() + "\n\n")]
            assert len(sib) == 2 and cur.step_scores[-1] == max(sib)
    assert len({p[-1].uid for p in st.paths}) == 3 and res.meta["subtrees"] == 3
    assert all(len(c) == 6 for c in rm.calls)  # every step expands all 3 subtrees x M


def test_budget_is_a_hard_cap(task) -> None:
    be = ScriptedStepBackend(depth=30)
    res, ctx = solve(DiverseVerifierTreeSearch(verifier=ScriptedRewardModel(), k=4, beam_width=2, step_tokens=16,
                                                max_steps=40), task, be, Budget(tokens=300))
    assert ctx.meter.usage.total_tokens <= 300 and res.meta["budget_exhausted"]


@pytest.mark.model
def test_real_model_dvts(smollm) -> None:
    from ttscale.registry import make_task
    from ttscale.tasks.gsm_symbolic import DEFAULT_INSTRUCTION
    from ttscale.verifiers.certainty import CertaintyVerifier

    t = make_task("arithmetic", style="chat", shots=0, instruction=DEFAULT_INSTRUCTION, chat_model=True)
    st = DiverseVerifierTreeSearch(verifier=CertaintyVerifier(), k=4, beam_width=2, step_tokens=8, max_steps=2)
    res, ctx = solve(st, t, smollm, Budget(tokens=2000))
    assert ctx.meter.usage.total_tokens <= 2000
    assert len(st.paths) == 2 and all(p for p in st.paths)
    assert res.meta["step_stats"]["prefilled_tokens"] < res.meta["step_stats"]["full_prompt_tokens"]
