"""Fisher-weighted model merging (Matena & Raffel 2022): ``(sum_i F_i)^{-1} sum_i F_i theta_i``.

Contract
--------
``M`` models with parameters ``theta_i: (P,)`` of the same network (merging is meaningful only
for models that share an initialisation or are otherwise aligned; nothing here permutes
units). Model ``i`` contributes a precision ``W_i = w_i F_i``:

- ``fishers=`` gives ``F_i`` directly (``(P,)`` diagonals, ``(P, P)`` matrices, or per-layer
  block lists, according to ``curvature``), with weights ``w_i`` (default 1);
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
``curvature``: ``"isotropic"`` (``F_i = I``: the weighted average, the baseline), ``"diag"``
(elementwise, Matena & Raffel's choice), ``"block"`` (exact per-layer blocks, one small solve
per layer), ``"full"`` (the dense ``(P, P)`` solve).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._linalg import damped_solve
from .._validation import as_float_array, check_choice, check_net, check_nonnegative, check_positive
from ..geometry.curvature import FISHER_KINDS, block_diagonal, curvature_matrix, fisher_diagonal
from ..memory import require_memory

__all__ = ["fisher_merge", "MERGE_CURVATURES"]

MERGE_CURVATURES = ("isotropic", "diag", "block", "full")


def _as_list(value, name: str) -> list:
    if isinstance(value, np.ndarray):
        return list(value)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name}: expected a sequence with one entry per model, received "
                        f"{type(value).__name__}")
    return list(value)


def _check_thetas(net, thetas) -> np.ndarray:
    thetas = _as_list(thetas, "thetas")
    if not thetas:
        raise ValueError("thetas: expected at least one model, received none")
    return np.stack([net.check_theta(t, f"thetas[{i}]") for i, t in enumerate(thetas)])


def _check_weights(weights, M: int) -> np.ndarray | None:
    if weights is None:
        return None
    weights = _as_list(weights, "weights")
    if len(weights) != M:
        raise ValueError(f"weights: expected {M} weights (one per model), received "
                         f"{len(weights)}")
    return np.array([check_positive(w, f"weights[{i}]") for i, w in enumerate(weights)])


def _check_data(net, data, M: int) -> list[tuple]:
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
            raise TypeError(f"data[{i}]: expected an input array X_i or a pair (X_i, y_i), "
                            f"received {type(entry).__name__}")
        X = net.check_inputs(X, f"data[{i}] inputs")
        if y is not None:
            y = net.check_targets(y, X.shape[0], f"data[{i}] targets")
        out.append((X, y))
    return out


def _check_block_list(net, F, name: str) -> list[np.ndarray]:
    sizes = [o * i + o for o, i in net.shapes]
    blocks = _as_list(F, name)
    if len(blocks) != len(sizes):
        raise ValueError(f"{name}: expected {len(sizes)} per-layer blocks of sizes {sizes}, "
                         f"received {len(blocks)} entries")
    return [_check_symmetric(as_float_array(b, f"{name}[{l}]", shape=(s, s)), f"{name}[{l}]")
            for l, (b, s) in enumerate(zip(blocks, sizes))]


def _check_symmetric(F: np.ndarray, name: str) -> np.ndarray:
    scale = max(1.0, float(np.abs(F).max()) if F.size else 1.0)
    if not np.allclose(F, F.T, rtol=1e-10, atol=1e-12 * scale):
        raise ValueError(f"{name}: expected a symmetric matrix, received max |F - F^T| = "
                         f"{np.abs(F - F.T).max():.3g}")
    return F


def _check_fisher(net, F, curvature: str, name: str):
    P = net.num_params
    if curvature == "diag":
        d = as_float_array(F, name, shape=(P,))
        if np.any(d < 0):
            raise ValueError(f"{name}: expected a non-negative Fisher diagonal, received "
                             f"{int(np.sum(d < 0))} negative entries")
        return d
    if curvature == "full":
        return _check_symmetric(as_float_array(F, name, shape=(P, P)), name)
    return _check_block_list(net, F, name)


def _compute_fisher(net, theta, X, y, curvature, fisher, n_samples, rng, chunk_size):
    kwargs = dict(n_samples=n_samples, rng=rng, chunk_size=chunk_size)
    if curvature == "diag":
        return fisher_diagonal(net, theta, X, y, fisher, **kwargs)
    if curvature == "full":
        return curvature_matrix(net, theta, X, y, fisher, **kwargs)
    return block_diagonal(net, theta, X, y, fisher, **kwargs)


def fisher_merge(net, thetas, fishers=None, *, data=None, curvature: str = "diag",
                 fisher: str = "true", weights=None, damping: float = 0.0,
                 prior_precision: float = 0.0, prior_mean=None, n_samples: int = 1,
                 rng=None, chunk_size: int | None = None) -> np.ndarray:
    """Merge models by Fisher-weighted averaging.

    Parameters
    ----------
    net : MLP
        The common architecture.
    thetas : sequence of M ndarrays, shape (P,), or ndarray, shape (M, P)
    fishers : sequence of M curvatures, optional
        Per model: ``(P,)`` for ``"diag"``, ``(P, P)`` for ``"full"``, a list of ``L`` blocks
        ``(P_l, P_l)`` (as :func:`minifim.block_diagonal`) for ``"block"``.
    data : sequence of M entries ``X_i: (N_i, D)`` or ``(X_i, y_i)``, optional
        Compute ``F_i`` (mean curvature of kind ``fisher`` at ``theta_i`` on ``X_i``) instead;
        the default weights are then ``N_i``. ``y_i`` is needed for ``fisher="empirical"``.
        Give exactly one of ``fishers`` and ``data`` unless ``curvature="isotropic"`` (where
        ``data`` only supplies the counts ``N_i`` as weights).
    curvature : {"isotropic", "diag", "block", "full"}
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
    >>> minifim.fisher_merge(net, [a, b], curvature="isotropic")
    array([0.5, 0.5, 1. ])
    >>> minifim.fisher_merge(net, [a, b], [np.array([3.0, 1, 1]), np.array([1.0, 1, 1])])
    array([0.75, 0.5 , 1.  ])
    """
    check_net(net)
    check_choice(curvature, "curvature", MERGE_CURVATURES)
    check_choice(fisher, "fisher", FISHER_KINDS)
    Th = _check_thetas(net, thetas)
    M, P = Th.shape
    w = _check_weights(weights, M)
    damping = check_nonnegative(damping, "damping")
    alpha = check_nonnegative(prior_precision, "prior_precision")
    mu = (np.zeros(P) if prior_mean is None
          else as_float_array(prior_mean, "prior_mean", shape=(P,)))
    checked_data = None if data is None else _check_data(net, data, M)
    if w is None:
        w = (np.ones(M) if checked_data is None
             else np.array([float(X.shape[0]) for X, _ in checked_data]))

    if curvature == "isotropic":
        if fishers is not None:
            raise ValueError("fishers: isotropic merging uses no curvature; received fishers "
                             "with curvature='isotropic'")
        if alpha != 0 or prior_mean is not None:
            raise ValueError("prior_precision, prior_mean: isotropic merging uses no "
                             "precisions; received a prior with curvature='isotropic'")
        return (w @ Th) / w.sum()
    if (fishers is None) == (checked_data is None):
        raise ValueError(f"fishers, data: expected exactly one of them for curvature="
                         f"{curvature!r}, received "
                         f"{'neither' if fishers is None else 'both'}")
    if fishers is not None:
        fishers = _as_list(fishers, "fishers")
        if len(fishers) != M:
            raise ValueError(f"fishers: expected {M} entries (one per model), received "
                             f"{len(fishers)}")
    if curvature == "full":
        require_memory(2 * 8 * P * P, f"full Fisher merging: summed precision and one "
                       f"model's Fisher (2 x ({P}, {P}) float64)",
                       "curvature='block' (per-layer blocks) or curvature='diag'")
    # the constant parts: (alpha + damping) I and alpha (sum theta_i - (M-1) mu) + damping theta_bar
    shift = alpha + damping
    base = alpha * (Th.sum(axis=0) - (M - 1) * mu) + damping * Th.mean(axis=0)

    def model_fisher(i):
        if fishers is not None:
            return _check_fisher(net, fishers[i], curvature, f"fishers[{i}]")
        X, y = checked_data[i]
        return _compute_fisher(net, Th[i], X, y, curvature, fisher, n_samples, rng,
                               chunk_size)

    if curvature == "diag":
        prec, rhs = np.full(P, shift), base.copy()
        for i in range(M):
            d = w[i] * model_fisher(i)
            prec += d
            rhs += d * Th[i]
        if np.any(prec <= 0):
            bad = np.flatnonzero(prec <= 0)
            raise ValueError(f"damping: {bad.size} parameters (first: index {bad[0]}) have zero "
                             f"summed Fisher and damping={damping!r} (prior_precision="
                             f"{alpha!r}); pass damping > 0 to fall back to the plain average "
                             "there")
        return rhs / prec
    if curvature == "full":
        prec, rhs = np.zeros((P, P)), base.copy()
        for i in range(M):
            F = w[i] * model_fisher(i)
            prec += F
            rhs += F @ Th[i]
        return damped_solve(prec, rhs, shift, what="summed precision (with prior_precision + "
                            "damping as the damping)", overwrite_m=True)
    slices = net.layer_param_slices()
    sizes = [s.stop - s.start for s in slices]
    copies = 1 if fishers is not None else 2  # the summed blocks (+ one model's, computed)
    require_memory(copies * 8 * sum(s * s for s in sizes),
                   f"block Fisher merging: summed per-layer precision blocks of sizes {sizes}"
                   + (" and one model's blocks" if copies == 2 else "") + " float64",
                   "curvature='diag' (the exact diagonal, P floats per model)")
    precs = [np.zeros((s.stop - s.start,) * 2) for s in slices]
    rhss = [base[s].copy() for s in slices]
    for i in range(M):
        for l, (B, s) in enumerate(zip(model_fisher(i), slices)):
            precs[l] += w[i] * B
            rhss[l] += w[i] * (B @ Th[i, s])
    return np.concatenate([damped_solve(A, b, shift, what=f"summed precision block of layer {l}",
                                        overwrite_m=True)
                           for l, (A, b) in enumerate(zip(precs, rhss))])
