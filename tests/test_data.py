"""resplat.data: .beton writing, caching and FFCV loaders, on small subsets of real CIFAR-10.

Building FFCV loaders costs numba compilation (5-15 s per new pipeline in a
process), so few tests build them and the .beton files are module-scoped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing
from PIL import Image

from resplat.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    WriteOptions,
    build_loader,
    cached_beton,
    ensure_cifar10,
    list_image_folder,
    read_beton_info,
    sidecar_path,
    validation_shard,
    write_beton,
)
from resplat.errors import DataError, InputError

REPO = Path(__file__).resolve().parents[1]
TRAIN_PER_CLASS = 12
VAL_PER_CLASS = 5  # one image is then removed: 49 cannot be split evenly over 2 ranks
PHOTOS_PER_CLASS = 4


def _copy_subset(split_dir: Path, dest: Path, per_class: int) -> Path:
    for class_dir in sorted(split_dir.iterdir()):
        (dest / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            shutil.copyfile(image, dest / class_dir.name / image.name)
    return dest


def _pil_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _stored_pixels(beton: Path) -> list[np.ndarray]:
    """Raw-mode images read straight from the file through FFCV's Reader (no loader)."""
    from ffcv.reader import Reader

    reader = Reader(str(beton))
    data = np.fromfile(beton, dtype=np.uint8)
    image = reader.metadata[reader.metadata.dtype.names[0]]
    sizes = dict(zip(reader.alloc_table["ptr"].tolist(), reader.alloc_table["size"].tolist()))
    pixels = []
    for row in image:
        assert row["mode"] == 1, "expected raw storage"
        start = int(row["data_ptr"])
        raw = data[start : start + sizes[start]]
        pixels.append(raw.reshape(int(row["height"]), int(row["width"]), 3))
    return pixels


def _stored_labels(beton: Path) -> list[int]:
    from ffcv.reader import Reader

    reader = Reader(str(beton))
    return reader.metadata[reader.metadata.dtype.names[1]].tolist()


def _normalised(pixels: np.ndarray, mean, std) -> np.ndarray:
    return (pixels.astype(np.float32) - np.array(mean, np.float32)) / np.array(std, np.float32)


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    return ensure_cifar10(
        REPO / ".resplat" / "datasets", REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    )


@pytest.fixture(scope="module")
def train_dir(cifar_root, tmp_path_factory) -> Path:
    return _copy_subset(cifar_root / "train", tmp_path_factory.mktemp("train"), TRAIN_PER_CLASS)


@pytest.fixture(scope="module")
def val_dir(cifar_root, tmp_path_factory) -> Path:
    val = _copy_subset(cifar_root / "test", tmp_path_factory.mktemp("val"), VAL_PER_CLASS)
    max((val / "truck").iterdir()).unlink()
    return val


@pytest.fixture(scope="module")
def train_beton(train_dir, tmp_path_factory):
    return write_beton(
        train_dir, tmp_path_factory.mktemp("betons") / "train.beton", WriteOptions(storage="raw")
    )


@pytest.fixture(scope="module")
def val_beton(val_dir, train_beton, tmp_path_factory):
    out = tmp_path_factory.mktemp("betons") / "val.beton"
    return write_beton(val_dir, out, classes=train_beton.classes)  # auto -> raw for 32 px


@pytest.fixture(scope="module")
def photo_beton(cifar_root, tmp_path_factory):
    """ImageNet-like: CIFAR photos upscaled to 70..180 px of varying aspect, as JPEG."""
    src = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for class_dir in sorted((cifar_root / "train").iterdir()):
        (src / class_dir.name).mkdir()
        for image_path in sorted(class_dir.iterdir())[:PHOTOS_PER_CLASS]:
            size = tuple(int(s) for s in rng.integers(70, 181, size=2))
            with Image.open(image_path) as image:
                image.convert("RGB").resize(size, Image.BICUBIC).save(
                    src / class_dir.name / image_path.name, quality=90
                )
    return write_beton(
        src, tmp_path_factory.mktemp("betons") / "photos.beton", WriteOptions(max_resolution=128)
    )


# --- writing -----------------------------------------------------------------


