"""The train/test split is disjoint by construction; evaluation never uses fitted problems."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttscale.errors import ConfigError
from ttscale.planner.evaluate import Split, evaluate_policy, split_problems
from ttscale.planner.policy import fit_policy

from .helpers import Group, known_pool

MIXED = [Group(30, 1.0, lp=-0.3), Group(30, 0.0, dominant=1.0, lp=-1.6), Group(30, 0.45, wrong=8, lp=-1.0)]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.text(min_size=1, max_size=6), st.sampled_from("abc")), min_size=2, max_size=60,
             unique_by=lambda t: t[0]),
    st.floats(0.05, 0.95),
    st.integers(0, 5),
)
def test_split_is_a_partition(items: list[tuple[str, str]], frac: float, seed: int) -> None:
    ids = [i for i, _ in items]
    groups = [g for _, g in items]
    s = split_problems(ids, groups, test_fraction=frac, seed=seed)
    assert not set(s.train) & set(s.test)
    assert sorted(s.train + s.test) == sorted(ids)
    for g in set(groups):
        members = {i for i, gg in items if gg == g}
        if len(members) >= 2:  # every group is on both sides
            assert members & set(s.train) and members & set(s.test)
    assert split_problems(ids, groups, test_fraction=frac, seed=seed) == s  # reproducible


def test_overlapping_split_and_duplicate_ids_are_refused() -> None:
    with pytest.raises(ConfigError, match="share problems"):
        Split(("a", "b"), ("b",))
    with pytest.raises(ConfigError, match="unique"):
        split_problems(["a", "a", "b"])


def test_held_out_evaluation_beats_fixed_strategies_and_refuses_leaks() -> None:
    pp = known_pool(MIXED, k=16, seed=5)
    split = split_problems(pp.problem_ids, [i.split("-")[0] for i in pp.problem_ids])
    policy = fit_policy(pp.subset(split.train), probes=(2,), n_bins=3, n_orders=16)
    ev = evaluate_policy(policy, pp.subset(split.test), n_orders=16)
    assert ev["test_problems"] == list(split.test)
    ref = ev["reference"]
    assert ref["k"] == 16 and ref["strategy"] == "majority"
    # on this workload most problems are settled or hopeless after the probe: a small fraction suffices
    assert ev["token_fraction"] is not None and ev["token_fraction"] < 0.5
    assert {"majority", "best-of-n", "adaptive"} <= set(ev["curves"])
    for row in ev["levels"]:
        assert row["tokens"] <= row["budget_tokens"] * 1.3  # held-out cost tracks the budget
    with pytest.raises(ConfigError, match="fitted on"):
        evaluate_policy(policy, pp.subset(split.train[:5]))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 30), st.integers(1, 3), st.floats(0.1, 0.9), st.integers(0, 5))
def test_families_stay_on_one_side(n_families: int, variants: int, frac: float, seed: int) -> None:
    # GSM-Symbolic: the original of each template and its instances from other seeds, as merged runs
    ids = [f"s{v}/q{f}" for v in range(variants + 1) for f in range(n_families)]
    groups = [i.split("/")[0] for i in ids]
    families = [i.split("/")[1] for i in ids]
    s = split_problems(ids, groups, test_fraction=frac, seed=seed, families=families)
    assert sorted(s.train + s.test) == sorted(ids)
    test_families = {f for i, f in zip(ids, families, strict=True) if i in s.test}
    train_families = {f for i, f in zip(ids, families, strict=True) if i in s.train}
    assert test_families and train_families and not test_families & train_families
    assert len(test_families) == min(max(round(n_families * frac), 1), n_families - 1)


def test_singleton_families_split_as_before() -> None:
    ids = [f"q{i}" for i in range(40)]
    assert split_problems(ids, families=ids, seed=3) == split_problems(ids, seed=3)
    with pytest.raises(ConfigError, match="one family per"):
        split_problems(ids, families=ids[:3])
