"""Input checks shared by every public function (private).

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (wrong shape or
value) with a message that names the argument, what was expected and what was received.
Nothing is broadcast or coerced silently except the lossless conversion of real numeric
arrays to float64.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from autograd.tracer import Box

if TYPE_CHECKING:
    from .core.model import Sequential

__all__ = [
    "as_float_array",
    "check_choice",
    "check_positive",
    "check_nonnegative",
    "check_int",
    "as_generator",
    "check_net",
    "is_box",
    "check_bool",
    "describe",
    "NetworkBase",
]


class NetworkBase:
    """Marker base class of :class:`minifim.Sequential` (and :class:`minifim.MLP`):
    :func:`check_net` recognises the network
    without this foundation module importing the model (a higher layer)."""

    __slots__ = ()


def describe(x: object) -> str:
    """How an unexpected argument is named in error messages: an array's shape and dtype, or
    the type's name."""
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__}"


def as_float_array(
    x: Any,
    name: str,
    *,
    ndim: int | None = None,
    shape: tuple[int | None, ...] | None = None,
    finite: bool = True,
) -> np.ndarray:
    """Return ``x`` as a float64 ndarray after checking kind, dimension, shape and finiteness.

    ``shape`` may contain ``None`` for a free axis. Raises ``TypeError`` for non-numeric
    input and ``ValueError`` for a wrong shape or NaN/Inf.
    """
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name}: expected a real numeric array, received {describe(x)}")
    try:
        arr = np.asarray(x)
    except ValueError as err:  # ragged nested sequences
        raise ValueError(
            f"{name}: expected a rectangular numeric array, received a ragged "
            f"{type(x).__name__} ({err})"
        ) from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name}: expected a real numeric array, received {describe(arr)}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name}: expected a real array, received complex dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(
            f"{name}: expected a {ndim}-D array, received {arr.ndim}-D array of shape {arr.shape}"
        )
    if shape is not None:
        if arr.ndim != len(shape) or any(
            s is not None and s != a for s, a in zip(shape, arr.shape)
        ):
            want = (
                "("
                + ", ".join("*" if s is None else str(s) for s in shape)
                + (",)" if len(shape) == 1 else ")")
            )
            raise ValueError(f"{name}: expected shape {want}, received shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if finite and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name}: expected finite values, received {bad} NaN/Inf "
            f"entr{'y' if bad == 1 else 'ies'}"
        )
    return arr


def check_choice(value: object, name: str, choices: Collection[str]) -> str:
    """Check that ``value`` is one of the strings in ``choices``."""
    if not isinstance(value, str):
        raise TypeError(
            f"{name}: expected one of {sorted(choices)}, received {type(value).__name__} {value!r}"
        )
    if value not in choices:
        raise ValueError(f"{name}: expected one of {sorted(choices)}, received {value!r}")
    return value


def _check_real_scalar(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name}: expected a real number, received {type(value).__name__} {value!r}"
        )
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, received {value!r}")
    return value


def check_positive(value: Any, name: str) -> float:
    """Check ``value`` is a finite real number > 0."""
    value = _check_real_scalar(value, name)
    if value <= 0:
        raise ValueError(f"{name}: expected a positive number, received {value!r}")
    return value


def check_nonnegative(value: Any, name: str) -> float:
    """Check ``value`` is a finite real number >= 0."""
    value = _check_real_scalar(value, name)
    if value < 0:
        raise ValueError(f"{name}: expected a non-negative number, received {value!r}")
    return value


def check_int(value: Any, name: str, minimum: int | None = None) -> int:
    """Check ``value`` is an integer (not bool), optionally ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, received {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, received {value}")
    return value


def as_generator(rng: Any, name: str = "rng") -> np.random.Generator:
    """Return a ``numpy.random.Generator`` from a Generator or an integer seed.

    ``None`` is refused: every random step in minifim is reproducible by construction.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"{name}: expected a numpy.random.Generator or an integer seed, received "
        f"{type(rng).__name__} {rng!r}"
    )


def is_box(x: object) -> bool:
    """True for an ``autograd`` tracer box (a value being differentiated).

    Boxed arrays pass through the shape checks of the differentiable methods (the
    ``backend="autograd"`` routes call them on boxes); dtype and finiteness are checked on
    plain arrays only, since inspecting a box's values would cut the derivative.
    """
    return isinstance(x, Box)


def check_net(net: Any, name: str = "net") -> Sequential:
    """Check that ``net`` is a :class:`minifim.MLP` or :class:`minifim.Sequential`; return it.

    Raises ``TypeError`` naming the argument and the type received (a torch module, a list of
    layer sizes or a parameter vector passed in its place are the usual mistakes).
    """
    if not isinstance(net, NetworkBase):
        hint = ""
        if isinstance(net, (list, tuple)):
            hint = " (build one with minifim.MLP(sizes) or minifim.Sequential(layers))"
        elif isinstance(net, np.ndarray):
            hint = " (net comes first, then theta)"
        elif hasattr(net, "parameters") and hasattr(net, "forward"):
            hint = (
                " (a torch module: describe it with minifim.MLP or minifim.Sequential and "
                "load its weights with from_state_dict)"
            )
        raise TypeError(
            f"{name}: expected a minifim.MLP, received {describe(net)}{hint} (a "
            "minifim.Sequential is accepted too)"
        )
    return cast("Sequential", net)  # Sequential (and its subclass MLP) is the only NetworkBase


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is ``True``/``False`` (a NumPy bool too), else ``TypeError`` naming it."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{name}: expected True or False, received {type(value).__name__} {value!r}"
        )
    return bool(value)
