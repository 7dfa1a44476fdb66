"""Request and response bodies of the OpenAI-compatible API, as pydantic models.

Requests forbid unknown fields: a parameter this server does not implement
(``tools``, ``logit_bias``, ...) is a 400 naming it, never silently ignored.
The ``ttscale`` field is the extension OpenAI clients send through ``extra_body``.
Limits that depend on the server's configuration (largest k, budget, n) are
checked in :mod:`ttscale.server.control`, so the schema holds only fixed rules.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, field_validator

Strict = ConfigDict(extra="forbid")


class BudgetSpec(BaseModel):
    model_config = Strict
    tokens: Optional[StrictInt] = Field(None, ge=1, description="Cap on processed tokens (prefilled + generated) for the request.")
    flops: Optional[StrictFloat] = Field(None, gt=0, allow_inf_nan=False, description="Cap on forward FLOPs for the request.")
    kv_bytes: Optional[StrictInt] = Field(
        None, ge=1, description="Cap on KV-cache bytes the request holds at once (at the engine's KV precision), shared by "
        "its choices: no wave of samples starts unless its worst case fits; at most the server's --max-kv-bytes.")
    seconds: Optional[StrictFloat] = Field(
        None, gt=0, allow_inf_nan=False, description="Cap on seconds for the request as the server's --hardware profile "
        "would take for the work (its roofline from each call's exact tokens), shared by its choices.")
    usd: Optional[StrictFloat] = Field(
        None, gt=0, allow_inf_nan=False, description="Cap on dollars for the request: those seconds at the --hardware "
        "profile's price per hour, shared by its choices.")


class TtscaleOptions(BaseModel):
    """Per-request test-time-scaling control (``extra_body={"ttscale": {...}}``)."""

    model_config = Strict
    strategy: Optional[str] = Field(None, max_length=64, description="Strategy name, e.g. self-consistency, best-of-n.")
    k: Optional[StrictInt] = Field(None, ge=1, description="Samples per choice for voting / best-of-n.")
    budget: Optional[BudgetSpec] = None
    verifier: Optional[str] = Field(None, max_length=64, description="Verifier for best-of-n strategies.")
    options: Optional[dict[str, Union[StrictBool, StrictInt, StrictFloat, str]]] = Field(
        None, description="Other knobs of the strategy, e.g. {\"m\": 2} for short-m@k (see `ttscale tasks`).")
    answer: Literal["auto", "numeric", "text"] = Field(
        "auto", description="How samples are compared for voting: the final number, the normalized text, or "
        "the number when there is one (auto).")
    trace: StrictBool = Field(
        False, description="Return (and log) what the strategy did inside: each backend call with its samples and "
        "cost, each verifier probe, the votes.")


class TextPart(BaseModel):
    model_config = Strict
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]
    name: Optional[str] = Field(None, max_length=64)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = Strict
    include_usage: StrictBool = False


Stop = Union[str, list[str], None]


class _Common(BaseModel):
    """Parameters shared by chat and text completions (OpenAI meanings)."""

    model_config = Strict
    model: str = Field(..., min_length=1, max_length=256)
    n: StrictInt = Field(1, ge=1, description="Returned choices; each is an independent strategy run.")
    temperature: Optional[StrictFloat] = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: Optional[StrictFloat] = Field(None, gt=0, le=1, allow_inf_nan=False)
    top_k: Optional[StrictInt] = Field(None, ge=0, description="vLLM / llama-server extension: 0 = no truncation (default).")
    min_p: Optional[StrictFloat] = Field(None, ge=0, lt=1, allow_inf_nan=False,
                                         description="vLLM / llama-server extension: 0 = off (default).")
    max_tokens: Optional[StrictInt] = Field(None, ge=1, description="Cap on generated tokens per sample.")
    stop: Stop = Field(None, description="Up to 4 stop strings.")
    seed: Optional[StrictInt] = Field(None, ge=0, le=2**31 - 1)
    stream: StrictBool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = Field(None, max_length=256)
    presence_penalty: Optional[StrictFloat] = Field(None, ge=0, le=0, description="Only 0 is supported.")
    frequency_penalty: Optional[StrictFloat] = Field(None, ge=0, le=0, description="Only 0 is supported.")
    ttscale: Optional[TtscaleOptions] = None

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(_Common):
    messages: list[Message] = Field(..., min_length=1)
    max_completion_tokens: Optional[StrictInt] = Field(None, ge=1)
    logprobs: Optional[StrictBool] = Field(None, description="Only false: log-probabilities are not returned.")

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("log-probabilities are not returned by this server")
        return v


class CompletionRequest(_Common):
    prompt: Union[str, list[str]] = Field(..., description="One prompt, or a list (choices for each, in order).")
    echo: Optional[StrictBool] = Field(None, description="Only false: the prompt is not echoed.")
    logprobs: Optional[StrictInt] = Field(None, ge=0, le=0, description="Only 0: log-probabilities are not returned.")

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("echo is not supported")
        return v


# ---- responses ---------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Prompt tokens the engine actually prefilled (shared-prefix reuse is free).")
    completion_tokens: int = Field(description="Every generated token: all samples of all choices.")
    total_tokens: int


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: Optional[str]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: Optional[str] = None
    ttscale: dict[str, Any] = Field(description="Strategy used, cost breakdown and vote distribution.")


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: Optional[str]
    logprobs: None = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage
    ttscale: dict[str, Any]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ttscale"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str]
    code: Optional[str]


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok", "draining"]
    model: str
    queue_depth: int
    in_flight: int
