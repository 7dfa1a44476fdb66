"""``ttscale serve``: an OpenAI-compatible server whose every answer comes from a test-time strategy."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ttscale.backends.kv_sizing import DEFAULT_N_CTX
from ttscale.backends.spec import EngineArgs
from ttscale.cli.bundle import TaskChoice
from ttscale.cli.common import cli_errors, err_console, fail
from ttscale.cli.options import (
    BackendOptionOpt,
    DataOpt,
    KvCompressionOpt,
    KvPressOpt,
    KvTypeOpt,
    KvTypeVOpt,
    ShotsOpt,
    TaskOptionOpt,
    parse_pairs,
)
from ttscale.cli.remote_opts import check_kv_engine, kv_capped_engine
from ttscale.registry import backend_kinds, strategy_names, strategy_spec
from ttscale.roofline import load_profile
from ttscale.server.config import server_verifiers
from ttscale.server.processes import listening_socket, serve_processes
from ttscale.types import Problem

if TYPE_CHECKING:
    from ttscale.planner.policy import Policy


@cli_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to bind. Non-loopback addresses need --api-key or --allow-unauthenticated-remote.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    model: Annotated[str, typer.Option(help="Embedded model name (smollm2-135m, gemma3-270m) or path to a .gguf file.")] = "smollm2-135m",
    model_name: Annotated[Optional[str], typer.Option(help="Model id clients send (default: the model's name).")] = None,
    backend: Annotated[str, typer.Option(help="Engine: llama-cpp (embedded, default), openai (an OpenAI-compatible server, needs --base-url), vllm, or fake (scripted: try the API without a model).")] = "llama-cpp",
    base_url: Annotated[Optional[str], typer.Option(help="openai backend: the engine's URL, e.g. http://127.0.0.1:8080/v1.")] = None,
    backend_api_key: Annotated[Optional[str], typer.Option(envvar="OPENAI_API_KEY", help="openai backend: the engine's API key (default: $OPENAI_API_KEY).", show_default=False)] = None,
    concurrency: Annotated[int, typer.Option(help="openai backend: HTTP requests in flight to the engine.", min=1)] = 8,
    backend_option: BackendOptionOpt = None,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help=f"Default strategy: {', '.join(strategy_names())}.")] = "self-consistency",
    k: Annotated[int, typer.Option("-k", "--k", help="Default samples for voting / best-of-n.", min=1)] = 4,
    verifier: Annotated[str, typer.Option(help=f"Default verifier for strategies that take one: {', '.join(server_verifiers())}.")] = "certainty",
    budget_tokens: Annotated[Optional[int], typer.Option(help="Default cap on processed tokens per request (prefilled + generated).", min=1)] = None,
    max_budget_tokens: Annotated[int, typer.Option(help="Largest token budget a request may ask for.", min=1)] = 1_000_000,
    hardware: Annotated[Optional[str], typer.Option(help="Hardware profile that requests' ttscale.budget.seconds / ttscale.budget.usd are priced on (h100, a100, l4, cpu-2core, or a TOML from `ttscale calibrate`): each call's roofline from its exact tokens. Without it such budgets get a 400.")] = None,
    max_kv_bytes: Annotated[Optional[int], typer.Option(help="Server-wide hard cap on KV-cache bytes in use at once (at --kv-type's real size): every request's default and ceiling (ttscale.budget.kv_bytes may ask for less), each backend call's batch packed to fit it, and the embedded engine's n_ctx / n_seq_max sized to it.", min=1)] = None,
    kv_type: KvTypeOpt = "f16",
    kv_type_v: KvTypeVOpt = None,
    kv_press: KvPressOpt = None,
    kv_compression: KvCompressionOpt = 0.0,
    max_k: Annotated[int, typer.Option(help="Largest k a request may ask for.", min=1)] = 64,
    max_n: Annotated[int, typer.Option(help="Largest n (returned choices) per request.", min=1)] = 8,
    max_tokens: Annotated[int, typer.Option(help="Default max_tokens per sample.", min=1)] = 256,
    max_max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.", min=1)] = 4096,
    temperature: Annotated[float, typer.Option(help="Sampling temperature when a request sends none.", min=0.0)] = 0.8,
    max_concurrency: Annotated[int, typer.Option(help="Strategy runs executing at once.", min=1)] = 64,
    max_queue: Annotated[int, typer.Option(help="Requests that may wait beyond --max-concurrency; more get 429.", min=0)] = 256,
    workers: Annotated[int, typer.Option(help="Server processes accepting on the port (each with its own --max-concurrency and --max-queue; /metrics sums them). One process uses about one core: a proxy in front of a remote engine (openai, or fake) answers more requests per second with one per core. Not for in-process engines (llama-cpp, transformers, vllm), which would load the model once per process.", min=1)] = 1,
    timeout: Annotated[float, typer.Option(help="Per-request timeout in seconds (504 after it).", min=0.001)] = 600.0,
    batch_window_ms: Annotated[float, typer.Option(help="Longest wait to batch concurrent requests' generations (ms).", min=0.0)] = 20.0,
    batch_min_wait_ms: Annotated[Optional[float], typer.Option(help="Shortest wait before each backend call (ms); default 10 for llama-cpp (its calls batch), 0 otherwise.", min=0.0)] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest accepted request body.", min=1)] = 1_000_000,
    api_key: Annotated[Optional[str], typer.Option(envvar="TTSCALE_API_KEY", help="Require 'Authorization: Bearer <key>' (env TTSCALE_API_KEY).", show_default=False)] = None,
    allow_unauthenticated_remote: Annotated[bool, typer.Option(help="Allow a non-loopback --host without --api-key.")] = False,
    graceful_timeout: Annotated[int, typer.Option(help="Seconds in-flight requests get to finish on shutdown.", min=0)] = 30,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for llama.cpp (default: all cores).", min=1)] = None,
    n_ctx: Annotated[Optional[int], typer.Option(help="llama.cpp context size (KV cells shared by all batched samples; default 16384, or what --max-kv-bytes buys).", min=64)] = None,
    n_seq_max: Annotated[int, typer.Option(help="llama.cpp parallel sequences (samples decoded together; at most what --max-kv-bytes holds).", min=1)] = 64,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    policy: Annotated[Optional[Path], typer.Option(
        help="A fitted plan (ttscale plan --out FILE): requests that name no strategy are answered by it, each "
             "prompt by its probe, difficulty bin and choice at the level its budget buys (ttscale.budget.tokens; "
             "the richest level without one); the response's ttscale.choices[].policy says why. At a level where "
             "`ttscale plan` did not show the per-prompt policy better than the best fixed choice for its budget, "
             "that fixed choice (rule and k) answers instead, unless --per-prompt.")] = None,
    task: Annotated[Optional[str], typer.Option(help="Answer each request as a problem of this task: its last user message is the question and the task makes the prompt, e.g. --task rag (DRAG: the question's top passages from the corpus, --shots demonstrations; strategy iterdrag for IterDRAG). Default: the request's own messages are the prompt.")] = None,
    task_data: DataOpt = None,
    task_option: TaskOptionOpt = None,
    shots: ShotsOpt = None,
    draft_model: Annotated[Optional[str], typer.Option(help="A small embedded model (name or .gguf path) opened once for strategies that draft with one (speculative-reasoning): requests share it, its generations batched apart from the base model's. Without it such strategies get a 400.")] = None,
    per_prompt: Annotated[bool, typer.Option("--per-prompt", help="With --policy: answer with the per-prompt policy at every level, even where the plan's comparison found it no better than the best fixed choice.")] = False,
) -> None:
    """Serve /v1/chat/completions and /v1/completions, each request answered by a test-time strategy.

    Choose per request with extra_body={"ttscale": {"strategy": ..., "k": ..., "budget": {"tokens": ...}}},
    a model prefix (model="sc8/<model>"), or X-Ttscale-Strategy / X-Ttscale-K / X-Ttscale-Budget-Tokens
    headers. usage counts every token spent; the response's ttscale object breaks it down.
    """
    try:
        import uvicorn

        from ttscale.server.app import create_app
        from ttscale.server.config import ServerConfig, check_bind
    except ImportError as e:
        fail(f"the server needs the 'server' extra: pip install 'ttscale[server]' ({e})")
    from ttscale.registry import make_backend

    check_bind(host, api_key, allow_unauthenticated_remote)
    fitted = None
    if policy is not None:
        from ttscale.planner.policy import Policy

        fitted = Policy.load(policy)
        fitted.follow_decisions = not per_prompt
        if fitted.models():
            fail(f"{policy} may switch to other models ({', '.join(fitted.models())}); the server serves one "
                 "model: fit the plan without --alt-pool")
    elif per_prompt:
        fail("--per-prompt needs --policy")
    if strategy not in strategy_names():
        fail(f"unknown strategy {strategy!r}; available: {', '.join(strategy_names())}")
    if strategy_spec(strategy).draft_option is not None and draft_model is None:
        fail(f"the default strategy {strategy} drafts with a second model: give --draft-model NAME")
    engine: dict[str, object] = {}
    if backend == "llama-cpp":  # the embedded engine's size: requests bring their own prompts
        engine = {"n_ctx": n_ctx or DEFAULT_N_CTX, "n_seq_max": n_seq_max}
        if max_kv_bytes is not None and n_ctx is not None:
            fail("give --max-kv-bytes or --n-ctx, not both: the cap decides the context")
    # the embedded engines under a cap (llama.cpp; transformers, a prompt per sample): each sample of a batch is
    # sized with the default max_tokens
    kv_fit = kv_capped_engine(backend, model, kv_type, max_kv_bytes, lambda _info: max_tokens, max_seqs=n_seq_max,
                              kv_type_v=kv_type_v, options=parse_pairs(backend_option, "--backend-option"))
    if kv_fit is not None:
        engine |= kv_fit.options()
        err_console.print(kv_fit.describe(), highlight=False)
    kinds = backend_kinds()
    if backend not in kinds:
        fail(f"unknown backend {backend!r}; available: {', '.join(sorted(kinds))}")
    # the backend's record turns these values into its options (for openai: the served cache's types,
    # so the meter and the server's cap count its bytes)
    args = EngineArgs(model=model, base_urls=(base_url,) if base_url else (), api_key=backend_api_key,
                      concurrency=concurrency, threads=threads, kv_type=kv_type, kv_type_v=kv_type_v,
                      kv_press=kv_press, kv_compression=kv_compression,
                      options=parse_pairs(backend_option, "--backend-option"), engine_options=engine)
    ((be_model, be_options),) = kinds[backend].endpoints(args)[:1]
    if workers > 1 and kinds[backend].in_process:
        fail(f"--workers {workers}: backend {backend} runs the model in this process, so each worker would load "
             "its own copy and compete for the same cores; use --workers with a remote engine (--backend openai)")
    if workers > 1 and draft_model is not None:
        fail("--workers and --draft-model: the draft model is embedded, one copy per worker process; run it "
             "behind its own server instead")

    if task is None and (task_data or task_option or shots is not None):
        fail("--task-data, --task-option and --shots describe a served task: give --task")

    def start(sock: socket.socket | None, metrics_dir: str | None, index: int) -> None:
        """Build this process's backend and app, and serve until SIGTERM/SIGINT (on ``sock`` if given)."""
        be = make_backend(backend, be_model, **be_options)
        draft_be = None
        try:
            if draft_model is not None:
                draft_be = make_backend("llama-cpp", draft_model, n_ctx=DEFAULT_N_CTX, n_seq_max=n_seq_max,
                                        **({"n_threads": threads} if threads else {}))
            check_kv_engine(kv_fit, be)
            served = None
            if task is not None:
                served = TaskChoice(task=task, data=task_data, task_option=task_option, shots=shots).build(be.model_info())
                served.request(Problem("warm-up", "warm-up"))  # retrieval index and demonstrations built before serving
            config = ServerConfig(
                backend=be, model_name=model_name, strategy=strategy, k=k, verifier=verifier, budget_tokens=budget_tokens,
                max_budget_tokens=max_budget_tokens, max_kv_bytes=max_kv_bytes, max_k=max_k, max_n=max_n,
                temperature=temperature,
                default_max_tokens=max_tokens, max_max_tokens=max_max_tokens, max_concurrency=max_concurrency,
                max_queue=max_queue, timeout_s=timeout, batch_window_ms=batch_window_ms, api_key=api_key,
                batch_min_wait_ms=batch_min_wait_ms if batch_min_wait_ms is not None else (10.0 if backend == "llama-cpp" else 0.0),
                max_body_bytes=max_body_bytes, policy=fitted, hardware=load_profile(hardware) if hardware else None,
                draft_backend=draft_be, task=served, metrics_dir=metrics_dir,
            )
            app = create_app(config)
            logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
            auth = "Bearer key required" if api_key else "no auth"
            default = (f"default: the plan in {policy} ({len(fitted.levels)} budget levels, fitted on "
                       f"{fitted.primary_model})" if fitted is not None
                       else f"default strategy {strategy}" + (f" k={k}" if "k" in _knobs(strategy) else ""))
            if index == 0:
                procs = f", {workers} worker processes" if workers > 1 else ""
                err_console.print(f"serving {config.served_model} on http://{host}:{port}/v1 ({auth}{procs}); {default}")
                if fitted is not None:
                    err_console.print(serving_summary(fitted), highlight=False)
                if fitted is not None and fitted.primary_model not in (config.served_model, model):
                    err_console.print(f"note: the plan was fitted on {fitted.primary_model}, this server runs "
                                      f"{config.served_model}")
            settings: dict[str, Any] = {"log_level": log_level, "timeout_graceful_shutdown": graceful_timeout,
                                        "limit_concurrency": max_concurrency + max_queue + 64, "server_header": False}
            if sock is None:
                uvicorn.run(app, host=host, port=port, **settings)
            else:  # a worker process: accept from the supervisor's socket
                uvicorn.Server(uvicorn.Config(app, **settings)).run(sockets=[sock])
        finally:
            be.close()
            if draft_be is not None:
                draft_be.close()

    if workers == 1:
        start(None, None, 0)
        return
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        sock = listening_socket(host, port)
    except OSError as e:
        fail(str(e))

    def worker(sock: socket.socket, metrics_dir: str, index: int) -> None:
        try:  # a worker's errors read as the single process's do, then end that process
            cli_errors(start)(sock, metrics_dir, index)
        except typer.Exit as e:
            raise SystemExit(e.exit_code) from None

    code = serve_processes(workers, sock, worker)
    if code:
        raise typer.Exit(code)


def serving_summary(policy: Policy) -> str:
    """One line: what each level of the plan answers with (per-prompt policy, or its best fixed choice)."""
    parts = []
    for lv in policy.levels:
        fixed = lv.serves_fixed and policy.follow_decisions
        parts.append(f"{lv.budget:g} tok -> {lv.fixed.label if fixed and lv.fixed else 'per-prompt policy'}")
    undecided = all(lv.fixed is None for lv in policy.levels)
    note = (" (the plan records no comparison with fixed choices: refit with `ttscale plan` to get one)" if undecided
            else " (--per-prompt)" if not policy.follow_decisions else
            " (fixed where `ttscale plan` did not show the policy better; --per-prompt to override)")
    return "plan levels: " + "; ".join(parts) + note


def _knobs(strategy: str) -> tuple[str, ...]:
    from ttscale.registry import strategy_knobs

    return strategy_knobs(strategy)