def test_raw_round_trip_keeps_pixels_labels_and_classes(train_dir, train_beton):
    samples, classes = list_image_folder(train_dir)
    assert train_beton.classes == classes == tuple(sorted(p.name for p in train_dir.iterdir()))
    assert (train_beton.num_images, train_beton.skipped, train_beton.storage) == (
        len(samples),
        0,
        "raw",
    )
    assert read_beton_info(train_beton.path) == train_beton

    stored = _stored_pixels(train_beton.path)
    assert len(stored) == len(samples)
    for (path, _), pixels in zip(samples, stored):
        np.testing.assert_array_equal(pixels, _pil_rgb(path), err_msg=str(path))
    assert _stored_labels(train_beton.path) == [label for _, label in samples]

    sidecar = json.loads(sidecar_path(train_beton.path).read_text())
    assert sidecar["classes"] == list(classes)
    assert sidecar["num_images"] == len(samples)
    assert sidecar["sha256"] == train_beton.sha256
    assert sidecar["options"]["storage"] == "raw"


def test_val_with_train_classes_uses_train_labels(val_beton, train_beton, val_dir):
    samples, _ = list_image_folder(val_dir, train_beton.classes)
    assert val_beton.classes == train_beton.classes
    assert _stored_labels(val_beton.path) == [label for _, label in samples]


def test_val_class_missing_from_train_fails_before_writing(val_dir, tmp_path):
    val = shutil.copytree(val_dir, tmp_path / "val")
    (val / "unicorn").mkdir()
    shutil.copyfile(next((val / "cat").iterdir()), val / "unicorn" / "0000.jpg")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(DataError, match="unicorn"):
        write_beton(val, out_dir / "val.beton", classes=("airplane", "cat", "dog"))
    assert list(out_dir.iterdir()) == []


def test_missing_or_empty_folders_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        list_image_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="no class folders"):
        list_image_folder(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match=r"cat: class folder has no images"):
        list_image_folder(tmp_path)


def test_bad_write_options_are_input_errors():
    with pytest.raises(InputError, match="storage"):
        WriteOptions(storage="png")
    with pytest.raises(InputError, match="jpeg_quality"):
        WriteOptions(jpeg_quality=0)


@pytest.fixture()
def damaged_dir(train_dir, tmp_path) -> tuple[Path, list[Path]]:
    src = _copy_subset(train_dir, tmp_path / "damaged", 3)
    truncated = src / "cat" / sorted(os.listdir(src / "cat"))[1]
    truncated.write_bytes(truncated.read_bytes()[:200])
    garbage = src / "ship" / min(os.listdir(src / "ship"))
    garbage.write_bytes(b"this is not a JPEG" * 20)
    return src, [truncated, garbage]


def test_corrupt_image_fails_naming_the_file(damaged_dir, tmp_path):
    src, bad = damaged_dir
    out_dir = tmp_path / "out"
    with pytest.raises(DataError) as raised:
        write_beton(src, out_dir / "d.beton", WriteOptions(storage="raw"))
    assert any(str(path) in str(raised.value) for path in bad), raised.value
    assert list(out_dir.iterdir()) == []


def test_skip_bad_skips_and_counts_corrupt_images(damaged_dir, tmp_path):
    src, bad = damaged_dir
    info = write_beton(src, tmp_path / "d.beton", WriteOptions(storage="raw", skip_bad=True))
    samples, _ = list_image_folder(src)
    kept = [(path, label) for path, label in samples if path not in bad]
    assert (info.skipped, info.num_images) == (2, len(kept))
    sidecar = json.loads(sidecar_path(info.path).read_text())
    assert sorted(sidecar["skipped_files"]) == sorted(p.relative_to(src).as_posix() for p in bad)
    # The remaining samples are renumbered densely and keep their pixels and labels.
    for (path, _), pixels in zip(kept, _stored_pixels(info.path), strict=True):
        np.testing.assert_array_equal(pixels, _pil_rgb(path))
    assert _stored_labels(info.path) == [label for _, label in kept]


@pytest.mark.parametrize("interruption", [RuntimeError("stop"), KeyboardInterrupt()])
def test_interrupted_write_leaves_no_file(train_dir, tmp_path, interruption):
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        if done > 0:
            raise interruption

    with pytest.raises(type(interruption)):
        write_beton(train_dir, tmp_path / "t.beton", WriteOptions(storage="raw"), progress=progress)
    assert calls and calls[0] == (0, TRAIN_PER_CLASS * 10)
    assert list(tmp_path.iterdir()) == []


