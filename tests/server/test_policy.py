"""`ttscale serve --policy`: a fitted plan answers requests (official OpenAI client, streaming), explains its
choice, keeps usage exact and a hard budget; `ttscale.trace` returns (and logs) the calls behind an answer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.planner.data import PlanPool
from ttscale.planner.policy import Policy, fit_policy
from ttscale.server.config import ServerConfig
from ttscale.testing.synthetic import synthetic_pool

from .conftest import RunningServer, run_server

MSG = [{"role": "user", "content": "What is 6 times 7?"}]


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    pool = synthetic_pool(120, 16, seed=4)
    pp = PlanPool(pool, np.full(pool.n_problems, 20.0), ["syn"] * pool.n_problems)
    fitted = fit_policy(pp, probes=(1, 2), n_bins=3, n_orders=16, source={"model": "fake", "pools": ["syn"]})
    path = tmp_path_factory.mktemp("plan") / "policy.json"
    fitted.save(path)
    return Policy.load(path)  # as `ttscale serve --policy FILE` reads it


@pytest.fixture
def policy_server(policy: Policy) -> Iterator[RunningServer]:
    backend = FakeBackend(answers={"42": 0.5, "41": 0.3, "7": 0.2})
    with run_server(ServerConfig(backend=backend, model_name="fake", policy=policy)) as s:
        yield s


def _client(s: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{s.base_url}/v1", api_key="unused", max_retries=0)


def test_a_request_without_a_strategy_is_answered_by_the_plan(policy_server: RunningServer, policy: Policy) -> None:
    budget = sorted(lv.budget for lv in policy.levels)[len(policy.levels) // 2]
    r = _client(policy_server).chat.completions.create(
        model="fake", messages=MSG, seed=1, extra_body={"ttscale": {"budget": {"tokens": int(budget) + 1}}})
    ext = r.model_extra["ttscale"]  # type: ignore[index]
    assert ext["strategy"] == "policy" and ext["strategy_source"] == "default"
    why = ext["choices"][0]["policy"]
    level = policy.level_for(int(budget) + 1)
    assert why["level_budget_tokens"] == level.budget and why["probe"] == level.probe
    assert why["choice"] in {b.choice.label for b in level.bins}
    k = int(why["choice"].rsplit("@", 1)[1])
    samples = ext["choices"][0]["samples"]
    assert len(samples) == max(k, level.probe)
    # usage is what the engine did, and the request's budget held
    assert r.usage is not None and r.usage.total_tokens == ext["usage"]["total_tokens"] <= int(budget) + 1
    assert r.usage.completion_tokens == sum(s["generated_tokens"] for s in samples)
    assert "trace" not in ext["choices"][0]  # untraced requests carry no trace


def test_the_plan_streams_through_the_official_client(policy_server: RunningServer) -> None:
    stream = _client(policy_server).chat.completions.create(model="fake", messages=MSG, seed=2, stream=True,
                                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "The answer is" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert chunks[-1].model_extra["ttscale"]["strategy"] == "policy"  # type: ignore[index]


def test_a_trace_shows_every_call_and_adds_up_to_usage(policy_server: RunningServer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ttscale.server.trace"):
        r = _client(policy_server).chat.completions.create(model="fake", messages=MSG, seed=3,
                                                           extra_body={"ttscale": {"trace": True}})
    ext = r.model_extra["ttscale"]  # type: ignore[index]
    calls = ext["choices"][0]["trace"]
    assert calls and all(c["call"] == "generate" for c in calls)
    traced = sum(q["prefilled_tokens"] + q["generated_tokens"] for c in calls for q in c["requests"])
    assert r.usage is not None and traced == r.usage.total_tokens
    assert sum(q["n"] for c in calls for q in c["requests"]) == len(ext["choices"][0]["samples"])
    assert any("trace" in rec.getMessage() and '"calls"' in rec.getMessage() for rec in caplog.records)


@pytest.mark.parametrize(("extra", "param"), [({"k": 4}, "ttscale.k"), ({"verifier": "certainty"}, "ttscale.verifier"),
                                              ({"budget": {"tokens": 1}}, "ttscale.budget.tokens")])
def test_the_plan_takes_only_a_budget(policy_server: RunningServer, extra: dict[str, object], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        _client(policy_server).chat.completions.create(model="fake", messages=MSG,
                                                       extra_body={"ttscale": {"strategy": "policy", **extra}})
    assert e.value.status_code == 400 and e.value.body["param"] == param  # type: ignore[index]


def test_other_strategies_still_answer_and_no_plan_means_no_policy(policy_server: RunningServer,
                                                                  fake_server: RunningServer) -> None:
    r = _client(policy_server).chat.completions.create(model="sc3/fake", messages=MSG)
    assert r.model_extra["ttscale"]["strategy"] == "self-consistency"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="no policy"):
        _client(fake_server).chat.completions.create(model="fake", messages=MSG,
                                                     extra_body={"ttscale": {"strategy": "policy"}})


def test_serve_refuses_a_plan_that_switches_models(tmp_path: Path, policy: Policy) -> None:
    from dataclasses import replace

    from typer.testing import CliRunner

    from ttscale.cli import app
    from ttscale.planner.options import Choice

    lv = policy.levels[-1]
    other = replace(lv, bins=[replace(b, choice=Choice(b.choice.kind, b.choice.k, model="bigger")) for b in lv.bins])
    path = tmp_path / "two-model.json"
    replace(policy, levels=[*policy.levels[:-1], other]).save(path)
    r = CliRunner().invoke(app, ["serve", "--backend", "fake", "--policy", str(path)])
    assert r.exit_code != 0 and "other models" in r.output


def _decided(policy: Policy, serve: str) -> Policy:
    """The fixture's plan with a comparison's decision at every level: serve ``serve``, fixed choice majority@3."""
    from dataclasses import replace

    from ttscale.planner.options import Choice

    return replace(policy, levels=[replace(lv, fixed=Choice("majority", 3), serve=serve,
                                           decision={"verdict": "not resolved", "difference": 0.0,
                                                     "difference_ci": [-0.1, 0.1]})
                                   for lv in policy.levels])


@pytest.mark.parametrize("follow", [True, False], ids=["default", "per-prompt"])
def test_a_level_not_shown_better_serves_its_fixed_choice(policy: Policy, follow: bool) -> None:
    plan = _decided(policy, "fixed")
    plan.follow_decisions = follow  # what `ttscale serve --policy` sets (False with --per-prompt)
    backend = FakeBackend(answers={"42": 0.5, "41": 0.3, "7": 0.2})
    with run_server(ServerConfig(backend=backend, model_name="fake", policy=plan)) as s:
        r = _client(s).chat.completions.create(model="fake", messages=MSG, seed=5,
                                               extra_body={"ttscale": {"trace": True}})
        stream = list(_client(s).chat.completions.create(model="fake", messages=MSG, seed=5, stream=True))
    ext = r.model_extra["ttscale"]  # type: ignore[index]
    why = ext["choices"][0]["policy"]
    calls = ext["choices"][0]["trace"]
    assert ext["strategy"] == "policy" and ext["strategy_config"]["fixed"] == "majority@3"
    if follow:
        # the plan still picks rule and k for the budget; every prompt gets them, in one call, without a probe
        assert why["served"] == "fixed" and why["choice"] == "majority@3" and why["decision"]["verdict"] == "not resolved"
        assert len(ext["choices"][0]["samples"]) == 3 and len(calls) == 1 and calls[0]["requests"][0]["n"] == 3
        assert ext["strategy_config"]["serves"] == "fixed"
    else:
        assert why["served"] == "policy" and "features" in why and ext["strategy_config"]["serves"] == "policy"
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_a_level_shown_better_serves_the_policy(policy: Policy) -> None:
    plan = _decided(policy, "policy")
    plan.follow_decisions = True
    with run_server(ServerConfig(backend=FakeBackend(answers={"42": 1.0}), model_name="fake", policy=plan)) as s:
        r = _client(s).chat.completions.create(model="fake", messages=MSG)
    assert r.model_extra["ttscale"]["choices"][0]["policy"]["served"] == "policy"  # type: ignore[index]


def test_serve_says_what_each_level_serves_and_per_prompt_needs_a_policy(policy: Policy) -> None:
    from typer.testing import CliRunner

    from ttscale.cli import app
    from ttscale.cli.serve import serving_summary

    plan = _decided(policy, "fixed")
    plan.follow_decisions = True
    assert "majority@3" in serving_summary(plan) and "--per-prompt to override" in serving_summary(plan)
    plan.follow_decisions = False
    assert "majority@3" not in serving_summary(plan) and "(--per-prompt)" in serving_summary(plan)
    assert "records no comparison" in serving_summary(policy)
    r = CliRunner().invoke(app, ["serve", "--backend", "fake", "--per-prompt"])
    assert r.exit_code != 0 and "--per-prompt needs --policy" in r.output
