"""The `resplat` command: validate, submit, schema, ui, and one sub-app per noun."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from resplat import paths
from resplat.cli import cluster, data, jobs, models, runs, tracking
from resplat.cli.display import DataProgress, TrainingDisplay, console, print_summary
from resplat.cli.errors import HELP_OPTIONS, examples, plain_usage_names, reports_errors, set_debug
from resplat.cli.report import report_command
from resplat.cli.tune import tune_command

app = typer.Typer(
    help="resplat: train deep residual networks on Ray with FFCV data and MLflow tracking.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings=HELP_OPTIONS,
)
plain_usage_names()
app.add_typer(cluster.app, name="cluster")
app.add_typer(data.app, name="data")
app.add_typer(jobs.app, name="jobs")
app.add_typer(models.app, name="models")
app.add_typer(runs.app, name="runs")
app.add_typer(tracking.app, name="tracking")
app.command("report", epilog=examples("resplat report shortcuts --out report/",
                                      "resplat report 3f2c9a0d41b84e6f --out /tmp/depth-report"))(report_command)
app.command("tune", epilog=examples("resplat tune --space shortcuts", "resplat tune --space lr --samples 16",
                                    "resplat tune --space my-space.yaml --job jobs/cifar10-resnet56.yaml"))(tune_command)

Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="FIELD=VALUE",
                 help="Override a field: --set optim.lr=0.05 (repeatable; value parsed as YAML)."),
]
JobFile = Annotated[Path, typer.Argument(metavar="JOB.yaml", help="Job spec YAML file.", show_default=False)]
TrackingUri = Annotated[str | None, typer.Option(metavar="URI", help="MLflow tracking URI. Default: the "
                                                 "embedded store in $RESPLAT_HOME (see README: Local state).")]


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"resplat {version('resplat')}")
        raise typer.Exit()


@app.callback(epilog=examples("resplat validate jobs/cifar10-resnet20.yaml",
                              "resplat submit jobs/cifar10-resnet20.yaml --dry-run", "resplat ui"))
def main(
    debug: Annotated[bool, typer.Option(help="Show tracebacks on errors (also accepted after the command).")
                     ] = False,
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print resplat's version and exit.")] = False,
) -> None:
    """resplat: train deep residual networks on Ray with FFCV data and MLflow tracking.

    State and data sets live in $RESPLAT_HOME (default: .resplat/ of the resplat checkout, else ~/.resplat).
    """
    if debug:  # never unset: `--debug` after the command name was taken off the line by run()
        set_debug(True)


@app.command(epilog=examples("resplat validate jobs/cifar10-resnet20.yaml",
                             "resplat validate jobs/resnet50.yaml --set optim.lr=0.2 --set scaling.num_workers=8"))
@reports_errors
def validate(job: JobFile, set_: Overrides = None) -> None:
    """Validate a job spec and print it resolved (defaults filled in, variables expanded)."""
    from resplat.errors import SpecError
    from resplat.orchestrate.submit import problems_before_start
    from resplat.spec import load_job, to_yaml

    spec = load_job(job, set_ or [])
    problems = problems_before_start(spec, local=False)
    if problems:
        raise SpecError(str(job), problems)
    console.print(to_yaml(spec), end="", markup=False)


@app.command(epilog=examples("resplat schema > jobs/schema.json"))
def schema() -> None:
    """Print the JSON Schema of job specs (editors can use it for completion)."""
    from resplat.spec import JobSpec

    print(json.dumps(JobSpec.model_json_schema(), indent=2))


@app.command()
@reports_errors
def submit(
    job: Annotated[Path | None, typer.Argument(metavar="JOB.yaml", help="Job spec YAML file (or --from-run).",
                                               show_default=False)] = None,
    set_: Overrides = None,
    dry_run: Annotated[bool, typer.Option(help="Validate and print the plan; start nothing.")] = False,
    address: Annotated[str | None, typer.Option(
        metavar="URL", help="Submit to the Ray cluster whose dashboard is at URL (http://HEAD:8265). Default: "
        "RAY_ADDRESS, else the cluster `resplat cluster up` recorded, else train here on a local Ray.")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="On a cluster: stream the job's progress and exit with its outcome "
        "(Ctrl-C detaches; the job keeps running).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Ray's own logs.")] = False,
    resume: Annotated[str | None, typer.Option(
        metavar="RUN_ID", help="Continue this MLflow run (stopped or failed) from its latest checkpoint.")] = None,
    cluster: Annotated[Path | None, typer.Option(
        metavar="CLUSTER.yaml", help="A cluster file (cluster/aws-gpu.yaml, a KubeRay manifest): which node type "
        "and how many nodes the workers need; refused when no node type fits a worker.")] = None,
    from_run: Annotated[str | None, typer.Option(
        metavar="RUN_ID", help="Train again with the resolved spec this MLflow run recorded (a new run, "
        "tagged resplat.from_run); instead of JOB.yaml.")] = None,
) -> None:
    """Train the model a job spec describes, track it in MLflow, log the final model.

    With a cluster (--address, RAY_ADDRESS or `resplat cluster up`) the job is submitted through
    Ray's Jobs API and outlives the terminal; otherwise it trains here.
    """
    from resplat.cluster.address import local_ray_address, resolve
    from resplat.cluster.capacity import plan_nodes
    from resplat.cluster.remote import on_this_machine
    from resplat.orchestrate import submit as service
    from resplat.spec import load_job

    if (job is None) == (from_run is None):
        from resplat.errors import InputError

        raise InputError("give a JOB.yaml or --from-run RUN_ID (one of them)")
    if from_run is not None:
        from resplat.tracking.lineage import job_file_from_run

        job = job_file_from_run(from_run)
    target = resolve(address)
    spec = load_job(job, set_ or [], paths_elsewhere=target is not None and not on_this_machine(target))
    nodes = plan_nodes(spec.scaling, cluster) if cluster else None
    if dry_run:
        where = target.describe() if target else "a local Ray on this machine"
        for key, value in {"where": where, **service.plan(spec)}.items():
            console.print(f"[bold]{key:>8}[/]  {value}", soft_wrap=True)
        if nodes:
            console.print(f"[bold]{'nodes':>8}[/]  {nodes}", soft_wrap=True)
        if not cluster and (target is None or on_this_machine(target)):  # --cluster plans for that cluster
            service.check_runnable(spec, address=None if target is None else "auto")
        return
    if target is not None:
        _submit_to_cluster(target, spec, job, set_ or [], resume=resume, follow=follow, from_run=from_run)
        return
    here = local_ray_address()  # None: a Ray of our own; "auto": the Ray job we run in
    if resume:
        with TrainingDisplay(spec.name) as display:
            result = service.resume(resume, tracking_uri=spec.tracking.tracking_uri, expect_job=spec.name,
                                    address=here, verbose=verbose, on_update=display.update)
        print_summary(result)
        return
    service.check_runnable(spec, address=here)
    with DataProgress() as bars:
        prepared = service.prepare_data(spec.data, num_classes=spec.model.num_classes, progress=bars.factory)
    with TrainingDisplay(spec.name) as display:
        result = service.submit(spec, prepared=prepared, spec_text=job.read_text(), address=here,
                                verbose=verbose, on_update=display.update, on_run=_from_run_tagger(from_run, spec))
    print_summary(result)


def _from_run_tagger(from_run: str | None, spec):
    """Tags the new run with the run it re-runs (`--from-run`); None otherwise."""
    if from_run is None:
        return None
    from resplat.tracking.lineage import mark_from_run

    return lambda run_id: mark_from_run(spec.tracking.tracking_uri, run_id, from_run)


def _submit_to_cluster(target, spec, job: Path, overrides: list[str], *, resume: str | None, follow: bool,
                       from_run: str | None = None) -> None:
    from resplat.cli.jobs import follow_job
    from resplat.cluster.remote import submit_job

    job_id = submit_job(target, spec, source=str(job), text=job.read_text(), overrides=overrides, resume=resume,
                        from_run=from_run)
    console.print(f"submitted job [bold]{job_id}[/] to {target.describe()}", soft_wrap=True)
    if follow:
        follow_job(target, job_id)
        return
    console.print(f"  follow:  resplat jobs logs {job_id} --follow\n  list:    resplat jobs list\n"
                  f"  stop:    resplat jobs stop {job_id}", soft_wrap=True, markup=False)


@app.command("eval", epilog=examples("resplat eval 3f2c9a0d41b84e6f", "resplat eval RUN_ID --ten-crop --scales 224,256,384"))
@reports_errors
def evaluate(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The MLflow run whose final model to test.",
                                          show_default=False)],
    ten_crop: Annotated[bool, typer.Option(help="The paper's 10-crop testing (ImageNet family).")] = False,
    scales: Annotated[
        str | None, typer.Option(metavar="PIXELS,...",
                                 help="Comma-separated image sizes whose scores are averaged, e.g. 224,256,384.")
    ] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Test a run's model on its validation set (10-crop, several scales) and log the result to the run."""
    from resplat.errors import InputError

    try:
        sizes = [int(s) for s in scales.split(",")] if scales else None
    except ValueError:
        raise InputError(f"--scales {scales!r}: expected comma-separated pixel sizes, e.g. 224,256") from None
    if sizes is not None and min(sizes) < 1:
        raise InputError(f"--scales {scales}: every size must be a positive number of pixels")
    from resplat.tracking.client import local_store_path

    uri = tracking_uri or paths.default_tracking_uri()
    store = local_store_path(uri)
    if store is not None and not store.exists():  # checked before MLflow, which would create an empty store
        raise InputError(f"no MLflow run {run_id}: there is no tracking store at {store} "
                         "(train a model with `resplat submit` first, or give --tracking-uri)")
    from resplat.orchestrate.evaluate import evaluate_run
    with console.status("evaluating..."):
        m = evaluate_run(run_id, tracking_uri=uri, ten_crop=ten_crop, scales=sizes)
    console.print(f"{m['views']}: top-1 {m['eval_top1']:.2%}, top-5 {m['eval_top5']:.2%} "
                  f"on {m['eval_images']} images (logged to run {run_id})")


