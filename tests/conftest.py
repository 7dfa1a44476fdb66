"""Shared fixtures. Real-model fixtures are session-scoped: loading a model once keeps the suite fast."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ttscale.backends.fake import FakeBackend


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend(answers={"42": 0.6, "41": 0.3, "7": 0.1})


@pytest.fixture(scope="session")
def smollm() -> Iterator[object]:
    from ttscale.backends.llama_cpp import LlamaCppBackend

    b = LlamaCppBackend("smollm2-135m", n_ctx=4096, n_seq_max=16)
    yield b
    b.close()


@pytest.fixture(scope="session")
def gemma() -> Iterator[object]:
    from ttscale.backends.llama_cpp import LlamaCppBackend

    b = LlamaCppBackend("gemma3-270m", n_ctx=4096, n_seq_max=16)
    yield b
    b.close()
