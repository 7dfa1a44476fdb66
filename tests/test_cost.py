from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttscale.cost import Budget, Meter, generation_usage
from ttscale.errors import ConfigError
from ttscale.types import Completion, Generation, GenerationRequest, ModelInfo, Usage

INFO = ModelInfo("m", n_params=1000, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=4, d_model=8, n_ctx_train=128)


def test_flops_formula_matches_per_token_sum() -> None:
    # Sum over positions of 2N + 2*L*c*d_attn (Kaplan et al.), computed in closed form.
    direct = sum(INFO.flops_per_token(c) for c in range(5, 17))
    assert INFO.flops_for_positions(5, 17) == pytest.approx(direct)
    assert INFO.flops_for_positions(3, 3) == 0


def test_kv_bytes() -> None:
    # 2 (K,V) * layers * kv_heads * head_dim * 2 bytes * tokens
    assert INFO.kv_bytes(10) == 2 * 2 * 1 * 4 * 2 * 10


def test_generation_usage_counts_prefill_once() -> None:
    req = GenerationRequest(prompt="x", n=2)
    gen = Generation(
        request=req,
        completions=[
            Completion("a", 3, "stop", prompt_tokens=10, prefilled_tokens=10),
            Completion("b", 5, "stop", prompt_tokens=10),
        ],
        prompt_tokens=10,
        prefilled_tokens=10,
        peak_kv_tokens=18,
    )
    u = generation_usage(gen, INFO)
    assert u.prefilled_tokens == 10 and u.generated_tokens == 8 and u.total_tokens == 18
    expected = INFO.flops_for_positions(0, 10) + INFO.flops_for_positions(10, 13) + INFO.flops_for_positions(10, 15)
    assert u.flops == pytest.approx(expected)
    assert u.peak_kv_bytes == INFO.kv_bytes(18)


def test_usage_addition_takes_peak_max() -> None:
    a = Usage(prefilled_tokens=1, generated_tokens=2, flops=3.0, peak_kv_bytes=10)
    b = Usage(prefilled_tokens=4, generated_tokens=5, flops=6.0, peak_kv_bytes=7)
    c = a + b
    assert (c.prefilled_tokens, c.generated_tokens, c.flops, c.peak_kv_bytes) == (5, 7, 9.0, 10)


