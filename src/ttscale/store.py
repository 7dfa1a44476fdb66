"""SQLite sample store: runs, problems, samples and results.

Samples are appended as soon as the engine returns them, each wave in one
transaction, in WAL mode with ``synchronous=FULL``: once ``add_samples`` returns
the rows survive a SIGKILL of the process. Samples are keyed by
``(run_id, problem_id, sample_index)``, so a resumed run reads them back
instead of generating them again, and a sample can never be stored twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttscale.errors import StoreError
from ttscale.types import Problem, Result, Sample

SCHEMA_VERSION = 2
"""Kept in ``PRAGMA user_version``; older stores are migrated on open (:data:`_MIGRATIONS`)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    kind TEXT NOT NULL DEFAULT 'run',
    config TEXT NOT NULL,
    model TEXT NOT NULL,
    code_version TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'running'
);
CREATE TABLE IF NOT EXISTS problems (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    problem_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    reference TEXT,
    meta TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    result TEXT,
    PRIMARY KEY (run_id, problem_id)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL,
    problem_id TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    answer TEXT,
    correct INTEGER,
    n_tokens INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    prefilled_tokens INTEGER NOT NULL,
    flops REAL NOT NULL,
    finish_reason TEXT NOT NULL,
    logprob REAL,
    token_logprobs TEXT,
    finish_order INTEGER NOT NULL,
    wave INTEGER NOT NULL,
    decode_s REAL NOT NULL,
    scores TEXT NOT NULL,
    created REAL NOT NULL,
    grade TEXT,
    PRIMARY KEY (run_id, problem_id, sample_index),
    FOREIGN KEY (run_id, problem_id) REFERENCES problems(run_id, problem_id)
);
"""

# Schema changes, oldest first: _MIGRATIONS[v] takes a store from version v to v + 1.
_MIGRATIONS: dict[int, str] = {
    1: "ALTER TABLE samples ADD COLUMN grade TEXT;",  # why a code sample passed or failed (ttscale.code_check)
}

_SAMPLE_COLUMNS = ("run_id", "problem_id", "sample_index", "text", "answer", "correct", "n_tokens", "prompt_tokens",
                   "prefilled_tokens", "flops", "finish_reason", "logprob", "token_logprobs", "finish_order", "wave",
                   "decode_s", "scores", "created", "grade")


@dataclass
class Resumed:
    """What :meth:`Store.resume` found of a run."""

    resumed: bool
    done: set[str]
    stored: dict[str, list[Sample]]


@dataclass
class RunRecord:
    run_id: str
    created: float
    kind: str
    config: dict[str, Any]
    model: dict[str, Any]
    code_version: str
    status: str


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ttscale")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


class Store:
    """One SQLite file holding any number of runs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a usable SQLite store ({e})") from e

    def _migrate(self) -> None:
        """Create a new store at :data:`SCHEMA_VERSION`, or bring an older one up to it."""
        has_tables = self._db.execute("SELECT 1 FROM sqlite_master WHERE name='samples'").fetchone() is not None
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if has_tables and version == 0:  # stores written before user_version: the version sat in meta
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 1
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {version} is newer than this ttscale ({SCHEMA_VERSION}); "
                             "upgrade ttscale to read it")
        with self._db:
            if not has_tables:
                self._db.executescript(_SCHEMA)
                version = SCHEMA_VERSION
            for v in range(version, SCHEMA_VERSION):
                self._db.executescript(_MIGRATIONS[v])
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._db:
                yield self._db
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: {e}") from e

    def close(self) -> None:
        self._db.close()

    # ---- runs ----------------------------------------------------------------------------

    def open_run(
        self, run_id: str, config: dict[str, Any], model: dict[str, Any], kind: str = "run"
    ) -> tuple[RunRecord, bool]:
        """Create the run, or reopen it for resuming. Returns (record, resumed).

        Resuming with a different configuration is refused: the stored samples
        would not be samples of the new configuration.
        """
        existing = self.get_run(run_id)
        if existing is not None:
            if existing.config != json.loads(json.dumps(config)):
                diff = sorted(
                    k for k in set(existing.config) | set(config)
                    if existing.config.get(k) != json.loads(json.dumps(config.get(k)))
                )
                raise StoreError(
                    f"run {run_id!r} exists with a different configuration (differs in: {', '.join(diff)}); "
                    "use a new --run-id"
                )
            with self._tx() as db:
                db.execute("UPDATE runs SET status='running' WHERE run_id=?", (run_id,))
            return existing, True
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (run_id, created, kind, config, model, code_version) VALUES (?,?,?,?,?,?)",
                (run_id, time.time(), kind, json.dumps(config), json.dumps(model), code_version()),
            )
        rec = self.get_run(run_id)
        assert rec is not None
        return rec, False

    def resume(self, run_id: str, config: dict[str, Any], model: dict[str, Any], problems: Sequence[Problem],
               kind: str = "run") -> Resumed:
        """Open (or reopen) a run and register its problems; what an interrupted invocation left:
        whether the run existed, the problems already finished, and the stored samples by problem."""
        _, resumed = self.open_run(run_id, config, model, kind=kind)
        self.add_problems(run_id, problems)
        stored: dict[str, list[Sample]] = {}
        for pid, s in self.samples(run_id):
            stored.setdefault(pid, []).append(s)
        return Resumed(resumed, self.done_problems(run_id), stored)

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._db.execute(
            "SELECT run_id, created, kind, config, model, code_version, status FROM runs WHERE run_id=?", (run_id,)
        ).fetchone()
        if row is None:
            return None
        return RunRecord(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]), row[5], row[6])

    def list_runs(self) -> list[RunRecord]:
        ids = [r[0] for r in self._db.execute("SELECT run_id FROM runs ORDER BY created")]
        return [r for i in ids if (r := self.get_run(i)) is not None]

    def set_run_status(self, run_id: str, status: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET status=? WHERE run_id=?", (status, run_id))

    # ---- problems ------------------------------------------------------------------------

    def add_problems(self, run_id: str, problems: Sequence[Problem]) -> None:
        """Register problems (idempotent: existing rows are kept as they are)."""
        with self._tx() as db:
            start = db.execute("SELECT COUNT(*) FROM problems WHERE run_id=?", (run_id,)).fetchone()[0]
            db.executemany(
                "INSERT OR IGNORE INTO problems (run_id, problem_id, position, prompt, reference, meta) "
                "VALUES (?,?,?,?,?,?)",
                [
                    (run_id, p.id, start + i, p.prompt, p.reference, json.dumps(p.meta, default=str))
                    for i, p in enumerate(problems)
                ],
            )

    def problems(self, run_id: str) -> list[Problem]:
        rows = self._db.execute(
            "SELECT problem_id, prompt, reference, meta FROM problems WHERE run_id=? ORDER BY position", (run_id,)
        ).fetchall()
        return [Problem(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def resumable_problems(self, run_id: str, config: dict[str, Any], limit: int | None) -> list[Problem] | None:
        """The first ``limit`` problems a stored run was started with, when resuming it needs no others.

        ``None`` (load them from the task) unless the run exists with this configuration and already
        holds at least ``limit`` problems: the same task and seed give the same problems, so a resume
        need not rebuild them (generated GSM-Symbolic instances take minutes to an hour per seed).
        Without a limit the task's size is unknown here, so nothing is taken from the store.
        """
        rec = self.get_run(run_id)
        if limit is None or rec is None or rec.config != json.loads(json.dumps(config)):
            return None
        probs = self.problems(run_id)
        return probs[:limit] if len(probs) >= limit else None

    def done_problems(self, run_id: str) -> set[str]:
        rows = self._db.execute("SELECT problem_id FROM problems WHERE run_id=? AND status='done'", (run_id,))
        return {r[0] for r in rows}

    def finish_problem(self, run_id: str, result: Result) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE problems SET status='done', result=? WHERE run_id=? AND problem_id=?",
                (json.dumps(result.to_dict()), run_id, result.problem_id),
            )

    def results(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT result FROM problems WHERE run_id=? AND status='done' ORDER BY position", (run_id,)
        )
        return [json.loads(r[0]) for r in rows]

    # ---- samples -------------------------------------------------------------------------

    def add_samples(self, run_id: str, problem_id: str, samples: Sequence[Sample]) -> None:
        """Append samples durably; a (run, problem, index) already stored is an error."""
        now = time.time()
        rows = [
            {
                "run_id": run_id, "problem_id": problem_id, "sample_index": s.index, "text": s.text,
                "answer": s.answer, "correct": None if s.correct is None else int(s.correct),
                "n_tokens": s.n_tokens, "prompt_tokens": s.prompt_tokens, "prefilled_tokens": s.prefilled_tokens,
                "flops": s.flops, "finish_reason": s.finish_reason, "logprob": s.logprob,
                "token_logprobs": json.dumps(s.token_logprobs) if s.token_logprobs is not None else None,
                "finish_order": s.finish_order, "wave": s.wave, "decode_s": s.decode_s,
                "scores": json.dumps(s.scores), "created": now, "grade": json.dumps(s.grade) if s.grade else None,
            }
            for s in samples
        ]
        insert = (f"INSERT INTO samples ({', '.join(_SAMPLE_COLUMNS)}) "
                  f"VALUES ({', '.join(':' + c for c in _SAMPLE_COLUMNS)})")
        try:
            with self._db:
                self._db.executemany(insert, rows)
        except sqlite3.IntegrityError as e:
            raise StoreError(f"sample already stored or problem unknown for {run_id}/{problem_id}: {e}") from e
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: {e}") from e

    def update_scores(self, run_id: str, problem_id: str, samples: Sequence[Sample]) -> None:
        with self._tx() as db:
            db.executemany(
                "UPDATE samples SET scores=? WHERE run_id=? AND problem_id=? AND sample_index=?",
                [(json.dumps(s.scores), run_id, problem_id, s.index) for s in samples],
            )

    def samples(self, run_id: str, problem_id: str | None = None) -> list[tuple[str, Sample]]:
        """(problem_id, sample) pairs, ordered by problem position then sample index."""
        q = (
            "SELECT s.problem_id AS problem_id, sample_index, text, answer, correct, n_tokens,"
            " s.prompt_tokens AS prompt_tokens, prefilled_tokens, flops, finish_reason, logprob, token_logprobs,"
            " finish_order, wave, decode_s, scores, grade"
            " FROM samples s JOIN problems p ON p.run_id=s.run_id AND p.problem_id=s.problem_id"
            " WHERE s.run_id=?"
        )
        args: tuple[Any, ...] = (run_id,)
        if problem_id is not None:
            q += " AND s.problem_id=?"
            args += (problem_id,)
        q += " ORDER BY p.position, sample_index"
        out = []
        cur = self._db.cursor()
        cur.row_factory = sqlite3.Row
        for r in cur.execute(q, args):
            out.append(
                (
                    r["problem_id"],
                    Sample(
                        index=r["sample_index"], text=r["text"], answer=r["answer"],
                        correct=None if r["correct"] is None else bool(r["correct"]),
                        n_tokens=r["n_tokens"], prompt_tokens=r["prompt_tokens"],
                        prefilled_tokens=r["prefilled_tokens"], flops=r["flops"],
                        finish_reason=r["finish_reason"], logprob=r["logprob"],
                        token_logprobs=json.loads(r["token_logprobs"]) if r["token_logprobs"] is not None else None,
                        finish_order=r["finish_order"], wave=r["wave"], decode_s=r["decode_s"],
                        scores=json.loads(r["scores"]), grade=json.loads(r["grade"]) if r["grade"] else {},
                    ),
                )
            )
        return out

    # ---- notes about a run (what made it, what scored it) ---------------------------------

    def set_note(self, run_id: str, key: str, value: Any) -> None:
        """Keep a JSON note about a run (its making command, a score's provenance) in ``meta``;
        notes are not part of the run's configuration, so adding one never blocks resuming it."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"note:{run_id}:{key}", json.dumps(value)))

    def notes(self, run_id: str, prefix: str = "") -> dict[str, Any]:
        """The run's notes whose key starts with ``prefix``, by key (prefix kept)."""
        head = f"note:{run_id}:"
        rows = self._db.execute("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?",
                                (len(head) + len(prefix), head + prefix))
        return {k[len(head):]: json.loads(v) for k, v in rows}

    def sample_count(self, run_id: str) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM samples WHERE run_id=?", (run_id,)).fetchone()[0])
