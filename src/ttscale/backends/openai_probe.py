"""Next-token probes over HTTP: log-probabilities of candidate tokens right after a prompt, from the
top log-probs of a one-token completion (LLM-judge verifiers, speculative reasoning's step scores).

The server ranks its whole vocabulary after the prompt and returns the ``top`` most likely tokens
with their log-probabilities (a full-vocabulary softmax, before any sampler); a candidate is scored by
the returned entry of its first token. **A candidate whose token is not among the returned ``top``
gets ``-inf``**: its real log-probability is at most the smallest one returned, so the error is
bounded by what the cut leaves out (``top`` = 100 on llama-server, where asking for more costs only
bytes).

* **llama-server** (detected from ``/props``): chat requests are rendered by its ``/apply-template``,
  then its native ``/completion`` is asked for ``n_predict: 1`` with ``n_probs: top``. Candidates are
  matched by token id: each candidate's first token comes from ``/tokenize`` without special tokens,
  exactly as the embedded engine's probe takes it (candidates sharing a first token are reported
  once). The prompt tokens come from ``tokens_evaluated`` and those prefilled from ``timings.prompt_n``
  (the rest were in the slot's prompt cache).
* **Any other OpenAI-compatible server**: ``/v1/completions`` with ``max_tokens: 1, logprobs: top``
  (``/v1/chat/completions`` with ``top_logprobs`` for chat requests), counted from ``usage``
  (``prompt_tokens`` less ``prompt_tokens_details.cached_tokens``). Its top entries name tokens by
  text only, so a candidate matches an entry whose text is the whole candidate (a candidate of
  several tokens is then ``-inf``).

The one token the server samples costs no forward pass (it is drawn from the prompt's last logits
and generation stops there), so a probe is charged its prefill alone, as on the embedded engine.
Identical prompts in one call are sent once; the repeats prefill nothing.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ttscale.backends.llama_probe import TokenProbe
from ttscale.backends.openai_wire import MalformedResponse, parse_response
from ttscale.errors import ConfigError, UnsupportedFeatureError
from ttscale.types import GenerationRequest

if TYPE_CHECKING:
    from ttscale.backends.openai_client import AsyncOpenAIClient

LLAMA_SERVER_TOP = 100
"""Top log-probs asked of llama-server: it sorts the whole vocabulary anyway, more entries cost only bytes."""
OPENAI_TOP = 20
"""Elsewhere: vLLM's default ``--max-logprobs`` and OpenAI's chat limit."""
_FLOOR = -1e30
"""llama-server writes log(0) as the lowest float: anything below this is ``-inf``."""


@dataclass
class ProbeAnswer:
    """One probe's answer: the top next tokens' log-probs (keyed by token id where the server gives
    ids, else by token text) and the prompt tokens it held and prefilled."""

    top: dict[int | str, float]
    prompt_tokens: int
    prefilled_tokens: int


def native_probe_body(text: str, top: int) -> dict[str, Any]:
    """llama-server's native ``/completion``: one token, the top ``top`` pre-sampling log-probs."""
    return {"prompt": text, "n_predict": 1, "n_probs": top, "post_sampling_probs": False, "temperature": 0.0,
            "seed": 0, "cache_prompt": True, "stream": False}


def openai_probe_body(req: GenerationRequest, model: str, top: int) -> dict[str, Any]:
    """``/v1/completions`` (a prompt) or ``/v1/chat/completions`` (messages) for one token and its top log-probs."""
    body: dict[str, Any] = {"model": model, "max_tokens": 1, "temperature": 0.0, "n": 1, "seed": 0, "stream": False}
    if req.prompt is not None:
        return body | {"prompt": req.prompt, "logprobs": top}
    assert req.messages is not None
    return body | {"messages": [{"role": m.role, "content": m.content} for m in req.messages],
                   "logprobs": True, "top_logprobs": top}


def _logprob(v: Any) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise MalformedResponse(f"a top log-prob is not a number: {v!r}")
    return -math.inf if v < _FLOOR else float(v)


def parse_native_probe(data: Any) -> ProbeAnswer:
    """llama-server's native answer: ``completion_probabilities[0].top_logprobs`` by token id."""
    if not isinstance(data, dict):
        raise MalformedResponse("native probe answer is not an object")
    probs = data.get("completion_probabilities")
    if not isinstance(probs, list) or not probs or not isinstance(probs[0], dict):
        raise MalformedResponse("native probe answer has no completion_probabilities (does the server take n_probs?)")
    entries = probs[0].get("top_logprobs")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("id"), int) for e in entries):
        raise MalformedResponse("native probe answer has no top_logprobs with token ids")
    prompt_tokens = data.get("tokens_evaluated")
    timings = data.get("timings")
    prefilled = timings.get("prompt_n") if isinstance(timings, dict) else None
    if not isinstance(prompt_tokens, int) or not isinstance(prefilled, int):
        raise MalformedResponse("native probe answer has no tokens_evaluated / timings.prompt_n")
    return ProbeAnswer({e["id"]: _logprob(e.get("logprob")) for e in entries}, prompt_tokens,
                       max(0, min(prefilled, prompt_tokens)))


