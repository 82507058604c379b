"""The `resplat` command: validate, submit, schema, ui, and one sub-app per noun."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from resplat import paths
from resplat.cli import cluster, data, jobs, models
from resplat.cli.display import DataProgress, TrainingDisplay, console, print_summary
from resplat.cli.errors import reports_errors, set_debug
from resplat.cli.report import report_command
from resplat.cli.tune import tune_command

app = typer.Typer(
    help="resplat: train deep residual networks on Ray with FFCV data and MLflow tracking.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(cluster.app, name="cluster")
app.add_typer(data.app, name="data")
app.add_typer(jobs.app, name="jobs")
app.add_typer(models.app, name="models")
app.command("report")(report_command)
app.command("tune")(tune_command)

Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a field: --set optim.lr=0.05 (repeatable; value parsed as YAML)."),
]


@app.callback()
def main(debug: Annotated[bool, typer.Option(help="Show tracebacks on errors.")] = False) -> None:
    set_debug(debug)


@app.command()
@reports_errors
def validate(
    job: Annotated[Path, typer.Argument(help="Job spec YAML file.")],
    set_: Overrides = None,
) -> None:
    """Validate a job spec and print it resolved (defaults filled in, variables expanded)."""
    from resplat.spec import load_job, to_yaml

    spec = load_job(job, set_ or [])
    console.print(to_yaml(spec), end="", markup=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of job specs (editors can use it for completion)."""
    from resplat.spec import JobSpec

    print(json.dumps(JobSpec.model_json_schema(), indent=2))


@app.command()
@reports_errors
def submit(
    job: Annotated[Path, typer.Argument(help="Job spec YAML file.")],
    set_: Overrides = None,
    dry_run: Annotated[bool, typer.Option(help="Validate and print the plan; start nothing.")] = False,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS, else a local Ray).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Ray's own logs.")] = False,
    resume: Annotated[
        str | None, typer.Option(help="Continue this MLflow run (stopped or failed) from its latest checkpoint.")
    ] = None,
) -> None:
    """Train the model a job spec describes, track it in MLflow, log the final model."""
    from resplat.orchestrate import submit as service
    from resplat.spec import load_job

    spec = load_job(job, set_ or [])
    if resume:
        with TrainingDisplay(spec.name) as display:
            result = service.resume(resume, tracking_uri=spec.tracking.tracking_uri, expect_job=spec.name,
                                    address=address, verbose=verbose, on_update=display.update)
        print_summary(result)
        return
    if dry_run:
        for key, value in service.plan(spec).items():
            console.print(f"[bold]{key:>8}[/]  {value}")
        return
    service.check_runnable(spec, address=address)
    with DataProgress() as bars:
        prepared = service.prepare_data(spec.data, num_classes=spec.model.num_classes, progress=bars.factory)
    with TrainingDisplay(spec.name) as display:
        result = service.submit(spec, prepared=prepared, spec_text=job.read_text(), address=address,
                                verbose=verbose, on_update=display.update)
    print_summary(result)


@app.command("eval")
@reports_errors
def evaluate(
    run_id: Annotated[str, typer.Argument(help="The MLflow run whose final model to test.")],
    ten_crop: Annotated[bool, typer.Option(help="The paper's 10-crop testing (ImageNet family).")] = False,
    scales: Annotated[
        str | None, typer.Option(help="Comma-separated image sizes whose scores are averaged, e.g. 224,256,384.")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="Default: the embedded store under .resplat/.")] = None,
) -> None:
    """Test a run's model on its validation set (10-crop, several scales) and log the result to the run."""
    from resplat.errors import InputError
    from resplat.orchestrate.evaluate import evaluate_run

    try:
        sizes = [int(s) for s in scales.split(",")] if scales else None
    except ValueError:
        raise InputError(f"--scales {scales!r}: expected comma-separated pixel sizes, e.g. 224,256") from None
    with console.status("evaluating..."):
        m = evaluate_run(run_id, tracking_uri=tracking_uri, ten_crop=ten_crop, scales=sizes)
    console.print(f"{m['views']}: top-1 {m['eval_top1']:.2%}, top-5 {m['eval_top5']:.2%} "
                  f"on {m['eval_images']} images (logged to run {run_id})")


@app.command()
@reports_errors
def ui(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to bind (127.0.0.1 keeps it private).")] = "127.0.0.1",
    tracking_uri: Annotated[str | None, typer.Option(help="Default: the embedded store under .resplat/.")] = None,
) -> None:
    """Open the MLflow UI on the runs and registered models."""
    uri = tracking_uri or paths.default_tracking_uri()
    _check_port_free(host, port)
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    console.print(f"MLflow UI for {uri} at http://{host}:{port}  (Ctrl-C to stop)")
    command = [mlflow, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if uri.startswith("sqlite:"):
        command += ["--default-artifact-root", paths.artifacts_dir().as_uri()]
    raise typer.Exit(subprocess.call(command))


def _check_port_free(host: str, port: int) -> None:
    from resplat.errors import InputError

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise InputError(f"--host {host} --port {port}: cannot serve there ({error.strerror}); "
                              "choose another with --port") from None


def run() -> None:
    app()
