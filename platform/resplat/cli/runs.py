"""`resplat runs ...`: what MLflow recorded about a run."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from resplat.cli.errors import HELP_OPTIONS, reports_errors

app = typer.Typer(help="Inspect tracked runs: their lineage (code, data, machine, libraries).",
                  no_args_is_help=True, context_settings=HELP_OPTIONS)


@app.callback()
def runs() -> None:
    """Inspect tracked runs: their lineage (code, data, machine, libraries)."""


@app.command()
@reports_errors
def show(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="An MLflow run id.")],
    tracking_uri: Annotated[str | None, typer.Option(
        metavar="URI", help="Default: the embedded store under .resplat/.")] = None,
) -> None:
    """Print a run's lineage: git commit and dirty flag, .beton hashes, Ray job, host, devices, versions."""
    from resplat import paths
    from resplat.tracking.lineage import run_lineage

    shown = run_lineage(tracking_uri or paths.default_tracking_uri(), run_id)
    width = max(map(len, shown))
    console = Console(highlight=False)
    for key, value in shown.items():
        console.print(f"{key:>{width}}  {value}", soft_wrap=True, markup=False)
