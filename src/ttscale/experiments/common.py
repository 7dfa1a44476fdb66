"""Shared pieces of the experiments: loading pools by run id, bootstrap over problems, figures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.errors import StoreError
from ttscale.replay.pool import Pool, load_pool
from ttscale.store import Store

BOOTSTRAP = 400
SEED = 0


StoredRun = tuple[dict[str, Any], dict[str, Any], list[tuple[str, dict[str, Any]]]]
"""A run's model record, its config and its (problem id, sample fields) rows."""


def stored_run(store: Store, run_id: str, dirs: Sequence[Path]) -> StoredRun | None:
    """A run's record and samples from ``store``, else from a shipped pool file ``<dir>/<run_id>.jsonl.gz``
    (runs kept outside the shipped store: IterDRAG transcripts, the KV-eviction caches); None when neither
    has it. Rows hold the fields a pool file keeps."""
    rec = store.get_run(run_id)
    if rec is not None:
        rows = [(pid, {"grade": s.grade, "correct": s.correct, "prompt_tokens": s.prompt_tokens,
                       "prefilled_tokens": s.prefilled_tokens, "finish_reason": s.finish_reason,
                       "answer": s.answer, "logprob": s.logprob, "n_tokens": s.n_tokens, "index": s.index})
                for pid, s in store.samples(run_id)]
        return rec.model, rec.config, rows
    from ttscale.replay.pool_file import read_pool_file

    for d in dirs:
        path = d / f"{run_id}.jsonl.gz"
        if path.exists():
            header, _, samples = read_pool_file(path)
            return dict(header.get("model", {})), dict(header.get("config", {})), samples
    return None


def tokens_label(n: float) -> str:
    """A token count for a table: ``1.2k`` from 1,000 up."""
    return f"{n / 1000:.1f}k" if n >= 1000 else f"{n:.0f}"


def load_pools(store: Store, run_ids: list[str]) -> tuple[dict[str, Pool], list[str]]:
    """The pools that exist, and a note for each that does not."""
    pools, missing = {}, []
    for rid in run_ids:
        try:
            pools[rid] = load_pool(store, rid)
        except StoreError as e:
            missing.append(f"`{rid}`: {e}")
    return pools, missing


def bootstrap(n_problems: int, stat: Callable[[np.ndarray], float], reps: int = BOOTSTRAP,
              seed: int = SEED) -> tuple[float, float]:
    """95% percentile interval of ``stat(problem indices)`` over resamples of the problems."""
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n_problems, n_problems)) for _ in range(reps)], dtype=float)
    finite = vals[np.isfinite(vals)]
    if len(finite) < reps * 0.5:
        return float(np.nanpercentile(vals, 2.5)), float("inf")
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def figure(path: Path) -> tuple[object, object]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    fig.path = path  # type: ignore[attr-defined]
    return fig, ax


def save(fig: object) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(fig.path)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
