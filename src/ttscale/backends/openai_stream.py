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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from ttscale.backends.openai_wire import (
    MalformedResponse,
    _finish,
    _token_logprobs,
    endpoint,
    native_body,
    request_body,
)
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
    order: int | None = None
    """When it finished, among the call's samples (None: it did not)."""
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
    received = max(len(state.logprobs), state.content_chunks, state.completion_tokens or 0)
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


def apply_native_chunk(states: dict[int, StreamState], first: int, data: dict[str, Any]) -> int | None:
    """Fold one chunk of llama-server's native ``/completion`` stream (``n_cmpl`` children, each chunk
    tagged with its child's ``index`` and running ``tokens_predicted``) into the children's states;
    returns the sample index that just finished, if one did."""
    idx = data.get("index", 0)
    if not isinstance(idx, int) or first + idx not in states:
        raise MalformedResponse(f"stream chunk for an unknown choice {idx!r}")
    st = states[first + idx]
    content, toks = data.get("content"), data.get("tokens")
    if isinstance(content, str) and content:
        st.text.append(content)
    n = len(toks) if isinstance(toks, list) else int(bool(content))
    st.content_chunks += n
    probs = data.get("completion_probabilities")
    if isinstance(probs, list):
        st.logprobs.extend(float(e["logprob"]) for e in probs if isinstance(e, dict) and "logprob" in e)
    if isinstance(data.get("tokens_predicted"), int):
        st.completion_tokens = data["tokens_predicted"]
    if isinstance(data.get("tokens_evaluated"), int):
        st.prompt_tokens = data["tokens_evaluated"]
    if data.get("stop") is True:
        st.finish = "length" if data.get("stop_type") == "limit" else "stop"
        timings = data.get("timings")
        if isinstance(timings, dict) and isinstance(timings.get("prompt_n"), int):
            st.prefilled = timings["prompt_n"]
        return first + idx
    return None


async def _read(client: AsyncOpenAIClient, url: str, body: dict[str, Any], apply: Callable[[dict[str, Any]], None],
                finished: Callable[[], bool], received: Callable[[], int]) -> None:
    """Read one stream, folding each chunk with ``apply``; transient failures before any token are
    retried (after tokens arrived a retry would count a different sample: that is an error)."""
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
                            apply(data)
                    if finished():
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
        if received():
            raise BackendError(f"{url}: stream broke after {received()} tokens ({kind}{': ' + last if last else ''})")
        last = f"{kind}{': ' + last if last else ''}"
        if attempt < client.max_retries:
            await asyncio.sleep(client.backoff(attempt))
    raise BackendError(f"{url}: gave up after {client.max_retries + 1} attempts (last failure: {last})")


@dataclass
class _Part:
    """One streamed request: samples ``first .. first + n - 1`` of request ``ri``."""

    ri: int
    first: int
    n: int
    started: bool = False
    t0: float = 0.0
    t1: float = 0.0


