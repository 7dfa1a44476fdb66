"""Verifier-guided search vs voting at two token budgets, and the prefix-reuse saving of step-level generation.

Workloads (embedded SmolLM2-135M-Instruct in chat, chain of thought):
  - arithmetic 1_digit_multiplication (BIG-bench's subtask, generated in-process), "solve step by step" instruction;
  - optionally generated GSM-Symbolic instances (--gsm N; each sample is ~200 tokens, so on a
    shared 2-core CPU the default is 0: say so when reporting).
Strategies, each under a hard per-problem token budget (prefilled + generated, judge included):
  majority voting, weighted best-of-N with the LLM judge, beam search (judge as PRM),
  particle filtering (judge as PRM), adaptive consistency.
The judge is the same model asked "Is the solution (so far) above correct?", score = P(Yes).

Prefix reuse: every step-level expansion reports the tokens the engine prefilled (holder
prefix + each distinct partial's suffix once) and the full prompt lengths of its requests
(what an engine without prefix reuse would prefill). Both are summed over the same searches;
the last line is ``bench: prefill_saving = <without / with>``.

    python bench/search.py [--problems 4] [--gsm 0] [--budgets 400,800]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from ttscale.backends.llama_cpp import LlamaCppBackend
from ttscale.cost import Budget, Meter
from ttscale.registry import make_task
from ttscale.strategies.base import SolveContext, Strategy
from ttscale.strategies.beam import BeamSearch
from ttscale.strategies.best_of_n import BestOfN
from ttscale.strategies.early_stop import AdaptiveConsistency
from ttscale.strategies.particle_filter import ParticleFilter
from ttscale.strategies.voting import SelfConsistency
from ttscale.tasks.base import Task
from ttscale.tasks.gsm_symbolic import DEFAULT_INSTRUCTION
from ttscale.types import Result, Sampling, Usage
from ttscale.verifiers.judge import JudgeVerifier


def bon_k(ctx_prompt: int, max_tokens: int, budget: int, cap: int) -> int:
    """Largest k whose sampling worst case plus the judge's worst case (one probe per sample) fits."""
    k = cap
    while k > 1 and ctx_prompt + k * max_tokens + k * (ctx_prompt + max_tokens + 40) > budget:
        k -= 1
    return k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=4, help="arithmetic problems")
    ap.add_argument("--gsm", type=int, default=0, help="generated GSM-Symbolic instances (task seed 1)")
    ap.add_argument("--budgets", default="400,800", help="token budgets per problem, comma-separated")
    ap.add_argument("--max-tokens", type=int, default=64, help="cap per whole sample (voting, BoN, adaptive)")
    ap.add_argument("--step-tokens", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--k", type=int, default=8, help="upper k for voting / BoN / adaptive (the budget clips it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]

    be = LlamaCppBackend(args.model, n_ctx=8192, n_seq_max=16, n_threads=args.threads)
    workloads: list[tuple[str, Task, int]] = [
        ("bb-mult-cot", make_task("arithmetic", style="chat", shots=0, instruction=DEFAULT_INSTRUCTION,
                                  max_tokens=args.max_tokens, chat_model=True), args.problems),
    ]
    if args.gsm:
        workloads.append(("gsm-symbolic", make_task("gsm-symbolic", seed=1, max_tokens=2 * args.max_tokens,
                                                    chat_model=True), args.gsm))
    sampling = Sampling(temperature=0.8, seed=args.seed)
    print(f"model={args.model} threads={args.threads} budgets={budgets} step_tokens={args.step_tokens} "
          f"max_steps={args.max_steps} (CPU shared with other jobs: wall times are noisy)")

    rows: list[dict[str, Any]] = []
    full_prompt = prefilled = 0
    judge_prompt = judge_prefilled = 0
    for wname, task, n in workloads:
        problems = task.problems(limit=n)
        judge = JudgeVerifier(be, task=task)
        p_tokens = be.count_prompt_tokens(task.request(problems[0]))
        mt = task.fmt.max_tokens
        for budget in budgets:
            k_bon = bon_k(p_tokens, mt, budget, args.k)
            strategies: list[tuple[str, Callable[[], Strategy]]] = [
                ("majority", lambda: SelfConsistency(k=args.k)),
                (f"weighted-BoN-judge (k<={k_bon})", lambda judge=judge, k_bon=k_bon: BestOfN(judge, k=k_bon, weighted=True)),
                ("beam-judge (N=4,M=2)", lambda judge=judge: BeamSearch(verifier=judge, k=4, beam_width=2,
                                                          step_tokens=args.step_tokens, max_steps=args.max_steps)),
                ("particle-filter-judge (N=4)", lambda judge=judge: ParticleFilter(verifier=judge, k=4, temperature=0.2,
                                                                    step_tokens=args.step_tokens,
                                                                    max_steps=args.max_steps)),
                ("adaptive-consistency (0.95, batch 4)", lambda: AdaptiveConsistency(k=args.k, batch=4, threshold=0.95)),
            ]
            for sname, make in strategies:
                strat = make()
                t0 = time.perf_counter()
                results: list[Result] = []
                usage = Usage()
                for prob in problems:
                    meter = Meter(be.model_info(), Budget(tokens=budget))
                    ctx = SolveContext(prob, be, task, meter, sampling)
                    r = strat.solve(prob, ctx)
                    assert meter.usage.total_tokens <= budget, (sname, meter.usage.total_tokens, budget)
                    results.append(r)
                    usage = usage + meter.usage
                    st = r.meta.get("step_stats")
                    if st:
                        full_prompt += st["full_prompt_tokens"]
                        prefilled += st["prefilled_tokens"]
                        vu = r.meta.get("verifier_usage", {})
                        judge_prompt += int(vu.get("prompt_tokens", 0))
                        judge_prefilled += int(vu.get("prefilled_tokens", 0))
                wall = time.perf_counter() - t0
                acc = sum(bool(r.correct) for r in results) / len(results)
                row = {"workload": wname, "budget": budget, "strategy": sname, "acc": acc,
                       "tokens": usage.total_tokens / len(results), "generated": usage.generated_tokens / len(results),
                       "wall": wall / len(results)}
                rows.append(row)
                print(f"  {wname:13s} B={budget:5d} {sname:30s} acc={acc:.2f} tokens/problem={row['tokens']:7.1f} "
                      f"generated={row['generated']:6.1f} wall/problem={row['wall']:5.1f}s", flush=True)

    print("\n| workload | budget (tokens/problem) | strategy | accuracy | tokens/problem | generated/problem |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['budget']} | {r['strategy']} | {r['acc']:.2f} | {r['tokens']:.0f} | "
              f"{r['generated']:.0f} |")
    print(f"\nstep-level generation (beam + particle filter): prefilled {prefilled} tokens with reuse, "
          f"{full_prompt} without (full prompt of every request)")
    print(f"judge probes in those searches: prefilled {judge_prefilled} of {judge_prompt} prompt tokens")
    print(f"bench: prefill_saving = {full_prompt / max(prefilled, 1):.2f}")


if __name__ == "__main__":
    main()
