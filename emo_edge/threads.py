"""Thread pools in one process: numpy's BLAS held to one thread where the runtime runs.

numpy's OpenBLAS starts a thread per core for any matrix product large enough, and those threads
spin after their work. The runtime's only BLAS call is the frontend's small log-mel product, but
between frames the spinning BLAS threads take the cores that ONNX Runtime, PyTorch and llama.cpp
need next: on the 2-core CPU the eager PyTorch fast path (frontend, then perception) took a median
of 33-65 ms with a p95 of 120 ms, against 17 ms with one BLAS thread, and the frontend itself was
no slower (6.4 ms either way).
"""

from __future__ import annotations

from typing import Any


def limit_numpy_blas(threads: int = 1) -> list[dict[str, Any]]:
    """Hold numpy's BLAS to `threads` threads for the rest of this process; returns the BLAS libraries
    now in use as threadpoolctl describes them (empty when numpy links none)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    if threads < 1:
        raise ValueError(f"limit_numpy_blas: threads must be >= 1, got {threads}")
    threadpool_limits(limits=threads, user_api="blas")
    return [i for i in threadpool_info() if i.get("user_api") == "blas"]
