"""`resplat report SWEEP --out DIR`: a sweep as the paper's comparison, in HTML and PNG.

The lead registers it with `app.command("report")(report_command)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from resplat import paths
from resplat.cli.display import console
from resplat.cli.errors import reports_errors


@reports_errors
def report_command(
    sweep: Annotated[str, typer.Argument(
        metavar="SWEEP", show_default=False, help="The sweep: its name (the newest sweep of that name) or its parent run id.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Folder to write index.html and the plots into (created if missing).")
    ] = Path("report"),
    tracking_uri: Annotated[str | None, typer.Option(
        help="Default: the embedded store under .resplat/")] = None,
) -> None:
    """Report a sweep like He et al. 2015: error curves, final error by depth and shortcut
    beside the paper's numbers, and the trials ranked."""
    from resplat.tracking.report import build_report

    index = build_report(tracking_uri or paths.default_tracking_uri(), sweep, out)
    console.print(f"report written to [bold]{escape(str(index))}[/]", soft_wrap=True)
