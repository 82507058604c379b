"""How a ResplatError reaches the terminal: one clear message, the right exit code."""

from __future__ import annotations

import functools
import sys
import traceback

import typer
from rich.console import Console
from rich.markup import escape

from resplat.errors import Interrupted, ResplatError

stderr = Console(stderr=True, highlight=False)
stderr.soft_wrap = not stderr.is_terminal  # a log or a pipe gets whole lines: paths and URLs stay intact
_debug = {"on": False}

# Every typer app and sub-app takes these, so `-h` works wherever `--help` does.
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


def plain_usage_names() -> None:
    """Usage lines name arguments plainly (`JOB.yaml`), as click does, not in typer's `{JOB.yaml}` braces."""
    from typer.core import TyperArgument

    if not hasattr(TyperArgument, "_usage_display_name"):
        return

    def usage_name(argument) -> str:
        name = argument.display_name_raw if argument.required else f"[{argument.display_name_raw}]"
        return name + ("..." if argument.nargs != 1 else "")

    TyperArgument._usage_display_name = usage_name


def examples(*lines: str) -> str:
    """A command's help epilog: example command lines, kept one per line."""
    return "Examples:\n\n" + "\n\n".join(f"  $ {line}" for line in lines)


def set_debug(on: bool) -> None:
    _debug["on"] = on


def reports_errors(command):
    """Turn ResplatError (and Ctrl-C) into a message and exit code; tracebacks only with --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Interrupted as e:
            stderr.print(f"[yellow]interrupted:[/] {escape(str(e))}", markup=True, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except ResplatError as e:
            if _debug["on"]:
                traceback.print_exc(file=sys.stderr)
            stderr.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            stderr.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper
