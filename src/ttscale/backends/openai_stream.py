"""Streamed completions (server-sent events) for samples that may be stopped mid-generation.

When a caller passes ``should_stop`` or ``cancelled`` (early-stopping strategies, the server's
disconnected clients), :func:`generate_streamed` sends every sample as its own streamed ``n=1``
request (seeded ``seed + i`` like a fan-out), calls ``on_finish``/``on_sample`` as each one ends,
polls the stop hooks while they run, and closes the connections of the samples no longer needed
(samples not yet sent are never sent). Each sample then pays its own prompt prefill on servers
that do not share it between requests (llama-server keeps a prompt cache per slot), which the
capability ``hooked_prefill_per_sample`` tells budgets.

A stream is read chunk by chunk; every chunk's log-prob entries are the tokens the client has
received, so a sample stopped early (its connection closed: llama-server then frees the slot) is
counted from what arrived. The server may have decoded a token or two more before it noticed the
closed connection; ``bench/remote.py`` measures that gap against the server's own ``/metrics``.

Pure functions, no I/O: :func:`apply_chunk` folds one ``data:`` object into a :class:`StreamState`,
:func:`stream_completion` turns the state into a :class:`~ttscale.types.Completion`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from ttscale.backends.openai_wire import MalformedResponse, _finish, _token_logprobs, endpoint, request_body
from ttscale.errors import BackendError
from ttscale.types import (
    Cancelled,
    Completion,
    FinishReason,
    Generation,
    GenerationRequest,
    OnFinish,
    OnSample,
    ShouldStop,
)

if TYPE_CHECKING:
    from ttscale.backends.openai_client import AsyncOpenAIClient

POLL_S = 0.02
"""How often the stop hooks are polled while streams run (a decode step is 10-100 ms)."""


@dataclass
class StreamState:
    """What one streamed sample has delivered so far."""

    text: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    content_chunks: int = 0
    """Chunks that carried text or log-probs (one token each on llama-server)."""
    finish: FinishReason | None = None
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    prefilled: int | None = None
    """Prompt tokens the server evaluated (``timings.prompt_n``, else prompt - cached)."""


def stream_body(body: dict[str, Any]) -> dict[str, Any]:
    """A non-streaming request body made a stream that reports usage at the end."""
    return body | {"stream": True, "stream_options": {"include_usage": True}}


def parse_sse_line(line: str) -> dict[str, Any] | None:
    """The JSON object of one ``data:`` line; None for comments, keep-alives and ``[DONE]``."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if not payload or payload == "[DONE]":
        return None
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as e:
        raise MalformedResponse(f"stream chunk is not JSON: {payload[:80]!r}") from e
    if not isinstance(data, dict):
        raise MalformedResponse("stream chunk is not an object")
    return data


def apply_chunk(state: StreamState, data: dict[str, Any]) -> None:
    """Fold one chunk (completions or chat-completions flavour) into ``state``."""
    for ch in data.get("choices") or []:
        if not isinstance(ch, dict):
            raise MalformedResponse("a stream choice is not an object")
        piece = ch.get("text")
        if piece is None and isinstance(ch.get("delta"), dict):
            piece = ch["delta"].get("content")
        lps = _token_logprobs(ch.get("logprobs"))
        if piece:
            state.text.append(str(piece))
        if lps:
            state.logprobs.extend(lps)
        if piece or lps:
            state.content_chunks += 1
        if ch.get("finish_reason") is not None:
            state.finish = _finish(ch["finish_reason"])
    usage = data.get("usage")
    if isinstance(usage, dict):
        if isinstance(usage.get("completion_tokens"), int):
            state.completion_tokens = usage["completion_tokens"]
        if isinstance(usage.get("prompt_tokens"), int):
            state.prompt_tokens = usage["prompt_tokens"]
            details = usage.get("prompt_tokens_details")
            cached = details.get("cached_tokens") if isinstance(details, dict) else None
            if isinstance(cached, int):
                state.prefilled = max(0, state.prompt_tokens - cached)
    timings = data.get("timings")
    if isinstance(timings, dict) and isinstance(timings.get("prompt_n"), int):
        state.prefilled = timings["prompt_n"]


