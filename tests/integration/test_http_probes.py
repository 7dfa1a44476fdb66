"""Next-token probes over HTTP against real llama-servers with SmolLM2-135M: the log-probs agree with the
embedded engine's on the same GGUF, and speculative reasoning runs with base and draft both over HTTP
(two servers), every phase's tokens matching the servers' own counters.

Tolerance (measured 2026-12-06, each prompt prefilled whole on both sides, 8 rating prompts x the digit
and Yes/No candidates): |HTTP - embedded| log-prob at most 0.17 nats (median 0.05) on SmolLM2-135M Q4_1
and 0.26 (median 0.08) on Qwen2.5-Coder-0.5B Q4_K_M -- the same size as the embedded engine's own
disagreement between probing the prompts one by one and in one batch (0.19 and 0.25): llama.cpp's
kernels round differently with the batch's shape. The test allows 0.3 nats and a median under 0.1.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.backends.llama_server import LlamaServer
from ttscale.backends.models import resolve_model_path
from ttscale.backends.openai_http import OpenAIHttpBackend
from ttscale.cli import app
from ttscale.strategies.speculative import DIGITS, SCORE_QUESTION
from ttscale.types import GenerationRequest
from ttscale.verifiers.judge import NO, YES

pytestmark = [pytest.mark.model, pytest.mark.timeout(1800)]
MODEL = "smollm2-135m"
TOLERANCE = 0.3
"""nats: the largest |HTTP - embedded| log-prob allowed (measured at most 0.17 here, see the module doc)."""
CANDIDATES = (*DIGITS, *YES, *NO)
NAMES = ("Alice", "Bob", "Carla", "Dmitri", "Emma", "Farid")


def rating_prompts() -> list[GenerationRequest]:
    """Judge prompts with distinct first words, so a one-slot server shares no prefix between them and
    prefills each whole, as the embedded engine does after ``forget_prefixes``."""
    out = []
    for i, w in enumerate(NAMES):
        boxes, pens = 3 + i, 4 * i + 2
        out.append(GenerationRequest(prompt=(
            f"{w} has {boxes} boxes with {pens} pens each. How many pens does {w} have?\n\n"
            f"Solution so far: {w} has {boxes} * {pens} = {boxes * pens + i % 3} pens.\n\n{SCORE_QUESTION}\nRating:")))
    return out


def server(threads: int = 1, parallel: int = 1) -> LlamaServer:
    return LlamaServer(resolve_model_path(MODEL), parallel=parallel, ctx_per_slot=2048, threads=threads)


@pytest.fixture(scope="module")
def one_slot(llama_server_binary: Path) -> Iterator[LlamaServer]:
    with LlamaServer(resolve_model_path(MODEL), parallel=1, ctx_per_slot=2048, threads=1,
                     binary=llama_server_binary) as srv:
        yield srv


def test_http_probes_agree_with_the_embedded_engine(one_slot: LlamaServer, smollm: object) -> None:
    reqs = rating_prompts()
    local = []
    for r in reqs:
        smollm.forget_prefixes()  # type: ignore[attr-defined]  # one whole prefill per prompt, as the server does
        local.append(smollm.next_token_logprobs([r], CANDIDATES)[0])  # type: ignore[attr-defined]
    http = OpenAIHttpBackend(one_slot.base_url, MODEL, info_model=MODEL)
    wide = OpenAIHttpBackend(one_slot.base_url, MODEL, info_model=MODEL, probe_top=1000)
    try:
        assert http.capabilities.next_token_probes
        remote = http.next_token_logprobs(reqs, CANDIDATES)
        again = wide.next_token_logprobs(reqs, CANDIDATES)  # the same prompts, the top 1000 tokens
    finally:
        http.close()
        wide.close()
    diffs: list[float] = []
    for h, w, e in zip(remote, again, local, strict=True):
        assert h.prompt_tokens == w.prompt_tokens == e.prompt_tokens
        assert h.prefilled_tokens == h.prompt_tokens  # distinct first words: nothing cached
        # the repeat came from the server's prompt cache (only its last token evaluated: other kernels, so
        # its log-probs differ by the same rounding), and the server says so
        assert w.prefilled_tokens < 3
        top = [v for v in h.logprobs.values() if math.isfinite(v)]
        assert top, "no candidate among the top 100"
        for c, v in h.logprobs.items():
            if math.isfinite(v):
                diffs.append(abs(v - e.logprobs[c]))
            elif math.isfinite(w.logprobs[c]):  # outside the top 100, inside the top 1000: below every one of the 100
                assert w.logprobs[c] <= min(top) + TOLERANCE
            if math.isfinite(w.logprobs[c]):
                diffs.append(abs(w.logprobs[c] - e.logprobs[c]))
    assert max(diffs) <= TOLERANCE and statistics.median(diffs) < 0.1, (max(diffs), statistics.median(diffs))


def _counters(srv: LlamaServer) -> dict[str, float]:
    be = OpenAIHttpBackend(srv.base_url, MODEL)
    try:
        m = be.metrics()
    finally:
        be.close()
    return {k.split(":", 1)[1]: v for k, v in m.items() if k.startswith("llamacpp:")}


def test_speculative_reasoning_with_base_and_draft_over_http(llama_server_binary: Path, tmp_path: Path) -> None:
    """Two servers: the base scores each draft step with a probe and rewrites the low ones; the draft writes.
    Every phase's tokens are the servers' own: the draft server decoded the draft tokens and prefilled the
    draft prompts, the base server prefilled the scores and rewrites and decoded the rewrites (plus the one
    token each probe samples from its prefill's logits, which costs no forward pass and is not charged)."""
    out = tmp_path / "o.json"
    with server() as base, server() as draft:
        before_base, before_draft = _counters(base), _counters(draft)
        r = CliRunner().invoke(app, [
            "run", "--task", "gsm-symbolic", "--strategy", "speculative-reasoning", "-o", "threshold=5",
            "--step-tokens", "24", "--max-steps", "3", "--max-tokens", "64", "--temperature", "0", "--limit", "1",
            "--backend", "openai", "--base-url", base.base_url, "--model", MODEL,
            "--draft-model", MODEL, "--draft-base-url", draft.base_url,
            "--store", str(tmp_path / "s.sqlite"), "--output", str(out), "--no-progress"], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        time.sleep(0.5)
        d_base = {k: v - before_base.get(k, 0.0) for k, v in _counters(base).items()}
        d_draft = {k: v - before_draft.get(k, 0.0) for k, v in _counters(draft).items()}
    res = json.loads(out.read_text())["results"][0]
    spec, usage = res["meta"]["speculative"], res["meta"]["speculative"]["usage"]
    assert spec["draft_model"] == spec["base_model"] == MODEL and spec["drafted"] >= 1
    assert spec["accepted"] + spec["rejected"] == spec["drafted"]
    scores = [s for c in spec["chains"] for s in c["scores"] if s is not None]
    assert len(scores) == spec["drafted"] and all(0.0 <= s <= 9.0 for s in scores)
    assert usage["score"]["requests"] == spec["drafted"] and usage["score"]["generated_tokens"] == 0
    assert usage["score"]["prefilled_tokens"] > 0 and usage["score"]["flops"] > 0
    for f in ("prefilled_tokens", "generated_tokens"):
        assert sum(usage[p][f] for p in ("draft", "score", "rewrite")) == res["usage"][f]
    assert usage["draft"]["generated_tokens"] == d_draft["tokens_predicted_total"] > 0
    assert usage["draft"]["prefilled_tokens"] == d_draft["prompt_tokens_total"]
    assert usage["rewrite"]["generated_tokens"] + usage["score"]["requests"] == d_base["tokens_predicted_total"]
    assert usage["score"]["prefilled_tokens"] + usage["rewrite"]["prefilled_tokens"] == d_base["prompt_tokens_total"]
