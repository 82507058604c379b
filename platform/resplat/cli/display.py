"""Live terminal displays: data preparation bars, the training progress line, summaries."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(highlight=False)
console.soft_wrap = not console.is_terminal  # a log or a pipe gets whole lines: paths and URLs stay intact


class DataProgress:
    """A progress bar per data source being written to .beton."""

    def __init__(self):
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=console, transient=False,
        )

    def __enter__(self):
        self.bars.start()
        return self

    def __exit__(self, *exc):
        self.bars.stop()

    def factory(self, label: str):
        task = None

        def update(done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = self.bars.add_task(label, total=total)
            self.bars.update(task, completed=done, total=total)

        return update


class TrainingDisplay:
    """One live line: epoch, step/total, loss, img/s, ETA."""

    def __init__(self, job_name: str):
        self.bars = Progress(
            TextColumn("[bold]{task.description}"),
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            TextColumn("step {task.fields[steps]}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[ips]} img/s"),
            TextColumn("{task.fields[val]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.bars.add_task(job_name, total=None, epoch="-", steps="-", loss="-", ips="-",
                                       val="starting Ray...")

    def __enter__(self):
        self.bars.start()
        return self

    def __exit__(self, *exc):
        self.bars.stop()

    def update(self, progress, epochs: list[dict]) -> None:
        if progress is None:
            return
        last = epochs[-1] if epochs else None
        val = f"val top-1 {last['val_top1']:.1%}" if last else ""
        if progress.phase == "val" and len(epochs) < progress.epoch:
            val = "validating..."
        self.bars.update(
            self.task,
            total=progress.total_steps,
            completed=progress.global_step,
            epoch=f"{progress.epoch}/{progress.epochs}",
            steps=f"{progress.global_step}/{progress.total_steps}",
            loss=f"{progress.loss:.3f}",
            ips=f"{progress.images_per_sec:,.0f}",
            val=val,
        )


def print_summary(result) -> None:
    m = result.metrics
    table = Table(title="resplat: job finished", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("val top-1 / top-5", f"{m.get('val_top1', float('nan')):.2%} / {m.get('val_top5', float('nan')):.2%}")
    table.add_row("train img/s", f"{m.get('train_images_per_sec', float('nan')):,.0f}")
    table.add_row("epochs", str(m.get("epoch", "?")))
    table.add_row("wall time", f"{result.wall_seconds:,.0f} s")
    if result.restarts:
        table.add_row("restarts", f"{result.restarts} (resumed from the latest checkpoint)")
    table.add_row("MLflow run", result.run_id)
    table.add_row("model", result.model_uri + (f" (registered v{result.registered_version})"
                                                if result.registered_version else ""))
    table.add_row("open it", result.ui_hint)
    if console.is_terminal:
        console.print(table)
    else:  # a log gets whole lines: a run id, model URI or URL cut inside a table cell cannot be copied
        console.print(table.title, markup=False)
        for label, value in zip(table.columns[0].cells, table.columns[1].cells):
            console.print(f"  {label}: {value}", markup=False)
