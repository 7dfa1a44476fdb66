"""Which strategy and budget a request gets: body, headers, model prefix, server default.

Precedence, field by field: the ``ttscale`` body object (``extra_body``), then the
``X-Ttscale-*`` headers, then a strategy prefix on the model name
(``sc8/<model>``), then the server's defaults. Every value is checked against the
server's limits here, with errors that name the parameter.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ttscale.errors import OptionError
from ttscale.registry import (
    STRATEGY_KNOBS,
    strategy_knobs,
    strategy_names,
    strategy_spec,
    strategy_specs,
    verifier_names,
)
from ttscale.server.config import ServerConfig, server_verifiers
from ttscale.server.errors import APIError
from ttscale.server.schemas import TtscaleOptions

# Short prefixes for clients that can only set the model name: "sc8/<model>", "bon4/<model>".
POLICY = "policy"
"""The strategy name of the server's fitted plan (``ttscale serve --policy``)."""


_ALIASES: list[tuple[object, dict[str, str]]] = []


def aliases() -> dict[str, str]:
    """Each strategy record's short name (``alias``) -> its name; every strategy also answers to its own.
    Built once per import path, as the registry discovers records once per ``sys.path``."""
    key = tuple(sys.path)
    if not _ALIASES or _ALIASES[0][0] != key:
        _ALIASES[:] = [(key, {spec.alias: name for name, spec in strategy_specs().items() if spec.alias})]
    return _ALIASES[0][1]
_PREFIX_RE = re.compile(r"^(?P<name>[a-z][a-z-]*?)(?P<k>\d+)?$")

HEADER_STRATEGY = "x-ttscale-strategy"
HEADER_K = "x-ttscale-k"
HEADER_BUDGET = "x-ttscale-budget-tokens"
HEADER_VERIFIER = "x-ttscale-verifier"
HEADER_BUDGET_KV = "x-ttscale-budget-kv-bytes"


@dataclass(frozen=True)
class Plan:
    """The resolved per-request choice (copied per request; never written onto shared objects)."""

    strategy: str
    k: int | None
    verifier: str | None
    budget_tokens: int | None
    budget_flops: float | None
    answer_mode: str
    source: str
    """Where the strategy choice came from: body, header, model, default."""
    options: tuple[tuple[str, Any], ...] = ()
    """Further strategy knobs from ``ttscale.options``."""
    budget_kv_bytes: int | None = None
    """Cap on KV-cache bytes in use at once for the whole request (the server's cap when it sends none)."""
    trace: bool = False
    """Return and log what the strategy did inside (``ttscale.trace``)."""
    budget_seconds: float | None = None
    budget_usd: float | None = None
    """Caps priced on the server's hardware profile (``ServerConfig.hardware``)."""
    validated: tuple[tuple[str, Any], ...] = ()
    """``k`` and ``options`` as the strategy's options model returned them (checked once, here)."""


def _known(strategy: str) -> bool:
    # STRATEGY_KNOBS is a constant: checking it first avoids rebuilding the registry table per request.
    return strategy in STRATEGY_KNOBS or strategy == POLICY or strategy in strategy_names()


def split_model(model: str, served: str) -> tuple[str | None, int | None]:
    """``(strategy, k)`` from a model name's prefix; ``(None, None)`` for the bare model.

    >>> split_model("sc8/smollm", "smollm")
    ('self-consistency', 8)
    >>> split_model("smollm", "smollm")
    (None, None)
    """
    if model == served:
        return None, None
    prefix, sep, rest = model.partition("/")
    if sep and rest == served:
        m = _PREFIX_RE.match(prefix)
        if m:
            name = aliases().get(m.group("name"), m.group("name"))
            k = int(m.group("k")) if m.group("k") else None
            if _known(name):
                return name, k
            if _known(prefix):  # full names that end in digits are not k
                return prefix, None
        raise APIError(404, f"unknown strategy prefix {prefix!r} in model {model!r}; use e.g. "
                       f"sc8/{served} ({', '.join(f'{a}=<{n}>' for a, n in aliases().items())}) or a full strategy name",
                       param="model", code="model_not_found")
    raise APIError(404, f"model {model!r} is not served here; available: {served} (optionally prefixed, e.g. sc8/{served})",
                   param="model", code="model_not_found")


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise APIError(400, f"header {name} must be an integer, got {raw[:40]!r}", param=name, code="invalid_value") from None


_NO_OPTIONS = TtscaleOptions.model_validate({})
"""A request without ``ttscale`` options (immutable use only: built once, not per request)."""


