"""Pool files: a stored sweep written to one checksummed gzip file and read back exactly; damage is reported."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.backends.fake import FakeBackend
from ttscale.errors import StoreError
from ttscale.registry import make_task
from ttscale.replay.pool_file import export_run, import_pool_file, read_pool_file
from ttscale.run import Sweep, execute
from ttscale.store import Store
from ttscale.types import Sampling


@pytest.fixture
def swept(tmp_path: Path) -> Store:
    data = tmp_path / "q.jsonl"
    data.write_text("\n".join(f'{{"id": "p{i}", "prompt": "q{i}", "answer": "{i % 3}"}}' for i in range(5)) + "\n")
    store = Store(tmp_path / "src.sqlite")
    execute(Sweep(make_task("jsonl", data=str(data)), 6, sampling=Sampling(seed=2)), store=store, run_id="pool", backend=FakeBackend(answers={"0": 0.5, "1": 0.3, "2": 0.2}))
    return store


def test_round_trip_keeps_what_replay_needs(swept: Store, tmp_path: Path) -> None:
    info = export_run(swept, "pool", tmp_path / "pool.jsonl.gz", command="ttscale sweep ...")
    assert (info.problems, info.samples) == (5, 30)
    dest = Store(tmp_path / "dest.sqlite")
    assert import_pool_file(info.path, dest) == "pool"
    a, b = swept.samples("pool"), dest.samples("pool")
    assert [(p, s.answer, s.correct, s.n_tokens, s.prefilled_tokens, s.finish_order, s.wave, s.scores, s.logprob)
            for p, s in a] == [(p, s.answer, s.correct, s.n_tokens, s.prefilled_tokens, s.finish_order, s.wave,
                                s.scores, s.logprob) for p, s in b]
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert x.token_logprobs is not None and y.token_logprobs == pytest.approx(x.token_logprobs, abs=1e-4)
    assert dest.get_run("pool").config == swept.get_run("pool").config  # type: ignore[union-attr]
    assert import_pool_file(info.path, dest) == "pool"  # twice: a no-op
    assert dest.sample_count("pool") == 30


def test_a_reexported_pool_says_the_command_given_now(swept: Store, tmp_path: Path) -> None:
    first = export_run(swept, "pool", tmp_path / "a.jsonl.gz", command="ttscale sweep --limit 3").path
    dest = Store(tmp_path / "dest.sqlite")
    import_pool_file(first, dest)
    kept = export_run(dest, "pool", tmp_path / "b.jsonl.gz").path  # no command: the imported one
    assert read_pool_file(kept)[0]["command"] == "ttscale sweep --limit 3"
    # extended since the import: the header and its notes both carry the new command
    header = read_pool_file(export_run(dest, "pool", tmp_path / "c.jsonl.gz", command="ttscale sweep --limit 5").path)[0]
    assert header["command"] == header["notes"]["command"] == "ttscale sweep --limit 5"


def test_exporting_an_unchanged_pool_again_writes_the_same_bytes(swept: Store, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    a = export_run(swept, "pool", tmp_path / "a" / "pool.jsonl.gz", command="ttscale sweep ...").path
    later = gzip.time.time() + 3600  # a gzip header would otherwise carry the time of writing
    monkeypatch.setattr(gzip.time, "time", lambda: later)
    b = export_run(swept, "pool", tmp_path / "b" / "pool.jsonl.gz", command="ttscale sweep ...").path
    assert a.read_bytes() == b.read_bytes()
    c = export_run(swept, "pool", tmp_path / "c" / "pool.jsonl.gz", command="ttscale sweep --other").path
    assert c.read_bytes() != a.read_bytes()


def test_truncated_file_is_reported(swept: Store, tmp_path: Path) -> None:
    path = export_run(swept, "pool", tmp_path / "p.jsonl.gz").path
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(StoreError, match="truncated"):
        read_pool_file(path)


def test_edited_file_is_reported(swept: Store, tmp_path: Path) -> None:
    path = export_run(swept, "pool", tmp_path / "p.jsonl.gz").path
    text = gzip.decompress(path.read_bytes()).decode()
    path.write_bytes(gzip.compress(text.replace('"correct": false', '"correct": true', 1).encode()))
    with pytest.raises(StoreError, match="checksum mismatch"):
        read_pool_file(path)
    lines = text.splitlines(keepends=True)
    path.write_bytes(gzip.compress("".join(lines[:-1]).encode()))  # a whole line dropped
    with pytest.raises(StoreError, match="checksum mismatch"):
        read_pool_file(path)


def test_cli_export_import_and_curves(swept: Store, tmp_path: Path) -> None:
    from ttscale.cli import app

    swept.close()
    r = CliRunner()
    out = tmp_path / "x.jsonl.gz"
    res = r.invoke(app, ["pool", "export", "pool", "-o", str(out), "--store", str(tmp_path / "src.sqlite")])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["pool", "import", str(out), "--store", str(tmp_path / "b.sqlite"), "--run-id", "copy"])
    assert res.exit_code == 0 and "copy: 30 samples" in res.output, res.output
    res = r.invoke(app, ["curves", "copy", "--store", str(tmp_path / "b.sqlite"), "--bootstrap", "5", "--orders", "4",
                         "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    out.write_bytes(out.read_bytes()[:-40])
    res = r.invoke(app, ["pool", "import", str(out), "--store", str(tmp_path / "c.sqlite")])
    assert res.exit_code != 0 and "truncated" in res.output and "Traceback" not in res.output


def test_cli_import_if_missing_never_replaces_a_grown_store(swept: Store, tmp_path: Path) -> None:
    """`pool import --if-missing` starts a resumed sweep from a shipped file: it loads once, keeps a store
    that already has the run (however many samples it holds), and skips a file that is not there."""
    from ttscale.cli import app
    from ttscale.replay.pool_file import pool_run_id

    export_run(swept, "pool", tmp_path / "p.jsonl.gz")
    swept.close()
    assert pool_run_id(tmp_path / "p.jsonl.gz") == "pool"
    r = CliRunner()
    dst = str(tmp_path / "d.sqlite")
    args = ["pool", "import", str(tmp_path / "p.jsonl.gz"), "--store", dst, "--if-missing"]
    res = r.invoke(app, args)
    assert res.exit_code == 0 and "pool: 30 samples" in res.output, res.output
    st = Store(tmp_path / "d.sqlite")
    (pid, first), *_ = st.samples("pool")
    st.add_samples("pool", pid, [first.__class__(**{**first.__dict__, "index": 99})])  # the store grew past the file
    st.close()
    res = r.invoke(app, args)
    assert res.exit_code == 0 and "already in" in res.output and "31 samples" in res.output, res.output
    res = r.invoke(app, ["pool", "import", str(tmp_path / "none.jsonl.gz"), "--store", dst, "--if-missing"])
    assert res.exit_code == 0 and "nothing to load" in res.output, res.output
    res = r.invoke(app, ["pool", "import", str(tmp_path / "none.jsonl.gz"), "--store", dst])
    assert res.exit_code != 0 and "not found" in res.output, res.output
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    res = r.invoke(app, ["pool", "import", str(tmp_path / "bad.jsonl.gz"), "--store", dst, "--if-missing"])
    assert res.exit_code != 0 and "not a pool file header" in res.output and "Traceback" not in res.output
