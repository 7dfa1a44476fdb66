"""Curve invariants on synthetic pools, strategy parsing, and loading pools from the store."""

from __future__ import annotations

import numpy as np
import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError, StoreError
from ttscale.replay import compute_curves, default_curves, load_pool, parse_strategy
from ttscale.replay.curves import default_budgets
from ttscale.run import Sweep, execute
from ttscale.store import Store
from ttscale.tasks.jsonl import JsonlTask
from ttscale.testing.synthetic import synthetic_pool


@pytest.fixture(scope="module")
def curves():  # type: ignore[no-untyped-def]
    return compute_curves(synthetic_pool(120, 32, seed=1), default_curves(), n_orders=32, n_bootstrap=50)


def test_every_strategy_has_every_budget_and_sane_costs(curves) -> None:  # type: ignore[no-untyped-def]
    ks = default_budgets(32)
    assert len(curves.strategies) == 8
    for name in curves.strategies:
        pts = curves.curve(name)
        expected = [k for k in ks if not (name == "short-3" and k < 3)]
        assert [p.k for p in pts] == expected
        for p in pts:
            assert p.ci_low <= p.accuracy + 1e-9 and p.accuracy <= p.ci_high + 1e-9
            assert 0 <= p.generated_tokens <= p.total_tokens and p.flops > 0
            assert p.samples <= p.k + 1e-9
        gen = [p.generated_tokens for p in pts]
        assert gen == sorted(gen)  # more budget never costs less


def test_k1_strategies_agree_and_early_stopping_saves(curves) -> None:  # type: ignore[no-untyped-def]
    k1 = {n: curves.curve(n)[0] for n in ("pass@k", "majority", "weighted-majority", "best-of-n", "short-1")}
    assert len({round(p.accuracy, 12) for p in k1.values()}) == 1
    full = curves.curve("majority")[-1]
    for n in ("short-1", "short-3", "adaptive"):
        assert curves.curve(n)[-1].generated_tokens < full.generated_tokens
    assert curves.curve("adaptive")[-1].samples < 32
    # coverage is an upper bound on every selection rule (resampled points carry sampling noise)
    for n in curves.strategies:
        for p, c in zip(reversed(curves.curve(n)), reversed(curves.curve("pass@k")), strict=False):
            assert p.accuracy <= c.accuracy + (1e-9 if p.exact else 0.02)


def test_results_are_reproducible_given_the_seed() -> None:
    pool = synthetic_pool(50, 16, seed=3)
    a = compute_curves(pool, n_orders=8, n_bootstrap=20, seed=7)
    b = compute_curves(pool, n_orders=8, n_bootstrap=20, seed=7)
    assert [p.to_dict() for p in a.points] == [p.to_dict() for p in b.points]


def test_families_are_resampled_whole() -> None:
    from ttscale.planner.data import from_pool

    pool = synthetic_pool(40, 8, seed=2)
    tripled = from_pool(pool).take(np.repeat(np.arange(40), 3)).pool  # every question three times over
    fams = [str(i) for i in np.repeat(np.arange(40), 3)]
    kw = {"n_orders": 8, "n_bootstrap": 400, "seed": 1}

    def width(c) -> float:  # type: ignore[no-untyped-def]
        p = c.curve("majority")[-1]
        return float(p.ci_high - p.ci_low)

    one, naive, grouped = (compute_curves(pool, **kw), compute_curves(tripled, **kw),
                           compute_curves(tripled, families=fams, **kw))
    assert grouped.curve("majority")[-1].accuracy == pytest.approx(one.curve("majority")[-1].accuracy)
    assert width(grouped) > 1.4 * width(naive)  # three copies are not three times the evidence
    assert width(grouped) == pytest.approx(width(one), rel=0.25)
    singletons = compute_curves(pool, families=[str(i) for i in range(40)], **kw)
    assert [p.to_dict() for p in singletons.points] == [p.to_dict() for p in one.points]
    with pytest.raises(ConfigError, match="one family per problem"):
        compute_curves(pool, families=["a"], **kw)


def test_parse_strategy() -> None:
    assert parse_strategy("short:m=3").m == 3
    s = parse_strategy("bon:score=oracle")
    assert s.score == "oracle" and s.oracle and s.name == "best-of-n[oracle]"
    assert parse_strategy("adaptive:threshold=0.9").threshold == 0.9
    for bad in ("nope", "short:m=x", "short:q=1", "adaptive:threshold=2", "rpc:prune=1"):
        with pytest.raises(ConfigError):
            parse_strategy(bad)


