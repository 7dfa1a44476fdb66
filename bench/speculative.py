"""Speculative reasoning (SpecReason) and prompt-lookup decoding on this CPU, measured.

Part ``runs`` (default): GSM8K (``gsm-symbolic``'s first ``--problems``), greedy, ``--max-tokens`` per answer,
through ``ttscale.run.execute`` into ``--store`` (one run id per configuration, so reruns resume):

- ``base``: Qwen2.5-Coder-1.5B alone, one sample (``single``);
- ``draft``: Qwen2.5-Coder-0.5B alone, one sample;
- ``spec-tX``: ``speculative-reasoning`` with the 0.5B drafting each step and the 1.5B scoring it (0-9, one
  prefill) and rewriting steps scored below X, for each X in ``--thresholds``.

Problems are solved one at a time until ``--time-limit`` seconds have passed (keep each ``model-job`` under
~10 minutes: run it again and it resumes). When every configuration is complete the report prints accuracy
with Wilson 95% intervals, wall time (the engine's own time for ``single``; the strategy's whole solve for
``spec``), the share of draft steps kept, where the time went (draft decode, base scoring prefill, base
rewrites), and ``bench: specreason_speedup = <1.5B-alone wall / strategy wall>`` at the fastest threshold
whose accuracy is inside the 1.5B's interval (or the best ratio, said so).

Part ``lookup-engine``: ttscale's embedded engine with prompt-lookup drafts (``LlamaCppBackend(prompt_lookup=
--pred-tokens, lookup_ngram=--ngram)``) against the same engine without, greedy, on revision prompts (the 1.5B's
stored first attempt shown, "revise it") and on plain GSM8K prompts; prints ``bench: prompt_lookup_decode_speedup``
(decode tok/s with / without, revision prompts) and ``..._gsm``, the drafted and kept tokens and identical outputs.

Part ``lookup``: llama-cpp-python's high-level ``Llama`` with ``LlamaPromptLookupDecoding`` as its draft vs
without, greedy, on revision prompts (the 1.5B's stored first attempt shown, "revise it") and on plain GSM8K
prompts; outputs are compared token for token. Prints the decode tok/s with / without as
``bench: prompt_lookup_decode_speedup_highlevel`` (and ``..._gsm``).

Part ``lookup-server``: the same prompts on ``llama-server`` (one slot, greedy) with and without its own n-gram
speculation (``--spec-type ngram-simple``, drafts copied from the context; ``--ngram`` tokens looked up,
``--pred-tokens`` drafted), timed by the server itself; prints ``bench: prompt_lookup_decode_speedup_server``
for revision prompts (and ``..._gsm`` for plain ones), drafted and accepted tokens, and identical outputs.

Run (each part resumable; chunks of at most ~10 minutes)::

    model-job .venv/bin/python bench/speculative.py --problems 20 --time-limit 540
    model-job .venv/bin/python bench/speculative.py --part lookup-engine --lookup-problems 10
    model-job .venv/bin/python bench/speculative.py --part lookup --lookup-problems 6
    model-job .venv/bin/python bench/speculative.py --part lookup-server --lookup-problems 10
    .venv/bin/python bench/speculative.py --part report      # no model: the figures from the store
    .venv/bin/python bench/speculative.py --part export      # ship the runs: src/ttscale/pools/speculative/
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ttscale.backends.llama_cpp import LlamaCppBackend
from ttscale.registry import make_task
from ttscale.run import execute
from ttscale.run.work import Solve
from ttscale.store import Store
from ttscale.strategies.revision import revision_request
from ttscale.strategies.single import Single
from ttscale.strategies.speculative import SpeculativeReasoning
from ttscale.types import Sampling

BASE, DRAFT = "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"


def configs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(label, run id) of every configuration, in the order they run."""
    tag = f"gsm{args.problems}-t{args.max_tokens}"
    out = [("base", f"spec-{tag}-base-{BASE}"), ("draft", f"spec-{tag}-draft-{DRAFT}")]
    for t in args.thresholds:
        out.append((f"spec-t{t:g}", f"spec-{tag}-st{args.step_tokens}-thr{t:g}"))
    return out


