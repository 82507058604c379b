"""The one error hierarchy of resplat.

Every error a user can cause or meet derives from ResplatError and carries the
exit code the CLI returns. Input errors (bad spec, bad data, bad flag) exit 2 and
must be raised before anything is started or written.
"""

from __future__ import annotations


class ResplatError(Exception):
    """Base of every resplat error; `exit_code` is what the CLI exits with."""

    exit_code = 1


class InputError(ResplatError):
    """The user's input is wrong: a file, a field, a flag. Nothing was started."""

    exit_code = 2


class SpecError(InputError):
    """A job or sweep spec failed validation: one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: invalid spec\n{lines}")


class DataError(InputError):
    """A data source is missing, unreadable or inconsistent (names the path)."""


class RunError(ResplatError):
    """Training, a sweep or the cluster failed after it was started."""


class Interrupted(ResplatError):
    """The user stopped a run or sweep (Ctrl-C); its state is kept and the message says how to continue."""

    exit_code = 130
