"""Shapes from the GGUF header (gguf package) agree with what the engine reads from the same file."""

from __future__ import annotations

import pytest

from ttscale.backends.gguf_info import read_model_info
from ttscale.errors import BackendError

pytestmark = pytest.mark.model


def test_header_shapes_match_the_engine(smollm, gemma, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path))  # parse the header, not a cached result
    for be in (smollm, gemma):
        engine = be.model_info()
        header = read_model_info(be.path, engine.name)
        for f in ("n_params", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_model", "n_ctx_train",
                  "architecture", "has_chat_template"):
            assert getattr(header, f) == getattr(engine, f), f
        assert read_model_info(be.path, engine.name) == header  # the cached copy is the same


def test_not_a_gguf_file_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(BackendError, match="not a readable GGUF"):
        read_model_info(bad)
