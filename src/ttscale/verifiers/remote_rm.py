"""A reward model served over HTTP with vLLM's pooling API.

Written against vLLM's documented ``POST /pooling`` endpoint (``vllm serve <reward
model> --runner pooling``; older releases ``--task reward``). The request is
chat-style, one per candidate::

    {"model": "...", "messages": [{"role": "user", "content": <problem>},
                                  {"role": "assistant", "content": <solution>}]}

and the response is::

    {"object": "list", "model": "...",
     "data": [{"index": 0, "object": "pooling", "data": <floats>}],
     "usage": {"prompt_tokens": N, "total_tokens": N}}

``data`` is a scalar reward, a list ``[reward]``, class probabilities
``[p_wrong, p_right]`` (the last one is taken), or, for a process reward model
such as Qwen2.5-Math-PRM (steps joined by ``step_tag``, e.g. ``"<extra_0>"``),
one row per step: the last row's last entry (the latest step's "correct"
probability) is the score. The server's ``prompt_tokens`` are reported as the
verifier's prefilled tokens (a different model's tokens: FLOPs are not known
here and are reported as 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.errors import BackendError, ConfigError
from ttscale.types import DEFAULT_DELIMITER, Problem, Sample, Usage
from ttscale.verifiers.base import Scores
from ttscale.verifiers.spec import UrlOptions, VerifierArgs, VerifierSpec


def reward_from_pooling(data: Any) -> float:
    """The score in one pooling result (see the module docstring).

    >>> reward_from_pooling([[0.9, 0.1], [0.2, 0.8]]), reward_from_pooling(0.5), reward_from_pooling([0.3, 0.7])
    (0.8, 0.5, 0.7)
    """
    while isinstance(data, list) and data and isinstance(data[-1], list):
        data = data[-1]
    if isinstance(data, list):
        if not data:
            raise BackendError("reward model returned an empty pooling result")
        data = data[-1]
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        raise BackendError(f"reward model returned a non-numeric pooling result: {data!r}")
    return float(data)


@dataclass
class RemoteRewardModel:
    url: str
    """Server base URL, e.g. ``http://localhost:8000``."""
    model: str | None = None
    """Model name to send; default: the first model the server lists at ``/v1/models``."""
    endpoint: str = "/pooling"
    step_tag: str | None = None
    """Joins steps for a PRM (e.g. ``"<extra_0>"``); None sends the solution text as is."""
    delimiter: str = DEFAULT_DELIMITER
    timeout_s: float = 60.0
    name: str = "remote-rm"
    uses_reference: bool = False

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"reward model URL must start with http:// or https://, got {self.url!r}")
        self.url = self.url.rstrip("/")

    def _client(self) -> Any:
        import httpx

        return httpx.Client(base_url=self.url, timeout=self.timeout_s)

    def _post(self, client: Any, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        try:
            r = client.post(path, json=body) if body is not None else client.get(path)
        except httpx.HTTPError as e:
            raise BackendError(f"reward model at {self.url} unreachable: {e}") from e
        try:
            payload = r.json()
        except ValueError as e:
            raise BackendError(f"reward model at {self.url}{path} answered {r.status_code} with non-JSON") from e
        if r.status_code >= 400:
            err = payload.get("error", payload) if isinstance(payload, dict) else payload
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise BackendError(f"reward model at {self.url}{path} answered {r.status_code}: {msg}")
        if not isinstance(payload, dict):
            raise BackendError(f"reward model at {self.url}{path} answered with a non-object")
        return payload

    def solution_text(self, candidate: Sample) -> str:
        if self.step_tag is None:
            return candidate.text
        steps = [s.strip() for s in candidate.text.split(self.delimiter) if s.strip()]
        return "".join(s + self.step_tag for s in steps)

    def score(self, problem: Problem, candidates: Sequence[Sample]) -> Scores:
        if not candidates:
            return Scores([])
        scores: list[float] = []
        tokens = 0
        with self._client() as client:
            model = self.model
            if model is None:
                listed = self._post(client, "/v1/models").get("data") or []
                if not listed or "id" not in listed[0]:
                    raise BackendError(f"reward model server at {self.url} lists no models")
                model = str(listed[0]["id"])
            for c in candidates:
                body = {"model": model, "messages": [{"role": "user", "content": problem.prompt},
                                                     {"role": "assistant", "content": self.solution_text(c)}]}
                payload = self._post(client, self.endpoint, body)
                data = payload.get("data")
                if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "data" not in data[0]:
                    raise BackendError(f"reward model response has no data[0].data: {str(payload)[:200]}")
                scores.append(reward_from_pooling(data[0]["data"]))
                tokens += int((payload.get("usage") or {}).get("prompt_tokens", 0))
        return Scores(scores, Usage(prompt_tokens=tokens, prefilled_tokens=tokens, requests=len(candidates)))

    def cost_bound(self, problem: Problem, candidates: Sequence[Sample], extra_tokens: int = 0) -> Usage:
        """A safe bound without the server's tokenizer: a token is at least one byte, plus chat overhead;
        each of the policy's ``extra_tokens`` counts as up to 16 bytes."""
        q = len(problem.prompt.encode())
        n = sum(q + len(self.solution_text(c).encode()) + 64 + 16 * extra_tokens for c in candidates)
        return Usage(prefilled_tokens=n)


def _remote(a: VerifierArgs) -> RemoteRewardModel:
    if not a.url:
        raise ConfigError("verifier 'remote-rm' needs the server URL (--verifier-url)")
    return RemoteRewardModel(a.url)


SPEC = VerifierSpec("remote-rm", _remote, "reward model over HTTP, vLLM's /pooling API (--verifier-url)",
                    options=UrlOptions)
