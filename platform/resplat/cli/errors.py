"""How a ResplatError reaches the terminal: one clear message, the right exit code."""

from __future__ import annotations

import functools
import sys
import traceback

import typer
from rich.console import Console

from resplat.errors import Interrupted, ResplatError

stderr = Console(stderr=True, highlight=False)
_debug = {"on": False}


def set_debug(on: bool) -> None:
    _debug["on"] = on


def reports_errors(command):
    """Turn ResplatError (and Ctrl-C) into a message and exit code; tracebacks only with --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Interrupted as e:
            stderr.print(f"[yellow]interrupted:[/] {e}", markup=True, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except ResplatError as e:
            if _debug["on"]:
                traceback.print_exc(file=sys.stderr)
            stderr.print(f"[bold red]error:[/] {e}", markup=True, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            stderr.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper
