"""`ttscale run` asks for token log-probs only when the strategy or verifier reads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ttscale.store import Store


def run(tmp_path: Path, *extra: str) -> list[object]:
    data = tmp_path / "q.jsonl"
    data.write_text('{"id": "a", "prompt": "What is 6 times 7?", "answer": "42"}\n')
    db = tmp_path / f"s{len(list(tmp_path.iterdir()))}.sqlite"
    cmd = [sys.executable, "-m", "ttscale", "run", "--backend", "fake", "--task", "jsonl", "--data", str(data),
           "--style", "completion", "--store", str(db), "--no-progress", "--run-id", "r", "-k", "3",
           "--output", str(tmp_path / "o.json"), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    st = Store(db)
    try:
        return [s.logprob for _, s in st.samples("r")]
    finally:
        st.close()


@pytest.mark.parametrize(("extra", "stored"), [
    (("--strategy", "self-consistency"), False),  # a majority vote never reads them
    (("--strategy", "self-consistency", "--logprobs"), True),
    (("--strategy", "best-of-n", "--verifier", "certainty"), True),  # the certainty verifier reads them
    (("--strategy", "best-of-n", "--verifier", "certainty", "--no-logprobs"), False),
])
def test_logprobs_follow_what_the_run_reads(tmp_path: Path, extra: tuple[str, ...], stored: bool) -> None:
    lps = run(tmp_path, *extra)
    assert lps and all((lp is not None) == stored for lp in lps)
