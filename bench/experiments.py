"""Every registered experiment from the shipped pools, timed; and compute-vs-size's two figures.

1. ``ttscale experiment NAME`` for every name in :func:`ttscale.experiments.experiments`, each in its own
   process as a user runs it (interpreter start, loading the shipped store, the measurement, the page
   and its figures), into a temporary directory; target: under 2 minutes for all of them together.
   The shipped store is built (or found in the cache) once beforehand and that is timed apart.
2. ``compute_vs_size_small_wins_share``: over every task with both models' pools, the share of
   (oracle difficulty bin, FLOPs level) cells where the 0.5B with test-time compute (best of majority,
   best-of-n with a verifier, adaptive stopping within the level) beats the 1.5B at equal inference
   FLOPs per problem on point estimates (``..._predicted``: the same with the planner's predicted bins).
3. ``planner_two_model_gain``: held-out (cross-fitted) accuracy of the planner that may switch to the 1.5B
   after a 0.5B probe, minus the best fixed single-model choice within its mean FLOPs, averaged over
   budget levels (the 1.5B's FLOPs at 1, 2, 4 and 8 samples).

    python bench/experiments.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ttscale.experiments import experiments
from ttscale.experiments.compute_vs_size import EXPERIMENT, measure, oracle_win_share, planner_gain
from ttscale.experiments.matched_flops import win_share
from ttscale.pools import shipped_store
from ttscale.store import Store


def main() -> None:
    t0 = time.perf_counter()
    store_path = shipped_store()
    print(f"shipped store ready in {time.perf_counter() - t0:.1f} s ({store_path.name})")
    exe = Path(sys.executable).parent / "ttscale"
    total, failed = 0.0, []
    with tempfile.TemporaryDirectory() as out:
        for name in experiments():
            t = time.perf_counter()
            res = subprocess.run([str(exe), "experiment", name, "--output", out], capture_output=True, text=True)
            dt = time.perf_counter() - t
            total += dt
            status = "ok" if res.returncode == 0 else f"FAILED (exit {res.returncode})"
            if res.returncode:
                failed.append(name)
                print(res.stdout[-800:] + res.stderr[-800:])
            print(f"ttscale experiment {name}: {dt:.1f} s, {status}")
    print(f"all {len(experiments())} experiments: {total:.1f} s (target < 120 s)"
          + (f"; failed: {', '.join(failed)}" if failed else ""))

    st = Store(store_path)
    try:
        t = time.perf_counter()
        results, notes = measure(st, list(EXPERIMENT.default_pools))
        dt = time.perf_counter() - t
    finally:
        st.close()
    for r in results:
        print(f"{r.pair.task}: {r.pair.small.n_problems} shared problems ({r.pair.large_id} has "
              f"{r.pair.large_total} of {r.large_run_problems}); oracle cells "
              f"{sum(c.small_wins for c in r.cells['oracle'])}/{len(r.cells['oracle'])} small wins, predicted "
              f"{sum(c.small_wins for c in r.cells['predicted'])}/{len(r.cells['predicted'])}")
        for lv in r.plan.levels if r.plan else []:
            bf = lv.best_fixed
            print(f"  planner at {lv.budget / 1e3:.2f} TFLOPs: {lv.accuracy:.3f} at {lv.gflops / 1e3:.2f} vs best fixed "
                  + (f"{bf.label} {bf.accuracy:.3f}" if bf else "none") + f": gain {lv.gain:+.3f}")
    for n in notes:
        print(f"not measured: {n}")
    print(f"compute-vs-size measurement in-process: {dt:.1f} s")
    share = oracle_win_share(results)
    pred = win_share([c for r in results for c in r.cells["predicted"]])
    gain = planner_gain(results)
    print(f"bench: experiments_seconds = {total:.1f}")
    print(f"bench: compute_vs_size_small_wins_share = {share if share is None else round(share, 3)}")
    print(f"bench: compute_vs_size_small_wins_share_predicted = {pred if pred is None else round(pred, 3)}")
    print(f"bench: planner_two_model_gain = {gain if gain is None else round(gain, 3)}")


if __name__ == "__main__":
    main()