def run_part(args: argparse.Namespace) -> bool:
    """Solve what is left, one problem at a time, until the time limit; True when everything is done."""
    deadline = time.perf_counter() + args.time_limit
    store = Store(args.store)
    backends: dict[str, LlamaCppBackend] = {}

    def backend(name: str) -> LlamaCppBackend:
        if name not in backends:
            backends[name] = LlamaCppBackend(name, n_ctx=8192, n_seq_max=4, n_threads=args.threads)
        return backends[name]

    sampling = Sampling(temperature=0.0, seed=0, max_tokens=args.max_tokens, logprobs=False)
    tasks = {m: make_task("gsm-symbolic", model=m) for m in (BASE, DRAFT)}
    probs = tasks[BASE].problems(limit=args.problems)
    plan = configs(args)
    done = {rid: ({r["problem_id"] for r in store.results(rid)} if store.get_run(rid) else set()) for _, rid in plan}
    strategies: dict[str, Any] = {}
    try:
        # problem-major: every configuration on a problem before the next, so any prefix of the work is paired
        for p in probs:
            for label, rid in plan:
                if p.id in done[rid]:
                    continue
                if time.perf_counter() > deadline:
                    left = sum(len(probs) - len(d) for d in done.values())
                    print(f"time limit reached: rerun to resume ({left} problem-configurations left)", flush=True)
                    return False
                model = DRAFT if label == "draft" else BASE
                if label not in strategies:
                    strategies[label] = (
                        SpeculativeReasoning(threshold=float(label[len("spec-t"):]), draft=backend(DRAFT),
                                             step_tokens=args.step_tokens, max_steps=args.max_steps)
                        if label.startswith("spec") else Single())
                t0 = time.perf_counter()
                s = execute(Solve(tasks[model], strategies[label], sampling), store=store, run_id=rid,
                            backend=backend(model), problems=[p])
                r = s.results[0] if s.results else {}
                done[rid].add(p.id)
                print(f"  {p.id:12s} {label:10s} {'ok' if r.get('correct') else '--'} {r.get('answer')!r:>10.10} "
                      f"ref {p.reference:>8.8}  {time.perf_counter() - t0:6.1f} s", flush=True)
        return True
    finally:
        for b in backends.values():
            b.close()
        store.close()


