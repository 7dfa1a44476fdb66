"""A stored run as one compressed, checksummed file: how sample pools are shipped and shared.

Layout: gzip-compressed JSON lines. Line 1 is the header: format and version, the run's id, kind,
configuration and model record, the command that made it, counts of problems and samples, the
SHA-256 of every following line (as bytes, newline included) and, optionally, the run's notes (which
judge made each score added by ``ttscale pool score``). Then one ``{"problem": ...}`` line per
problem (with its result, when the run finished it) and one ``{"sample": ...}`` line per sample with
what replay needs: text, answer, correctness, token counts, FLOPs, summed and per-token log-probs,
finish order, wave, verifier scores and the grade's explanation.

Per-token log-probs are rounded to ``logprob_decimals`` (4 by default: ~0.01% of a probability)
to keep files small; the summed log-prob is kept exactly. Loading checks the header, the counts and
the checksum, so a truncated or edited file is reported as such, never half-loaded.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttscale.errors import StoreError
from ttscale.store import Store
from ttscale.types import Problem, Result, Sample

FORMAT = "ttscale-pool"
VERSION = 1


@dataclass(frozen=True)
class PoolFileInfo:
    path: Path
    run_id: str
    problems: int
    samples: int
    command: str
    sha256: str


def _sample_dict(s: Sample, decimals: int) -> dict[str, Any]:
    d: dict[str, Any] = {
        "index": s.index, "text": s.text, "answer": s.answer, "correct": s.correct, "n_tokens": s.n_tokens,
        "prompt_tokens": s.prompt_tokens, "prefilled_tokens": s.prefilled_tokens, "flops": s.flops,
        "finish_reason": s.finish_reason, "logprob": s.logprob, "finish_order": s.finish_order, "wave": s.wave,
        "decode_s": round(s.decode_s, 4), "scores": s.scores,
    }
    if s.token_logprobs is not None:
        d["token_logprobs"] = [round(x, decimals) for x in s.token_logprobs]
    if s.grade:
        d["grade"] = s.grade
    return d


def export_run(store: Store, run_id: str, path: Path, *, command: str = "", logprob_decimals: int = 4) -> PoolFileInfo:
    """Write run ``run_id`` of ``store`` to ``path`` (``.jsonl.gz``)."""
    rec = store.get_run(run_id)
    if rec is None:
        raise StoreError(f"no run {run_id!r} in {store.path}")
    results = {r["problem_id"]: r for r in store.results(run_id)}
    lines: list[bytes] = []
    problems = store.problems(run_id)
    for p in problems:
        entry = {"id": p.id, "prompt": p.prompt, "reference": p.reference, "meta": p.meta}
        if p.id in results:
            entry["result"] = results[p.id]
        lines.append((json.dumps({"problem": entry}, default=str) + "\n").encode())
    n_samples = 0
    for pid, s in store.samples(run_id):
        lines.append((json.dumps({"problem_id": pid, "sample": _sample_dict(s, logprob_decimals)}) + "\n").encode())
        n_samples += 1
    digest = hashlib.sha256(b"".join(lines)).hexdigest()
    notes = store.notes(run_id)
    # A pool re-exported after `ttscale pool score` keeps the sweep command it was imported with.
    command = command or str(notes.get("command", ""))
    if command:  # an explicit command (say, of a pool extended since it was imported) replaces the imported one
        notes["command"] = command
    header = {"format": FORMAT, "version": VERSION, "run_id": run_id, "kind": rec.kind, "config": rec.config,
              "model": rec.model, "code_version": rec.code_version, "command": command,
              "problems": len(problems), "samples": n_samples, "sha256": digest,
              "logprob_decimals": logprob_decimals}
    if notes:
        header["notes"] = notes  # e.g. which judge made each score (ttscale.rescore); optional, older readers skip it
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # No name or time in the gzip header: re-exporting an unchanged pool rewrites the same bytes, so a
    # shipped pool shows up in `git status` only when its samples changed.
    with tmp.open("wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
        f.write((json.dumps(header) + "\n").encode())
        f.writelines(lines)
    tmp.replace(path)
    return PoolFileInfo(path, run_id, len(problems), n_samples, command, digest)


def _header(path: Path, head: bytes) -> dict[str, Any]:
    """A pool file's first line, checked for this format and version."""
    try:
        header = json.loads(head)
    except ValueError:
        raise StoreError(f"{path}:1: not a pool file header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StoreError(f"{path}:1: not a {FORMAT} file")
    if header.get("version") != VERSION:
        raise StoreError(f"{path}:1: pool file version {header.get('version')}, this ttscale reads {VERSION}")
    return header


def read_pool_file(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    """(header, problems, (problem id, sample) pairs), verified; :class:`StoreError` names what is wrong."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise StoreError(f"{path}: pool file not found") from None
    except (EOFError, OSError, zlib.error) as e:
        raise StoreError(f"{path}: truncated or not a gzip pool file ({type(e).__name__}: {e})") from None
    head, _, body = raw.partition(b"\n")
    header = _header(path, head)
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise StoreError(f"{path}: checksum mismatch: the file was truncated or edited after it was written")
    problems: list[dict[str, Any]] = []
    samples: list[tuple[str, dict[str, Any]]] = []
    for lineno, line in enumerate(body.splitlines(), start=2):
        try:
            row = json.loads(line)
        except ValueError as e:
            raise StoreError(f"{path}:{lineno}: malformed line ({e})") from None
        if "problem" in row:
            problems.append(row["problem"])
        elif "sample" in row:
            samples.append((row["problem_id"], row["sample"]))
        else:
            raise StoreError(f"{path}:{lineno}: neither a problem nor a sample")
    if len(problems) != header.get("problems") or len(samples) != header.get("samples"):
        raise StoreError(f"{path}: holds {len(problems)} problems and {len(samples)} samples, header says "
                         f"{header.get('problems')} and {header.get('samples')}")
    return header, problems, samples


def import_pool_file(path: Path, store: Store, run_id: str | None = None) -> str:
    """Load a pool file into ``store`` as run ``run_id`` (default: the file's); returns the run id.

    Importing the same run again only adds the scores the store lacks (a pool scored elsewhere);
    a different run under the same id is refused.
    """
    header, problems, samples = read_pool_file(path)
    rid = run_id or str(header["run_id"])
    existing = store.get_run(rid)
    if existing is not None:
        if store.sample_count(rid) == header["samples"] and existing.config == header["config"]:
            _merge_scores(store, rid, samples)
            _keep_notes(store, rid, header)
            return rid
        raise StoreError(f"{store.path} already has a different run {rid!r}; import under another id")
    store.open_run(rid, header["config"], header["model"], kind=str(header.get("kind", "sweep")))
    store.add_problems(rid, [Problem(p["id"], p["prompt"], p.get("reference"), p.get("meta", {})) for p in problems])
    by_problem: dict[str, list[Sample]] = {}
    for pid, d in samples:
        by_problem.setdefault(pid, []).append(Sample(
            index=d["index"], text=d["text"], answer=d.get("answer"), correct=d.get("correct"),
            n_tokens=d["n_tokens"], prompt_tokens=d["prompt_tokens"], prefilled_tokens=d["prefilled_tokens"],
            flops=d["flops"], finish_reason=d["finish_reason"], logprob=d.get("logprob"),
            token_logprobs=d.get("token_logprobs"), finish_order=d.get("finish_order", 0), wave=d.get("wave", 0),
            decode_s=d.get("decode_s", 0.0), scores=d.get("scores", {}), grade=d.get("grade", {})))
    for pid, ss in by_problem.items():
        store.add_samples(rid, pid, ss)
    for p in problems:
        r = p.get("result")
        if r:
            from ttscale.types import Usage

            usage = Usage(**{k: v for k, v in r.get("usage", {}).items() if k in Usage.__dataclass_fields__})
            store.finish_problem(rid, Result(r["problem_id"], r.get("answer"), r.get("correct"), r.get("strategy", ""),
                                             r.get("samples", []), r.get("votes", {}), usage, r.get("meta", {})))
    _keep_notes(store, rid, header)
    store.set_run_status(rid, "done")
    return rid


def import_if_missing(path: Path, store: Store, run_id: str | None = None) -> bool:
    """Load ``path`` as ``run_id`` (default: the file's) unless the store has that run already or the
    file does not exist; returns whether it loaded. A fresh machine continues a shipped pool from it; a
    store that holds the run (perhaps grown past the file) is never replaced by the file."""
    if not path.exists():
        return False
    rid = run_id or pool_run_id(path)
    if store.get_run(rid) is not None:
        return False
    import_pool_file(path, store, rid)
    return True


def pool_run_id(path: Path) -> str:
    """The run id in a pool file's header, read without decompressing the rest of the file."""
    try:
        with gzip.open(path, "rb") as f:
            head = f.readline()
    except FileNotFoundError:
        raise StoreError(f"{path}: pool file not found") from None
    except (EOFError, OSError, zlib.error) as e:
        raise StoreError(f"{path}:1: not a pool file header ({type(e).__name__})") from None
    header = _header(path, head)
    if "run_id" not in header:
        raise StoreError(f"{path}:1: not a {FORMAT} file")
    return str(header["run_id"])


def _keep_notes(store: Store, rid: str, header: dict[str, Any]) -> None:
    if header.get("command"):
        store.set_note(rid, "command", header["command"])
    for key, value in (header.get("notes") or {}).items():
        if key != "command":
            store.set_note(rid, key, value)


def _merge_scores(store: Store, rid: str, samples: list[tuple[str, dict[str, Any]]]) -> None:
    """The same run imported again: add the scores the file has and the store lacks (a pool scored
    elsewhere with `ttscale pool score`); scores already stored are kept as they are."""
    file_scores = {(pid, d["index"]): d.get("scores", {}) for pid, d in samples}
    changed: dict[str, list[Sample]] = {}
    for pid, s in store.samples(rid):
        new = {k: v for k, v in file_scores.get((pid, s.index), {}).items() if k not in s.scores}
        if new:
            s.scores.update(new)
            changed.setdefault(pid, []).append(s)
    for pid, ss in changed.items():
        store.update_scores(rid, pid, ss)
