"""``ttscale models`` and ``ttscale tasks``: what is available and what it looks like."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from ttscale.backends.models import EMBEDDED_MODELS
from ttscale.cli.common import cli_errors, console, human
from ttscale.registry import VERIFIER_HELP, backend_kinds, strategy_specs, task_specs


@cli_errors
def models(
    model: Annotated[Optional[str], typer.Argument(help="Show only this model (name or .gguf path).")] = None,
) -> None:
    """Print each embedded model's shapes, read from its GGUF header (fetching a model on first use)."""
    from ttscale.backends.gguf_info import read_model_info
    from ttscale.backends.models import resolve_model_path

    names = [model] if model else list(EMBEDDED_MODELS)
    t = Table(title="models (shapes from GGUF headers)")
    for col in ("name", "params", "layers", "heads", "kv heads", "head dim", "d_model", "ctx", "chat", "KV/token", "FLOPs/token@1k"):
        t.add_column(col)
    for name in names:
        i = read_model_info(resolve_model_path(name), name if name in EMBEDDED_MODELS else None)
        t.add_row(
            name, human(i.n_params), str(i.n_layers), str(i.n_heads), str(i.n_kv_heads), str(i.head_dim),
            str(i.d_model), str(i.n_ctx_train), "yes" if i.has_chat_template else "no",
            f"{i.kv_bytes(1) / 1024:.1f} KiB", human(i.flops_per_token(1024)),
        )
    console.print(t)
    for name in names:
        if name in EMBEDDED_MODELS:
            console.print(f"  {name}: {EMBEDDED_MODELS[name].description}")


@cli_errors
def tasks(
    bigbench: Annotated[Optional[str], typer.Option(
        help="Also list every BIG-bench task in this copy (the sdist or a checkout; '' for $TTSCALE_DOWNLOADS).",
        metavar="PATH")] = None,
) -> None:
    """List tasks, strategies, verifiers and backends (built-ins, then plugins from entry points)."""
    t = Table(title="tasks (--task NAME; its own options with -T key=value)")
    t.add_column("task")
    t.add_column("what")
    t.add_column("options")
    for name, task_spec in task_specs().items():
        task_fields = task_spec.options.model_fields.items() if task_spec.options is not None else ()
        t.add_row(name, task_spec.help, "\n".join(f"{n}: {f.description or ''}" for n, f in task_fields))
    console.print(t)
    s = Table(title="strategies (built in, then plugins from the ttscale.strategies entry points)")
    s.add_column("strategy")
    s.add_column("what")
    s.add_column("options")
    for spec in strategy_specs().values():
        opts = [f"{n}: {f.description or ''}" for n, f in spec.options.model_fields.items()]
        if spec.verifier != "none":
            opts.append(f"verifier ({spec.verifier})")
        s.add_row(spec.name, spec.help, "\n".join(opts))
    console.print(s)
    vt = Table(title="verifiers")
    vt.add_column("verifier")
    vt.add_column("what")
    for k, v in VERIFIER_HELP.items():
        vt.add_row(k, v)
    console.print(vt)
    bt = Table(title="backends (--backend NAME, options with -B key=value; the library takes them in make_backend(NAME, model, **options))")
    bt.add_column("backend")
    bt.add_column("what")
    bt.add_column("options")
    for kind in backend_kinds().values():
        fields = kind.options.model_fields.items() if kind.options is not None else ()
        bt.add_row(kind.name, kind.help, "\n".join(f"{n}: {f.description or ''}".rstrip(": ") for n, f in fields))
    console.print(bt)
    from ttscale.tasks.arithmetic import subtask_names

    console.print("arithmetic subtasks (--task arithmetic --subtask NAME): " + ", ".join(subtask_names()), soft_wrap=True)
    if bigbench is not None:
        from ttscale.tasks.bigbench import find_source

        names = find_source(bigbench or None).list_tasks()
        console.print(f"BIG-bench tasks ({len(names)}), use with --task bigbench --subtask NAME:")
        console.print(", ".join(names), soft_wrap=True)


@cli_errors
def speed(
    model: Annotated[str, typer.Argument(help="An embedded model name or a .gguf path.")] = "smollm2-135m",
    threads: Annotated[Optional[int], typer.Option(help="llama.cpp threads (default: every core).")] = None,
    expect: Annotated[Optional[str], typer.Option(
        help="LABEL=MINUTES@MS: a duration measured elsewhere at MS ms/token (one sequence); prints it scaled "
             "to this machine's speed, e.g. 'make demo=17.4@25.0'.")] = None,
) -> None:
    """Measure how fast the embedded engine decodes this model here (one sequence, and 8 of one prompt)."""
    from ttscale.backends.llama_engine import LlamaEngine
    from ttscale.backends.llama_timing import measure_decode_speed
    from ttscale.errors import ConfigError

    engine = LlamaEngine(model, n_ctx=2048, n_seq_max=8, n_threads=threads, prefix_slots=0)
    try:
        s = measure_decode_speed(engine)
    finally:
        engine.close()
    console.print(f"{model}: decode {s.ms_per_token_1:.1f} ms/token for one sequence, "
                  f"{s.ms_per_token_8:.1f} ms/token each for 8 sequences of one prompt (context 256)")
    if expect:
        label, _, rest = expect.rpartition("=")
        minutes, _, ms = rest.partition("@")
        try:
            est = s.scaled_minutes(float(minutes), float(ms))
        except ValueError:
            raise ConfigError(f"--expect takes LABEL=MINUTES@MS, not {expect!r}") from None
        console.print(f"{label or 'this job'}: about {est:.0f} min here ({float(minutes):g} min where one "
                      f"sequence decoded at {float(ms):g} ms/token)")
