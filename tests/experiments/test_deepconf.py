"""DeepConf replay: offline matches a brute-force vote, the online simulation matches the strategy run
one trace at a time, SC and adaptive match ``ttscale curves``, partial pools load, and the page builds."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ttscale.backends.fake import FAKE_MODEL_INFO
from ttscale.cost import Meter
from ttscale.pools import pool_files, shipped_runs
from ttscale.replay import confidence as conf
from ttscale.replay import estimators as est
from ttscale.replay.curves import CurveSpec, compute_curves
from ttscale.replay.pool import pool_from_samples
from ttscale.store import Store
from ttscale.strategies.base import SolveContext
from ttscale.strategies.deepconf import DeepConf, calibrate, lowest_group_confidence, trace_weight
from ttscale.strategies.voting import weighted_vote
from ttscale.tasks.jsonl import JsonlTask
from ttscale.types import (
    Cancelled,
    Capabilities,
    Completion,
    Generation,
    GenerationRequest,
    ModelInfo,
    OnFinish,
    OnSample,
    Problem,
    PromptFormat,
    Sample,
    ShouldStop,
)

WINDOW = 4


@dataclass
class ScriptBackend:
    """Serves scripted (answer, token log-probs) traces in order, ``request.n`` at a time; no step hooks."""

    traces: list[tuple[str, list[float]]]
    capabilities: Capabilities = field(default_factory=lambda: Capabilities(parallel_sequences=64))
    name: str = "script"

    def model_info(self) -> ModelInfo:
        return FAKE_MODEL_INFO

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
            comps = []
            for i in range(r.n):
                answer, lps = self.traces.pop(0)
                comps.append(Completion(f"The answer is {answer}.", len(lps), "stop", 5, logprob=sum(lps),
                                        token_logprobs=lps, index=i, finish_order=i))
            out.append(Generation(r, comps, prompt_tokens=5, prefilled_tokens=5))
            for c in comps:
                if on_finish is not None:
                    on_finish(len(out) - 1, c.index)
                if on_sample is not None:
                    on_sample(len(out) - 1, c.index, c.text)
        return out


def _task(tmp_path: Path) -> JsonlTask:
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"id": "p1", "prompt": "What is 6 times 7?", "answer": "42"}) + "\n")
    return JsonlTask(path=str(data), fmt=PromptFormat(style="completion", max_tokens=64))


def _samples(P: int = 6, K: int = 8, seed: int = 3) -> dict[str, list[Sample]]:
    """Synthetic problems whose answer "42" is right; log-probs with random low stretches."""
    rng = random.Random(seed)
    out = {}
    for p in range(P):
        ss = []
        for j in range(K):
            answer = rng.choices(["42", "41", "7"], weights=[0.5, 0.3, 0.2])[0]
            n = rng.randrange(6, 30)
            lps = [-abs(rng.gauss(0.2, 0.2)) for _ in range(n)]
            if rng.random() < 0.5:
                a = rng.randrange(0, n)
                lps[a: a + 5] = [-abs(rng.gauss(2.0, 1.0)) for _ in lps[a: a + 5]]
            ss.append(Sample(j, f"The answer is {answer}.", answer, answer == "42", n, 5, 5 if j == 0 else 0, 0.0,
                             "stop", sum(lps), lps, finish_order=j))
        out[f"p{p}"] = ss
    return out


def _cpool(by_problem: dict[str, list[Sample]]) -> conf.ConfidencePool:
    pool = pool_from_samples(by_problem, info=FAKE_MODEL_INFO)
    return conf.confidence_pool(pool, [[s.token_logprobs for s in by_problem[pid]] for pid in pool.problem_ids], WINDOW)


@pytest.mark.parametrize(("k", "keep"), [(8, 0.5), (8, 0.1), (3, 0.9), (3, 0.5)])
def test_offline_matches_a_brute_force_vote(k: int, keep: float) -> None:
    by_problem = _samples()
    cp = _cpool(by_problem)
    combos = est.exact_orders(cp.pool.k, k)
    order = np.broadcast_to(combos, (cp.pool.n_problems, *combos.shape))
    got = conf.offline(cp, order, k, keep)
    for p, pid in enumerate(cp.pool.problem_ids):
        for r, subset in enumerate(combos):
            ss = [by_problem[pid][j] for j in subset]
            low = [lowest_group_confidence(s.token_logprobs, WINDOW) for s in ss]
            bar = calibrate(low, keep)
            voters = [(s, lo) for s, lo in zip(ss, low, strict=True) if lo >= bar] or list(zip(ss, low, strict=True))
            answer, _ = weighted_vote([s for s, _ in voters], [trace_weight(lo) for _, lo in voters])
            assert got.correct[p, r] == (answer == "42")
            assert got.tokens[p, r] == sum(s.n_tokens for s in ss)


@pytest.mark.parametrize(("warmup", "keep", "threshold"), [(2, 0.5, 0.95), (3, 0.9, 0.8), (2, 0.1, 1.0)])
def test_online_simulation_matches_the_strategy_one_trace_at_a_time(tmp_path: Path, warmup: int, keep: float,
                                                                    threshold: float) -> None:
    by_problem = _samples()
    cp = _cpool(by_problem)
    order = conf.orderings(cp.pool, 5, seed=1)
    sim = conf.online(cp, order, conf.OnlineSettings(warmup=warmup, keep=keep, threshold=threshold, wave=1))
    task = _task(tmp_path)
    prob = task.problems()[0]
    for p, pid in enumerate(cp.pool.problem_ids):
        for r in range(order.shape[1]):
            ss = [by_problem[pid][j] for j in order[p, r]]
            be = ScriptBackend([(s.answer or "", list(s.token_logprobs or [])) for s in ss])
            ctx = SolveContext(prob, be, task, Meter(FAKE_MODEL_INFO))
            strat = DeepConf(k=cp.pool.k, warmup=warmup, keep=keep, window=WINDOW, threshold=threshold, batch=1)
            res = strat.solve(prob, ctx)
            assert sim.correct[p, r] == res.correct
            assert sim.traces[p, r] == res.meta["started"]
            # the simulated engine stops low traces at their first low window: the strategy's estimate of that
            assert sim.tokens[p, r] == res.meta["tokens_if_stopped_online"]
            assert res.meta["tokens_generated"] >= res.meta["tokens_if_stopped_online"]


def test_one_wave_cuts_unfinished_traces_once_the_vote_settles() -> None:
    """All agree and are equally confident: after the warm-up, the shortest trace of the wave settles the
    vote and the others are cut at its length."""
    lengths = [10, 12, 7, 9, 20, 15]
    by_problem = {"p": [Sample(j, "", "42", True, n, 5, 0, 0.0, "stop", -0.1 * n, [-0.1] * n, finish_order=j)
                        for j, n in enumerate(lengths)]}
    cp = _cpool(by_problem)
    order = np.arange(6).reshape(1, 1, 6)
    got = conf.online(cp, order, conf.OnlineSettings(warmup=2, keep=0.5, threshold=0.95))
    assert got.tokens[0, 0] == 10 + 12 + 4 * 7 and got.traces[0, 0] == 6 and got.correct[0, 0]
    one = conf.online(cp, order, conf.OnlineSettings(warmup=2, keep=0.5, threshold=0.95, wave=1))
    assert one.tokens[0, 0] == 10 + 12 + 7 and one.traces[0, 0] == 3


def test_self_consistency_and_adaptive_match_ttscale_curves() -> None:
    cp = _cpool(_samples(P=8, K=8))
    pool = cp.pool
    order = conf.orderings(pool, 32, seed=0)
    curves = compute_curves(pool, [CurveSpec("majority", "majority"), CurveSpec("adaptive", "adaptive")],
                            budgets=[pool.k], n_orders=32, seed=0)
    sc, ad = conf.self_consistency(pool, order, pool.k), conf.adaptive(pool, order, 0.95)
    assert sc.accuracy.mean() == pytest.approx(curves.curve("majority")[0].accuracy)
    assert ad.accuracy.mean() == pytest.approx(curves.curve("adaptive")[0].accuracy)
    assert ad.mean_tokens.mean() == pytest.approx(curves.curve("adaptive")[0].generated_tokens)
    assert ad.traces.mean() == pytest.approx(curves.curve("adaptive")[0].samples)


def test_a_partial_pool_keeps_only_its_complete_problems(tmp_path: Path) -> None:
    st = Store(tmp_path / "s.sqlite")
    st.open_run("part", {"task": {"name": "jsonl"}}, {"name": "fake", **asdict(FAKE_MODEL_INFO)}, kind="sweep")
    st.add_problems("part", [Problem(f"p{i}", "q", "42") for i in range(4)])
    by_problem = _samples(P=3, K=8)
    st.add_samples("part", "p0", by_problem["p0"])
    st.add_samples("part", "p1", by_problem["p1"])
    st.add_samples("part", "p2", by_problem["p2"][:3])  # the problem in progress; p3 has none yet
    cp = conf.load_confidence_pool(st, "part", WINDOW)
    assert cp.pool.problem_ids == ["p0", "p1"] and cp.pool.k == 8
    assert "1 without samples yet and 1 with fewer than 8 left out" in cp.notes[0]
    assert cp.lowest[0, 0] == pytest.approx(lowest_group_confidence(by_problem["p0"][0].token_logprobs, WINDOW))
    st.close()


@pytest.mark.skipif(not pool_files() or "gsm8k-qwen05-k16" not in shipped_runs(), reason="no shipped GSM8K pool")
def test_the_page_builds_from_the_shipped_pools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ttscale.cli import app
    from ttscale.experiments import deepconf, experiments

    assert "deepconf" in experiments()
    monkeypatch.setattr(deepconf, "N_ORDERS", 16)  # the page's numbers at 128 orderings; the build is what counts here
    res = CliRunner().invoke(app, ["experiment", "deepconf", "--pool", "gsm8k-qwen05-k16", "--pool", "gsm8k-qwen15-k16",
                                   "--pool", "absent", "--output", str(tmp_path)])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "deepconf.md").read_text()
    assert "## The claim" in page and "53-85%" in page and "the claim" in page and "95% CI" in page
    assert "DeepConf-high online, one at a time" in page and "adaptive consistency" in page
    assert "`absent`" in page and "sampled-token log-prob" in page
    assert (tmp_path / "deepconf.png").read_bytes()[:4] == b"\x89PNG"


def test_exact_orders_cover_every_subset() -> None:
    # the brute-force test above relies on exact_orders enumerating all k-subsets once
    assert len(est.exact_orders(8, 3)) == len(list(itertools.combinations(range(8), 3)))
