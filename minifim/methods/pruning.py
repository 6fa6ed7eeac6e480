"""Pruning by magnitude, Optimal Brain Damage and Optimal Brain Surgeon with the exact Fisher.

Contract
--------
The loss is the mean negative log-likelihood ``L(theta) = 1/N sum_n -log p_theta(y_n | x_n)``
(:func:`minifim.loss`) and its curvature ``M`` is the mean curvature of kind ``fisher`` (the
true Fisher by default; equal to the GGN for the likelihoods here), plus ``damping * I``:
``A = M + damping I``. Both pruning criteria assume ``theta`` is a trained minimum, so the
gradient term is dropped and removing weights with a change ``delta`` costs, to second order,
``dL = 1/2 delta^T A delta`` ("predicted increase", in units of the mean NLL). For a
linear-Gaussian model at its least-squares solution with ``damping=0`` this is exact.

Criteria (``criterion=``, :class:`minifim.options.PruningCriterion`)
--------------------------------------------------------------------
``"magnitude"``
    Remove the prunable weights with the smallest ``|theta_i|``; no curvature, no update.
``"obd"`` (LeCun, Denker & Solla 1990)
    Saliency ``1/2 A_ii theta_i^2`` from the exact diagonal (never dense); remove the
    smallest, no update. Predicted increase: the sum of the removed saliencies.
``"obs"`` (Hassibi & Stork 1993)
    With ``A^{-1}`` restricted to the weights still free, remove the weight with the smallest
    ``theta_q^2 / (2 [A^{-1}]_qq)`` and move all free parameters by
    ``delta = -theta_q / [A^{-1}]_qq A^{-1} e_q``, the exact minimiser of ``1/2 delta^T A delta``
    subject to ``delta_q = -theta_q``. ``block_size = k > 1`` removes the ``k`` smallest
    saliencies at once with the exact joint update ``delta = -A^{-1} E_Q ([A^{-1}]_QQ)^{-1}
    theta_Q`` at cost ``1/2 theta_Q^T ([A^{-1}]_QQ)^{-1} theta_Q``.

OBS schedule and invariants: by default the curvature is computed once, at the given ``theta``.
After each removal the inverse is restricted to the remaining set by the Schur-complement
downdate ``A^{-1}_RR - A^{-1}_RQ ([A^{-1}]_QQ)^{-1} A^{-1}_QR`` (which is ``(A_RR)^{-1}``), so
pruned weights never move again: they are exactly ``0.0`` in every result. The sum of the step
costs equals ``1/2 delta^T A delta`` of the accumulated change, and the result is the exact
minimiser of the quadratic model over the kept weights. ``recompute_every=r`` instead recomputes
the curvature at the current parameters every ``r`` steps and inverts it on the remaining set
(Hassibi & Stork's loop back to "compute H^-1"); pruned weights stay exactly zero, and the
sum-of-costs identity then holds within each segment only.

Prunable parameters: weights only by default (``prunable="weights"``); biases still move
under the OBS update. ``sparsity`` is the fraction of the *prunable* parameters removed,
rounded to the nearest count.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._linalg import damped_inverse
from .._validation import as_float_array, check_int, check_net, check_nonnegative
from ..geometry.structures import Structure as StructureObject
from ..geometry.structures import curvature as make_curvature
from ..memory import require_memory
from ..options import (
    DEPRECATION_SINCE,
    DEPRECATION_UNTIL,
    FisherKind,
    Prunable,
    PruningCriterion,
    as_option,
    deprecated_keywords,
)

__all__ = ["PruningResult", "prune", "prune_path", "PRUNING_CRITERIA", "PRUNING_METHODS"]

#: The ``criterion=`` values (:class:`minifim.options.PruningCriterion`).
PRUNING_CRITERIA = PruningCriterion.values()
PRUNING_METHODS = PRUNING_CRITERIA  # the former name, kept importable


@dataclass(frozen=True)
class PruningResult:
    """The outcome of pruning to one sparsity level.

    Attributes
    ----------
    theta : ndarray, shape (P,)
        Pruned parameters; ``theta[~mask] == 0.0`` exactly. For OBS the kept parameters carry
        the compensating update.
    mask : ndarray of bool, shape (P,)
        ``True`` where the parameter is kept.
    pruned : ndarray of int, shape (K,)
        Flat indices of the removed parameters, in the order of removal.
    scores : ndarray, shape (K,)
        The ranking score of each removed parameter when it was removed: ``|theta_i|``
        (magnitude), ``1/2 A_ii theta_i^2`` (OBD), ``theta_q^2 / (2 [A^{-1}]_qq)`` (OBS).
    predicted_increase : float
        The criterion's second-order prediction of the increase of the mean NLL: the sum of the
        OBD saliencies, the sum of the OBS step costs (``= 1/2 delta^T A delta``); ``nan`` for
        magnitude pruning, which has no curvature.
    criterion : str
        The saliency criterion: ``"magnitude"``, ``"obd"`` or ``"obs"``.
    sparsity : float
        The achieved fraction ``K / (number of prunable parameters)``.
    """

    theta: np.ndarray
    mask: np.ndarray
    pruned: np.ndarray
    scores: np.ndarray
    predicted_increase: float
    criterion: str
    sparsity: float

    @property
    def method(self) -> str:
        """The former name of :attr:`criterion` (deprecated until minifim 0.3.0)."""
        warnings.warn(
            f"PruningResult.method is deprecated since minifim {DEPRECATION_SINCE} "
            f"and will be removed in {DEPRECATION_UNTIL}; use .criterion",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.criterion


def _prunable_mask(net: Any, prunable: Any) -> np.ndarray:
    P = net.num_params
    if isinstance(prunable, str):
        prunable = as_option(prunable, Prunable, "prunable").value
        mask = np.zeros(P, dtype=bool)
        for ws, bs in net.layer_slices:
            mask[ws] = True
            if prunable == "all":
                mask[bs] = True
        return mask
    arr = np.asarray(prunable)
    if arr.dtype != np.bool_ or arr.shape != (P,):
        raise ValueError(
            f"prunable: expected 'weights', 'all' or a boolean mask of shape "
            f"({P},), received an array of shape {arr.shape} and dtype "
            f"{arr.dtype}"
        )
    if not arr.any():
        raise ValueError("prunable: the mask selects no parameter")
    return arr.copy()


def _check_sparsities(sparsities: Any) -> list[float]:
    if isinstance(sparsities, (str, bytes)) or not isinstance(sparsities, Sequence | np.ndarray):
        raise TypeError(
            f"sparsities: expected a sequence of fractions in [0, 1), received "
            f"{type(sparsities).__name__}"
        )
    out = [_check_fraction(s, f"sparsities[{i}]") for i, s in enumerate(sparsities)]
    if not out:
        raise ValueError("sparsities: expected at least one sparsity level, received none")
    if any(b < a for a, b in zip(out, out[1:])):
        raise ValueError(
            f"sparsities: expected non-decreasing levels (one pruning path), received {out}"
        )
    return out


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name}: expected a fraction in [0, 1), received {type(value).__name__} {value!r}"
        )
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name}: expected a fraction in [0, 1), received {value!r}")
    return float(value)


def _curvature(
    net: Any,
    theta: np.ndarray,
    X: Any,
    y: Any,
    fisher: str,
    criterion: str,
    curvature: Any,
    n_samples: int,
    rng: Any,
    chunk_size: int | None,
) -> np.ndarray:
    """The undamped curvature: ``(P,)`` diagonal for OBD, ``(P, P)`` for OBS.

    ``curvature`` (given) is an array or a structure object; otherwise the curvature of kind
    ``fisher`` is computed in the structure the criterion reads (:func:`minifim.curvature`):
    the exact diagonal for OBD (never dense), the full matrix for OBS.
    """
    P = net.num_params
    if isinstance(curvature, StructureObject):
        if curvature.shape != (P, P):
            raise ValueError(
                f"curvature: expected a curvature of shape ({P}, {P}), received {curvature.shape}"
            )
        return curvature.diagonal() if criterion == "obd" else curvature.to_dense()
    if curvature is not None:
        C = as_float_array(curvature, "curvature")
        if criterion == "obd" and C.shape == (P,):
            return C
        if C.shape != (P, P):
            allowed = f"({P}, {P})" + (f" or ({P},)" if criterion == "obd" else "")
            raise ValueError(
                f"curvature: expected shape {allowed} or a structure object for "
                f"criterion={criterion!r}, received shape {C.shape}"
            )
        if not np.allclose(C, C.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(C).max())):
            raise ValueError("curvature: expected a symmetric matrix")
        return np.diag(C).copy() if criterion == "obd" else C
    if X is None:
        raise ValueError(
            f"X: criterion={criterion!r} computes the {fisher!r} curvature from "
            "the inputs; received None (or pass curvature=)"
        )
    S = make_curvature(
        net,
        theta,
        X,
        y,
        fisher,
        "diag" if criterion == "obd" else "full",
        n_samples=n_samples,
        rng=rng,
        chunk_size=chunk_size,
    )
    return S.diagonal() if criterion == "obd" else S.to_dense()


def _targets(sparsities: list[float], n_prunable: int) -> list[int]:
    return [int(round(s * n_prunable)) for s in sparsities]


def _static_path(
    theta: np.ndarray,
    scores: np.ndarray,
    prunable: np.ndarray,
    counts: list[int],
    criterion: str,
    n_prunable: int,
    costs: np.ndarray | None = None,
) -> list[PruningResult]:
    """Magnitude and OBD: one fixed ranking, no update; nested masks along the path."""
    idx = np.flatnonzero(prunable)
    order = idx[np.argsort(scores[idx], kind="stable")]
    results = []
    for K in counts:
        removed = order[:K]
        mask = np.ones(theta.shape[0], dtype=bool)
        mask[removed] = False
        pruned_theta = np.where(mask, theta, 0.0)
        predicted = float(np.sum(costs[removed])) if costs is not None else float("nan")
        results.append(
            PruningResult(
                pruned_theta,
                mask,
                removed.copy(),
                scores[removed].copy(),
                predicted,
                criterion,
                K / n_prunable,
            )
        )
    return results


def _inverse(M: np.ndarray, damping: float, overwrite: bool = False) -> np.ndarray:
    """``(M + damping I)^{-1}`` of the undamped curvature ``M: (P, P)``, refused (``ValueError``
    naming ``damping``) when the damped matrix is not positive definite or its reciprocal
    condition number (LAPACK ``dpocon``) is at most ``P eps`` (no correct digit in the
    inverse); see :func:`minifim._linalg.damped_inverse`."""
    hint = (
        f"the Fisher of a network is usually singular, pass damping > 0 (e.g. 1e-4 * the "
        f"mean of its diagonal = {1e-4 * np.mean(np.diag(M)):.3g})"
    )
    return damped_inverse(M, damping, what="curvature", hint=hint, overwrite_m=overwrite)


def _obs_path(
    theta: np.ndarray,
    M: np.ndarray,
    damping: float,
    prunable: np.ndarray,
    counts: list[int],
    block_size: int,
    n_prunable: int,
    recompute_every: int | None = None,
    curvature_at: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[PruningResult]:
    """Optimal Brain Surgeon along a path of removal counts (see the module docstring).

    ``M`` is the undamped curvature at ``theta`` (the quadratic model is ``M + damping I``).
    With ``recompute_every = r``, every ``r`` steps the curvature is recomputed by
    ``curvature_at(theta)`` at the current parameters and inverted, damped, on the remaining
    set.
    """
    theta = theta.copy()
    Hinv = _inverse(M, damping)
    active = np.arange(theta.shape[0])  # flat indices of the free parameters (rows of Hinv)
    free_prunable = prunable.copy()  # over `active`
    order: list[int] = []
    scores: list[float] = []
    total, steps = 0.0, 0
    results = []
    for K in counts:
        while len(order) < K:
            if (
                recompute_every is not None
                and curvature_at is not None
                and steps > 0
                and steps % recompute_every == 0
            ):
                Hinv = _inverse(
                    curvature_at(theta)[np.ix_(active, active)], damping, overwrite=True
                )
            k = min(block_size, K - len(order))
            cand = np.flatnonzero(free_prunable)
            t = theta[active[cand]]
            sal = t * t / (2.0 * np.diag(Hinv)[cand])
            pick = np.argsort(sal, kind="stable")[:k]
            Q = cand[pick]
            HQQ = Hinv[np.ix_(Q, Q)]
            tQ = theta[active[Q]]
            z = np.linalg.solve(HQQ, tQ)
            total += 0.5 * float(tQ @ z)
            theta[active] -= Hinv[:, Q] @ z
            theta[active[Q]] = 0.0
            keep = np.ones(active.shape[0], dtype=bool)
            keep[Q] = False
            HRQ = Hinv[np.ix_(keep, Q)]
            Hinv = Hinv[np.ix_(keep, keep)] - HRQ @ np.linalg.solve(HQQ, HRQ.T)
            Hinv = 0.5 * (Hinv + Hinv.T)
            order.extend(active[Q].tolist())
            scores.extend(sal[pick].tolist())
            active = active[keep]
            free_prunable = free_prunable[keep]
            steps += 1
        mask = np.ones(theta.shape[0], dtype=bool)
        mask[order] = False
        results.append(
            PruningResult(
                theta.copy(),
                mask,
                np.array(order, dtype=np.int64),
                np.array(scores),
                total,
                "obs",
                K / n_prunable,
            )
        )
    return results


@deprecated_keywords(method="criterion")
def prune_path(
    net: Any,
    theta: Any,
    X: Any,
    y: Any,
    sparsities: Any,
    criterion: str = "magnitude",
    fisher: str = "true",
    *,
    damping: float = 0.0,
    prunable: Any = "weights",
    block_size: int = 1,
    recompute_every: int | None = None,
    curvature: Any = None,
    n_samples: int = 1,
    rng: Any = None,
    chunk_size: int | None = None,
) -> list[PruningResult]:
    """Prune ``theta`` along increasing sparsity levels; one result per level.

    The levels share one path: the masks are nested and, for OBS, each level continues from the
    previous one (one curvature, one inverse). Arguments as in :func:`prune`, with
    ``sparsities`` a non-decreasing sequence of fractions in ``[0, 1)``.

    Returns
    -------
    list of PruningResult, one per level
    """
    check_net(net)
    criterion = as_option(criterion, PruningCriterion, "criterion").value
    fisher = as_option(fisher, FisherKind, "fisher").value
    theta = net.check_theta(theta)
    levels = _check_sparsities(sparsities)
    damping = check_nonnegative(damping, "damping")
    block_size = check_int(block_size, "block_size", 1)
    if recompute_every is not None:
        recompute_every = check_int(recompute_every, "recompute_every", 1)
        if criterion != "obs":
            raise ValueError(
                f"recompute_every: only used by criterion='obs', received "
                f"{recompute_every} with criterion={criterion!r}"
            )
        if curvature is not None:
            raise ValueError(
                "recompute_every: the curvature is recomputed from X at the "
                "current parameters, so a fixed curvature= cannot be given with it"
            )
    mask = _prunable_mask(net, prunable)
    n_prunable = int(mask.sum())
    counts = _targets(levels, n_prunable)
    if criterion == "magnitude":
        return _static_path(theta, np.abs(theta), mask, counts, criterion, n_prunable)
    if criterion == "obd":
        d = (
            _curvature(net, theta, X, y, fisher, criterion, curvature, n_samples, rng, chunk_size)
            + damping
        )
        sal = 0.5 * d * theta * theta
        return _static_path(theta, sal, mask, counts, criterion, n_prunable, costs=sal)
    P = net.num_params
    require_memory(
        3 * 8 * P * P,
        f"Optimal Brain Surgeon: curvature, factor and inverse (3 x ({P}, {P}) float64)",
        "criterion='obd' (exact diagonal, no dense matrix) or a smaller network",
    )
    M = _curvature(net, theta, X, y, fisher, criterion, curvature, n_samples, rng, chunk_size)

    def curvature_at(th: np.ndarray) -> np.ndarray:
        return _curvature(net, th, X, y, fisher, criterion, None, n_samples, rng, chunk_size)

    return _obs_path(
        theta, M, damping, mask, counts, block_size, n_prunable, recompute_every, curvature_at
    )


@deprecated_keywords(method="criterion")
def prune(
    net: Any,
    theta: Any,
    X: Any,
    y: Any,
    sparsity: float,
    criterion: str = "magnitude",
    fisher: str = "true",
    *,
    damping: float = 0.0,
    prunable: Any = "weights",
    block_size: int = 1,
    recompute_every: int | None = None,
    curvature: Any = None,
    n_samples: int = 1,
    rng: Any = None,
    chunk_size: int | None = None,
) -> PruningResult:
    """Remove a fraction ``sparsity`` of the prunable parameters of ``net`` at ``theta``.

    Parameters
    ----------
    net : Sequential (or MLP)
    theta : ndarray, shape (P,)
        Trained parameters (the criteria assume a minimum of the loss).
    X : ndarray, shape (N, D), or None
        Inputs for the curvature; unused by ``"magnitude"`` or when ``curvature`` is given.
    y : targets or None
        Needed for ``fisher="empirical"``.
    sparsity : float in [0, 1)
        Fraction of the prunable parameters to remove (rounded to the nearest count).
    criterion : {"magnitude", "obd", "obs"}
        The saliency criterion (module docstring; :class:`minifim.options.PruningCriterion`).
        Formerly ``method=`` (deprecated until minifim 0.3.0).
    fisher : {"true", "empirical", "mc", "argmax", "ggn"}
        Kind of the mean curvature ``M`` (module docstring).
    damping : float >= 0
        ``A = M + damping * I``. OBS needs ``A`` positive definite; a network's Fisher is
        usually singular, so pass ``damping > 0`` there. Applied to OBD too (``A_ii``) so that
        both use the same quadratic model.
    prunable : {"weights", "all"} or ndarray of bool, shape (P,)
        Which parameters may be removed; biases are not pruned by default.
    block_size : int >= 1
        OBS only: weights removed per step (1 is the exact greedy OBS).
    recompute_every : int >= 1, optional
        OBS only: recompute the curvature at the current parameters every this many steps and
        invert it on the remaining weights (Hassibi & Stork's loop "go to step 2"). Default
        ``None``: one curvature at the given ``theta``, exact for a quadratic loss. With
        recomputation each step's cost is under its own local quadratic model.
    curvature : ndarray, shape (P, P) (or (P,) for OBD), or a structure object, optional
        A precomputed curvature used instead of computing ``M``: an array (e.g.
        :func:`minifim.hessian`) or a :class:`minifim.Dense` / :class:`minifim.Diagonal` /
        :class:`minifim.BlockDiagonal` / :class:`minifim.KFAC` (OBD reads its
        ``diagonal()``, OBS its ``to_dense()``); it defines the units of
        ``predicted_increase``.
    n_samples, rng : Monte-Carlo labels (``fisher="mc"``)
    chunk_size : samples per chunk

    Returns
    -------
    PruningResult
        ``theta: (P,)``, ``mask: (P,)`` (True = kept), ``pruned: (K,)``, ``scores: (K,)``,
        ``predicted_increase``.

    Notes
    -----
    OBD: ``s_i = 1/2 A_ii theta_i^2``. OBS: ``s_q = theta_q^2 / (2 [A^{-1}]_qq)``,
    ``delta = -theta_q / [A^{-1}]_qq A^{-1} e_q``. Cost: one ``(P, P)`` Cholesky plus
    ``O(P^2 k)`` per step of ``k`` weights.

    Examples
    --------
    >>> import numpy as np, minifim
    >>> net = minifim.MLP([3, 4, 2])
    >>> res = minifim.prune(net, net.init(0), None, None, 0.5)
    >>> int((~res.mask).sum()), bool(np.all(res.theta[~res.mask] == 0))
    (10, True)
    """
    check_net(net)
    sparsity = _check_fraction(sparsity, "sparsity")
    return prune_path(
        net,
        theta,
        X,
        y,
        [sparsity],
        criterion,
        fisher,
        damping=damping,
        prunable=prunable,
        block_size=block_size,
        recompute_every=recompute_every,
        curvature=curvature,
        n_samples=n_samples,
        rng=rng,
        chunk_size=chunk_size,
    )[0]
