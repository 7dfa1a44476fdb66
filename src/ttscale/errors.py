"""Errors raised by ttscale.

Every error the library raises on purpose derives from :class:`TtscaleError`;
foreign exceptions (sqlite3, llama.cpp, httpx, ...) are translated into this
tree at the module boundary where they occur. The CLI turns these into one-line
messages; the server turns them into OpenAI-style error bodies.

    TtscaleError
    ├── ConfigError            bad option values, unknown names
    │   └── UnknownNameError   unknown model / task / strategy / verifier
    ├── DatasetError           malformed data (carries path and line number)
    ├── DownloadError          a data or model file could not be fetched or failed its hash
    ├── BackendError           the engine failed
    │   ├── ModelNotFoundError the model file or package is missing
    │   ├── UnsupportedFeatureError  the engine lacks something asked for
    │   ├── MalformedResponse  a server's answer is unusable (backends.openai_wire)
    │   └── BuildUnavailable   llama-server cannot be built here (backends.llama_server)
    ├── RequestCancelled       a server request's client went away (server.errors)
    ├── BudgetExceededError    work refused because it would pass the budget
    └── StoreError             the sample store is unusable or inconsistent
"""

from __future__ import annotations


class TtscaleError(Exception):
    """Root of every error ttscale raises on purpose."""


class ConfigError(TtscaleError, ValueError):
    """An option has a bad value."""


class OptionError(ConfigError):
    """A component's option is unknown or has a bad value; ``option`` names it (the server's error
    body reports it as ``param``)."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


class UnknownNameError(ConfigError, KeyError):
    """A registry lookup failed; the message lists what is available."""

    def __init__(self, kind: str, name: str, available: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        super().__init__(f"unknown {kind} {name!r}; available: {', '.join(self.available)}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class DatasetError(TtscaleError, ValueError):
    """A dataset file is malformed; names the file and line where known."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class DownloadError(TtscaleError):
    """A file could not be fetched from the package index, or it failed its hash check."""


class BackendError(TtscaleError, RuntimeError):
    """The inference engine failed."""


class ModelNotFoundError(BackendError):
    """The requested model file or its package is not installed."""


class UnsupportedFeatureError(BackendError):
    """The engine cannot do what was asked (e.g. no log-probs)."""


class BudgetExceededError(TtscaleError):
    """Work was refused because it could exceed the budget."""


class StoreError(TtscaleError):
    """The sample store is unusable or inconsistent with the request."""
