"""The embedded llama.cpp engine: one model and one context with many sequences, and its primitives.

:class:`LlamaEngine` loads a GGUF model through llama-cpp-python's low-level API (weight repacking
decided per CPU by :mod:`ttscale.backends.llama_cpu`), holds a unified KV cache of
``n_seq_max + 1 + prefix_slots`` sequences and the :class:`~ttscale.backends.llama_prefix.PrefixCache`
over them, and offers what generation and next-token probes are built from: chat rendering,
tokenization, one ``llama_decode`` of (token, position, sequence) items, logits rows and
sampler chains. :class:`~ttscale.backends.llama_cpp.LlamaCppBackend` adds batched generation.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ttscale.backends.llama_cpu import configure_model_params
from ttscale.backends.llama_prefix import PrefixCache
from ttscale.backends.llama_probe import TokenProbe, probe_next_tokens
from ttscale.backends.models import DEFAULT_MODEL, resolve_model_path
from ttscale.errors import BackendError, ConfigError, UnsupportedFeatureError
from ttscale.types import KV_CACHE_TYPES, GenerationRequest, ModelInfo

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


def _bad_kv(kind: str) -> int:
    raise ConfigError(f"unknown KV cache type {kind!r}; llama.cpp takes: {', '.join(KV_CACHE_TYPES)}")


class LlamaEngine:
    """A llama.cpp model and context with ``n_seq_max`` sample sequences, a holder and prefix slots."""

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

    def model_info(self) -> ModelInfo:
        return self._info

    def clear_memory(self) -> None:
        """Empty the KV cache: every sequence and every cached prefix (timing runs start from here)."""
        with self._lock:
            self._prefixes.forget()
            self._lc.llama_memory_clear(self._mem, True)

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

    def _make_sampler(self, temperature: float, top_p: float, seed: int, top_k: int = 0, min_p: float = 0.0) -> object:
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if temperature <= 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return chain
        if top_k > 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(top_k))
        if top_p < 1.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(top_p, 1))
        if min_p > 0.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(min_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temperature))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

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
