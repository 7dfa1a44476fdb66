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
