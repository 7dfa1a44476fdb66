"""Embedded backend: GGUF models in-process through llama-cpp-python's low-level API.

Why not ``llama_cpp.Llama``: it decodes one sequence at a time, so ``n`` samples
of one prompt cost ``n`` prefills and ``n`` serial decodes. Here the samples of a
call share work the way serving engines do:

1. The longest common prefix of all prompts in the call lives in a *holder*
   sequence (seq 0) that persists across calls, so a few-shot prefix shared by
   many problems is evaluated once per process, not once per problem.
2. Each distinct prompt's remaining suffix is evaluated once into its first
   sample's sequence; the other samples get the KV cells by ``llama_memory_seq_cp``
   (with a unified KV cache this tags cells, it copies nothing).
3. All live samples decode together: one ``llama_decode`` per step with one token
   per sequence, each sequence with its own sampler chain and seed.

Token counts and log-probs come from the engine's own tokenizer and logits.
"""

from __future__ import annotations

import ctypes
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ttscale.backends.base import Capabilities, Completion, Generation, GenerationRequest, ModelInfo
from ttscale.backends.llama_cpu import configure_model_params
from ttscale.backends.llama_prefix import PrefixCache, common_prefix
from ttscale.backends.llama_probe import TokenProbe, probe_next_tokens
from ttscale.backends.models import DEFAULT_MODEL, resolve_model_path
from ttscale.backends.spec import BackendKind, BackendOptions
from ttscale.errors import BackendError, ConfigError, UnsupportedFeatureError
from ttscale.types import KV_CACHE_TYPES, Cancelled, OnFinish, OnSample, ShouldStop

_LOG_CALLBACKS: dict[bool, object] = {}  # keeps the ctypes callbacks alive for the process


def _install_log_filter(lc: object, verbose: bool) -> None:
    """Route llama.cpp's log to stderr only when ``verbose``; otherwise keep errors only."""
    import sys

    if verbose not in _LOG_CALLBACKS:

        @lc.llama_log_callback  # type: ignore[attr-defined,misc]
        def _cb(level: int, text: bytes, user_data: object) -> None:
            if verbose or level == 4:  # GGML_LOG_LEVEL_ERROR in this ggml (0 none, 1 debug, 2 info, 3 warn)
                sys.stderr.write(text.decode("utf-8", "replace"))

        _LOG_CALLBACKS[verbose] = _cb
    lc.llama_log_set(_LOG_CALLBACKS[verbose], None)  # type: ignore[attr-defined]


@dataclass
class _Sample:
    req: int
    index: int
    seq: int
    prompt_len: int
    max_tokens: int
    stop: tuple[str, ...]
    sampler: object
    want_logprobs: bool
    pos: int = 0
    next_token: int = -1
    n_tokens: int = 0
    logprob: float = 0.0
    token_logprobs: list[float] = field(default_factory=list)
    text_bytes: bytearray = field(default_factory=bytearray)
    text: str = ""
    finish: str | None = None
    decode_s: float = 0.0


def _bad_kv(kind: str) -> int:
    raise ConfigError(f"unknown KV cache type {kind!r}; llama.cpp takes: {', '.join(KV_CACHE_TYPES)}")


