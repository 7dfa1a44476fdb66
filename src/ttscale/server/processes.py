"""Several server processes on one port (``ttscale serve --workers N``).

One process answers at most what one core can: its HTTP handling and strategy code share one
interpreter lock (docs/benchmarks.md, "Proxy"). A proxy in front of a remote engine scales across
cores with worker processes that accept from one listening socket, as gunicorn's and uvicorn's
workers do. They are forked *before* any backend, thread or event loop exists, so each builds its
own; they share their metrics through a directory of files (prometheus_client's multiprocess mode).
An in-process engine is not forked: each worker would load its own copy of the model and compete for
the same cores (the CLI refuses it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("ttscale.server")

METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A bound, listening TCP socket every worker accepts from."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from e
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def serve_processes(n: int, sock: socket.socket, run: Callable[[socket.socket, str, int], None]) -> int:
    """Fork ``n`` workers, worker i calling ``run(sock, metrics_dir, i)`` (it serves until SIGTERM/SIGINT);
    supervise them; return the exit code.

    SIGTERM or SIGINT to this process is passed to every worker, which shuts down gracefully. A worker
    that exits on its own (a crash, a failed start) stops the others: a server running on fewer
    workers than asked for would hide the failure. The metrics directory is removed at the end."""
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {n}")
    metrics_dir = tempfile.mkdtemp(prefix="ttscale-metrics-")
    os.environ[METRICS_ENV] = metrics_dir  # read by prometheus_client in every worker
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        for i in range(n):
            pid = os.fork()
            if pid == 0:  # the worker: never returns into the caller's stack
                for s, handler in previous.items():
                    signal.signal(s, handler)
                status = 0
                try:
                    run(sock, metrics_dir, i)
                except SystemExit as e:
                    status = e.code if isinstance(e.code, int) else 1
                except BaseException:  # noqa: BLE001 - reported, then the worker exits non-zero
                    traceback.print_exc()
                    status = 1
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(status)
            children[pid] = i
        while children:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
                continue
            children.pop(pid, None)
            with contextlib.suppress(Exception):
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(pid, metrics_dir)
            status = os.waitstatus_to_exitcode(wait_status)
            if not stopping:
                log.error("worker process %d exited with %d; stopping the other workers", pid, status)
                code = status or 1
                forward(signal.SIGTERM, None)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.environ.pop(METRICS_ENV, None)
    return code
