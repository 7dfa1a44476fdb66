"""The ``ttscale`` command line. Each command lives in its own module and is registered here."""

from __future__ import annotations

import typer

from ttscale.cli.allocate import allocate
from ttscale.cli.compare import compare
from ttscale.cli.curves import curves, report
from ttscale.cli.experiment import experiment
from ttscale.cli.hardware import calibrate, hardware
from ttscale.cli.info import models, speed, tasks
from ttscale.cli.plan import plan
from ttscale.cli.pool import pool_app
from ttscale.cli.run import run
from ttscale.cli.serve import serve
from ttscale.cli.sweep import sweep

app = typer.Typer(
    name="ttscale",
    help="Compute-optimal LLM inference: spend test-time compute where it buys accuracy, and measure it honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("run")(run)
app.command("models")(models)
app.command("tasks")(tasks)
app.command("speed")(speed)
app.command("serve")(serve)
app.command("compare")(compare)
app.command("sweep")(sweep)
app.command("plan")(plan)
app.command("allocate")(allocate)
app.command("curves")(curves)
app.command("report")(report)
app.add_typer(pool_app, name="pool")
app.command("experiment")(experiment)
app.command("hardware")(hardware)
app.command("calibrate")(calibrate)


def main() -> None:
    app()
