"""Memory guard: estimate the bytes of a dense request before allocating it.

Every function that allocates a dense ``(P, P)`` matrix or an ``(N, C, P)`` Jacobian calls
:func:`require_memory` first. Over the budget it raises :class:`MemoryBudgetError`, which
says how much was needed, what the budget is, and which cheaper route computes the same
information (diagonal, K-FAC, matrix-free operator, spectrum through the Gram matrix).

The budget is, in order of precedence: the innermost :func:`memory_limit` context, the value
given to :func:`set_memory_budget`, the environment variable ``MINIFIM_MEMORY_BUDGET`` (bytes,
or with a suffix ``K``, ``M``, ``G``), and by default half of the physical memory.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import threading
from collections.abc import Iterator
from typing import cast

__all__ = [
    "MemoryBudgetError",
    "memory_budget",
    "set_memory_budget",
    "memory_limit",
    "require_memory",
    "format_bytes",
]

DEFAULT_FRACTION = 0.5
_state = threading.local()
_global_budget: int | None = None


class MemoryBudgetError(MemoryError):
    """A dense request would exceed the memory budget; the message names the cheaper route."""


def format_bytes(nbytes: float) -> str:
    """Human-readable size: ``format_bytes(3 * 2**30) == '3.00 GiB'``."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _parse_bytes(text: str) -> int:
    text = text.strip().upper().rstrip("B").rstrip("I")
    factor = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(text[-1:], 1)
    number = text[:-1] if factor != 1 else text
    try:
        value = float(number) * factor
    except ValueError:
        value = float("nan")
    if not (value >= 1 and value < float("inf")):
        raise ValueError(
            f"MINIFIM_MEMORY_BUDGET: expected a positive size such as '4G' or "
            f"'500000000', received {text!r}"
        )
    return int(value)


def physical_memory() -> int:
    """Bytes of physical memory of this machine (``os.sysconf``)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def memory_budget() -> int:
    """The current budget in bytes for a single dense allocation."""
    stack = getattr(_state, "stack", None)
    if stack:
        return stack[-1]
    if _global_budget is not None:
        return _global_budget
    env = os.environ.get("MINIFIM_MEMORY_BUDGET")
    if env:
        return _parse_bytes(env)
    return int(DEFAULT_FRACTION * physical_memory())


def _check_budget(nbytes: object) -> int:
    real = not isinstance(nbytes, bool) and isinstance(nbytes, numbers.Real)
    # numbers.Real supports ordering and int(); the ABC itself is untyped, hence the cast
    if not real or not 1 <= cast(float, nbytes) < float("inf"):
        raise ValueError(f"nbytes: expected a positive number of bytes, received {nbytes!r}")
    return int(cast(float, nbytes))


def set_memory_budget(nbytes: int | None) -> None:
    """Set the process-wide budget in bytes; ``None`` restores the default."""
    global _global_budget
    _global_budget = None if nbytes is None else _check_budget(nbytes)


@contextlib.contextmanager
def memory_limit(nbytes: int) -> Iterator[int]:
    """Context manager that sets the budget for the enclosed block (thread-local)."""
    nbytes = _check_budget(nbytes)
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(nbytes)
    try:
        yield nbytes
    finally:
        stack.pop()


def require_memory(nbytes: int, what: str, alternatives: str) -> None:
    """Raise :class:`MemoryBudgetError` when ``nbytes`` exceeds the budget.

    Parameters
    ----------
    nbytes : int
        Bytes the request would allocate.
    what : str
        The request, e.g. ``"dense true Fisher (P, P) = (100000, 100000) float64"``.
    alternatives : str
        The cheaper routes to name in the message.
    """
    budget = memory_budget()
    if nbytes > budget:
        raise MemoryBudgetError(
            f"{what} needs {format_bytes(nbytes)}, over the memory budget of "
            f"{format_bytes(budget)}. Cheaper route: {alternatives}. "
            "(Raise the budget with minifim.set_memory_budget(nbytes), minifim.memory_limit("
            "nbytes) or the MINIFIM_MEMORY_BUDGET environment variable.)"
        )


def dense_square_bytes(P: int, itemsize: int = 8) -> int:
    """Bytes of a dense ``(P, P)`` float64 matrix."""
    return int(P) * int(P) * itemsize
