"""`resplat jobs ...`: the jobs submitted to a Ray cluster: list, status, logs, stop."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from resplat.cli.cluster import Address
from resplat.cli.display import console
from resplat.cli.errors import HELP_OPTIONS, examples, reports_errors

app = typer.Typer(help="List, follow and stop the jobs submitted to a Ray cluster.", no_args_is_help=True, context_settings=HELP_OPTIONS)

JobId = Annotated[str, typer.Argument(metavar="JOB_ID", help="The id `resplat submit` printed "
                                      "(see `resplat jobs list`).", show_default=False)]


def _target(address: str | None):
    from resplat.cluster.address import resolve

    return resolve(address, allow_local=False)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _started(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-"


@app.command("list", epilog=examples('resplat jobs list'))
@reports_errors
def list_(address: Address = None) -> None:
    """The jobs submitted to the cluster, newest first: name, status, start, duration, MLflow run."""
    from resplat.cluster import jobs_api

    target = _target(address)
    columns = ("job id", "name", "kind", "status", "started", "duration", "MLflow run")
    rows = [(row.job_id, row.name, row.kind, row.status, _started(row.start), _duration(row.duration),
             row.run_id or "-") for row in jobs_api.list_jobs(target)]
    if not console.is_terminal:  # a pipe or a log: one tab-separated line per job, nothing cut
        print("\t".join(columns))
        for row in rows:
            print("\t".join(row))
        return
    table = Table(title=f"jobs on {target.url}", title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=column in ("job id", "MLflow run"))
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command(epilog=examples('resplat jobs status resplat-cifar10-resnet20-20261129-101500-ab12'))
@reports_errors
def status(job_id: JobId, address: Address = None) -> None:
    """One job: its status, times, MLflow run and Ray's message."""
    from resplat.cluster import jobs_api

    row = jobs_api.status(_target(address), job_id)
    for key, value in (("job", row.job_id), ("name", row.name), ("status", row.status),
                       ("started", _started(row.start)), ("duration", _duration(row.duration)),
                       ("MLflow run", row.run_id or "-"), ("message", row.message or "-")):
        console.print(f"[bold]{key:>10}[/]  {value}", soft_wrap=True)


@app.command(epilog=examples('resplat jobs logs JOB_ID', 'resplat jobs logs JOB_ID --follow'))
@reports_errors
def logs(
    job_id: JobId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends "
                                         "(Ctrl-C stops following, not the job).")] = False,
    address: Address = None,
) -> None:
    """A job's log (its driver's output: one line per epoch)."""
    from resplat.cluster import jobs_api

    target = _target(address)
    if follow:
        follow_job(target, job_id)
    else:
        sys.stdout.write(jobs_api.logs(target, job_id))


@app.command(epilog=examples('resplat jobs stop JOB_ID'))
@reports_errors
def stop(job_id: JobId, address: Address = None) -> None:
    """Stop a job: Ray stops its driver, which ends its MLflow run as KILLED (checkpoints kept)."""
    from resplat.cluster import jobs_api

    row = jobs_api.stop(_target(address), job_id)
    console.print(f"job {row.job_id}: {row.status}", soft_wrap=True)
    if row.run_id:
        console.print(f"continue it with: resplat submit JOB.yaml --resume {row.run_id}", soft_wrap=True,
                      markup=False)


def follow_job(target, job_id: str) -> None:
    """Stream the job's log to the terminal; exit with its outcome. Ctrl-C detaches."""
    from resplat.cluster import jobs_api

    try:
        for chunk in jobs_api.follow(target, job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyboardInterrupt:
        console.print(f"\ndetached; job {job_id} keeps running. Follow again with: "
                      f"resplat jobs logs {job_id} --follow", soft_wrap=True, markup=False)
        return
    row = jobs_api.wait(target, job_id, timeout=30)
    console.print(f"job {job_id}: {row.status}", soft_wrap=True)
    error = jobs_api.outcome_error(row, jobs_api.driver_exit_code(target, job_id))
    if error is not None:
        raise error
