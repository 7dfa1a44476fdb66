"""How many more samples a KV cap holds when a press evicts prompt cells, at no resolved accuracy loss (issue 27).

Retrieval-augmented questions (MuSiQue from ``ttscale/data/rag``, BM25 top-``--docs`` passages, no
demonstrations) on Qwen2.5-Coder-0.5B in the transformers backend: one greedy answer per question with no
press, then with each press at each ratio (the same loaded model, ``with_press``). Token F1 and exact match per
question, and the paired bootstrap 95% interval (``--boot`` draws over questions) of each press's ``--metric``
(F1 by default: the 0.5B's exact match on these questions is near zero whatever the press) minus no press's: a
*resolved* loss is an interval wholly below zero.

The best press is the one that evicts the most (then the higher F1) among those without a resolved loss.
Samples in the cap are what the meter affords under ``--cap-mib`` for a prompt of the questions' mean length
and ``--max-tokens`` generated tokens each (each sample holds its own copy of the kept prompt cells, at f32,
``ModelInfo.wave_kv_cells``), with that press and without.

    model-job .venv/bin/python bench/kv_evict_cap.py [--questions 20] [--docs 5] [--presses snapkv,streaming_llm,knorm]
        [--ratios 0.5,0.75] [--max-tokens 24] [--cap-mib 64]

``--chains PREFIX`` reads the kv-eviction page's GSM8K chain pools of one model instead (``kvev-qwen15``: the
1.5B; shipped files, or ``--store``'s runs where they hold more), generates nothing and takes seconds: accuracy
is the majority vote of each configuration's 4 stored samples per problem (exact match of the final number),
each press evicting every sample's cache back to its cap of cells while the chain is written, judged by the
paired bootstrap interval over problems against the same engine without a press; samples in the cap are the
meter's for the chains' mean prompt and their 512-token limit (bfloat16 cells, a prompt copy per sample).

    .venv/bin/python bench/kv_evict_cap.py --chains kvev-qwen15 [--cap-mib 64]

Ends with ``bench: kv_evict_samples_in_cap = <samples with the best press / without>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from ttscale.backends.transformers_backend import TransformersBackend
from ttscale.cost import Budget, Meter
from ttscale.experiments.kv_eviction import (
    complete_runs,
    measure,
    paired,
    read_cache_run,
    reference,
    shipped_runs,
)
from ttscale.planner.kv_plan import split_cache
from ttscale.registry import make_task
from ttscale.store import Store
from ttscale.tasks.rag import RagTask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--docs", type=int, default=5)
    ap.add_argument("--presses", default="snapkv,streaming_llm,knorm")
    ap.add_argument("--ratios", default="0.5,0.75")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--cap-mib", type=float, default=64.0)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--metric", choices=("f1", "em"), default="f1", help="what a resolved loss is judged on")
    ap.add_argument("--chains", metavar="PREFIX", default=None,
                    help="replay the kv-eviction page's GSM8K chain pools of this prefix (e.g. kvev-qwen15) instead")
    ap.add_argument("--store", default="runs/kv-eviction.sqlite", help="--chains: the pools' store, if any")
    args = ap.parse_args()
    if args.chains:
        chains(args.chains, Path(args.store), int(args.cap_mib * 2**20), args.cap_mib)
        return

    task = make_task("rag", shots=0, max_tokens=args.max_tokens, options={"docs": args.docs}, chat_model=True)
    assert isinstance(task, RagTask)
    problems = task.problems(limit=args.questions)
    base = TransformersBackend(args.model, n_ctx=8192, n_seq_max=4, n_threads=args.threads)
    configs: list[tuple[str | None, float]] = [(None, 0.0)] + [
        (p, float(r)) for p in args.presses.split(",") for r in args.ratios.split(",")]
    em: dict[str, np.ndarray] = {}
    f1: dict[str, np.ndarray] = {}
    prompt_tokens: list[int] = []
    infos = {}
    for press, ratio in configs:
        be = base.with_press(press, ratio)
        label = "none" if press is None else f"{press}@{ratio:g}"
        infos[label] = be.model_info()
        hits, f1s, t0 = [], [], time.perf_counter()
        for p in problems:
            req = task.request(p).with_(temperature=0.0, max_tokens=args.max_tokens, seed=0, logprobs=False)
            gen = be.generate([req])[0]
            answer = task.extract(gen.completions[0].text)
            hits.append(bool(task.grade(p, answer)))
            f1s.append(task.grade_detail(p, answer)["f1"])
            if press is None:
                prompt_tokens.append(gen.prompt_tokens)
        em[label], f1[label] = np.array(hits, dtype=float), np.array(f1s, dtype=float)
        print(f"{label:24s} EM {em[label].mean():.3f}  F1 {f1[label].mean():.3f}  ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    base.close()

    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(problems), size=(args.boot, len(problems)))
    mean_prompt = round(statistics.fmean(prompt_tokens))
    cap = int(args.cap_mib * 2**20)

    def in_cap(label: str) -> int:
        return Meter(infos[label], Budget(kv_bytes=cap)).affordable_samples(mean_prompt, args.max_tokens, 10_000)

    print(f"\n{len(problems)} questions, mean prompt {mean_prompt} tokens, {args.max_tokens} generated; "
          f"cap {args.cap_mib:g} MiB at f32, a prompt copy per sample")
    metric = em if args.metric == "em" else f1
    print(f"{'press':24s} {'EM':>6s} {'F1':>6s} {args.metric.upper() + ' - none [95%]':>26s} {'samples in cap':>15s}")
    best: tuple[float, float, str] | None = None
    for press, ratio in configs:
        label = "none" if press is None else f"{press}@{ratio:g}"
        diff = metric[label] - metric["none"]
        lo, hi = np.percentile(diff[draws].mean(axis=1), [2.5, 97.5])
        resolved_loss = hi < 0
        print(f"{label:24s} {em[label].mean():6.3f} {f1[label].mean():6.3f} {diff.mean():+8.3f} [{lo:+.3f}, {hi:+.3f}]"
              f"{' loss' if resolved_loss else '     '} {in_cap(label):10d}")
        if press is not None and not resolved_loss and (best is None or (ratio, f1[label].mean()) > best[:2]):
            best = (ratio, float(f1[label].mean()), label)
    chosen = best[2] if best is not None else "none"
    ratio_in_cap = in_cap(chosen) / in_cap("none")
    print(f"best press without a resolved loss: {chosen} ({in_cap(chosen)} samples against {in_cap('none')})")
    print(f"bench: kv_evict_samples_in_cap = {ratio_in_cap:.2f}")


def chains(prefix: str, store_path: Path, cap: int, cap_mib: float) -> None:
    """The samples-in-cap ratio from the stored chain pools: which press loses no resolved accuracy, and how many
    samples the cap holds with it."""
    ids = [r for r in shipped_runs() if r.startswith(f"{prefix}-gsm8k-tf-")]
    store = Store(store_path if store_path.exists() else ":memory:")  # without a store: the shipped files
    try:
        ids += [r.run_id for r in store.list_runs() if r.run_id.startswith(f"{prefix}-gsm8k-tf-") and r.run_id not in ids]
        found = [run for rid in ids if (run := read_cache_run(store, rid)) is not None]
    finally:
        store.close()
    full = sorted((r for r in found if r.press is None), key=lambda r: -len(r.samples))
    if not full:
        raise SystemExit(f"no {prefix} chain pool without a press (scripts/kv_eviction_pool.py --workload chains)")
    # one precision (a float32 and a bfloat16 reference would both claim to be the reference), and a pool stopped
    # part-way is left out, as on the page
    precision = split_cache(full[0].cache)[0]
    runs, left = complete_runs([r for r in found if split_cache(r.cache)[0] == precision])
    rows, problems = measure(runs)
    ref = reference(rows, "transformers")
    assert ref is not None
    by_cache = {r.cache: r for r in runs}

    def in_cap(cache: str) -> int:
        run = by_cache[cache]
        prompt = round(statistics.fmean(x.effective for v in run.samples.values() for x in v))
        return Meter(run.info, Budget(kv_bytes=cap)).affordable_samples(prompt, run.max_gen, 10_000)

    print(f"{runs[0].info.name}: {len(problems)} GSM8K problems x 4 samples, cap {cap_mib:g} MiB"
          + (f"; left out (part-way): {', '.join(left)}" if left else ""))
    print(f"{'configuration':34s} {'accuracy':>8s} {'- none [95%]':>26s} {'samples in cap':>15s}")
    best: tuple[int, float, str] | None = None
    for row in sorted((r for r in rows if r.engine == "transformers" and r.lever in ("reference", "press")),
                      key=lambda r: r.cache):
        acc = float(row.score["em"].mean())
        if row is ref:
            print(f"{row.cache:34s} {acc:8.3f} {'':>26s} {in_cap(row.cache):15d}")
            continue
        d, lo, hi = paired(row.score["em"], ref.score["em"])
        loss = hi < 0
        print(f"{row.cache:34s} {acc:8.3f} {d:+8.3f} [{lo:+.3f}, {hi:+.3f}]{' loss' if loss else '     '}"
              f" {in_cap(row.cache):10d}")
        if not loss and (best is None or (in_cap(row.cache), acc) > best[:2]):
            best = (in_cap(row.cache), acc, row.cache)
    chosen = best[2] if best is not None else ref.cache
    print(f"best press without a resolved loss: {chosen} ({in_cap(chosen)} samples against {in_cap(ref.cache)})")
    base = float(ref.score["em"].mean())
    if base < 0.2:  # a press can lose at most what the reference solves
        print(f"read it for what it is: without a press the model solves {base:.3f} of these problems, so no press "
              f"can lose more, and with {len(problems)} problems an interval rarely resolves such a loss")
    print(f"bench: kv_evict_samples_in_cap = {in_cap(chosen) / in_cap(ref.cache):.2f}")


if __name__ == "__main__":
    main()
