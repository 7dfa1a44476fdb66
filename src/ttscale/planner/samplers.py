"""Where ``allocate`` gets its samples: a live backend (BackendSampler) or a stored pool (PoolSampler)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from ttscale.backends.base import Backend, render_prompt, shares_prompt_prefix, tokenizer_of
from ttscale.cost import generation_usage
from ttscale.errors import ConfigError
from ttscale.replay.pool import Pool
from ttscale.strategies.base import sample_seed
from ttscale.tasks.base import Task
from ttscale.types import GenerationRequest, Problem, Sample, Sampling, capabilities_of


class BackendSampler:
    """Real generation: one ``backend.generate`` call per batch of (problem, n) requests.

    ``task`` is one task for every problem, or one task per problem (a mixed batch).
    """

    def __init__(self, backend: Backend, task: Task | Sequence[Task], problems: Sequence[Problem],
                 sampling: Sampling | None = None, shared_prefix: bool | None = None) -> None:
        self.backend = backend
        self.problems = list(problems)
        self.n_problems = len(self.problems)
        self.tasks = list(task) if isinstance(task, Sequence) else [task] * self.n_problems
        if len(self.tasks) != self.n_problems:
            raise ConfigError("one task per problem, or one task for all")
        self.sampling = sampling or Sampling()
        self.info = backend.model_info()
        self._requests = [self._request(t, p) for t, p in zip(self.tasks, self.problems, strict=True)]
        self._prompt_tokens = [backend.count_prompt_tokens(r) for r in self._requests]
        self._drawn = [0] * self.n_problems
        if shared_prefix is None:
            shared_prefix = shares_prompt_prefix(backend)
        # Prompt token ids, where the engine prefills a call's common prefix once (llama.cpp backend).
        self._tokens: list[list[int]] | None = None
        if shared_prefix:
            tok = tokenizer_of(backend).tokenize
            self._tokens = [tok(render_prompt(backend, r)) for r in self._requests]

    @property
    def prompt_tokens(self) -> list[int]:
        return list(self._prompt_tokens)

    def _request(self, task: Task, problem: Problem) -> GenerationRequest:
        req = task.request(problem)
        s = self.sampling
        return req.with_(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens or req.max_tokens)

    def worst_case(self, i: int, n: int) -> int:
        return self._prompt_tokens[i] + n * self._requests[i].max_tokens

    def call_cost(self, wants: Sequence[tuple[int, int]]) -> int:
        gen = sum(n * self._requests[i].max_tokens for i, n in wants)
        if self._tokens is None or not wants:
            return gen + sum(self._prompt_tokens[i] for i, _ in wants)
        # One job: the common prefix (capped so each prompt keeps a token of its own) is prefilled at
        # most once, then each prompt's remaining suffix.
        prompts = [self._tokens[i] for i, _ in wants]
        shared = min(len(p) for p in prompts) - 1
        first = prompts[0]
        for p in prompts[1:]:
            j = 0
            while j < shared and p[j] == first[j]:
                j += 1
            shared = j
        return gen + shared + sum(len(p) - shared for p in prompts)

    def capacity(self) -> tuple[int | None, int | None]:
        caps = capabilities_of(self.backend)
        return caps.parallel_sequences, caps.context_length

    def group(self, i: int) -> Hashable:
        return id(self.tasks[i])

    def draw(self, wants: Sequence[tuple[int, int]]) -> list[tuple[list[Sample], int]]:
        reqs = [self._requests[i].with_(n=n, seed=sample_seed(self.sampling.seed, self.problems[i].id, self._drawn[i]))
                for i, n in wants]
        gens = self.backend.generate(reqs)
        out = []
        for (i, _), gen in zip(wants, gens, strict=True):
            usage = generation_usage(gen, self.info)
            problem = self.problems[i]
            new = []
            for c in gen.completions:
                answer = self.tasks[i].extract(c.text) if c.finish_reason != "error" else None
                new.append(Sample(
                    index=self._drawn[i] + c.index, text=c.text, answer=answer, correct=self.tasks[i].grade(problem, answer),
                    n_tokens=c.n_tokens, prompt_tokens=c.prompt_tokens, prefilled_tokens=c.prefilled_tokens,
                    flops=0.0, finish_reason=c.finish_reason, logprob=c.logprob, finish_order=c.finish_order,
                ))
            self._drawn[i] += len(gen.completions)
            out.append((new, usage.total_tokens))
        return out

    def grade(self, i: int, answer: str | None) -> bool | None:
        return self.tasks[i].grade(self.problems[i], answer)


class PoolSampler:
    """Replay: draws a problem's stored samples in a seeded random order, at their recorded cost.

    With ``reprefill`` (default) every draw pays the problem's prompt prefill again, as an engine
    call does online when other prompts were served in between; without it only the first does.
    """

    def __init__(self, pool: Pool, seed: int = 0, reprefill: bool = True) -> None:
        self.pool = pool
        self.reprefill = reprefill
        self.n_problems = pool.n_problems
        rng = np.random.default_rng(seed)
        self._order = np.argsort(rng.random((pool.n_problems, pool.k)), axis=1)
        self._drawn = [0] * pool.n_problems
        self._max = pool.sample_tokens.max(axis=1)

    def worst_case(self, i: int, n: int) -> int:
        n = min(n, self.pool.k - self._drawn[i])
        first = self._drawn[i] == 0 or self.reprefill
        return int(np.ceil(self.pool.prefill_tokens[i] * first + n * self._max[i]))

    def call_cost(self, wants: Sequence[tuple[int, int]]) -> int:
        return sum(self.worst_case(i, n) for i, n in wants)

    def capacity(self) -> tuple[int | None, int | None]:
        return None, None

    def group(self, i: int) -> Hashable:
        return 0

    def draw(self, wants: Sequence[tuple[int, int]]) -> list[tuple[list[Sample], int]]:
        out = []
        for i, n in wants:
            start = self._drawn[i]
            ids = self._order[i, start : start + n]
            first = start == 0 or self.reprefill
            cost = float(self.pool.sample_tokens[i, ids].sum()) + (float(self.pool.prefill_tokens[i]) if first else 0.0)
            new = []
            for j, sid in enumerate(ids):
                a = int(self.pool.answer[i, sid])
                new.append(Sample(
                    index=start + j, text="", answer=None if a < 0 else str(a),
                    correct=bool(self.pool.correct[i, sid]), n_tokens=int(self.pool.n_tokens[i, sid]),
                    prompt_tokens=0, prefilled_tokens=0, flops=0.0, finish_reason="stop",
                    logprob=float(self.pool.logprob[i, sid]),
                ))
            self._drawn[i] += len(ids)
            out.append((new, int(np.ceil(cost))))
        return out

    def grade(self, i: int, answer: str | None) -> bool | None:
        if answer is None:
            return False
        a = int(answer)
        return bool(self.pool.answer_correct[i, a]) if a < self.pool.n_answers else False
