"""Content keys of image folders, for caching prepared .beton files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

# Bump when the writer's output for the same inputs changes, so old caches are not reused.
WRITER_FORMAT_VERSION = 1


def folder_content_key(
    src: Path,
    samples: Sequence[tuple[Path, int]],
    classes: Sequence[str],
    settings: Mapping[str, object],
    length: int = 20,
) -> str:
    """Hex digest over the listed files (relative path, label, bytes), classes and settings."""
    digest = hashlib.sha256()
    header = {"writer": WRITER_FORMAT_VERSION, "classes": list(classes), "settings": dict(settings)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for path, label in samples:
        relative = Path(path).relative_to(src).as_posix().encode()
        data = Path(path).read_bytes()
        # Lengths make the concatenation unambiguous.
        digest.update(b"%d:%s:%d:%d:" % (len(relative), relative, label, len(data)))
        digest.update(data)
    return digest.hexdigest()[:length]
