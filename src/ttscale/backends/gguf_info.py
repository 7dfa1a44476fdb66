"""Model shapes read straight from a GGUF file's header with the ``gguf`` package (no engine loaded).

The cost model needs parameter count, layers, heads, KV heads, head size and context length; all
are in the header (``{arch}.block_count``, ``{arch}.attention.head_count``, ...), and the parameter
count is the sum of the tensors' element counts, which is what llama.cpp's ``llama_model_n_params``
returns (checked against the engine in tests/backends/test_gguf_info.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ttscale.errors import BackendError
from ttscale.types import ModelInfo


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # noqa: BLE001 - an unreadable optional field counts as absent
        return None


def read_model_info(path: str | Path, name: str | None = None) -> ModelInfo:
    """The :class:`ModelInfo` of the GGUF at ``path`` (``name`` defaults to the file's stem).

    Parsing a header means reading the whole tokenizer (seconds for a 150k vocabulary), so the result
    is kept in the cache, keyed by the file's path, size and modification time.
    """
    import dataclasses
    import hashlib
    import json

    from ttscale.paths import cache_dir

    p = Path(path)
    st = p.stat()
    # v2: with n_vocab and n_embedding_params (entries cached before them would read as unknown)
    key = hashlib.sha256(f"v2|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
    cached = cache_dir("model-info") / f"{key}.json"
    if cached.exists():
        try:
            info = ModelInfo(**json.loads(cached.read_text()))
            return dataclasses.replace(info, name=name or p.stem)
        except (ValueError, TypeError):
            pass
    info = _parse(p, name)
    cached.write_text(json.dumps(dataclasses.asdict(info)))
    return info


def _parse(p: Path, name: str | None) -> ModelInfo:
    try:
        import gguf
    except ImportError as e:  # a core dependency; only a broken install lacks it
        raise BackendError("the 'gguf' package is missing: pip install gguf") from e
    try:
        reader = gguf.GGUFReader(str(p))
    except (OSError, ValueError) as e:
        raise BackendError(f"{p}: not a readable GGUF file ({e})") from e
    arch = str(_field(reader, "general.architecture") or "")

    def num(key: str, default: int | None = None) -> int:
        v = _field(reader, f"{arch}.{key}")
        if v is None:
            if default is None:
                raise BackendError(f"{p}: GGUF header lacks {arch}.{key}")
            return default
        return int(v[0] if isinstance(v, list) else v)

    n_heads = num("attention.head_count")
    d_model = num("embedding_length")
    sizes = {t.name: int(t.n_elements) for t in reader.tensors}
    embedding = sizes.get("token_embd.weight", 0)
    return ModelInfo(
        name=name or p.stem,
        n_params=sum(sizes.values()),
        n_vocab=embedding // d_model if d_model else 0,
        n_embedding_params=embedding + sizes.get("output.weight", 0),
        n_layers=num("block_count"),
        n_heads=n_heads,
        n_kv_heads=num("attention.head_count_kv", n_heads),
        head_dim=num("attention.key_length", d_model // max(n_heads, 1)),
        d_model=d_model,
        n_ctx_train=num("context_length"),
        kv_bytes_per_elem=2,
        architecture=arch,
        has_chat_template=_field(reader, "tokenizer.chat_template") is not None,
        path=str(p),
        extra={"general.name": str(_field(reader, "general.name") or ""), "file_bytes": str(p.stat().st_size)},
    )
