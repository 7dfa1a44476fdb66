"""Fixtures for the server tests: a real uvicorn server on 127.0.0.1 in a thread, and controllable fakes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import uvicorn

from ttscale.backends.fake import FakeBackend
from ttscale.server.app import create_app
from ttscale.server.config import ServerConfig
from ttscale.types import Capabilities, Generation, GenerationRequest


@dataclass
class GatedBackend(FakeBackend):
    """A fake backend whose generate() blocks until ``gate`` opens or ``should_stop`` fires.

    Records each call's batch size and whether it was stopped, so tests can see
    batching and cancellation happen without relying on timing.
    """

    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def capabilities(self) -> Capabilities:  # takes should_stop (other step hooks are accepted and unused)
        return Capabilities(parallel_sequences=64, cancellation=True, local_prompt_counts=True)

    def generate(self, requests: Sequence[GenerationRequest],  # type: ignore[override]
                 should_stop: Callable[[], bool] | None = None, on_finish: object = None,
                 on_sample: object = None) -> list[Generation]:
        self.batch_sizes.append(len(requests))
        self.entered.set()
        while not self.gate.wait(0.01):
            if should_stop is not None and should_stop():
                self.stopped.set()
                gens = super().generate(requests)
                for g in gens:
                    for c in g.completions:
                        c.finish_reason = "cancelled"
                return gens
        return super().generate(requests)


@dataclass
class RunningServer:
    base_url: str
    server: uvicorn.Server
    thread: threading.Thread
    app: object

    @property
    def service(self):  # type: ignore[no-untyped-def]
        return self.app.state.service  # type: ignore[attr-defined]

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


@contextmanager
def run_server(config: ServerConfig, graceful_s: float = 10.0) -> Iterator[RunningServer]:
    """Serve ``create_app(config)`` with uvicorn on a free loopback port until the block ends."""
    app = create_app(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=graceful_s,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    running = RunningServer(f"http://127.0.0.1:{port}", server, thread, app)
    try:
        yield running
    finally:
        running.stop()
        sock.close()


@pytest.fixture
def scripted() -> FakeBackend:
    return FakeBackend(answers={"42": 0.7, "41": 0.2, "7": 0.1})


@pytest.fixture
def fake_server(scripted: FakeBackend) -> Iterator[RunningServer]:
    with run_server(ServerConfig(backend=scripted, model_name="fake", k=4)) as s:
        yield s
