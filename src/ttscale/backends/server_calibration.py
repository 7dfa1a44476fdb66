"""Calibrate a hardware profile against a running llama-server instead of the embedded engine.

A plan priced on a profile fitted to the embedded engine's steps misprices a server whose steps cost
otherwise: on this machine llama-server (``--parallel 8``) ran two waves of 4 GSM8K samples at 0.72 of one
wave of 8 where the embedded profile said 0.46 (docs/cost-model.md). This times the server itself through
its native ``/completion`` endpoint and the ``timings`` it returns: prefills of one request (``prompt_ms``,
the prompt cache off), and decode steps of N concurrent requests (``predicted_ms / predicted_n`` of each,
the median of the N), which the roofline fit then treats like the embedded engine's steps.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from ttscale.errors import BackendError
from ttscale.roofline import HardwareProfile, TimedStep, fit_profile
from ttscale.types import ModelInfo

SERVER_PREFILLS: tuple[int, ...] = (128, 512, 768, 2048)
SERVER_DECODES: tuple[tuple[int, int], ...] = ((1, 256), (2, 256), (4, 256), (8, 256), (1, 720), (8, 720),
                                               (1, 1984), (8, 1984))
"""(concurrent requests, prompt tokens) of the decode steps timed. Steps the server cannot hold (more
requests than its slots, or a prompt plus its tokens longer than a slot's context) are skipped, said so."""
QUICK_SERVER_PREFILLS: tuple[int, ...] = (64, 256)
QUICK_SERVER_DECODES: tuple[tuple[int, int], ...] = ((1, 64), (2, 64), (4, 64))
FILLER_TOKEN = 1000
"""Token id the timed prompts repeat: timing does not depend on what the tokens say."""


def root_url(base_url: str) -> str:
    """The server's root (its native endpoints) from an OpenAI base URL.

    >>> root_url("http://127.0.0.1:8080/v1")
    'http://127.0.0.1:8080'
    """
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _complete(client: Any, prompt_tokens: int, n_predict: int, seed: int) -> dict[str, Any]:
    # distinct first tokens keep concurrent requests from sharing a cached prefix
    prompt = [FILLER_TOKEN + seed] + [FILLER_TOKEN] * (prompt_tokens - 1)
    r = client.post("/completion", json={"prompt": prompt, "n_predict": n_predict, "ignore_eos": True,
                                         "cache_prompt": False, "temperature": 0.8, "seed": seed})
    if r.status_code != 200:
        raise BackendError(f"llama-server /completion answered {r.status_code}: {r.text[:200]}")
    timings = r.json().get("timings")
    if not isinstance(timings, dict) or "prompt_ms" not in timings or "predicted_ms" not in timings:
        raise BackendError("the server returned no llama.cpp timings: server calibration needs llama-server")
    return timings


def server_slots(client: Any) -> int:
    """How many requests the server decodes together (its ``--parallel``), from ``/props``."""
    return server_shape(client)[0]


def server_shape(client: Any) -> tuple[int, int]:
    """The server's slots and each slot's context (tokens), from ``/props`` (1 and 0 when it says nothing)."""
    r = client.get("/props")
    if r.status_code != 200:
        return 1, 0
    props = r.json()
    n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx") or 0
    return int(props.get("total_slots") or 1), int(n_ctx)


def time_server_steps(base_url: str, prefills: Sequence[int], decodes: Sequence[tuple[int, int]], *,
                      tokens: int = 32, progress: Callable[[str], None] | None = None) -> list[TimedStep]:
    """Measured prefills (one request each, ``prompt_ms``) and decode steps (N concurrent requests of
    ``tokens`` generated tokens each; the median per-token time of the N), N capped at the server's slots."""
    import httpx

    out: list[TimedStep] = []
    with httpx.Client(base_url=root_url(base_url), timeout=900) as client:
        slots, n_ctx = server_shape(client)

        def fits(tokens_needed: int) -> bool:
            return n_ctx <= 0 or tokens_needed <= n_ctx

        for length in prefills:
            if not fits(length + 1):
                if progress:
                    progress(f"prefill {length} tokens: skipped, a slot holds {n_ctx}")
                continue
            t = _complete(client, length, 1, seed=0)
            out.append(TimedStep("prefill", 1, length, 0, float(t["prompt_ms"]) / 1e3))
            if progress:
                progress(f"prefill {length} tokens: {t['prompt_ms']:.0f} ms")
        for n, ctx in decodes:
            if n > slots or not fits(ctx + tokens):
                if progress:
                    progress(f"decode {n} x 1 token at context {ctx}: skipped, the server has {slots} slots of "
                             f"{n_ctx} tokens")
                continue
            with ThreadPoolExecutor(n) as pool:
                timings = list(pool.map(lambda i, c=ctx: _complete(client, c, tokens, seed=i + 1), range(n)))
            per_token = statistics.median(float(t["predicted_ms"]) / max(1, int(t["predicted_n"])) for t in timings)
            out.append(TimedStep("decode", n, 1, ctx + tokens // 2, per_token / 1e3))
            if progress:
                progress(f"decode {n} x 1 token at context {ctx + tokens // 2}: {per_token:.1f} ms")
    return out


def calibrate_server(base_url: str, info: ModelInfo, base: HardwareProfile, *, quick: bool = False,
                     progress: Callable[[str], None] | None = None) -> tuple[HardwareProfile, list[tuple[ModelInfo, TimedStep]]]:
    """``base`` fitted to steps timed on the server at ``base_url`` serving the model of ``info``."""
    prefills, decodes = (QUICK_SERVER_PREFILLS, QUICK_SERVER_DECODES) if quick else (SERVER_PREFILLS, SERVER_DECODES)
    steps = time_server_steps(base_url, prefills, decodes, tokens=16 if quick else 32, progress=progress)
    points = [(info, s) for s in steps]
    fitted = fit_profile(replace(base, calibration={"models": info.name, "server": root_url(base_url),
                                                    "quick": quick}), points)
    return fitted, points
