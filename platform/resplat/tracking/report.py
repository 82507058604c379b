"""The report of one sweep: the paper's comparison, as PNG plots and one HTML page.

The store is read by `resplat.tracking.sweeps`; the plots and the page are drawn by the
`resplat.report` package. This module puts them together and writes the folder atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from resplat.errors import InputError
from resplat.report.html import ERROR_CURVES_PNG, FINAL_ERROR_PNG, INDEX_HTML, render_html
from resplat.report.plots import plot_error_curves, plot_final_errors
from resplat.tracking.sweeps import Sweep, load_sweep

__all__ = ["build_report", "load_sweep", "write_report"]


def _check_output_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a folder")


def _publish(staging: Path, out_dir: Path) -> None:
    """Move the finished report into place; index.html last so it never points at missing plots."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    for file in sorted(staging.iterdir(), key=lambda p: p.name == INDEX_HTML):
        os.replace(file, out_dir / file.name)


def write_report(sweep: Sweep, folder: Path) -> None:
    plot_error_curves(sweep.trials, folder / ERROR_CURVES_PNG)
    plot_final_errors(sweep.trials, folder / FINAL_ERROR_PNG)
    (folder / INDEX_HTML).write_text(render_html(sweep), encoding="utf-8")


def build_report(tracking_uri: str, sweep: str, out_dir: Path) -> Path:
    """Write the report of `sweep` (a parent run id or sweep name) into out_dir; return index.html.

    Everything is written to a hidden staging folder beside out_dir and moved into place at the
    end, so a failure leaves out_dir as it was.
    """
    out_dir = Path(out_dir)
    _check_output_dir(out_dir)
    record = load_sweep(tracking_uri, sweep)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; it may become out_dir itself
        write_report(record, staging)
        _publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / INDEX_HTML
