"""Speculative reasoning: draft steps kept or rewritten by the base model's 0-9 score; costs per model."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from ttscale.backends.fake import FAKE_MODEL_INFO, FakeBackend
from ttscale.backends.llama_probe import TokenProbe
from ttscale.cost import Budget, Meter
from ttscale.errors import ConfigError, UnsupportedFeatureError
from ttscale.registry import strategy_specs
from ttscale.strategies.base import SolveContext, sample_seed
from ttscale.strategies.speculative import SCORE_QUESTION, SpeculativeReasoning, expected_digit
from ttscale.strategies.steps import StepGenerator
from ttscale.testing.fake_steps import ScriptedStepBackend, _render
from ttscale.types import Generation, GenerationRequest, Sampling

from .helpers import one_problem_task

BASE_INFO = replace(FAKE_MODEL_INFO, name="fake-base", n_params=3_000_000, n_layers=8)
DRAFT_INFO = replace(FAKE_MODEL_INFO, name="fake-draft")


def last_step(judge_prompt: str) -> str:
    """The step a judge prompt asks about: the solution's last blank-line-separated step."""
    solution = judge_prompt.split(SCORE_QUESTION)[0].rsplit("<assistant>", 1)[-1].rsplit("<user>", 1)[0]
    return solution.strip().split("\n\n")[-1].strip()


@dataclass
class RatingBackend(ScriptedStepBackend):
    """A scripted step model whose next-token probes rate the last step 0-9 (``rating(step)``) and that
    counts its own generate and probe calls."""

    rating: Callable[[str], int] = lambda _step: 5
    generate_calls: list[list[GenerationRequest]] = field(default_factory=list)
    probe_calls: list[list[GenerationRequest]] = field(default_factory=list)

    def generate(self, requests: Sequence[GenerationRequest], **hooks: object) -> list[Generation]:  # type: ignore[override]
        self.generate_calls.append(list(requests))
        return super().generate(requests, **hooks)  # type: ignore[arg-type]

    def next_token_logprobs(self, requests: Sequence[GenerationRequest], candidates: Sequence[str]) -> list[TokenProbe]:
        self.probe_calls.append(list(requests))
        out = []
        for r in requests:
            text = _render(r)
            d = self.rating(last_step(text))
            lp = {c: (math.log(0.9) if c == str(d) else math.log(0.1 / 9)) for c in candidates}
            n = len(text.split())
            out.append(TokenProbe(lp, n, n))
        return out


def models(rating: Callable[[str], int] = lambda _s: 5, depth: int = 3) -> tuple[RatingBackend, RatingBackend]:
    base = RatingBackend(answers={"42": 1.0}, depth=depth, info=BASE_INFO, rating=rating)
    draft = RatingBackend(answers={"7": 1.0}, depth=depth, info=DRAFT_INFO)
    return base, draft


@pytest.fixture
def task(tmp_path: Path):  # type: ignore[no-untyped-def]
    return one_problem_task(tmp_path, style="chat", max_tokens=200)


def solve(strategy: SpeculativeReasoning, task, base, budget: Budget | None = None, temperature: float = 0.0):  # type: ignore[no-untyped-def]
    prob = task.problems()[0]
    ctx = SolveContext(prob, base, task, Meter(base.model_info(), budget or Budget()),
                       Sampling(temperature=temperature, seed=3))
    return strategy.solve(prob, ctx), ctx


def test_expected_digit_renormalizes_over_the_digits() -> None:
    assert expected_digit({str(d): math.log(0.1) for d in range(10)}) == pytest.approx(4.5)
    assert expected_digit({"9": 0.0, "Yes": 0.0}) == pytest.approx(9.0)
    assert expected_digit({}) == 0.0


def test_always_accept_never_calls_the_base_models_generation(task) -> None:  # type: ignore[no-untyped-def]
    base, draft = models()
    res, ctx = solve(SpeculativeReasoning(threshold=0.0, draft=draft), task, base)
    assert base.generate_calls == [] and base.probe_calls == []  # a score could not change the decision
    assert res.answer == "7" and res.correct is False  # the draft's chain, answer and all
    spec = res.meta["speculative"]
    assert spec["accepted"] == spec["steps"] == 4 and spec["rejected"] == 0 and spec["accept_rate"] == 1.0
    assert spec["chains"][0]["kinds"] == ["draft"] * 4
    assert spec["usage"]["rewrite"]["generated_tokens"] == spec["usage"]["score"]["prefilled_tokens"] == 0
    # the draft's tokens are priced at the draft model's shapes
    assert res.usage.generated_tokens == spec["usage"]["draft"]["generated_tokens"] > 0


def test_always_reject_equals_base_only_stepping(task) -> None:  # type: ignore[no-untyped-def]
    base, draft = models()
    strat = SpeculativeReasoning(threshold=10.0, draft=draft, step_tokens=16, max_steps=8)
    res, ctx = solve(strat, task, base, temperature=0.7)
    assert draft.generate_calls == [] and base.probe_calls == []
    # the reference: the base model alone, one step per call, on the same seeds
    ref_be = models()[0]
    prob = task.problems()[0]
    ref_ctx = SolveContext(prob, ref_be, task, Meter(ref_be.model_info()), Sampling(temperature=0.7, seed=3))
    gen = StepGenerator(ref_be, ref_ctx.base_request(), step_tokens=16, max_steps=8,
                        seed=sample_seed(3, prob.id, 0))
    partial = gen.root()
    while not partial.done:
        kids = gen.expand([partial], 1, meter=ref_ctx.meter)
        assert kids is not None
        partial = replace(kids[0][0], uid=1)
    assert ctx.samples[0].text == partial.text() and res.answer == "42" == task.extract(partial.text())
    assert [r.prompt for c in base.generate_calls for r in c] == [r.prompt for r in ref_be.history]
    assert res.usage.total_tokens == ref_ctx.meter.usage.total_tokens
    assert res.meta["speculative"]["chains"][0]["kinds"] == ["base"] * 4