def stream_completion(state: StreamState, req: GenerationRequest, index: int, prompt_tokens: int,
                      decode_s: float, *, started: bool = True, prefill_estimate: int | None = None) -> Completion:
    """The sample a stream delivered.

    A finished stream is counted like a non-streamed answer (the server's ``completion_tokens``,
    at least the log-prob entries received). A stopped one (no finish reason: ``"cancelled"``) is
    counted from the log-prob entries received; its prefill is unknown (the usage chunk never came,
    and the server's prompt cache differs per slot: measured, a finished sibling's figure can be
    too low), so it is charged the whole prompt (``prefill_estimate`` overrides): an upper bound,
    never less than the server did. A sample stopped before its request was sent
    (``started=False``) cost nothing.
    """
    received = max(len(state.logprobs), state.content_chunks)
    if not started:
        n_tokens, finish, prefilled = 0, "cancelled", 0
    elif state.finish is None:
        n_tokens, finish = received, "cancelled"
        prefilled = prefill_estimate if prefill_estimate is not None else prompt_tokens
    else:
        n_tokens = max(received, state.completion_tokens or 0)
        finish = state.finish
        prefilled = state.prefilled if state.prefilled is not None else prompt_tokens
    lps = state.logprobs if req.logprobs and state.logprobs else None
    total = math.fsum(x for x in lps if not math.isnan(x)) if lps is not None else None
    return Completion(text="".join(state.text), n_tokens=n_tokens, finish_reason=finish,  # type: ignore[arg-type]
                      prompt_tokens=state.prompt_tokens or prompt_tokens, prefilled_tokens=prefilled,
                      logprob=total, token_logprobs=lps, index=index, decode_s=decode_s)


async def _read(client: AsyncOpenAIClient, url: str, body: dict[str, Any], state: StreamState) -> None:
    """Read one stream into ``state``, retrying transient failures that happen before any token."""
    from ttscale.backends.openai_client import RETRY_STATUS

    last = ""
    for attempt in range(client.max_retries + 1):
        if attempt:
            client.stats.retries += 1
        client.stats.requests += 1
        try:
            async with client.http().stream("POST", url, json=body) as r:
                if r.status_code in RETRY_STATUS:
                    await r.aread()
                    kind = f"http_{r.status_code}"
                elif r.status_code >= 400:
                    await r.aread()
                    client.stats.failures[f"http_{r.status_code}"] += 1
                    raise client.client_error(r)
                else:
                    async for line in r.aiter_lines():
                        data = parse_sse_line(line)
                        if data is not None:
                            apply_chunk(state, data)
                    if state.finish is not None:
                        client.stats.responses += 1
                        return
                    kind = "truncated_stream"
        except httpx.TimeoutException:
            kind = "timeout"
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.ConnectError) as e:
            kind, last = "connection", str(e)
        except MalformedResponse as e:
            kind, last = "invalid_response", str(e)
        client.stats.failures[kind] += 1
        if state.content_chunks:  # tokens were generated and received: a retry would count a different sample
            raise BackendError(f"{url}: stream broke after {state.content_chunks} tokens ({kind}{': ' + last if last else ''})")
        last = f"{kind}{': ' + last if last else ''}"
        if attempt < client.max_retries:
            await asyncio.sleep(client.backoff(attempt))
    raise BackendError(f"{url}: gave up after {client.max_retries + 1} attempts (last failure: {last})")


@dataclass
class _Streamed:
    completion: Completion
    started: bool


