"""CIFAR-10 as JPEG files in an ImageFolder layout: ``<cache>/cifar10/{train,test}/<class>/NNNN.jpg``."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from resplat import paths
from resplat.data.atomic import exclusive_lock
from resplat.errors import DataError

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGES_PER_CLASS = {"train": 5000, "test": 1000}
# The shared archive's photos were re-encoded at about this quality; the
# torchvision export matches it so both sources give comparable accuracies.
EXPORT_JPEG_QUALITY = 75


def default_shared_archive() -> Path:
    """``../shared/data/cifar10-jpeg.tar.gz`` beside the resplat checkout (else beside the current folder)."""
    root = paths.checkout_root() or Path.cwd()
    return root.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def is_complete(root: Path) -> bool:
    """Whether every class folder of both splits holds its full count of .jpg files."""
    for split, per_class in IMAGES_PER_CLASS.items():
        for name in CIFAR10_CLASSES:
            folder = root / split / name
            if not folder.is_dir():
                return False
            if sum(1 for entry in os.scandir(folder) if entry.name.endswith(".jpg")) != per_class:
                return False
    return True


def _extract_archive(archive: Path, staging: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(staging, filter="data")
    except (OSError, tarfile.TarError) as error:
        raise DataError(f"{archive}: cannot extract the CIFAR-10 archive ({error})") from None


def _export_from_torchvision(staging: Path) -> None:
    """Download CIFAR-10 with torchvision and write every image as a JPEG file."""
    from PIL import Image
    from torchvision.datasets import CIFAR10

    download_root = staging / "download"
    for split, train in (("train", True), ("test", False)):
        try:
            dataset = CIFAR10(root=str(download_root), train=train, download=True)
        except Exception as error:  # noqa: BLE001 - network and archive errors of many kinds
            raise DataError(
                f"{download_root}: could not download CIFAR-10 with torchvision ({error})"
            ) from None
        if tuple(dataset.classes) != CIFAR10_CLASSES:
            raise DataError(f"{download_root}: unexpected CIFAR-10 classes {dataset.classes}")
        written = [0] * len(CIFAR10_CLASSES)
        for name in CIFAR10_CLASSES:
            (staging / "cifar10" / split / name).mkdir(parents=True)
        for pixels, label in zip(dataset.data, dataset.targets):
            folder = staging / "cifar10" / split / CIFAR10_CLASSES[label]
            Image.fromarray(pixels).save(
                folder / f"{written[label]:04d}.jpg", quality=EXPORT_JPEG_QUALITY
            )
            written[label] += 1


def ensure_cifar10(cache_dir: Path, shared_archive: Path | None = None) -> Path:
    """Make ``cache_dir/cifar10/{train,test}/<class>/*.jpg`` complete and return ``cache_dir/cifar10``.

    Sources, in order: an already complete folder; the shared archive (default
    :func:`default_shared_archive`); torchvision's CIFAR-10 download, exported as
    JPEG (quality 75) with files numbered NNNN.jpg per class in dataset order.
    Work happens in a temporary folder renamed into place when complete, so an
    interrupted run leaves nothing half-done; an incomplete ``cifar10`` folder
    found in the cache is replaced.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / "cifar10"
    if is_complete(target):
        return target
    archive = Path(shared_archive) if shared_archive is not None else default_shared_archive()
    created = [p for p in (cache_dir, *cache_dir.parents) if not p.exists()]
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{cache_dir}: cannot create the data set folder ({error.strerror})") from None
    try:
        return _fill(target, archive)
    except BaseException:
        if created:  # a folder this call made holds only its lock: leave nothing behind
            (cache_dir / ".cifar10.lock").unlink(missing_ok=True)
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:
                    break
        raise


def _fill(target: Path, archive: Path) -> Path:
    cache_dir = target.parent
    with exclusive_lock(cache_dir / ".cifar10.lock"):
        if is_complete(target):  # another process finished it while we waited
            return target
        staging = Path(tempfile.mkdtemp(prefix=".cifar10-", dir=cache_dir))
        try:
            if archive.is_file():
                _extract_archive(archive, staging)
                source = str(archive)
            else:
                _export_from_torchvision(staging)
                source = "torchvision's CIFAR-10 download"
            built = staging / "cifar10"
            if not is_complete(built):
                raise DataError(
                    f"{source}: does not give the complete layout cifar10/{{train,test}}/<class>/*.jpg "
                    f"(5,000 and 1,000 images per class)"
                )
            if target.exists():
                os.replace(target, staging / "incomplete-previous-copy")
            os.replace(built, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
