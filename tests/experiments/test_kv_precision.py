"""kv-precision: pools of the same problems at several KV precisions, compared on the problems they share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from ttscale.backends.fake import FAKE_MODEL_INFO, FakeBackend
from ttscale.backends.kv_sizing import max_parallel_bytes, with_kv_types
from ttscale.cli import app
from ttscale.experiments.kv_precision import CAP_MIB, group, paired_delta
from ttscale.run import Sweep, execute
from ttscale.store import Store
from ttscale.tasks.jsonl import JsonlTask
from ttscale.types import PromptFormat, Sampling


def _store(tmp_path: Path) -> Path:
    data = tmp_path / "q.jsonl"
    data.write_text("".join(f'{{"id": "q{i}", "prompt": "Problem {i}", "answer": "42"}}\n' for i in range(30)))
    task = JsonlTask(path=str(data), fmt=PromptFormat(style="completion", max_tokens=16))
    st = Store(tmp_path / "s.sqlite")
    good = {"42": 0.5, "41": 0.3, "40": 0.2}
    spoiled = {"42": 0.1, "41": 0.5, "40": 0.4}  # a cache that spoils answers
    for kind, answers, n in (("f16", good, 30), ("q8_0", good, 20), ("q4_0", spoiled, 30)):
        be = FakeBackend(answers=answers, filler_tokens=2, info=with_kv_types(FAKE_MODEL_INFO, kind))
        execute(Sweep(task, 8, sampling=Sampling(seed=5)), store=st, run_id=f"pool-{kind}", backend=be, problems=task.problems()[:n])
    st.close()
    return tmp_path / "s.sqlite"


def test_precisions_are_compared_on_the_problems_all_of_them_hold(tmp_path: Path) -> None:
    store = _store(tmp_path)
    st = Store(store)
    (w,), missing = group(st, ["pool-f16", "pool-q8_0", "pool-q4_0", "absent"])
    st.close()
    assert list(w.precisions) == ["f16", "q8_0", "q4_0"]  # the precision each run's record names
    assert len(w.problems) == 20 and len(w.shared["q8_0"]) == 20 and len(w.shared["q4_0"]) == 30
    assert any("`absent`" in m for m in missing)
    assert w.precisions["q8_0"].info.kv_bytes(32) * 64 == w.precisions["f16"].info.kv_bytes(32) * 34


def test_the_page_says_which_precision_costs_accuracy_and_what_the_cap_holds(tmp_path: Path) -> None:
    store = _store(tmp_path)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["experiment", "kv-precision", "--store", str(store), "--output", str(out),
                                   "--pool", "pool-f16", "--pool", "pool-q8_0", "--pool", "pool-q4_0"])
    assert res.exit_code == 0, res.output
    page = (out / "kv-precision.md").read_text()
    assert "KIVI" in page and "| 20 x 8 |" in page and "| 30 x 8 |" in page
    # same seeds and the same answer distribution: q8_0's samples are f16's; q4_0's are spoiled
    assert "q8_0 +0.000 [0.000, 0.000] against f16's" in page and "on 20 problems: no difference resolved" in page
    assert "q4_0 -" in page and "worse than f16" in page
    assert "**q8_0 nearly lossless** (llama.cpp users): holds" in page and "harmful on some models** (llama.cpp users): holds" in page
    st = Store(store)
    (w,), _ = group(st, ["pool-f16", "pool-q8_0", "pool-q4_0"])
    st.close()
    prompt = max(p.longest_prompt for p in w.precisions.values())
    fits = {t: max_parallel_bytes(p.info, CAP_MIB * 2**20, prompt, 16, shared_prompt=False)
            for t, p in w.precisions.items()}
    assert fits["f16"] < fits["q8_0"] < fits["q4_0"]
    for t, n in fits.items():
        assert f"| {t} | " in page and f"| {prompt} + 16 | {n} |" in page
    assert (out / "kv-precision.png").read_bytes()[:4] == b"\x89PNG"


def test_a_store_without_a_second_precision_is_an_error_that_says_so(tmp_path: Path) -> None:
    store = _store(tmp_path)
    res = CliRunner().invoke(app, ["experiment", "kv-precision", "--store", str(store), "--output", str(tmp_path),
                                   "--pool", "pool-f16"])
    assert res.exit_code != 0 and "needs an f16 pool and another precision" in res.output


def test_paired_delta_resamples_problems_together() -> None:
    a = np.array([1.0, 0.0, 1.0, 1.0])
    d, lo, hi = paired_delta(a, a - 0.25)
    assert d == 0.25 and lo == hi == 0.25  # a constant per-problem difference has no spread