def report(args: argparse.Namespace) -> None:
    """The figures over the problems every configuration has solved (the experiment page's computations)."""
    from ttscale.experiments.speculative import PHASES, read_config_run, versus, wilson

    store = Store(args.store)
    try:
        runs = {label: read_config_run(store, rid) for label, rid in configs(args)}
    finally:
        store.close()
    done = {label: r for label, r in runs.items() if r is not None}
    if "base" not in done:
        print("no run of the base model yet")
        return
    for label in runs.keys() - done.keys():
        print(f"{label}: not started")
    ids = sorted(set.intersection(*(set(r.correct) for r in done.values())))
    n = len(ids)
    if n < args.problems:
        print(f"\npartial: {n} of {args.problems} problems done by every started configuration; figures over those {n}")
    if n == 0:
        return
    base = done["base"]
    print(f"\nGSM8K (gsm-symbolic), {n} problems, greedy, max {args.max_tokens} tokens; base {BASE}, draft {DRAFT}; "
          f"store {args.store}")
    print(f"{'config':10s} {'acc':>6s} {'95% CI':>15s} {'- base':>7s} {'paired 95%':>17s} {'wall s':>8s} {'x base':>7s} "
          f"{'kept':>6s}  time split (draft / score / rewrite)")
    b_lo, b_hi = wilson(sum(base.correct[i] for i in ids), n)
    b_wall = sum(base.wall[i] for i in ids)
    matched: dict[str, float] = {}
    ratios: dict[str, tuple[float, float]] = {}
    for label, r in done.items():
        v = versus(r, base, ids)
        judged = r.accepted + r.rejected
        kept = f"{r.accepted / judged:.2f}" if judged else ""
        tot = sum(r.phase_wall.values())
        split = " / ".join(f"{r.phase_wall[p]:.0f} s ({r.phase_wall[p] / tot:.0%})" for p in PHASES) if tot else ""
        print(f"{label:10s} {v.accuracy:6.3f} ({v.acc_ci[0]:.3f}, {v.acc_ci[1]:.3f}) {v.diff:+7.3f} "
              f"({v.diff_ci[0]:+.3f}, {v.diff_ci[1]:+.3f}) {sum(r.wall[i] for i in ids):8.1f} {v.speedup:7.2f} "
              f"{kept:>6s}  {split}")
        if r.kind == "spec" and 0.0 < (r.threshold or 0.0) < 10.0:  # the base model in the loop
            ratios[label] = (v.speedup, v.accuracy)
            if b_lo <= v.accuracy <= b_hi:
                matched[label] = v.speedup
    print(f"base wall {b_wall:.1f} s; the 1.5B's 95% interval ({b_lo:.3f}, {b_hi:.3f})")
    if matched:
        best = max(matched, key=lambda lab: matched[lab])
        print(f"bench: specreason_speedup = {matched[best]:.2f}  ({best}: accuracy {ratios[best][1]:.3f} inside the "
              f"1.5B's 95% interval; {n} problems)")
    elif ratios:
        best = max(ratios, key=lambda lab: ratios[lab][0])
        print(f"bench: specreason_speedup = {ratios[best][0]:.2f}  (NOT at matched accuracy: no threshold's accuracy is "
              f"inside the 1.5B's interval; best ratio {best}, accuracy {ratios[best][1]:.3f}; {n} problems)")
    print("(thresholds 0 and 10 leave the base model out of the loop or the draft unused: they are the two ends of "
          "the curve, not the strategy's speed-up)")


# -- prompt lookup -----------------------------------------------------------------------------------

def lookup_prompts(args: argparse.Namespace) -> tuple[list[Any], dict[str, tuple[str, str | None]]]:
    """The GSM8K problems and, per problem, its prompt and its revision prompt (the 1.5B's stored first
    attempt shown, "revise it"; None when the attempt is not stored), rendered as the embedded engine
    renders them (its chat template)."""
    model = args.lookup_model
    task = make_task("gsm-symbolic", model=model)
    probs = task.problems(limit=args.lookup_problems)
    store = Store(args.store)
    first = {r["problem_id"]: r for r in store.results(configs(args)[0][1])} if store.get_run(configs(args)[0][1]) else {}
    texts = {}
    for pid, r in first.items():
        idx = r["samples"][0] if r["samples"] else None
        if idx is not None:
            texts[pid] = next((s.text for q, s in store.samples(configs(args)[0][1]) if q == pid and s.index == idx), None)
    store.close()
    renderer = LlamaCppBackend(model, n_ctx=256, n_seq_max=1, n_threads=args.threads)
    rendered: dict[str, tuple[str, str | None]] = {}
    for p in probs:
        base = task.request(p)
        prev = texts.get(p.id)
        rendered[p.id] = (renderer.render(base), renderer.render(revision_request(base, prev)) if prev else None)
    renderer.close()
    return probs, rendered


