"""Differential: for every strategy whose record carries a rule over drawn samples, a live run and
replay of the samples that run stored pick answers of the same correctness on every problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.registry import make_strategy, make_task, make_verifier, strategy_specs
from ttscale.replay.curves import CurveSpec, compute_curves
from ttscale.replay.pool import load_pool
from ttscale.run import Solve, execute
from ttscale.store import Store

K = 7
RULED = [(name, rule) for name, spec in strategy_specs().items() for rule in spec.replay if rule.aggregate is not None]


def _answers(prompt: str) -> dict[str, float]:
    # Problems differ in how the vote splits between the right answer and three wrong ones.
    n = sum(map(ord, prompt)) % 5
    return {"12": 0.2 + 0.06 * n, "3": 0.32 - 0.05 * n, "7": 0.25, "8": 0.15}


@pytest.mark.parametrize(("strategy", "rule"), RULED, ids=[f"{s}:{r.kind}" for s, r in RULED])
def test_live_answers_equal_replayed_answers(strategy: str, rule: object, tmp_path: Path) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i} {'x' * i}?", "answer": "12"}) + "\n"
                            for i in range(24)))
    task = make_task("jsonl", data=str(data), style="completion")
    spec = strategy_specs()[strategy]
    knobs = {"verifier": make_verifier("certainty", task)} if spec.verifier != "none" else {}
    store = Store(tmp_path / "s.sqlite")
    summary = execute(Solve(task, make_strategy(strategy, k=K, **knobs)), store=store, run_id="live", backend=FakeBackend(answers=_answers, filler_tokens=lambda r: r.randrange(3, 12)))
    live = {r["problem_id"]: bool(r["correct"]) for r in summary.results}
    pool = load_pool(store, "live")
    assert pool.k == K
    curves = compute_curves(pool, [CurveSpec("replayed", rule.kind)], [K], n_bootstrap=2)  # type: ignore[attr-defined]
    replayed = dict(zip(pool.problem_ids, curves.per_problem["replayed"][:, 0], strict=True))
    assert set(live) == set(replayed)
    differ = [pid for pid in live if live[pid] != bool(replayed[pid])]
    assert not differ, f"{strategy}: live and replay disagree on {differ}"
    assert 0 < sum(live.values()) < len(live)  # the votes were not trivial
