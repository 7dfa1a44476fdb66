"""HTTP backend for OpenAI-compatible servers (vLLM, SGLang, llama.cpp's llama-server, hosted APIs).

:class:`OpenAIHttpBackend` wraps :class:`~ttscale.backends.openai_client.AsyncOpenAIClient` (retries,
idempotent counting, fan-out for servers that ignore ``n``: see that module) in the synchronous
:class:`~ttscale.backends.base.Backend` protocol; its event loop runs on a private thread, so many
threads (one per problem in flight) can share it. Calls with stop hooks stream their samples
(:mod:`ttscale.backends.openai_stream`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field

from ttscale.backends.base import report_finished
from ttscale.backends.kv_sizing import with_kv_types
from ttscale.backends.llama_probe import TokenProbe
from ttscale.backends.openai_client import (
    AsyncOpenAIClient,
    HttpStats,
)
from ttscale.backends.openai_probe import aprobe
from ttscale.backends.openai_stream import generate_streamed
from ttscale.backends.spec import BackendKind, BackendOptions, Endpoint, EngineArgs
from ttscale.errors import ConfigError, UnsupportedFeatureError
from ttscale.types import (
    Cancelled,
    Capabilities,
    Generation,
    GenerationRequest,
    ModelInfo,
    OnFinish,
    OnSample,
    ShouldStop,
)


class OpenAIHttpBackend:
    """The synchronous Backend protocol over :class:`AsyncOpenAIClient` (event loop on a private thread).

    ``info`` gives the model's shapes for FLOPs; without it they are read from
    ``info_model`` (an embedded model name or GGUF path of the same model), else
    from the server's ``/v1/models`` metadata (llama-server reports parameters).

    Next-token probes (:meth:`next_token_logprobs`, :mod:`ttscale.backends.openai_probe`) and prompt
    rendering are declared on llama-server (detected from ``/props`` the first time the capabilities
    are read); ``probes=True`` declares the probes on another server whose completions return top
    log-probs (vLLM, SGLang), ``probe_top`` sets how many top tokens a probe asks for.
    """

    def __init__(self, base_url: str, model: str = "default", *, info: ModelInfo | None = None,
                 info_model: str | None = None, kv_type: str | None = None, kv_type_v: str | None = None,
                 probes: bool | None = None, probe_top: int | None = None, **client_options: Any) -> None:
        self.client = AsyncOpenAIClient(base_url, model, **client_options)
        self.probes = probes
        self.probe_top = probe_top
        self._candidate_ids: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ttscale-http", daemon=True)
        self._thread.start()
        self._info = info or (_info_from_model(info_model) if info_model else None)
        if kv_type is not None or kv_type_v is not None:
            # the served cache's types (the server's --cache-type-k/-v): what the meter counts KV bytes at
            if self._info is None:
                raise ConfigError("kv_type needs the model's shapes: pass info_model (or info)")
            self._info = with_kv_types(self._info, kv_type or self._info.kv_type_k, kv_type_v or kv_type)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def name(self) -> str:
        return f"http:{self.client.model}@{self.client.base_url}"

    @property
    def stats(self) -> HttpStats:
        return self.client.stats

    def stats_line(self) -> str:
        d = self.client.stats.to_dict()
        return (f"http: {d['responses']} responses, {d['retries']} retries, failures {d['failures'] or 'none'}, "
                f"{d['fanout_requests']} fanned-out requests")

    @property
    def capabilities(self) -> Capabilities:
        # The client keeps `concurrency` requests in flight: that is what the server decodes together.
        # Stop hooks stream every sample as its own request (each pays its prefill on the server).
        llama_server = self.is_llama_server
        return Capabilities(parallel_sequences=self.client.concurrency, prefill_per_sample=self.prefill_per_sample,
                            cancellation=True, request_cancellation=True, streaming=True,
                            hooked_prefill_per_sample=True, renders_prompts=llama_server,
                            next_token_probes=llama_server if self.probes is None else self.probes)

    @property
    def is_llama_server(self) -> bool:
        """Whether the server is llama-server (asked of its ``/props`` once, then remembered)."""
        flavor = self.client.flavor or self._run(self.client.detect_flavor())
        return bool(flavor == "llama-server")

    @property
    def prefill_per_sample(self) -> bool:
        """True unless the server is known to answer ``n`` choices from one prefill.

        Budget planning (``SolveContext``) then assumes a prefill per sample, so a server that
        ignores ``n`` (fanned out) cannot push a problem past its budget; until the first
        multi-sample answer shows which kind of server this is, it plans conservatively.
        """
        return self.client.honours_n is not True

    def model_info(self) -> ModelInfo:
        if self._info is None:
            self._info = self._run(self._server_info())
        return self._info

    async def _server_info(self) -> ModelInfo:
        meta: dict[str, Any] = {}
        try:
            r = await self.client._http().get(f"{self.client.base_url}/models")
            for m in r.json().get("data", []):
                if isinstance(m.get("meta"), dict):
                    meta = m["meta"]
                    break
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        d_model = int(meta.get("n_embd", 0) or 0)
        # Layer counts are not reported: the attention FLOPs term is then left out (documented).
        return ModelInfo(name=self.client.model, n_params=int(meta.get("n_params", 0) or 0), n_layers=0, n_heads=1,
                         n_kv_heads=1, head_dim=d_model, d_model=d_model, n_ctx_train=int(meta.get("n_ctx_train", 0) or 0),
                         extra={"source": "server /v1/models" if meta else "unknown (pass info_model)"})

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return int(self._run(self.client.acount_prompt_tokens(request)))

    def render(self, request: GenerationRequest) -> str:
        """The text the server's model reads (chat rendered by llama-server's ``/apply-template``)."""
        return str(self._run(self.client.arender(request)))

    def next_token_logprobs(self, requests: Sequence[GenerationRequest], candidates: Sequence[str]) -> list[TokenProbe]:
        """Log-probability of each candidate's first token right after each prompt, from a one-token
        completion's top log-probs (:mod:`~ttscale.backends.openai_probe`). A candidate that is not among
        the ``probe_top`` tokens the server returns gets ``-inf``; each result counts the prompt tokens the
        server prefilled (its own report), and nothing generated."""
        if not self.capabilities.next_token_probes:
            raise UnsupportedFeatureError(f"server {self.client.base_url} is not known to return top log-probs for "
                                          "next-token probes (pass probes=True for one that does)")
        return list(self._run(aprobe(self.client, requests, candidates, self.probe_top, self._candidate_ids)))

    def generate(self, requests: Sequence[GenerationRequest], *, should_stop: ShouldStop | None = None,
                 on_finish: OnFinish | None = None, on_sample: OnSample | None = None,
                 cancelled: Cancelled | None = None) -> list[Generation]:
        """Generate ``requests``. Without stop hooks: one request per prompt (``n`` choices; fanned out
        where the server ignores ``n``), per-sample hooks called after it. With ``should_stop`` or
        ``cancelled``: every sample streamed on its own and stopped when the hooks say so
        (:func:`~ttscale.backends.openai_stream.generate_streamed`)."""
        if should_stop is None and cancelled is None:
            gens = list(self._run(self.client.agenerate(requests)))
            report_finished(gens, on_finish, on_sample)
            return gens
        return list(self._run(self._streamed(requests, should_stop, on_finish, on_sample, cancelled)))

    async def _streamed(self, requests: Sequence[GenerationRequest], should_stop: ShouldStop | None,
                        on_finish: OnFinish | None, on_sample: OnSample | None,
                        cancelled: Cancelled | None) -> list[Generation]:
        prompt_tokens = [await self.client.acount_prompt_tokens(r) for r in requests]
        llama_server = await self.client.detect_flavor() == "llama-server"
        return await generate_streamed(self.client, requests, prompt_tokens, llama_server, should_stop=should_stop,
                                       on_finish=on_finish, on_sample=on_sample, cancelled=cancelled)

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus ``/metrics`` counters (llama-server with ``--metrics``), by name."""
        async def get() -> str:
            r = await self.client._http().get(f"{self.client.root_url}/metrics")
            if r.status_code != 200:
                raise UnsupportedFeatureError(f"{self.client.root_url}/metrics answered {r.status_code}")
            return r.text
        return parse_prometheus(self._run(get()))

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self.client.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()


