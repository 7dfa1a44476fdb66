"""Adaptive allocation of one total token budget B over a batch of problems, online.

Rounds, each one batched call to the engine:

1. *probe*: ``probe`` samples for every problem (fewer problems if B cannot cover them all; with
   ``probe_tokens``, fewer samples for problems whose samples can be long);
2. then, while budget remains: every still-open problem gets a priority, the expected value of
   more samples, and the highest-priority problems get ``step`` more samples each, as many as
   the remaining budget's worst case allows.

A problem closes when its vote is *settled* (adaptive consistency's Beta rule: P(leader's
share > runner-up's) >= ``threshold``), when it looks *hopeless* (after ``hopeless_after``
samples no answer has been given twice, so more votes have nothing to converge on), or when it
reaches ``max_samples``. Priority of an open problem is ``1 - confidence``: the less settled
the vote, the more a sample can change it. With an expected-gain estimate (a fitted policy's
per-bin majority curves), priority is that gain per token spent, and problems whose gain per
token falls below a floor close: on a mixed batch a long chain of thought has to buy more
accuracy than a six-token answer to be worth sampling again.

B is never exceeded: before every call the worst case of the call (each distinct prompt fully
prefilled once plus ``n * max_tokens`` generated per request) must fit what is left, and the
call is cut down until it does. Calls are sized to the engine's batch (``n_seq_max`` sequences,
``n_ctx`` cells), so that one prompt is never prefilled twice within a call.

A :class:`Sampler` hides where samples come from: :class:`BackendSampler` generates for real
through a backend; :class:`PoolSampler` draws stored samples of a replay pool (tests, and a
low-variance replay of the same rule).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ttscale.errors import BudgetExceededError, ConfigError
from ttscale.planner.features import probe_features
from ttscale.planner.policy import Policy
from ttscale.strategies.early_stop import beta_confidence
from ttscale.strategies.voting import weighted_vote
from ttscale.types import Sample


@dataclass(frozen=True)
class AllocationConfig:
    budget_tokens: int
    """B: processed tokens (prefill + generated) for the whole batch."""
    probe: int = 2
    step: int = 2
    max_samples: int = 16
    threshold: float = 0.9
    hopeless_after: int = 4
    min_gain: float = 0.0
    """With a ``gain`` estimate: close a problem when more samples are expected to add less accuracy."""
    min_gain_per_ktok: float = 0.0
    """With a ``gain`` estimate: close a problem when ``step`` more samples are expected to add less
    accuracy than this per 1,000 tokens they would cost (its samples so far give the cost)."""
    probe_tokens: int | None = None
    """Size the probe in tokens instead: each problem's probe is ``probe`` samples, cut down (to at
    least one) so that their worst-case generation stays within this many tokens. A long chain of
    thought is probed once, a six-token answer ``probe`` times."""

    def __post_init__(self) -> None:
        if self.budget_tokens < 1:
            raise ConfigError(f"the batch budget must be a positive token count, got {self.budget_tokens}")
        if self.probe < 1 or self.step < 1 or self.max_samples < self.probe:
            raise ConfigError("allocation needs probe >= 1, step >= 1 and max_samples >= probe")
        if self.probe_tokens is not None and self.probe_tokens < 1:
            raise ConfigError(f"probe_tokens must be >= 1, got {self.probe_tokens}")
        if self.min_gain < 0 or self.min_gain_per_ktok < 0:
            raise ConfigError("min_gain and min_gain_per_ktok must be >= 0")
        if not 0.5 <= self.threshold < 1:
            raise ConfigError(f"threshold must be in [0.5, 1), got {self.threshold}")


class Sampler(Protocol):
    n_problems: int

    def worst_case(self, i: int, n: int) -> int:
        """Most tokens (and KV cells) one request for ``n`` more samples of problem ``i`` can take on its own."""
        ...

    def call_cost(self, wants: Sequence[tuple[int, int]]) -> int:
        """Most tokens one call holding these requests can cost (at most the sum of their worst cases)."""
        ...

    def capacity(self) -> tuple[int | None, int | None]:
        """(samples, KV cells) one call may hold without splitting a prompt's prefill; None: no limit."""
        ...

    def group(self, i: int) -> Hashable:
        """Problems of one group share a long prompt prefix (one task's few-shot header) and share calls."""
        ...

    def draw(self, wants: Sequence[tuple[int, int]]) -> list[tuple[list[Sample], int]]:
        """One batched call: for each (problem, n) the new samples and the tokens they cost."""
        ...

    def grade(self, i: int, answer: str | None) -> bool | None: ...


