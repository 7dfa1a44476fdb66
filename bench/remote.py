"""Remote engines and scale-out: HTTP concurrency against llama-server, and Ray workers.

1. A sweep of 20 arithmetic problems (BIG-bench's format, generated in-process) x 8 samples through the HTTP
   backend against llama.cpp's ``llama-server`` (8 parallel slots, continuous
   batching), one sample per request: concurrency 1 (one request at a time) vs
   concurrency 8 (8 problems in flight, which the server batches). Token totals
   are checked against the server's ``/metrics`` counters.
2. The same kind of sweep on the in-process backend through Ray: 2 workers vs 1
   (1 llama.cpp thread per worker, Ray started once, model loading included).

3. Strategies against one llama-server (``--parallel 8``, Qwen2.5-Coder-0.5B-Instruct), as a user
   would run them (``--strategies``): a plain client written here (8 concurrent ``n=1`` chat
   requests per question with the server's default sampling, majority vote) vs ``ttscale``
   self-consistency@8 on 12 GSM8K questions (zero-shot chat, temperature 0.8, 320 tokens), and
   self-consistency vs adaptive consistency (default settings) there and on BIG-bench 1-digit
   multiplication (k = 16), where votes settle. Walls are measured in this run; tokens from the
   server's ``/metrics``.

Ends with ``bench: http_concurrency_speedup = <ratio>`` and ``bench: ray_speedup = <ratio>``
(parts 1-2), and ``bench: remote_sc_vs_plain = <plain wall / SC wall, same sampler>`` and
``bench: remote_adaptive_vs_sc = <SC wall / adaptive wall on the arithmetic workload>`` (part 3).
The machine has 2 cores shared with other jobs: expect noise, and at most ~2x from Ray.

    python bench/remote.py [--model smollm2-135m] [--problems 20] [--k 8] [--max-tokens 8]
    python bench/remote.py --strategies-only [--strategy-model qwen2.5-coder-0.5b] [--questions 12]
    python bench/remote.py --gsm8k-waves {sc,cost,small,arith,calibrate,report} --server-threads 2 [--waves-profile P]

4. Waves sized by the cost model (``--gsm8k-waves PHASE``, one phase per invocation, results merged
   into a JSON file): the issue-26 workload (8 GSM8K questions x 8, T 0.8, 320 tokens, one llama-server
   ``--parallel 8``), self-consistency@8 against adaptive consistency with ``schedule=cost`` on the
   ``cpu-2core`` profile (and waves of 4 forced, to check the model's choice), and the arithmetic
   workload with the schedule. ``calibrate`` fits a profile to the server's own steps (``ttscale calibrate
   --base-url``) and writes it to ``--server-profile``; pass it as ``--waves-profile`` to price the
   schedule on it. ``report`` prints ``bench: remote_adaptive_vs_sc_gsm8k = <SC wall /
   adaptive wall>`` and ``bench: remote_adaptive_vs_sc`` with the schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from ttscale.backends.llama_server import LlamaServer, build_llama_server
from ttscale.backends.models import resolve_model_path
from ttscale.backends.openai_http import OpenAIHttpBackend
from ttscale.registry import make_task
from ttscale.run import BackendSpec, Executor, Solve, Sweep, execute
from ttscale.store import Store
from ttscale.types import Sampling


def http_sweep(url: str, model: str, task, probs, k: int, concurrency: int, tmp: Path) -> tuple[float, int, dict]:  # type: ignore[no-untyped-def]
    be = OpenAIHttpBackend(url, model, info_model=model, concurrency=concurrency)
    st = Store(tmp / f"http-c{concurrency}.db")
    try:
        before = be.metrics()
        t0 = time.perf_counter()
        # wave=1: one sample per request, so concurrency is what lets the server batch
        s = execute(Sweep(task, k, wave=1, sampling=Sampling(seed=concurrency)), store=st, run_id="b", executor=Executor(mode="threads", workers=concurrency, backend=be), problems=probs)
        dt = time.perf_counter() - t0
        after = be.metrics()
        served = int(after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"])
        assert not s.failures, s.failures
        return dt, s.usage.generated_tokens, {"server_tokens_predicted": served, **be.stats.to_dict()}
    finally:
        st.close()
        be.close()


def ray_sweep(model: str, task, probs, k: int, workers: int, tmp: Path) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    st = Store(tmp / f"ray-w{workers}.db")
    spec = BackendSpec("llama-cpp", model, {"n_ctx": 2048, "n_seq_max": k, "n_threads": 1})
    try:
        t0 = time.perf_counter()
        s = execute(Sweep(task, k, wave=k, sampling=Sampling(seed=1)), store=st, run_id="b", executor=Executor(mode="ray", workers=workers, backend_specs=tuple([spec])), problems=probs)
        dt = time.perf_counter() - t0
        assert not s.failures and s.finished == len(probs), s.failures
        return dt, s.usage.generated_tokens
    finally:
        st.close()


def _served(be: OpenAIHttpBackend, before: dict[str, float]) -> int:
    time.sleep(0.5)  # closed streams are counted once the server notices them
    after = be.metrics()
    return int(after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"])


def plain_client(url: str, task, probs, k: int, temperature: float, max_tokens: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """What a user writes without ttscale: k concurrent n=1 chat requests per question, server-default
    sampling, no log-probs, majority vote over the extracted answers."""
    async def one(client: httpx.AsyncClient, messages: list[dict[str, str]], seed: int) -> str:
        r = await client.post(f"{url}/chat/completions", json={
            "messages": messages, "temperature": temperature, "max_tokens": max_tokens, "seed": seed})
        r.raise_for_status()
        return str(r.json()["choices"][0]["message"]["content"])

    async def run() -> int:
        correct = 0
        async with httpx.AsyncClient(timeout=600) as client:
            for pi, p in enumerate(probs):
                req = task.request(p)
                messages = [{"role": m.role, "content": m.content} for m in req.messages]
                texts = await asyncio.gather(*(one(client, messages, 1000 * pi + i) for i in range(k)))
                answers = [a for a in (task.extract(t) for t in texts) if a is not None]
                top = Counter(answers).most_common(1)[0][0] if answers else None
                correct += bool(task.grade(p, top))
        return correct

    t0 = time.perf_counter()
    correct = asyncio.run(run())
    return {"wall": time.perf_counter() - t0, "accuracy": correct / len(probs)}


def ttscale_run(url: str, model: str, task, probs, strategy: str, k: int, temperature: float, tmp: Path,  # type: ignore[no-untyped-def]
                concurrency: int = 8, logprobs: bool = False, top_k: int = 0, min_p: float = 0.0,
                **knobs: Any) -> dict[str, Any]:
    """What ``ttscale run --strategy S -k K`` does (its default: log-probs only when the run reads them)."""
    from ttscale.registry import make_strategy

    be = OpenAIHttpBackend(url, model, info_model=model, concurrency=concurrency)
    st = Store(tmp / f"{strategy}-{k}-{time.monotonic_ns()}.db")
    try:
        before = be.metrics()
        t0 = time.perf_counter()
        summary = execute(Solve(task, make_strategy(strategy, k=k, **knobs), sampling=Sampling(temperature=temperature, seed=1, logprobs=logprobs,
                                                                  top_k=top_k, min_p=min_p)), store=st, run_id="r", backend=be, problems=probs)
        wall = time.perf_counter() - t0
        results = st.results("r")
        return {"wall": wall, "accuracy": summary.correct / max(1, summary.graded),
                "counted": summary.usage.generated_tokens, "served": _served(be, before),
                "samples": summary.usage.samples, "correct": summary.correct, "graded": summary.graded,
                "waves": [r["meta"].get("waves") for r in results],
                "schedule": next((r["meta"]["schedule"] for r in results if "schedule" in r["meta"]), None)}
    finally:
        st.close()
        be.close()


def sampling_analysis(url: str, task, probs, max_tokens: int) -> None:  # type: ignore[no-untyped-def]
    """Where self-consistency's time goes on llama-server: the same 8-sample requests (same seeds)
    with and without full-vocabulary sampling (top-k 0, min-p 0) and per-token log-probs, as one
    native n=8 request and as 8 concurrent n=1 chat requests. Decode steps equal, so walls compare."""
    root = url[:-3]

    async def native(client: httpx.AsyncClient, text: str, seed: int, full: bool, lp: bool) -> int:
        body: dict[str, Any] = {"prompt": text, "n_cmpl": 8, "n_predict": max_tokens, "temperature": 0.8,
                                "seed": seed, "cache_prompt": True}
        if full:
            body |= {"top_k": 0, "min_p": 0.0}
        if lp:
            body["n_probs"] = 1
        r = await client.post(f"{root}/completion", json=body)
        r.raise_for_status()
        return sum(int(x["tokens_predicted"]) for x in r.json())

    async def chat8(client: httpx.AsyncClient, messages: list[dict[str, str]], seed: int, full: bool, lp: bool) -> int:
        async def one(i: int) -> int:
            body: dict[str, Any] = {"messages": messages, "temperature": 0.8, "max_tokens": max_tokens, "seed": seed + i}
            if full:
                body |= {"top_k": 0, "min_p": 0.0}
            if lp:
                body |= {"logprobs": True, "top_logprobs": 1}
            r = await client.post(f"{url}/chat/completions", json=body)
            r.raise_for_status()
            return int(r.json()["usage"]["completion_tokens"])
        return sum(await asyncio.gather(*(one(i) for i in range(8))))

    async def run(shape: str, full: bool, lp: bool) -> tuple[float, int]:
        toks = 0
        t0 = time.perf_counter()
        async with httpx.AsyncClient(timeout=600) as client:
            for pi, p in enumerate(probs):
                req = task.request(p)
                messages = [{"role": m.role, "content": m.content} for m in req.messages]
                if shape == "native n=8":
                    text = (await client.post(f"{root}/apply-template", json={"messages": messages})).json()["prompt"]
                    toks += await native(client, text, 100 + pi, full, lp)
                else:
                    toks += await chat8(client, messages, 100 + pi, full, lp)
        return time.perf_counter() - t0, toks

    print(f"sampling analysis: {len(probs)} questions x 8 samples, max {max_tokens} tokens (ms per generated token)")
    for shape in ("native n=8", "8 x chat n=1"):
        for full, lp in ((True, True), (True, False), (False, True), (False, False)):
            wall, toks = asyncio.run(run(shape, full, lp))
            print(f"  {shape:13s} top-k/min-p {'off (full vocab)' if full else 'server 40/0.05':16s} "
                  f"log-probs {'on ' if lp else 'off'}: {wall:6.1f} s, {toks} tokens, {1000 * wall / toks:.2f} ms/token")


def strategies_part(args: argparse.Namespace, tmp: Path) -> tuple[float, float]:
    model = args.strategy_model
    gsm = make_task("gsm-symbolic", style="chat", max_tokens=args.gsm_max_tokens, model=model)
    gsm_probs = gsm.problems(limit=args.questions)
    arith = make_task("arithmetic", subtask="arithmetic/1_digit_multiplication", model=model)
    arith_probs = arith.problems(limit=args.arith_problems)
    binary = build_llama_server()
    with LlamaServer(resolve_model_path(model), parallel=8, ctx_per_slot=args.ctx_per_slot,
                     threads=args.server_threads, binary=binary) as srv:
        url = srv.base_url
        if args.sampling_analysis:
            sampling_analysis(url, gsm, gsm_probs[: args.analysis_questions], args.analysis_max_tokens)
        print(f"llama-server --parallel 8 --threads {args.server_threads}, {model}; "
              f"GSM8K {len(gsm_probs)} questions x 8, T=0.8, max {args.gsm_max_tokens} tokens, zero-shot chat")
        be = OpenAIHttpBackend(url, model, info_model=model)
        if not args.adaptive_only:
            before = be.metrics()
            plain = plain_client(url, gsm, gsm_probs, 8, 0.8, args.gsm_max_tokens) | {"served": _served(be, before)}
            # the plain client's sampler (llama-server's defaults) vs ttscale's default, the model's own distribution
            sc_same = ttscale_run(url, model, gsm, gsm_probs, "self-consistency", 8, 0.8, tmp, top_k=40, min_p=0.05)
        be.close()
        sc = ttscale_run(url, model, gsm, gsm_probs, "self-consistency", 8, 0.8, tmp)
        if not args.adaptive_only:
            sc_lp = ttscale_run(url, model, gsm, gsm_probs, "self-consistency", 8, 0.8, tmp, logprobs=True)
        ada = ttscale_run(url, model, gsm, gsm_probs, "adaptive-consistency", 8, 0.8, tmp)
        rows = [("ttscale SC@8 (default: full vocab)", sc), ("ttscale adaptive (defaults)", ada)]
        if not args.adaptive_only:
            rows = [("plain client", plain), ("ttscale SC@8 --top-k 40 --min-p 0.05", sc_same), rows[0],
                    ("  the same, --logprobs", sc_lp), rows[1]]
        for name, r in rows:
            print(f"  {name:30s} wall {r['wall']:7.1f} s  accuracy {r['accuracy']:.3f}  server tokens {r['served']:6d}"
                  + (f"  counted {r['counted']}" if "counted" in r else ""))
        print(f"  adaptive vs SC on GSM8K (votes rarely settle): {sc['wall'] / ada['wall']:.2f}x wall, "
              f"{1 - ada['served'] / sc['served']:+.0%} tokens saved")
        if not args.adaptive_only:
            print(f"  plain / SC with the plain client's sampler: {plain['wall'] / sc_same['wall']:.2f}; with ttscale's "
                  f"default full-vocabulary sampling: {plain['wall'] / sc['wall']:.2f}; with --logprobs too: "
                  f"{plain['wall'] / sc_lp['wall']:.2f}")
        print(f"1-digit multiplication (BIG-bench format), {len(arith_probs)} problems x 16")
        sc16 = ttscale_run(url, model, arith, arith_probs, "self-consistency", 16, 0.8, tmp)
        ada16 = ttscale_run(url, model, arith, arith_probs, "adaptive-consistency", 16, 0.8, tmp)
        for name, r in (("ttscale self-consistency@16", sc16), ("ttscale adaptive (defaults)", ada16)):
            print(f"  {name:30s} wall {r['wall']:7.1f} s  accuracy {r['accuracy']:.3f}  server tokens {r['served']:6d}"
                  f"  samples {r['samples']}")
    return (float("nan") if args.adaptive_only else plain["wall"] / sc_same["wall"]), sc16["wall"] / ada16["wall"]


def _wilson(correct: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(correct, n).proportion_ci(method="wilson") if n else None
    return (ci.low, ci.high) if ci is not None else (float("nan"), float("nan"))


def pool_leader_shares(pool: str, max_tokens: int) -> tuple[list[float], int]:
    """The shipped pool's per-problem leader shares, samples longer than ``max_tokens`` not voting
    (at that cap they would have been cut before their answer), and its mean prompt tokens."""
    import gzip
    import json
    from collections import defaultdict

    from ttscale.pools import POOL_DIR
    from ttscale.strategies.early_stop import leader_shares_of

    answers: dict[str, list[str | None]] = defaultdict(list)
    prompts: list[int] = []
    with gzip.open(POOL_DIR / f"{pool}.jsonl.gz", "rt") as f:
        for line in f:
            d = json.loads(line)
            if "sample" in d:
                s = d["sample"]
                answers[d["problem_id"]].append(s["answer"] if s["n_tokens"] <= max_tokens else None)
                prompts.append(s["prompt_tokens"])
    return leader_shares_of(list(answers.values())), sum(prompts) // max(1, len(prompts))


WAVE_PHASES = ("sc", "cost", "small", "arith", "calibrate", "report")


def gsm8k_waves_part(args: argparse.Namespace, tmp: Path) -> None:
    """Part 4 (``--gsm8k-waves PHASE``): the issue-26 workload, one phase per invocation (results merged
    into ``--waves-json``; ``report`` prints them): one llama-server ``--parallel 8`` with
    ``--server-threads`` threads, Qwen2.5-Coder-0.5B, ``--waves-questions`` GSM8K questions x 8 samples,
    temperature 0.8, 320 tokens. ``sc``: self-consistency@8. ``cost``: adaptive consistency with
    ``schedule=cost`` priced on ``--waves-profile``. ``small``: adaptive consistency in waves of 4 (the
    small-wave schedule, forced, to check the cost model's choice). ``arith``: BIG-bench 1-digit
    multiplication x 16: self-consistency, adaptive (defaults) and adaptive with the cost schedule."""
    import json

    model = args.strategy_model
    out = Path(args.waves_json)
    data: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    phase = args.gsm8k_waves
    gsm = make_task("gsm-symbolic", style="chat", max_tokens=args.gsm_max_tokens, model=model)
    gsm_probs = gsm.problems(limit=args.waves_questions)
    if phase == "report":
        waves_report(args, data, gsm, gsm_probs)
        return
    cost = {"schedule": "cost", "hardware": args.waves_profile}
    with LlamaServer(resolve_model_path(model), parallel=8, ctx_per_slot=args.ctx_per_slot,
                     threads=args.server_threads, binary=build_llama_server()) as srv:
        url = srv.base_url
        print(f"llama-server --parallel 8 --threads {args.server_threads}, {model}, load {os.getloadavg()[0]:.1f}")
        if phase == "sc":
            data["gsm_sc"] = ttscale_run(url, model, gsm, gsm_probs, "self-consistency", 8, 0.8, tmp)
        elif phase == "cost":
            data["gsm_cost"] = ttscale_run(url, model, gsm, gsm_probs, "adaptive-consistency", 8, 0.8, tmp, **cost)
        elif phase == "small":
            data["gsm_small"] = ttscale_run(url, model, gsm, gsm_probs, "adaptive-consistency", 8, 0.8, tmp, batch=4)
        elif phase == "calibrate":
            # the profile the schedule should be priced on: this server's own steps (ttscale calibrate --base-url)
            from dataclasses import replace as _replace

            from ttscale.backends.kv_sizing import header_info
            from ttscale.backends.server_calibration import calibrate_server
            from ttscale.roofline import load_profile

            start = _replace(load_profile("cpu-2core"), name="cpu-2core-llama-server")
            hw, points = calibrate_server(url, header_info(model), start, progress=print)
            path = Path(args.server_profile)
            path.parent.mkdir(parents=True, exist_ok=True)
            hw.save(path)
            print(f"{hw.name}: fitted on {len(points)} server steps, median error "
                  f"{hw.calibration['median_abs_error']:.1%}; written to {path}")
        elif phase == "arith":
            arith = make_task("arithmetic", subtask="arithmetic/1_digit_multiplication", model=model)
            aprobs = arith.problems(limit=args.arith_problems)
            data["arith_sc"] = ttscale_run(url, model, arith, aprobs, "self-consistency", 16, 0.8, tmp)
            data["arith_wide"] = ttscale_run(url, model, arith, aprobs, "adaptive-consistency", 16, 0.8, tmp)
            data["arith_cost"] = ttscale_run(url, model, arith, aprobs, "adaptive-consistency", 16, 0.8, tmp, **cost)
        print(f"load after {os.getloadavg()[0]:.1f}")
    data.setdefault("load", {})[phase] = os.getloadavg()[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    print(f"phase {phase} written to {out}")


def waves_report(args: argparse.Namespace, data: dict[str, Any], gsm, gsm_probs) -> None:  # type: ignore[no-untyped-def]
    from ttscale.backends.openai_http import _info_from_model
    from ttscale.roofline import load_profile
    from ttscale.strategies.early_stop import _stop_table, plan_waves

    hw = load_profile(args.waves_profile)
    info = _info_from_model(args.strategy_model)
    table = _stop_table(8, 0.95, "beta")
    shares, prompt = pool_leader_shares("gsm8k-qwen05-k16", args.gsm_max_tokens)
    for label, prior in (("default prior (leader share uniform on [0, 1])", None),
                         (f"prior from the shipped pool gsm8k-qwen05-k16 ({len(shares)} problems, mean leader share "
                          f"{sum(shares) / len(shares):.2f})", shares)):
        kw = {} if prior is None else {"leader_shares": prior}
        plan = plan_waves(8, widest=8, info=info, hardware=hw, prompt_tokens=prompt, max_tokens=args.gsm_max_tokens,
                          stops=lambda a, m: (a, m) in table, **kw)
        print(f"cost model on {hw.name}, {label}: waves {list(plan.waves)}, expected {plan.expected_s:.1f} s "
              f"against {plan.wide_s:.1f} s for one wave of 8 (P(stopped after each wave) "
              f"{[round(p, 3) for p in plan.stop_by_wave]})")
    rows = [("gsm_sc", "self-consistency@8"), ("gsm_cost", f"adaptive, schedule=cost on {hw.name}"),
            ("gsm_small", "adaptive, waves of 4 (forced)")]
    print(f"GSM8K, {len(gsm_probs)} questions x 8, T 0.8, max {args.gsm_max_tokens} tokens:")
    for key, name in rows + [("arith_sc", "arith: self-consistency@16"), ("arith_wide", "arith: adaptive (defaults)"),
                             ("arith_cost", f"arith: adaptive, schedule=cost on {hw.name}")]:
        r = data.get(key)
        if r is None:
            print(f"  {name:40s} (phase not run)")
            continue
        lo, hi = _wilson(r["correct"], r["graded"])
        waves = Counter(str(w) for w in r["waves"]) if any(r["waves"]) else None
        print(f"  {name:40s} wall {r['wall']:7.1f} s  accuracy {r['correct']}/{r['graded']} = {r['accuracy']:.3f} "
              f"[{lo:.2f}, {hi:.2f}]  server tokens {r['served']:6d}  samples {r['samples']}"
              + (f"  waves {dict(waves)}" if waves else ""))
    if "gsm_sc" in data and "gsm_cost" in data:
        print(f"bench: remote_adaptive_vs_sc_gsm8k = {data['gsm_sc']['wall'] / data['gsm_cost']['wall']:.2f}")
    if "gsm_sc" in data and "gsm_small" in data:
        print(f"  (waves of 4 forced: SC wall / that wall = {data['gsm_sc']['wall'] / data['gsm_small']['wall']:.2f})")
    if "arith_sc" in data and "arith_cost" in data:
        print(f"bench: remote_adaptive_vs_sc = {data['arith_sc']['wall'] / data['arith_cost']['wall']:.2f} "
              f"(schedule=cost; defaults: {data['arith_sc']['wall'] / data['arith_wide']['wall']:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--ray-problems", type=int, default=12)
    ap.add_argument("--server-threads", type=int, default=1)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--strategies-only", action="store_true", help="run only part 3")
    ap.add_argument("--skip-strategies", action="store_true", help="skip part 3 (it takes ~25 min)")
    ap.add_argument("--strategy-model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--questions", type=int, default=12)
    ap.add_argument("--gsm-max-tokens", type=int, default=320)
    ap.add_argument("--arith-problems", type=int, default=20)
    ap.add_argument("--ctx-per-slot", type=int, default=1024)
    ap.add_argument("--sampling-analysis", action="store_true", help="part 3 first times the sampling settings")
    ap.add_argument("--adaptive-only", action="store_true", help="part 3 without the plain client and SC variants")
    ap.add_argument("--analysis-questions", type=int, default=3)
    ap.add_argument("--analysis-max-tokens", type=int, default=192)
    ap.add_argument("--gsm8k-waves", choices=WAVE_PHASES, help="part 4, one phase: the issue-26 wave-schedule workload")
    ap.add_argument("--waves-json", default="runs/remote-gsm8k-waves.json", help="part 4's results, merged per phase")
    ap.add_argument("--waves-questions", type=int, default=8)
    ap.add_argument("--waves-profile", default="cpu-2core", help="hardware profile the cost schedule is priced on")
    ap.add_argument("--server-profile", default="runs/cpu-2core-llama-server.toml",
                    help="where --gsm8k-waves calibrate writes the profile fitted to the server's own steps")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    if args.gsm8k_waves:
        gsm8k_waves_part(args, tmp)
        return
    if args.strategies_only:
        sc_vs_plain, ada_vs_sc = strategies_part(args, tmp)
        print(f"bench: remote_sc_vs_plain = {sc_vs_plain:.2f}")
        print(f"bench: remote_adaptive_vs_sc = {ada_vs_sc:.2f}")
        return
    task = make_task("arithmetic", subtask="arithmetic/1_digit_multiplication", shots=3, max_tokens=args.max_tokens)
    probs = task.problems(limit=args.problems)
    print(f"cpu cores: {os.cpu_count()} (shared), load average {os.getloadavg()[0]:.1f}")

    binary = build_llama_server()
    # 1 thread: on this shared 2-core machine 2 spinning llama.cpp threads ran ~20x slower (measured)
    with LlamaServer(resolve_model_path(args.model), parallel=8, ctx_per_slot=512, threads=args.server_threads,
                     binary=binary) as srv:
        times = {}
        for c in (1, 8):
            dt, toks, info = http_sweep(srv.base_url, args.model, task, probs, args.k, c, tmp)
            times[c] = dt
            print(f"llama-server, concurrency {c}: {len(probs)} problems x {args.k} samples in {dt:.1f} s, "
                  f"{toks} tokens counted ({info['server_tokens_predicted']} by the server's /metrics), "
                  f"{toks / dt:.0f} tok/s, {info['responses']} responses, retries {info['retries']}")
    http_speedup = times[1] / times[8]
    if args.skip_ray:
        print(f"bench: http_concurrency_speedup = {http_speedup:.2f}")
        return

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rprobs = probs[: args.ray_problems]
    rtimes = {}
    for w in (1, 2):
        dt, toks = ray_sweep(args.model, task, rprobs, args.k, w, tmp)
        rtimes[w] = dt
        print(f"ray, {w} worker(s) x 1 thread: {len(rprobs)} problems x {args.k} samples in {dt:.1f} s, "
              f"{toks} tokens, {toks / dt:.0f} tok/s")
    ray.shutdown()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    extra = None if args.skip_strategies else strategies_part(args, tmp)
    print(f"bench: http_concurrency_speedup = {http_speedup:.2f}")
    print(f"bench: ray_speedup = {rtimes[1] / rtimes[2]:.2f}")
    if extra is not None:
        print(f"bench: remote_sc_vs_plain = {extra[0]:.2f}")
        print(f"bench: remote_adaptive_vs_sc = {extra[1]:.2f}")


if __name__ == "__main__":
    main()
