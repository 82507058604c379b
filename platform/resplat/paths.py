"""Where resplat keeps its state and data sets: one rule, whatever the working directory.

    RESPLAT_HOME, when set;
    else `.resplat/` of the resplat checkout, when resplat runs from one (`make setup`
         installs the checkout in editable mode);
    else `~/.resplat`.

Data sets live in `$RESPLAT_DATA`, default `<home>/datasets`; job files name them as
`${RESPLAT_DATA}/...` (spec.py supplies that default). Paths are absolute so that Ray
workers, whose working directory differs, see the same files.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"


@cache
def checkout_root() -> Path | None:
    """The source checkout this package runs from (it holds pyproject.toml and jobs/), or None."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "jobs").is_dir():
        return root
    return None


def home() -> Path:
    configured = os.environ.get("RESPLAT_HOME")
    if configured:
        return Path(configured).expanduser().absolute()
    root = checkout_root()
    return root / ".resplat" if root else Path.home() / ".resplat"


def datasets_dir() -> Path:
    configured = os.environ.get("RESPLAT_DATA")
    return Path(configured).expanduser().absolute() if configured else home() / "datasets"


def spaces_dirs() -> list[Path]:
    """Where named sweep spaces are looked up: ./jobs/spaces, then the checkout's shipped ones."""
    found = [Path("jobs", "spaces").absolute()]
    root = checkout_root()
    if root and (root / "jobs" / "spaces").resolve() != found[0].resolve():
        found.append(root / "jobs" / "spaces")
    return found


def beton_cache_dir() -> Path:
    return home() / "betons"


def logs_dir() -> Path:
    return home() / "logs"


def default_tracking_uri() -> str:
    return f"{SQLITE_PREFIX}{home() / 'mlflow.db'}"


def artifacts_dir() -> Path:
    return home() / "mlartifacts"


def missing_sqlite_store(tracking_uri: str) -> Path | None:
    """The SQLite file a tracking URI names when that file does not exist (opening it would create it)."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    path = Path(tracking_uri.removeprefix(SQLITE_PREFIX))
    return None if path.exists() else path


def compiled_code_cache_dir() -> Path:
    """Where FFCV's numba-compiled pipeline stages are cached: `$NUMBA_CACHE_DIR` when set, else
    `$XDG_CACHE_HOME/resplat/numba` (default `~/.cache/...`). Outside RESPLAT_HOME on purpose:
    compiled code depends on the machine and the installed libraries, not on a project's state."""
    configured = os.environ.get("NUMBA_CACHE_DIR")
    if configured:
        return Path(configured).expanduser().absolute()
    cache_root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_root).expanduser().absolute() / "resplat" / "numba"