def test_cached_beton_reuses_then_reprepares_after_a_change(train_dir, tmp_path):
    src = _copy_subset(train_dir, tmp_path / "src", 3)
    cache = tmp_path / "cache"
    options = WriteOptions(storage="raw")
    first = cached_beton(src, cache, options)
    stamp = first.path.stat().st_mtime_ns, first.path.stat().st_ino

    calls = []
    again = cached_beton(src, cache, options, progress=lambda done, total: calls.append(done))
    assert again == first and calls == []
    assert (first.path.stat().st_mtime_ns, first.path.stat().st_ino) == stamp

    changed = src / "dog" / min(os.listdir(src / "dog"))
    changed.write_bytes((src / "cat" / min(os.listdir(src / "cat"))).read_bytes())
    third = cached_beton(src, cache, options)
    assert third.path != first.path and third.sha256 != first.sha256
    assert third.num_images == first.num_images

    assert cached_beton(src, cache, WriteOptions(storage="jpeg")).path not in (
        first.path,
        third.path,
    )


def test_read_beton_info_without_sidecar_is_a_data_error(train_beton, tmp_path):
    copy = Path(shutil.copyfile(train_beton.path, tmp_path / "copy.beton"))
    with pytest.raises(DataError, match="sidecar missing"):
        read_beton_info(copy)
    with pytest.raises(DataError, match="no such .beton"):
        read_beton_info(tmp_path / "absent.beton")


def test_ensure_cifar10_incomplete_archive_leaves_nothing(tmp_path, train_dir):
    archive = tmp_path / "partial.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(train_dir / "cat", arcname="cifar10/train/cat")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="complete layout"):
        ensure_cifar10(cache, archive)
    assert not cache.exists()  # the folder this call made is gone with its lock
    (cache / "kept").mkdir(parents=True)
    with pytest.raises(DataError, match="complete layout"):
        ensure_cifar10(cache, archive)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == ["kept"]


def test_ensure_cifar10_exports_torchvision_download_without_archive(tmp_path, monkeypatch):
    """The no-archive path, with torchvision's downloader replaced by a tiny fake set."""
    import torchvision.datasets

    from resplat.data import cifar10

    class FakeCIFAR10:
        def __init__(self, root: str, train: bool, download: bool):
            count = 20 if train else 10
            rng = np.random.default_rng(count)
            self.data = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
            self.targets = [i % 10 for i in range(count)]
            self.classes = list(cifar10.CIFAR10_CLASSES)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    monkeypatch.setattr(cifar10, "IMAGES_PER_CLASS", {"train": 2, "test": 1})
    root = ensure_cifar10(tmp_path / "cache", tmp_path / "absent.tar.gz")
    assert root == tmp_path / "cache" / "cifar10"
    assert sorted(p.name for p in (root / "train").iterdir()) == list(cifar10.CIFAR10_CLASSES)
    assert sorted(os.listdir(root / "train" / "bird")) == ["0000.jpg", "0001.jpg"]
    assert os.listdir(root / "test" / "truck") == ["0000.jpg"]
    with Image.open(root / "train" / "bird" / "0001.jpg") as image:
        assert (image.format, image.size) == ("JPEG", (32, 32))
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name != ".cifar10.lock"] == [
        "cifar10"
    ]


def test_ensure_cifar10_returns_the_complete_folder(cifar_root):
    assert ensure_cifar10(cifar_root.parent, Path("/nonexistent.tar.gz")) == cifar_root


# --- loaders -----------------------------------------------------------------


def _expected_range(mean, std) -> tuple[float, float]:
    return min((0 - m) / s for m, s in zip(mean, std)), max(
        (255 - m) / s for m, s in zip(mean, std)
    )


def _check_batch(
    images: torch.Tensor, labels: torch.Tensor, batch: int, resolution: int, mean, std
):
    assert images.shape == (batch, 3, resolution, resolution)
    assert images.dtype == torch.float32 and images.device.type == "cpu"
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert labels.shape == (batch,) and labels.dtype == torch.int64
    low, high = _expected_range(mean, std)
    assert low - 1e-4 <= images.min().item() and images.max().item() <= high + 1e-4
    assert -1.5 < images.mean().item() < 1.5


