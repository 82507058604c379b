"""`resplat cluster ...`: start, inspect and stop a Ray cluster; check launcher and KubeRay files."""

from __future__ import annotations

import typer

app = typer.Typer(help="Start, inspect and stop the Ray cluster that jobs are submitted to.",
                  no_args_is_help=True)
