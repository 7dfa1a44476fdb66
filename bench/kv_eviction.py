"""KV eviction on the transformers backend (issue 27): decode speed against llama.cpp, and what a press costs.

Loads Qwen2.5-Coder-0.5B twice, in the embedded llama.cpp engine (Q4_K_M weights, f16 cache) and in the
transformers backend (the same GGUF dequantized to float32, f32 cache), and samples ``--batch``
continuations of one prompt of about ``--passages`` x 40 tokens on each (temperature 0.8, seeded,
``--tokens`` tokens at most). Decode tokens/s is generated tokens over the decode seconds (a call's wall
time less its prefill), the median of ``--repeats`` calls after a warm-up call.

Then the same call on the transformers backend with each press at ``--compression``: prefill and decode
seconds against no press (same model object: ``with_press``), and the real cache's bytes after the press.

    model-job .venv/bin/python bench/kv_eviction.py [--batch 4] [--tokens 32] [--passages 12] [--repeats 3]
    model-job .venv/bin/python bench/kv_eviction.py --tokens 128 --passages 4 --decode-kv 96   # evicting while decoding
    model-job .venv/bin/python bench/kv_eviction.py --tokens 64 --passages 4 --bf16             # bfloat16 against float32

Ends with ``bench:`` lines: ``transformers_vs_llamacpp_decode`` (transformers' decode tokens/s over
llama.cpp's, same model, prompt and batch: below 1 is slower) and ``press_overhead`` (decode seconds with
``--press`` over without, per generated token: the eviction's cost, or its saving when the smaller cache is
cheaper to read) and ``press_prefill_overhead`` (prefill seconds with the press over without: its scoring).
With ``--decode-kv N`` also ``decode_press_overhead`` (decode tokens/s without eviction over with ``--press``
evicting each sample to N cells every ``--decode-interval`` steps) and ``decode_press_peak_kv`` (the
peak cache with it over without). With ``--bf16`` also ``bf16_vs_f32_decode`` (decode tokens/s of the
transformers backend in bfloat16 over float32, same prompt and batch) and ``bf16_vs_llamacpp_decode``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from ttscale.types import GenerationRequest

PASSAGES = [
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris and was the tallest structure then.",
    "Mount Everest is the highest mountain above sea level, on the border between Nepal and China.",
    "The Great Wall of China is a series of fortifications built across northern China over many centuries.",
    "The Amazon river carries more water than any other river in the world and crosses several countries.",
    "The Pacific Ocean is the largest and deepest of the Earth's oceans, covering a third of the surface.",
    "Python was created by Guido van Rossum and first released in 1991 as a general-purpose language.",
    "The Moon is Earth's only natural satellite and the fifth largest moon in the Solar System.",
    "Photosynthesis converts light energy into chemical energy stored in glucose inside plant cells.",
    "The Sahara is the largest hot desert in the world, spanning most of North Africa from east to west.",
    "Marie Curie was the first person to win Nobel Prizes in two different sciences, physics and chemistry.",
    "The human heart has four chambers and pumps blood through the body about seventy times a minute.",
    "Tokyo is the capital of Japan and one of the most populous metropolitan areas on the planet.",
]


def prompt(passages: int) -> str:
    body = "\n".join(f"Passage {i + 1}: {PASSAGES[i % len(PASSAGES)]}" for i in range(passages))
    return f"{body}\nWrite a long essay that connects all of these passages into one story.\nEssay:"


def decode_rate(backend: Any, req: GenerationRequest, repeats: int) -> dict[str, float]:
    """Median prefill seconds, decode seconds and decode tokens/s over ``repeats`` calls (after a warm-up)."""
    backend.generate([req.with_(max_tokens=4)])
    pre, dec, rate = [], [], []
    for i in range(repeats):
        if hasattr(backend, "forget_prefixes"):
            backend.forget_prefixes()  # llama.cpp would otherwise serve the prompt from its prefix cache
        g = backend.generate([req.with_(seed=1000 + i)])[0]
        d = g.wall_s - g.prefill_s
        pre.append(g.prefill_s)
        dec.append(d)
        rate.append(g.generated_tokens / d)
    return {"prefill_s": statistics.median(pre), "decode_s": statistics.median(dec),
            "tokens_per_s": statistics.median(rate), "prompt_tokens": g.prompt_tokens,
            "peak_kv_bytes": backend.model_info().kv_bytes(g.peak_kv_tokens)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--passages", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compression", type=float, default=0.5)
    ap.add_argument("--press", default="snapkv", help="the press of the press_overhead line")
    ap.add_argument("--all-presses", action="store_true", help="also time every other press")
    ap.add_argument("--decode-kv", type=int, default=None, help="also time --press evicting to this many cells "
                    "per sample while decoding")
    ap.add_argument("--decode-interval", type=int, default=32)
    ap.add_argument("--bf16", action="store_true", help="also time the transformers backend in bfloat16 "
                    "(weights and cache): bench line bf16_vs_f32_decode")
    args = ap.parse_args()

    from ttscale.backends.llama_cpp import LlamaCppBackend
    from ttscale.backends.transformers_backend import PRESSES, TransformersBackend

    req = GenerationRequest(prompt=prompt(args.passages), n=args.batch, temperature=0.8, max_tokens=args.tokens)
    t0 = time.perf_counter()
    llama = LlamaCppBackend(args.model, n_ctx=4096, n_seq_max=max(args.batch, 1))
    ll = decode_rate(llama, req, args.repeats)
    llama.close()
    t1 = time.perf_counter()
    tf = TransformersBackend(args.model, n_ctx=4096, n_seq_max=max(args.batch, 1))
    load_s = time.perf_counter() - t1
    base = decode_rate(tf, req, args.repeats)
    full_bytes = tf.last_cache_bytes
    print(f"prompt {base['prompt_tokens']} tokens, batch {args.batch}, {args.tokens} tokens at most; "
          f"transformers load {load_s:.1f} s (llama.cpp part {t1 - t0:.1f} s)")
    print("| engine / press | prefill s | decode s | decode tokens/s | prompt KV after prefill | peak KV (meter) |")
    print("|---|---|---|---|---|---|")
    print(f"| llama.cpp (Q4_K_M, f16 cache) | {ll['prefill_s']:.2f} | {ll['decode_s']:.2f} | "
          f"{ll['tokens_per_s']:.1f} | | {ll['peak_kv_bytes'] / 2**20:.2f} MiB |")
    print(f"| transformers (f32), no press | {base['prefill_s']:.2f} | {base['decode_s']:.2f} | "
          f"{base['tokens_per_s']:.1f} | {full_bytes / 2**20:.2f} MiB | {base['peak_kv_bytes'] / 2**20:.2f} MiB |")
    presses = list(PRESSES) if args.all_presses else [args.press]
    results: dict[str, dict[str, float]] = {}
    for name in presses:
        pressed = tf.with_press(name, args.compression)
        r = decode_rate(pressed, req, args.repeats)
        results[name] = r
        print(f"| transformers, {name}@{args.compression:g} | {r['prefill_s']:.2f} | {r['decode_s']:.2f} | "
              f"{r['tokens_per_s']:.1f} | {pressed.last_cache_bytes / 2**20:.2f} MiB "
              f"({pressed.last_cache_bytes / full_bytes:.2f}) | {r['peak_kv_bytes'] / 2**20:.2f} MiB |")
    p = results[args.press]
    decoding = None
    if args.decode_kv is not None:
        capped = tf.with_press(args.press, 0.0, decode_kv=args.decode_kv, decode_interval=args.decode_interval)
        decoding = decode_rate(capped, req, args.repeats)
        print(f"| transformers, {args.press} evicting to {args.decode_kv} cells every {args.decode_interval} steps | "
              f"{decoding['prefill_s']:.2f} | {decoding['decode_s']:.2f} | {decoding['tokens_per_s']:.1f} | "
              f"{full_bytes / 2**20:.2f} MiB | {decoding['peak_kv_bytes'] / 2**20:.2f} MiB |")
    half = None
    if args.bf16:
        tf.close()
        bf = TransformersBackend(args.model, n_ctx=4096, n_seq_max=max(args.batch, 1), dtype="bfloat16")
        half = decode_rate(bf, req, args.repeats)
        print(f"| transformers (bf16), no press | {half['prefill_s']:.2f} | {half['decode_s']:.2f} | "
              f"{half['tokens_per_s']:.1f} | {bf.last_cache_bytes / 2**20:.2f} MiB | "
              f"{half['peak_kv_bytes'] / 2**20:.2f} MiB |")
        bf.close()
    print(f"bench: transformers_vs_llamacpp_decode = {base['tokens_per_s'] / ll['tokens_per_s']:.3f}")
    print(f"bench: press_overhead = {base['tokens_per_s'] / p['tokens_per_s']:.3f}")
    print(f"bench: press_prefill_overhead = {p['prefill_s'] / base['prefill_s']:.3f}")
    if decoding is not None:
        print(f"bench: decode_press_overhead = {base['tokens_per_s'] / decoding['tokens_per_s']:.3f}")
        print(f"bench: decode_press_peak_kv = {decoding['peak_kv_bytes'] / base['peak_kv_bytes']:.3f}")
    if half is not None:
        print(f"bench: bf16_vs_f32_decode = {half['tokens_per_s'] / base['tokens_per_s']:.3f}")
        print(f"bench: bf16_vs_llamacpp_decode = {half['tokens_per_s'] / ll['tokens_per_s']:.3f}")


if __name__ == "__main__":
    main()
