"""Where ttscale keeps files it derives (model copies, datasets, generated instances)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$TTSCALE_CACHE`` (default ``~/.cache/ttscale``) joined with ``parts``, created if missing."""
    base = Path(os.environ.get("TTSCALE_CACHE", Path.home() / ".cache" / "ttscale"))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
