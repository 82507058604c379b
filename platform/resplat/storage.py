"""Where a run's state lives: `storage.uri` of the job spec, else RESPLAT_HOME.

A local or shared folder, or an object store URI (`s3://bucket/prefix`, `gs://...`) that
pyarrow opens, as Ray does; query options (`?endpoint_override=HOST:PORT&scheme=http`) pass
through. Ray Train's checkpoints go to `<uri>/ray_results`; prepared .beton files to
`<uri>/betons/<sha256>.beton`, from where each node copies them once into a local cache
(FFCV memory-maps a local file).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from resplat import paths

RAY_RESULTS = "ray_results"
TUNE_RESULTS = "tune"
BETONS = "betons"
OBJECT_STORES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs")


def is_object_store(uri: str | None) -> bool:
    return bool(uri) and urlsplit(uri).scheme in OBJECT_STORES


def join(uri: str, *parts: str) -> str:
    """`uri` with path parts appended, its query (pyarrow's options) kept at the end."""
    base, _, query = uri.partition("?")
    joined = "/".join([base.rstrip("/"), *parts])
    return f"{joined}?{query}" if query else joined


def _under(uri: str | None, folder: str) -> str:
    if not uri:
        return str(paths.home() / folder)
    return join(uri, folder) if is_object_store(uri) else str(Path(uri).expanduser().absolute() / folder)


def ray_storage_path(uri: str | None) -> str:
    """Ray Train's `storage_path` for a job whose storage is `uri`."""
    return _under(uri, RAY_RESULTS)


def tune_storage_path(uri: str | None) -> str:
    """Ray Tune's `storage_path` for a sweep whose base job's storage is `uri`."""
    return _under(uri, TUNE_RESULTS)


def remove_tree(uri: str) -> None:
    """Delete a folder, local or in object storage, with everything in it; nothing when it is absent."""
    import pyarrow.fs

    fs, path = _filesystem(uri) if is_object_store(uri) else (pyarrow.fs.LocalFileSystem(), uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        fs.delete_dir(path)


def _filesystem(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def node_cache_dir() -> Path:
    """This node's cache of .beton files copied from object storage (RESPLAT_NODE_CACHE moves it)."""
    return Path(os.environ.get("RESPLAT_NODE_CACHE") or Path(tempfile.gettempdir()) / "resplat-node-cache")


def publish(local: Path, sha256: str, uri: str) -> str:
    """Upload a .beton and its sidecar to `<uri>/betons/` unless already there; return its URI."""
    import pyarrow.fs

    from resplat.data.beton import sidecar_path

    target = join(uri, BETONS, f"{sha256}.beton")
    fs, path = _filesystem(target)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        for source, destination in ((sidecar_path(local), f"{path}.json.partial"), (local, f"{path}.partial")):
            pyarrow.fs.copy_files(str(source), destination, source_filesystem=pyarrow.fs.LocalFileSystem(),
                                  destination_filesystem=fs)
        # The .beton appears last and whole: a reader never sees a partial upload under its name.
        fs.move(f"{path}.json.partial", f"{path}.json")
        fs.move(f"{path}.partial", path)
    return target


def localize(uri: str, sha256: str, *, say: Callable[[str], None] = print) -> Path:
    """The .beton at `uri` as a file on this node: copied once (a lock, so workers sharing the node
    copy it once; a partial copy is never used), then reused."""
    import pyarrow.fs

    from resplat.data.atomic import exclusive_lock
    from resplat.data.beton import sidecar_path

    cache = node_cache_dir()
    local = cache / f"{sha256}.beton"
    with exclusive_lock(cache / f"{sha256}.lock"):
        if local.exists():
            return local
        fs, path = _filesystem(uri)
        size = fs.get_file_info(path).size
        say(f"copying {uri.partition('?')[0]} ({size / 2**20:.1f} MiB) to this node's cache {cache}")
        partial = cache / f"{sha256}.beton.partial"
        for source, destination in ((f"{path}.json", sidecar_path(local)), (path, partial)):
            pyarrow.fs.copy_files(source, str(destination), source_filesystem=fs,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())
        partial.replace(local)
    return local