@app.command(epilog=examples("resplat ui", "resplat ui --port 5001 --workers 2",
                             "RESPLAT_HOME=/data/resplat resplat ui"))
@reports_errors
def ui(
    port: Annotated[int, typer.Option(help="Port to serve on (1-65535).")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to bind (127.0.0.1 keeps it private).")] = "127.0.0.1",
    tracking_uri: TrackingUri = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Server worker processes. Default: one per two "
                                                 "cores, 1 to 4.")] = None,
) -> None:
    """Open the MLflow UI on the runs and registered models; Ctrl-C (or SIGTERM) stops it and its workers."""
    from resplat.cli.ui_server import check_address, default_workers, serve, server_command

    uri = tracking_uri or paths.default_tracking_uri()
    check_address(host, port)
    artifact_root = paths.artifacts_dir() if uri.startswith("sqlite:") else None
    command = server_command(tracking_uri=uri, host=host, port=port, workers=workers or default_workers(),
                             artifact_root=artifact_root)
    starting = console.status(f"starting the MLflow UI for {uri} ...")

    def ready(url: str) -> None:
        starting.stop()
        console.print(f"MLflow UI for {uri} ready at {url}  (Ctrl-C to stop)", soft_wrap=True)

    starting.start()
    try:
        serve(command, host=host, port=port, on_ready=ready)
    finally:
        starting.stop()
    console.print("MLflow UI stopped")


def run() -> None:
    sys.argv[1:] = _debug_anywhere(sys.argv[1:])
    app()


def _debug_anywhere(args: list[str]) -> list[str]:
    """`--debug` after the command name means the same as before it (not after a `--`)."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    set_debug(True)
    return [arg for arg in args[:end] if arg != "--debug"] + args[end:]