class LlamaCppBackend:
    """Batched, prefix-sharing generation on llama.cpp (CPU)."""

    shares_prompt_prefix = True
    """One call's common prompt prefix is evaluated at most once (budget bounds rely on it)."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        n_ctx: int = 16384,
        n_seq_max: int = 64,
        n_batch: int = 512,
        n_threads: int | None = None,
        prefix_slots: int = 4,
        kv_type: str = "f16",
        kv_type_v: str | None = None,
        verbose: bool = False,
    ) -> None:
        import llama_cpp as lc

        _install_log_filter(lc, verbose)
        self._lc = lc
        self.model_ref = model
        self.path = resolve_model_path(model)
        self._lock = threading.Lock()
        if n_seq_max < 1 or n_ctx < 64 or prefix_slots < 0:
            raise ConfigError("n_seq_max must be >= 1, n_ctx >= 64 and prefix_slots >= 0")
        lc.llama_backend_init()
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self.repack = configure_model_params(mparams)  # off only where the CPU's AMX path would crash
        self._model = lc.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self._model:
            raise BackendError(f"llama.cpp could not load {self.path}")
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.n_vocab = lc.llama_vocab_n_tokens(self._vocab)
        self.n_seq_max = n_seq_max
        self.n_batch = n_batch
        threads = n_threads or os.cpu_count() or 1
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        # +1: the holder sequence for the shared prefix; then the slots that keep earlier prefixes
        cparams.n_seq_max = n_seq_max + 1 + prefix_slots
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.kv_unified = True
        cparams.swa_full = True  # sliding-window layers must keep full history for sequence copies
        cparams.no_perf = True
        cparams.flash_attn_type = 1  # measured: ~15% faster decode on CPU for these models
        # KV precision: `kv_type` for K (and V unless `kv_type_v`); a quantized V cache needs flash
        # attention, which is always on here.
        self.kv_type_k, self.kv_type_v = kv_type, kv_type_v or kv_type
        cparams.type_k = KV_CACHE_TYPES[self.kv_type_k][0] if self.kv_type_k in KV_CACHE_TYPES else _bad_kv(kv_type)
        cparams.type_v = KV_CACHE_TYPES[self.kv_type_v][0] if self.kv_type_v in KV_CACHE_TYPES else _bad_kv(self.kv_type_v)
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise BackendError("llama.cpp could not create a context (out of memory?)")
        self.n_ctx = lc.llama_n_ctx(self._ctx)
        self._mem = lc.llama_get_memory(self._ctx)
        self._batch = lc.llama_batch_init(max(n_batch, n_seq_max), 0, 1)
        # seq 0 holds the shared prefix; sequences past the samples' keep earlier prefixes
        self._prefixes = PrefixCache(lc, self._mem, self._decode, self.n_ctx, n_batch,
                                    range(n_seq_max + 1, n_seq_max + 1 + prefix_slots))
        self._template = lc.llama_model_chat_template(self._model, None)
        self._info = self._read_info()
        self._piece_buf = ctypes.create_string_buffer(256)

    # ---- metadata -------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(512)
        n = self._lc.llama_model_meta_val_str(self._model, key.encode(), buf, 512)
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    def _read_info(self) -> ModelInfo:
        lc, m = self._lc, self._model
        arch = self._meta("general.architecture") or ""
        n_heads = lc.llama_model_n_head(m)
        d_model = lc.llama_model_n_embd(m)
        key_len = self._meta(f"{arch}.attention.key_length")
        head_dim = int(key_len) if key_len else d_model // max(n_heads, 1)
        return ModelInfo(
            name=self.model_ref if "/" not in self.model_ref else Path(self.model_ref).stem,
            n_params=int(lc.llama_model_n_params(m)),
            n_layers=lc.llama_model_n_layer(m),
            n_heads=n_heads,
            n_kv_heads=lc.llama_model_n_head_kv(m),
            head_dim=head_dim,
            d_model=d_model,
            n_ctx_train=lc.llama_model_n_ctx_train(m),
            kv_bytes_per_elem=2,  # of an f16 cache; the real element sizes follow from kv_type_k/v
            kv_type_k=self.kv_type_k,
            kv_type_v=self.kv_type_v,
            architecture=arch,
            has_chat_template=self._template is not None,
            path=str(self.path),
            extra={"general.name": self._meta("general.name") or "", "file_bytes": str(self.path.stat().st_size),
                   "weight_repack": "on" if self.repack.extra_buffers else "off"},
        )

    @property
    def name(self) -> str:
        return f"llama.cpp:{self._info.name}"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(parallel_sequences=self.n_seq_max, shares_prompt_prefix=True, cancellation=True,
                            request_cancellation=True, next_token_probes=True, tokenizer=True,
                            renders_prompts=True, local_prompt_counts=True, context_length=self.n_ctx)

    def model_info(self) -> ModelInfo:
        return self._info

    # ---- text <-> tokens ------------------------------------------------------------------

    def render(self, request: GenerationRequest) -> str:
        """The exact text fed to the model (chat template applied for chat requests)."""
        if request.prompt is not None:
            return request.prompt
        assert request.messages is not None
        if self._template is None:
            raise UnsupportedFeatureError(
                f"model {self._info.name} has no chat template: use the completion prompt style"
            )
        lc = self._lc
        msgs = (lc.llama_chat_message * len(request.messages))()
        keep = []
        for i, m in enumerate(request.messages):
            role, content = m.role.encode(), m.content.encode()
            keep += [role, content]
            msgs[i].role, msgs[i].content = role, content
        size = 4096 + sum(len(x) for x in keep) * 2
        buf = ctypes.create_string_buffer(size)
        n = lc.llama_chat_apply_template(self._template, msgs, len(msgs), True, buf, size)
        if n > size:
            buf = ctypes.create_string_buffer(n + 1)
            n = lc.llama_chat_apply_template(self._template, msgs, len(msgs), True, buf, n + 1)
        if n < 0:
            raise UnsupportedFeatureError("llama.cpp does not support this model's chat template")
        return buf.raw[:n].decode("utf-8")

    def tokenize(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 16
        arr = (self._lc.llama_token * cap)()
        n = self._lc.llama_tokenize(self._vocab, data, len(data), arr, cap, True, True)
        if n < 0:
            cap = -n
            arr = (self._lc.llama_token * cap)()
            n = self._lc.llama_tokenize(self._vocab, data, len(data), arr, cap, True, True)
        return list(arr[:n])

    def _piece(self, token: int) -> bytes:
        n = self._lc.llama_token_to_piece(self._vocab, token, self._piece_buf, 256, 0, False)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self._vocab, token, big, -n, 0, False)
            return big.raw[:n]
        return self._piece_buf.raw[:n]

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self.tokenize(self.render(request)))

    # ---- engine primitives ---------------------------------------------------------------

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of (token, pos, seq, want_logits) items."""
        b = self._batch
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        b.n_tokens = len(items)
        rc = self._lc.llama_decode(self._ctx, b)
        if rc != 0:
            raise BackendError(f"llama_decode failed with code {rc} (KV cache full or bad batch)")

    # The engine surface next-token probes use (llama_probe.ProbeEngine).

    @property
    def prefixes(self) -> PrefixCache:
        return self._prefixes

    def decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        self._decode(items)

    def first_token(self, text: str) -> int | None:
        """The first token of ``text`` tokenized without special tokens (None if it has none)."""
        data = text.encode("utf-8")
        arr = (self._lc.llama_token * (len(data) + 8))()
        n = self._lc.llama_tokenize(self._vocab, data, len(data), arr, len(data) + 8, False, False)
        return int(arr[0]) if n >= 1 else None

    def logits_row(self, idx: int) -> np.ndarray:
        """The logits of batch position ``idx`` of the last decode (a view into the engine's buffer)."""
        ptr = self._lc.llama_get_logits_ith(self._ctx, idx)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def copy_sequence(self, src: int, dst: int) -> None:
        self._lc.llama_memory_seq_cp(self._mem, src, dst, -1, -1)

    def drop_sequence(self, seq: int) -> None:
        self._lc.llama_memory_seq_rm(self._mem, seq, -1, -1)

    def next_token_logprobs(self, requests: Sequence[GenerationRequest], candidates: Sequence[str]) -> list[TokenProbe]:
        """Log-probability of each candidate's first token right after each prompt (LLM-judge verifiers);
        see :func:`~ttscale.backends.llama_probe.probe_next_tokens`."""
        with self._lock:
            return probe_next_tokens(self, requests, candidates)

    def forget_prefixes(self) -> None:
        """Drop every cached prefix (the holder's and the kept ones): the next call prefills in full."""
        with self._lock:
            self._prefixes.forget()

    def _logprob(self, idx: int, token: int) -> float:
        ptr = self._lc.llama_get_logits_ith(self._ctx, idx)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        m = float(logits.max())
        lse = m + float(np.log(np.exp(logits - m, dtype=np.float32).sum(dtype=np.float64)))
        return float(logits[token]) - lse

    def _step_lse(self, n_out: int) -> np.ndarray:
        """Log-normalizers of all ``n_out`` output rows of the last decode, in one numpy pass."""
        ptr = self._lc.llama_get_logits(self._ctx)
        rows = np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab))
        m = rows.max(axis=1, keepdims=True)
        return (m[:, 0] + np.log(np.exp(rows - m).sum(axis=1, dtype=np.float64))).astype(np.float64)

    def _make_sampler(self, temperature: float, top_p: float, seed: int) -> object:
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if temperature <= 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return chain
        if top_p < 1.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(top_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temperature))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _take(self, s: _Sample, idx: int, lse: np.ndarray | None = None) -> None:
        """Sample the next token of ``s`` from batch output ``idx`` and update its state.

        ``lse``: precomputed log-normalizers of the step's output rows (decode steps,
        where output row ``i`` is batch position ``i``).
        """
        lc = self._lc
        tok = lc.llama_sampler_sample(s.sampler, self._ctx, idx)
        s.n_tokens += 1
        if s.want_logprobs:
            if lse is not None:
                lp = float(lc.llama_get_logits_ith(self._ctx, idx)[tok]) - float(lse[idx])
            else:
                lp = self._logprob(idx, tok)
            s.logprob += lp
            s.token_logprobs.append(lp)
        if lc.llama_vocab_is_eog(self._vocab, tok):
            s.finish = "stop"
            return
        s.text_bytes += self._piece(tok)
        s.text = s.text_bytes.decode("utf-8", errors="ignore")
        for stop in s.stop:
            cut = s.text.find(stop)
            if cut >= 0:
                s.text = s.text[:cut]
                s.finish = "stop"
                return
        if s.n_tokens >= s.max_tokens:
            s.finish = "length"
            return
        s.next_token = tok

    # ---- generation ----------------------------------------------------------------------

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        should_stop: ShouldStop | None = None,
        on_finish: OnFinish | None = None,
        on_sample: OnSample | None = None,
        cancelled: Cancelled | None = None,
    ) -> list[Generation]:
        """Generate all requests, batching their samples together where they fit.

        ``should_stop`` is polled between decode steps; when it returns true the
        remaining samples end with ``finish_reason="cancelled"`` (their tokens are
        still counted: they were computed). ``on_finish(request, index)`` is called as
        each sample finishes, so a caller can stop after the first m (short-m@k); ``on_sample(request,
        index, text)`` likewise, with the finished text (adaptive consistency votes as samples finish).
        ``cancelled(request)`` is polled per request between decode steps: a request whose
        client went away stops there (``"cancelled"``) while the rest of the batch goes on.
        """
        if not requests:
            return []
        with self._lock:
            prompts = [self.tokenize(self.render(r)) for r in requests]
            for r, toks in zip(requests, prompts, strict=False):
                if len(toks) + r.max_tokens + 1 > self.n_ctx:
                    raise ConfigError(
                        f"prompt of {len(toks)} tokens plus max_tokens={r.max_tokens} exceeds the context "
                        f"of {self.n_ctx} tokens"
                    )
                if not toks:
                    raise ConfigError("empty prompt")
            gens = [
                Generation(request=r, completions=[], prompt_tokens=len(t), prefilled_tokens=0)
                for r, t in zip(requests, prompts, strict=False)
            ]
            for job in self._plan(requests, prompts):
                self._run_job(requests, prompts, gens, job, should_stop, on_finish, cancelled, on_sample)
            for g in gens:
                g.completions.sort(key=lambda c: c.index)
                order = sorted(g.completions, key=lambda c: (c.decode_s, c.index))
                for rank, c in enumerate(order):
                    c.finish_order = rank
            return gens

    def _plan(self, requests: Sequence[GenerationRequest], prompts: list[list[int]]) -> list[list[tuple[int, int]]]:
        """Pack (request, sample index) pairs into jobs that fit the sequences and KV cells."""
        jobs: list[list[tuple[int, int]]] = []
        cur: list[tuple[int, int]] = []
        cells = 0
        seen: set[int] = set()
        for ri, r in enumerate(requests):
            for k in range(r.n):
                need = r.max_tokens + (0 if ri in seen else len(prompts[ri]))
                if cur and (len(cur) >= self.n_seq_max or cells + need > self.n_ctx):
                    jobs.append(cur)
                    cur, cells, seen = [], 0, set()
                    need = r.max_tokens + len(prompts[ri])
                cur.append((ri, k))
                seen.add(ri)
                cells += need
        if cur:
            jobs.append(cur)
        return jobs

    def _run_job(
        self,
        requests: Sequence[GenerationRequest],
        prompts: list[list[int]],
        gens: list[Generation],
        job: list[tuple[int, int]],
        should_stop: ShouldStop | None,
        on_finish: OnFinish | None = None,
        cancelled: Cancelled | None = None,
        on_sample: OnSample | None = None,
    ) -> None:
        lc, mem = self._lc, self._mem
        t0 = time.perf_counter()
        distinct = sorted({ri for ri, _ in job})
        # Shared prefix, capped so that every prompt keeps >= 1 token whose logits we compute.
        shared = prompts[distinct[0]][: len(prompts[distinct[0]]) - 1]
        for ri in distinct[1:]:
            shared = shared[: min(common_prefix(shared, prompts[ri]), len(prompts[ri]) - 1)]
        need = len(prompts[distinct[0]]) + sum(len(prompts[ri]) for ri in distinct[1:]) + sum(
            requests[ri].max_tokens for ri, _ in job)
        self._prefixes.make_room(need)
        gens[distinct[0]].prefilled_tokens += self._prefixes.hold(shared)
        p = len(shared)

        samples: list[_Sample] = []
        for seq, (ri, k) in enumerate(job, start=1):
            r = requests[ri]
            seed = (r.seed if r.seed is not None else random.randrange(2**31)) + k
            samples.append(
                _Sample(ri, k, seq, len(prompts[ri]), r.max_tokens, r.stop,
                        self._make_sampler(r.temperature, r.top_p, seed), r.logprobs)
            )
        first_of: dict[int, _Sample] = {}
        for s in samples:
            first_of.setdefault(s.req, s)
        try:
            # Evaluate each distinct suffix once, into its first sample's sequence.
            pending: list[tuple[int, int, int, bool]] = []
            ends: list[tuple[int, int]] = []  # (request, index in pending)

            def flush() -> None:
                if not pending:
                    return
                self._decode(pending)
                for ri, idx in ends:
                    head = first_of[ri]
                    for s in samples:
                        if s.req == ri:
                            if s is not head:
                                lc.llama_memory_seq_cp(mem, head.seq, s.seq, -1, -1)
                            self._take(s, idx)
                            s.pos = len(prompts[ri])
                            if s.finish is not None:
                                if on_finish is not None:
                                    on_finish(s.req, s.index)
                                if on_sample is not None:
                                    on_sample(s.req, s.index, s.text)
                pending.clear()
                ends.clear()

            for ri in distinct:
                head = first_of[ri]
                lc.llama_memory_seq_cp(mem, 0, head.seq, -1, -1)
                suffix = prompts[ri][p:]
                gens[ri].prefilled_tokens += len(suffix)
                for i, t in enumerate(suffix):
                    if len(pending) >= self.n_batch:
                        flush()
                    last = i == len(suffix) - 1
                    pending.append((t, p + i, head.seq, last))
                    if last:
                        ends.append((ri, len(pending) - 1))
            flush()
            prefill_s = time.perf_counter() - t0
            for ri in distinct:
                gens[ri].prefill_s += prefill_s

            # Decode all live samples together, one token each per step.
            t_dec = time.perf_counter()
            kv_now = p + sum(len(prompts[ri]) - p for ri in distinct)
            peak = kv_now
            for s in samples:
                if s.finish is not None:
                    s.decode_s = 0.0
            live = [s for s in samples if s.finish is None]
            while live:
                if should_stop is not None and should_stop():
                    for s in live:
                        s.finish = "cancelled"
                    break
                if cancelled is not None:
                    gone = {ri for ri in {s.req for s in live} if cancelled(ri)}
                    for s in live:
                        if s.req in gone:
                            s.finish, s.decode_s = "cancelled", time.perf_counter() - t_dec
                            lc.llama_memory_seq_rm(mem, s.seq, -1, -1)
                    live = [s for s in live if s.finish is None]
                    if not live:
                        break
                self._decode([(s.next_token, s.pos, s.seq, True) for s in live])
                kv_now += len(live)
                peak = max(peak, kv_now)
                now = time.perf_counter()
                lse = self._step_lse(len(live)) if any(s.want_logprobs for s in live) else None
                for i, s in enumerate(live):
                    s.pos += 1
                    self._take(s, i, lse)
                    if s.finish is not None:
                        s.decode_s = now - t_dec
                        lc.llama_memory_seq_rm(mem, s.seq, -1, -1)
                        if on_finish is not None:
                            on_finish(s.req, s.index)
                        if on_sample is not None:
                            on_sample(s.req, s.index, s.text)
                live = [s for s in live if s.finish is None]
            wall = time.perf_counter() - t0
            for ri in distinct:
                gens[ri].wall_s += wall
                gens[ri].peak_kv_tokens = max(gens[ri].peak_kv_tokens, peak)
            for s in samples:
                gens[s.req].completions.append(
                    Completion(
                        text=s.text,
                        n_tokens=s.n_tokens,
                        finish_reason=s.finish or "cancelled",  # type: ignore[arg-type]
                        prompt_tokens=s.prompt_len,
                        prefilled_tokens=0,
                        logprob=s.logprob if s.want_logprobs else None,
                        token_logprobs=s.token_logprobs if s.want_logprobs else None,
                        index=s.index,
                        decode_s=s.decode_s,
                    )
                )
            # Attribute each request's prefill to its first sample so sums stay exact.
            for ri in distinct:
                comps = [c for c in gens[ri].completions]
                if comps:
                    comps[0].prefilled_tokens = gens[ri].prefilled_tokens - sum(c.prefilled_tokens for c in comps[1:])
        finally:
            for s in samples:
                lc.llama_memory_seq_rm(mem, s.seq, -1, -1)
                lc.llama_sampler_free(s.sampler)

    def close(self) -> None:
        lc = self._lc
        if getattr(self, "_ctx", None):
            lc.llama_batch_free(self._batch)
            lc.llama_free(self._ctx)
            lc.llama_model_free(self._model)
            self._ctx = None

    def __del__(self) -> None:  # best effort; explicit close() is preferred
        try:
            self.close()
        except Exception:
            pass


class LlamaCppOptions(BackendOptions):
    """Options of the embedded engine (``ttscale run -o``, ``make_backend("llama-cpp", ..., **options)``)."""

    n_ctx: int = Field(16384, ge=64, description="KV cells in all (every sequence shares them)")
    n_seq_max: int = Field(64, ge=1, le=1024, description="samples decoded together")
    n_batch: int = Field(512, ge=1, description="tokens per prefill batch")
    n_threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    prefix_slots: int = Field(4, ge=0, description="earlier prompt prefixes kept in spare sequences")
    kv_type: str = Field("f16", description="KV-cache element type of K (and V unless kv_type_v)")
    kv_type_v: str | None = Field(None, description="KV-cache element type of V")
    verbose: bool = False


def _build(model: str | None, options: dict[str, Any]) -> LlamaCppBackend:
    return LlamaCppBackend(model or DEFAULT_MODEL, **options)


SPEC = BackendKind("llama-cpp", _build, LlamaCppOptions,
                   "embedded llama.cpp (default): batched, prefix-sharing sampling on this machine's CPU")