def resolve(opts: TtscaleOptions | None, headers: Mapping[str, str], model: str, cfg: ServerConfig) -> Plan:
    prefix_strategy, prefix_k = split_model(model, cfg.served_model)
    o = opts or _NO_OPTIONS
    h_strategy = headers.get(HEADER_STRATEGY)
    h_k = _int_header(headers, HEADER_K)
    h_budget = _int_header(headers, HEADER_BUDGET)
    h_verifier = headers.get(HEADER_VERIFIER)

    candidates = [(o.strategy, "body"), (h_strategy, "header"), (prefix_strategy, "model")]
    default = POLICY if cfg.policy is not None else cfg.strategy
    strategy, source = next(((s, src) for s, src in candidates if s), (default, "default"))
    strategy = aliases().get(strategy.strip(), strategy.strip())
    param = {"body": "ttscale.strategy", "header": HEADER_STRATEGY, "model": "model", "default": None}[source]
    if strategy == POLICY:
        return _policy_plan(o, h_budget, cfg, source, param, headers,
                            explicit_k=next((x for x in (o.k, h_k) if x is not None), None))
    if not _known(strategy):
        raise APIError(400, f"unknown strategy {strategy!r}; available: {', '.join(strategy_names())}",
                       param=param, code="unknown_strategy")
    knobs = strategy_knobs(strategy)

    rank = {"body": 0, "header": 1, "model": 2, "default": 3}
    k_src = next(((x, src) for x, src in ((o.k, "body"), (h_k, "header"), (prefix_k, "model")) if x is not None),
                 (None, "default"))
    explicit_k = k_src[0]
    if explicit_k is not None and "k" not in knobs:
        # A k given with a strategy that takes none is an error; a k that came with a strategy
        # choice this request overrode (e.g. "sc8/" under a body "single") is simply not used.
        if rank[k_src[1]] <= rank[source]:
            raise APIError(400, f"strategy {strategy!r} takes no k", param="ttscale.k", code="invalid_value")
        explicit_k = None
    k = explicit_k if explicit_k is not None else (cfg.k if "k" in knobs else None)
    if k is not None and not 1 <= k <= cfg.max_k:
        raise APIError(400, f"k must be in [1, {cfg.max_k}], got {k}", param="ttscale.k", code="invalid_value")

    explicit_v = o.verifier or h_verifier
    if explicit_v and "verifier" not in knobs:
        raise APIError(400, f"strategy {strategy!r} takes no verifier", param="ttscale.verifier", code="invalid_value")
    verifier = (explicit_v or cfg.verifier) if "verifier" in knobs else None
    if verifier is not None and verifier not in server_verifiers():
        known = verifier in verifier_names()
        why = "is not available for requests (it needs reference answers or extra setup)" if known else "is unknown"
        raise APIError(400, f"verifier {verifier!r} {why}; available: {', '.join(server_verifiers())}",
                       param="ttscale.verifier", code="unknown_verifier")
    options = tuple(sorted((o.options or {}).items()))
    for name, _ in options:
        if name not in knobs or name in ("k", "verifier"):
            extra = [x for x in knobs if x not in ("k", "verifier")]
            raise APIError(400, f"strategy {strategy!r} has no option {name!r}; options: {', '.join(extra) or 'none'}",
                           param=f"ttscale.options.{name}", code="invalid_value")
    spec = strategy_spec(strategy)
    drafting = spec.draft_option
    if drafting is not None:
        if cfg.draft_backend is None:
            raise APIError(400, f"strategy {strategy!r} needs a draft model, and this server has none (start it with "
                           "ttscale serve --draft-model NAME)", param=param or "ttscale.strategy", code="invalid_value")
        if drafting in dict(options):
            raise APIError(400, f"this server's draft model is fixed ({cfg.draft_backend.model_info().name}, "
                           "--draft-model); send no draft option", param=f"ttscale.options.{drafting}",
                           code="invalid_value")
    try:  # the one options check, the CLI's too: the same message, before the request is queued
        validated = spec.validate({**dict(options), "k": k})
    except OptionError as e:
        raise APIError(400, str(e), param=f"ttscale.options.{e.option}", code="invalid_value") from None

    b = o.budget
    tokens = _budget_tokens(o, h_budget, cfg)
    flops = b.flops if b is not None else None
    return Plan(strategy, k, verifier, tokens, flops, o.answer, source, options,
                _kv_cap(b.kv_bytes if b is not None else None, _int_header(headers, HEADER_BUDGET_KV), cfg), o.trace,
                *_priced_caps(o, cfg), validated=tuple(validated.items()))


