"""Where resplat keeps its local state: `.resplat/` under the working directory.

RESPLAT_HOME overrides it. Paths are absolute so that Ray workers, whose working
directory differs, see the same files.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("RESPLAT_HOME", ".resplat")).expanduser().absolute()


def datasets_dir() -> Path:
    return home() / "datasets"


def beton_cache_dir() -> Path:
    return home() / "betons"


def ray_results_dir() -> Path:
    return home() / "ray_results"


def logs_dir() -> Path:
    return home() / "logs"


def default_tracking_uri() -> str:
    return f"sqlite:///{home() / 'mlflow.db'}"


def artifacts_dir() -> Path:
    return home() / "mlartifacts"
