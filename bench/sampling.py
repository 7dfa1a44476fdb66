"""Batched, prefix-sharing sampling vs independent calls to llama-cpp-python's plain API.

16 samples of one GSM8K prompt (ttscale's default 4-shot completion prompt) through ttscale's embedded backend, against 16
calls to ``llama_cpp.Llama.create_completion`` on the same model with the same
threads and sampling settings, in one run. Prints generated tokens/s for both
and the ratio; the last line is ``bench: sampling_speedup = <ratio>``.

    python bench/sampling.py [--model smollm2-135m] [--n 16] [--max-tokens 128] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time

from ttscale.backends.llama_cpp import LlamaCppBackend
from ttscale.backends.llama_cpu import plain_llama
from ttscale.registry import make_task
from ttscale.tasks.gsm_symbolic import GsmSymbolicTask
from ttscale.types import GenerationRequest

# Both sides sample from the same distribution: temperature 0.8 over the full vocabulary
# (Llama's default top_k=40 and min_p=0.05 are switched off to match).


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama.cpp threads for both sides")
    args = ap.parse_args()
    threads = args.threads

    # ttscale's default GSM8K completion prompt (4 worked exemplars, as `make_task` builds it for base models).
    task = make_task("gsm-symbolic", style="completion")
    assert isinstance(task, GsmSymbolicTask)
    problem = task.problems(limit=1)[0]
    base_req = task.request(problem)
    backend = LlamaCppBackend(args.model, n_threads=threads)
    text = backend.render(base_req)
    print(f"model={args.model} threads={threads} prompt_tokens={len(backend.tokenize(text))} n={args.n}")

    # The baseline loads the model the same way (weight repacking decided per CPU, see llama_cpu).
    plain = plain_llama(backend.path, n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)

    ours_tps, base_tps = [], []
    for rep in range(args.repeats):
        req = GenerationRequest(prompt=text, n=args.n, temperature=0.8, top_p=1.0, seed=100 * rep,
                                max_tokens=args.max_tokens, stop=base_req.stop, logprobs=True)
        backend.forget_prefixes()  # measure a cold prompt: no prefix reuse from the previous repeat
        backend._lc.llama_memory_clear(backend._mem, True)
        t = time.perf_counter()
        gen = backend.generate([req])[0]
        dt = time.perf_counter() - t
        ours_tps.append(gen.generated_tokens / dt)
        print(f"  ttscale batched: {gen.generated_tokens} tokens in {dt:.2f}s, prefilled {gen.prefilled_tokens}")

        t = time.perf_counter()
        n_tok = 0
        for i in range(args.n):
            plain.reset()  # independent calls: no reuse of the previous call's KV cache
            out = plain.create_completion(text, max_tokens=args.max_tokens, temperature=0.8, top_p=1.0, top_k=0, min_p=0.0,
                                          seed=100 * rep + i, stop=list(base_req.stop))
            n_tok += out["usage"]["completion_tokens"]
        dt = time.perf_counter() - t
        base_tps.append(n_tok / dt)
        print(f"  llama_cpp.Llama x{args.n}: {n_tok} tokens in {dt:.2f}s")

    ours, base = max(ours_tps), max(base_tps)
    print(f"ttscale batched: {ours:.1f} generated tokens/s")
    print(f"llama_cpp.Llama sequential: {base:.1f} generated tokens/s")
    suffix = {"qwen2.5-coder-0.5b": "_qwen05", "qwen2.5-coder-1.5b": "_qwen15"}.get(args.model, "")
    print(f"bench: sampling_speedup{suffix} = {ours / base:.2f}")


if __name__ == "__main__":
    main()
