"""The project's code as a job's working_dir: one zip, built here, checked against Ray's limit.

What ships: the files git would track (.gitignore honoured), never local state, virtual
environments or data. Built by resplat rather than by Ray so that a folder over Ray's upload
limit is refused before anything is sent, naming the largest files.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import zipfile
from pathlib import Path

from resplat.errors import InputError

EXCLUDES = (".resplat", ".venv", ".git", "*.beton", "*.tar.gz", "__pycache__", ".pytest_cache", ".ruff_cache",
            "mlruns", "*.egg-info")
DEFAULT_LIMIT = 512 * 2**20


def upload_limit() -> int:
    """Ray's own cap on an uploaded package (it follows RAY_max_grpc_message_size)."""
    try:
        from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE
    except ImportError:
        return int(os.environ.get("RAY_max_grpc_message_size", DEFAULT_LIMIT))
    return GCS_STORAGE_MAX_SIZE


def _excluded(relative: str) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in Path(relative).parts for pattern in EXCLUDES)


def shipped_files(root: Path) -> list[str]:
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                                capture_output=True, text=True, timeout=60, check=True).stdout.split("\0")
    except (OSError, subprocess.SubprocessError):
        listed = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    return sorted(name for name in listed if name and not _excluded(name) and (root / name).is_file())


def build(root: Path, dest: Path) -> Path:
    """Zip `root`'s shipped files into `dest` (a .zip path); InputError when over Ray's limit."""
    files = shipped_files(root)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            archive.write(root / name, name)
    size, limit = dest.stat().st_size, upload_limit()
    if size >= limit:
        largest = sorted(files, key=lambda name: (root / name).stat().st_size, reverse=True)[:3]
        biggest = ", ".join(f"{name} ({_size((root / name).stat().st_size)})" for name in largest)
        dest.unlink()
        raise InputError(f"{root} zips to {_size(size)}, over Ray's upload limit of {_size(limit)} for a "
                         f"job's code; largest files: {biggest}. "
                         "Add them to .gitignore or keep data outside the project")
    return dest


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"
