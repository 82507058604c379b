"""Cache FFCV's numba-compiled pipeline stages on disk.

Every new process that iterates an FFCV Loader compiles its stages first: 5-10 s per Ray worker
here, paid again at each worker-group start, restart, resize and sweep trial. numba can cache
compiled functions (closures too: the index key hashes the captured values, so a crop size or a
mean baked into a stage gets its own entry), but FFCV compiles without `cache=True`.
`cache_compiled_stages()` makes FFCV's compiler ask for it. Stages that call C through ctypes
(the JPEG decoder) cannot be cached; numba compiles those as before.

FFCV's import itself compiles too: it fills a numba typed Dict at module level, and numba compiles
its dict functions for it (~3 s in every process that imports FFCV, most of the import).
`cache_typed_containers()` gives those functions the same on-disk cache; it must run before the
process's first `import ffcv`, and `cache_compiled_stages()` calls it first.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from pathlib import Path

from resplat.paths import compiled_code_cache_dir


@contextlib.contextmanager
def _numba_cache_dir(directory: Path) -> Iterator[None]:
    from numba.core import config

    saved, config.CACHE_DIR = config.CACHE_DIR, str(directory)
    try:
        yield
    finally:
        config.CACHE_DIR = saved


def _cache_root() -> Path | None:
    root = compiled_code_cache_dir()
    try:
        for flavour in ("serial", "parallel", "typed"):
            (root / flavour).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return root


@functools.cache
def cache_typed_containers() -> None:
    """numba's typed Dict functions, cached under `compiled_code_cache_dir()/typed`."""
    import numba.core.dispatcher
    from numba.typed import typeddict

    root = _cache_root()
    if root is None:
        return
    with _numba_cache_dir(root / "typed"):
        for function in vars(typeddict).values():
            if isinstance(function, numba.core.dispatcher.Dispatcher):
                function.enable_caching()


@functools.cache
def cache_compiled_stages() -> Path | None:
    """Have FFCV compile with numba's on-disk cache under `compiled_code_cache_dir()`; return that
    folder, or None when it cannot be written (FFCV then compiles in memory, as it always did)."""
    cache_typed_containers()
    from ffcv.pipeline.compiler import Compiler
    from numba import njit
    from numba.core.errors import NumbaWarning

    root = _cache_root()
    if root is None:
        return None
    warnings.filterwarnings("ignore", message="Cannot cache compiled function", category=NumbaWarning)

    def compile_cached(cls, code, signature=None):
        if not cls.is_enabled:
            return code
        parallel = bool(getattr(code, "is_parallel", False)) and cls.num_threads > 1
        # numba's cache key leaves the compile options out: parallel and serial builds of one
        # stage must not share an entry. The folder is read when the dispatcher is made.
        options = {"fastmath": True, "nogil": True, "error_model": "numpy", "parallel": parallel}
        with _numba_cache_dir(root / ("parallel" if parallel else "serial")):
            try:
                return njit(signature, cache=True, **options)(code)
            except RuntimeError:  # "cannot cache function": code without a source file
                return njit(signature, **options)(code)

    Compiler.compile = classmethod(compile_cached)
    return root
