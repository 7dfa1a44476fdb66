"""Replay estimators against brute-force enumeration of every k-subset (and the strategies' own vote code)."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import betainc

from ttscale.replay import estimators as est
from ttscale.replay.curves import CurveSpec, compute_curves
from ttscale.replay.pool import pool_from_samples
from ttscale.strategies.voting import weighted_vote
from ttscale.types import Sample

K = 6


def make_samples(seed: int, n_problems: int = 4, k: int = K) -> dict[str, list[Sample]]:
    """Small pools with ties everywhere: equal lengths, equal vote counts, missing answers."""
    rng = random.Random(seed)
    out = {}
    for p in range(n_problems):
        ss = []
        for i in range(k):
            a = rng.choice(["1", "2", "3", None, "1"])
            n = rng.randint(2, 6)
            lp = -rng.random() * n
            ss.append(Sample(index=i, text="", answer=a, correct=a == "1", n_tokens=n, prompt_tokens=10,
                             prefilled_tokens=10 if i == 0 else 0, flops=float(n), finish_reason="stop",
                             logprob=lp, finish_order=rng.randrange(k), wave=0,
                             scores={"certainty": round(math.exp(lp / n), 1)}))  # rounded: score ties
        out[f"p{p}"] = ss
    return out


def brute(by_problem: dict[str, list[Sample]], k: int, rule) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Mean over all k-subsets of rule(subset) -> (correct, generated tokens), per problem."""
    rows = []
    for ss in by_problem.values():
        vals = [rule(list(c), ss) for c in itertools.combinations(ss, k)]
        rows.append(np.mean(vals, axis=0))
    return np.array(rows)


def vote_rule(weight=None):  # type: ignore[no-untyped-def]
    def rule(sub: list[Sample], _all: list[Sample]) -> tuple[float, float]:
        ans, _ = weighted_vote(sub, None if weight is None else [weight(s, _all) for s in sub])
        return float(ans == "1"), float(sum(s.n_tokens for s in sub))
    return rule


def bon_rule(sub: list[Sample], _all: list[Sample]) -> tuple[float, float]:
    answered = [s for s in sub if s.answer is not None]
    if not answered:
        return 0.0, 0.0
    best = max(answered, key=lambda s: (s.scores["certainty"], -s.index))
    return float(best.answer == "1"), 0.0


def short_rule(m: int):  # type: ignore[no-untyped-def]
    def rule(sub: list[Sample], _all: list[Sample]) -> tuple[float, float]:
        done = sorted(sub, key=lambda s: (s.n_tokens, s.finish_order, s.wave, s.index))[:m]
        ans, _ = weighted_vote(sorted(done, key=lambda s: s.index))
        t = done[-1].n_tokens
        return float(ans == "1"), float(sum(min(s.n_tokens, t) for s in sub))
    return rule


def rpc_weight_rule(prune: float):  # type: ignore[no-untyped-def]
    def rule(sub: list[Sample], all_: list[Sample]) -> tuple[float, float]:
        mlp = np.array([s.logprob / s.n_tokens for s in all_])
        cut = np.quantile(mlp, prune)
        top = max(s.logprob for s in all_)
        kept = [s if s.logprob / s.n_tokens >= cut else Sample(s.index, "", None, False, s.n_tokens, 10, 0, 0.0, "stop",
                                                                 logprob=s.logprob) for s in sub]
        ans, _ = weighted_vote(kept, [math.exp(s.logprob - top) for s in kept])
        return float(ans == "1"), 0.0
    return rule


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vote_estimators_match_brute_force(seed: int) -> None:
    by = make_samples(seed)
    pool = pool_from_samples(by)
    specs = [CurveSpec("pass@k", "pass"), CurveSpec("majority", "majority"),
             CurveSpec("wm", "weighted-majority", score="certainty"), CurveSpec("bon", "best-of-n"),
             CurveSpec("rpc", "rpc", prune=0.3), CurveSpec("short-1", "short", m=1),
             CurveSpec("short-2", "short", m=2)]
    # n_orders >= C(6, 3) = 20: every budget is enumerated exactly
    curves = compute_curves(pool, specs, list(range(1, K + 1)), n_orders=20, n_bootstrap=10)
    assert all(p.exact for p in curves.points)
    for k in range(1, K + 1):
        i = k - 1
        cov = brute(by, k, lambda sub, _a: (float(any(s.correct for s in sub)), 0.0))[:, 0]
        np.testing.assert_allclose(curves.per_problem["pass@k"][:, i], cov, atol=1e-12)
        maj = brute(by, k, vote_rule())
        np.testing.assert_allclose(curves.per_problem["majority"][:, i], maj[:, 0], atol=1e-12)
        wm = brute(by, k, vote_rule(lambda s, _a: s.scores["certainty"]))[:, 0]
        np.testing.assert_allclose(curves.per_problem["wm"][:, i], wm, atol=1e-12)
        np.testing.assert_allclose(curves.per_problem["bon"][:, i], brute(by, k, bon_rule)[:, 0], atol=1e-12)
        np.testing.assert_allclose(curves.per_problem["rpc"][:, i], brute(by, k, rpc_weight_rule(0.3))[:, 0], atol=1e-12)
        for m in (1, 2):
            if k < m:
                continue
            b = brute(by, k, short_rule(m))
            np.testing.assert_allclose(curves.per_problem[f"short-{m}"][:, i], b[:, 0], atol=1e-12)
            pt = next(p for p in curves.curve(f"short-{m}") if p.k == k)
            assert pt.generated_tokens == pytest.approx(b[:, 1].mean())
        # full-k strategies: expected generated tokens = mean over subsets of their lengths
        pt = next(p for p in curves.curve("majority") if p.k == k)
        assert pt.generated_tokens == pytest.approx(maj[:, 1].mean())
        # prefill counted once per problem (the engine charged it to sample 0)
        assert pt.total_tokens == pytest.approx(10 + maj[:, 1].mean())