def parse_prometheus(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            parts = line.rsplit(" ", 1)
            if len(parts) == 2:
                try:
                    out[parts[0]] = float(parts[1])
                except ValueError:
                    continue
    return out


def _info_from_model(model: str) -> ModelInfo:
    """Shapes from the GGUF header of an embedded model name or a local file (no engine loaded)."""
    from ttscale.backends.gguf_info import read_model_info
    from ttscale.backends.models import EMBEDDED_MODELS, resolve_model_path

    path = resolve_model_path(model)
    return read_model_info(path, model if model in EMBEDDED_MODELS else None)


class OpenAIHttpOptions(BackendOptions):
    """Options of the HTTP client (any OpenAI-compatible server)."""

    base_url: str | None = Field(None, description="the server's OpenAI base URL, e.g. http://127.0.0.1:8080/v1 (required)")
    api_key: str | None = None
    concurrency: int = Field(8, ge=1, le=4096, description="requests in flight")
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)
    backoff_base: float = Field(0.2, ge=0)
    backoff_max: float = Field(5.0, ge=0)
    token_cap: int | None = Field(None, ge=1)
    jitter_seed: int | None = None
    info_model: str | None = Field(None, description="embedded model name or GGUF path of the served model")
    probes: bool | None = Field(None, description="next-token probes (LLM judges, speculative reasoning's scores): "
                                "default on for llama-server; true for another server whose completions return top "
                                "log-probs (vLLM, SGLang)")
    probe_top: int | None = Field(None, ge=1, le=1000, description="top tokens a next-token probe asks for (a "
                                  "candidate outside them gets -inf); default 100 on llama-server, 20 elsewhere")
    kv_type: str | None = Field(None, description="the served KV cache's K (and V) type, e.g. llama-server's "
                                "--cache-type-k: the meter counts KV bytes at it (default f16)")
    kv_type_v: str | None = Field(None, description="the served V cache's type when it differs from kv_type")
    info: Any = None
    transport: Any = None


