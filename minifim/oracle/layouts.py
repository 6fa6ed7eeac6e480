"""Parameter layouts of other code: the permutation between minifim's flat order and theirs.

``"pytorch"`` is minifim's own order (``W0, b0, W1, b1, ...`` with ``W: (out, in)`` row-major);
``"in-out"`` stores each ``W`` as ``(in, out)`` (``x @ W`` code such as the HIPS autograd
examples), ``W0, b0, ...``; ``"jax"`` is ``jax.flatten_util.ravel_pytree`` of flax parameters
(layers in sorted-name order, ``bias`` before ``kernel: (in, out)``). A conversion is a
permutation of the parameter axes: exact, never an approximation. ``REDUCTIONS`` are the two
reductions a candidate may use (``"sum"`` is divided by ``N ** reduction_power``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import as_float_array, check_net
from ..core.conventions import REDUCTIONS
from ..core.model import Sequential
from ..options import Layout, as_option

__all__ = [
    "LAYOUTS",
    "REDUCTIONS",
    "layout_permutation",
    "to_minifim_layout",
    "from_minifim_layout",
]

LAYOUTS: tuple[Layout, ...] = tuple(Layout)  # the vocabulary, as a public constant


def layout_permutation(net: Sequential, layout: str) -> np.ndarray:
    """``perm: (P,)`` with ``candidate[k] = theta[perm[k]]`` for a candidate in ``layout``.

    ``"pytorch"``: the identity. ``"in-out"``: per layer ``W.T.ravel()`` then ``b``.
    ``"jax"``: ``ravel_pytree`` order of flax parameters ``{"Dense_l": {"bias", "kernel"}}``:
    layers sorted by name as strings (``Dense_10`` before ``Dense_2``), bias then kernel
    ``(in, out)`` row-major. ``W`` is the weight as a matrix, ``net.shapes[l]`` (a ``Conv2d``:
    ``(out, C_in kh kw)``, so ``"in-out"`` is its transpose ``(C_in kh kw, out)``; flax's NHWC
    convolution kernels ``(kh, kw, C_in, out)`` are not one of these layouts). A layer without
    bias contributes its weight only.
    """
    check_net(net)
    layout = as_option(layout, Layout, "layout")
    if layout == "pytorch":
        return np.arange(net.num_params)
    blocks = []
    for (out, inp), (ws, bs) in zip(net.shapes, net.layer_slices):
        kernel = ws.start + np.arange(out * inp).reshape(out, inp).T.ravel()
        bias = np.arange(bs.start, bs.stop)
        blocks.append((kernel, bias))
    if layout == "in-out":
        return np.concatenate([np.concatenate(kb) for kb in blocks])
    order = sorted(range(net.num_layers), key=lambda l: f"Dense_{l}")
    return np.concatenate([np.concatenate((blocks[l][1], blocks[l][0])) for l in order])


def _permute_axes(arr: np.ndarray, axes: Any, index: np.ndarray) -> np.ndarray:
    for ax in axes:
        arr = np.take(arr, index, axis=ax)
    return arr


def _check_layout_args(net: Sequential, arr: Any, param_axes: Any) -> tuple[np.ndarray, list[int]]:
    """``arr`` as float64 and ``param_axes`` as distinct non-negative axes of length ``P``."""
    check_net(net)
    arr = as_float_array(arr, "arr", finite=False)
    if isinstance(param_axes, (str, bytes)) or not isinstance(param_axes, Sequence | np.ndarray):
        raise TypeError(
            f"param_axes: expected a sequence of integers (the axes of arr indexed "
            f"by flat parameters), received {type(param_axes).__name__} "
            f"{param_axes!r}"
        )
    axes: list[int] = []
    for ax in param_axes:
        if isinstance(ax, (bool, np.bool_)) or not isinstance(ax, numbers.Integral):
            raise TypeError(
                f"param_axes: expected a sequence of integers, received {list(param_axes)!r}"
            )
        ax = int(ax)
        if not -arr.ndim <= ax < arr.ndim:
            raise ValueError(f"param_axes: axis {ax} is out of range for arr of shape {arr.shape}")
        ax %= arr.ndim
        if ax in axes:
            raise ValueError(f"param_axes: axis {ax} is listed twice in {list(param_axes)!r}")
        if arr.shape[ax] != net.num_params:
            raise ValueError(
                f"param_axes: axis {ax} of arr has length {arr.shape[ax]}, "
                f"expected P = {net.num_params} (arr has shape {arr.shape})"
            )
        axes.append(ax)
    return arr, axes


def to_minifim_layout(
    net: Sequential, arr: Any, param_axes: Sequence[int], layout: str
) -> np.ndarray:
    """Reorder the parameter axes ``param_axes`` of ``arr`` from ``layout`` to minifim's.

    Parameters
    ----------
    net : Sequential (or MLP)
    arr : array_like, real
        Returned as float64.
    param_axes : sequence of int
        Distinct axes of ``arr`` (negative counts from the end), each of length ``P``.
    layout : {"pytorch", "in-out", "jax"}

    Returns
    -------
    ndarray, the shape of ``arr``
    """
    arr, axes = _check_layout_args(net, arr, param_axes)
    perm = layout_permutation(net, layout)
    return _permute_axes(arr, axes, np.argsort(perm))


def from_minifim_layout(
    net: Sequential, arr: Any, param_axes: Sequence[int], layout: str
) -> np.ndarray:
    """Reorder the parameter axes ``param_axes`` of ``arr`` from minifim's order to ``layout``.

    Inverse of :func:`to_minifim_layout` (same arguments); e.g.
    ``from_minifim_layout(net, F, [0, 1], "jax")`` is the true Fisher as a JAX code computing
    it on ``ravel_pytree`` parameters holds it.
    """
    arr, axes = _check_layout_args(net, arr, param_axes)
    return _permute_axes(arr, axes, layout_permutation(net, layout))
