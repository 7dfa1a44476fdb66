"""Retrieval-augmented inference on the embedded engine: prefix reuse, retrieval speed, run throughput.

An m = 4 DRAG run (``--task rag``, MuSiQue, BM25, k passages per question) over ``--questions`` questions
with one sample each, through the same path as ``ttscale run`` (strategy, solve context, meter). The four
demonstrations are identical for every question, so after the first question the engine's holder
sequence already holds them: each later question prefills only its own passages and question.

Figures (one line each, ``bench: name = value``):

- ``rag_prefix_reuse_saving``: prefilled tokens without cross-question reuse divided by prefilled
  tokens with it. *Without* is the run's effective context length (every call's prompt in full, summed:
  what an engine with no prompt cache prefills, and the first question's own count shows the engine
  prefilling exactly that when nothing is cached); *with* is what the engine reported prefilling. With
  ``--measure-baseline`` the same questions run again with the engine's cached prefixes dropped before
  each one, and the measured prefill replaces the computed one (and prefill times are compared).
- ``rag_retrieval_qps``: BM25 queries per second over the 1,890-passage corpus, one query per call (as
  IterDRAG retrieves), over every question and gold sub-question of the set; the batched rate is printed
  beside it.
- ``rag_sweep_tokens_per_s``: (prefilled + generated tokens) / wall seconds of the run.

Run it through ``model-job`` on a shared machine::

    model-job .venv/bin/python bench/rag.py [--questions 8] [--docs 5] [--shots 4] [--model qwen2.5-coder-0.5b]
"""

from __future__ import annotations

import argparse
import time

from ttscale.backends.llama_cpp import LlamaCppBackend
from ttscale.cost import Meter
from ttscale.registry import make_task
from ttscale.strategies.base import SolveContext
from ttscale.strategies.single import Single
from ttscale.tasks.rag import RagTask
from ttscale.tasks.retrieval import BM25Retriever
from ttscale.types import Sampling


def retrieval_qps(task: RagTask, k: int, repeats: int) -> tuple[float, float, int]:
    """(one-query-per-call qps, batched qps, queries) over the questions and their gold sub-questions."""
    queries = [q.question for q in task.questions] + [sq for q in task.questions for sq, _ in q.decomposition]
    retriever = BM25Retriever(task.corpus)  # loaded from the cache: the index is built once per corpus
    retriever.retrieve(queries[:2], k)  # warm up
    t0 = time.perf_counter()
    for _ in range(repeats):
        for q in queries:
            retriever.retrieve([q], k)
    single = repeats * len(queries) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(repeats):
        retriever.retrieve(queries, k)
    batched = repeats * len(queries) / (time.perf_counter() - t0)
    return single, batched, len(queries)


def run(backend: LlamaCppBackend, task: RagTask, questions: int, max_tokens: int, forget: bool) -> dict[str, float]:
    """One DRAG run of ``questions`` questions, one after another as ``ttscale run`` solves them (a strategy,
    its solve context and the meter per problem); ``forget``: drop the engine's cached prefixes before each."""
    problems = task.problems(limit=questions)
    sampling = Sampling(seed=0, temperature=0.0, max_tokens=max_tokens, logprobs=False)
    info = backend.model_info()
    prompt = prefilled = generated = correct = 0
    first: tuple[int, int] | None = None
    t0 = time.perf_counter()
    for p in problems:
        if forget:
            backend.forget_prefixes()
        ctx = SolveContext(p, backend, task, Meter(info), sampling)
        result = Single().solve(p, ctx)
        u = result.usage
        first = first or (u.prompt_tokens, u.prefilled_tokens)
        prompt += u.prompt_tokens
        prefilled += u.prefilled_tokens
        generated += u.generated_tokens
        correct += bool(result.correct)
        print(f"  {p.id[:30]:30s} prompt {u.prompt_tokens:5d}  prefilled {u.prefilled_tokens:5d}  "
              f"generated {u.generated_tokens:3d}  {'EM' if result.correct else '--'}  {result.answer!r:.40}",
              flush=True)
    wall = time.perf_counter() - t0
    assert first is not None
    return {"prompt": prompt, "prefilled": prefilled, "generated": generated, "wall": wall, "correct": correct,
            "first_prompt": first[0], "first_prefilled": first[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--questions", type=int, default=8, help="evaluated questions (the saving grows with them)")
    ap.add_argument("--docs", type=int, default=5, help="passages per question and per demonstration (k)")
    ap.add_argument("--shots", type=int, default=4, help="demonstrations (m)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--qps-repeats", type=int, default=3)
    ap.add_argument("--measure-baseline", action="store_true",
                    help="also run the questions with cached prefixes dropped before each (about 4x the prefill)")
    args = ap.parse_args()

    task = make_task("rag", shots=args.shots, max_tokens=args.max_tokens, options={"docs": args.docs})
    assert isinstance(task, RagTask)
    single, batched, n_queries = retrieval_qps(task, args.docs, args.qps_repeats)
    print(f"retrieval: {n_queries} queries (questions and gold sub-questions) over {len(task.corpus)} passages, "
          f"k={args.docs}: {single:.0f} queries/s one per call, {batched:.0f} queries/s batched")

    backend = LlamaCppBackend(args.model, n_ctx=16384, n_seq_max=4, n_threads=args.threads)
    print(f"model={args.model} questions={args.questions} m={args.shots} k={args.docs} "
          f"max_tokens={args.max_tokens} (greedy, one sample per question)")
    try:
        print("DRAG with cross-question prefix reuse:")
        reuse = run(backend, task, args.questions, args.max_tokens, forget=False)
        without = None
        if args.measure_baseline:
            print("the same questions with cached prefixes dropped before each:")
            without = run(backend, task, args.questions, args.max_tokens, forget=True)
    finally:
        backend.close()

    print(f"effective context length (prompt tokens summed) {reuse['prompt']}, prefilled {reuse['prefilled']}, "
          f"generated {reuse['generated']} in {reuse['wall']:.1f} s, exact match {reuse['correct']}/{args.questions}; the first question prefilled "
          f"{reuse['first_prefilled']} of its {reuse['first_prompt']} prompt tokens (nothing cached yet)")
    baseline = reuse["prompt"]
    if without is not None:
        print(f"measured without reuse: prefilled {without['prefilled']} in {without['wall']:.1f} s "
              f"(computed: {reuse['prompt']}); wall time with/without reuse {reuse['wall']:.1f}/{without['wall']:.1f} s")
        baseline = without["prefilled"]
    print(f"bench: rag_prefix_reuse_saving = {baseline / max(reuse['prefilled'], 1):.2f}")
    print(f"bench: rag_retrieval_qps = {single:.0f}")
    print(f"bench: rag_sweep_tokens_per_s = {(reuse['prefilled'] + reuse['generated']) / reuse['wall']:.1f}")


if __name__ == "__main__":
    main()
