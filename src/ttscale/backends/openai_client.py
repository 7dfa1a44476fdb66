"""The async client for OpenAI-compatible servers (vLLM, SGLang, llama.cpp's llama-server, hosted APIs).

:class:`AsyncOpenAIClient` does the work on one pooled ``httpx.AsyncClient``:
a concurrency limit, retries with exponential backoff and full jitter on
429/5xx/timeouts/connection resets/truncated bodies, and idempotence by sample
index: each sample slot of a request is filled by exactly one accepted
response, so a retried sample is never counted twice (a failed attempt's
response is never read, so nothing of it is counted).

Servers that return fewer choices than ``n`` (llama-cpp-python's bundled server
ignores ``n``) are detected on the first such response; the missing samples, and
every later multi-sample request, are fanned out as separate requests, each
counted from its own response. Samples that may be stopped mid-generation are
streamed instead (:mod:`ttscale.backends.openai_stream`).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ttscale.backends.openai_wire import (
    MalformedResponse,
    endpoint,
    native_body,
    parse_native,
    parse_response,
    request_body,
    to_completions,
)
from ttscale.errors import BackendError, BudgetExceededError, ConfigError, UnsupportedFeatureError
from ttscale.types import Completion, Generation, GenerationRequest

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class HttpStats:
    """What the client did, for reports: failures by kind, retries, fan-outs, reported vs counted tokens."""

    requests: int = 0
    responses: int = 0
    retries: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    fanout_requests: int = 0
    counted_completion_tokens: int = 0
    reported_completion_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "responses": self.responses, "retries": self.retries,
            "failures": dict(self.failures), "fanout_requests": self.fanout_requests,
            "counted_completion_tokens": self.counted_completion_tokens,
            "reported_completion_tokens": self.reported_completion_tokens,
        }


class TokenLedger:
    """A hard cap on processed tokens shared by every concurrent request of a client.

    Each call reserves its worst case before it is sent and settles to the
    real usage when it returns, so concurrent requests can never jointly pass the cap.
    """

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self.spent = 0
        self.reserved = 0
        self._lock = threading.Lock()

    def reserve(self, tokens: int) -> None:
        with self._lock:
            if self.cap is not None and self.spent + self.reserved + tokens > self.cap:
                raise BudgetExceededError(
                    f"token cap {self.cap} reached: spent {self.spent}, in flight {self.reserved}, asked {tokens}"
                )
            self.reserved += tokens

    def settle(self, reserved: int, used: int) -> None:
        with self._lock:
            self.reserved -= reserved
            self.spent += used


def _backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter (AWS architecture blog, 2015)."""
    return rng.uniform(0, min(cap, base * (2**attempt)))