async def _stream_part(client: AsyncOpenAIClient, req: GenerationRequest, part: _Part, seed: int, prompt_tokens: int,
                       states: dict[tuple[int, int], StreamState], stop: asyncio.Event,
                       done: asyncio.Queue[tuple[int, int]], native_text: str | None) -> None:
    """Stream one part; each finished sample is put on ``done``; returns early once ``stop`` is set."""
    own = {part.first + j: states[(part.ri, part.first + j)] for j in range(part.n)}
    if native_text is not None:  # llama-server: n choices from one prefill, tagged by index
        url = f"{client.root_url}/completion"
        body = native_body(native_text, req, part.n, seed, req.logprobs) | {"stream": True}

        def apply(data: dict[str, Any]) -> None:
            i = apply_native_chunk(own, part.first, data)
            if i is not None:
                done.put_nowait((part.ri, i))
    else:  # any OpenAI server: one sample per stream
        url = f"{client.base_url}/{endpoint(req)}"
        body = request_body(req.with_(n=1), client.model, 1, seed, req.logprobs) | ({"top_k": req.top_k, "min_p": req.min_p}
                                                                                   if req.top_k or req.min_p else {})
        body = stream_body(body)
        st = own[part.first]

        def apply(data: dict[str, Any]) -> None:
            was = st.finish
            apply_chunk(st, data)
            if was is None and st.finish is not None:
                done.put_nowait((part.ri, part.first))
    reserve = prompt_tokens + part.n * req.max_tokens
    client.ledger.reserve(reserve)
    used = 0
    try:
        async with client.slots:
            if stop.is_set():
                return
            part.started, part.t0 = True, time.perf_counter()
            reader = asyncio.ensure_future(_read(client, url, body, apply,
                                                 lambda: all(s.finish is not None for s in own.values()),
                                                 lambda: sum(s.content_chunks for s in own.values())))
            waiter = asyncio.ensure_future(stop.wait())
            await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not reader.done():
                reader.cancel()  # closes the connection: the server stops decoding these samples
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            else:
                reader.result()  # raises what the stream raised
            part.t1 = time.perf_counter()
            used = prompt_tokens + sum(max(s.content_chunks, s.completion_tokens or 0) for s in own.values())
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
    """Every sample of ``requests`` streamed, stoppable by the hooks (see module doc).

    On llama-server a request streams as one native multi-choice request per part of at most its
    slot count (one prefill per part, samples tagged by index); stopping closes the part's stream,
    which is what early stopping wants (the unfinished samples of a wave all go). Elsewhere every
    sample is its own ``n = 1`` stream."""
    t0 = time.perf_counter()
    stops = [asyncio.Event() for _ in requests]
    done: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    states = {(ri, i): StreamState() for ri, r in enumerate(requests) for i in range(r.n)}
    parts: list[tuple[_Part, asyncio.Task[None]]] = []
    for ri, r in enumerate(requests):
        seed = r.seed if r.seed is not None else client.new_seed()
        size = (client.server_slots or r.n) if llama_server else 1
        text = await client.arender(r) if llama_server else None
        for first in range(0, r.n, size):
            part = _Part(ri, first, min(size, r.n - first))
            parts.append((part, asyncio.create_task(_stream_part(
                client, r, part, seed + first, prompt_tokens[ri], states, stops[ri], done, text))))
    order = 0
    error: BaseException | None = None
    while True:
        try:
            ri, i = await asyncio.wait_for(done.get(), timeout=POLL_S)
            states[(ri, i)].order = order
            order += 1
            if on_finish is not None:
                on_finish(ri, i)
            if on_sample is not None:
                on_sample(ri, i, "".join(states[(ri, i)].text))
        except TimeoutError:
            pass
        for _, task in parts:
            if task.done() and task.exception() is not None and error is None:
                error = task.exception()
        if error is not None or (should_stop is not None and should_stop()):
            for e in stops:
                e.set()
        elif cancelled is not None:
            for ri, e in enumerate(stops):
                if not e.is_set() and cancelled(ri):
                    e.set()
        if all(task.done() for _, task in parts) and done.empty():
            break
    if error is not None:
        raise error
    out: list[Generation] = []
    for ri, r in enumerate(requests):
        comps: list[Completion] = []
        for part, _ in (pt for pt in parts if pt[0].ri == ri):
            own = [states[(ri, part.first + j)] for j in range(part.n)]
            reported = [s.prefilled for s in own if s.finish is not None and s.prefilled is not None]
            # one prefill per part: what its finished samples report, the whole prompt if none finished
            part_prefill = max(reported) if reported else prompt_tokens[ri]
            for j, st in enumerate(own):
                c = stream_completion(st, r, part.first + j, prompt_tokens[ri], part.t1 - part.t0, started=part.started)
                c.prefilled_tokens = part_prefill if part.started and j == 0 else 0
                c.finish_order = st.order if st.order is not None else order + part.first + j
                comps.append(c)
        for c in comps:
            client.stats.counted_completion_tokens += c.n_tokens
        out.append(Generation(request=r, completions=comps, prompt_tokens=max(c.prompt_tokens for c in comps),
                              prefilled_tokens=sum(c.prefilled_tokens for c in comps), wall_s=time.perf_counter() - t0))
    return out
