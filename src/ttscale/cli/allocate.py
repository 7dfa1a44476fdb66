"""``ttscale allocate``: spend one total token budget over a batch of problems, adaptively, online."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

from ttscale.cli.common import cli_errors, console, fail, write_json
from ttscale.errors import ConfigError
from ttscale.planner.allocate import AllocationConfig, policy_gain
from ttscale.planner.allocate import allocate as run_allocation
from ttscale.planner.policy import Policy
from ttscale.planner.samplers import BackendSampler
from ttscale.registry import make_backend, make_task, task_names
from ttscale.types import Sampling


@cli_errors
def allocate(
    budget_tokens: Annotated[int, typer.Option(help="Total processed tokens (prefill + generated) for the whole batch; never exceeded.")],
    task: Annotated[str, typer.Option(help=f"Task: {', '.join(task_names())}.")] = "gsm-symbolic",
    model: Annotated[str, typer.Option(help="Embedded model name (smollm2-135m, gemma3-270m) or path to a .gguf file.")] = "smollm2-135m",
    limit: Annotated[Optional[int], typer.Option(help="The batch: the first N problems.")] = 20,
    style: Annotated[Optional[str], typer.Option(help="Prompt style: chat or completion (default: per task and model).")] = None,
    shots: Annotated[Optional[int], typer.Option(help="Few-shot exemplars in the prompt.")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="Cap on generated tokens per sample.")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.8,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    task_seed: Annotated[Optional[int], typer.Option(help="gsm-symbolic: instance seed; arithmetic, bigbench: shuffle seed.")] = None,
    subtask: Annotated[Optional[str], typer.Option(help="arithmetic: N_digit_OP, e.g. 2_digit_addition; bigbench: task path, e.g. navigate.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="jsonl: path to a file of {id, prompt, answer} lines.")] = None,
    probe: Annotated[int, typer.Option(help="Samples every problem gets first.")] = 2,
    probe_tokens: Annotated[Optional[int], typer.Option(help="Size each problem's probe in tokens: fewer probe samples (at least 1) where samples can be long.")] = None,
    step: Annotated[int, typer.Option(help="Samples added per round to each unsettled problem.")] = 2,
    max_samples: Annotated[int, typer.Option(help="Most samples one problem may get.")] = 16,
    threshold: Annotated[float, typer.Option(help="A vote is settled at this Beta-rule confidence.")] = 0.9,
    hopeless_after: Annotated[int, typer.Option(help="Give up on a problem when no answer repeats after this many samples.")] = 4,
    policy: Annotated[Optional[Path], typer.Option(help="A policy from `ttscale plan`: its difficulty bins and majority@k curves estimate the gain of more samples.")] = None,
    min_gain: Annotated[float, typer.Option(help="--policy: stop a problem when more samples are expected to add less accuracy than this.")] = 0.0,
    min_gain_per_ktok: Annotated[float, typer.Option(help="--policy: stop a problem when more samples are expected to add less accuracy than this per 1,000 tokens they cost.")] = 0.0,
    neighbors: Annotated[Optional[int], typer.Option(help="--policy: estimate the gain from this many nearest training problems instead of the difficulty bin.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for llama.cpp (default: all cores).")] = None,
    backend: Annotated[str, typer.Option(help="llama-cpp or fake (scripted, for trying the CLI without a model).", hidden=True)] = "llama-cpp",
    output: Annotated[Optional[Path], typer.Option(help="Write per-problem results as JSON here.")] = None,
) -> None:
    """Probe every problem, stop settled and hopeless ones, keep sampling the uncertain ones, within one budget."""
    if limit is not None and limit < 1:
        fail("--limit must be at least 1")
    if data is not None and task != "jsonl":
        fail("--data is only for --task jsonl")
    if (min_gain or min_gain_per_ktok or neighbors) and policy is None:
        fail("--min-gain, --min-gain-per-ktok and --neighbors need --policy")
    if neighbors is not None and neighbors < 1:
        fail("--neighbors must be at least 1")
    cfg = AllocationConfig(budget_tokens, probe=probe, step=step, max_samples=max_samples, threshold=threshold,
                           hopeless_after=hopeless_after, min_gain=min_gain,
                           min_gain_per_ktok=min_gain_per_ktok, probe_tokens=probe_tokens)
    fitted = Policy.load(policy) if policy is not None else None
    opts = {"n_threads": threads} if (threads and backend == "llama-cpp") else {}
    be = make_backend(backend, model if backend == "llama-cpp" else None, **opts)
    try:
        info = be.model_info()
        t = make_task(task, style=style, shots=shots, max_tokens=max_tokens, seed=task_seed, subtask=subtask,
                      data=str(data) if data else None, chat_model=info.has_chat_template, model=info.name)
        if t.fmt.style == "chat" and not info.has_chat_template:
            raise ConfigError(f"model {info.name} has no chat template: use --style completion")
        probs = t.problems(limit=limit)
        if not probs:
            fail("the task yielded no problems")
        sampler = BackendSampler(be, t, probs, Sampling(temperature=temperature, seed=seed))
        first = 1 if probe_tokens else probe  # a token-sized probe may give a problem a single sample
        gain = policy_gain(fitted, first, sampler.prompt_tokens, neighbors) if fitted is not None else None
        out = run_allocation(sampler, cfg, gain)
    finally:
        be.close()
    acc = "n/a (no references)" if out.accuracy is None else f"{out.accuracy:.3f}"
    console.print(f"allocated {out.spent:,} of {budget_tokens:,} tokens over {len(probs)} problems "
                  f"({out.spent / len(probs):.1f}/problem) in {out.rounds} rounds, {out.calls} engine calls")
    console.print(f"accuracy {acc}; samples per problem {dict(sorted(Counter(out.samples).items()))}; "
                  f"status {out.to_dict()['status_counts']}")
    if output is not None:
        d = out.to_dict()
        d["problems"] = [p.id for p in probs]
        d["config"] = {"task": t.describe(), "model": info.name, **cfg.__dict__}
        write_json(output, d)
        console.print(f"results written to {output}")
