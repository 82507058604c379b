"""`resplat cluster ...`: start, inspect and stop a Ray cluster; check launcher and KubeRay files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resplat.cli.display import console
from resplat.cli.errors import reports_errors

app = typer.Typer(help="Start, inspect and stop the Ray cluster that jobs are submitted to.",
                  no_args_is_help=True)


@app.command("validate")
@reports_errors
def validate_file(
    file: Annotated[Path, typer.Argument(
        metavar="CLUSTER.yaml", help="A Ray cluster launcher file or a KubeRay RayCluster/RayJob manifest.")],
) -> None:
    """Check a cluster file before `ray up` or `kubectl apply`: one line per problem, with its path in the file.

    Example:  resplat cluster validate cluster/aws-gpu.yaml
    """
    from resplat.cluster.validate import load_cluster_file

    load_cluster_file(file)
    console.print(f"{file}: ok", soft_wrap=True, markup=False, highlight=False)
