"""OpenAI-compatible wire format: request bodies out, choices and usage in.

Pure functions, no I/O, so the counting rules are unit-tested without a server.

Counting rules (the same as the embedded backend's):

* ``prompt_tokens`` is the server's ``usage.prompt_tokens``; prompt tokens served
  from the server's cache (``usage.prompt_tokens_details.cached_tokens`` or
  llama-server's ``timings.prompt_n``) are not counted as prefilled.
* Generated tokens per choice come from the choice itself: the number of
  log-prob entries. A response's ``usage.completion_tokens`` is only trusted
  for a single-choice response, because llama-server reports about one choice's
  tokens for ``n > 1`` (measured: one eighth of the real total for ``n = 8``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ttscale.errors import BackendError
from ttscale.types import Completion, FinishReason, GenerationRequest


class MalformedResponse(BackendError, ValueError):
    """The body is not a usable completion response (truncated, invalid JSON, wrong shape).

    Inside ``post_json`` it is retried like a transient failure; anywhere else it reaches the caller
    as a :class:`~ttscale.errors.BackendError` (one line in the CLI, a 502-class error in the server)."""


@dataclass
class ParsedChoice:
    index: int
    text: str
    finish_reason: FinishReason
    token_logprobs: list[float] | None
    """None when the server sent no log-probs for this choice."""
    n_tokens: int | None = None
    """The server's own decoded-token count for this choice, when it reports one (llama-server native)."""


@dataclass
class ParsedResponse:
    choices: list[ParsedChoice]
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int | None
    """The server's reported total (unreliable for several choices, see module doc)."""
    prefilled: int | None = None
    """Prompt tokens evaluated, when the server reports it directly (else prompt - cached)."""


def request_body(req: GenerationRequest, model: str, n: int, seed: int | None, want_logprobs: bool) -> dict[str, Any]:
    """JSON body for ``/v1/completions`` (prompt) or ``/v1/chat/completions`` (messages)."""
    body: dict[str, Any] = {
        "model": model,
        "n": n,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "max_tokens": req.max_tokens,
        "stream": False,
    }
    if req.top_k or req.min_p:  # not standard OpenAI fields: sent only when asked for (vLLM, llama-server take them)
        body |= {"top_k": req.top_k, "min_p": req.min_p}
    if req.stop:
        body["stop"] = list(req.stop)
    if seed is not None:
        body["seed"] = int(seed)
    if req.prompt is not None:
        body["prompt"] = req.prompt
        if want_logprobs:
            body["logprobs"] = 1  # legacy completions: an int, top alternatives per position
    else:
        assert req.messages is not None
        body["messages"] = [{"role": m.role, "content": m.content} for m in req.messages]
        if want_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = 1
    return body


def endpoint(req: GenerationRequest) -> str:
    return "completions" if req.prompt is not None else "chat/completions"


def _token_logprobs(lp: Any) -> list[float] | None:
    """Per-token log-probs from either format: legacy ``token_logprobs`` or chat-style ``content``."""
    if not isinstance(lp, dict):
        return None
    if isinstance(lp.get("token_logprobs"), list):
        vals = lp["token_logprobs"]
    elif isinstance(lp.get("content"), list):
        vals = [e.get("logprob") if isinstance(e, dict) else None for e in lp["content"]]
    else:
        return None
    out: list[float] = []
    for v in vals:
        if v is None:  # some servers send null for the first token of an echo; never for generated ones
            out.append(float("nan"))
        elif isinstance(v, int | float):
            out.append(float(v))
        else:
            raise MalformedResponse(f"log-prob entry is not a number: {v!r}")
    return out


def _finish(reason: Any) -> FinishReason:
    if reason in ("stop", "eos", "stop_sequence", "tool_calls"):
        return "stop"
    if reason == "length":
        return "length"
    return "stop" if reason is None else "length" if "length" in str(reason) else "stop"


