"""Typer options shared by several commands, defined once so their help stays the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import BaseModel, TypeAdapter, ValidationError

from ttscale.cli.remote_opts import BACKEND_HELP, BASE_URL_HELP, RAY_HELP, WORKERS_HELP
from ttscale.registry import task_names

TaskOpt = Annotated[str, typer.Option(help=f"Task: {', '.join(task_names())}.")]
ModelOpt = Annotated[str, typer.Option(help="Embedded model name (smollm2-135m, gemma3-270m) or path to a .gguf file.")]
StyleOpt = Annotated[Optional[str], typer.Option(help="Prompt style: chat or completion (default: per task and model).")]
ShotsOpt = Annotated[Optional[int], typer.Option(help="Few-shot exemplars in the prompt.")]
MaxTokensOpt = Annotated[Optional[int], typer.Option(help="Cap on generated tokens per sample.")]
TemperatureOpt = Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")]
TopPOpt = Annotated[float, typer.Option(help="Nucleus sampling mass.")]
TopKOpt = Annotated[int, typer.Option(help="Sample among the k most likely tokens only. 0 (default): the whole vocabulary, the model's own distribution, which log-prob-based verifiers and replay assume; llama-server's own default is 40, so ttscale sends 0 explicitly. Truncating is a speed/quality choice, see docs/remote.md.")]
MinPOpt = Annotated[float, typer.Option(help="Drop tokens below min-p times the top token's probability. 0 (default): off.")]
SeedOpt = Annotated[int, typer.Option(help="Sampling seed; results are reproducible given it.")]
TaskSeedOpt = Annotated[
    Optional[int],
    typer.Option(help="gsm-symbolic: generate instances with this seed (unset: original GSM8K questions). arithmetic, bigbench: shuffle seed."),
]
SubtaskOpt = Annotated[Optional[str], typer.Option(help="arithmetic: N_digit_OP, e.g. 2_digit_addition; bigbench: task path, e.g. navigate.")]
DataOpt = Annotated[Optional[Path], typer.Option(
    help="jsonl: path to a file of {id, prompt, answer} lines. bigbench: the bigbench-1.0.0.tar.gz sdist or a BIG-bench checkout.")]
StoreOpt = Annotated[Path, typer.Option(help="SQLite file holding every run's samples.")]
KvTypeOpt = Annotated[str, typer.Option(help="KV-cache element type of K (and V unless --kv-type-v): f16 (default), q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, bf16, f32. The embedded engine runs at it (quantized types with flash attention); with --backend openai it names the served cache's type (llama-server --cache-type-k/-v) so the meter counts its bytes. Recorded with the run; the meter counts its real bytes (q8_0: 34/64 of f16's). Measured: docs/experiments/kv-precision.md.")]
KvTypeVOpt = Annotated[Optional[str], typer.Option(help="V cache type when it differs from --kv-type's. Keys are what quantization breaks: on the Qwen2.5-Coder models 4-bit keys garble the output while 4-bit values do not, so --kv-type q8_0 --kv-type-v q4_0 (0.41x f16's bytes) keeps the model coherent where q4_0 for both does not.")]
KvPressOpt = Annotated[Optional[str], typer.Option(help="KV press (--backend transformers): evict prompt KV cells at prefill so the same memory holds more samples or longer contexts: streaming_llm (sink + window), snapkv (question-aware), tova and observed_attention (attention scores), knorm and expected_attention (score-free). Recorded in the model record; the meter and --max-kv-bytes count the kept cells.")]
KvCompressionOpt = Annotated[float, typer.Option(min=0.0, max=0.9, help="Fraction of a prompt's KV cells the --kv-press evicts (0 to 0.9; prompts under 16 tokens are kept whole).")]
ThreadsOpt = Annotated[Optional[int], typer.Option(help="CPU threads for llama.cpp (default: all cores).")]

# Engine selection and parallelism (``run`` and ``sweep``); help texts live with the logic in remote_opts.
BackendOpt = Annotated[str, typer.Option(help=BACKEND_HELP)]
BaseUrlOpt = Annotated[Optional[list[str]], typer.Option(help=BASE_URL_HELP)]
ApiKeyOpt = Annotated[Optional[str], typer.Option(envvar="OPENAI_API_KEY", help="openai backend: API key (default: $OPENAI_API_KEY).")]
ConcurrencyOpt = Annotated[int, typer.Option(help="openai backend: HTTP requests in flight per backend.")]
WorkersOpt = Annotated[int, typer.Option(help=WORKERS_HELP)]
RayOpt = Annotated[bool, typer.Option("--ray", help=RAY_HELP)]
RayAddressOpt = Annotated[Optional[str], typer.Option(help="Ray cluster address (default: start a local Ray).")]
BackendOptionOpt = Annotated[Optional[list[str]], typer.Option(
    "--backend-option", "-B", help="A backend option as key=value (repeatable): what the backend's record declares, "
    "e.g. -B n_ctx=8192 for llama-cpp, -B timeout=300 for openai, or a plugin backend's own (`ttscale tasks` lists them).")]
RunIdOpt = Annotated[Optional[str], typer.Option(help="Name of the run; an existing id resumes it (only what is missing is generated).")]
ProgressOpt = Annotated[bool, typer.Option(help="Show a progress bar with time left.")]

# Replaying a stored pool (``curves`` and ``report``).
PoolRunArg = Annotated[str, typer.Argument(help="Run (usually a sweep) whose samples form the pool.")]
PoolStoreOpt = Annotated[Path, typer.Option(help="SQLite file holding the pool; 'shipped' for the reference pools that ship with ttscale (`ttscale pool list`).")]
BudgetsOpt = Annotated[Optional[str], typer.Option(help="Comma-separated k values (default: ~12 log-spaced up to K).")]
PoolKOpt = Annotated[Optional[int], typer.Option("-k", help="Use only the first K samples of each problem.")]
OrdersOpt = Annotated[int, typer.Option(help="Random orderings per problem for resampled estimates.")]
BootstrapOpt = Annotated[int, typer.Option(help="Bootstrap resamples over problems for the CIs.")]
ResampleSeedOpt = Annotated[int, typer.Option(help="Seed of the resampling.")]

TaskOptionOpt = Annotated[Optional[list[str]], typer.Option(
    "--task-option", "-T", help="A task option as key=value (repeatable): what the task's record declares, e.g. "
    "--task rag -T docs=10 (`ttscale tasks` lists them).")]


def parse_value(raw: str) -> object:
    """A key=value option's value: JSON where it parses (numbers, true/false, null), else the string."""
    import json

    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_pairs(items: list[str] | None, flag: str, model: type[BaseModel] | None = None) -> dict[str, object]:
    """``key=value`` strings as a dict (a malformed one is a usage error naming ``flag``).

    With the options ``model`` the values will be checked against, each value is read as its field's
    type reads a string (``-B answer=41`` stays the string "41" for a ``str`` field, ``n_ctx=4096`` is
    an int); otherwise, and for a value its field cannot read, as JSON where it parses, else the string.
    The model's own check then reports any bad value by its field's name."""
    out: dict[str, object] = {}
    for item in items or []:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise typer.BadParameter(f"takes key=value, got {item!r}", param_hint=flag)
        out[key] = typed_value(model, key, raw)
    return out


def typed_value(model: type[BaseModel] | None, key: str, raw: str) -> object:
    """A command-line value as option ``key`` of ``model`` reads a string (JSON, else the string,
    when the model has no such field or the field cannot read it)."""
    field = model.model_fields.get(key) if model is not None else None
    if field is not None and field.annotation is not None:
        try:
            return TypeAdapter(field.annotation).validate_strings(raw)
        except (ValidationError, TypeError):
            pass
    return parse_value(raw)
