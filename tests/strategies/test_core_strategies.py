from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttscale.backends.fake import FakeBackend
from ttscale.cost import Budget, Meter
from ttscale.registry import make_strategy, make_verifier, strategy_names
from ttscale.strategies.base import SolveContext
from ttscale.strategies.voting import weighted_vote
from ttscale.tasks.jsonl import JsonlTask
from ttscale.types import Sample, Sampling


def _sample(i: int, answer: str | None, logprob: float | None = None) -> Sample:
    return Sample(i, "", answer, None, 1, 1, 0, 0.0, "stop", logprob=logprob)


def test_vote_matches_counter() -> None:
    rng = random.Random(0)
    for _ in range(200):
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(rng.randint(1, 12))]
        samples = [_sample(i, a) for i, a in enumerate(answers)]
        winner, votes = weighted_vote(samples)
        counts = Counter(a for a in answers if a is not None)
        assert votes == {k: float(v) for k, v in counts.items()}
        if counts:
            assert counts[winner] == max(counts.values())
        else:
            assert winner is None


def test_tie_broken_by_logprob_then_first_index() -> None:
    s = [_sample(0, "a", -5.0), _sample(1, "b", -1.0)]
    assert weighted_vote(s)[0] == "b"  # equal counts: larger summed log-prob wins
    s = [_sample(0, "a"), _sample(1, "b")]
    assert weighted_vote(s)[0] == "a"  # still tied: first appearance wins


@given(st.lists(st.sampled_from(["1", "2", "3"]), min_size=1, max_size=10), st.randoms())
def test_vote_permutation_invariant_in_counts(answers: list[str], rnd: random.Random) -> None:
    samples = [_sample(i, a) for i, a in enumerate(answers)]
    shuffled = samples[:]
    rnd.shuffle(shuffled)
    assert weighted_vote(samples)[1] == weighted_vote(shuffled)[1]


@pytest.fixture
def task(tmp_path):  # type: ignore[no-untyped-def]
    p = tmp_path / "t.jsonl"
    p.write_text('{"id": "q1", "prompt": "What is 6*7?", "answer": "42"}\n')
    return JsonlTask(str(p))


def _ctx(task, backend, budget=None):  # type: ignore[no-untyped-def]
    problem = task.problems()[0]
    return problem, SolveContext(problem, backend, task, Meter(backend.model_info(), budget), Sampling(seed=1))


def test_self_consistency_finds_the_mode(task) -> None:  # type: ignore[no-untyped-def]
    backend = FakeBackend(answers={"42": 0.5, "41": 0.25, "40": 0.25})
    problem, ctx = _ctx(task, backend)
    r = make_strategy("self-consistency", k=32).solve(problem, ctx)
    assert r.answer == "42" and r.correct is True
    assert sum(r.votes.values()) == 32 and len(r.samples) == 32
    assert r.usage.samples == 32
    # one request with n=32: the prompt is prefilled once
    assert len(backend.history) == 1 and backend.history[0].n == 32
    assert r.usage.prefilled_tokens == backend.count_prompt_tokens(backend.history[0])


def test_single_uses_one_sample(task) -> None:  # type: ignore[no-untyped-def]
    problem, ctx = _ctx(task, FakeBackend(answers={"42": 1.0}))
    r = make_strategy("single").solve(problem, ctx)
    assert r.answer == "42" and r.samples == [0]


def test_best_of_n_with_oracle_reaches_coverage(task) -> None:  # type: ignore[no-untyped-def]
    backend = FakeBackend(answers={"42": 0.1, "41": 0.9})
    problem, ctx = _ctx(task, backend)
    r = make_strategy("best-of-n", k=32, verifier=make_verifier("oracle", task)).solve(problem, ctx)
    # majority would say 41; an oracle verifier picks the rare correct answer
    assert r.answer == "42" and r.meta["verifier_uses_reference"] is True


def test_weighted_bon_sums_scores(task) -> None:  # type: ignore[no-untyped-def]
    backend = FakeBackend(answers={"42": 0.5, "41": 0.5})
    problem, ctx = _ctx(task, backend)
    r = make_strategy("weighted-best-of-n", k=16, verifier=make_verifier("certainty", task)).solve(problem, ctx)
    assert set(r.votes) <= {"41", "42"}
    assert r.answer == max(r.votes, key=r.votes.get)  # type: ignore[arg-type]


# Tree searches need a step-scoring verifier and step-level generation; their own test files
# (test_beam.py, test_dvts.py, test_particle_filter.py, test_best_first.py) check their budgets.
SEARCH = {"beam", "dvts", "particle-filter", "best-first"}


