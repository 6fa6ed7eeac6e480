"""Independent pieces of one computation on a pool of Python threads, BLAS pinned to one thread.

On a small machine the BLAS splits each GEMM over its threads, but the NumPy work between the
GEMMs (copies into place, transposes, elementwise products) runs on one core while the other
waits. Where a computation falls into independent pieces that write disjoint outputs (the
panels of a dense curvature, the column blocks of a block of matrix-vector products, the row
blocks of a mirror), :func:`map_pinned` runs the pieces on as many Python threads as the BLAS
is currently allowed, each piece's BLAS calls on one thread (NumPy and the BLAS release the
GIL). The pieces are fixed by the inputs alone and each always runs on one BLAS thread, so the
result is bit for bit the same at every thread count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["blas_threads", "map_pinned"]

T = TypeVar("T")
R = TypeVar("R")

_CONTROLLER: Any = None


def _controller() -> Any:
    """One :class:`threadpoolctl.ThreadpoolController` (scanning the loaded libraries costs
    ~0.1 ms; its ``limit`` context then costs microseconds)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def blas_threads() -> int:
    """The number of threads the BLAS is currently allowed (1 when no BLAS is reported).

    Follows the caller's ``threadpoolctl.threadpool_limits`` and ``OPENBLAS_NUM_THREADS``.
    """
    libs = _controller().select(user_api="blas").lib_controllers
    return max((int(lib.num_threads) for lib in libs), default=1)


def map_pinned(fn: Callable[[T], R], items: Iterable[T], threads: int | None = None) -> list[R]:
    """``[fn(item) for item in items]``, the items on a thread pool, BLAS on one thread each.

    Parameters
    ----------
    fn : callable
        Must be safe to run concurrently on different items (write disjoint outputs).
    items : iterable
    threads : int, optional
        Pool size; default :func:`blas_threads` (the BLAS's current allowance), capped by
        the number of items. With one thread the items run in order on the calling thread,
        still with the BLAS pinned to one thread (the same bits as the pool).

    Returns
    -------
    list
        The results in the order of ``items``. The first exception raised by ``fn`` is
        re-raised.
    """
    work = list(items)
    count = min(blas_threads() if threads is None else threads, len(work))
    with _controller().limit(limits=1, user_api="blas"):
        if count <= 1:
            return [fn(item) for item in work]
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(fn, work))
