"""`resplat cluster ...`: start, inspect and stop a Ray cluster; check launcher and KubeRay files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resplat.cli.display import console
from resplat.cli.errors import HELP_OPTIONS, examples, reports_errors

Address = Annotated[str | None, typer.Option(
    "--address", metavar="URL",
    help="Ray dashboard address, http://HEAD:8265 (default: RAY_ADDRESS, else the cluster `up` recorded).")]

app = typer.Typer(help="Start, inspect and stop the Ray cluster that jobs are submitted to.",
                  no_args_is_help=True, context_settings=HELP_OPTIONS)


@app.command(epilog=examples('resplat cluster up', 'resplat cluster up cluster/local-autoscaling.yaml',
                             'resplat cluster up --tracking-store postgresql://mlflow@127.0.0.1:5432/mlflow'))
@reports_errors
def up(
    file: Annotated[Path | None, typer.Argument(
        metavar="CLUSTER.yaml",
        help="A Ray cluster launcher file (cluster/aws-gpu.yaml, ...): runs `ray up` on it. "
             "A fake_multinode file (cluster/local-autoscaling.yaml) starts a local autoscaling head.")] = None,
    dashboard_port: Annotated[int | None, typer.Option(
        min=1, max=65535, help="Port of the dashboard and Jobs API (default 8265, or a free one).")] = None,
    metrics: Annotated[bool, typer.Option(
        help="Also start Prometheus (Debian's binary) scraping the head; see dashboards/.")] = False,
    tracking_store: Annotated[str | None, typer.Option(
        metavar="URI", help="Also start an MLflow tracking server (127.0.0.1, a free port) on this PostgreSQL "
        "database, postgresql://USER[:PASS]@HOST:PORT/DB; the cluster's jobs log to it, `down` stops it.")] = None,
    tracking_artifacts: Annotated[str | None, typer.Option(
        metavar="DIR|URI", help="With --tracking-store: where the server keeps models and files (a folder or "
        "s3://BUCKET/PREFIX). Default: $RESPLAT_HOME/server-artifacts.")] = None,
) -> None:
    """Start a Ray head on this machine that outlives the terminal; jobs are then submitted to it."""
    from resplat.cluster import service
    from resplat.errors import InputError

    if tracking_artifacts and not tracking_store:
        raise InputError("--tracking-artifacts goes with --tracking-store URI")
    outcome = service.up(file, dashboard_port=dashboard_port, metrics=metrics, tracking_store=tracking_store,
                         tracking_artifacts=tracking_artifacts)
    console.print(outcome, soft_wrap=True)


@app.command(epilog=examples('resplat cluster status'))
@reports_errors
def status(
    address: Address = None,
) -> None:
    """The cluster's nodes (alive or dead, CPUs, GPUs, in use), pending demands, and running jobs."""
    from resplat.cluster import service

    console.print(service.status(address), soft_wrap=True, markup=False, highlight=False)


@app.command(epilog=examples('resplat cluster down'))
@reports_errors
def down(
    file: Annotated[Path | None, typer.Argument(
        metavar="CLUSTER.yaml", help="The launcher file a cloud cluster was started from (`ray down`).")] = None,
) -> None:
    """Stop the cluster `resplat cluster up` started here, and nothing else."""
    from resplat.cluster import service

    console.print(service.down(file), soft_wrap=True)


@app.command("validate", epilog=examples('resplat cluster validate cluster/aws-gpu.yaml'))
@reports_errors
def validate_file(
    file: Annotated[Path, typer.Argument(
        metavar="CLUSTER.yaml", help="A Ray cluster launcher file or a KubeRay RayCluster/RayJob manifest.")],
) -> None:
    """Check a cluster file before `ray up` or `kubectl apply`: one line per problem, with its path in the file."""
    from resplat.cluster.validate import load_cluster_file

    load_cluster_file(file)
    console.print(f"{file}: ok", soft_wrap=True, markup=False, highlight=False)
