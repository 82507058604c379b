"""Writing an (image, label) FFCV .beton file with worker processes.

FFCV's own DatasetWriter cannot report progress to a callback, hangs when a
worker dies on a bad image, and cannot skip samples. This writer produces the
same file format (header, field descriptors, per-sample metadata, data pages,
allocation table; see ffcv/writer.py and ffcv/types.py) with:

- a progress callback run in the calling process,
- bad images either reported (first one ends the write) or skipped: a skipped
  sample never allocates data, so its metadata row is dropped and the sample ids
  of the allocation table are renumbered at the end,
- clean termination of the workers on any error or KeyboardInterrupt.

The caller owns the file's name; removing it on failure is the caller's job.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import queue
import signal
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from resplat.data.image_codec import FFCV_MODE_JPEG, FFCV_MODE_RAW, encode_jpeg, load_rgb
from resplat.errors import DataError, RunError

Storage = Literal["raw", "jpeg", "proportional"]

DEFAULT_PAGE_SIZE = 1 << 23  # 8 MiB, FFCV's default
_CHUNK_SIZE = 64
_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class ImageEncoding:
    """How each image is stored (storage already resolved: no "auto")."""

    max_resolution: int | None
    storage: Storage
    jpeg_quality: int
    compress_probability: float


@dataclass(frozen=True)
class WriteResult:
    num_written: int
    skipped: tuple[Path, ...]


class _WorkerFailed(Exception):
    def __init__(self, path: str | None, message: str):
        super().__init__(message)
        self.path = path
        self.message = message


def _stores_as_jpeg(encoding: ImageEncoding, sample_index: int) -> bool:
    if encoding.storage == "jpeg":
        return True
    if encoding.storage == "raw":
        return False
    # "proportional": a draw seeded by the sample index, so a rewrite of the same
    # folder makes the same choices whatever worker handles the sample.
    return bool(np.random.default_rng(sample_index).random() < encoding.compress_probability)


def _store_sample(
    index: int,
    pixels: np.ndarray,
    label: int,
    image_rows: np.ndarray,
    label_rows: np.ndarray,
    allocator,
    encoding: ImageEncoding,
) -> None:
    if _stores_as_jpeg(encoding, index):
        mode, payload = FFCV_MODE_JPEG, encode_jpeg(pixels, encoding.jpeg_quality)
    else:
        mode, payload = FFCV_MODE_RAW, pixels.reshape(-1)
    height, width = pixels.shape[:2]
    # One allocation per sample, so FFCV's allocator never has to roll back a
    # sample split across two pages (its MemoryError retry path).
    allocator.set_current_sample(index)
    pointer, buffer = allocator.malloc(payload.nbytes)
    buffer[:] = payload
    image_rows["mode"][index] = mode
    image_rows["width"][index] = width
    image_rows["height"][index] = height
    image_rows["data_ptr"][index] = pointer
    label_rows[index] = label


def _worker_main(
    worker_id: int,
    tasks,
    results,
    done_counter,
    shared_metadata,
    metadata_type: np.dtype,
    allocator,
    encoding: ImageEncoding,
    skip_bad: bool,
) -> None:
    # Ctrl-C reaches the whole process group; the parent handles it and ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)  # parallelism comes from the processes
    metadata = np.frombuffer(shared_metadata, dtype=metadata_type)
    image_key, label_key = metadata_type.names
    image_rows, label_rows = metadata[image_key], metadata[label_key]
    skipped: list[int] = []
    allocator.__enter__()
    path = None
    try:
        while (chunk := tasks.get()) is not None:
            for index, path, label in chunk:
                try:
                    pixels = load_rgb(Path(path), encoding.max_resolution)
                except Exception as error:  # noqa: BLE001 - any decoder failure means a bad image
                    if not skip_bad:
                        results.put(("failed", worker_id, path, f"cannot read image: {error}"))
                        return
                    skipped.append(index)
                else:
                    try:
                        _store_sample(
                            index, pixels, label, image_rows, label_rows, allocator, encoding
                        )
                    except ValueError as error:
                        message = f"cannot store image ({error}); a max_resolution would shrink it"
                        results.put(("failed", worker_id, path, message))
                        return
                with done_counter.get_lock():
                    done_counter.value += 1
        # Flushes this worker's last page once the pages before it are written.
        allocator.__exit__(None, None, None)
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        results.put(("crashed", worker_id, path, traceback.format_exc()))
        return
    results.put(("done", worker_id, allocator.allocations, skipped))


def _header_and_descriptors(fields: dict, num_samples: int, page_size: int):
    from ffcv.types import CURRENT_VERSION, TYPE_ID_HANDLER, FieldDescType, HeaderType

    header = np.zeros(1, dtype=HeaderType)[0]
    header["version"] = CURRENT_VERSION
    header["num_samples"] = num_samples
    header["num_fields"] = len(fields)
    header["page_size"] = page_size

    type_id_of = {handler: type_id for type_id, handler in TYPE_ID_HANDLER.items()}
    descriptors = np.zeros(len(fields), dtype=FieldDescType)
    for row, (name, field) in zip(descriptors, fields.items()):
        encoded_name = np.frombuffer(name.encode("ascii"), dtype="<u1")
        row["type_id"] = type_id_of[type(field)]
        row["name"][: len(encoded_name)] = encoded_name
        row["arguments"][:] = field.to_binary()[0]
    return header, descriptors


def _multiprocessing_context():
    # fork reuses the parent's already imported modules (importing ffcv costs
    # seconds); the workers only run PIL, OpenCV and numpy.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _chunks(samples: Sequence[tuple[Path, int]]):
    for start in range(0, len(samples), _CHUNK_SIZE):
        yield [
            (index, str(path), label)
            for index, (path, label) in enumerate(samples[start : start + _CHUNK_SIZE], start)
        ]


def _collect_results(
    workers: list,
    results,
    done_counter,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> list[tuple]:
    """Wait for every worker's ("done", id, allocations, skipped) message."""
    finished: dict[int, tuple] = {}
    reported = 0
    if progress is not None:
        progress(0, total)  # lets a progress bar show the total at once
    while len(finished) < len(workers):
        try:
            message = results.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            message = None
            silent = [
                w for i, w in enumerate(workers) if i not in finished and w.exitcode is not None
            ]
            if silent:
                # A worker that exits cleanly has sent its message first; allow the
                # pipe a moment, then treat silence as a crash (e.g. killed for memory).
                try:
                    message = results.get(timeout=2.0)
                except queue.Empty:
                    codes = [w.exitcode for w in silent]
                    raise RunError(f"a beton writer process died (exit codes {codes})") from None
        if message is not None:
            kind, worker_id, *details = message
            if kind == "failed":
                raise _WorkerFailed(*details)
            if kind == "crashed":
                raise RunError(f"a beton writer process crashed (at {details[0]}):\n{details[1]}")
            finished[worker_id] = tuple(details)
        done = done_counter.value
        if progress is not None and done != reported:
            progress(done, total)
            reported = done
    return list(finished.values())


