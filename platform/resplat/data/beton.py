"""Preparing ImageFolder trees as FFCV .beton files, with a JSON sidecar and a content cache.

A finished ``<name>.beton`` always has ``<name>.beton.json`` beside it (classes,
image count, sha256 of the .beton, options, skipped images). Both are written
under temporary names and renamed when complete, so an error or Ctrl-C never
leaves a partial file behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from resplat.data.atomic import (
    exclusive_lock,
    fsync_file,
    sha256_of_file,
    temporary_sibling,
    write_text_atomically,
)
from resplat.data.fingerprint import folder_content_key
from resplat.data.image_folder import list_image_folder
from resplat.errors import DataError, InputError

__all__ = [
    "BetonInfo",
    "WriteOptions",
    "cached_beton",
    "list_image_folder",
    "read_beton_info",
    "sidecar_path",
    "write_beton",
]

StorageOption = Literal["auto", "raw", "jpeg", "proportional"]
ProgressCallback = Callable[[int, int], None]

_STORAGE_CHOICES = ("auto", "raw", "jpeg", "proportional")
_AUTO_RAW_MAX_SIDE = 64
_SIZE_SAMPLE = 256  # images whose headers are read to resolve "auto" and size pages
_MIN_PAGE_SIZE = 1 << 21  # FFCV's minimum
_MAX_PAGE_SIZE = 1 << 31
_SIDECAR_FORMAT = "resplat-beton/1"


@dataclass(frozen=True)
class WriteOptions:
    """How images are stored in a .beton.

    storage: "raw" keeps decoded pixels (largest, fastest to load), "jpeg"
    re-encodes at ``jpeg_quality``, "proportional" stores a ``compress_probability``
    share as JPEG, "auto" picks raw when images (after ``max_resolution``) are at
    most 64 px on their longest side, else JPEG.
    """

    max_resolution: int | None = None
    storage: StorageOption = "auto"
    jpeg_quality: int = 90
    compress_probability: float = 0.5
    num_workers: int = 2
    skip_bad: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.max_resolution is not None and (
            not isinstance(self.max_resolution, int) or self.max_resolution < 1
        ):
            problems.append(
                f"max_resolution must be a positive integer or None, not {self.max_resolution!r}"
            )
        if self.storage not in _STORAGE_CHOICES:
            problems.append(
                f"storage must be one of {list(_STORAGE_CHOICES)}, not {self.storage!r}"
            )
        if not isinstance(self.jpeg_quality, int) or not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be an integer in 1..100, not {self.jpeg_quality!r}")
        if not 0.0 <= self.compress_probability <= 1.0:
            problems.append(
                f"compress_probability must be in [0, 1], not {self.compress_probability!r}"
            )
        if not isinstance(self.num_workers, int) or self.num_workers < 1:
            problems.append(f"num_workers must be a positive integer, not {self.num_workers!r}")
        if problems:
            raise InputError("invalid write options: " + "; ".join(problems))


@dataclass(frozen=True)
class BetonInfo:
    path: Path
    num_images: int
    classes: tuple[str, ...]
    sha256: str
    skipped: int
    storage: str  # as stored: "raw", "jpeg" or "proportional" ("auto" is resolved)
    max_resolution: int | None


def sidecar_path(beton: Path) -> Path:
    return Path(beton).with_name(Path(beton).name + ".json")


def _sampled_longest_sides(samples: Sequence[tuple[Path, int]]) -> list[int]:
    from resplat.data.image_codec import image_size  # OpenCV: only once there is something to write

    step = max(1, len(samples) // _SIZE_SAMPLE)
    sizes = (image_size(path) for path, _ in samples[::step])
    return [max(size) for size in sizes if size is not None]


def _resolve_storage(options: WriteOptions, longest_sides: list[int]) -> str:
    if options.storage != "auto":
        return options.storage
    if options.max_resolution is not None and options.max_resolution <= _AUTO_RAW_MAX_SIDE:
        return "raw"
    stored_sides = [min(side, options.max_resolution or side) for side in longest_sides]
    return "raw" if stored_sides and max(stored_sides) <= _AUTO_RAW_MAX_SIDE else "jpeg"


def _page_size_for(
    options: WriteOptions, storage: str, num_images: int, longest_sides: list[int]
) -> int:
    """FFCV stores each sample within one page: pages must hold the largest expected image.

    Small sets get 2 MiB pages (the data starts one page into the file and every
    worker ends on a partly filled page); larger ones FFCV's default 8 MiB. JPEG
    photos are assumed to compress at least 4:1 (natural photos: about 10:1); an
    image that still does not fit is reported with a hint to set max_resolution.
    """
    from resplat.data.beton_file import DEFAULT_PAGE_SIZE

    side = options.max_resolution or max(longest_sides, default=0)
    largest = 3 * side * side
    if storage == "jpeg":
        largest //= 4
    page_size = _MIN_PAGE_SIZE if num_images * largest < (256 << 20) else DEFAULT_PAGE_SIZE
    while page_size < 2 * largest and page_size < _MAX_PAGE_SIZE:
        page_size <<= 1
    return page_size


def _write_listed(
    src: Path,
    samples: Sequence[tuple[Path, int]],
    classes: tuple[str, ...],
    out: Path,
    options: WriteOptions,
    progress: ProgressCallback | None,
) -> BetonInfo:
    out.parent.mkdir(parents=True, exist_ok=True)
    from resplat.data.beton_file import ImageEncoding, write_image_label_file

    longest_sides = _sampled_longest_sides(samples)
    storage = _resolve_storage(options, longest_sides)
    encoding = ImageEncoding(
        max_resolution=options.max_resolution,
        storage=storage,
        jpeg_quality=options.jpeg_quality,
        compress_probability=options.compress_probability,
    )
    sidecar = sidecar_path(out)
    temporary = temporary_sibling(out)
    published = False
    try:
        result = write_image_label_file(
            temporary,
            samples,
            encoding,
            num_workers=options.num_workers,
            skip_bad=options.skip_bad,
            page_size=_page_size_for(options, storage, len(samples), longest_sides),
            progress=progress,
        )
        if result.num_written == 0:
            raise DataError(f"{src}: none of its {len(samples)} images could be read")
        fsync_file(temporary)
        digest = sha256_of_file(temporary)
        record = {
            "format": _SIDECAR_FORMAT,
            "source": str(src),
            "classes": list(classes),
            "num_images": result.num_written,
            "sha256": digest,
            "size_bytes": temporary.stat().st_size,
            "storage": storage,
            "max_resolution": options.max_resolution,
            "options": dataclasses.asdict(options),
            "skipped": len(result.skipped),
            "skipped_files": [path.relative_to(src).as_posix() for path in result.skipped],
        }
        # Drop a previous sidecar first: it must never describe the new file.
        sidecar.unlink(missing_ok=True)
        os.replace(temporary, out)
        published = True
        write_text_atomically(sidecar, json.dumps(record, indent=2) + "\n")
    except BaseException:
        temporary.unlink(missing_ok=True)
        if published:
            out.unlink(missing_ok=True)
        raise
    return BetonInfo(
        path=out,
        num_images=result.num_written,
        classes=classes,
        sha256=digest,
        skipped=len(result.skipped),
        storage=storage,
        max_resolution=options.max_resolution,
    )


def write_beton(
    src: Path,
    out: Path,
    options: WriteOptions = WriteOptions(),
    *,
    classes: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
) -> BetonInfo:
    """Write the ImageFolder tree ``src`` into the .beton ``out`` (fields "image", "label").

    Labels follow ``classes`` (default: sorted class folder names; pass the
    training set's for a validation set). Every image is decoded while writing:
    a corrupt one raises DataError naming it, or with ``options.skip_bad`` is left
    out and counted. ``progress(done, total)`` is called from this process as
    images are processed; whatever it raises aborts the write. On any error or
    KeyboardInterrupt neither ``out`` nor a temporary file is left behind.
    """
    src, out = Path(src), Path(out)
    samples, class_names = list_image_folder(src, classes)
    return _write_listed(src, samples, class_names, out, options, progress)


def read_beton_info(path: Path) -> BetonInfo:
    """Describe a .beton from its sidecar; DataError if either file is missing or they disagree."""
    path = Path(path)
    sidecar = sidecar_path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such .beton file")
    if not sidecar.is_file():
        raise DataError(
            f"{sidecar}: sidecar missing (the .beton was not written by resplat); prepare it again"
        )
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        info = BetonInfo(
            path=path,
            num_images=int(record["num_images"]),
            classes=tuple(str(name) for name in record["classes"]),
            sha256=str(record["sha256"]),
            skipped=int(record["skipped"]),
            storage=str(record["storage"]),
            max_resolution=record["max_resolution"],
        )
        size_bytes = int(record["size_bytes"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"{sidecar}: unreadable sidecar ({error}); prepare the .beton again"
        ) from None
    if path.stat().st_size != size_bytes:
        raise DataError(
            f"{path}: its size differs from what {sidecar.name} records; prepare it again"
        )
    return info


def count_images(source: Path) -> int:
    """Images in a data source: a .beton (from its sidecar) or an image folder (listed)."""
    source = Path(source)
    if source.suffix == ".beton":
        return read_beton_info(source).num_images
    return len(list_image_folder(source)[0])


def _cache_name(src: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", src.resolve().name) or "images"


def cached_beton(
    src: Path,
    cache_dir: Path,
    options: WriteOptions = WriteOptions(),
    *,
    classes: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
) -> BetonInfo:
    """Prepare ``src`` once into ``cache_dir/<folder>-<key>.beton`` and reuse it afterwards.

    The key hashes every listed image (relative path, label and bytes), the
    classes and the options that change the output (not num_workers), so any
    changed, added or removed image gives a new file. A lock file serialises
    processes preparing the same key: the second one finds the finished file.
    """
    src, cache_dir = Path(src), Path(cache_dir)
    samples, class_names = list_image_folder(src, classes)
    settings = {k: v for k, v in dataclasses.asdict(options).items() if k != "num_workers"}
    key = folder_content_key(src, samples, class_names, settings)
    out = cache_dir / f"{_cache_name(src)}-{key}.beton"
    with exclusive_lock(cache_dir / f".{out.name}.lock"):
        try:
            return read_beton_info(out)
        except DataError:
            pass
        return _write_listed(src, samples, class_names, out, options, progress)
