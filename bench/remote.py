"""Remote engines and scale-out: HTTP concurrency against llama-server, and Ray workers.

1. A sweep of 20 BIG-bench arithmetic problems x 8 samples through the HTTP
   backend against llama.cpp's ``llama-server`` (8 parallel slots, continuous
   batching), one sample per request: concurrency 1 (one request at a time) vs
   concurrency 8 (8 problems in flight, which the server batches). Token totals
   are checked against the server's ``/metrics`` counters.
2. The same kind of sweep on the in-process backend through Ray: 2 workers vs 1
   (1 llama.cpp thread per worker, Ray started once, model loading included).

Ends with ``bench: http_concurrency_speedup = <ratio>`` and ``bench: ray_speedup = <ratio>``.
The machine has 2 cores shared with other jobs: expect noise, and at most ~2x from Ray.

    python bench/remote.py [--model smollm2-135m] [--problems 20] [--k 8] [--max-tokens 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from ttscale.backends.llama_server import LlamaServer, build_llama_server
from ttscale.backends.models import resolve_model_path
from ttscale.backends.openai_http import OpenAIHttpBackend
from ttscale.distributed import BackendSpec, PoolStrategy, run_parallel
from ttscale.registry import make_task
from ttscale.store import Store
from ttscale.strategies.base import Sampling


def http_sweep(url: str, model: str, task, probs, k: int, concurrency: int, tmp: Path) -> tuple[float, int, dict]:  # type: ignore[no-untyped-def]
    be = OpenAIHttpBackend(url, model, info_model=model, concurrency=concurrency)
    st = Store(tmp / f"http-c{concurrency}.db")
    try:
        before = be.metrics()
        t0 = time.perf_counter()
        # wave=1: one sample per request, so concurrency is what lets the server batch
        s = run_parallel(task=task, strategy=PoolStrategy(k, wave=1), backend=be, store=st, run_id="b",
                         problems=probs, workers=concurrency, sampling=Sampling(seed=concurrency))
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
        s = run_parallel(task=task, strategy=PoolStrategy(k, wave=k), backend_specs=[spec], store=st, run_id="b",
                         problems=probs, workers=workers, mode="ray", sampling=Sampling(seed=1))
        dt = time.perf_counter() - t0
        assert not s.failures and s.finished == len(probs), s.failures
        return dt, s.usage.generated_tokens
    finally:
        st.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--ray-problems", type=int, default=12)
    ap.add_argument("--server-threads", type=int, default=1)
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    task = make_task("bigbench", subtask="arithmetic/1_digit_multiplication", shots=3, max_tokens=args.max_tokens)
    probs = task.problems(limit=args.problems)
    print(f"cpu cores: {os.cpu_count()} (shared), load average {os.getloadavg()[0]:.1f}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-remote-"))

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
    print(f"bench: http_concurrency_speedup = {http_speedup:.2f}")
    print(f"bench: ray_speedup = {rtimes[1] / rtimes[2]:.2f}")


if __name__ == "__main__":
    main()
