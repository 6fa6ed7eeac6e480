"""Weight sensitivity: the Fisher diagonal as an importance score, per parameter, unit or input.

Contract
--------
The sensitivity of a parameter is the exact diagonal entry ``M_ii`` of the curvature ``M`` of
kind ``fisher`` (see :mod:`minifim.geometry.curvature`; a mean over the ``N`` samples unless
``reduction="sum"``). To second order, moving ``theta_i`` by ``eps`` changes the model's output
distribution by ``KL = eps^2 M_ii / 2`` on average over the inputs (true Fisher). Nothing dense
is formed: the diagonal is the ``structure="diag"`` curvature (:class:`minifim.Diagonal`, from
:func:`minifim.fisher_diagonal`, one GEMM per layer) and the
unit "gate" scores from the same per-layer factors.

Aggregations (``per``):

- ``"parameter"``: ``d = diag(M)``, shape ``(P,)`` in flat order (``net.unflatten(d)`` gives
  the ``(W_l, b_l)``-shaped maps).
- ``"unit"``: one array ``(H_l,)`` per hidden layer ``l = 0 .. L-2`` (the units output by
  dense layer ``l``), summing ``d`` over the unit's

  * ``"incoming"`` parameters (default): row ``W_l[i, :]`` and bias ``b_l[i]``;
  * ``"outgoing"`` parameters: column ``W_{l+1}[:, i]``;
  * ``"both"``: the two sums added;
  * ``"gate"``: not a sum of diagonal entries but the exact Fisher of a multiplicative gate
    ``m_i`` on the unit's activation at ``m_i = 1`` (Molchanov et al. 2019; Theis et al. 2018,
    "Fisher pruning"). It equals ``w^T M w`` with ``w`` the unit's outgoing weights placed in
    their flat positions, so it keeps the off-diagonal couplings the sums drop: it measures
    what removing the whole unit costs to second order.

- ``"input"``: shape ``(D,)`` (or ``input_shape``, e.g. ``(8, 8)`` for digits): the sum of
  ``d`` over the first layer's weights from each input, column ``W_0[:, j]`` (``"outgoing"``,
  the default here), or the Fisher of a gate on input ``j`` (``"gate"``, ``= w^T M w`` with
  ``w`` column ``j`` of ``W_0`` in flat position).

The sums are exact linear aggregates of the diagonal; the gate scores are exact quadratic forms
of the full curvature. Both are tested against the dense matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import check_int, check_net
from ..core.conventions import reduction_scale
from ..core.model import MLP
from ..geometry.curvature import curvature_factors
from ..geometry.structures import curvature
from ..options import FisherKind, Reduction, SensitivityLevel, UnitAggregate, as_option

__all__ = ["sensitivity", "SENSITIVITY_LEVELS", "UNIT_AGGREGATES"]

SENSITIVITY_LEVELS = SensitivityLevel.values()
UNIT_AGGREGATES = UnitAggregate.values()
_INPUT_AGGREGATES = (UnitAggregate.OUTGOING, UnitAggregate.GATE)


def _check_input_shape(net: Any, input_shape: Any) -> tuple[int, ...] | None:
    if input_shape is None:
        return None
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(
            f"input_shape: expected a tuple of ints such as (8, 8), received "
            f"{type(input_shape).__name__} {input_shape!r}"
        )
    shape = tuple(check_int(s, f"input_shape[{i}]", 1) for i, s in enumerate(input_shape))
    if int(np.prod(shape)) != net.input_dim:
        raise ValueError(
            f"input_shape: expected a shape with {net.input_dim} entries (the "
            f"input dimension D), received {shape} with {int(np.prod(shape))}"
        )
    return shape


def _diagonal(
    net: Any,
    theta: Any,
    X: Any,
    y: Any,
    fisher: str,
    n_samples: int,
    rng: Any,
    reduction: str,
    chunk_size: int | None,
) -> np.ndarray:
    """``diag(M)``, ``(P,)``: the diagonal structure of the curvature (:func:`curvature`)."""
    return curvature(
        net,
        theta,
        X,
        y,
        fisher,
        "diag",
        reduction=reduction,
        n_samples=n_samples,
        rng=rng,
        chunk_size=chunk_size,
    ).diagonal()


def _gate_fisher(
    net: Any,
    theta: Any,
    X: Any,
    y: Any,
    fisher: str,
    n_samples: int,
    rng: Any,
    reduction: str,
    chunk_size: int | None,
) -> list[np.ndarray]:
    """Exact Fisher of multiplicative gates on the inputs and on every hidden unit.

    Returns ``[g_input: (D,), g_0: (H_0,), ..., g_{L-2}: (H_{L-2},)]`` where the gate on
    ``a_l[:, i]`` (the input of layer ``l``) has per-seed derivative
    ``a_l[n, i] * (B_l[n, k] W_l)[i]``.
    """
    layers = net.unflatten(net.check_theta(theta))
    out = [np.zeros(net.sizes[l]) for l in range(net.num_layers)]
    N = 0
    for acts, Bs in curvature_factors(net, theta, X, y, fisher, n_samples, rng, chunk_size):
        N += acts[0].shape[0]
        for l in range(net.num_layers):
            W = np.asarray(layers[l][0])
            # (n, K, in_l): seed derivative w.r.t. the layer's input a_l (R_l = 1 in an MLP)
            back = Bs[l][:, :, 0] @ W
            gate = back * acts[l][:, 0][:, None, :]
            out[l] += np.einsum("nki,nki->i", gate, gate)
    scale = reduction_scale(reduction, N)
    return [g * scale for g in out]


def sensitivity(
    net: Any,
    theta: Any,
    X: Any,
    y: Any = None,
    fisher: str = "true",
    per: str = "parameter",
    *,
    aggregate: str | None = None,
    input_shape: Sequence[int] | None = None,
    n_samples: int = 1,
    rng: Any = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Fisher sensitivity of the parameters, hidden units or inputs of ``net`` at ``theta``.

    Parameters
    ----------
    net : Sequential or MLP
        ``per="unit"`` and ``per="input"`` need an :class:`~minifim.MLP`.
    theta : ndarray, shape (P,)
    X : ndarray, shape ``(N, *input_shape)``
    y : targets, optional
        Needed for ``fisher="empirical"``; validated and ignored by the other kinds (so one
        call site can serve every kind).
    fisher : {"true", "empirical", "mc", "argmax", "ggn"}
        Which curvature's diagonal (see :mod:`minifim.geometry.curvature`).
    per : {"parameter", "unit", "input"}
    aggregate : {"incoming", "outgoing", "both", "gate"}, optional
        How units are scored (module docstring). Default ``"incoming"`` for ``per="unit"`` and
        ``"outgoing"`` for ``per="input"`` (inputs have no incoming parameters, so only
        ``"outgoing"`` and ``"gate"`` apply). Not accepted with ``per="parameter"``.
    input_shape : tuple of int, optional
        Reshape the ``per="input"`` result, e.g. ``(8, 8)`` for digits.
    n_samples, rng : Monte-Carlo labels per input and their generator (``fisher="mc"``)
        Ignored by the other kinds, as by :func:`minifim.fisher_diagonal` (``rng`` is
        required by ``"mc"``).
    reduction : {"mean", "sum"}
    chunk_size : samples per chunk

    Returns
    -------
    ``per="parameter"``: ndarray, shape (P,)
    ``per="unit"``: list of L-1 ndarrays, shape (H_l,), one per hidden layer
    ``per="input"``: ndarray, shape (D,) or ``input_shape``

    Notes
    -----
    ``d_i = M_ii = c sum_n sum_k (u_nk)_i^2``; unit sums ``sum_{i in unit} d_i``; gate scores
    ``c sum_n sum_k (a_l[n, j] (B_l[n, k] W_l)_j)^2 = w_j^T M w_j``.

    Examples
    --------
    >>> import numpy as np, minifim
    >>> net = minifim.MLP([3, 4, 2])
    >>> X = np.ones((5, 3))
    >>> [u.shape for u in minifim.sensitivity(net, net.init(0), X, per="unit")]
    [(4,)]
    >>> minifim.sensitivity(net, net.init(0), X, per="input").shape
    (3,)
    """
    check_net(net)
    fisher = as_option(fisher, FisherKind, "fisher").value
    per = as_option(per, SensitivityLevel, "per").value
    reduction = as_option(reduction, Reduction, "reduction").value
    if y is not None and fisher != "empirical":  # validated, then ignored (documented)
        net.check_targets(y, net.check_inputs(X).shape[0])
    if per == "parameter":
        if input_shape is not None:
            raise ValueError(
                "input_shape: only used with per='input', received "
                f"{input_shape!r} with per='parameter'"
            )
        if aggregate is not None:
            raise ValueError(
                "aggregate: only used with per='unit' or per='input', received "
                f"{aggregate!r} with per='parameter'"
            )
        return _diagonal(net, theta, X, y, fisher, n_samples, rng, reduction, chunk_size)
    if not isinstance(net, MLP):
        raise ValueError(
            f"per: {per!r} scores the units of a fully connected network (minifim.MLP); "
            f"{type(net).__name__} layers (convolutions, positions, reductions) have no such "
            "units: use per='parameter' (and sum its blocks over the units you mean)"
        )
    if per == "unit":
        if input_shape is not None:
            raise ValueError(
                f"input_shape: only used with per='input', received {input_shape!r} with per='unit'"
            )
        aggregate = as_option(
            "incoming" if aggregate is None else aggregate, UnitAggregate, "aggregate"
        ).value
        if net.num_layers < 2:
            raise ValueError(
                f"per: 'unit' scores hidden units, but {net!r} has no hidden "
                "layer; use per='parameter' or per='input'"
            )
    else:
        aggregate = as_option(
            "outgoing" if aggregate is None else aggregate,
            UnitAggregate,
            "aggregate",
            _INPUT_AGGREGATES,
        ).value
        shape = _check_input_shape(net, input_shape)

    if aggregate == "gate":
        gates = _gate_fisher(net, theta, X, y, fisher, n_samples, rng, reduction, chunk_size)
        if per == "unit":
            return gates[1:]
        return gates[0] if shape is None else gates[0].reshape(shape)

    d = _diagonal(net, theta, X, y, fisher, n_samples, rng, reduction, chunk_size)
    blocks = [(d[ws].reshape(shp), d[bs]) for shp, (ws, bs) in zip(net.shapes, net.layer_slices)]
    if per == "input":
        out = blocks[0][0].sum(axis=0)
        return out if shape is None else out.reshape(shape)
    units = []
    for l in range(net.num_layers - 1):
        incoming = blocks[l][0].sum(axis=1) + blocks[l][1]
        outgoing = blocks[l + 1][0].sum(axis=0)
        units.append(
            {"incoming": incoming, "outgoing": outgoing, "both": incoming + outgoing}[aggregate]
        )
    return units
