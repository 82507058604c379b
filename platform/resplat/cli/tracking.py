"""`resplat tracking serve`: an MLflow tracking server on PostgreSQL that jobs on several machines share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from resplat.cli.display import console
from resplat.cli.errors import HELP_OPTIONS, examples, reports_errors

app = typer.Typer(help="Run the MLflow tracking server that jobs log to (PostgreSQL backend).",
                  no_args_is_help=True, context_settings=HELP_OPTIONS)


@app.callback()
def tracking() -> None:
    """Run the MLflow tracking server that jobs log to (PostgreSQL backend)."""


@app.command(epilog=examples(
    "resplat tracking serve --backend-store-uri postgresql://mlflow@127.0.0.1:5432/mlflow",
    "resplat tracking serve --backend-store-uri postgresql://mlflow@db:5432/mlflow --host 0.0.0.0 "
    "--allowed-host mlflow.internal --artifacts /shared/mlflow-artifacts"))
@reports_errors
def serve(
    backend_store_uri: Annotated[str, typer.Option(
        metavar="URI", help="PostgreSQL database for runs and the registry: postgresql://USER[:PASS]@HOST:PORT/DB.")],
    artifacts: Annotated[str | None, typer.Option(
        metavar="DIR|URI", help="Where models and files are stored (a folder, or s3://BUCKET/PREFIX); the "
        "server proxies them. Default: $RESPLAT_HOME/server-artifacts.")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind. 127.0.0.1 keeps it private; another opens it "
                                      "and only these Host headers are accepted: it, loopback, --allowed-host."
                                      )] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on (1-65535).")] = 5000,
    allowed_host: Annotated[list[str] | None, typer.Option(
        metavar="NAME", help="Another host name clients reach the server by (repeatable).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Server worker processes. Default: one per two "
                                                 "cores, 1 to 4.")] = None,
) -> None:
    """Serve MLflow tracking on PostgreSQL; jobs log there with tracking.tracking_uri or MLFLOW_TRACKING_URI
    set to the URL it prints. Ctrl-C (or SIGTERM) stops it and its workers."""
    from resplat import paths
    from resplat.cli.ui_server import check_address, default_workers
    from resplat.cli.ui_server import serve as run_server
    from resplat.tracking.server import (
        SERVER_ENVIRONMENT,
        allowed_hosts,
        check_postgres,
        postgres_store_uri,
        server_command,
    )

    check_address(host, port)
    store = postgres_store_uri(backend_store_uri)
    allowed_hosts(host, port, allowed_host or [])
    check_postgres(store)
    command = server_command(backend_store_uri=store, artifacts=artifacts or str(Path(paths.home()) / "server-artifacts"),
                             host=host, port=port, workers=workers or default_workers(),
                             extra_allowed_hosts=allowed_host or [])

    os.environ.update(SERVER_ENVIRONMENT)

    def ready(url: str) -> None:
        console.print(f"MLflow tracking server ready at {url}  (Ctrl-C to stop)", soft_wrap=True)

    run_server(command, host=host, port=port, on_ready=ready)
    console.print("MLflow tracking server stopped")
