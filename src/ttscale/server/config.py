"""Server settings: one frozen value object handed to :func:`ttscale.server.app.create_app`.

Limits live here so that every "absurd" value a request can carry has a named,
documented ceiling; the bind-address rule (no unauthenticated remote access by
accident) is a pure function the CLI calls before starting uvicorn.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ttscale.backends.base import Backend
from ttscale.errors import ConfigError
from ttscale.planner.policy import Policy
from ttscale.registry import verifier_specs
from ttscale.roofline import HardwareProfile
from ttscale.tasks.base import Task


def server_verifiers() -> tuple[str, ...]:
    """Verifiers a request may name: the records that declare ``serves`` (no reference answer, no extra
    configuration)."""
    return tuple(name for name, spec in verifier_specs().items() if spec.serves)


@dataclass(frozen=True)
class ServerConfig:
    backend: Backend
    """Serves every request; the app never closes it (its creator does)."""
    model_name: str | None = None
    """Model id clients send; defaults to the backend's model name."""
    strategy: str = "self-consistency"
    """Strategy when a request names none."""
    k: int = 4
    """Samples for strategies that take ``k``, when a request names none."""
    verifier: str = "certainty"
    """Verifier for best-of-n strategies when a request names none."""
    budget_tokens: int | None = None
    """Default cap on processed tokens (prefilled + generated) per request; None = unlimited."""
    max_budget_tokens: int = 1_000_000
    """Largest token budget a request may ask for."""
    task: Task | None = None
    """Answer each request as a problem of this task (``ttscale serve --task rag``): the request's last user
    message (or its prompt) is the question, and the task makes the prompt (retrieved passages and
    demonstrations for ``rag``), extracts and compares answers, and drives strategies that need it
    (IterDRAG); None: the request's own messages are the prompt."""
    draft_backend: Backend | None = None
    """The draft model of strategies that take one (speculative reasoning; ``--draft-model``), opened once and
    shared by every request through its own micro-batcher; None: such strategies are refused (400)."""
    hardware: HardwareProfile | None = None
    """The profile requests' ``budget.seconds`` / ``budget.usd`` are priced on (``--hardware``); None:
    such budgets are refused."""
    max_kv_bytes: int | None = None
    """Server-wide hard cap on KV-cache bytes in use at once: every request's default and ceiling (a
    request may ask for less), and each backend call's batch is packed so that its requests' worst
    cases together fit it. None = no cap beyond the engine's own context."""
    max_k: int = 64
    max_n: int = 8
    """Largest ``n`` (returned choices; each is an independent strategy run)."""
    temperature: float = 0.8
    """Sampling temperature when a request sends none (voting needs diverse samples)."""
    default_max_tokens: int = 256
    max_max_tokens: int = 4096
    max_prompt_tokens: int | None = None
    """Longest prompt accepted (tokens); None = whatever fits the backend's context."""
    max_concurrency: int = 64
    """Strategy runs executing at once (threads); more requests wait in the queue."""
    max_queue: int = 256
    """Requests waiting beyond ``max_concurrency``; one more gets 429."""
    retry_after_s: int = 1
    batch_window_ms: float = 10.0
    """Longest wait for other active requests' generations before a backend call.
    The wait ends early as soon as every active strategy run has submitted, so a lone
    request never waits."""
    batch_min_wait_ms: float = 0.0
    """Shortest wait before a backend call, so requests that arrive together reach the same
    call. Worth a few ms for a batching engine whose calls take far longer; 0 for others."""
    max_batch: int = 64
    """Generation requests per backend call."""
    timeout_s: float = 600.0
    """Per-request deadline; past it the work is cancelled and the client gets 504."""
    api_key: str | None = None
    """When set, every endpoint except /health requires ``Authorization: Bearer <key>``."""
    max_body_bytes: int = 1_000_000
    policy: Policy | None = None
    """A fitted plan (``ttscale plan --out``): requests that name no strategy are answered by it (its
    probe, difficulty bin and choice at the level their token budget buys); ``strategy="policy"`` asks
    for it explicitly."""
    metrics_dir: str | None = None
    """Set when this app is one of several worker processes (``ttscale serve --workers``): the directory
    where they share their metrics, so ``/metrics`` sums all of them."""

    def __post_init__(self) -> None:
        positive = {
            "k": self.k, "max_budget_tokens": self.max_budget_tokens, "max_k": self.max_k, "max_n": self.max_n,
            "default_max_tokens": self.default_max_tokens, "max_max_tokens": self.max_max_tokens,
            "max_concurrency": self.max_concurrency, "max_batch": self.max_batch, "max_body_bytes": self.max_body_bytes,
            "retry_after_s": self.retry_after_s,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.max_queue < 0:
            raise ConfigError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.max_kv_bytes is not None and self.max_kv_bytes < 1:
            raise ConfigError(f"max_kv_bytes must be >= 1, got {self.max_kv_bytes}")
        if self.budget_tokens is not None and not 0 < self.budget_tokens <= self.max_budget_tokens:
            raise ConfigError(f"budget_tokens must be in [1, {self.max_budget_tokens}], got {self.budget_tokens}")
        if self.timeout_s <= 0 or self.batch_window_ms < 0 or self.batch_min_wait_ms < 0:
            raise ConfigError("timeout_s must be > 0, batch_window_ms and batch_min_wait_ms >= 0")
        if not 0 <= self.temperature <= 2:
            raise ConfigError(f"temperature must be in [0, 2], got {self.temperature}")
        if self.default_max_tokens > self.max_max_tokens:
            raise ConfigError("default_max_tokens exceeds max_max_tokens")
        if self.verifier not in server_verifiers():
            raise ConfigError(f"verifier {self.verifier!r} cannot serve requests; use one of {', '.join(server_verifiers())}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key must not be empty")

    @property
    def served_model(self) -> str:
        return self.model_name or self.backend.model_info().name


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts local connections.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0"), is_loopback("localhost")
    (True, True, False, True)
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to anything, so treat it as remote


def check_bind(host: str, api_key: str | None, allow_unauthenticated_remote: bool) -> None:
    """Refuse to expose the server beyond this machine without a key, unless explicitly asked."""
    if not is_loopback(host) and not api_key and not allow_unauthenticated_remote:
        raise ConfigError(
            f"binding {host} accepts remote connections: set --api-key (or TTSCALE_API_KEY), "
            "or pass --allow-unauthenticated-remote to accept that anyone who can reach it may use it"
        )
