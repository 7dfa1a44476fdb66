"""``ttscale run``'s own option bundles: the strategy (or a fitted policy) and the per-problem budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ttscale.backends.base import Backend
from ttscale.cli.bundle import EngineChoice, TaskChoice
from ttscale.cli.common import console
from ttscale.cli.options import typed_value
from ttscale.cli.remote_opts import MAX_KV_BYTES_HELP
from ttscale.cost import Budget
from ttscale.errors import ConfigError
from ttscale.planner.kv_plan import KvPlan, decode_cap, is_kv_plan, split_cache
from ttscale.planner.policy import Policy
from ttscale.planner.strategy import PolicyStrategy
from ttscale.registry import (
    make_strategy,
    make_verifier,
    strategy_knobs,
    strategy_names,
    strategy_specs,
    verifier_names,
    verifier_specs,
)
from ttscale.roofline import load_profile
from ttscale.strategies.base import Strategy
from ttscale.tasks.base import Task
from ttscale.types import ModelInfo, precision_label, split_precision
from ttscale.verifiers.base import Verifier

_FLAGS = {"pf_temperature": "--temperature-pf"}


@dataclass
class StrategyChoice:
    """Which strategy solves each problem, with its options and its verifier's."""

    strategy: Annotated[str, typer.Option("--strategy", "-s", help=f"Strategy: {', '.join(strategy_names())}.")] = "self-consistency"
    k: Annotated[Optional[int], typer.Option("-k", "--k", help="Samples per problem for voting / best-of-n.")] = None
    verifier: Annotated[Optional[str], typer.Option(help=f"Verifier for best-of-n and search: {', '.join(verifier_names())}.")] = None
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="A strategy option as key=value (repeatable): any option the strategy's record declares, e.g. a plugin strategy's own; `ttscale tasks` lists them.")] = None
    beam_width: Annotated[Optional[int], typer.Option(help="beam/dvts/best-first: M, continuations per path per step.")] = None
    m: Annotated[Optional[int], typer.Option("--m", help="short-m@k: vote over the first m samples to finish.")] = None
    threshold: Annotated[Optional[float], typer.Option(help="adaptive-consistency: stop at this posterior confidence.")] = None
    batch: Annotated[Optional[int], typer.Option(help="adaptive-consistency: samples started per wave (default: as many as the backend runs in parallel, up to -k; 1 = one at a time).")] = None
    rule: Annotated[Optional[str], typer.Option(help="adaptive-consistency stopping rule: beta or dirichlet.")] = None
    temperature_pf: Annotated[Optional[float], typer.Option(help="particle-filter: softmax temperature over scores.")] = None
    aggregate: Annotated[Optional[str], typer.Option(help="Search: step-score aggregate (last, min, prod, mean).")] = None
    step_tokens: Annotated[Optional[int], typer.Option(help="Search: cap on tokens per step.")] = None
    max_steps: Annotated[Optional[int], typer.Option(help="Search: a path is finished after this many steps.")] = None
    verifier_url: Annotated[Optional[str], typer.Option(help="remote-rm: base URL of a vLLM pooling server.")] = None
    verifications: Annotated[Optional[int], typer.Option(help="judge: verification chains per candidate (V).")] = None
    rollouts: Annotated[Optional[int], typer.Option(help="rollout verifier: rollouts per partial solution.")] = None
    logprobs: Annotated[Optional[bool], typer.Option("--logprobs/--no-logprobs", help="Ask the engine for every token's log-prob and store it. Default: only when the strategy or verifier reads them (deepconf, certainty, --policy); on llama-server with full-vocabulary sampling they cost decode time (docs/remote.md). Turn on to keep them for later replay.")] = None

    panel = "Strategy"

    def knobs(self) -> dict[str, Any]:
        """The strategy's options from the flags and ``-o``; a flag the strategy does not take is refused."""
        if self.strategy not in strategy_names():
            raise ConfigError(f"unknown strategy {self.strategy!r}; available: {', '.join(strategy_names())}")
        takes = strategy_knobs(self.strategy)
        given: dict[str, Any] = {"beam_width": self.beam_width, "m": self.m, "threshold": self.threshold,
                                 "batch": self.batch, "rule": self.rule, "pf_temperature": self.temperature_pf,
                                 "aggregate": self.aggregate, "step_tokens": self.step_tokens,
                                 "max_steps": self.max_steps}
        k = self.k
        for item in self.option or []:
            key, sep, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise ConfigError(f"--option takes key=value, got {item!r}")
            if key not in takes or key == "verifier":
                raise ConfigError(f"strategy {self.strategy!r} takes no option {key!r}; it takes: "
                                  f"{', '.join(takes) or 'none'}")
            value = typed_value(strategy_specs()[self.strategy].options, key, raw)
            if key == "k":
                if k is not None:
                    raise ConfigError("give k once: -k or -o k=...")
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ConfigError(f"-o k= needs an integer, got {raw!r}")
                k = value
            else:
                given[key] = value
        if k is not None and "k" not in takes:
            raise ConfigError(f"strategy {self.strategy!r} takes no -k")
        if self.verifier is not None and "verifier" not in takes:
            raise ConfigError(f"strategy {self.strategy!r} takes no --verifier")
        for knob, value in given.items():
            if value is not None and knob not in takes:
                raise ConfigError(f"strategy {self.strategy!r} takes no {_FLAGS.get(knob, '--' + knob.replace('_', '-'))}")
        return {"k": k} | {key: v for key, v in given.items() if v is not None}

    def wants_logprobs(self, policy: bool) -> bool:
        if self.logprobs is not None:
            return self.logprobs
        specs, vspecs = strategy_specs(), verifier_specs()
        return (policy or (self.strategy in specs and specs[self.strategy].uses_logprobs)
                or (self.verifier is not None and self.verifier in vspecs and vspecs[self.verifier].uses_logprobs))

    def build_verifier(self, task: Task, backend: Backend) -> Verifier | None:
        if self.verifier is None:
            return None
        return make_verifier(self.verifier, task, backend, url=self.verifier_url, verifications=self.verifications,
                             rollouts=self.rollouts)

    def build(self, knobs: dict[str, Any], verifier: Verifier | None, draft: Backend | None = None) -> Strategy:
        """The strategy; ``draft`` (``--draft-model``/``--draft-base-url``) fills its record's draft option."""
        if draft is None:
            return make_strategy(self.strategy, verifier=verifier, **knobs)
        spec = strategy_specs()[self.strategy]
        assert spec.draft_option is not None  # DraftChoice.check refused the flag otherwise
        # the options are validated without the draft: a backend is not an option value a user types
        return spec.build_validated(spec.validate(knobs) | {spec.draft_option: draft}, verifier)