def lookup_part(args: argparse.Namespace) -> None:
    """Greedy decode with and without prompt-lookup drafting on the high-level API; resumable via a JSON file."""
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    from ttscale.backends.models import resolve_model_path

    out_path = Path(args.lookup_out)
    done: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    model = args.lookup_model
    path = str(resolve_model_path(model))
    probs, rendered = lookup_prompts(args)
    common = {"n_ctx": 4096, "n_threads": args.threads, "n_batch": 512, "verbose": False}
    plain = llama_cpp.Llama(path, **common)
    # logits_all=True explicitly: llama-cpp-python 0.3.36 sizes its logits buffer from the argument (n_batch rows
    # when False) although a draft model turns logits_all on, and overflows it past n_batch tokens
    looked = llama_cpp.Llama(path, logits_all=True, draft_model=LlamaPromptLookupDecoding(max_ngram_size=args.ngram,
                                                                         num_pred_tokens=args.pred_tokens), **common)
    deadline = time.perf_counter() + args.time_limit

    def timed(llm: Any, prompt: str) -> tuple[list[int], float, float]:
        """Greedy tokens, seconds to the first token (prefill), seconds for the rest (decode)."""
        llm.reset()
        toks = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        out: list[int] = []
        t0 = time.perf_counter()
        t_first = t0
        stop = {llm.token_eos(), *llm.tokenize(b"<|im_end|>", add_bos=False, special=True)[:1]}
        for tok in llm.generate(toks, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
            if not out:
                t_first = time.perf_counter()
            if tok in stop:
                break
            out.append(tok)
            if len(out) >= args.max_tokens:
                break
        return out, t_first - t0, time.perf_counter() - t_first

    for p in probs:
        gsm, rev = rendered[p.id]
        prompts = {"gsm": gsm} | ({"revision": rev} if rev is not None else {})
        for kind, prompt in prompts.items():
            key = f"{model}:{kind}:{p.id}"
            if key in done:
                continue
            if time.perf_counter() > deadline:
                out_path.write_text(json.dumps(done, indent=1))
                print("time limit reached: rerun to resume", flush=True)
                return
            a, a_pre, a_dec = timed(plain, prompt)
            b, b_pre, b_dec = timed(looked, prompt)
            done[key] = {"kind": kind, "tokens": len(a), "identical": a == b, "plain_prefill_s": a_pre,
                         "plain_decode_s": a_dec, "lookup_prefill_s": b_pre, "lookup_decode_s": b_dec,
                         "lookup_tokens": len(b)}
            print(f"  {kind:8s} {p.id:12s} {len(a):4d} tok  identical={a == b}  decode tok/s plain "
                  f"{(len(a) - 1) / max(a_dec, 1e-9):5.1f}  lookup {(len(b) - 1) / max(b_dec, 1e-9):5.1f}  "
                  f"prefill {a_pre:.2f} s / {b_pre:.2f} s", flush=True)
            out_path.write_text(json.dumps(done, indent=1))
    plain.close()
    looked.close()
    lookup_report(done)


def lookup_report(done: dict[str, Any]) -> None:
    for kind in ("revision", "gsm"):
        rows = [v for v in done.values() if v["kind"] == kind]
        if not rows:
            continue
        toks = sum(v["tokens"] - 1 for v in rows)
        plain = toks / sum(v["plain_decode_s"] for v in rows)
        looked = sum(v["lookup_tokens"] - 1 for v in rows) / sum(v["lookup_decode_s"] for v in rows)
        same = sum(v["identical"] for v in rows)
        pre = sum(v["lookup_prefill_s"] for v in rows) / max(sum(v["plain_prefill_s"] for v in rows), 1e-9)
        print(f"{kind}: {len(rows)} prompts, {toks} decoded tokens, greedy outputs identical {same}/{len(rows)}; "
              f"decode {plain:.1f} -> {looked:.1f} tok/s; prefill time with lookup x{pre:.2f} (logits for every "
              f"prompt token)")
        label = "prompt_lookup_decode_speedup_highlevel" + ("" if kind == "revision" else "_gsm")
        print(f"bench: {label} = {looked / plain:.2f}  ({kind} prompts)")


def lookup_engine_part(args: argparse.Namespace) -> None:
    """ttscale's embedded engine with prompt-lookup drafts (``prompt_lookup``) against the same engine without:
    greedy, one sample, the same prompts as ``lookup``; resumable via a JSON file."""
    from ttscale.types import GenerationRequest

    out_path = Path(args.lookup_engine_out)
    done: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    model = args.lookup_model
    probs, rendered = lookup_prompts(args)
    deadline = time.perf_counter() + args.time_limit
    engines = {mode: LlamaCppBackend(model, n_ctx=8192, n_seq_max=4, n_threads=args.threads, prompt_lookup=draft,
                                     lookup_ngram=args.ngram, lookup_min_ngram=args.min_ngram)
               for mode, draft in (("plain", 0), ("lookup", args.pred_tokens))}
    try:
        for p in probs:
            for kind, prompt in (("revision", rendered[p.id][1]), ("gsm", rendered[p.id][0])):
                key = f"{model}:{kind}:{p.id}:draft{args.pred_tokens}:n{args.min_ngram}-{args.ngram}"
                if prompt is None or key in done:
                    continue
                if time.perf_counter() > deadline:
                    print("time limit reached: rerun to resume", flush=True)
                    return
                req = GenerationRequest(prompt=prompt, temperature=0.0, max_tokens=args.max_tokens, seed=0)
                row: dict[str, Any] = {"kind": kind}
                for mode, engine in engines.items():
                    engine.forget_prefixes()  # both prefill in full
                    g = engine.generate([req])[0]
                    c = g.completions[0]
                    row[mode] = {"tokens": c.n_tokens, "decode_s": g.wall_s - g.prefill_s, "prefill_s": g.prefill_s,
                                 "drafted": g.drafted_tokens, "prefilled": g.prefilled_tokens, "text": c.text}
                a, b = row["plain"], row["lookup"]
                print(f"  {kind:8s} {p.id:12s} {a['tokens']:4d} tok  identical={a['text'] == b['text']}  decode tok/s "
                      f"{a['tokens'] / a['decode_s']:5.1f} -> {b['tokens'] / b['decode_s']:5.1f}  drafted {b['drafted']}, "
                      f"rejected {b['prefilled'] - a['prefilled']}", flush=True)
                done[key] = row
                out_path.write_text(json.dumps(done, indent=1))
    finally:
        for e in engines.values():
            e.close()
    lookup_engine_report(done, args)


def lookup_engine_report(done: dict[str, Any], args: argparse.Namespace) -> None:
    from ttscale.backends.gguf_info import read_model_info
    from ttscale.backends.models import resolve_model_path
    from ttscale.roofline import draft_step_speedup, load_profile

    tail = f":draft{args.pred_tokens}:n{args.min_ngram}-{args.ngram}"
    done = {k: v for k, v in done.items() if k.startswith(f"{args.lookup_model}:") and k.endswith(tail)}

    info = read_model_info(resolve_model_path(args.lookup_model), args.lookup_model)
    for kind in ("revision", "gsm"):
        rows = [v for v in done.values() if v["kind"] == kind]
        if not rows:
            continue
        plain = sum(r["plain"]["tokens"] for r in rows) / sum(r["plain"]["decode_s"] for r in rows)
        looked = sum(r["lookup"]["tokens"] for r in rows) / sum(r["lookup"]["decode_s"] for r in rows)
        drafted = sum(r["lookup"]["drafted"] for r in rows)
        rejected = sum(r["lookup"]["prefilled"] - r["plain"]["prefilled"] for r in rows)
        same = sum(r["plain"]["text"] == r["lookup"]["text"] for r in rows)
        print(f"embedded engine, {kind}: {len(rows)} prompts, {sum(r['plain']['tokens'] for r in rows)} tokens; decode "
              f"{plain:.1f} -> {looked:.1f} tok/s; drafted {drafted}, kept {drafted - rejected} "
              f"({(drafted - rejected) / max(drafted, 1):.0%}); greedy outputs identical {same}/{len(rows)}")
        kept = (drafted - rejected) / max(drafted, 1)
        predicted = "; ".join(f"{hw} x{draft_step_speedup(info, load_profile(hw), draft=args.pred_tokens, acceptance=kept):.2f}"
                              for hw in ("cpu-2core", "l4", "h100"))
        print(f"  roofline at that kept share (as a per-guess acceptance), {args.pred_tokens} drafted: {predicted}")
        label = "prompt_lookup_decode_speedup" + ("" if kind == "revision" else "_gsm")
        print(f"bench: {label} = {looked / plain:.2f}  ({kind} prompts, ttscale's embedded engine)")


def lookup_server_part(args: argparse.Namespace) -> None:
    """llama-server's own n-gram speculation (``--spec-type ngram-simple``: drafts copied from the context) against
    the same server without it: greedy, one slot, the same prompts as ``lookup``; resumable via a JSON file."""
    import httpx

    from ttscale.backends.llama_server import LlamaServer
    from ttscale.backends.models import resolve_model_path

    out_path = Path(args.lookup_server_out)
    done: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    model = args.lookup_model
    probs, rendered = lookup_prompts(args)
    spec = ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", str(args.ngram),
            "--spec-ngram-simple-size-m", str(args.pred_tokens)]
    deadline = time.perf_counter() + args.time_limit
    for mode, extra in (("plain", []), ("ngram", spec)):
        todo = [(p.id, kind, prompt) for p in probs
                for kind, prompt in (("gsm", rendered[p.id][0]), ("revision", rendered[p.id][1])) if prompt is not None
                if f"{model}:{mode}:{kind}:{p.id}" not in done]
        if not todo:
            continue
        with LlamaServer(resolve_model_path(model), parallel=1, ctx_per_slot=4096, threads=args.threads,
                         extra_args=extra) as srv:
            root = srv.base_url[: -len("/v1")]
            for pid, kind, prompt in todo:
                if time.perf_counter() > deadline:
                    out_path.write_text(json.dumps(done, indent=1))
                    print("time limit reached: rerun to resume", flush=True)
                    return
                r = httpx.post(f"{root}/completion", timeout=600, json={
                    "prompt": prompt, "n_predict": args.max_tokens, "temperature": 0.0, "top_k": 1,
                    "cache_prompt": False, "stop": ["<|im_end|>", "<|endoftext|>"]}).json()
                t = r["timings"]
                done[f"{model}:{mode}:{kind}:{pid}"] = {
                    "kind": kind, "mode": mode, "tokens": int(t["predicted_n"]), "decode_s": t["predicted_ms"] / 1e3,
                    "prefill_s": t["prompt_ms"] / 1e3, "draft_n": int(t.get("draft_n", 0)),
                    "draft_accepted": int(t.get("draft_n_accepted", 0)), "text": r["content"]}
                print(f"  {mode:6s} {kind:8s} {pid:12s} {t['predicted_n']:4d} tok  {t['predicted_per_second']:5.1f} tok/s"
                      f"  drafted {t.get('draft_n', 0)} accepted {t.get('draft_n_accepted', 0)}", flush=True)
                out_path.write_text(json.dumps(done, indent=1))
    lookup_server_report(done)


