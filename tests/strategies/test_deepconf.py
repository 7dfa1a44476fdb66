"""DeepConf online: the warm-up sets the bar, traces below it do not vote, tokens are counted as spent,
the vote stops sampling once settled, and the budget holds."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ttscale.backends.fake import FAKE_MODEL_INFO
from ttscale.cost import Budget
from ttscale.errors import ConfigError
from ttscale.registry import make_strategy, strategy_spec
from ttscale.strategies.deepconf import (
    DeepConf,
    calibrate,
    consensus_share,
    group_confidences,
    lowest_group_confidence,
    stop_point,
)
from ttscale.testing.fake_steps import ScriptedStepBackend
from ttscale.types import (
    Cancelled,
    Capabilities,
    Completion,
    Generation,
    GenerationRequest,
    ModelInfo,
    OnFinish,
    OnSample,
    ShouldStop,
)

from .helpers import solve

HIGH, LOW = -0.1, -3.0


def trace(answer: str, n: int = 12, dip: tuple[int, int] | None = None) -> tuple[str, list[float]]:
    """A scripted trace: ``n`` tokens at log-prob HIGH, tokens [a, b) at LOW (a low-confidence stretch)."""
    lps = [HIGH] * n
    if dip:
        lps[dip[0]: dip[1]] = [LOW] * (dip[1] - dip[0])
    return answer, lps


@dataclass
class ScriptBackend:
    """Serves scripted traces in order, ``request.n`` at a time; no step hooks."""

    traces: list[tuple[str, list[float]]]
    parallel: int = 64
    with_logprobs: bool = True
    info: ModelInfo = FAKE_MODEL_INFO
    history: list[GenerationRequest] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "script"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(parallel_sequences=self.parallel, local_prompt_counts=True)

    def model_info(self) -> ModelInfo:
        return self.info

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return 5

    def close(self) -> None:
        pass

    def generate(self, requests: Sequence[GenerationRequest], *, should_stop: ShouldStop | None = None,
                 on_finish: OnFinish | None = None, on_sample: OnSample | None = None,
                 cancelled: Cancelled | None = None) -> list[Generation]:
        """Nothing stops early; ``on_finish``/``on_sample`` are called after the fact, as the protocol says."""
        out = []
        for r in requests:
            self.history.append(r)
            comps = []
            for i in range(r.n):
                answer, lps = self.traces.pop(0)
                n = min(len(lps), r.max_tokens)
                lps = lps[:n]
                comps.append(Completion(text=f"The answer is {answer}.", n_tokens=n, finish_reason="stop",
                                        prompt_tokens=5, logprob=sum(lps) if self.with_logprobs else None,
                                        token_logprobs=lps if self.with_logprobs else None, index=i, finish_order=i))
            comps[0].prefilled_tokens = 5
            out.append(Generation(r, comps, prompt_tokens=5, prefilled_tokens=5))
            for c in comps:
                if on_finish is not None:
                    on_finish(len(out) - 1, c.index)
                if on_sample is not None:
                    on_sample(len(out) - 1, c.index, c.text)
        return out


def test_confidence_helpers() -> None:
    assert group_confidences([], 4).size == 0
    assert group_confidences([-1.0, -3.0], 4).tolist() == [-2.0]  # shorter than a window: one group
    assert lowest_group_confidence(None, 4) == -math.inf
    lps = [HIGH] * 10 + [LOW] * 4 + [HIGH] * 10
    assert lowest_group_confidence(lps, 4) == pytest.approx(LOW)
    # the first window whose mean drops below -1 (tokens 8-11, two of them LOW: mean -1.55) ends at 12 tokens
    assert stop_point(lps, 4, -1.0) == 12
    assert stop_point(lps, 4, -5.0) is None and stop_point(lps[:3], 4, -1.0) is None
    assert calibrate([-3.0, -2.0, -1.0, 0.0], 0.9) == pytest.approx(np.percentile([-3, -2, -1, 0], 10))
    assert calibrate([-math.inf], 0.5) == -math.inf
    assert consensus_share(["1", "1", "2"], [1.0, 1.0, 2.0], None) == 0.5


def test_warmup_calibrates_the_bar_and_low_traces_do_not_vote(task) -> None:
    # warm-up: two confident "42", two "41" with a low stretch; keep 0.5 -> the bar sits between them.
    script = [trace("42"), trace("41", dip=(2, 8)), trace("42"), trace("41", dip=(4, 10))]
    # later: three more low-confidence "41" (a majority of all traces) and two confident "42"
    script += [trace("41", dip=(0, 6)), trace("42"), trace("41", dip=(3, 9)), trace("41", dip=(6, 12)), trace("42")]
    be = ScriptBackend(script)
    res, ctx = solve(DeepConf(k=9, warmup=4, keep=0.5, window=4, threshold=1.0), task, be)
    warm = [lowest_group_confidence(s.token_logprobs, 4) for s in ctx.samples[:4]]
    assert res.meta["threshold_confidence"] == pytest.approx(np.percentile(warm, 50))
    assert [r.n for r in be.history] == [4, 5]
    assert res.answer == "42" and res.correct  # self-consistency would say 41 (5 votes to 4)
    assert all(ctx.samples[i].answer == "42" for i in res.samples) and "41" not in res.votes
    assert res.meta["voters"] == 4 and res.meta["dropped"] == 5 and not res.meta["fallback"]
    assert res.meta["trace_stop"] == "after-the-fact"


def test_tokens_are_what_was_generated_and_the_online_estimate_is_the_cut(task) -> None:
    script = [trace("42", 20), trace("42", 20), trace("42", 20, dip=(5, 9)), trace("42", 20)]
    be = ScriptBackend(script)
    res, ctx = solve(DeepConf(k=4, warmup=2, keep=0.5, window=4, threshold=1.0), task, be)
    assert ctx.meter.usage.generated_tokens == 80 == res.meta["tokens_generated"]  # the dropped trace is paid in full
    # the bar is HIGH (both warm-up traces are uniform): the dipped trace would stop once its first window
    # (tokens 2..5) averages below it, after 6 tokens
    assert res.meta["threshold_confidence"] == pytest.approx(HIGH)
    assert res.meta["tokens_if_stopped_online"] == 20 + 20 + 6 + 20
    assert res.meta["dropped"] == 1 and 2 not in res.samples and len(res.samples) == 3


def test_a_settled_vote_stops_sampling(task) -> None:
    be = ScriptBackend([trace("42") for _ in range(16)], parallel=2)
    res, ctx = solve(DeepConf(k=16, warmup=2, keep=0.9, window=4), task, be)
    assert [r.n for r in be.history] == [2, 2]  # warm-up, then one wave: unanimous (share 1.0 >= 0.95)
    assert res.meta["started"] == 4 == len(ctx.samples) and res.meta["wave"] == 2
    assert res.meta["consensus"] == [1.0]


def test_a_split_vote_runs_to_k(task) -> None:
    be = ScriptBackend([trace("42" if i % 2 else "7") for i in range(8)], parallel=3)
    res, _ = solve(DeepConf(k=8, warmup=2, keep=1.0, window=4), task, be)
    assert [r.n for r in be.history] == [2, 3, 3] and res.meta["started"] == 8
    assert all(c < 0.95 for c in res.meta["consensus"])


def test_budget_is_respected(task) -> None:
    be = ScriptBackend([trace("42", 12) for _ in range(16)])
    res, ctx = solve(DeepConf(k=16, warmup=4, threshold=1.0, window=4), task, be, Budget(tokens=60))
    assert ctx.meter.usage.total_tokens <= 60
    assert res.meta["budget_exhausted"] and res.meta["started"] < 16 and res.answer == "42"


def test_a_warmup_as_large_as_k_is_the_offline_variant(task) -> None:
    script = [trace("41", dip=(0, 6)), trace("42"), trace("41", dip=(2, 8))]
    be = ScriptBackend(script)
    res, _ = solve(DeepConf(k=3, warmup=16, keep=0.34, window=4), task, be)
    assert [r.n for r in be.history] == [3] and res.answer == "42" and res.meta["dropped"] == 2


def test_without_log_probs_it_is_a_plain_consensus_vote(task) -> None:
    be = ScriptBackend([trace("42") for _ in range(3)] + [trace("7")], with_logprobs=False)
    res, _ = solve(DeepConf(k=4, warmup=2, window=4, threshold=1.0), task, be)
    assert res.votes == {"42": 3.0, "7": 1.0} and res.meta["confidence_proxy"].startswith("none")


def test_with_step_hooks_a_wave_is_cut_once_the_vote_settles(task) -> None:
    """Cancellation hooks (the scripted step engine): after two agreeing warm-up traces, the first
    finished sample of the next wave settles the vote, and the rest are cancelled at the next step."""
    lengths = [4, 3, 9, 5, 20, 2]  # filler tokens of sample i of each request (4 answer tokens follow)
    be = ScriptedStepBackend(lengths=lambda i: lengths[i])
    res, ctx = solve(DeepConf(k=8, warmup=2, window=4), task, be)
    assert [r.n for r in be.history] == [2, 6]
    wave = [s for s in ctx.samples if s.wave == 1]
    done = [s for s in wave if s.finish_reason == "stop"]
    assert len(done) == 1 and done[0].n_tokens == 6  # the 2-filler sample finishes first
    assert all(s.finish_reason == "cancelled" and s.n_tokens == 6 for s in wave if s not in done)
    assert res.meta["cancelled"] == 5 and res.meta["voters"] == 3 and res.meta["online_cancellation"]
    assert all(ctx.samples[i].finish_reason == "stop" for i in res.samples)
    assert ctx.meter.usage.generated_tokens == sum(s.n_tokens for s in ctx.samples)  # cancelled tokens are paid


def test_record_options_and_bad_knobs() -> None:
    spec = strategy_spec("deepconf")
    assert {"k", "warmup", "keep", "window", "threshold", "batch"} <= set(spec.knobs)
    s = make_strategy("deepconf", k=8, warmup=2, keep=0.1, window=32, threshold=0.9)
    assert s.describe() == {"name": "deepconf", "k": 8, "warmup": 2, "keep": 0.1, "window": 32,
                            "threshold": 0.9, "batch": None}
    for bad in ({"warmup": 0}, {"keep": 0.0}, {"window": 0}, {"threshold": 0.5}, {"k": 0}):
        with pytest.raises(ConfigError):
            make_strategy("deepconf", **bad)


def test_cli_run_with_the_fake_backend(tmp_path: Path) -> None:
    from ttscale.cli import app

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}", "answer": 42}) + "\n" for i in range(2)))
    out = tmp_path / "sum.json"
    r = CliRunner().invoke(app, ["run", "--backend", "fake", "--task", "jsonl", "--data", str(data), "--strategy",
                                 "deepconf", "-k", "6", "-o", "warmup=2", "-o", "keep=0.5", "--threshold", "0.9",
                                 "--store", str(tmp_path / "s.sqlite"), "--output", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    summary = json.loads(out.read_text())
    assert summary["config"]["strategy"]["name"] == "deepconf" and summary["accuracy"] == 1.0