def test_cifar_loaders_give_normalised_float_batches(train_beton, val_beton, val_dir):
    train = build_loader(
        train_beton.path, pipeline="cifar", train=True, batch_size=32, resolution=32
    )
    assert len(train) == train_beton.num_images // 32  # drop_last for training
    batches = list(train)
    assert len(batches) == len(train)
    for images, labels in batches:
        _check_batch(images, labels, 32, 32, CIFAR10_MEAN, CIFAR10_STD)
    # Translation pads with black: some pixels sit exactly at the normalised zero level.
    black = torch.tensor(_normalised(np.zeros(3), CIFAR10_MEAN, CIFAR10_STD)).view(1, 3, 1, 1)
    assert torch.isclose(batches[0][0], black.float(), atol=1e-5).all(dim=1).any()

    val = build_loader(val_beton.path, pipeline="cifar", train=False, batch_size=16, resolution=32)
    assert len(val) == -(-val_beton.num_images // 16)
    images = torch.cat([x.clone() for x, _ in val])
    labels = torch.cat([y.clone() for _, y in val])
    samples, _ = list_image_folder(val_dir, val_beton.classes)
    assert labels.tolist() == [label for _, label in samples]
    expected = np.stack([_normalised(_pil_rgb(p), CIFAR10_MEAN, CIFAR10_STD) for p, _ in samples])
    np.testing.assert_allclose(images.permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)


_COMPILE_IN_A_NEW_PROCESS = """
import sys
import numpy as np
import torch
from resplat.data import build_loader

val, photos, out = sys.argv[1:]
loader = build_loader(val, pipeline="cifar", train=False, batch_size=16, resolution=32, num_workers=1)
np.save(out, torch.cat([images.clone() for images, _ in loader]).numpy())
loader = build_loader(photos, pipeline="imagenet", train=True, batch_size=8, resolution=64, num_workers=2)
for _ in loader:  # the whole epoch: exiting while FFCV's thread runs a parallel stage aborts the process
    pass
"""


def test_compiled_stages_are_cached_on_disk_and_reused(val_beton, photo_beton, tmp_path):
    """A second process loads FFCV's compiled stages from numba's cache instead of compiling, and
    gets the same batches; serial and parallel builds are kept apart. The numba dict functions that
    FFCV's import compiles come from the cache too."""
    cache = tmp_path / "numba"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "NUMBA_DEBUG_CACHE": "1"}
    runs = []
    for name in ("first", "second"):
        done = subprocess.run(
            [sys.executable, "-c", _COMPILE_IN_A_NEW_PROCESS, str(val_beton.path),
             str(photo_beton.path), str(tmp_path / f"{name}.npy")],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(done.stdout)
    first, second = runs
    assert "data saved to" in first  # (it may load too: the two loaders share a reader)
    assert "data loaded from" in second and "data saved to" not in second
    np.testing.assert_array_equal(np.load(tmp_path / "first.npy"), np.load(tmp_path / "second.npy"))
    for flavour in ("serial", "parallel", "typed"):
        assert list((cache / flavour).rglob("*.nbi")), f"nothing cached under {flavour}/"
    loaded = [line for line in second.splitlines() if "data loaded from" in line]
    assert any("typeddict._setitem" in line for line in loaded), loaded


def test_imagenet_loaders_give_cropped_normalised_batches(photo_beton):
    assert photo_beton.storage == "jpeg" and photo_beton.num_images == PHOTOS_PER_CLASS * 10
    train = build_loader(
        photo_beton.path, pipeline="imagenet", train=True, batch_size=8, resolution=64
    )
    val = build_loader(
        photo_beton.path,
        pipeline="imagenet",
        train=False,
        batch_size=8,
        resolution=48,
        channels_last=False,
    )
    for images, labels in train:
        _check_batch(images, labels, 8, 64, IMAGENET_MEAN, IMAGENET_STD)
    seen = []
    for images, labels in val:
        assert images.shape[1:] == (3, 48, 48) and images.dtype == torch.float32
        assert images.is_contiguous()
        seen.extend(labels.tolist())
    assert seen == _stored_labels(photo_beton.path)


def test_loader_argument_errors(train_beton, photo_beton, tmp_path):
    with pytest.raises(DataError, match="needs every image at 28x28"):
        build_loader(train_beton.path, pipeline="cifar", train=True, batch_size=8, resolution=28)
    with pytest.raises(DataError, match="needs every image"):
        build_loader(photo_beton.path, pipeline="cifar", train=True, batch_size=8, resolution=32)
    with pytest.raises(DataError, match="torch.distributed"):
        build_loader(
            train_beton.path,
            pipeline="cifar",
            train=True,
            batch_size=8,
            resolution=32,
            distributed=True,
        )
    with pytest.raises(DataError, match="no such .beton"):
        build_loader(
            tmp_path / "x.beton", pipeline="cifar", train=True, batch_size=8, resolution=32
        )


def test_device_normaliser_matches_the_cpu_pipeline():
    """The accelerator path (untestable here without a GPU) normalises with torch ops."""
    from ffcv.transforms import NormalizeImage, ToDevice

    from resplat.data.pipelines import image_pipeline, normalize_on_device_class

    ops = image_pipeline(
        "imagenet", train=False, resolution=64, device=torch.device("cuda"), channels_last=True
    )
    kinds = [type(op) for op in ops]
    assert (
        ToDevice in kinds
        and NormalizeImage not in kinds
        and kinds[-1] is normalize_on_device_class()
    )

    pixels = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8)
    for channels_last in (True, False):
        normalise = normalize_on_device_class()(
            IMAGENET_MEAN, IMAGENET_STD, channels_last
        ).generate_code()
        result = normalise(pixels.permute(0, 3, 1, 2), None)
        assert result.dtype == torch.float32 and result.shape == (2, 3, 5, 6)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        assert result.is_contiguous(memory_format=memory_format)
        expected = _normalised(pixels.numpy(), IMAGENET_MEAN, IMAGENET_STD).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(result.numpy(), expected, atol=1e-5)