def lookup_server_report(done: dict[str, Any]) -> None:
    for kind in ("revision", "gsm"):
        pairs = [(v, done.get(k.replace(":plain:", ":ngram:"))) for k, v in done.items()
                 if v["kind"] == kind and v["mode"] == "plain"]
        pairs = [(a, b) for a, b in pairs if b is not None]
        if not pairs:
            continue
        plain = sum(a["tokens"] for a, _ in pairs) / sum(a["decode_s"] for a, _ in pairs)
        looked = sum(b["tokens"] for _, b in pairs) / sum(b["decode_s"] for _, b in pairs)
        same = sum(a["text"] == b["text"] for a, b in pairs)
        drafted = sum(b["draft_n"] for _, b in pairs)
        accepted = sum(b["draft_accepted"] for _, b in pairs)
        print(f"llama-server, {kind}: {len(pairs)} prompts, {sum(a['tokens'] for a, _ in pairs)} tokens; decode "
              f"{plain:.1f} -> {looked:.1f} tok/s; drafted {drafted}, accepted {accepted} "
              f"({accepted / max(drafted, 1):.0%}); greedy outputs identical {same}/{len(pairs)}")
        label = "prompt_lookup_decode_speedup_server" + ("" if kind == "revision" else "_gsm")
        print(f"bench: {label} = {looked / plain:.2f}  ({kind} prompts, llama-server --spec-type ngram-simple)")


