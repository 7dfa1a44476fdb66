"""KV-cache precision: the engine takes the type, and the meter's bytes match what llama.cpp allocates."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ttscale.errors import ConfigError
from ttscale.types import KV_CACHE_TYPES, ModelInfo, kv_element_bytes

pytestmark = pytest.mark.model

PROBE = """
import sys
from ttscale.backends.llama_cpp import LlamaCppBackend
b = LlamaCppBackend("smollm2-135m", n_ctx=2048, n_seq_max=2, prefix_slots=0, kv_type=sys.argv[1],
                    kv_type_v=sys.argv[2], verbose=True)
print("METER", b.model_info().kv_bytes(b.n_ctx), b.model_info().kv_type_k, b.model_info().kv_type_v, flush=True)
"""


@pytest.mark.parametrize(("kind", "kind_v"), [("f16", "f16"), ("q8_0", "q8_0"), ("q4_0", "q4_0"), ("q8_0", "q4_0")])
def test_meter_bytes_equal_the_engines_kv_buffer(kind: str, kind_v: str) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, kind, kind_v], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    mib = float(re.search(r"KV buffer size =\s+([\d.]+) MiB", out.stderr).group(1))  # type: ignore[union-attr]
    meter, k, v = out.stdout.split("METER")[1].split()
    assert (k, v) == (kind, kind_v)
    assert abs(int(meter) / 2**20 - mib) < 0.01, (kind, kind_v, int(meter) / 2**20, mib)


def test_quantized_caches_are_smaller_by_their_block_sizes() -> None:
    base = ModelInfo("m", 1, 30, 9, 3, 64, 576, 8192)
    q8 = ModelInfo("m", 1, 30, 9, 3, 64, 576, 8192, kv_type_k="q8_0", kv_type_v="q8_0")
    assert q8.kv_bytes(1000) / base.kv_bytes(1000) == pytest.approx(34 / 64)
    assert kv_element_bytes("q4_0") == 18 / 32 and set(KV_CACHE_TYPES) >= {"f16", "q8_0", "q4_0"}
    with pytest.raises(ConfigError, match="unknown KV cache type"):
        kv_element_bytes("q3_k")


def test_llama_server_gets_the_cache_type_and_flash_attention(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ttscale.backends.llama_server import LlamaServer

    assert LlamaServer(tmp_path / "m.gguf", kv_type="q8_0")._kv_args() == [
        "--cache-type-k", "q8_0", "--cache-type-v", "q8_0", "--flash-attn", "on"]
    assert LlamaServer(tmp_path / "m.gguf")._kv_args() == []
    assert LlamaServer(tmp_path / "m.gguf", kv_type="q8_0", kv_type_v="q4_0")._kv_args() == [
        "--cache-type-k", "q8_0", "--cache-type-v", "q4_0", "--flash-attn", "on"]
    with pytest.raises(ConfigError):
        LlamaServer(tmp_path / "m.gguf", kv_type="int3")._kv_args()