@dataclass
class ProblemState:
    samples: list[Sample] = field(default_factory=list)
    tokens: int = 0
    status: str = "waiting"
    """waiting (no sample yet), open, settled, hopeless, no-gain, capped."""
    bins: dict[int, int] = field(default_factory=dict)
    """Difficulty bin per probe size, from this problem's own first samples (computed once)."""

    def votes(self) -> Counter[str]:
        return Counter(s.answer for s in self.samples if s.answer is not None)

    def confidence(self) -> float:
        ranked = [c for _, c in self.votes().most_common(2)]
        if not ranked:
            return 0.0
        return beta_confidence(ranked[0], ranked[1] if len(ranked) > 1 else 0)


@dataclass
class Allocation:
    answers: list[str | None]
    correct: list[bool | None]
    samples: list[int]
    tokens: list[int]
    status: list[str]
    spent: int
    budget: int
    rounds: int
    calls: int

    @property
    def accuracy(self) -> float | None:
        graded = [c for c in self.correct if c is not None]
        return sum(graded) / len(graded) if graded else None

    def to_dict(self) -> dict[str, Any]:
        return {"budget_tokens": self.budget, "spent_tokens": self.spent, "accuracy": self.accuracy,
                "rounds": self.rounds, "calls": self.calls, "samples": self.samples, "tokens": self.tokens,
                "status": self.status, "answers": self.answers, "correct": self.correct,
                "status_counts": dict(Counter(self.status))}


@dataclass
class _Call:
    wants: list[tuple[int, int]] = field(default_factory=list)
    n: int = 0
    cells: int = 0
    cost: int = 0


def _close(st: ProblemState, cfg: AllocationConfig) -> None:
    n = len(st.samples)
    top = max(st.votes().values(), default=0)
    if st.confidence() >= cfg.threshold:
        st.status = "settled"
    elif n >= cfg.max_samples:
        st.status = "capped"
    elif n >= cfg.hopeless_after and top <= 1:
        st.status = "hopeless"
    else:
        st.status = "open"