def parse_response(data: Any) -> ParsedResponse:
    """Validate and parse one non-streaming completion body; raises MalformedResponse."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        raise MalformedResponse("response has no 'choices' list")
    choices: list[ParsedChoice] = []
    for pos, ch in enumerate(data["choices"]):
        if not isinstance(ch, dict):
            raise MalformedResponse("a choice is not an object")
        if "text" in ch:
            text = ch["text"]
        elif isinstance(ch.get("message"), dict):
            text = ch["message"].get("content") or ""
        else:
            raise MalformedResponse("a choice has neither 'text' nor 'message'")
        if not isinstance(text, str):
            raise MalformedResponse("choice text is not a string")
        idx = ch.get("index", pos)
        choices.append(ParsedChoice(int(idx) if isinstance(idx, int) else pos, text,
                                    _finish(ch.get("finish_reason")), _token_logprobs(ch.get("logprobs"))))
    usage: dict[str, Any] = data["usage"] if isinstance(data.get("usage"), dict) else {}
    prompt_tokens = usage.get("prompt_tokens")
    if not isinstance(prompt_tokens, int):
        raise MalformedResponse("response has no usage.prompt_tokens")
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if not isinstance(cached, int):
        timings: dict[str, Any] = data["timings"] if isinstance(data.get("timings"), dict) else {}
        evaluated = timings.get("prompt_n")
        cached = prompt_tokens - evaluated if isinstance(evaluated, int) else 0
    ct = usage.get("completion_tokens")
    return ParsedResponse(choices, prompt_tokens, max(0, min(cached, prompt_tokens)), ct if isinstance(ct, int) else None)


def native_body(text: str, req: GenerationRequest, n: int, seed: int | None, want_logprobs: bool) -> dict[str, Any]:
    """Body for llama-server's native ``/completion``: like ``/v1/completions``, but every result
    reports its own ``tokens_predicted`` (the OpenAI-style response keeps only the first one's usage,
    and its log-probs omit the tokens of a matched stop string)."""
    body: dict[str, Any] = {"prompt": text, "n_cmpl": n, "n_predict": req.max_tokens, "temperature": req.temperature,
                            "top_p": req.top_p, "top_k": req.top_k, "min_p": req.min_p, "stream": False,
                            "cache_prompt": True}
    if req.stop:
        body["stop"] = list(req.stop)
    if seed is not None:
        body["seed"] = int(seed)
    if want_logprobs:
        body["n_probs"] = 1
    return body


def parse_native(data: Any) -> ParsedResponse:
    """Parse llama-server's native ``/completion`` answer (one object, or a list for ``n_cmpl > 1``)."""
    results = data if isinstance(data, list) else [data]
    if not results or not all(isinstance(r, dict) and isinstance(r.get("content"), str) for r in results):
        raise MalformedResponse("native completion response has no 'content'")
    choices: list[ParsedChoice] = []
    prefilled = 0
    for pos, r in enumerate(results):
        n_tok = r.get("tokens_predicted")
        if not isinstance(n_tok, int):
            raise MalformedResponse("native completion result has no 'tokens_predicted'")
        probs = r.get("completion_probabilities")
        lps = [float(e["logprob"]) for e in probs if isinstance(e, dict) and "logprob" in e] \
            if isinstance(probs, list) else None
        stop_type = r.get("stop_type")
        finish: FinishReason = "length" if stop_type == "limit" else "stop"
        idx = r.get("index", pos)
        choices.append(ParsedChoice(idx if isinstance(idx, int) else pos, r["content"], finish, lps, n_tok))
        timings = r.get("timings") if isinstance(r.get("timings"), dict) else {}
        # every result repeats the parent's prompt timings; the children copy its KV cells
        prefilled = max(prefilled, int(timings.get("prompt_n", 0) or 0))  # type: ignore[union-attr]
    prompt_tokens = results[0].get("tokens_evaluated")
    if not isinstance(prompt_tokens, int):
        raise MalformedResponse("native completion result has no 'tokens_evaluated'")
    return ParsedResponse(choices, prompt_tokens, 0, None, prefilled)


def to_completions(
    parsed: ParsedResponse, first_index: int, want_logprobs: bool, decode_s: float
) -> list[Completion]:
    """Completions for the choices of one response, numbered from ``first_index``.

    The first choice carries the response's prefill (shared by all its choices).
    """
    out: list[Completion] = []
    single = len(parsed.choices) == 1
    prefilled = parsed.prefilled if parsed.prefilled is not None else parsed.prompt_tokens - parsed.cached_tokens
    for order, ch in enumerate(sorted(parsed.choices, key=lambda c: c.index)):
        if ch.n_tokens is not None:
            n_tokens = ch.n_tokens
        elif ch.token_logprobs is not None:
            n_tokens = len(ch.token_logprobs)
            if single and parsed.completion_tokens is not None:
                n_tokens = max(n_tokens, parsed.completion_tokens)  # the server's count includes an EOS token
        elif single and parsed.completion_tokens is not None:
            n_tokens = parsed.completion_tokens
        else:
            raise MalformedResponse("cannot count a choice's tokens: the server sent several choices without "
                                    "log-probs or per-choice token counts (request n=1, or a server that sends them)")
        lps = ch.token_logprobs if want_logprobs else None
        total = math.fsum(x for x in lps if not math.isnan(x)) if lps is not None else None
        out.append(Completion(
            text=ch.text,
            n_tokens=n_tokens,
            finish_reason=ch.finish_reason,
            prompt_tokens=parsed.prompt_tokens,
            prefilled_tokens=prefilled if order == 0 else 0,
            logprob=total,
            token_logprobs=lps,
            index=first_index + order,
            decode_s=decode_s,
        ))
    return out