@dataclass
class BudgetChoice:
    """Hard caps per problem (a strategy stops before it would exceed one)."""

    max_tokens_per_problem: Annotated[Optional[int], typer.Option(help="Hard cap on processed tokens (prefilled + generated) per problem.")] = None
    max_flops_per_problem: Annotated[Optional[float], typer.Option(help="Hard cap on forward FLOPs per problem.")] = None
    max_kv_bytes: Annotated[Optional[int], typer.Option(help=MAX_KV_BYTES_HELP)] = None
    hardware: Annotated[Optional[str], typer.Option(help="Hardware profile that --budget-seconds / --budget-usd are priced on: h100, a100, l4, cpu-2core (`ttscale hardware`), or a profile TOML (`ttscale calibrate` writes one for this machine).")] = None
    budget_seconds: Annotated[Optional[float], typer.Option(help="Hard cap on seconds per problem as --hardware would take for the work (its roofline from each call's exact tokens: a wide wave costs what batching makes it cost there), not this machine's wall clock.")] = None
    budget_usd: Annotated[Optional[float], typer.Option(help="Hard cap on dollars per problem: those seconds at --hardware's price per hour.")] = None

    panel = "Budget"

    def build(self) -> Budget:
        if self.hardware is None and (self.budget_seconds is not None or self.budget_usd is not None):
            raise ConfigError("--budget-seconds and --budget-usd are priced on a hardware profile: add --hardware "
                              "(e.g. --hardware h100; `ttscale hardware` lists them)")
        hw = load_profile(self.hardware) if self.hardware is not None else None
        return Budget(tokens=self.max_tokens_per_problem, flops=self.max_flops_per_problem, kv_bytes=self.max_kv_bytes,
                      seconds=self.budget_seconds, usd=self.budget_usd, hardware=hw)