async def stream_sample(client: AsyncOpenAIClient, req: GenerationRequest, seed: int, index: int,
                        prompt_tokens: int, stop: asyncio.Event, llama_server: bool) -> _Streamed:
    """One sample as a stream; returns when it finishes or ``stop`` is set (its connection is closed)."""
    url = f"{client.base_url}/{endpoint(req)}"
    # without log-probs a stopped stream is counted from its content chunks (one token each on
    # llama-server; a stop-string prefix it holds back arrives later, so at worst a few tokens short)
    body = request_body(req, client.model, 1, seed, req.logprobs)
    if llama_server:  # its defaults truncate (top-k 40, min-p 0.05): ask for exactly the request's settings
        body |= {"top_k": req.top_k, "min_p": req.min_p}
    body = stream_body(body)
    state = StreamState()
    reserve = prompt_tokens + req.max_tokens
    client.ledger.reserve(reserve)
    used = reserve
    try:
        async with client.slots:
            if stop.is_set():
                used = 0
                return _Streamed(stream_completion(state, req, index, prompt_tokens, 0.0, started=False), False)
            t0 = time.perf_counter()
            reader = asyncio.ensure_future(_read(client, url, body, state))
            waiter = asyncio.ensure_future(stop.wait())
            await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not reader.done():
                reader.cancel()  # closes the connection: the server stops decoding this sample
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            else:
                reader.result()  # raises what the stream raised
            c = stream_completion(state, req, index, prompt_tokens, time.perf_counter() - t0)
            client.stats.counted_completion_tokens += c.n_tokens
            client.stats.reported_completion_tokens += state.completion_tokens or 0
            used = c.prefilled_tokens + c.n_tokens
            return _Streamed(c, True)
    finally:
        client.ledger.settle(reserve, used)


async def generate_streamed(
    client: AsyncOpenAIClient,
    requests: Sequence[GenerationRequest],
    prompt_tokens: Sequence[int],
    llama_server: bool,
    *,
    should_stop: ShouldStop | None = None,
    on_finish: OnFinish | None = None,
    on_sample: OnSample | None = None,
    cancelled: Cancelled | None = None,
) -> list[Generation]:
    """Every sample of ``requests`` streamed on its own, stoppable by the hooks (see module doc)."""
    t0 = time.perf_counter()
    stops = [asyncio.Event() for _ in requests]
    tasks: dict[asyncio.Task[_Streamed], tuple[int, int]] = {}
    for ri, r in enumerate(requests):
        seed = r.seed if r.seed is not None else client.new_seed()
        for i in range(r.n):
            fut = asyncio.create_task(stream_sample(client, r.with_(n=1), seed + i, i, prompt_tokens[ri],
                                                      stops[ri], llama_server))
            tasks[fut] = (ri, i)
    got: dict[tuple[int, int], _Streamed] = {}
    pending: set[asyncio.Task[_Streamed]] = set(tasks)
    order, error = 0, None
    while pending:
        done, pending = await asyncio.wait(pending, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
        for fut in sorted(done, key=lambda f: tasks[f]):
            ri, i = tasks[fut]
            if fut.exception() is not None:
                error = error or fut.exception()
                continue
            s = got[(ri, i)] = fut.result()
            s.completion.finish_order = order
            order += 1
            if s.completion.finish_reason != "cancelled":
                if on_finish is not None:
                    on_finish(ri, i)
                if on_sample is not None:
                    on_sample(ri, i, s.completion.text)
        if error is not None or (should_stop is not None and should_stop()):
            for e in stops:
                e.set()
        elif cancelled is not None:
            for ri, e in enumerate(stops):
                if not e.is_set() and cancelled(ri):
                    e.set()
    if error is not None:
        raise error
    out: list[Generation] = []
    for ri, r in enumerate(requests):
        comps = [got[(ri, i)].completion for i in range(r.n)]
        out.append(Generation(request=r, completions=comps, prompt_tokens=max(c.prompt_tokens for c in comps),
                              prefilled_tokens=sum(c.prefilled_tokens for c in comps), wall_s=time.perf_counter() - t0))
    return out
