"""Load test of `ttscale serve --policy` with the official OpenAI client: 64 concurrent clients, bounded in time.

One server (its own process) runs the embedded model with a fitted plan. Every client loops until
the deadline: one request at a time, half of the clients streaming (``stream_options.include_usage``)
and half not, ``max_retries=0`` so that each 429 is seen here. A 429 must carry an OpenAI-style error
body (``error.message``, ``error.type``, ``error.code``) and a ``Retry-After`` header; the client then
waits that long and sends a new request. Every request sent is accounted for: answered (200 with text,
exact ``usage`` and the ``ttscale`` extension), 429, or an error of any other kind (expected: none).
After the deadline no new request starts and the ones in flight are awaited (none is dropped).

Two phases on the same server, the same questions and clients:

1. ``policy``: requests name no strategy; the plan answers at the level their ``ttscale.budget.tokens``
   buys (by default the cheapest level). Its per-prompt policy or its best fixed choice serves, per
   the plan's recorded decision (``--per-prompt`` on the server forces the per-prompt policy); the
   response's ``ttscale.choices[].policy.served`` says which, and is counted.
2. ``fixed`` (baseline): requests name that level's fixed choice as a strategy (self-consistency at its k).

Latency is per answered request, from send to the last byte (streaming: to the last chunk).
Run it under `model-job` (it times things and runs a real model):

    model-job .venv/bin/python bench/serve_load.py [--seconds 60] [--clients 64] [--max-tokens 48]
        [--policy FILE | --pool gsm8k-qwen05-k16] [--budget-tokens B] [--max-concurrency 16 --max-queue 16]
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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

QUESTIONS = [f"What is {a} plus {b}? Answer briefly." for a, b in
             [(2, 3), (17, 25), (9, 8), (41, 7), (13, 13), (6, 54), (30, 12), (5, 99)]]
MODEL = "qwen2.5-coder-0.5b"


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    answered: int = 0
    rejected: int = 0
    bad_429: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)
    streamed: int = 0
    tokens: int = 0

    def quantile(self, q: float) -> float | None:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else None
        return float(statistics.quantiles(self.latencies, n=100, method="inclusive")[round(q * 100) - 1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(args: list[str]) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="serve-load-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "ttscale", "serve", "--port", str(port), "--log-level", "warning", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, port, log
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def check_429(e: openai.APIStatusError) -> str | None:
    """None if the 429 looks like OpenAI's (error object with message, type, code; Retry-After), else why not."""
    try:
        raw = e.response.json()
    except (ValueError, httpx.ResponseNotRead):
        return "body is not JSON"
    err = raw.get("error") if isinstance(raw, dict) else None
    if not isinstance(err, dict) or not all(isinstance(err.get(k), str) and err.get(k) for k in ("message", "type", "code")):
        return f"not an OpenAI error object: {str(raw)[:200]}"
    if "retry-after" not in e.response.headers:
        return "no Retry-After header"
    return None


async def one_request(client: openai.AsyncOpenAI, phase: Phase, i: int, stream: bool, extra: dict[str, Any],
                      model: str, max_tokens: int) -> float:
    """Send one request and account for it; returns seconds to wait before the next (Retry-After on 429)."""
    messages = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
    phase.sent += 1
    t0 = time.perf_counter()
    try:
        if stream:
            chunks = [c async for c in await client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, seed=i, stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True}, extra_body=extra)]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            usage, ext = chunks[-1].usage, (chunks[-1].model_extra or {}).get("ttscale")
            phase.streamed += 1
        else:
            r = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,  # type: ignore[arg-type]
                                                     seed=i, extra_body=extra)
            text, usage, ext = r.choices[0].message.content or "", r.usage, (r.model_extra or {}).get("ttscale")
        dt = time.perf_counter() - t0
        if not text or usage is None or not ext or usage.total_tokens != ext["usage"]["total_tokens"]:
            phase.errors.append(f"incomplete answer: text={bool(text)} usage={usage} ttscale={bool(ext)}")
            return 0.0
        phase.answered += 1
        phase.latencies.append(dt)
        phase.tokens += usage.total_tokens
        why = (ext["choices"][0].get("policy") or {}).get("served", ext["strategy"])
        phase.served[why] = phase.served.get(why, 0) + 1
        return 0.0
    except openai.APIStatusError as e:
        if e.status_code == 429:
            phase.rejected += 1
            bad = check_429(e)
            if bad:
                phase.bad_429.append(bad)
            return float(e.response.headers.get("retry-after", "1"))
        phase.errors.append(f"HTTP {e.status_code}: {str(e)[:200]}")
    except Exception as e:  # noqa: BLE001 - every other failure is counted, not raised
        phase.errors.append(f"{type(e).__name__}: {str(e)[:200]}")
    return 0.0


