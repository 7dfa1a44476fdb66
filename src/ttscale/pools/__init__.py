"""Reference sample pools shipped with ttscale (``*.jsonl.gz`` beside this file).

Each file is one stored sweep (:mod:`ttscale.replay.pool_file`), with the command that made it in
its header and in ``README.md`` here. :func:`shipped_store` loads all of them once into a SQLite
store in the cache (rebuilt when the files change), so ``curves``, ``report``, ``plan`` and the
tests read them by run id without generating anything: ``--store shipped`` on the command line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ttscale.paths import cache_dir

POOL_DIR = Path(__file__).parent
SHIPPED = "shipped"
"""The ``--store`` value that means the shipped pools."""


def pool_files() -> list[Path]:
    return sorted(POOL_DIR.glob("*.jsonl.gz"))


def shipped_runs() -> list[str]:
    """Run ids of the shipped pools (the file names without ``.jsonl.gz``)."""
    return [p.name[: -len(".jsonl.gz")] for p in pool_files()]


def shipped_store() -> Path:
    """A store holding every shipped pool, built on first use (and again whenever a file changes)."""
    from ttscale.replay.pool_file import import_pool_file
    from ttscale.store import Store

    files = pool_files()
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        h.update(str(int(f.stat().st_mtime)).encode())
    path = cache_dir("pools") / f"shipped-{h.hexdigest()[:16]}.sqlite"
    done = path.with_suffix(".done")
    if path.exists() and done.exists():
        return path
    path.unlink(missing_ok=True)
    tmp = path.with_name(path.stem + ".tmp.sqlite")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    store = Store(tmp)
    try:
        for f in files:
            import_pool_file(f, store, f.name[: -len(".jsonl.gz")])
    finally:
        store.close()
    tmp.replace(path)
    done.touch()
    return path


def resolve_store(path: Path | str) -> Path:
    """``shipped`` -> the shipped pools' store; any other value is a store path as given."""
    return shipped_store() if str(path) == SHIPPED else Path(path)
