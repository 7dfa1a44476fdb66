"""`ttscale calibrate` on the real embedded engine: it times real steps and writes a profile the cost model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.cli import app
from ttscale.roofline import load_profile

pytestmark = pytest.mark.model


def test_calibrate_writes_a_fitted_profile(tmp_path: Path) -> None:
    out = tmp_path / "here.toml"
    r = CliRunner().invoke(app, ["calibrate", "--model", "smollm2-135m", "--out", str(out), "--threads", "1",
                                  "--quick"])
    assert r.exit_code == 0, r.output
    hw = load_profile(out)
    assert hw.name == "cpu-2core-calibrated" and hw.calibration["points"] == 5 and hw.calibration["quick"] is True
    # within the fit's bounds: relative to a CPU's nominal peaks (guesses) an efficiency may pass 1, and on a
    # loaded machine five quick steps can put the weight reads in either the bandwidth or the step overhead
    assert 0 < hw.compute_efficiency <= 4 and 0 < hw.bandwidth_efficiency <= 4
    assert "median error" in r.output and "smollm2-135m" in hw.calibration["models"]
    listed = CliRunner().invoke(app, ["hardware", str(out), "--model", "smollm2-135m"])
    assert listed.exit_code == 0 and "cpu-2core-calibrated" in listed.output and "yes" in listed.output
