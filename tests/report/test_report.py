"""Plots and the HTML report: files are real PNGs, the page is self-contained, and it renders in Chromium."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import pytest

from ttscale.replay import analyze
from ttscale.replay.analysis import Analysis
from ttscale.report.html import write_report
from ttscale.report.plots import write_plots
from ttscale.testing.synthetic import synthetic_pool


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return analyze(synthetic_pool(80, 16, seed=4), n_orders=16, n_bootstrap=50)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, analysis: Analysis) -> Path:
    return write_report(analysis, tmp_path_factory.mktemp("rep"))


def test_plots_are_pngs(report: Path) -> None:
    names = {p.stem for p in report.parent.glob("*.png")} - {"screenshot"}
    assert names == {"accuracy_vs_tokens", "accuracy_vs_flops", "frontier", "coverage"}
    for n in names:
        w, h = png_size(report.parent / f"{n}.png")
        assert w > 500 and h > 300


def test_coverage_plot_needs_pass_at_k(tmp_path: Path) -> None:
    from ttscale.replay.curves import CurveSpec

    a = analyze(synthetic_pool(20, 4), [CurveSpec("majority", "majority")], n_orders=4, n_bootstrap=10)
    assert "coverage" not in write_plots(a, tmp_path) and a.coverage_fit is None


def test_html_is_self_contained_and_holds_the_numbers(report: Path, analysis: Analysis) -> None:
    page = report.read_text()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page and "<link" not in page
    for p in analysis.curves.points:
        assert f"<td>{p.accuracy:.3f}</td>" in page
    assert f"a = {analysis.coverage_fit.a:.4f}" in page  # type: ignore[union-attr]


def _driver():  # type: ignore[no-untyped-def]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium not installed (`make browser` installs Debian chromium + chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (it is in the `dev` extra)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def test_report_renders_in_headless_chromium(report: Path, analysis: Analysis) -> None:
    drv = _driver()
    try:
        drv.get(report.as_uri())
        figs = drv.execute_script(
            "return Array.from(document.images).map(i => [i.closest('figure').id, i.complete, i.naturalWidth,"
            " i.naturalHeight, i.getBoundingClientRect().width, i.getBoundingClientRect().height])")
        assert len(figs) == 4
        for fid, complete, nw, nh, w, h in figs:
            assert complete and nw > 0 and nh > 0 and w > 0 and h > 0, fid
        cells = drv.execute_script(
            "return Array.from(document.querySelectorAll('#points tbody tr')).map(r => Array.from(r.cells).map(c => c.innerText))")
        assert len(cells) == len(analysis.curves.points)
        for row, p in zip(cells, analysis.curves.points, strict=True):
            assert row[0].startswith(p.strategy) and int(row[1]) == p.k and float(row[2]) == round(p.accuracy, 3)
        cheapest = drv.execute_script("return document.querySelectorAll('#cheapest-tokens tbody tr').length")
        assert cheapest == len(analysis.cheapest_tokens)
        shot = report.parent / "screenshot.png"
        drv.save_screenshot(str(shot))
        assert png_size(shot)[0] > 0
    finally:
        drv.quit()