def _build(model: str | None, options: dict[str, Any]) -> OpenAIHttpBackend:
    if not options.get("base_url"):
        raise ConfigError("backend 'openai' needs a base URL (--base-url http://host:port/v1)")
    opts = dict(options)
    return OpenAIHttpBackend(opts.pop("base_url"), model or "default", **opts)


def _endpoints(args: EngineArgs) -> list[Endpoint]:
    """One client per ``--base-url``. An embedded model's name or a GGUF path as ``--model`` means the
    same model is served remotely: its shapes are read locally, so the meter counts its FLOPs."""
    from ttscale.backends.models import EMBEDDED_MODELS

    if not args.base_urls:
        raise ConfigError("--backend openai needs --base-url (e.g. http://127.0.0.1:8080/v1)")
    opts: dict[str, Any] = {"concurrency": args.concurrency, **args.kv_options(), **args.options}
    if args.api_key:
        opts["api_key"] = args.api_key
    model = args.model
    if model is not None and (model in EMBEDDED_MODELS or model.endswith(".gguf")):
        opts["info_model"] = model
        model = Path(model).stem if model.endswith(".gguf") else model
    return [(model, opts | {"base_url": url}) for url in args.base_urls]


SPEC = BackendKind("openai", _build, OpenAIHttpOptions,
                   "any OpenAI-compatible server (vLLM, SGLang, llama-server, hosted APIs); needs a base URL",
                   from_args=_endpoints)