class Resolver:
    """:func:`resolve` for one server, keeping the plans of requests that set nothing but the model name:
    such a plan depends on the model name and the server's configuration only, so it is resolved once."""

    def __init__(self, cfg: ServerConfig, keep: int = 64) -> None:
        self.cfg = cfg
        self._keep = keep
        self._bare: dict[str, Plan] = {}

    def __call__(self, opts: TtscaleOptions | None, headers: Mapping[str, str], model: str) -> Plan:
        if opts is not None or _sets_ttscale_header(headers):
            return resolve(opts, headers, model, self.cfg)
        plan = self._bare.get(model)
        if plan is None:
            plan = resolve(None, headers, model, self.cfg)  # a bad model name raises, and nothing is kept
            if len(self._bare) < self._keep:
                self._bare[model] = plan
        return plan


def _sets_ttscale_header(headers: Mapping[str, str]) -> bool:
    raw = getattr(headers, "raw", None)  # Starlette's headers: names already lower-case bytes
    if raw is not None:
        return any(name.startswith(b"x-ttscale-") for name, _ in raw)
    return any(name.lower().startswith("x-ttscale-") for name in headers)


def _priced_caps(o: TtscaleOptions, cfg: ServerConfig) -> tuple[float | None, float | None]:
    """The request's seconds and dollars caps; refused unless the server prices on a hardware profile."""
    b = o.budget
    seconds, usd = (b.seconds, b.usd) if b is not None else (None, None)
    if (seconds is not None or usd is not None) and cfg.hardware is None:
        name = "seconds" if seconds is not None else "usd"
        raise APIError(400, f"budget.{name} is priced on a hardware profile, and this server has none (start it "
                       "with ttscale serve --hardware PROFILE)", param=f"ttscale.budget.{name}", code="invalid_value")
    return seconds, usd


def _budget_tokens(o: TtscaleOptions, h_budget: int | None, cfg: ServerConfig) -> int | None:
    b = o.budget
    tokens = b.tokens if b is not None and b.tokens is not None else h_budget
    if tokens is None:
        tokens = cfg.budget_tokens
    if tokens is not None and not 1 <= tokens <= cfg.max_budget_tokens:
        raise APIError(400, f"budget tokens must be in [1, {cfg.max_budget_tokens}], got {tokens}",
                       param="ttscale.budget.tokens", code="invalid_value")
    return tokens


def _policy_plan(o: TtscaleOptions, h_budget: int | None, cfg: ServerConfig, source: str, param: str | None,
                 headers: Mapping[str, str], explicit_k: int | None) -> Plan:
    """The fitted plan chooses strategy and k per prompt: a request may set its budget, nothing else."""
    if cfg.policy is None:
        raise APIError(400, "this server has no policy (start it with ttscale serve --policy FILE)",
                       param=param, code="unknown_strategy")
    for name, given in (("k", explicit_k), ("verifier", o.verifier), ("options", o.options)):
        if given:
            raise APIError(400, f"the policy chooses its own {name}; send only a budget", param=f"ttscale.{name}",
                           code="invalid_value")
    tokens = _budget_tokens(o, h_budget, cfg)
    if tokens is not None:
        smallest = min(lv.budget for lv in cfg.policy.levels)
        if tokens < smallest:
            raise APIError(400, f"budget tokens {tokens} is below the policy's smallest level ({smallest:g} tokens "
                           "per prompt on average)", param="ttscale.budget.tokens", code="invalid_value")
    b = o.budget
    return Plan(POLICY, None, None, tokens, b.flops if b is not None else None, o.answer, source, (),
                _kv_cap(b.kv_bytes if b is not None else None, _int_header(headers, HEADER_BUDGET_KV), cfg), o.trace,
                *_priced_caps(o, cfg))


def _kv_cap(body: int | None, header: int | None, cfg: ServerConfig) -> int | None:
    """The request's KV-memory cap: its own (body, then header) within the server's, else the server's."""
    asked, param = (body, "ttscale.budget.kv_bytes") if body is not None else (header, HEADER_BUDGET_KV)
    if asked is None:
        return cfg.max_kv_bytes
    if asked < 1 or (cfg.max_kv_bytes is not None and asked > cfg.max_kv_bytes):
        top = f"[1, {cfg.max_kv_bytes}] (the server's --max-kv-bytes)" if cfg.max_kv_bytes is not None else ">= 1"
        raise APIError(400, f"KV budget must be in {top}, got {asked}", param=param, code="invalid_value")
    return asked
