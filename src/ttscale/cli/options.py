"""Typer options shared by several commands, defined once so their help stays the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ttscale.registry import task_names

TaskOpt = Annotated[str, typer.Option(help=f"Task: {', '.join(task_names())}.")]
ModelOpt = Annotated[str, typer.Option(help="Embedded model name (smollm2-135m, gemma3-270m) or path to a .gguf file.")]
StyleOpt = Annotated[Optional[str], typer.Option(help="Prompt style: chat or completion (default: per task and model).")]
ShotsOpt = Annotated[Optional[int], typer.Option(help="Few-shot exemplars in the prompt.")]
MaxTokensOpt = Annotated[Optional[int], typer.Option(help="Cap on generated tokens per sample.")]
TemperatureOpt = Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")]
TopPOpt = Annotated[float, typer.Option(help="Nucleus sampling mass.")]
SeedOpt = Annotated[int, typer.Option(help="Sampling seed; results are reproducible given it.")]
TaskSeedOpt = Annotated[
    Optional[int],
    typer.Option(help="gsm-symbolic: generate instances with this seed (unset: original GSM8K questions). bigbench: shuffle seed."),
]
SubtaskOpt = Annotated[Optional[str], typer.Option(help="bigbench: task path, e.g. arithmetic/1_digit_addition.")]
DataOpt = Annotated[Optional[Path], typer.Option(help="jsonl: path to a file of {id, prompt, answer} lines.")]
StoreOpt = Annotated[Path, typer.Option(help="SQLite file holding every run's samples.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(help="CPU threads for llama.cpp (default: all cores).")]
