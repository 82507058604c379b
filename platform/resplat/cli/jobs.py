"""`resplat jobs ...`: the jobs submitted to a Ray cluster: list, status, logs, stop."""

from __future__ import annotations

import typer

app = typer.Typer(help="List, follow and stop the jobs submitted to a Ray cluster.", no_args_is_help=True)
