"""Shared fixtures: real CIFAR-10 images from ../shared, small subsets of them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_TRACKING_URI_AT_START = os.environ.get("MLFLOW_TRACKING_URI")


def pytest_configure(config) -> None:
    """Once, before any test (and before pytest-xdist starts its workers): the Ray token exists, so
    two Rays started side by side on a fresh machine do not each write a different one."""
    if hasattr(config, "workerinput"):
        return
    if not (Path.home() / ".ray" / "auth_token").exists():
        ray = Path(sys.executable).parent / "ray"
        subprocess.run([str(ray), "get-auth-token", "--generate"], capture_output=True, check=True)


def pytest_collection_modifyitems(items) -> None:
    """Modules with slow tests first, each kept whole (its module fixtures are set up once): with
    two workers (make test), the long ones then run beside the short ones instead of alone at the end."""
    slow_modules = {item.module for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module not in slow_modules)


@pytest.fixture(autouse=True)
def _tracking_uri_does_not_leak():
    """mlflow.set_tracking_uri() in a test also sets MLFLOW_TRACKING_URI, which resplat reads as its
    default store and every later `resplat` subprocess would inherit: put it back after each test."""
    yield
    if _TRACKING_URI_AT_START is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = _TRACKING_URI_AT_START


@pytest.fixture(scope="session", autouse=True)
def _compiled_code_cache(tmp_path_factory):
    """One numba cache for all of the session's processes (Ray workers inherit the variable):
    FFCV's stages compile once per session, and nothing is left in ~/.cache."""
    os.environ.setdefault("NUMBA_CACHE_DIR", str(tmp_path_factory.mktemp("numba-cache")))


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """The full CIFAR-10 image folder (extracted once from ../shared into .resplat/datasets)."""
    from resplat.data.cifar10 import ensure_cifar10

    return ensure_cifar10(ROOT / ".resplat" / "datasets")


def copy_subset(src: Path, dst: Path, per_class: int) -> Path:
    for class_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        target = dst / class_dir.name
        target.mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            shutil.copy(image, target / image.name)
    return dst


def make_subset(cifar10_root: Path, tmp_path_factory, name: str, train: int, test: int) -> Path:
    root = tmp_path_factory.mktemp(name)
    copy_subset(cifar10_root / "train", root / "train", train)
    copy_subset(cifar10_root / "test", root / "test", test)
    return root


@pytest.fixture(scope="session")
def cifar_subset(cifar10_root: Path, tmp_path_factory) -> Path:
    """A few hundred real CIFAR-10 images: train/ (40 per class) and test/ (10 per class)."""
    return make_subset(cifar10_root, tmp_path_factory, "cifar-subset", 40, 10)


@pytest.fixture(scope="session")
def cifar_medium(cifar10_root: Path, tmp_path_factory) -> Path:
    """2,000 real training images (200 per class) and 500 test images: epochs of a few seconds."""
    return make_subset(cifar10_root, tmp_path_factory, "cifar-medium", 200, 50)