def _probe_size(sampler: Sampler, i: int, cfg: AllocationConfig) -> int:
    if cfg.probe_tokens is None:
        return cfg.probe
    per_sample = max(sampler.worst_case(i, 1) - sampler.worst_case(i, 0), 1)
    return max(1, min(cfg.probe, cfg.probe_tokens // per_sample))


GainFn = Callable[[int, "ProblemState", int], float]
"""(problem, its state, step) -> expected accuracy gain of ``step`` more samples."""


def policy_gain(policy: Policy, probe: int, prompt_tokens: Sequence[float], neighbors: int | None = None) -> GainFn:
    """Expected gain from a fitted policy: the problem's bin and that bin's training majority@k curve.

    The bin comes from the problem's first ``p`` samples through the policy's predictor for probe
    size ``p``, the largest fitted size the problem has samples for (at least ``probe``), so a
    problem's difficulty estimate sharpens as its samples accumulate. With ``neighbors``, the curve
    is instead the mean of the that many training problems whose probe features are nearest."""
    sizes = sorted(p for p, pr in policy.predictors.items() if pr.majority_by_k)
    if not sizes:
        raise ConfigError("the policy has no fitted majority curves (refit it with `ttscale plan`)")
    probe = max(probe, sizes[0])  # before the smallest fitted probe there is no estimate: keep sampling

    def gain(i: int, st: ProblemState, step: int) -> float:
        n = len(st.samples)
        if n < probe:
            return 1.0
        p = max(s for s in sizes if s <= n)
        pred = policy.predictors[p]
        x = probe_features(st.samples[:p], int(prompt_tokens[i])).vector()
        if neighbors:
            return pred.expected_majority_near(x, n + step, neighbors) - pred.expected_majority_near(x, n, neighbors)
        # memoized on the problem's state, not here: the same estimate serves many allocations (replay
        # orderings, online runs), each with its own samples and so its own bins
        if p not in st.bins:
            st.bins[p] = int(pred.bins(x[None, :])[0])
        b = st.bins[p]
        return pred.expected_majority(b, n + step) - pred.expected_majority(b, n)

    return gain


def allocate(sampler: Sampler, cfg: AllocationConfig, gain: GainFn | None = None) -> Allocation:
    """Spend at most ``cfg.budget_tokens`` over the sampler's problems; see the module docstring.

    Without ``gain`` open problems are ranked by ``1 - confidence``; with it, by the expected gain
    of ``step`` more samples per token they would cost, times ``1 - confidence``, and a problem
    whose expected gain is below ``cfg.min_gain`` (or below ``cfg.min_gain_per_ktok`` per 1,000
    tokens) closes (status ``no-gain``).
    """
    states = [ProblemState() for _ in range(sampler.n_problems)]
    spent = 0
    rounds = calls = 0
    max_n, max_cells = sampler.capacity()
    while True:
        if rounds == 0:
            queue = [(i, _probe_size(sampler, i, cfg)) for i in range(sampler.n_problems)]
        else:
            value = {}
            for i, st in enumerate(states):
                if st.status != "open":
                    continue
                v = 1.0 - st.confidence()
                if gain is not None:
                    step = min(cfg.step, cfg.max_samples - len(st.samples))
                    expected = gain(i, st, step)
                    # what `step` more samples will cost, judged by what this problem's samples cost so far
                    cost = step * st.tokens / max(len(st.samples), 1)
                    per_ktok = 1000.0 * expected / max(cost, 1.0)
                    if expected <= 0 or expected < cfg.min_gain or per_ktok < cfg.min_gain_per_ktok:
                        st.status = "no-gain"
                        continue
                    v *= per_ktok  # accuracy per token: a long chain of thought must earn its cost
                value[i] = v
            open_ = sorted(value, key=lambda i: (-value[i], len(states[i].samples), i))
            queue = [(i, min(cfg.step, cfg.max_samples - len(states[i].samples))) for i in open_]
        if not queue:
            break
        # Admit requests in priority order while the round's worst case fits what is left (falling
        # back to 1 sample). Requests are packed into calls per prompt group (same task: same few-shot
        # prefix, prefilled once per call), each call fitting one engine batch.
        left = cfg.budget_tokens - spent
        done_calls: list[tuple[Hashable, list[tuple[int, int]]]] = []
        open_calls: dict[Hashable, _Call] = {}
        round_cost = 0
        for i, n in queue:
            n = min(n, max_n) if max_n else n  # one request never spans two engine batches
            g = sampler.group(i)
            for m in (n, 1) if n > 1 else (n,):
                cur = open_calls.get(g)
                cells = sampler.worst_case(i, m)
                joins = cur is not None and not ((max_n is not None and cur.n + m > max_n)
                                                 or (max_cells is not None and cur.cells + cells > max_cells))
                delta = (sampler.call_cost([*cur.wants, (i, m)]) - cur.cost if joins and cur is not None
                         else sampler.call_cost([(i, m)]))
                if round_cost + delta > left:
                    continue
                if not joins:
                    if cur is not None:
                        done_calls.append((g, cur.wants))
                    cur = open_calls[g] = _Call()
                assert cur is not None
                cur.wants.append((i, m))
                cur.n, cur.cells, cur.cost = cur.n + m, cur.cells + cells, cur.cost + delta
                round_cost += delta
                break
        done_calls += [(g, c.wants) for g, c in open_calls.items()]
        if not done_calls:
            break
        # Calls of one group back to back, so the engine can keep their common prefix cached.
        order = {g: j for j, g in enumerate(dict.fromkeys(g for g, _ in done_calls))}
        calls_now = [w for _, w in sorted(done_calls, key=lambda gc: order[gc[0]])]
        rounds += 1
        for call in calls_now:
            bound = sampler.call_cost(call)
            got = sampler.draw(call)
            calls += 1
            used = sum(t for _, t in got)
            if used > bound:  # the engine broke its own limits: stop rather than risk passing B
                raise BudgetExceededError(f"a call cost {used} tokens, over its worst case {bound}")
            spent += used
            for (i, _), (new, t) in zip(call, got, strict=True):
                st = states[i]
                st.samples.extend(new)
                st.tokens += t
                _close(st, cfg)
                if not new:  # the source has nothing more for this problem (a replay pool ran out)
                    st.status = "capped"
    answers = [weighted_vote(st.samples)[0] if st.samples else None for st in states]
    return Allocation(
        answers=answers,
        correct=[sampler.grade(i, a) for i, a in enumerate(answers)],
        samples=[len(st.samples) for st in states],
        tokens=[st.tokens for st in states],
        status=[st.status for st in states],
        spent=spent, budget=cfg.budget_tokens, rounds=rounds, calls=calls,
    )