@dataclass
class PolicyChoice:
    """A plan from ``ttscale plan`` instead of a fixed strategy."""

    policy: Annotated[Optional[Path], typer.Option(help="Apply a policy from `ttscale plan` instead of --strategy (needs --budget-tokens, or --budget-gflops for a policy planned with --budget-unit gflops).")] = None
    budget_tokens: Annotated[Optional[float], typer.Option(help="--policy: mean processed tokens per problem; selects the policy's budget level.")] = None
    budget_gflops: Annotated[Optional[float], typer.Option(help="--policy planned in GFLOPs (`ttscale plan --budget-unit gflops`): mean GFLOPs per problem; selects the level.")] = None
    explain: Annotated[bool, typer.Option("--explain", help="--policy: print what the policy saw and chose for each problem.")] = False
    per_prompt: Annotated[bool, typer.Option("--per-prompt", help="--policy: apply the per-prompt policy at every level, even where `ttscale plan`'s comparison found it no better than the best fixed choice for the budget (by default such a level runs that fixed choice, as `ttscale serve --policy` does).")] = False

    panel = "Policy"

    @property
    def unit(self) -> str:
        return "gflops" if self.budget_gflops is not None else "tokens"

    @property
    def level(self) -> float:
        """The budget that selects the policy's level, in the policy's own unit."""
        return float(self.budget_gflops if self.budget_gflops is not None else self.budget_tokens or 0)

    def check(self, strategy: StrategyChoice) -> None:
        if self.budget_tokens is not None and self.budget_gflops is not None:
            raise ConfigError("give one policy budget: --budget-tokens or --budget-gflops")
        if self.policy is not None and self.budget_tokens is None and self.budget_gflops is None:
            raise ConfigError("--policy needs --budget-tokens (mean tokens per problem) or --budget-gflops")
        if self.policy is None and (self.budget_tokens is not None or self.budget_gflops is not None or self.explain
                                    or self.per_prompt):
            raise ConfigError("--budget-tokens, --budget-gflops, --explain and --per-prompt go with --policy")
        if self.policy is not None and (strategy.k is not None or strategy.verifier is not None):
            raise ConfigError("--policy chooses the strategy and k itself: drop -k / --verifier")

    def kv_level(self, engine: EngineChoice, budget: BudgetChoice) -> Policy | None:
        """A KV plan's policy at this budget, after checking the run's cache types match the level's
        precision (the KV cap defaults to the plan's)."""
        if self.policy is None or not is_kv_plan(self.policy):
            return None
        plan = KvPlan.load(self.policy)
        if plan.budget_unit != self.unit:
            raise ConfigError(f"the KV plan's levels are in {plan.budget_unit} per problem: pass "
                              f"--budget-{plan.budget_unit}")
        chosen, policy, _ = plan.level_for(self.level)
        precision, press, ratio = split_cache(chosen)
        if (cap := decode_cap(chosen)) is not None and engine.args().options.get("decode_kv") != cap:
            raise ConfigError(f"the KV plan runs {self.level:g} {self.unit}/problem at {chosen}: pass --backend "
                              f"transformers --kv-press {press} -B decode_kv={cap}")
        if press is not None or engine.kv_press is not None:
            # an evicting level runs on the transformers backend, whose cache precision is its dtype's
            if press is None:
                raise ConfigError(f"the KV plan runs {self.level:g} {self.unit}/problem at {chosen}, without a press: "
                                  "drop --kv-press")
            if engine.backend != "transformers" or engine.kv_press != press or engine.kv_compression != ratio:
                raise ConfigError(f"the KV plan runs {self.level:g} {self.unit}/problem at {chosen}: pass --backend "
                                  f"transformers --kv-press {press} --kv-compression {ratio:g}")
        elif precision != precision_label(engine.kv_type, engine.kv_type_v or engine.kv_type):
            k_type, v_type = split_precision(precision)
            flags = f"--kv-type {k_type}" + (f" --kv-type-v {v_type}" if v_type != k_type else "")
            raise ConfigError(f"the KV plan runs {self.level:g} {self.unit}/problem at {chosen}: pass {flags}")
        if budget.max_kv_bytes is None:
            budget.max_kv_bytes = plan.cap_bytes
        return policy

    def build(self, loaded: Policy | None, info: ModelInfo, engine: EngineChoice, task: TaskChoice,
              extra_backends: list[Backend]) -> PolicyStrategy:
        """The policy as a strategy; a level that switches models gets a backend and task for each
        (appended to ``extra_backends``, which the caller closes)."""
        assert self.policy is not None
        pol = loaded or Policy.load(self.policy)
        pol.follow_decisions = not self.per_prompt  # a level the plan's comparison gave to a fixed choice runs it
        if pol.budget_unit != self.unit:
            raise ConfigError(f"the policy's levels are in {pol.budget_unit} per problem: pass --budget-{pol.budget_unit}")
        fitted_on = pol.primary_model
        if fitted_on and info.name not in fitted_on and fitted_on not in info.name:
            console.print(f"[yellow]warning:[/] the policy was fitted on {fitted_on}, this run uses {info.name}")
        alternates: dict[str, tuple[Backend, Task]] = {}
        for other in pol.models(pol.level_for(self.level)):
            if engine.ray:
                raise ConfigError(f"this policy level switches to {other}: run it without --ray")
            ob = engine.specs(model=other)[0].build()
            extra_backends.append(ob)
            oi = ob.model_info()
            # a base model gets its default (completion) format even when --style chat was asked for
            alternates[other] = (ob, task.build(oi, task.style if oi.has_chat_template else None))
        return PolicyStrategy(pol, self.level, alternates)