# iterdrag needs a retrieval task, speculative-reasoning a base model that probes next tokens (their own
# budget tests: tests/strategies/test_iterdrag.py, tests/strategies/test_speculative.py)
NEEDS_RETRIEVAL = {"iterdrag", "speculative-reasoning"}


@pytest.mark.parametrize("name", [n for n in strategy_names() if n not in SEARCH | NEEDS_RETRIEVAL])
def test_budget_is_a_hard_cap(task, name: str) -> None:  # type: ignore[no-untyped-def]
    from ttscale.registry import STRATEGY_KNOBS

    backend = FakeBackend(answers={"42": 1.0}, filler_tokens=10)
    budget = Budget(tokens=70)
    problem, ctx = _ctx(task, backend, budget)
    knobs = STRATEGY_KNOBS[name]
    kw: dict[str, object] = {}
    if "k" in knobs:
        kw["k"] = 16
    if "verifier" in knobs:
        kw["verifier"] = make_verifier("certainty", task)
    r = make_strategy(name, **kw).solve(problem, ctx)
    assert r.usage.total_tokens <= 70
    assert ctx.meter.usage.total_tokens <= 70


def test_waves_when_budget_allows_fewer(task) -> None:  # type: ignore[no-untyped-def]
    backend = FakeBackend(answers={"42": 1.0}, filler_tokens=10)
    problem, ctx = _ctx(task, backend, Budget(tokens=2000))
    ctx.base_request()
    req_max = ctx.base_request().max_tokens
    samples = ctx.sample(40)
    # the worst case (max_tokens each) limits the first wave; later waves use what is left
    assert len(backend.history) >= 2
    assert backend.history[0].n < 40 and backend.history[0].n * req_max <= 2000
    assert ctx.meter.usage.total_tokens <= 2000
    assert [s.index for s in samples] == list(range(len(samples)))


def test_budget_too_small_for_anything(task) -> None:  # type: ignore[no-untyped-def]
    backend = FakeBackend(answers={"42": 1.0})
    problem, ctx = _ctx(task, backend, Budget(tokens=3))
    r = make_strategy("self-consistency", k=4).solve(problem, ctx)
    assert r.answer is None and r.samples == [] and backend.history == []
    assert r.meta["budget_exhausted"] is True


class _CostlyVerifier:
    """Each score costs 30 prefilled tokens, and says so in advance."""

    name = "costly"
    uses_reference = False

    def score(self, problem, candidates):  # type: ignore[no-untyped-def]
        from ttscale.types import Usage
        from ttscale.verifiers.base import Scores

        return Scores([1.0] * len(candidates), Usage(prefilled_tokens=30 * len(candidates)))

    def cost_bound(self, problem, candidates, extra_tokens=0):  # type: ignore[no-untyped-def]
        from ttscale.types import Usage

        return Usage(prefilled_tokens=30 * len(candidates))


@pytest.mark.parametrize("budget", [60, 150, 400, 1000])
def test_best_of_n_reserves_the_verifier_cost(task, budget: int) -> None:  # type: ignore[no-untyped-def]
    from ttscale.strategies.best_of_n import BestOfN

    backend = FakeBackend(answers={"42": 1.0}, filler_tokens=5)
    problem, ctx = _ctx(task, backend, Budget(tokens=budget))
    r = BestOfN(verifier=_CostlyVerifier(), k=16).solve(problem, ctx)  # type: ignore[arg-type]
    assert ctx.meter.usage.total_tokens <= budget
    assert len(r.meta["scores"]) == len(r.samples)


def test_equivalent_answers_vote_together() -> None:
    """'0.5' and '1/2' are one answer to a numeric task: together they outvote '3' (voting.py used exact strings)."""
    from ttscale.strategies.voting import weighted_vote
    from ttscale.tasks.answers import answers_equivalent
    from ttscale.types import Sample

    def s(i: int, a: str) -> Sample:
        return Sample(i, "", a, None, 1, 1, 0, 0.0, "stop")

    pool = [s(0, "3"), s(1, "0.5"), s(2, "3"), s(3, "1/2"), s(4, "0.50")]
    assert weighted_vote(pool)[0] == "3"  # by exact string: 3 has two votes, 0.5 / 1/2 / 0.50 one each
    answer, votes = weighted_vote(pool, equivalent=answers_equivalent)
    assert answer == "0.5" and votes == {"3": 2.0, "0.5": 3.0}
