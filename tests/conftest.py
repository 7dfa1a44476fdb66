"""Shared fixtures. Real-model fixtures are session-scoped: loading a model once keeps the suite fast."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from ttscale.backends.fake import FakeBackend

# Files that come from outside the package install (`make externals` fetches and builds them, `make
# test` runs it first). Tests that need one are marked `@pytest.mark.external(NAME)`; when it is
# absent the run says so once, in its header, and those tests skip with that one line: no test
# downloads or builds anything itself, and a package index that stops serving a file costs a
# skip with the reason, not a traceback per test.
EXTERNALS = {
    "qwen2.5-coder-0.5b": "the Qwen2.5-Coder-0.5B GGUF, assembled from its PyPI parts",
    "llama-server": "llama.cpp's llama-server, built from the llama-cpp-python sdist",
}


@cache
def missing_external(name: str) -> str | None:
    """Why ``name`` is not available here (None when it is)."""
    if name == "llama-server":
        from ttscale.backends.llama_server import find_llama_server

        found = find_llama_server() is not None
    else:
        from ttscale.backends.models import cached_model_path

        found = cached_model_path(name) is not None
    return None if found else f"{EXTERNALS[name]} is not here: run `make externals` (it needs the package index)"


@pytest.fixture(scope="session")
def llama_server_binary() -> Path:
    """The llama-server binary that `make externals` built (the test skips, with the reason, without it)."""
    from ttscale.backends.llama_server import find_llama_server

    why = missing_external("llama-server")
    if why:
        pytest.skip(why)
    found = find_llama_server()
    assert found is not None
    return found


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "external(name): needs a file from outside the install (see EXTERNALS)")


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"missing external: {why}" for name in EXTERNALS if (why := missing_external(name))]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for mark in item.iter_markers("external"):
            why = missing_external(mark.args[0])
            if why:
                item.add_marker(pytest.mark.skip(reason=why))


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
