"""Shared CLI plumbing: error reporting, console, building components from options."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from ttscale.errors import TtscaleError

F = TypeVar("F", bound=Callable[..., Any])

# Rich wraps tables at 80 columns when output is not a terminal (make demo, CI logs): give them room.
console = Console(stderr=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

DEFAULT_STORE = Path("runs") / "ttscale.sqlite"


def fail(message: str, code: int = 2) -> None:
    """Print one clear line and exit; never a traceback."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cli_errors(fn: F) -> F:
    """Turn ttscale's errors into one-line messages and Ctrl-C into a resumable stop."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TtscaleError as e:
            fail(str(e))
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: stored samples are kept; rerun with the same --run-id to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def human(n: float) -> str:
    """Compact number: 1234567 -> '1.23M'."""
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.4g}" if isinstance(n, float) else str(n)


def is_tty() -> bool:
    return sys.stderr.isatty()