def parse_openai_probe(data: Any) -> ProbeAnswer:
    """An OpenAI-style answer: the first position's top log-probs by token text, counted from ``usage``."""
    parsed = parse_response(data)  # validates choices and usage
    lp = data["choices"][0].get("logprobs")
    top: dict[int | str, float] = {}
    if isinstance(lp, dict) and isinstance(lp.get("top_logprobs"), list) and lp["top_logprobs"]:
        first = lp["top_logprobs"][0]  # legacy completions: {token text: log-prob}
        if not isinstance(first, dict):
            raise MalformedResponse("top_logprobs[0] is not an object")
        top = {str(k): _logprob(v) for k, v in first.items()}
    elif isinstance(lp, dict) and isinstance(lp.get("content"), list) and lp["content"]:
        entries = lp["content"][0].get("top_logprobs") if isinstance(lp["content"][0], dict) else None
        if not isinstance(entries, list):
            raise MalformedResponse("logprobs.content[0] has no top_logprobs")
        top = {str(e.get("token")): _logprob(e.get("logprob")) for e in entries if isinstance(e, dict)}
    else:
        raise UnsupportedFeatureError("the server returned no top log-probs for a next-token probe")
    return ProbeAnswer(top, parsed.prompt_tokens, parsed.prompt_tokens - parsed.cached_tokens)


async def _first_ids(client: AsyncOpenAIClient, candidates: Sequence[str], known: dict[str, int]) -> dict[str, int]:
    """Each candidate's first token id from llama-server's ``/tokenize`` (no special tokens), cached in ``known``."""
    for c in candidates:
        if c in known:
            continue
        data = await client.post_json(f"{client.root_url}/tokenize",
                                      {"content": c, "add_special": False, "parse_special": False})
        toks = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(toks, list) or not toks or not isinstance(toks[0], int):
            raise ConfigError(f"candidate {c!r} does not tokenize")
        known[c] = toks[0]
    out: dict[str, int] = {}
    for c in candidates:
        if known[c] not in out.values():  # candidates sharing a first token are reported once, as embedded
            out[c] = known[c]
    return out


async def aprobe(client: AsyncOpenAIClient, requests: Sequence[GenerationRequest], candidates: Sequence[str],
                 top: int | None = None, known_ids: dict[str, int] | None = None) -> list[TokenProbe]:
    """Log-probability of each candidate's first token right after each request's prompt (``-inf`` for a
    candidate outside the server's top ``top``), with the prompt tokens each probe held and prefilled."""
    if not requests:
        return []
    llama_server = await client.detect_flavor() == "llama-server"
    n_top = top or (LLAMA_SERVER_TOP if llama_server else OPENAI_TOP)
    keys: dict[str, int | str] = ({c: c for c in candidates} if not llama_server else
                                  dict(await _first_ids(client, candidates, {} if known_ids is None else known_ids)))
    # identical prompts are sent once (the repeats prefill nothing), as the embedded probe does
    texts = (list(await asyncio.gather(*(client.arender(r) for r in requests))) if llama_server
             else [r.prompt if r.prompt is not None else repr(r.messages) for r in requests])
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(t, i)

    async def one(i: int) -> ProbeAnswer:
        req = requests[i]
        reserve = await client.acount_prompt_tokens(req) if client.ledger.cap is not None else 0
        client.ledger.reserve(reserve)
        used = reserve  # a failed call may have spent its whole prompt
        try:
            if llama_server:
                got: ProbeAnswer = await client.post_json(f"{client.root_url}/completion",
                                                          native_probe_body(texts[i], n_top), parse_native_probe)
            else:
                url = f"{client.base_url}/{'completions' if req.prompt is not None else 'chat/completions'}"
                got = await client.post_json(url, openai_probe_body(req, client.model, n_top), parse_openai_probe)
            used = got.prefilled_tokens
            return got
        finally:
            client.ledger.settle(reserve, used)

    distinct = sorted(set(first.values()))
    answers = dict(zip(distinct, await asyncio.gather(*(one(i) for i in distinct)), strict=True))
    out = []
    for i, t in enumerate(texts):
        a = answers[first[t]]
        logprobs = {c: a.top.get(k, -math.inf) for c, k in keys.items()}
        out.append(TokenProbe(logprobs, a.prompt_tokens, a.prefilled_tokens if i == first[t] else 0))
    return out
