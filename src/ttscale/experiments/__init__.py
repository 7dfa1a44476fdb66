"""The field's headline experiments, reproduced from stored sample pools (``ttscale experiment NAME``).

Each experiment reads pools (the shipped ones by default), computes its measurement with the
replay estimators, and writes a page: the paper's claim and the measurement side by side, with a
plain verdict, confidence intervals, tables and PNG figures. Nothing is generated.

Registered: ``coverage`` (Large Language Monkeys) and ``imperfect-verifier`` (Inference Scaling
fLaws) on the HumanEval pool; ``compute-vs-size`` (Snell et al.), ``deepconf`` (Deep Think with
Confidence) and ``solve-or-verify`` (When To Solve, When To Verify) on the GSM8K pools;
``kv-precision`` (quantized KV caches: KIVI, transformers, llama.cpp) on the pools made at each
KV precision; ``kv-eviction`` (SnapKV, TOVA, StreamingLLM against precision, passages and samples) on
the pools of ``scripts/kv_eviction_pool.py``; ``rag-scaling`` (DRAG/IterDRAG) on the MuSiQue pools; ``speculative-reasoning`` (SpecReason) on
the runs of ``bench/speculative.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ttscale.experiments.page import Page
from ttscale.store import Store


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    default_pools: tuple[str, ...]
    run: Callable[[Store, list[str], Path], Page]


def experiments() -> dict[str, Experiment]:
    from ttscale.experiments.compute_vs_size import EXPERIMENT as compute_vs_size
    from ttscale.experiments.coverage import EXPERIMENT as coverage
    from ttscale.experiments.deepconf import EXPERIMENT as deepconf
    from ttscale.experiments.imperfect_verifier import EXPERIMENT as imperfect
    from ttscale.experiments.kv_eviction import EXPERIMENT as kv_eviction
    from ttscale.experiments.kv_precision import EXPERIMENT as kv_precision
    from ttscale.experiments.rag_scaling import EXPERIMENT as rag_scaling
    from ttscale.experiments.solve_or_verify import EXPERIMENT as solve_or_verify
    from ttscale.experiments.speculative import EXPERIMENT as speculative

    return {e.name: e for e in (coverage, imperfect, compute_vs_size, deepconf, solve_or_verify, kv_precision,
                                kv_eviction, rag_scaling, speculative)}