def test_low_scored_steps_are_rewritten_by_the_base_model(task) -> None:  # type: ignore[no-untyped-def]
    # the base model likes only the first step and anything it wrote itself (there is none to rate)
    base, draft = models(rating=lambda step: 9 if step.startswith("Step 1:") else 1)
    res, ctx = solve(SpeculativeReasoning(threshold=5.0, draft=draft), task, base)
    spec = res.meta["speculative"]
    assert spec["chains"][0]["kinds"] == ["draft", "base", "base", "base"]
    assert spec["accepted"] == 1 and spec["rejected"] == 3 and spec["accept_rate"] == 0.25
    assert res.answer == "42" and res.correct  # the draft's final "7" was rejected and rewritten
    scores = spec["chains"][0]["scores"]
    assert scores[0] > 8 and all(s < 2 for s in scores[1:])
    # one call per phase and step; every judge prompt continues the task's conversation
    assert len(draft.generate_calls) == 4 and len(base.probe_calls) == 4 and len(base.generate_calls) == 3
    assert all(SCORE_QUESTION in _render(r) for call in base.probe_calls for r in call)
    # per-phase usage adds up to the run's usage
    parts = spec["usage"]
    for f in ("prefilled_tokens", "generated_tokens", "requests"):
        assert sum(parts[p][f] for p in ("draft", "score", "rewrite")) == getattr(res.usage, f)
    assert sum(parts[p]["flops"] for p in parts) == pytest.approx(res.usage.flops)
    assert parts["score"]["generated_tokens"] == 0 and parts["score"]["prefilled_tokens"] > 0
    assert parts["draft"]["generated_tokens"] > 0 and parts["rewrite"]["generated_tokens"] > 0


def test_costs_are_priced_per_model(task) -> None:  # type: ignore[no-untyped-def]
    base, draft = models()
    res, _ = solve(SpeculativeReasoning(threshold=0.0, draft=draft), task, base)
    d = res.meta["speculative"]["usage"]["draft"]
    # same tokens priced at the base model's shapes would cost more: the draft's own shapes were used
    assert d["flops"] < Meter(BASE_INFO).worst_case(0, 1, d["generated_tokens"] + d["prefilled_tokens"]).flops


def test_k_chains_are_batched_and_voted(task) -> None:  # type: ignore[no-untyped-def]
    base = RatingBackend(answers={"42": 1.0}, info=BASE_INFO, rating=lambda s: 9 if "answer" not in s else 0)
    draft = RatingBackend(answers={"7": 0.5, "8": 0.5}, info=DRAFT_INFO)
    res, ctx = solve(SpeculativeReasoning(k=3, threshold=5.0, draft=draft), task, base, temperature=0.8)
    assert len(res.samples) == 3 and len(ctx.samples) == 3
    assert all(len(call) == 3 for call in draft.generate_calls)  # every chain's step in one call
    assert res.answer == "42" and res.votes == {"42": 3.0}  # every final step rewritten by the base model
    assert [c["kinds"] for c in res.meta["speculative"]["chains"]] == [["draft"] * 3 + ["base"]] * 3


@pytest.mark.parametrize("threshold", [0.0, 5.0, 10.0])
@pytest.mark.parametrize("tokens", [5, 20, 40, 60, 90, 140, 250])
def test_the_budget_is_a_hard_cap(task, threshold: float, tokens: int) -> None:  # type: ignore[no-untyped-def]
    base, draft = models(rating=lambda step: 9 if step.startswith("Step 1:") else 1)
    res, ctx = solve(SpeculativeReasoning(k=2, threshold=threshold, draft=draft, step_tokens=16), task, base,
                     budget=Budget(tokens=tokens), temperature=0.7)
    assert res.usage.total_tokens <= tokens
    if tokens <= 20:
        assert res.meta["budget_exhausted"] and res.answer is None


def test_a_base_model_without_probes_is_refused(task) -> None:  # type: ignore[no-untyped-def]
    _, draft = models()
    with pytest.raises(UnsupportedFeatureError, match="next-token"):
        solve(SpeculativeReasoning(threshold=5.0, draft=draft), task, FakeBackend())
    res, _ = solve(SpeculativeReasoning(threshold=0.0, draft=draft), task, FakeBackend())  # no scores needed
    assert res.answer == "7"


def test_options_from_the_record() -> None:
    spec = strategy_specs()["speculative-reasoning"]
    strat = spec.build(threshold=5, k=2, draft="qwen2.5-coder-0.5b")
    assert isinstance(strat, SpeculativeReasoning) and strat.threshold == 5 and strat.k == 2
    assert strat.describe()["draft"] == "qwen2.5-coder-0.5b" and strat._opened is None  # opened lazily
    for bad in ({"threshold": 11.0}, {"k": 0}, {"draft": ""}, {"thresold": 3.0}):
        with pytest.raises(ConfigError):
            spec.build(**bad)
    with pytest.raises(ConfigError):
        spec.build(verifier=object())
