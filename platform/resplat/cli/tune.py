"""`resplat tune --space NAME`: run a sweep with a live table of trials, then the ranked results.

The lead registers it with `app.command("tune")(tune_command)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from resplat.cli.display import DataProgress, console
from resplat.cli.errors import reports_errors


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_value(value)}" for key, value in params.items())


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def trials_table(views, metric: str, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("trial", "params", "status", "epoch", metric):
        table.add_column(column)
    for view in views:
        table.add_row(view.trial_id, escape(_params(view.params)), view.status, str(view.epoch or "-"),
                      _metric(view.metric))
    return table


def ranked_table(result) -> Table:
    table = Table(title=f"resplat: sweep {result.name} ranked by {result.metric} ({result.mode})",
                  title_justify="left")
    for column in ("#", "trial", "params", "status", "epochs", result.metric):
        table.add_column(column)
    for i, trial in enumerate(result.trials, 1):
        style = "bold green" if result.best and trial.trial_id == result.best.trial_id else None
        table.add_row(str(i), trial.trial_id, escape(_params(trial.params)), trial.status, str(trial.epochs),
                      _metric(trial.metric), style=style)
    return table


def print_sweep_summary(result) -> None:
    console.print(ranked_table(result))
    console.print(f"[bold]sweep run[/]  {result.parent_run_id}   ({escape(result.ui_hint)})")
    if result.registered_version:
        champion = "now champion" if result.champion_moved else (
            f"champion stays v{result.previous_champion.get('version')}")
        console.print(f"[bold]best[/]  {result.best.trial_id}: {escape(result.model_uri)} registered as "
                      f"{escape(result.registered_as)} v{result.registered_version} ({champion})")
    console.print(f"[bold]wall time[/]  {result.wall_seconds:,.0f} s")


@reports_errors
def tune_command(
    space: Annotated[str, typer.Option(
        "--space", metavar="NAME|FILE.yaml",
        help="Sweep space: a name in jobs/spaces/ (e.g. shortcuts) or a YAML path.")],
    job: Annotated[Path | None, typer.Option(
        "--job", metavar="JOB.yaml", help="Base job instead of the space's base_job.")] = None,
    samples: Annotated[int | None, typer.Option(
        "--samples", min=1, help="Trials per grid point (overrides the space's samples).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", metavar="FIELD=VALUE",
        help="Override a base job field for every trial: --set schedule.epochs=2.")] = None,
    resume: Annotated[str | None, typer.Option(
        "--resume", metavar="SWEEP", help="Continue this interrupted sweep (name or parent run id).")] = None,
    address: Annotated[str | None, typer.Option(
        metavar="URL", help="Submit the sweep to the Ray cluster whose dashboard is at URL (http://HEAD:8265). "
        "Default: RAY_ADDRESS, else the cluster `resplat cluster up` recorded, else run here.")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="On a cluster: stream the sweep's progress (Ctrl-C detaches).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Ray's own logs.")] = False,
) -> None:
    """Sweep job fields with Ray Tune: every trial a tracked run, the best model registered."""
    from resplat.cluster.address import local_ray_address, resolve
    from resplat.sweep import load_space

    target = resolve(address)
    sweep = load_space(space, job_override=job, overrides=set_ or [])
    if samples is not None:
        sweep.space.samples = samples
    if target is not None:
        _submit_to_cluster(target, sweep, space=space, job=job, overrides=set_ or [], samples=samples,
                           resume=resume, follow=follow)
        return
    # torch and ray load only once the input is known to be good
    from resplat.orchestrate.submit import check_runnable, prepare_data
    from resplat.orchestrate.tune import run_sweep

    check_runnable(sweep.base_spec, address=local_ray_address())
    metric = sweep.space.metric
    with DataProgress() as bars:  # prepared here, with bars; run_sweep then finds the .beton files cached
        prepare_data(sweep.base_spec.data, num_classes=sweep.base_spec.model.num_classes, progress=bars.factory)
    with Live(trials_table([], metric, f"sweep {sweep.space.name}: starting Ray..."),
              console=console, refresh_per_second=2) as live:
        def show(views) -> None:
            live.update(trials_table(views, metric, f"sweep {sweep.space.name}"))

        result = run_sweep(sweep, address=local_ray_address(), verbose=verbose, on_update=show, resume=resume)
    print_sweep_summary(result)


def _submit_to_cluster(target, sweep, *, space: str, job: Path | None, overrides: list[str], samples: int | None,
                       resume: str | None, follow: bool) -> None:
    from resplat.cli.jobs import follow_job
    from resplat.cluster.remote import submit_sweep

    job_id = submit_sweep(target, sweep, space=space, job=str(job) if job else None, overrides=overrides,
                          samples=samples, resume=resume)
    console.print(f"submitted sweep [bold]{job_id}[/] to {escape(target.describe())}", soft_wrap=True)
    if follow:
        follow_job(target, job_id)
        return
    console.print(f"  follow:  resplat jobs logs {job_id} --follow\n  stop:    resplat jobs stop {job_id}",
                  soft_wrap=True, markup=False)