def roofline_part() -> None:
    """What verifying k drafted tokens in one step costs against one decode step, on this CPU's fitted
    profile and on an assumed GPU (the roofline of :mod:`ttscale.roofline`): speculation pays when a
    verification step of k+1 tokens costs about one decode step, i.e. where decode is memory-bound."""
    from ttscale.backends.gguf_info import read_model_info
    from ttscale.backends.models import resolve_model_path
    from ttscale.roofline import load_profile, prefill_seconds, step_seconds

    for model in (BASE, DRAFT):
        info = read_model_info(resolve_model_path(model), model)
        for hw_name in ("cpu-2core", "h100"):
            hw = load_profile(hw_name)
            one = step_seconds(info, hw, sequences=1, new_tokens=1, context=400)
            cells = "  ".join(f"k={k}: x{step_seconds(info, hw, sequences=1, new_tokens=k, context=400) / one:.2f}"
                              for k in (2, 4, 8, 11))
            score = prefill_seconds(info, hw, 150, context=400) / one
            print(f"{model:20s} {hw_name:10s} decode step {one * 1e3:6.1f} ms; a step of k tokens costs {cells}; "
                  f"a 150-token scoring prefill = {score:.1f} decode steps")


def export_part(args: argparse.Namespace) -> None:
    """Each configuration's run as a pool file (``ttscale experiment speculative-reasoning`` reads them)."""
    from ttscale.replay.pool_file import export_run

    store = Store(args.store)
    command = (f"model-job .venv/bin/python bench/speculative.py --problems {args.problems} --max-tokens {args.max_tokens} "
               f"--thresholds {','.join(f'{t:g}' for t in args.thresholds)} --step-tokens {args.step_tokens} "
               f"--max-steps {args.max_steps} --threads {args.threads}")
    try:
        for label, rid in configs(args):
            if store.get_run(rid) is None:
                print(f"{label}: no run {rid} in {args.store}")
                continue
            info = export_run(store, rid, Path(args.export_dir) / f"{rid}.jsonl.gz", command=command)
            print(f"{label}: {info.path} ({info.problems} problems, {info.samples} samples)")
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("runs", "report", "lookup", "lookup-report", "lookup-engine", "lookup-engine-report", "lookup-server",
                                       "lookup-server-report", "roofline", "export"),
                    default="runs")
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--thresholds", type=lambda s: [float(x) for x in s.split(",")], default=[5.0, 0.0, 10.0, 5.5])
    ap.add_argument("--step-tokens", type=int, default=128)
    ap.add_argument("--max-steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--store", default="runs/speculative.sqlite")
    ap.add_argument("--time-limit", type=float, default=540.0, help="seconds of solving per invocation")
    ap.add_argument("--lookup-problems", type=int, default=6)
    ap.add_argument("--lookup-model", default=BASE)
    ap.add_argument("--lookup-out", default="runs/speculative-lookup.json")
    ap.add_argument("--lookup-engine-out", default="runs/speculative-lookup-engine.json")
    ap.add_argument("--lookup-server-out", default="runs/speculative-lookup-server.json")
    ap.add_argument("--ngram", type=int, default=3)
    ap.add_argument("--min-ngram", type=int, default=2, help="lookup-engine: the shortest suffix that may give a draft")
    ap.add_argument("--pred-tokens", type=int, default=10)
    ap.add_argument("--export-dir", default="src/ttscale/pools/speculative",
                    help="--part export: where each configuration's run goes as <run id>.jsonl.gz")
    args = ap.parse_args()
    if args.part == "runs":
        if run_part(args):
            report(args)
    elif args.part == "report":
        report(args)
    elif args.part == "lookup":
        lookup_part(args)
    elif args.part == "roofline":
        roofline_part()
    elif args.part == "lookup-engine":
        lookup_engine_part(args)
    elif args.part == "lookup-engine-report":
        lookup_engine_report(json.loads(Path(args.lookup_engine_out).read_text()), args)
    elif args.part == "lookup-server":
        lookup_server_part(args)
    elif args.part == "lookup-server-report":
        lookup_server_report(json.loads(Path(args.lookup_server_out).read_text()))
    elif args.part == "export":
        export_part(args)
    else:
        lookup_report(json.loads(Path(args.lookup_out).read_text()))


if __name__ == "__main__":
    main()
