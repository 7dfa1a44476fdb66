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

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from ttscale.backends.base import cut_at_stop
from ttscale.backends.llama_engine import LlamaEngine
from ttscale.backends.llama_prefix import common_prefix
from ttscale.backends.models import DEFAULT_MODEL
from ttscale.backends.prompt_lookup import draft_tokens
from ttscale.backends.spec import BackendKind, BackendOptions, Endpoint, EngineArgs
from ttscale.errors import ConfigError
from ttscale.types import (
    Cancelled,
    Capabilities,
    Completion,
    Generation,
    GenerationRequest,
    ModelInfo,
    OnFinish,
    OnSample,
    ShouldStop,
)


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
    history: list[int] = field(default_factory=list)
    """Prompt and sampled tokens (prompt-lookup drafts are found in it); kept only when drafting."""
    drafted: int = 0
    rejected: int = 0
    """Draft tokens evaluated, and those the sampler did not reproduce (their positions were computed)."""


class LlamaCppBackend(LlamaEngine):
    """Batched, prefix-sharing generation on llama.cpp (CPU): the engine plus ``generate``.

    ``prompt_lookup``: draft up to that many tokens per step by prompt lookup (the tokens that followed the
    last ``lookup_ngram``, down to ``lookup_min_ngram``, tokens' earlier occurrence in the prompt or output,
    :mod:`~ttscale.backends.prompt_lookup`) and decode them with the next token in the same step; each
    sample keeps the drafted tokens its own sampler reproduces, so outputs are those of sampling without
    drafts (up to the floating-point differences of a wider batch). It pays where one step over several
    positions costs little more than over one (memory-bound decoding: GPUs) and the output copies its input
    (revisions, code repair); 0, the default, drafts nothing.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, prompt_lookup: int = 0, lookup_ngram: int = 3,
                 lookup_min_ngram: int = 2, **engine: Any) -> None:
        if prompt_lookup < 0 or not 1 <= lookup_min_ngram <= lookup_ngram:
            raise ConfigError(f"prompt_lookup must be >= 0 and 1 <= lookup_min_ngram <= lookup_ngram, got "
                              f"{prompt_lookup}, {lookup_min_ngram}, {lookup_ngram}")
        super().__init__(model, **engine)
        self.prompt_lookup = prompt_lookup
        self.lookup_ngram = lookup_ngram
        self.lookup_min_ngram = lookup_min_ngram

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

    def _take(self, s: _Sample, idx: int, lse: np.ndarray | None = None) -> None:
        """Sample the next token of ``s`` from batch output ``idx`` and update its state.

        ``lse``: precomputed log-normalizers of the step's output rows (decode steps,
        where output row ``i`` is batch position ``i``).
        """
        lc = self._lc
        tok = lc.llama_sampler_sample(s.sampler, self._ctx, idx)
        s.n_tokens += 1
        if self.prompt_lookup:
            s.history.append(tok)
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
        if (stopped := cut_at_stop(s.text, s.stop)) is not None:
            s.text, s.finish = stopped, "stop"
            return
        if s.n_tokens >= s.max_tokens:
            s.finish = "length"
            return
        s.next_token = tok

    def _step_items(self, live: list[_Sample]) -> tuple[list[tuple[int, int, int, bool]], list[list[int]]]:
        """One decode step's batch: each live sample's next token, then its prompt-lookup draft (if drafting)."""
        if not self.prompt_lookup:
            return [(s.next_token, s.pos, s.seq, True) for s in live], [[] for _ in live]
        items: list[tuple[int, int, int, bool]] = []
        drafts: list[list[int]] = []
        for s in live:
            # within the sample's reserved cells: a draft never runs past its max_tokens
            room = min(self.prompt_lookup, s.max_tokens - s.n_tokens - 1, self.n_batch - 1)
            draft = (draft_tokens(s.history, ngram=self.lookup_ngram, max_draft=room, min_ngram=self.lookup_min_ngram)
                     if room > 0 else [])
            if len(items) + len(draft) + 1 > self.n_batch:
                draft = draft[: max(0, self.n_batch - len(items) - 1)]
            s.drafted += len(draft)
            items.append((s.next_token, s.pos, s.seq, True))
            items += [(t, s.pos + 1 + j, s.seq, True) for j, t in enumerate(draft)]
            drafts.append(draft)
        return items, drafts

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
                        self._make_sampler(r.temperature, r.top_p, seed, r.top_k, r.min_p), r.logprobs)
            )
        first_of: dict[int, _Sample] = {}
        for s in samples:
            first_of.setdefault(s.req, s)
            if self.prompt_lookup:
                s.history = list(prompts[s.req])
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
                items, drafts = self._step_items(live)
                self._decode(items)
                kv_now += len(items)
                peak = max(peak, kv_now)
                now = time.perf_counter()
                lse = self._step_lse(len(items)) if any(s.want_logprobs for s in live) else None
                row = 0
                for s, draft in zip(live, drafts, strict=True):
                    # keep the drafted tokens while the sample's own sampler reproduces them
                    for j in range(len(draft) + 1):
                        s.pos += 1
                        self._take(s, row + j, lse)
                        if s.finish is not None or j == len(draft) or s.next_token != draft[j]:
                            break
                    row += len(draft) + 1
                    if s.finish is None and (wasted := len(draft) - j):
                        s.rejected += wasted
                        kv_now -= wasted
                        lc.llama_memory_seq_rm(mem, s.seq, s.pos, -1)  # the positions after the last kept one
                    if s.finish is not None:
                        s.rejected += len(draft) - j
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
                        prefilled_tokens=s.rejected,  # drafted positions computed and not kept
                        logprob=s.logprob if s.want_logprobs else None,
                        token_logprobs=s.token_logprobs if s.want_logprobs else None,
                        index=s.index,
                        decode_s=s.decode_s,
                    )
                )
            # Attribute each request's prefill to its first sample so sums stay exact; rejected drafts count
            # as prefilled tokens of their own sample (the engine evaluated them).
            for s in samples:
                gens[s.req].prefilled_tokens += s.rejected
                gens[s.req].drafted_tokens += s.drafted
            for ri in distinct:
                comps = [c for c in gens[ri].completions]
                if comps:
                    comps[0].prefilled_tokens = gens[ri].prefilled_tokens - sum(c.prefilled_tokens for c in comps[1:])
        finally:
            for s in samples:
                lc.llama_memory_seq_rm(mem, s.seq, -1, -1)
                lc.llama_sampler_free(s.sampler)


class LlamaCppOptions(BackendOptions):
    """Options of the embedded engine (``ttscale run -o``, ``make_backend("llama-cpp", ..., **options)``)."""

    n_ctx: int = Field(16384, ge=64, description="KV cells in all (every sequence shares them)")
    n_seq_max: int = Field(64, ge=1, le=1024, description="samples decoded together")
    n_batch: int = Field(512, ge=1, description="tokens per prefill batch")
    n_threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    prefix_slots: int = Field(4, ge=0, description="earlier prompt prefixes kept in spare sequences")
    kv_type: str = Field("f16", description="KV-cache element type of K (and V unless kv_type_v)")
    kv_type_v: str | None = Field(None, description="KV-cache element type of V")
    prompt_lookup: int = Field(0, ge=0, le=64, description="draft up to this many tokens per step by prompt lookup "
                               "(verified in the same step; outputs unchanged); 0: off")
    lookup_ngram: int = Field(3, ge=1, le=16, description="prompt lookup: the longest suffix looked up")
    lookup_min_ngram: int = Field(2, ge=1, le=16, description="prompt lookup: the shortest suffix that may give a draft")
    verbose: bool = False


def _build(model: str | None, options: dict[str, Any]) -> LlamaCppBackend:
    return LlamaCppBackend(model or DEFAULT_MODEL, **options)


def _endpoints(args: EngineArgs) -> list[Endpoint]:
    if args.base_urls:
        raise ConfigError("--base-url is for HTTP backends such as openai: the embedded engine runs here")
    opts: dict[str, Any] = {"n_threads": args.threads} if args.threads else {}
    return [(args.model, opts | args.kv_options() | args.engine_options | args.options)]


SPEC = BackendKind("llama-cpp", _build, LlamaCppOptions,
                   "embedded llama.cpp (default): batched, prefix-sharing sampling on this machine's CPU",
                   from_args=_endpoints, in_process=True)