def test_bad_budgets_and_missing_scores() -> None:
    pool = synthetic_pool(10, 8)
    with pytest.raises(ConfigError, match="budgets"):
        compute_curves(pool, budgets=[0, 4])
    with pytest.raises(ConfigError, match="no 'judge' scores"):
        compute_curves(pool, [parse_strategy("bon:score=judge")], [2])


def _jsonl(tmp_path, n: int = 4):  # type: ignore[no-untyped-def]
    p = tmp_path / "q.jsonl"
    p.write_text("".join(f'{{"id": "q{i}", "prompt": "What is {i}?", "answer": "42"}}\n' for i in range(n)))
    from ttscale.types import PromptFormat

    return JsonlTask(path=str(p), fmt=PromptFormat(style="completion", max_tokens=32))


def test_load_pool_from_a_sweep(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "s.sqlite")
    be = FakeBackend(answers={"42": 0.5, "41": 0.5}, filler_tokens=lambda r: r.randint(1, 9))
    execute(Sweep(_jsonl(tmp_path), 8, wave=3), store=store, run_id="sw", backend=be)
    pool = load_pool(store, "sw")
    assert (pool.n_problems, pool.k) == (4, 8)
    rows = store.samples("sw")
    first = {pid: s for pid, s in rows if s.index == 0}
    # the fake engine charges the prompt to the first sample of each wave (3 waves): shared prefix,
    # so a k-sample strategy pays the first request's prefill once
    np.testing.assert_allclose(pool.prefill_tokens, [first[p].prefilled_tokens for p in pool.problem_ids])
    assert (pool.sample_tokens == pool.n_tokens).all()
    # FLOPs add up: every sample's decode, plus the first request's prefill once per problem
    info = be.model_info()
    decode = sum(info.flops_for_positions(s.prompt_tokens, s.prompt_tokens + s.n_tokens) for _, s in rows)
    prefill = sum(s.flops - info.flops_for_positions(s.prompt_tokens, s.prompt_tokens + s.n_tokens)
                  for _, s in rows if s.index == 0)
    assert pool.sample_flops.sum() == pytest.approx(decode)
    assert pool.prefill_flops.sum() == pytest.approx(prefill) and prefill > 0
    assert pool.correct.sum() == sum(bool(s.correct) for _, s in rows)
    assert "certainty" in pool.scores
    with pytest.raises(StoreError, match="no run"):
        load_pool(store, "missing")
    with pytest.raises(StoreError, match="only 8"):
        load_pool(store, "sw", k=9)
    store.close()


def test_unshared_prefill_is_charged_per_sample() -> None:
    from ttscale.replay.pool import pool_from_samples
    from ttscale.types import Sample

    # an engine without prefix sharing charges the whole prompt to every sample
    ss = [Sample(i, "", "1", True, 5, 20, 20, 100.0, "stop", logprob=-1.0, wave=0) for i in range(4)]
    pool = pool_from_samples({"p": ss})
    assert pool.prefill_tokens[0] == 0 and (pool.sample_tokens == 25).all()
    c = compute_curves(pool, [parse_strategy("majority")], [1, 4], n_bootstrap=5)
    assert [p.total_tokens for p in c.points] == [25, 100]
    # shared: charged to the first sample only, paid once per problem
    ss = [Sample(i, "", "1", True, 5, 20, 20 if i == 0 else 0, 100.0, "stop", logprob=-1.0) for i in range(4)]
    c = compute_curves(pool_from_samples({"p": ss}), [parse_strategy("majority")], [1, 4], n_bootstrap=5)
    assert [p.total_tokens for p in c.points] == [25, 40]


def test_oracle_best_of_n_is_coverage() -> None:
    pool = synthetic_pool(40, 12, seed=9)
    pool.scores["oracle"] = pool.correct.astype(float)
    c = compute_curves(pool, [parse_strategy("pass"), parse_strategy("bon:score=oracle")], n_bootstrap=5)
    np.testing.assert_allclose(c.per_problem["pass@k"], c.per_problem["best-of-n[oracle]"], atol=1e-12)
