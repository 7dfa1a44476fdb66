"""Name -> constructor tables for strategies, verifiers, tasks and backends.

The CLI, the server and the library all build components through these
functions, so a new component becomes available everywhere by adding one entry.
Each table is a module-level constant mapping a name to a factory; nothing here
holds state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from ttscale.backends.base import Backend
from ttscale.errors import ConfigError, UnknownNameError
from ttscale.strategies.base import Strategy
from ttscale.tasks.base import PromptFormat, Task
from ttscale.verifiers.base import Verifier


def _strategy_table() -> dict[str, Callable[..., Strategy]]:
    from ttscale.strategies.best_of_n import BestOfN
    from ttscale.strategies.single import Single
    from ttscale.strategies.voting import SelfConsistency

    return {
        "single": Single,
        "self-consistency": SelfConsistency,
        "best-of-n": lambda **kw: BestOfN(**kw, weighted=False, name="best-of-n"),
        "weighted-best-of-n": lambda **kw: BestOfN(**kw, weighted=True, name="weighted-best-of-n"),
        **_search_strategy_table(),
    }


def _search_strategy_table() -> dict[str, Callable[..., Strategy]]:
    """Verifier-guided search and online early stopping (issue 4)."""
    from ttscale.strategies.beam import BeamSearch
    from ttscale.strategies.best_first import BestFirstSearch
    from ttscale.strategies.dvts import DiverseVerifierTreeSearch
    from ttscale.strategies.early_stop import AdaptiveConsistency, ShortMAtK
    from ttscale.strategies.particle_filter import ParticleFilter
    from ttscale.strategies.revision import SequentialRevision

    def pf(pf_temperature: float | None = None, **kw: Any) -> Strategy:
        if pf_temperature is not None:
            kw["temperature"] = pf_temperature
        return ParticleFilter(**kw)

    return {
        "beam": BeamSearch,
        "dvts": DiverseVerifierTreeSearch,
        "particle-filter": pf,
        "best-first": BestFirstSearch,
        "revision": SequentialRevision,
        "short-m@k": ShortMAtK,
        "adaptive-consistency": AdaptiveConsistency,
    }


_SEARCH_KNOBS = ("aggregate", "step_tokens", "max_steps")
# Strategies whose verifier is optional (without one they choose by vote).
OPTIONAL_VERIFIER: frozenset[str] = frozenset({"revision"})


# Which knobs each strategy takes (the CLI validates against these).
STRATEGY_KNOBS: dict[str, tuple[str, ...]] = {
    "single": (),
    "self-consistency": ("k",),
    "best-of-n": ("k", "verifier"),
    "weighted-best-of-n": ("k", "verifier"),
    "beam": ("k", "beam_width", "verifier", *_SEARCH_KNOBS),
    "dvts": ("k", "beam_width", "verifier", *_SEARCH_KNOBS),
    "particle-filter": ("k", "pf_temperature", "verifier", *_SEARCH_KNOBS),
    "best-first": ("k", "beam_width", "verifier", *_SEARCH_KNOBS),
    "revision": ("k", "verifier"),
    "short-m@k": ("k", "m"),
    "adaptive-consistency": ("k", "batch", "threshold", "rule"),
}

STRATEGY_HELP: dict[str, str] = {
    "single": "one sample",
    "self-consistency": "majority vote over k samples",
    "best-of-n": "k samples, the verifier's top-scored answer",
    "weighted-best-of-n": "k samples, answer with the largest summed verifier score",
    "beam": "step-level beam search with a PRM: N=k paths, keep the top N/M each step (M=--beam-width)",
    "dvts": "diverse verifier tree search: k/M independent greedy subtrees of width M",
    "particle-filter": "particle filtering: k particles, softmax(score/--temperature-pf) resampling each step",
    "best-first": "best-first (A*-style) search by PRM score: up to k expansions of --beam-width children",
    "revision": "sequential revision: k attempts, each revising the previous; vote (or --verifier) picks",
    "short-m@k": "start k samples, stop all once the first --m finish, vote over those m",
    "adaptive-consistency": "start samples in waves as wide as the backend runs in parallel; stop (cancelling unfinished samples) once the finished ones reach the Beta/Dirichlet confidence --threshold (max k)",
}


def strategy_names() -> list[str]:
    return sorted(_strategy_table())


def make_strategy(name: str, **knobs: Any) -> Strategy:
    """Build a strategy; knobs set to ``None`` are left at their defaults."""
    table = _strategy_table()
    if name not in table:
        raise UnknownNameError("strategy", name, list(table))
    allowed = STRATEGY_KNOBS.get(name, ())
    given = {k: v for k, v in knobs.items() if v is not None}
    needs_verifier = "verifier" in allowed and name not in OPTIONAL_VERIFIER
    if needs_verifier and given.get("verifier") is None:
        raise ConfigError(f"strategy {name!r} needs a verifier (--verifier)")
    kw = {k: v for k, v in given.items() if k in allowed}
    if "k" in kw and (not isinstance(kw["k"], int) or kw["k"] < 1):
        raise ConfigError(f"k must be a positive integer, got {kw['k']!r}")
    return table[name](**kw)


VERIFIER_HELP: dict[str, str] = {
    "oracle": "reference-answer grader (evaluation only: reads the reference)",
    "certainty": "self-certainty, exp(mean token log-prob)",
    "judge": "LLM-as-judge (GenRM): P(Yes) from the backend model's next-token log-probs (--verifications V)",
    "remote-rm": "reward model over HTTP, vLLM's /pooling API (--verifier-url)",
    "rollout": "Monte Carlo rollout value, Math-Shepherd style (evaluation only: reads the reference)",
    "unit-tests": "code tasks: 1 if the sample passes the problem's visible tests in the sandbox (grading uses all)",
    "unit-tests-all": "code tasks: 1 if the sample passes all tests (the grader itself: evaluation only)",
}


def verifier_names() -> list[str]:
    return sorted(VERIFIER_HELP)


def make_verifier(
    name: str,
    task: Task,
    backend: Backend | None = None,
    *,
    url: str | None = None,
    verifications: int | None = None,
    rollouts: int | None = None,
) -> Verifier:
    from ttscale.verifiers.certainty import CertaintyVerifier
    from ttscale.verifiers.oracle import OracleVerifier

    if name == "oracle":
        return OracleVerifier(task)
    if name == "certainty":
        return CertaintyVerifier()
    if name in ("judge", "rollout") and backend is None:
        raise ConfigError(f"verifier {name!r} needs a backend")
    if name == "judge":
        from ttscale.verifiers.judge import JudgeVerifier

        assert backend is not None
        return JudgeVerifier(backend, verifications=verifications or 1, task=task)
    if name == "rollout":
        from ttscale.verifiers.rollout import RolloutVerifier

        assert backend is not None
        return RolloutVerifier(backend, task, rollouts=rollouts or 4)
    if name == "remote-rm":
        from ttscale.verifiers.remote_rm import RemoteRewardModel

        if not url:
            raise ConfigError("verifier 'remote-rm' needs the server URL (--verifier-url)")
        return RemoteRewardModel(url)
    if name in ("unit-tests", "unit-tests-all"):
        from ttscale.verifiers.unit_tests import UnitTestVerifier

        return UnitTestVerifier(task, visible_only=name == "unit-tests", name=name)
    raise UnknownNameError("verifier", name, verifier_names())


@dataclass(frozen=True)
class TaskSpec:
    name: str
    help: str
    default_chat: PromptFormat
    default_completion: PromptFormat


TASK_HELP: dict[str, str] = {
    "gsm-symbolic": "GSM8K test questions (seed unset) or GSM-Symbolic instances generated with --task-seed",
    "bigbench": "a BIG-bench JSON task, e.g. --subtask arithmetic/1_digit_multiplication",
    "jsonl": "your own file of {id, prompt, answer} lines (--data PATH)",
    "humaneval": "HumanEval: 164 Python functions graded by their unit tests in a sandbox (extra 'code')",
}


def task_names() -> list[str]:
    return sorted(TASK_HELP)


def make_task(
    name: str,
    *,
    style: str | None = None,
    shots: int | None = None,
    max_tokens: int | None = None,
    instruction: str | None = None,
    seed: int | None = None,
    subtask: str | None = None,
    data: str | None = None,
    chat_model: bool = True,
    model: str | None = None,
) -> Task:
    """Build a task. Unset format fields take the task's default for the model kind.

    ``chat_model`` says whether the model has a chat template; base models default
    to few-shot completion prompts. ``model`` (an embedded model's name) brings that model's own
    sample cap for the task where it has one (the Qwen models need longer GSM8K solutions).
    """
    from ttscale.backends.models import task_max_tokens

    if max_tokens is None:
        max_tokens = task_max_tokens(model, name)
    from ttscale.tasks.bigbench import BigBenchTask
    from ttscale.tasks.gsm_symbolic import DEFAULT_INSTRUCTION, GsmSymbolicTask
    from ttscale.tasks.jsonl import JsonlTask

    def fmt(default: PromptFormat) -> PromptFormat:
        changes: dict[str, Any] = {}
        if style is not None:
            changes["style"] = style
        if shots is not None:
            changes["shots"] = shots
        if max_tokens is not None:
            changes["max_tokens"] = max_tokens
        if instruction is not None:
            changes["instruction"] = instruction
        values = {f.name: getattr(default, f.name) for f in fields(default)} | changes
        return PromptFormat(**values)

    default_style = "chat" if chat_model else "completion"
    if name == "gsm-symbolic":
        base = PromptFormat(
            style=style or default_style,  # type: ignore[arg-type]
            shots=0 if (style or default_style) == "chat" else 4,
            instruction=DEFAULT_INSTRUCTION if (style or default_style) == "chat" else "",
            max_tokens=256,
        )
        return GsmSymbolicTask(fmt=fmt(base), seed=seed)
    if name == "bigbench":
        # Plain few-shot completion suits both embedded models best on BIG-bench (see docs).
        base = PromptFormat(style="completion", shots=5, max_tokens=16)
        return BigBenchTask(task=subtask or "arithmetic/1_digit_multiplication", fmt=fmt(base), shuffle_seed=seed or 0)
    if name == "jsonl":
        if not data:
            raise ConfigError("task 'jsonl' needs a data file (--data PATH)")
        base = PromptFormat(style=default_style, max_tokens=256)  # type: ignore[arg-type]
        return JsonlTask(path=data, fmt=fmt(base))
    if name == "humaneval":
        from ttscale.tasks.humaneval import HumanEvalTask, default_format

        return HumanEvalTask(fmt=fmt(default_format(style or default_style)))
    raise UnknownNameError("task", name, task_names())


def make_backend(kind: str = "llama-cpp", model: str | None = None, **options: Any) -> Backend:
    """Build a backend: ``llama-cpp`` (embedded, default), ``openai`` (HTTP), ``vllm`` (offline) or ``fake`` (tests)."""
    if kind == "llama-cpp":
        from ttscale.backends.llama_cpp import LlamaCppBackend
        from ttscale.backends.models import DEFAULT_MODEL

        return LlamaCppBackend(model or DEFAULT_MODEL, **options)
    if kind == "fake":
        from ttscale.backends.fake import FakeBackend

        return FakeBackend(**options)
    if kind == "openai":
        # Any OpenAI-compatible server: options base_url (required), api_key, concurrency, timeout,
        # max_retries, token_cap, info_model (embedded model name / GGUF path for FLOPs shapes).
        from ttscale.backends.openai_http import OpenAIHttpBackend

        if not options.get("base_url"):
            raise ConfigError("backend 'openai' needs a base URL (--base-url http://host:port/v1)")
        return OpenAIHttpBackend(options.pop("base_url"), model or "default", **options)
    if kind == "vllm":
        from ttscale.backends.vllm import VllmBackend

        if not model:
            raise ConfigError("backend 'vllm' needs a model (a Hugging Face id or local path)")
        return VllmBackend(model, **options)
    raise UnknownNameError("backend", kind, ["llama-cpp", "fake", "openai", "vllm"])


def dataclass_knobs(obj: object) -> dict[str, Any]:
    """Public dataclass fields of ``obj`` (for recording a component's configuration)."""
    if not is_dataclass(obj):
        return {}
    return {f.name: getattr(obj, f.name) for f in fields(obj) if not f.name.startswith("_")}
