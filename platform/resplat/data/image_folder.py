"""Listing an ImageFolder tree: ``src/<class>/<image>`` (images may sit in sub-folders)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from resplat.errors import DataError

# The suffixes torchvision's ImageFolder accepts, matched case-insensitively.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _class_folders(src: Path) -> list[str]:
    return sorted(
        entry.name for entry in os.scandir(src) if entry.is_dir() and not _is_hidden(entry.name)
    )


def _images_under(folder: Path) -> list[Path]:
    images: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not _is_hidden(d)]
        images.extend(
            Path(root, name)
            for name in files
            if not _is_hidden(name) and Path(name).suffix.lower() in IMAGE_SUFFIXES
        )
    # Sorting by relative path makes the listing (and so labels, sample order and
    # cache keys) independent of the file system's directory order.
    return sorted(images, key=lambda p: p.relative_to(folder).as_posix())


def class_folders(src: Path) -> list[str]:
    """The sorted class folder names of an ImageFolder tree; DataError when there are none.

    Cheap (one directory listing): commands call it to reject a wrong folder before
    they create or import anything.
    """
    if not src.is_dir():
        raise DataError(f"{src}: no such folder (expected an ImageFolder tree src/<class>/<image>)")
    found = _class_folders(src)
    if not found:
        raise DataError(f"{src}: no class folders (expected an ImageFolder tree src/<class>/<image>)")
    return found


def list_image_folder(
    src: Path, classes: Sequence[str] | None = None
) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """List ``(image path, label)`` pairs of an ImageFolder tree and its class names.

    With ``classes=None`` the classes are the sorted names of ``src``'s sub-folders.
    With given ``classes`` (for instance the training set's, when listing a
    validation set) labels are positions in that sequence, and a class folder that
    is not in it is a DataError. Classes without a folder are allowed.
    Raises DataError when ``src`` is missing, has no class folders, or a class
    folder holds no image.
    """
    src = Path(src)
    folder_classes = class_folders(src)

    if classes is None:
        class_names = tuple(folder_classes)
    else:
        class_names = tuple(classes)
        if len(set(class_names)) != len(class_names):
            raise DataError(f"{src}: the given class list has duplicates: {list(class_names)}")
        unknown = [name for name in folder_classes if name not in class_names]
        if unknown:
            raise DataError(
                f"{src}: class folder(s) {unknown} are not among the allowed classes "
                f"{list(class_names)} (for example the training set's)"
            )

    label_of = {name: label for label, name in enumerate(class_names)}
    samples: list[tuple[Path, int]] = []
    for name in folder_classes:
        images = _images_under(src / name)
        if not images:
            raise DataError(
                f"{src / name}: class folder has no images "
                f"(accepted suffixes: {' '.join(sorted(IMAGE_SUFFIXES))})"
            )
        samples.extend((path, label_of[name]) for path in images)
    return samples, class_names