class AsyncOpenAIClient:
    """Async generation against one OpenAI-compatible server."""

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 6,
        backoff_base: float = 0.2,
        backoff_max: float = 5.0,
        token_cap: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        jitter_seed: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stats = HttpStats()
        self.ledger = TokenLedger(token_cap)
        self.honours_n: bool | None = None
        """None until a multi-sample response shows whether the server returns all ``n`` choices."""
        self.has_logprobs: bool | None = None
        self.server_slots: int | None = None
        """llama-server's parallel slots (``/props``): it refuses a request for more choices than that."""
        self.flavor: str | None = None
        """"llama-server" (detected from ``/props``) or "openai"; None until the first request."""
        self._flavor_lock: asyncio.Lock | None = None
        self._rng = random.Random(jitter_seed)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._headers = headers
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._prompt_cache: dict[str, int] = {}

    def _http(self) -> httpx.AsyncClient:
        # Created lazily inside the running loop: httpx pools are bound to the loop that uses them.
        if self._client is None:
            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            self._client = httpx.AsyncClient(
                headers=self._headers, timeout=self._timeout, limits=limits, transport=self._transport
            )
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._client

    def http(self) -> httpx.AsyncClient:
        """The pooled client (created in the running loop on first use)."""
        return self._http()

    @property
    def slots(self) -> asyncio.Semaphore:
        """The concurrency limit: one permit per request in flight."""
        self._http()
        assert self._sem is not None
        return self._sem

    def new_seed(self) -> int:
        return self._rng.randrange(2**31)

    def backoff(self, attempt: int) -> float:
        return _backoff(attempt, self.backoff_base, self.backoff_max, self._rng)

    def client_error(self, r: httpx.Response) -> BackendError:
        """The error for a 4xx answer (a log-prob refusal is an UnsupportedFeatureError)."""
        return self._client_error(r)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def root_url(self) -> str:
        """The server root (``/tokenize`` and ``/metrics`` live there, not under ``/v1``)."""
        return self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url

    # ---- one HTTP call with retries --------------------------------------------------------

    async def post_json(self, url: str, body: dict[str, Any], validate: Any = None) -> Any:
        """POST with retries on transient failures; ``validate(data)`` may raise MalformedResponse to retry."""
        client = self._http()
        assert self._sem is not None
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            delay = 0.0
            async with self._sem:
                self.stats.requests += 1
                try:
                    r = await client.post(url, json=body)
                    if r.status_code in RETRY_STATUS:
                        kind = f"http_{r.status_code}"
                        ra = r.headers.get("retry-after")
                        delay = min(self.backoff_max, float(ra)) if ra and ra.replace(".", "", 1).isdigit() else 0.0
                    elif r.status_code >= 400:
                        self.stats.failures[f"http_{r.status_code}"] += 1
                        raise self._client_error(r)
                    else:
                        data = json.loads(r.content)
                        out = validate(data) if validate else data
                        self.stats.responses += 1
                        return out
                except httpx.TimeoutException:
                    kind = "timeout"
                except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.ConnectError) as e:
                    kind = "connection"
                    last = str(e)
                except (json.JSONDecodeError, UnicodeDecodeError, MalformedResponse) as e:
                    kind = "invalid_response"
                    last = str(e)
            self.stats.failures[kind] += 1
            last = f"{kind}{': ' + last if last else ''}"
            if attempt < self.max_retries:
                await asyncio.sleep(max(delay, _backoff(attempt, self.backoff_base, self.backoff_max, self._rng)))
        raise BackendError(f"{url}: gave up after {self.max_retries + 1} attempts (last failure: {last})")

    def _client_error(self, r: httpx.Response) -> BackendError:
        try:
            err = r.json().get("error", r.text)
            msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        except (ValueError, AttributeError):
            msg = r.text[:300]
        if "logprob" in msg.lower():
            return UnsupportedFeatureError(f"server {self.base_url} rejects log-probs: {msg}")
        return BackendError(f"server {self.base_url} answered {r.status_code}: {msg}")

    # ---- generation --------------------------------------------------------------------------

    async def detect_flavor(self) -> str:
        """llama-server answers ``/props`` with its generation settings; anything else is plain OpenAI."""
        if self.flavor is None:
            if self._flavor_lock is None:
                self._flavor_lock = asyncio.Lock()
            async with self._flavor_lock:
                if self.flavor is None:
                    flavor = "openai"
                    try:
                        r = await self._http().get(f"{self.root_url}/props")
                        if r.status_code == 200 and "default_generation_settings" in r.json():
                            flavor = "llama-server"
                            slots = r.json().get("total_slots")
                            self.server_slots = int(slots) if isinstance(slots, int) and slots > 0 else None
                    except (httpx.HTTPError, ValueError, AttributeError):
                        pass
                    self.flavor = flavor
        return self.flavor

    async def arender(self, req: GenerationRequest) -> str:
        """The text the server's model reads (llama-server renders chat through ``/apply-template``)."""
        return await self._render(req)

    async def _render(self, req: GenerationRequest) -> str:
        if req.prompt is not None:
            return req.prompt
        msgs = [{"role": m.role, "content": m.content} for m in req.messages or ()]
        data = await self.post_json(f"{self.root_url}/apply-template", {"messages": msgs})
        if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
            raise UnsupportedFeatureError(f"server {self.base_url} cannot render chat messages (/apply-template)")
        return str(data["prompt"])

    async def _call(self, req: GenerationRequest, n: int, seed: int | None, first: int,
                    prompt_tokens: int | None) -> list[Completion]:
        """One request for ``n`` choices numbered from ``first`` (fewer may come back)."""
        want_lp = req.logprobs or n > 1  # several choices are counted from their log-prob entries
        llama_server = await self.detect_flavor() == "llama-server"
        if llama_server and n > 1:
            # llama-server's OpenAI-style answer keeps one choice's usage, and its log-probs drop the
            # tokens of a matched stop string: its native endpoint reports each result's own count.
            url = f"{self.root_url}/completion"
            body = native_body(await self._render(req), req, n, seed, req.logprobs)
            parse = parse_native
        else:
            url, parse = f"{self.base_url}/{endpoint(req)}", parse_response
            body = request_body(req, self.model, n, seed, want_lp)
            if llama_server:  # its defaults truncate (top-k 40, min-p 0.05): ask for exactly the request's
                body |= {"top_k": req.top_k, "min_p": req.min_p}
        reserve = (prompt_tokens or 0) + n * req.max_tokens
        self.ledger.reserve(reserve)
        used = reserve  # a failed call may have spent anything up to its worst case
        try:
            t0 = time.perf_counter()
            parsed = await self.post_json(url, body, parse)
            lp_missing = any(c.token_logprobs is None for c in parsed.choices)
            if llama_server and n > 1 and not req.logprobs:
                pass  # counted from tokens_predicted, log-probs not needed
            elif want_lp and lp_missing:
                self.has_logprobs = False
                if req.logprobs:
                    raise UnsupportedFeatureError(
                        f"server {self.base_url} returns no log-probs; use a server that does, or a "
                        "strategy/verifier that does not need them (request logprobs=False)"
                    )
                if len(parsed.choices) > 1:  # cannot count several choices: keep only the first
                    parsed.choices = parsed.choices[:1]
                    parsed.completion_tokens = None
            elif want_lp:
                self.has_logprobs = True
            comps = to_completions(parsed, first, req.logprobs, time.perf_counter() - t0)
            counted = sum(c.n_tokens for c in comps)
            self.stats.counted_completion_tokens += counted
            self.stats.reported_completion_tokens += parsed.completion_tokens or 0
            used = sum(c.prefilled_tokens for c in comps) + counted
            return comps[:n]
        finally:
            self.ledger.settle(reserve, used)

    async def agenerate_one(self, req: GenerationRequest) -> Generation:
        t0 = time.perf_counter()
        seed = req.seed if req.seed is not None else self._rng.randrange(2**31)
        prompt_tokens = await self.acount_prompt_tokens(req) if self.ledger.cap is not None else None
        slots: list[Completion | None] = [None] * req.n
        prefilled = 0
        prompt_len = prompt_tokens or 0
        if req.n == 1 or (self.honours_n is not False and (req.logprobs or self.has_logprobs is not False)):
            # llama-server answers at most one choice per slot per request: larger n goes in parts
            # (seeded from their first index, as fanned-out samples are)
            part = req.n if await self.detect_flavor() != "llama-server" or not self.server_slots else self.server_slots
            starts = list(range(0, req.n, part))
            got = await asyncio.gather(*(self._call(req, min(part, req.n - a), seed + a, a, prompt_tokens)
                                         for a in starts))
            comps = [c for cs in got for c in cs]
            if req.n > 1:
                self.honours_n = all(len(cs) >= min(part, req.n - a) for a, cs in zip(starts, got, strict=True))
            for c in comps:
                slots[c.index] = c
        missing = [i for i, s in enumerate(slots) if s is None]
        if missing:  # fan out: one request per missing sample, sample i seeded with seed + i
            self.stats.fanout_requests += len(missing)
            results = await asyncio.gather(*(self._call(req.with_(n=1), 1, seed + i, i, prompt_tokens)
                                             for i in missing))
            for i, comps in zip(missing, results, strict=True):
                if not comps:
                    raise BackendError(f"server {self.base_url} returned no choices")
                slots[i] = comps[0]
        done = [s for s in slots if s is not None]
        for c in done:
            prefilled += c.prefilled_tokens
            prompt_len = max(prompt_len, c.prompt_tokens)
        for order, c in enumerate(sorted(done, key=lambda c: c.decode_s)):
            c.finish_order = order
        return Generation(request=req, completions=done, prompt_tokens=prompt_len, prefilled_tokens=prefilled,
                          wall_s=time.perf_counter() - t0)

    async def agenerate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return list(await asyncio.gather(*(self.agenerate_one(r) for r in requests)))

    # ---- prompt tokens ------------------------------------------------------------------------

    async def acount_prompt_tokens(self, req: GenerationRequest) -> int:
        """Prompt length from the server's tokenizer (``/tokenize``), cached per prompt."""
        key = req.prompt if req.prompt is not None else json.dumps([(m.role, m.content) for m in req.messages or ()])
        if key in self._prompt_cache:
            return self._prompt_cache[key]
        n = await self._tokenize(req)
        self._prompt_cache[key] = n
        return n

    async def _tokenize(self, req: GenerationRequest) -> int:
        client = self._http()
        text = req.prompt
        if text is None:  # llama-server renders chat through /apply-template; vLLM tokenizes messages itself
            msgs = [{"role": m.role, "content": m.content} for m in req.messages or ()]
            r = await client.post(f"{self.root_url}/apply-template", json={"messages": msgs})
            if r.status_code == 200 and isinstance(r.json().get("prompt"), str):
                text = r.json()["prompt"]
            else:
                r = await client.post(f"{self.root_url}/tokenize", json={"model": self.model, "messages": msgs})
                if r.status_code == 200 and isinstance(r.json().get("count"), int):
                    return int(r.json()["count"])
        if text is not None:
            for url, body in ((f"{self.root_url}/tokenize", {"content": text, "prompt": text, "model": self.model,
                                                             "add_special": True, "with_pieces": False}),
                              (f"{self.root_url}/extras/tokenize", {"input": text})):
                try:
                    r = await client.post(url, json=body)
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    data = r.json()
                    if isinstance(data.get("count"), int):
                        return int(data["count"])
                    if isinstance(data.get("tokens"), list):
                        return len(data["tokens"])
        # No tokenizer endpoint: ask for one token and read the server's prompt count.
        probe = await self._call(req.with_(n=1, max_tokens=1, logprobs=False), 1, 0, 0, None)
        return probe[0].prompt_tokens
