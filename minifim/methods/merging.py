"""Fisher-weighted model merging (Matena & Raffel 2022): ``(sum_i F_i)^{-1} sum_i F_i theta_i``.

Contract
--------
``M`` models with parameters ``theta_i: (P,)`` of the same network (merging is meaningful only
for models that share an initialisation or are otherwise aligned; nothing here permutes
units). Model ``i`` contributes a precision ``W_i = w_i F_i``:

- ``fishers=`` gives ``F_i`` directly (``(P,)`` diagonals, ``(P, P)`` matrices, or per-layer
  block lists, according to ``structure``, or curvature structure objects such as
  :func:`minifim.curvature` returns), with weights ``w_i`` (default 1);
- ``data=`` gives each model's data ``(X_i, y_i)``; ``F_i`` is then the *mean* curvature of kind
  ``fisher`` at ``theta_i`` on ``X_i`` and the default weight is ``w_i = N_i`` (the number of
  samples), so ``W_i = N_i F_i`` is model ``i``'s summed Fisher: the precision of its Laplace
  posterior under a flat prior. For linear-Gaussian models trained by least squares on
  disjoint data, full-curvature merging with these weights is exactly joint training.

The merge is the minimiser of ``sum_i 1/2 (theta - theta_i)^T W_i (theta - theta_i)``:

``theta = (sum_i W_i + damping I)^{-1} (sum_i W_i theta_i + damping theta_bar)``,

with ``theta_bar`` the unweighted mean of the ``theta_i``: damping adds ``damping / M * I`` to
every model's precision, so directions no model constrains fall back to the plain average.

Models trained with the same Gaussian prior ``N(mu, alpha^{-1} I)`` (the penalty
``alpha/2 |theta - mu|^2`` added to the *summed* NLL, i.e. weight decay) are MAP estimates with
Laplace precisions ``W_i + alpha I``. Multiplying their Laplace posteriors and counting the prior
once (``prior_precision=alpha``, ``prior_mean=mu``, default ``0``) gives

``theta = (sum_i W_i + alpha I)^{-1} (sum_i (W_i + alpha I) theta_i - (M - 1) alpha mu)``,

which for linear-Gaussian models (ridge regression) on disjoint data is exactly the joint ridge
solution. ``alpha`` is on the scale of the summed Fishers ``N_i F_i``.
``structure`` (:class:`minifim.options.MergeStructure`): ``"isotropic"`` (``F_i = I``: the
weighted average, the baseline; merging's own value), ``"diag"`` (elementwise, Matena &
Raffel's choice), ``"block"`` (exact per-layer blocks, one small solve per layer), ``"full"``
(the dense ``(P, P)`` solve). Each ``F_i`` is a structure object
(:mod:`minifim.geometry.structures`): the summed precision is their sum ``sum_i w_i F_i``
(which keeps the structure) and the merge is its ``solve``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import as_float_array, check_net, check_nonnegative, check_positive
from ..geometry.curvature import curvature_is_psd
from ..geometry.structures import BlockDiagonal, Dense, Diagonal, curvature
from ..geometry.structures import Structure as StructureObject
from ..memory import require_memory
from ..options import FisherKind, MergeStructure, as_option, deprecated_keywords

__all__ = ["fisher_merge", "MERGE_STRUCTURES", "MERGE_CURVATURES"]

#: The ``structure=`` values of :func:`fisher_merge` (:class:`minifim.options.MergeStructure`).
MERGE_STRUCTURES = MergeStructure.values()
MERGE_CURVATURES = MERGE_STRUCTURES  # the former name, kept importable


def _as_list(value: Any, name: str) -> list:
    if isinstance(value, np.ndarray):
        return list(value)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name}: expected a sequence with one entry per model, received {type(value).__name__}"
        )
    return list(value)


def _check_thetas(net: Any, thetas: Any) -> np.ndarray:
    thetas = _as_list(thetas, "thetas")
    if not thetas:
        raise ValueError("thetas: expected at least one model, received none")
    return np.stack([net.check_theta(t, f"thetas[{i}]") for i, t in enumerate(thetas)])


def _check_weights(weights: Any, M: int) -> np.ndarray | None:
    if weights is None:
        return None
    weights = _as_list(weights, "weights")
    if len(weights) != M:
        raise ValueError(f"weights: expected {M} weights (one per model), received {len(weights)}")
    return np.array([check_positive(w, f"weights[{i}]") for i, w in enumerate(weights)])


def _check_data(net: Any, data: Any, M: int) -> list[tuple]:
    data = _as_list(data, "data")
    if len(data) != M:
        raise ValueError(f"data: expected {M} entries (one per model), received {len(data)}")
    out = []
    for i, entry in enumerate(data):
        if isinstance(entry, np.ndarray):
            X, y = entry, None
        elif isinstance(entry, tuple | list) and len(entry) == 2:
            X, y = entry
        else:
            raise TypeError(
                f"data[{i}]: expected an input array X_i or a pair (X_i, y_i), "
                f"received {type(entry).__name__}"
            )
        X = net.check_inputs(X, f"data[{i}] inputs")
        if y is not None:
            y = net.check_targets(y, X.shape[0], f"data[{i}] targets")
        out.append((X, y))
    return out


def _check_block_list(net: Any, F: Any, name: str) -> list[np.ndarray]:
    sizes = [s.stop - s.start for s in net.layer_param_slices()]
    blocks = _as_list(F, name)
    if len(blocks) != len(sizes):
        raise ValueError(
            f"{name}: expected {len(sizes)} per-layer blocks of sizes {sizes}, "
            f"received {len(blocks)} entries"
        )
    return [
        _check_symmetric(as_float_array(b, f"{name}[{l}]", shape=(s, s)), f"{name}[{l}]")
        for l, (b, s) in enumerate(zip(blocks, sizes))
    ]


def _check_symmetric(F: np.ndarray, name: str) -> np.ndarray:
    scale = max(1.0, float(np.abs(F).max()) if F.size else 1.0)
    if not np.allclose(F, F.T, rtol=1e-10, atol=1e-12 * scale):
        raise ValueError(
            f"{name}: expected a symmetric matrix, received max |F - F^T| = "
            f"{np.abs(F - F.T).max():.3g}"
        )
    return F


def _diagonal(net: Any, F: Any, name: str) -> Diagonal:
    d = as_float_array(F, name, shape=(net.num_params,))
    if np.any(d < 0):
        raise ValueError(
            f"{name}: expected a non-negative Fisher diagonal, received "
            f"{int(np.sum(d < 0))} negative entries"
        )
    return Diagonal(d)


def _dense(net: Any, F: Any, name: str) -> Dense:
    P = net.num_params
    return Dense(_check_symmetric(as_float_array(F, name, shape=(P, P)), name))


def _blocks(net: Any, F: Any, name: str) -> BlockDiagonal:
    return BlockDiagonal(_check_block_list(net, F, name))


#: How a given Fisher array is read, per structure.
_READERS = {"diag": _diagonal, "full": _dense, "block": _blocks}


def _given_fisher(net: Any, F: Any, structure: str, name: str) -> StructureObject:
    """A given ``F_i`` as a structure object (a structure object is used as it is)."""
    if isinstance(F, StructureObject):
        P = net.num_params
        if F.shape != (P, P):
            raise ValueError(
                f"{name}: expected a curvature of shape ({P}, {P}), received {F.shape}"
            )
        return F
    return _READERS[structure](net, F, name)


def _full_bytes(net: Any) -> tuple[int, str, str]:
    P = net.num_params
    return (
        4 * 8 * P * P,
        f"full Fisher merging: summed precision, one model's precision and "
        f"their sum (4 x ({P}, {P}) float64)",
        "structure='block' (per-layer blocks) or structure='diag'",
    )


def _block_bytes(net: Any) -> tuple[int, str, str]:
    sizes = [s.stop - s.start for s in net.layer_param_slices()]
    return (
        4 * 8 * sum(s * s for s in sizes),
        f"block Fisher merging: summed per-layer "
        f"precision blocks of sizes {sizes}, one model's blocks and their sum (4 copies) "
        "float64",
        "structure='diag' (the exact diagonal, P floats per model)",
    )


#: The memory of the summed precision, one model's precision and their sum, per structure
#: (``"diag"``: ``4 P`` floats, not guarded).
_MEMORY = {"full": _full_bytes, "block": _block_bytes}


def _check_memory(net: Any, structure: str) -> None:
    """Guard the summed precision, one model's precision and the sum's temporaries."""
    if structure in _MEMORY:
        require_memory(*_MEMORY[structure](net))


@deprecated_keywords(curvature="structure")
def fisher_merge(
    net: Any,
    thetas: Any,
    fishers: Any = None,
    *,
    data: Any = None,
    structure: str = "diag",
    fisher: str = "true",
    weights: Any = None,
    damping: float = 0.0,
    prior_precision: float = 0.0,
    prior_mean: Any = None,
    n_samples: int = 1,
    rng: Any = None,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Merge models by Fisher-weighted averaging.

    Parameters
    ----------
    net : Sequential (or MLP)
        The common architecture.
    thetas : sequence of M ndarrays, shape (P,), or ndarray, shape (M, P)
    fishers : sequence of M curvatures, optional
        Per model: ``(P,)`` for ``"diag"``, ``(P, P)`` for ``"full"``, a list of ``L`` blocks
        ``(P_l, P_l)`` (as :func:`minifim.block_diagonal`) for ``"block"``; or structure
        objects (:class:`minifim.Dense`, :class:`minifim.Diagonal`,
        :class:`minifim.BlockDiagonal`, :class:`minifim.KFAC`, e.g. from
        :func:`minifim.curvature`), used as they are.
    data : sequence of M entries ``X_i: (N_i, D)`` or ``(X_i, y_i)``, optional
        Compute ``F_i`` (mean curvature of kind ``fisher`` at ``theta_i`` on ``X_i``) instead;
        the default weights are then ``N_i``. ``y_i`` is needed for ``fisher="empirical"``.
        Give exactly one of ``fishers`` and ``data`` unless ``structure="isotropic"`` (where
        ``data`` only supplies the counts ``N_i`` as weights).
    structure : {"isotropic", "diag", "block", "full"}
        How each model's curvature enters (module docstring); ``"isotropic"`` is merging's
        own value (no curvature). Formerly ``curvature=`` (deprecated until 0.3.0).
    fisher : {"true", "empirical", "mc", "argmax", "ggn"}
        Kind of curvature computed from ``data``.
    weights : sequence of M positive floats, optional
        ``w_i``; default 1 with ``fishers`` (or for isotropic merging without data), ``N_i``
        with ``data``.
    damping : float >= 0
        Adds ``damping / M * I`` to each model's precision (pulls unconstrained directions to
        the plain average). Needed when the summed precision is singular.
    prior_precision : float >= 0
        ``alpha`` of a Gaussian prior shared by the models' training (weight decay on the
        summed NLL), counted once in the merged posterior (module docstring).
    prior_mean : ndarray, shape (P,), optional
        ``mu`` of that prior (default zero).
    n_samples, rng : Monte-Carlo labels (``fisher="mc"``)
    chunk_size : samples per chunk

    Returns
    -------
    theta : ndarray, shape (P,)

    Notes
    -----
    ``theta = (sum_i w_i F_i + (alpha + damping) I)^{-1} (sum_i w_i F_i theta_i
    + alpha (sum_i theta_i - (M - 1) mu) + damping theta_bar)``; the ``"diag"`` case is
    elementwise and ``"block"`` solves each layer's block separately.

    Examples
    --------
    >>> import numpy as np, minifim
    >>> net = minifim.MLP([2, 1], activation="identity", likelihood="gaussian")
    >>> a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 2.0])
    >>> minifim.fisher_merge(net, [a, b], structure="isotropic")
    array([0.5, 0.5, 1. ])
    >>> minifim.fisher_merge(net, [a, b], [np.array([3.0, 1, 1]), np.array([1.0, 1, 1])])
    array([0.75, 0.5 , 1.  ])
    """
    check_net(net)
    structure = as_option(structure, MergeStructure, "structure").value
    fisher = as_option(fisher, FisherKind, "fisher").value
    if data is not None and not curvature_is_psd(net, fisher):
        raise ValueError(
            f"fisher: the 'ggn' curvature of the {net.likelihood.describe()} likelihood is "
            "indefinite at the labels; Fisher merging weights the models by positive "
            "semi-definite precisions (sum_i M_i)^-1 sum_i M_i theta_i; use fisher='true' "
            "(its expectation over the model's labels)"
        )
    Th = _check_thetas(net, thetas)
    M, P = Th.shape
    w = _check_weights(weights, M)
    damping = check_nonnegative(damping, "damping")
    alpha = check_nonnegative(prior_precision, "prior_precision")
    mu = np.zeros(P) if prior_mean is None else as_float_array(prior_mean, "prior_mean", shape=(P,))
    checked_data = None if data is None else _check_data(net, data, M)
    if w is None:
        w = (
            np.ones(M)
            if checked_data is None
            else np.array([float(X.shape[0]) for X, _ in checked_data])
        )

    if structure == "isotropic":
        if fishers is not None:
            raise ValueError(
                "fishers: isotropic merging uses no curvature; received fishers "
                "with structure='isotropic'"
            )
        if alpha != 0 or prior_mean is not None:
            raise ValueError(
                "prior_precision, prior_mean: isotropic merging uses no "
                "precisions; received a prior with structure='isotropic'"
            )
        return (w @ Th) / w.sum()
    if (fishers is None) == (checked_data is None):
        raise ValueError(
            f"fishers, data: expected exactly one of them for structure="
            f"{structure!r}, received "
            f"{'neither' if fishers is None else 'both'}"
        )
    if fishers is not None:
        fishers = _as_list(fishers, "fishers")
        if len(fishers) != M:
            raise ValueError(
                f"fishers: expected {M} entries (one per model), received {len(fishers)}"
            )
    _check_memory(net, structure)
    # the constant parts: (alpha + damping) I and alpha (sum theta_i - (M-1) mu) + damping theta_bar
    shift = alpha + damping
    rhs = alpha * (Th.sum(axis=0) - (M - 1) * mu) + damping * Th.mean(axis=0)
    total: Any = None
    for i in range(M):
        if fishers is not None:
            F = _given_fisher(net, fishers[i], structure, f"fishers[{i}]")
        else:
            assert checked_data is not None
            X, y = checked_data[i]
            F = curvature(
                net,
                Th[i],
                X,
                y,
                fisher,
                structure,
                n_samples=n_samples,
                rng=rng,
                chunk_size=chunk_size,
            )
        Wi = w[i] * F  # model i's precision W_i = w_i F_i, in F_i's structure
        rhs += Wi @ Th[i]
        total = Wi if total is None else total + Wi
        del F, Wi
    return total.solve(rhs, shift)