@pytest.mark.parametrize("kw", [{"tokens": 0}, {"tokens": -5}, {"flops": float("inf")}, {"flops": -1.0}])
def test_bad_budgets_rejected(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Budget(**kw)  # type: ignore[arg-type]


@given(
    budget=st.integers(min_value=1, max_value=5000),
    prompt=st.integers(min_value=1, max_value=300),
    max_tokens=st.integers(min_value=1, max_value=300),
    want=st.integers(min_value=1, max_value=64),
)
def test_affordable_samples_is_largest_fitting(budget: int, prompt: int, max_tokens: int, want: int) -> None:
    m = Meter(INFO, Budget(tokens=budget))
    n = m.affordable_samples(prompt, max_tokens, want)
    assert 0 <= n <= want
    if n > 0:
        assert m.fits(m.worst_case(prompt, n, max_tokens))
    if n < want:
        assert not m.fits(m.worst_case(prompt, n + 1, max_tokens))


@given(
    cap_cells=st.integers(min_value=1, max_value=4000),
    prompt=st.integers(min_value=1, max_value=300),
    max_tokens=st.integers(min_value=1, max_value=300),
    want=st.integers(min_value=1, max_value=64),
    kind=st.sampled_from(["f16", "q8_0", "q4_0"]),
)
def test_kv_budget_is_a_hard_cap_on_every_wave(cap_cells: int, prompt: int, max_tokens: int, want: int,
                                               kind: str) -> None:
    """A KV-memory cap is never exceeded: the samples started at once fit it at the cache's real size."""
    from dataclasses import replace

    info = replace(INFO, kv_type_k=kind, kv_type_v=kind)
    cap = info.kv_bytes(cap_cells)
    m = Meter(info, Budget(kv_bytes=cap))
    n = m.affordable_samples(prompt, max_tokens, want)
    assert info.kv_bytes(prompt + n * max_tokens) <= cap or n == 0
    if n < want:
        assert info.kv_bytes(prompt + (n + 1) * max_tokens) > cap


@given(cap_cells=st.integers(min_value=20, max_value=400), k=st.integers(min_value=1, max_value=12))
def test_kv_budget_holds_for_real_runs_on_the_scripted_engine(cap_cells: int, k: int) -> None:
    """Self-consistency under a KV cap: the engine's measured peak of every wave stays under it."""
    from ttscale.backends.fake import FakeBackend
    from ttscale.strategies.base import SolveContext
    from ttscale.strategies.voting import SelfConsistency
    from ttscale.types import Problem, Sampling

    be = FakeBackend(answers={"4": 1.0}, filler_tokens=lambda rng: rng.randrange(0, 12))
    info = be.model_info()
    cap = info.kv_bytes(cap_cells)
    from ttscale.types import PromptFormat

    class _Task:
        name, fmt = "t", PromptFormat(style="completion", max_tokens=16)

        def request(self, p):  # type: ignore[no-untyped-def]
            return GenerationRequest(prompt="Q: 2 + 2 ? A:", max_tokens=16)

        def extract(self, text):  # type: ignore[no-untyped-def]
            return text.split()[-1].rstrip(".") if text else None

        def equivalent(self, a, b):  # type: ignore[no-untyped-def]
            return a == b

        def grade(self, p, a):  # type: ignore[no-untyped-def]
            return a == "4"

    ctx = SolveContext(Problem("p", "q", "4"), be, _Task(), Meter(info, Budget(kv_bytes=cap)), Sampling())  # type: ignore[arg-type]
    SelfConsistency(k=k).solve(Problem("p", "q", "4"), ctx)
    assert ctx.meter.usage.peak_kv_bytes <= cap
    # every request's worst case fitted the cap before it was sent (waves and sample caps shrink to fit)
    assert all(info.kv_bytes(be.count_prompt_tokens(r) + r.n * r.max_tokens) <= cap for r in be.history)


# Qwen2.5-Coder-0.5B's shapes (its GGUF header), so the roofline sees a real model's balance of work
QWEN05 = ModelInfo(name="qwen-0.5b-shapes", n_params=494_032_768, n_layers=24, n_heads=14, n_kv_heads=2, head_dim=64,
                   d_model=896, n_ctx_train=32768, architecture="qwen2", has_chat_template=True)


def test_a_seconds_or_dollar_budget_is_a_hard_cap_priced_on_the_hardware() -> None:
    from ttscale.backends.fake import FakeBackend
    from ttscale.roofline import load_profile
    from ttscale.strategies.base import SolveContext
    from ttscale.tasks.jsonl import JsonlTask
    from ttscale.types import Problem, PromptFormat, Sampling

    cpu = load_profile("cpu-2core")
    one = Meter(QWEN05, Budget(seconds=1e9, hardware=cpu))
    cap = 3.5 * one.price(one.worst_case(20, 1, 16))  # room for about three one-sample calls' worst case
    task = JsonlTask.__new__(JsonlTask)
    task.fmt = PromptFormat(style="completion", max_tokens=16)
    for budget in (Budget(seconds=cap, hardware=cpu), Budget(usd=cpu.usd(cap), hardware=cpu)):
        meter = Meter(QWEN05, budget)
        ctx = SolveContext(Problem("p", "What is 6*7?", "42"), FakeBackend(answers={"42": 1.0}, filler_tokens=4, info=QWEN05),
                           task, meter, Sampling(seed=0))
        got = ctx.sample(64)
        assert 0 < len(got) < 64 and ctx.budget_exhausted
        assert meter.priced_s <= cap * (1 + 1e-9)  # never over, priced from what was really generated
    with pytest.raises(ConfigError, match="hardware profile"):
        Budget(seconds=1.0)


def test_the_price_of_a_wave_follows_the_hardware_s_batching() -> None:
    from ttscale.roofline import load_profile

    def ratio(profile: str) -> float:
        m = Meter(QWEN05, Budget(seconds=1e9, hardware=load_profile(profile)))
        return m.price(m.worst_case(200, 16, 256)) / m.price(m.worst_case(200, 1, 256))

    # 16 samples decoded together: nearly free on a memory-bound GPU (1.01x one sample), several times one
    # on this 2-core CPU, where a decode step of many sequences is compute-bound (3.5x by its calibrated profile)
    assert ratio("h100") < 1.5 < 3 < ratio("cpu-2core") <= 16


def test_usage_addition_covers_every_field() -> None:
    from dataclasses import fields

    a, b = Usage(*range(1, 9)), Usage(*range(10, 18))
    assert len(fields(Usage)) == 8  # a new field must join Usage.__add__ (spelled out for speed)
    for f in fields(Usage):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert getattr(a + b, f.name) == (max(x, y) if f.name == "peak_kv_bytes" else x + y)
