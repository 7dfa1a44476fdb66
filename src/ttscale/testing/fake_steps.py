"""A scripted multi-step backend for tests of step-level search and early stopping (no model).

Every completion is a solution of ``depth`` steps, ``Step j: <words>``, separated
by blank lines, then a final step ``The answer is X.`` with X drawn from
``answers``. A prompt that already contains ``Step`` lines continues from the
next step, so "continue this partial solution" behaves like a real model with a
blank-line step delimiter. Tokens are whitespace words (a blank line is one
token), every request's prompt is prefilled in full (this fake engine shares
nothing), and decoding is simulated step by step over all samples of a call, so
``should_stop`` / ``on_finish`` cancel exactly as in the llama.cpp backend.
``next_token_logprobs`` answers a judge's Yes/No from the scripted ``judge``.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttscale.backends.fake import FAKE_MODEL_INFO
from ttscale.backends.llama_probe import TokenProbe
from ttscale.types import Capabilities, Completion, Generation, GenerationRequest, ModelInfo

_STEP_RE = re.compile(r"Step (\d+):")


def _render(request: GenerationRequest) -> str:
    if request.prompt is not None:
        return request.prompt
    assert request.messages is not None
    return "\n".join(f"<{m.role}> {m.content}" for m in request.messages) + "\n<assistant>\n"


@dataclass
class ScriptedStepBackend:
    answers: Mapping[str, float] = field(default_factory=lambda: {"42": 1.0})
    depth: int = 3
    """Reasoning steps before the final answer step."""
    step_words: int = 4
    lengths: Callable[[int], int] | None = None
    """If set: sample ``i`` of a request is exactly this many filler tokens then its answer (early-stop tests)."""
    judge: Callable[[str], float] | None = None
    """P(Yes) for a judge prompt's text (default 0.5)."""
    info: ModelInfo = FAKE_MODEL_INFO
    history: list[GenerationRequest] = field(default_factory=list)
    parallel: int = 64
    """Parallel sequences it declares (its capabilities)."""

    @property
    def name(self) -> str:
        return "fake-steps"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(parallel_sequences=self.parallel, cancellation=True, next_token_probes=True,
                            renders_prompts=True, local_prompt_counts=True)

    def model_info(self) -> ModelInfo:
        return self.info

    def render(self, request: GenerationRequest) -> str:
        return _render(request)

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(_render(request).split())

    def close(self) -> None:
        pass

    @staticmethod
    def _text(r: GenerationRequest, words: list[str], cut: int) -> str:
        text = " ".join(words[:cut])
        for stop in r.stop:
            pos = text.find(stop)
            if pos >= 0:
                text = text[:pos]
        return text

    def _words(self, prompt: str, i: int, seed: int) -> list[str]:
        digest = hashlib.sha256(f"{seed}:{i}:{prompt}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        names = sorted(self.answers)
        answer = rng.choices(names, weights=[self.answers[a] for a in names])[0]
        if self.lengths is not None:
            return [f"w{rng.randrange(100)}" for _ in range(self.lengths(i))] + ["The", "answer", "is", f"{answer}."]
        done = [int(m) for m in _STEP_RE.findall(prompt)]
        j = (max(done) + 1) if done else 1
        words: list[str] = []
        while j <= self.depth:
            words += ["Step", f"{j}:"] + [f"w{rng.randrange(100)}" for _ in range(self.step_words)]
            words.append("\n\n")
            j += 1
        return words + ["The", "answer", "is", f"{answer}."]

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        should_stop: Callable[[], bool] | None = None,
        on_finish: Callable[[int, int], None] | None = None,
        on_sample: Callable[[int, int, str], None] | None = None,
        cancelled: Callable[[int], bool] | None = None,
    ) -> list[Generation]:
        states: list[list[Any]] = []  # [request index, sample index, words, cut, finish, finished at]
        for ri, r in enumerate(requests):
            self.history.append(r)
            prompt = _render(r)
            seed = r.seed if r.seed is not None else random.randrange(2**31)
            for i in range(r.n):
                words = self._words(prompt, i, seed)
                cut, finish = len(words), "stop"
                for t in range(1, len(words) + 1):  # first prefix of words whose text holds a stop string
                    text = " ".join(words[:t])
                    if any(s in text for s in r.stop):
                        cut = t
                        break
                if cut > r.max_tokens:
                    cut, finish = r.max_tokens, "length"
                states.append([ri, i, words, cut, finish, None])
        # Simulated batched decoding: every live sample gains one token per step.
        t = 0
        live = list(states)
        while live:
            if should_stop is not None and should_stop():
                for s in live:
                    s[3], s[4] = t, "cancelled"
                break
            t += 1
            for s in [s for s in live if s[3] == t]:
                s[5] = t
                live.remove(s)
                if on_finish is not None:
                    on_finish(s[0], s[1])
                if on_sample is not None:
                    on_sample(s[0], s[1], self._text(requests[s[0]], s[2], s[3]))
        out: list[Generation] = []
        for ri, r in enumerate(requests):
            prompt = _render(r)
            n_prompt = len(prompt.split())
            comps = []
            for ri2, i, words, cut, finish, _ in states:
                if ri2 != ri:
                    continue
                text = self._text(r, words, cut)
                comps.append(Completion(text=text, n_tokens=cut, finish_reason=finish, prompt_tokens=n_prompt,  # type: ignore[arg-type]
                                        logprob=-0.1 * cut, token_logprobs=[-0.1] * cut, index=i))
            order = sorted(range(len(comps)), key=lambda j: (comps[j].n_tokens, j))
            for rank, j in enumerate(order):
                comps[j].finish_order = rank
            comps[0].prefilled_tokens = n_prompt
            out.append(Generation(request=r, completions=comps, prompt_tokens=n_prompt, prefilled_tokens=n_prompt,
                                  peak_kv_tokens=n_prompt + sum(c.n_tokens for c in comps)))
        return out

    def next_token_logprobs(self, requests: Sequence[GenerationRequest], candidates: Sequence[str]) -> list[TokenProbe]:
        out = []
        for r in requests:
            self.history.append(r)
            text = _render(r)
            p = min(max(self.judge(text) if self.judge else 0.5, 1e-9), 1 - 1e-9)
            n = len(text.split())
            lp = {c: math.log(p) if c.strip().lower() == "yes" else math.log(1 - p) for c in candidates
                  if c in ("Yes", "No")}
            out.append(TokenProbe(lp, n, n))
        return out


def text_hash_score(text: str) -> float:
    """A deterministic pseudo-random score in [0, 1) for a text."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


@dataclass
class ScriptedRewardModel:
    """A reward model for tests: ``score_fn(call, position, text) -> score``; logs every call.

    Default: a pseudo-random but deterministic score per text. Free (zero usage).
    """

    score_fn: Callable[[int, int, str], float] = lambda _c, _i, text: text_hash_score(text)
    name: str = "scripted"
    uses_reference: bool = False
    calls: list[list[tuple[str, float]]] = field(default_factory=list)

    def score(self, problem: object, candidates: Sequence[object]) -> object:
        from ttscale.verifiers.base import Scores

        texts = [str(getattr(c, "text", "")) for c in candidates]
        scores = [float(self.score_fn(len(self.calls), i, t)) for i, t in enumerate(texts)]
        self.calls.append(list(zip(texts, scores, strict=False)))
        return Scores(scores)
