"""Sizing the engine from a KV byte cap: the context never exceeds the cap and the sequences fit it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttscale.backends.kv_sizing import (
    CTX_PAD,
    DEFAULT_N_CTX,
    cells_needed,
    check_engine_fits,
    fit_kv,
    max_cells,
    max_parallel,
    max_parallel_bytes,
    with_kv_types,
)
from ttscale.cost import Budget, Meter
from ttscale.errors import ConfigError
from ttscale.types import KV_CACHE_TYPES, ModelInfo

SMOL = ModelInfo("smol", 134_515_008, 30, 9, 3, 64, 576, 8192)
QWEN15 = ModelInfo("qwen15", 1_543_714_304, 28, 12, 2, 128, 1536, 32768)

models = st.sampled_from([SMOL, QWEN15, ModelInfo("tiny", 1, 2, 4, 1, 32, 128, 2048)])
kv_types = st.sampled_from(sorted(KV_CACHE_TYPES))


@settings(max_examples=300, deadline=None)
@given(model=models, kv=kv_types, cap=st.integers(1, 2**33), gen=st.integers(1, 4096), prompt=st.integers(0, 4096),
       max_seqs=st.integers(1, 128), shared=st.booleans())
def test_fit_never_exceeds_the_cap_and_its_sequences_fit(model: ModelInfo, kv: str, cap: int, gen: int, prompt: int,
                                                         max_seqs: int, shared: bool) -> None:
    info = with_kv_types(model, kv)
    try:
        fit = fit_kv(info, cap, gen, prompt, max_seqs=max_seqs, shared_prompt=shared)
    except ConfigError:
        # refused only when the cap cannot hold the engine's minimum or a single sample
        cells = max_cells(info, cap) // CTX_PAD * CTX_PAD
        assert cells < max(CTX_PAD, cells_needed(1, prompt, gen, shared))
        return
    assert fit.kv_bytes == info.kv_bytes(fit.n_ctx) <= cap
    assert fit.n_ctx % CTX_PAD == 0 and fit.n_ctx >= CTX_PAD  # llama.cpp pads up: a multiple stays as asked
    assert 1 <= fit.n_seq_max <= max_seqs
    assert cells_needed(fit.n_seq_max, prompt, gen, shared) <= fit.n_ctx  # the sequences fit together
    # as many as fit: one more would not (unless max_seqs is the limit)
    assert fit.n_seq_max == max_seqs or cells_needed(fit.n_seq_max + 1, prompt, gen, shared) > fit.n_ctx
    # no cells wasted beyond what the cap buys, nor beyond max_seqs sequences (past the default context)
    assert fit.n_ctx + CTX_PAD > max_cells(info, cap) or fit.n_ctx <= max(
        DEFAULT_N_CTX, cells_needed(max_seqs, prompt, gen, shared) + CTX_PAD)


@settings(max_examples=200, deadline=None)
@given(model=models, kv=kv_types, cap=st.integers(2**16, 2**32), gen=st.integers(1, 1024), prompt=st.integers(1, 2048),
       want=st.integers(1, 64))
def test_the_engines_buffer_as_a_budget_allows_exactly_the_waves_that_fit_its_cells(
        model: ModelInfo, kv: str, cap: int, gen: int, prompt: int, want: int) -> None:
    info = with_kv_types(model, kv)
    try:
        fit = fit_kv(info, cap, gen, prompt, max_seqs=64)
    except ConfigError:
        return
    meter = Meter(info, Budget(kv_bytes=fit.kv_bytes))
    assert meter.affordable_samples(prompt, gen, want) == min(want, max_parallel(fit.n_ctx, prompt, gen))
    # and under the user's own cap the meter never allows a wave whose bytes exceed it
    n = Meter(info, Budget(kv_bytes=cap)).affordable_samples(prompt, gen, want)
    assert info.kv_bytes(cells_needed(n, prompt, gen)) <= cap
    assert n == min(want, max_parallel_bytes(info, cap, prompt, gen))


def test_quantized_caches_fit_more_samples_under_the_same_cap() -> None:
    cap = SMOL.kv_bytes(8 * (400 + 256))  # f16: 8 samples each with its own 400-token prompt
    f16 = fit_kv(with_kv_types(SMOL, "f16"), cap, 256, 400, shared_prompt=False)
    q8 = fit_kv(with_kv_types(SMOL, "q8_0"), cap, 256, 400, shared_prompt=False)
    q4 = fit_kv(with_kv_types(SMOL, "q4_0"), cap, 256, 400, shared_prompt=False)
    assert (f16.n_seq_max, q8.n_seq_max, q4.n_seq_max) == (7, 14, 28)  # f16's 8 minus the 256-cell padding
    assert max_parallel_bytes(with_kv_types(SMOL, "f16"), cap, 400, 256, shared_prompt=False) == 8
    assert max_parallel_bytes(with_kv_types(SMOL, "q8_0"), cap, 400, 256, shared_prompt=False) == 15
    # sharing the prompt (one problem's samples on the embedded engine) fits more
    assert fit_kv(with_kv_types(SMOL, "q8_0"), cap, 256, 400).n_seq_max == 36


def test_a_generous_cap_buys_no_more_than_the_default_context_unless_needed() -> None:
    fit = fit_kv(SMOL, 2**34, 256, 100, max_seqs=4)
    assert fit.n_ctx == DEFAULT_N_CTX and fit.n_seq_max == 4
    big = fit_kv(SMOL, 2**34, 1024, 100, max_seqs=64)
    assert big.n_ctx == 100 + 64 * 1024 - (100 + 64 * 1024) % CTX_PAD + CTX_PAD and big.n_seq_max == 64


def test_a_cap_too_small_is_one_error_naming_the_need() -> None:
    with pytest.raises(ConfigError, match="holds .* cells"):
        fit_kv(SMOL, 1000, 256)
    with pytest.raises(ConfigError, match="one sample of 5000"):
        fit_kv(SMOL, SMOL.kv_bytes(2048), 256, 5000)
    with pytest.raises(ConfigError):
        fit_kv(SMOL, 0, 256)
    with pytest.raises(ConfigError, match="over the cap"):
        check_engine_fits(SMOL, 1024, SMOL.kv_bytes(1000))


PROBE = """
import sys
from ttscale.backends.kv_sizing import check_engine_fits, fit_kv, header_info
from ttscale.backends.llama_cpp import LlamaCppBackend
cap = int(sys.argv[2])
fit = fit_kv(header_info("smollm2-135m", sys.argv[1]), cap, 200, 300)
b = LlamaCppBackend("smollm2-135m", prefix_slots=0, kv_type=sys.argv[1], verbose=True, **fit.options())
check_engine_fits(b.model_info(), b.n_ctx, cap)
print("FIT", fit.n_ctx, b.n_ctx, fit.n_seq_max, b.capabilities.parallel_sequences, flush=True)
"""


@pytest.mark.model
@pytest.mark.parametrize("kind", ["f16", "q8_0"])
def test_the_engine_sized_from_a_cap_allocates_no_more(kind: str) -> None:
    cap = 40 * 2**20
    out = subprocess.run([sys.executable, "-c", PROBE, kind, str(cap)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    mib = float(re.search(r"KV buffer size =\s+([\d.]+) MiB", out.stderr).group(1))  # type: ignore[union-attr]
    want_ctx, got_ctx, seqs, parallel = map(int, out.stdout.split("FIT")[1].split())
    assert want_ctx == got_ctx and seqs == parallel >= 1
    assert mib * 2**20 <= cap + 0.01 * 2**20
    assert mib * 2**20 > cap - SMOL.kv_bytes(CTX_PAD)  # the cap is used, not wasted
