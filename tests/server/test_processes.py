"""``ttscale serve --workers N``: several processes on one port, their metrics summed, stopped together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ttscale.backends.llama_server import free_port
from ttscale.cli import app as cli_app

BODY = {"model": "fake", "messages": [{"role": "user", "content": "What is 6 times 7?"}]}


def _start(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the shared metrics directory lands where the test can see it
    proc = subprocess.Popen([sys.executable, "-m", "ttscale", "serve", "--port", str(port), "--log-level", "warning",
                             *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "server exited")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def _metric(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def test_workers_share_the_port_sum_their_metrics_and_stop_together(tmp_path: Path) -> None:
    proc, url = _start(["--backend", "fake", "--model-name", "fake", "--workers", "2", "-k", "4"], tmp_path)
    try:
        workers = _children(proc.pid)
        assert len(workers) == 2
        (metrics_dir,) = tmp_path.glob("ttscale-metrics-*")

        def post(_: int) -> httpx.Response:
            with httpx.Client(timeout=30) as c:  # a connection each: the kernel spreads them over the workers
                return c.post(f"{url}/v1/chat/completions", json=BODY)

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(post, range(48)))
        assert [r.status_code for r in answers] == [200] * 48
        assert all(r.json()["usage"]["completion_tokens"] > 0 for r in answers)
        # both processes answered: each wrote its own counter file
        assert {p.name for p in metrics_dir.glob("counter_*.db")} == {f"counter_{pid}.db" for pid in workers}
        for _ in range(4):  # whichever worker a scrape reaches, it reports the sum over both
            text = httpx.get(f"{url}/metrics").text
            assert _metric(text, 'ttscale_requests_total{endpoint="/v1/chat/completions",status="200"}') == 48
            assert _metric(text, "ttscale_samples_total") == 48 * 4
            assert _metric(text, "ttscale_in_flight ") == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        assert not metrics_dir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    port = free_port()
    r = subprocess.run([sys.executable, "-m", "ttscale", "serve", "--port", str(port), "--backend", "fake",
                        "--workers", "2", "--task", "rag", "--task-data", str(tmp_path / "missing.jsonl")],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert r.returncode != 0
    assert "missing.jsonl" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("ttscale-metrics-*"))


@pytest.mark.parametrize("backend", ["llama-cpp", "transformers"])
def test_workers_refuse_in_process_engines(backend: str) -> None:
    r = CliRunner().invoke(cli_app, ["serve", "--backend", backend, "--workers", "2"])
    assert r.exit_code == 2
    assert "--workers 2" in r.output and "own copy" in r.output


def test_workers_refuse_a_draft_model() -> None:
    r = CliRunner().invoke(cli_app, ["serve", "--backend", "fake", "--workers", "2", "--draft-model", "smollm2-135m"])
    assert r.exit_code == 2 and "--draft-model" in r.output