def test_validation_shard_covers_every_sample_once():
    for n in (1, 49, 50, 51):
        shards = [validation_shard(n, rank, 4) for rank in range(4)]
        assert sorted(np.concatenate(shards).tolist()) == list(range(n))


def _rank_main(
    rank: int, world_size: int, store: str, train_path: str, val_path: str, out_dir: str
) -> None:
    """One simulated rank: records what its validation loader yields and which samples
    its training loader will read (not iterated: one numba compilation is enough)."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world_size
    )
    try:
        common = {
            "pipeline": "cifar",
            "batch_size": 16,
            "resolution": 32,
            "distributed": True,
            "num_workers": 1,
        }
        val = build_loader(Path(val_path), train=False, **common)
        train = build_loader(Path(train_path), train=True, seed=7, **common)
        try:
            build_loader(Path(train_path), train=True, order="quasi_random", **common)
            quasi_error = ""
        except DataError as error:
            quasi_error = str(error)
        images = torch.cat([x.clone() for x, _ in val])
        torch.save(images, Path(out_dir) / f"rank{rank}-val.pt")
        result = {
            # What an epoch reads: Loader.__iter__ takes the next traversal order.
            "val_order": np.asarray(val.next_traversal_order()).tolist(),
            "val_batches": len(val),
            "train_orders": [
                np.asarray(train.traversal_order.sample_order(e)).tolist() for e in (0, 1)
            ],
            "train_batches": len(train),
            "quasi_error": quasi_error,
        }
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        torch.distributed.destroy_process_group()


def test_two_distributed_ranks_see_disjoint_shards_covering_the_set(
    train_beton, val_beton, tmp_path
):
    # fork: the ranks inherit the imported ffcv (importing it costs each process seconds).
    torch.multiprocessing.start_processes(
        _rank_main,
        args=(
            2,
            str(tmp_path / "store"),
            str(train_beton.path),
            str(val_beton.path),
            str(tmp_path),
        ),
        nprocs=2,
        start_method="fork",
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    # Validation: rank r reads samples r, r + 2, ... with no padding (49 = 25 + 24).
    assert val_beton.num_images == 49
    assert [r["val_order"] for r in ranks] == [list(range(0, 49, 2)), list(range(1, 49, 2))]
    assert [r["val_batches"] for r in ranks] == [2, 2]
    expected = np.stack(
        [_normalised(p, CIFAR10_MEAN, CIFAR10_STD) for p in _stored_pixels(val_beton.path)]
    )
    for rank in range(2):
        images = torch.load(tmp_path / f"rank{rank}-val.pt").permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(images, expected[rank::2], atol=1e-5)

    # Training (FFCV's distributed random order): disjoint, complete, reshuffled per epoch.
    for epoch in (0, 1):
        shards = [set(r["train_orders"][epoch]) for r in ranks]
        assert not shards[0] & shards[1]
        assert shards[0] | shards[1] == set(range(train_beton.num_images))
    assert ranks[0]["train_orders"][0] != ranks[0]["train_orders"][1]
    assert [r["train_batches"] for r in ranks] == [train_beton.num_images // 2 // 16] * 2

    assert all(
        "quasi_random" in r["quasi_error"] and "order='random'" in r["quasi_error"] for r in ranks
    )
