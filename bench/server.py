"""What the OpenAI-compatible proxy costs, and what its batching buys.

Three measurements, each against a baseline measured in the same run:

1. ``proxy_overhead_ms_p50``: fake backend, self-consistency k=4, one request at a
   time. p50 latency of ``POST /v1/chat/completions`` on ``ttscale serve`` (its own
   process) minus p50 of running the same strategy in-process on the same fake
   backend (SolveContext + strategy.solve, no HTTP).
2. ``proxy_rps``: fake backend, 64 concurrent keep-alive clients, requests/s, against
   ``ttscale serve --workers W`` (W = this machine's cores, as a proxy in front of a remote
   engine is deployed). ``proxy_rps_one_process`` is the same load against one process (the
   baseline: one process is bound by one core, its interpreter lock) and
   ``proxy_workers_speedup`` their ratio.
3. ``batching_speedup``: the embedded model (SmolLM2-135M), 8 different questions,
   one sample each (strategy ``single``), ``max_tokens`` small: aggregate generated
   tokens/s with 8 concurrent clients over the same 8 requests sent one at a time.

The client is a minimal HTTP/1.1 keep-alive client over raw sockets, so that the
client's own cost (an HTTP library's) is not counted as the proxy's. It shares the
machine's cores with the server, so the throughput run prints both sides' CPU per
request: the client's (about 0.1 ms) is a small fraction of the server's, so the
server, not the load generator, sets ``proxy_rps``.

    python bench/server.py [--requests 300] [--seconds 5] [--max-tokens 32] [--skip-model]
    python bench/server.py --skip-fake --model qwen2.5-coder-1.5b --threads 2 --explain --max-tokens 128
        # batching_speedup_qwen15: answers that run to 128 tokens, so decode dominates as on a chat server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time

from ttscale.backends.fake import FakeBackend
from ttscale.cost import Budget, Meter
from ttscale.registry import make_strategy
from ttscale.server.solve import RequestTask
from ttscale.strategies.base import SolveContext
from ttscale.types import ChatMessage, GenerationRequest, Problem, Sampling

QUESTION = "What is 6 times 7?"
PAIRS = [(2, 3), (17, 25), (9, 8), (41, 7), (13, 13), (6, 54), (30, 12), (5, 99)]
QUESTIONS = [f"What is {a} plus {b}? Answer briefly." for a, b in PAIRS]
# Requests whose answers run to max_tokens, as a chat server's usually do (decode, not prefill, dominates).
EXPLAIN = [f"Explain step by step, in a short paragraph, how to add {a} and {b} by hand." for a, b in PAIRS]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_tree(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (the worker processes of ``serve --workers``)."""
    kids = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(c) for c in f.read().split()]
    except OSError:
        pass
    return cpu_seconds(pid) + sum(cpu_seconds(k) for k in kids)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [sys.executable, "-m", "ttscale", "serve", "--port", str(port), "--log-level", "warning", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if b"200 OK" in s.recv(1024):
                    return proc, port
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
    proc.kill()
    raise RuntimeError("server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def encode(body: dict[str, object], headers: dict[str, str] | None = None) -> bytes:
    data = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{extra}\r\n").encode() + data


def _split_response(buf: bytes) -> tuple[int, bytes, bytes] | None:
    """(status, body, rest) once a whole Content-Length response is in ``buf``."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1")
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
    if len(buf) < end + 4 + length:
        return None
    return int(head.split()[1]), buf[end + 4: end + 4 + length], buf[end + 4 + length:]


class Conn:
    """Blocking keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, raw: bytes) -> tuple[int, bytes]:
        self.sock.sendall(raw)
        while (parsed := _split_response(self.buf)) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        status, body, self.buf = parsed
        return status, body


async def _client(port: int, raw: bytes, stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    buf = b""
    while time.perf_counter() < stop_at:
        writer.write(raw)
        while (parsed := _split_response(buf)) is None:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        status, _, buf = parsed
        counts[0 if status == 200 else 1] += 1
    writer.close()


def throughput(port: int, raw: bytes, clients: int, seconds: float) -> tuple[float, int]:
    counts = [0, 0]

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(_client(port, raw, t0 + seconds, counts) for _ in range(clients)))
        return time.perf_counter() - t0

    wall = asyncio.run(main())
    return counts[0] / wall, counts[1]


def in_process_latencies(n: int, k: int) -> list[float]:
    backend = FakeBackend()
    template = GenerationRequest(messages=(ChatMessage("user", QUESTION),), temperature=0.8, max_tokens=256)
    out = []
    for i in range(n):
        t = time.perf_counter()
        task = RequestTask(template)
        strategy = make_strategy("self-consistency", k=k)
        problem = Problem(id="p0-c0", prompt="")
        ctx = SolveContext(problem, backend, task, Meter(backend.model_info(), Budget()), Sampling(seed=i))
        strategy.solve(problem, ctx)
        out.append(time.perf_counter() - t)
    return out


FAKE_SERVER = ["--backend", "fake", "--model-name", "fake", "-k", "4", "--max-queue", "1024"]


def measured_throughput(pid: int, port: int, raw: bytes, clients: int, seconds: float, label: str) -> float:
    """Requests/s of ``clients`` keep-alive clients, printed with the server's and the client's CPU per request."""
    cpu0, own0 = cpu_seconds_tree(pid), time.process_time()
    rps, errors = throughput(port, raw, clients, seconds)
    done = rps * seconds + errors
    print(f"fake backend, {label}{clients} concurrent clients for {seconds:g}s: {rps:.0f} requests/s ({errors} non-200; "
          f"CPU per request: server {(cpu_seconds_tree(pid) - cpu0) / done * 1e3:.3f} ms, "
          f"client {(time.process_time() - own0) / done * 1e3:.3f} ms)")
    return rps


def bench_workers(workers: int, seconds: float, clients: int) -> float:
    """Requests/s of ``clients`` keep-alive clients against ``ttscale serve --workers N``."""
    proc, port = start_server([*FAKE_SERVER, "--workers", str(workers)])
    try:
        raw = encode({"model": "fake", "messages": [{"role": "user", "content": QUESTION}]})
        throughput(port, raw, clients, 1.0)  # warm-up: every worker has answered
        return measured_throughput(proc.pid, port, raw, clients, seconds, f"--workers {workers}, ")
    finally:
        stop_server(proc)


def bench_fake(n_requests: int, seconds: float, clients: int) -> tuple[float, float]:
    proc, port = start_server(FAKE_SERVER)
    try:
        raw = encode({"model": "fake", "messages": [{"role": "user", "content": QUESTION}]})
        conn = Conn(port)
        for _ in range(50):  # warm-up
            conn.request(raw)
        http = []
        cpu0 = cpu_seconds(proc.pid)
        for _ in range(n_requests):
            t = time.perf_counter()
            status, _ = conn.request(raw)
            http.append(time.perf_counter() - t)
            assert status == 200, status
        cpu_ms = (cpu_seconds(proc.pid) - cpu0) / n_requests * 1e3
        inproc = in_process_latencies(n_requests, 4)
        p50_http, p50_in = statistics.median(http) * 1e3, statistics.median(inproc) * 1e3
        print(f"fake backend, sc k=4, sequential: HTTP p50 {p50_http:.3f} ms, in-process p50 {p50_in:.3f} ms "
              f"(HTTP p90 {statistics.quantiles(http, n=10)[-1] * 1e3:.3f} ms; server CPU {cpu_ms:.3f} ms/request)")
        rps = measured_throughput(proc.pid, port, raw, clients, seconds, "one process, ")
        return p50_http - p50_in, rps
    finally:
        stop_server(proc)


def batch_stats(port: int) -> tuple[float, float]:
    """(backend calls, generation requests) so far, from the server's /metrics."""
    conn = Conn(port)
    conn.sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
    while (parsed := _split_response(conn.buf)) is None:
        conn.buf += conn.sock.recv(65536)
    calls = reqs = 0.0
    for line in parsed[1].decode().splitlines():
        if line.startswith("ttscale_batch_requests_count"):
            calls = float(line.split()[-1])
        elif line.startswith("ttscale_batch_requests_sum"):
            reqs = float(line.split()[-1])
    conn.sock.close()
    return calls, reqs


def bench_model(max_tokens: int, repeats: int, threads: int, model: str = "smollm2-135m",
                questions: list[str] = QUESTIONS) -> float:
    proc, port = start_server(["--model", model, "--strategy", "single", "--threads", str(threads),
                               "--n-ctx", "4096", "--n-seq-max", "16", "--max-tokens", str(max_tokens)])
    try:
        raws = [encode({"model": model, "seed": i, "max_tokens": max_tokens,
                        "messages": [{"role": "user", "content": q}]}) for i, q in enumerate(questions)]

        def tokens(body: bytes) -> int:
            return int(json.loads(body)["usage"]["completion_tokens"])

        Conn(port).request(raws[0])  # warm-up: load weights, cache the chat template prefix
        seq_tps, con_tps = [], []
        for _ in range(repeats):
            conn = Conn(port)
            c0, r0 = batch_stats(port)
            t = time.perf_counter()
            n_seq = sum(tokens(conn.request(r)[1]) for r in raws)
            seq_tps.append(n_seq / (time.perf_counter() - t))
            c1, r1 = batch_stats(port)

            async def one(raw: bytes) -> int:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw)
                buf = b""
                while (parsed := _split_response(buf)) is None:
                    buf += await reader.read(65536)
                writer.close()
                return tokens(parsed[1])

            async def all_at_once() -> int:
                return sum(await asyncio.gather(*(one(r) for r in raws)))

            t = time.perf_counter()
            n_con = asyncio.run(all_at_once())
            con_tps.append(n_con / (time.perf_counter() - t))
            c2, r2 = batch_stats(port)
            print(f"  sequential: {n_seq} tokens at {seq_tps[-1]:.1f} tok/s in {c1 - c0:.0f} backend calls; "
                  f"8 concurrent: {n_con} tokens at {con_tps[-1]:.1f} tok/s in {c2 - c1:.0f} backend calls "
                  f"({r2 - r1:.0f} requests)")
        seq, con = max(seq_tps), max(con_tps)
        print(f"embedded {model} ({threads} thread(s)), 8 requests x 1 sample x <= {max_tokens} tokens: "
              f"sequential {seq:.1f} tok/s, concurrent {con:.1f} tok/s")
        return con / seq
    finally:
        stop_server(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="Sequential requests for the latency figure.")
    ap.add_argument("--seconds", type=float, default=5.0, help="Duration of the throughput run.")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="Server processes for proxy_rps (default: this machine's cores).")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="llama.cpp threads (1: steadier on a shared machine; both sides use the same).")
    ap.add_argument("--model", default="smollm2-135m", help="Embedded model for the batching measurement.")
    ap.add_argument("--explain", action="store_true",
                    help="Questions that ask for a paragraph (answers run to --max-tokens) instead of one number.")
    ap.add_argument("--skip-model", action="store_true", help="Skip the embedded-model batching measurement.")
    ap.add_argument("--skip-fake", action="store_true", help="Skip the fake-backend latency and throughput runs.")
    args = ap.parse_args()
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}")
    overhead, rps_one = (None, None) if args.skip_fake else bench_fake(args.requests, args.seconds, args.clients)
    rps = None if args.skip_fake else bench_workers(args.workers, args.seconds, args.clients)
    speedup = None if args.skip_model else bench_model(args.max_tokens, args.repeats, args.threads, args.model,
                                                       EXPLAIN if args.explain else QUESTIONS)
    if overhead is not None:
        print(f"bench: proxy_overhead_ms_p50 = {overhead:.3f}")
        print(f"bench: proxy_rps_one_process = {rps_one:.0f}")
        print(f"bench: proxy_rps = {rps:.0f}")
        print(f"bench: proxy_workers_speedup = {rps / rps_one:.2f}")
    if speedup is not None:
        suffix = {"qwen2.5-coder-1.5b": "_qwen15", "qwen2.5-coder-0.5b": "_qwen05"}.get(args.model, "")
        print(f"bench: batching_speedup{suffix} = {speedup:.2f}")


if __name__ == "__main__":
    main()