async def run_phase(port: int, phase: Phase, clients: int, seconds: float, extra: dict[str, Any], model: str,
                    max_tokens: int) -> None:
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2),
                             timeout=httpx.Timeout(900.0))
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0,
                                http_client=http)
    stop_at = time.monotonic() + seconds

    async def worker(c: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            wait = await one_request(client, phase, c * 1000 + n, c % 2 == 1, extra, model, max_tokens)
            n += 1
            if wait:
                await asyncio.sleep(min(wait, max(0.0, stop_at - time.monotonic())))

    await asyncio.gather(*(worker(c) for c in range(clients)))
    await client.close()


def report(p: Phase) -> None:
    p50, p99 = p.quantile(0.5), p.quantile(0.99)
    print(f"{p.name}: sent {p.sent}, answered {p.answered} ({p.streamed} streamed), 429 {p.rejected} "
          f"(non-OpenAI bodies {len(p.bad_429)}), other errors {len(p.errors)}, lost {p.sent - p.answered - p.rejected - len(p.errors)}; "
          f"latency p50 {p50 and round(p50, 2)} s, p99 {p99 and round(p99, 2)} s; served {p.served}; "
          f"{p.tokens / max(p.answered, 1):.0f} tokens/answer", flush=True)
    for e in (p.errors + p.bad_429)[:5]:
        print(f"  {p.name} error: {e}")


def fixed_baseline(policy: dict[str, Any], budget: float) -> tuple[str, int]:
    """The strategy and k the plan's level for ``budget`` would serve fixed (majority: self-consistency)."""
    fits = [lv for lv in policy["levels"] if lv["budget_tokens"] <= budget + 1e-9]
    lv = max(fits, key=lambda lv: lv["budget_tokens"])
    fixed = lv.get("fixed") or {"kind": "majority", "k": max(b["choice"]["k"] for b in lv["bins"])}
    from ttscale.registry import strategy_specs

    # the strategy record whose replay rule is the fixed choice's (majority: self-consistency)
    name = next(n for n, s in strategy_specs().items() if fixed["kind"] in [r.kind for r in s.replay or []])
    return name, int(fixed["k"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="Duration of each phase (new requests stop then).")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--policy", type=Path, help="A fitted plan (default: fit one on --pool from the shipped store).")
    ap.add_argument("--pool", default="gsm8k-qwen05-k16")
    ap.add_argument("--budget-tokens", type=int, help="Each request's ttscale.budget.tokens (default: the plan's cheapest level).")
    ap.add_argument("--max-concurrency", type=int, default=16)
    ap.add_argument("--max-queue", type=int, default=16)
    ap.add_argument("--per-prompt", action="store_true", help="Start the server with --per-prompt.")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--backend", default="llama-cpp", help="Engine (fake: a dry run of the harness without a model).")
    args = ap.parse_args()
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}", flush=True)
    policy_path = args.policy
    if policy_path is None:
        policy_path = Path(tempfile.mkdtemp(prefix="serve-load-")) / "policy.json"
        subprocess.run([sys.executable, "-m", "ttscale", "plan", "--store", "shipped", "--pool", args.pool,
                        "--hardware", "none", "--output", str(policy_path)], check=True, stdout=subprocess.DEVNULL)
    policy = json.loads(policy_path.read_text())
    budget = args.budget_tokens or int(min(lv["budget_tokens"] for lv in policy["levels"])) + 1
    served = [f"{lv['budget_tokens']:g}: {lv.get('serve', 'policy')}" for lv in policy["levels"]]
    print(f"plan {policy_path} ({policy['source'].get('pools')}); levels serve {served}; request budget {budget} tokens")
    proc, port, log = start_server(["--backend", args.backend, "--model", args.model, "--model-name", args.model, "--policy", str(policy_path), "--threads", str(args.threads),
                                    "--max-tokens", str(args.max_tokens), "--max-concurrency", str(args.max_concurrency),
                                    "--max-queue", str(args.max_queue), *(["--per-prompt"] if args.per_prompt else [])])
    try:
        pol = Phase("policy")
        asyncio.run(run_phase(port, pol, args.clients, args.seconds, {"ttscale": {"budget": {"tokens": budget}}},
                              args.model, args.max_tokens))
        report(pol)
        base = None
        if not args.skip_baseline:
            strategy, k = fixed_baseline(policy, budget)
            base = Phase(f"fixed {strategy} k={k}")
            asyncio.run(run_phase(port, base, args.clients, args.seconds,
                                  {"ttscale": {"strategy": strategy, "k": k, "budget": {"tokens": budget}}},
                                  args.model, args.max_tokens))
            report(base)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"server log: {log}")
    lost = pol.sent - pol.answered - pol.rejected - len(pol.errors)
    print(f"bench: serve_policy_clients = {args.clients}")
    print(f"bench: serve_policy_answered = {pol.answered}")
    print(f"bench: serve_policy_errors = {len(pol.errors) + len(pol.bad_429)}")
    print(f"bench: serve_policy_lost = {lost}")
    if base is not None and base.latencies:
        print(f"bench: serve_fixed_p50_s = {base.quantile(0.5):.2f}")
        print(f"bench: serve_fixed_p99_s = {base.quantile(0.99):.2f}")
    print(f"bench: serve_policy_p50_s = {pol.quantile(0.5) or float('nan'):.2f}")
    print(f"bench: serve_policy_p99_s = {pol.quantile(0.99) or float('nan'):.2f}")
    print(f"bench: serve_policy_429 = {pol.rejected}")


if __name__ == "__main__":
    main()
