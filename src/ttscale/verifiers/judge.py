"""LLM-as-judge / generative verifier (GenRM style): score = P("Yes").

The judge is a backend model asked whether a solution (or a partial solution, a
step-level use) is correct. With ``verifications=1`` the score is read directly
from the next-token distribution after the question:
``P(yes) = sum P(yes tokens) / (sum P(yes tokens) + sum P(no tokens))``
(the mass on "Yes"/"No" variants renormalized, so the score is in [0, 1]).
With ``verifications=V > 1`` (Singhi et al. 2025), the judge first writes V
sampled verification chains, then is asked for its verdict after each; the
score is the mean P(yes) over the V chains.

Its cost (every token it prefills and generates) is reported in ``Scores.usage``
and, for searches, bounded in advance by :meth:`JudgeVerifier.cost_bound`.
The backend needs ``next_token_logprobs`` (the llama.cpp backend has it; the HTTP backend on llama-server too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.backends.base import Backend, prober_of, render_prompt, shares_prompt_prefix, tokenizer_of
from ttscale.cost import generation_usage
from ttscale.errors import ConfigError, UnsupportedFeatureError
from ttscale.tasks.base import Task
from ttscale.types import ChatMessage, GenerationRequest, Problem, Sample, Usage, capabilities_of
from ttscale.verifiers.base import Scores
from ttscale.verifiers.spec import VerificationsOptions, VerifierSpec

YES = ("Yes", " Yes", "yes", " yes", "YES")
NO = ("No", " No", "no", " no", "NO")
JUDGE_TEMPLATE = (
    "Check this solution to a math problem{partial_note}.\n\nProblem: {problem}\n\nSolution:\n{solution}\n\n"
    "Is the solution{so_far} correct? Answer Yes or No."
)
FOLLOWUP = "Is the solution{so_far} above correct? Answer Yes or No."
VERIFY_NOTE = " Verify it step by step first, then say whether it is correct."
VERDICT = "\n\nVerdict (Yes or No):"


def p_yes(logprobs: dict[str, float], yes: Sequence[str] = YES, no: Sequence[str] = NO) -> float:
    """Renormalized probability of a yes-token among yes/no tokens (0.5 when neither has mass).

    >>> round(p_yes({"Yes": math.log(0.3), "No": math.log(0.1)}), 3)
    0.75
    """
    py = sum(math.exp(v) for k, v in logprobs.items() if k in yes)
    pn = sum(math.exp(v) for k, v in logprobs.items() if k in no)
    return py / (py + pn) if py + pn > 0 else 0.5


@dataclass
class JudgeVerifier:
    backend: Backend
    verifications: int = 1
    """V: verification chains per candidate (1 = read P(Yes) right after the question)."""
    verify_tokens: int = 64
    """Cap on each verification chain's tokens (V > 1)."""
    temperature: float = 0.7
    chat: bool | None = None
    """Ask in the model's chat template (default: when the model has one)."""
    task: Task | None = None
    """If set, the judge continues the task's own conversation (question, the solution as the
    assistant's turn, then "Is the solution above correct?"), so its prompts share the policy's
    prompt as a prefix and reuse its KV cache; else a standalone judge prompt is used."""
    name: str = "judge"
    uses_reference: bool = False

    def __post_init__(self) -> None:
        if self.verifications < 1 or self.verify_tokens < 1:
            raise ConfigError("judge needs verifications >= 1 and verify_tokens >= 1")
        if not capabilities_of(self.backend).next_token_probes:
            raise UnsupportedFeatureError(
                f"backend {self.backend.name} cannot report next-token log-probs: the judge needs them"
            )
        if self.chat is None:
            self.chat = self.backend.model_info().has_chat_template

    def question(self, problem: Problem, candidate: Sample) -> str:
        partial = candidate.finish_reason == "partial"
        text = JUDGE_TEMPLATE.format(
            partial_note=" (the first steps of it)" if partial else "",
            problem=problem.prompt.strip(), solution=candidate.text.strip() or "(empty)",
            so_far=" so far" if partial else "",
        )
        return text + (VERIFY_NOTE if self.verifications > 1 else "")

    def request(self, problem: Problem, candidate: Sample) -> GenerationRequest:
        if self.task is not None:
            return self._followup_request(problem, candidate)
        q = self.question(problem, candidate)
        if self.chat:
            return GenerationRequest(messages=(ChatMessage("user", q),), temperature=self.temperature,
                                     max_tokens=self.verify_tokens, stop=("\n\n\n",))
        return GenerationRequest(prompt=q + ("\n" if self.verifications > 1 else "\nAnswer:"),
                                 temperature=self.temperature, max_tokens=self.verify_tokens, stop=("\n\n\n",))

    def _followup_request(self, problem: Problem, candidate: Sample) -> GenerationRequest:
        assert self.task is not None
        base = self.task.request(problem)
        so_far = " so far" if candidate.finish_reason == "partial" else ""
        q = FOLLOWUP.format(so_far=so_far) + (VERIFY_NOTE if self.verifications > 1 else "")
        text = candidate.text.strip() or "(empty)"
        kw: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.verify_tokens, "stop": ("\n\n\n",)}
        if base.messages is not None:
            msgs = (*base.messages, ChatMessage("assistant", text), ChatMessage("user", q))
            return GenerationRequest(messages=msgs, **kw)
        assert base.prompt is not None
        tail = "\n" if self.verifications > 1 else "\nAnswer:"
        return GenerationRequest(prompt=f"{base.prompt} {text}\n\n{q}{tail}", **kw)

    def _probe_usage(self, probes: Sequence[Any]) -> Usage:
        info = self.backend.model_info()
        return Usage(
            prompt_tokens=sum(p.prompt_tokens for p in probes),
            prefilled_tokens=sum(p.prefilled_tokens for p in probes),
            flops=sum(info.flops_for_positions(p.prompt_tokens - p.prefilled_tokens, p.prompt_tokens) for p in probes),
            requests=len(probes),
        )

    def score(self, problem: Problem, candidates: Sequence[Sample]) -> Scores:
        if not candidates:
            return Scores([])
        probe = prober_of(self.backend).next_token_logprobs
        requests = [self.request(problem, c) for c in candidates]
        if self.verifications == 1:
            probes = probe(requests, YES + NO)
            return Scores([p_yes(p.logprobs) for p in probes], self._probe_usage(probes))
        gens = self.backend.generate([r.with_(n=self.verifications, seed=1_000 + i) for i, r in enumerate(requests)])
        info = self.backend.model_info()
        usage = Usage.total(generation_usage(g, info) for g in gens)
        verdicts = [
            GenerationRequest(prompt=render_prompt(self.backend, r) + c.text.rstrip() + VERDICT)
            for r, g in zip(requests, gens, strict=False) for c in g.completions
        ]
        probes = probe(verdicts, YES + NO)
        usage = usage + self._probe_usage(probes)
        v = self.verifications
        scores = [sum(p_yes(p.logprobs) for p in probes[i * v : (i + 1) * v]) / v for i in range(len(candidates))]
        return Scores(scores, usage)

    def cost_bound(self, problem: Problem, candidates: Sequence[Sample], extra_tokens: int = 0) -> Usage:
        """Most scoring ``candidates`` can cost if each grows by ``extra_tokens`` first.

        Every probe prompt counts in full, except that on a prefix-sharing backend the
        token prefix all prompts share up to the end of their solution text counts once.
        """
        info = self.backend.model_info()
        if self.verifications == 1 and candidates and shares_prompt_prefix(self.backend):
            texts = [render_prompt(self.backend, self.request(problem, c)) for c in candidates]
            heads = []
            for c, text in zip(candidates, texts, strict=True):
                sol = c.text.strip() or "(empty)"
                cut = text.rfind(sol)
                # An empty solution is shown as "(empty)", which its children will not share.
                heads.append(text[: cut + (len(sol) if c.text.strip() else 0)] if cut >= 0 else "")
            tok = tokenizer_of(self.backend).tokenize
            head_toks = [tok(h) for h in heads]
            n = min(len(h) for h in head_toks)
            shared = 0
            while shared < n and all(h[shared] == head_toks[0][shared] for h in head_toks):
                shared += 1
            shared = max(0, shared - 4)  # text is inserted right after the heads: allow re-tokenization there
            lens = [len(tok(t)) for t in texts]
            grow = extra_tokens + 2 if extra_tokens else 0  # + the delimiter and a re-tokenization boundary
            bound = shared + sum(n_ - shared + grow for n_ in lens)
            return Usage(prefilled_tokens=bound, flops=info.flops_for_positions(0, max(lens) + grow) * len(lens))
        total = Usage()
        for c in candidates:
            p = int(self.backend.count_prompt_tokens(self.request(problem, c)) + extra_tokens)
            if self.verifications == 1:
                total = total + Usage(prefilled_tokens=p, flops=info.flops_for_positions(0, p))
            else:
                v, chain = self.verifications, self.verify_tokens
                verdict = p + chain + 16  # chain plus the verdict question
                total = total + Usage(
                    prefilled_tokens=p + v * verdict, generated_tokens=v * chain,
                    flops=info.flops_for_positions(0, p) + v * info.flops_for_positions(0, verdict + chain),
                )
        return total


SPEC = VerifierSpec("judge", lambda a: JudgeVerifier(a.backend, verifications=a.verifications or 1, task=a.task),
                    "LLM-as-judge (GenRM): P(Yes) from the backend model's next-token log-probs (--verifications V)",
                    needs_backend=True, serves=True, options=VerificationsOptions)