def test_resampled_estimates_approach_exact() -> None:
    by = make_samples(5, n_problems=30, k=12)
    pool = pool_from_samples(by)
    specs = [CurveSpec("majority", "majority"), CurveSpec("short-2", "short", m=2)]
    exact = compute_curves(pool, specs, [4], n_orders=1000, n_bootstrap=10)  # C(12, 4) = 495: exact
    approx = compute_curves(pool, specs, [4], n_orders=400, n_bootstrap=10, seed=3)
    for name in ("majority", "short-2"):
        e, a = exact.curve(name)[0], approx.curve(name)[0]
        assert e.exact and not a.exact
        assert abs(e.accuracy - a.accuracy) < 0.02
        assert abs(e.generated_tokens - a.generated_tokens) / e.generated_tokens < 0.02


@given(st.integers(1, 60), st.data())
@settings(max_examples=60, deadline=None)
def test_pass_at_k_matches_combinatorics(n: int, data: st.DataObject) -> None:
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    want = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert float(est.pass_at_k(n, c, k)) == pytest.approx(want, abs=1e-12)
    assert est.pass_at_k_product(n, c, k) == pytest.approx(want, abs=1e-12)


def test_pass_at_k_large_n_is_stable() -> None:
    v = est.pass_at_k(np.array([10_000, 10_000]), np.array([1, 0]), 5000)
    assert v[0] == pytest.approx(0.5) and v[1] == 0.0


def test_adaptive_stop_matches_sequential_simulation() -> None:
    rng = np.random.default_rng(0)
    answer = rng.integers(-1, 3, size=(20, 16))
    orders = est.random_orders(20, 16, 8, rng)
    got = est.adaptive_stop(answer, orders, 0.9)
    for p in range(20):
        for r in range(8):
            counts: Counter[int] = Counter()
            stop = 16
            for j, s in enumerate(orders[p, r]):
                if answer[p, s] >= 0:
                    counts[int(answer[p, s])] += 1
                top = sorted(counts.values(), reverse=True) + [0, 0]
                v1, v2 = top[0], top[1]
                if v1 > v2 and betainc(v2 + 1, v1 + 1, 0.5) >= 0.9:
                    stop = j + 1
                    break
            assert got[p, r] == stop


def test_adaptive_curve_matches_python_loop() -> None:
    by = make_samples(7, n_problems=6, k=10)
    pool = pool_from_samples(by)
    spec = CurveSpec("adaptive", "adaptive", threshold=0.8)
    curves = compute_curves(pool, [spec], [3, 10], n_orders=16, n_bootstrap=10, seed=4)
    orders = est.random_orders(pool.n_problems, pool.k, 16, np.random.default_rng(4))
    stops = est.adaptive_stop(pool.answer, orders, 0.8)
    for ki, k in enumerate([3, 10]):
        accs, toks = [], []
        for p, ss in enumerate(by.values()):
            a, t = [], []
            for r in range(16):
                n = min(stops[p, r], k)
                drawn = [ss[i] for i in orders[p, r, :n]]
                ans, _ = weighted_vote(sorted(drawn, key=lambda s: s.index))
                a.append(ans == "1")
                t.append(sum(s.n_tokens for s in drawn))
            accs.append(np.mean(a))
            toks.append(np.mean(t))
        np.testing.assert_allclose(curves.per_problem["adaptive"][:, ki], accs)
        assert curves.curve("adaptive")[ki].generated_tokens == pytest.approx(np.mean(toks))
        assert curves.curve("adaptive")[ki].samples <= k


def test_vote_tie_rule_matches_weighted_vote() -> None:
    # two answers with equal counts: the larger summed log-prob wins; then the earlier sample
    ss = [Sample(0, "", "2", False, 3, 1, 0, 0.0, "stop", logprob=-1.0),
          Sample(1, "", "1", True, 3, 1, 0, 0.0, "stop", logprob=-0.5)]
    pool = pool_from_samples({"p": ss})
    c = compute_curves(pool, [CurveSpec("majority", "majority")], [2], n_bootstrap=5)
    assert c.points[0].accuracy == (weighted_vote(ss)[0] == "1") == 1.0
