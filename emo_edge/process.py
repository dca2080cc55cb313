"""Process-wide settings for the runtime and the benchmark: numpy's BLAS threads and glibc's malloc.

Both are measured on the 2-core CPU with edge-small, and both are the process's, not a library's:

* numpy's OpenBLAS starts a thread per core for any large enough product, and those threads spin
  after their work. The runtime's only BLAS call is the frontend's small log-mel product, but the
  spinning threads then take the cores that ONNX Runtime, PyTorch and llama.cpp need next: the
  eager PyTorch fast path (frontend, then perception) took a median of 33-65 ms (p95 120 ms)
  with them and 17 ms with one BLAS thread; the frontend itself was no slower (6.4 ms).
* glibc serves large blocks (the frontend's arrays, activations) with mmap and gives them back on
  free, so every update page-faults its buffers in again, and where they land differs from process
  to process. Keeping large blocks on the heap (`tune_malloc`): frontend 6.9 -> 5.6 ms, and eager
  PyTorch's video encoder 2.2-3.2 ms (depending on the process) -> 2.0-2.2 ms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MIB = 1 << 20


def limit_numpy_blas(threads: int = 1) -> list[dict[str, Any]]:
    """Hold numpy's BLAS to `threads` threads for the rest of this process; returns the BLAS libraries
    now in use as threadpoolctl describes them (empty when numpy links none)."""
    import numpy  # noqa: F401  (loads its BLAS, so that there is a pool to limit)
    from threadpoolctl import threadpool_info, threadpool_limits

    if threads < 1:
        raise ValueError(f"limit_numpy_blas: threads must be >= 1, got {threads}")
    threadpool_limits(limits=threads, user_api="blas")
    return [i for i in threadpool_info() if i.get("user_api") == "blas"]


def tune_malloc(mmap_threshold_mib: int = 512, trim_threshold_mib: int = 256, top_pad_mib: int = 64) -> bool:
    """Keep blocks below `mmap_threshold_mib` on glibc's heap and up to `trim_threshold_mib` of free heap
    mapped, so per-update buffers are reused instead of mapped and faulted in again. Returns False (and
    changes nothing) where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = [mallopt(M_MMAP_THRESHOLD, mmap_threshold_mib * MIB), mallopt(M_TRIM_THRESHOLD, trim_threshold_mib * MIB),
          mallopt(M_TOP_PAD, top_pad_mib * MIB)]
    return all(r == 1 for r in ok)


def tune_process(blas_threads: int | None = 1, malloc: bool = True) -> dict[str, Any]:
    """Both settings above (None / False leaves one alone); returns what was set, for the record."""
    out: dict[str, Any] = {}
    if blas_threads is not None:
        out["numpy_blas"] = [{k: i.get(k) for k in ("internal_api", "num_threads")}
                             for i in limit_numpy_blas(blas_threads)]
    if malloc:
        out["glibc_malloc_tuned"] = tune_malloc()
    return out