def _finalize(
    path: Path,
    header,
    metadata: np.ndarray,
    metadata_start: int,
    finished: list[tuple],
) -> int:
    from ffcv.types import ALLOC_TABLE_TYPE

    allocations = [entry for worker_allocations, _ in finished for entry in worker_allocations]
    table = np.array(allocations, dtype=ALLOC_TABLE_TYPE)
    skipped = sorted(index for _, worker_skipped in finished for index in worker_skipped)
    if skipped:
        kept = np.setdiff1d(np.arange(len(metadata)), np.array(skipped))
        new_id = np.zeros(len(metadata), dtype="<u8")
        new_id[kept] = np.arange(len(kept), dtype="<u8")
        table["sample_id"] = new_id[table["sample_id"]]
        metadata = metadata[kept]
    with open(path, "r+b") as file:
        # The metadata region was sized for every sample; after skips it is
        # shorter and leaves a harmless gap (data pointers are absolute).
        file.seek(metadata_start)
        file.write(metadata.tobytes())
        table_start = file.seek(0, 2)
        file.write(table.tobytes())
        header["num_samples"] = len(metadata)
        header["alloc_table_ptr"] = table_start
        file.seek(0)
        file.write(header.tobytes())
    return len(metadata)


def write_image_label_file(
    path: Path,
    samples: Sequence[tuple[Path, int]],
    encoding: ImageEncoding,
    *,
    num_workers: int,
    skip_bad: bool,
    page_size: int = DEFAULT_PAGE_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> WriteResult:
    """Write ``samples`` into a new .beton at ``path`` with fields "image" and "label".

    A bad image without ``skip_bad`` raises DataError naming it; anything raised
    (including from ``progress``) stops and reaps the workers first.
    """
    from resplat.data.compile_cache import cache_typed_containers

    cache_typed_containers()  # before FFCV's first import
    from ffcv.fields import IntField, RGBImageField
    from ffcv.memory_allocator import MemoryAllocator
    from ffcv.types import HeaderType, get_metadata_type

    fields = {"image": RGBImageField(), "label": IntField()}
    metadata_type = get_metadata_type(list(fields.values()))
    num_samples = len(samples)
    header, descriptors = _header_and_descriptors(fields, num_samples, page_size)
    with open(path, "wb") as file:
        file.write(header.tobytes())
        file.write(descriptors.tobytes())
    metadata_start = HeaderType.itemsize + descriptors.nbytes
    data_start = metadata_start + num_samples * metadata_type.itemsize

    context = _multiprocessing_context()
    shared_metadata = context.RawArray(ctypes.c_uint8, max(1, num_samples * metadata_type.itemsize))
    allocator = MemoryAllocator(str(path), data_start, page_size)
    tasks = context.Queue()
    for chunk in _chunks(samples):
        tasks.put(chunk)
    worker_count = max(1, min(num_workers, -(-num_samples // _CHUNK_SIZE)))
    for _ in range(worker_count):
        tasks.put(None)
    results = context.Queue()
    done_counter = context.Value(ctypes.c_uint64, 0)
    args = (
        tasks,
        results,
        done_counter,
        shared_metadata,
        metadata_type,
        allocator,
        encoding,
        skip_bad,
    )
    workers = [
        context.Process(target=_worker_main, args=(worker_id, *args), daemon=True)
        for worker_id in range(worker_count)
    ]
    try:
        for worker in workers:
            worker.start()
        finished = _collect_results(workers, results, done_counter, num_samples, progress)
        for worker in workers:
            worker.join()
    except _WorkerFailed as failure:
        raise DataError(f"{failure.path}: {failure.message}") from None
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        for worker in workers:
            if worker.pid is not None:
                worker.join()
        for channel in (tasks, results):
            channel.cancel_join_thread()
            channel.close()

    metadata = np.frombuffer(shared_metadata, dtype=metadata_type, count=num_samples)
    num_written = _finalize(path, header, metadata, metadata_start, finished)
    skipped = tuple(samples[index][0] for _, worker_skipped in finished for index in worker_skipped)
    return WriteResult(num_written=num_written, skipped=tuple(sorted(skipped)))
