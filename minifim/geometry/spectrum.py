"""Exact eigenvalue spectra of the curvature family (the statistics of a spectrum are in
:mod:`minifim.geometry.statistics`, re-exported here).

Contract
--------
- A spectrum is that of the matrix :mod:`minifim.geometry.curvature` assembles:
  ``M = c sum_n ...``, a MEAN over the ``N`` samples (``c = 1/N``) unless ``reduction="sum"``
  (``c = 1``; see :doc:`/conventions`).
- Eigenvalues are returned in DESCENDING order; eigenvectors are the orthonormal columns of
  ``V: (P, m)`` with ``M V = V diag(values)``.
- ``fisher`` (the curvature kind; ``curvature=`` before 0.2, deprecated) is one of ``"true"``,
  ``"empirical"``, ``"mc"``, ``"argmax"``, ``"ggn"`` (the seeds of
  :mod:`minifim.geometry.curvature`, ``M = c U^T U`` with ``U: (N K, P)`` the stacked per-seed
  gradients, ``K`` seeds per sample) or ``"hessian"`` (the Hessian of the NLL).

Routes (``method``)
-------------------
=============  ============================================================  =================
``"dense"``    ``scipy.linalg.eigh`` of the dense ``(P, P)`` matrix            all ``P`` values
``"gram"``     ``eigh`` of the ``(N K, N K)`` Gram matrix ``G = c U U^T``      ``min(N K, P)``
``"lanczos"``  ``scipy.sparse.linalg.eigsh`` on the matrix-free operator      top ``k`` values
``"auto"``     gram if ``N K < P`` and it fits, else dense if it fits, else   (reported)
               Lanczos (needs ``k``); see :func:`curvature_spectrum`
=============  ============================================================  =================

The Gram route never forms ``U`` nor ``P x P``. With ``acts[l]: (N, R_l, in_l)`` and
``Bs[l]: (N, K, R_l, out_l)`` held by :class:`minifim.geometry.gram.SeedFactors`, for a plain
dense layer (``R_l = 1``)
``G[(i, k), (j, k')] = c sum_l (Bs[l][i, k] . Bs[l][j, k']) (acts[l][i] . acts[l][j] + 1)``
(the ``+ 1`` is the bias), ``O((N K)^2 sum_l out_l + N^2 sum_l in_l)`` work; a weight-sharing
layer contributes ``U_l U_l^T`` of its ``(N K, P_l)`` gradient rows. ``M`` and ``G``
share their non-zero eigenvalues; the other ``P - N K`` eigenvalues of ``M`` are exactly zero,
so the Gram route returns ``min(N K, P)`` values and the statistics below count the missing
ones as zeros when given ``num_params=P``. Eigenvectors map back as ``v = U^T w sqrt(c / mu)``
(matrix-free, per layer); those of numerically zero Gram eigenvalues are completed by an
orthonormal basis of the complement of the mapped ones (a seeded, deterministic draw).

Statistics are pure functions of a 1-D array of eigenvalues (plus ``num_params`` when zero
eigenvalues are implicit): trace, Frobenius norm, numerical rank, condition number and
log-determinant of the damped matrix, effective dimension, the effective dimension of Abbas et
al. (2021), the Karakida et al. (2019) moments; :func:`fisher_rao_norm` is matrix-free and
:func:`curvature_statistics` computes all of them from ``(net, theta, X)``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from ..core.model import Sequential
import scipy.linalg
from scipy.sparse.linalg import ArpackNoConvergence, eigsh

from .._validation import check_bool, check_choice, check_int, check_net, check_nonnegative
from ..core.conventions import prepare_inputs, reduction_scale
from ..core.scores import forward_cache, jvp_cached
from ..memory import format_bytes, memory_budget, require_memory
from ..options import Curvature, as_option, deprecated_keywords
from .curvature import FISHER_KINDS, curvature_is_psd, curvature_matrix, hessian, output_seeds
from .gram import seed_factors
from .operators import fisher_operator, hessian_operator
from .statistics import (
    KarakidaStatistics,
    abbas_effective_dimension,
    damped_condition_number,
    damped_logdet,
    default_rank_tolerance,
    effective_dimension,
    karakida_statistics,
    numerical_rank,
    spectral_frobenius_norm,
    spectral_trace,
    spectrum_statistics,
)

__all__ = [
    "CURVATURES",
    "SPECTRUM_METHODS",
    "SpectrumInfo",
    "KarakidaStatistics",
    "curvature_spectrum",
    "fisher_spectrum",
    "default_rank_tolerance",
    "spectral_trace",
    "spectral_frobenius_norm",
    "numerical_rank",
    "damped_condition_number",
    "damped_logdet",
    "effective_dimension",
    "abbas_effective_dimension",
    "karakida_statistics",
    "spectrum_statistics",
    "fisher_rao_norm",
    "curvature_statistics",
]

logger = logging.getLogger(__name__)

CURVATURES: tuple[Any, ...] = FISHER_KINDS + ("hessian",)  # str values of Curvature members
SPECTRUM_METHODS = ("auto", "dense", "gram", "lanczos")
AUTO_DENSE_MAX_P = 4000  # with k given, auto prefers Lanczos over dense eigh above this P


# --- the result's provenance --------------------------------------------------------------
@dataclass(frozen=True)
class SpectrumInfo:
    """How a spectrum was computed (returned with ``return_info=True``).

    Attributes
    ----------
    method : str
        The route used: ``"dense"``, ``"gram"`` or ``"lanczos"`` (never ``"auto"``).
    requested : str
        The ``method`` argument (``"auto"`` or the route itself).
    reason : str
        Why this route (for ``"auto"``: the sizes and memory estimates that decided).
    curvature : str
    num_params : int
        ``P``, the dimension of the matrix.
    num_rows : int or None
        ``N K``, rows of the factor ``U`` (``None`` for the Hessian).
    num_values : int
        Length of the returned eigenvalue array.
    complete : bool
        True when the returned values together with ``num_params - num_values`` exact zeros are
        the whole spectrum (dense or Gram route without ``k``); pass ``num_params`` to the
        statistics then.
    tol : float or None
        ARPACK's relative tolerance (Lanczos route), ``0`` meaning machine precision.
    """

    method: str
    requested: str
    reason: str
    curvature: str
    num_params: int
    num_rows: int | None
    num_values: int
    complete: bool
    tol: float | None = None

    @property
    def implicit_zeros(self) -> int | None:
        """``P - num_values`` exact zero eigenvalues not returned (``None`` if incomplete)."""
        return self.num_params - self.num_values if self.complete else None

    def as_dict(self) -> dict:
        """A JSON-serialisable dict of the fields."""
        return asdict(self)


# --- helpers -------------------------------------------------------------------------------
def _num_seeds(net: Sequential, fisher: str, n_samples: int) -> int:
    if fisher in ("true", "ggn"):
        return net.positions * net.output_dim
    if fisher == "mc":
        return check_int(n_samples, "n_samples", 1)
    return 1


def _check_k(k: Any, upper: int, what: str) -> int | None:
    if k is None:
        return None
    k = check_int(k, "k", 1)
    if k > upper:
        raise ValueError(f"k: expected an integer in [1, {upper}] ({what}), received {k}")
    return k


def _gram_bytes(rows: int, vectors: bool) -> int:
    # G, one product temporary and eigh's copy; eigenvectors add dsyevd's 2 rows^2 workspace
    return 8 * rows * rows * (5 if vectors else 3)


def _dense_bytes(P: int, vectors: bool) -> int:
    # the matrix and eigh's working copy; eigenvectors add dsyevd's 2 P^2 workspace
    return 8 * P * P * (4 if vectors else 2)


def _choose(
    net: Sequential, fisher: Any, N: int, K: Any, k: Any, vectors: Any, P: int
) -> tuple[Any, ...]:
    """``(method, reason)`` of the auto policy (see :func:`curvature_spectrum`)."""
    budget = memory_budget()
    rows = None if K is None else N * K  # None: the Hessian or an indefinite GGN
    dense_b = _dense_bytes(P, vectors)
    if rows is not None and rows < P:
        gram_b = _gram_bytes(rows, vectors)
        if gram_b <= budget and (k is None or k <= rows):
            return "gram", (
                f"gram: N*K = {rows} < P = {P}; the Gram matrix route needs "
                f"~{format_bytes(gram_b)} (budget {format_bytes(budget)})"
            )
    if dense_b <= budget and (k is None or P <= AUTO_DENSE_MAX_P):
        why = (
            f"N*K = {rows} >= P"
            if rows is not None and rows >= P
            else f"the {fisher} curvature has no Gram factor (indefinite)"
            if rows is None
            else "the Gram matrix does not fit"
        )
        return "dense", (
            f"dense: {why}; dense eigh of P = {P} needs ~{format_bytes(dense_b)} "
            f"(budget {format_bytes(budget)})"
        )
    if k is not None:
        return "lanczos", (
            f"lanczos: top k = {k} of P = {P} matrix-free (dense eigh would need "
            f"~{format_bytes(dense_b)}, budget {format_bytes(budget)})"
        )
    # nothing exact fits: let the memory guard explain, naming the cheaper routes
    require_memory(
        dense_b,
        f"dense {fisher} spectrum (P, P) = ({P}, {P}) float64",
        "curvature_spectrum(..., k=<number of top eigenvalues>) (Lanczos, "
        "matrix-free)"
        + ("" if rows is None else f", or fewer samples so that N*K (= {rows}) < P (Gram)"),
    )
    raise AssertionError("unreachable")  # pragma: no cover


def _complete_basis(V: np.ndarray, n_extra: int) -> np.ndarray:
    """``n_extra`` orthonormal columns orthogonal to the orthonormal columns of ``V: (P, r)``."""
    P = V.shape[0]
    Z = np.random.default_rng(0).standard_normal((P, n_extra))
    for _ in range(2):  # classical Gram-Schmidt twice is enough for orthogonality
        Z -= V @ (V.T @ Z)
    Q, _ = np.linalg.qr(Z)
    Q -= V @ (V.T @ Q)
    Q, _ = np.linalg.qr(Q)
    return Q


def _eigh_top(
    M: np.ndarray, k: int | None, vectors: bool, *, upper: bool = False, overwrite: bool = False
) -> tuple[Any, ...]:
    """Descending eigenvalues (and vectors) of a symmetric matrix, top ``k`` when given.

    ``upper``: only the upper triangle of ``M`` is read (``triangle="upper"`` of
    :func:`minifim.curvature_matrix`); ``overwrite``: ``M`` may be destroyed. A C-ordered
    ``M`` is handed to LAPACK as its Fortran-ordered transpose (the same symmetric matrix,
    the other triangle), so that no ``(n, n)`` copy is made when ``overwrite``.
    """
    n = M.shape[0]
    subset = None if k is None else [n - k, n - 1]
    lower = not upper
    if M.flags.c_contiguous and not M.flags.f_contiguous:
        M, lower = M.T, not lower
    kw: dict[str, Any] = dict(subset_by_index=subset, lower=lower, overwrite_a=overwrite)
    if vectors:
        # LAPACK's default MRRR driver (dsyevr) loses orthogonality on the clusters of (near)
        # zero eigenvalues of a rank-deficient Fisher (measured up to 8.5 n eps); divide and
        # conquer (dsyevd, all vectors) and bisection + inverse iteration with
        # re-orthogonalisation of clusters (dsyevx, a subset) keep |V^T V - I| at O(n eps).
        driver = "evd" if subset is None else "evx"
        w, V = scipy.linalg.eigh(M, driver=driver, **kw)
        return w[::-1].copy(), V[:, ::-1].copy()
    w = scipy.linalg.eigh(M, eigvals_only=True, **kw)
    return w[::-1].copy(), None


def _gram_route(
    net: Sequential,
    theta: Any,
    X: Any,
    y: Any,
    fisher: Any,
    k: Any,
    vectors: Any,
    n_samples: Any,
    rng: Any,
    reduction: str,
    chunk_size: Any,
) -> tuple[Any, ...]:
    N, P = X.shape[0], net.num_params
    scale = reduction_scale(reduction, N)
    rows = N * _num_seeds(net, fisher, n_samples)
    widths = sum(
        layer.positions * (o + i) for layer, (o, i) in zip(net.parametric_layers, net.shapes)
    )
    if net.weight_sharing:  # the (N K, P_l) rows of the widest weight-sharing layer
        widths += max(layer.num_params for layer in net.parametric_layers)
    require_memory(
        _gram_bytes(rows, vectors) + 8 * rows * widths,
        f"Gram matrix (N*K, N*K) = ({rows}, {rows}) float64, its eigh and the "
        f"factors (N*K, sum of widths) = ({rows}, {widths})",
        "curvature_spectrum(..., method='lanczos', k=...) (top k, matrix-free)",
    )
    factors = seed_factors(net, theta, X, y, fisher, n_samples, rng, chunk_size)
    if vectors:
        require_memory(
            8 * P * min(rows, P) if k is None else 8 * P * k,
            f"eigenvectors (P, m) with P = {P}",
            "vectors=False, or a smaller k",
        )
    n_out = min(rows, P) if k is None else k
    G = factors.gram(scale)
    mu, W = _eigh_top(G, n_out, vectors)
    del G
    if not vectors:
        return mu, None
    tol = default_rank_tolerance(mu, num_params=P)
    good = mu > tol
    V = np.empty((P, n_out))
    if np.any(good):
        V[:, good] = factors.rmatvec(W[:, good]) * np.sqrt(scale / mu[good])
    if not np.all(good):
        V[:, ~good] = _complete_basis(V[:, good], int(np.count_nonzero(~good)))
    return mu, V


def _lanczos_route(
    net: Sequential,
    theta: Any,
    X: Any,
    y: Any,
    fisher: Any,
    k: Any,
    vectors: Any,
    n_samples: Any,
    rng: Any,
    reduction: str,
    tol: Any,
    maxiter: Any,
) -> tuple[Any, ...]:
    if fisher == "hessian":
        op = hessian_operator(net, theta, X, y, reduction=reduction)
    else:
        op = fisher_operator(
            net, theta, X, y, fisher, n_samples=n_samples, rng=rng, reduction=reduction
        )
    v0 = np.random.default_rng(0).standard_normal(op.shape[0])
    try:
        out = eigsh(
            op, k=k, which="LA", tol=tol, v0=v0, maxiter=maxiter, return_eigenvectors=vectors
        )
    except ArpackNoConvergence as err:
        raise RuntimeError(
            f"lanczos: ARPACK did not converge for the top k = {k} eigenvalues "
            f"({len(err.eigenvalues)} converged) at tol = {tol}; raise maxiter "
            "or tol, or use method='gram' / 'dense' for the exact spectrum"
        ) from err
    V: Any
    w, V = out if vectors else (out, None)
    order = np.argsort(w)[::-1]
    return w[order], (V[:, order] if vectors else None)


# --- spectra -------------------------------------------------------------------------------
@deprecated_keywords(curvature="fisher")
def curvature_spectrum(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    fisher: str = "true",
    *,
    method: str = "auto",
    k: int | None = None,
    vectors: bool = False,
    n_samples: int = 1,
    rng: np.random.Generator | int | None = None,
    reduction: str = "mean",
    tol: float = 0.0,
    maxiter: int | None = None,
    chunk_size: int | None = None,
    return_info: bool = False,
) -> Any:
    """Eigenvalues (descending), and optionally eigenvectors, of a curvature matrix.

    Parameters
    ----------
    net : Sequential (or MLP)
    theta : ndarray, shape (P,)
    X : ndarray, shape ``(N, *input_shape)``
    y : targets, needed for ``fisher="empirical"`` and ``"hessian"``
    fisher : {"true", "empirical", "mc", "argmax", "ggn", "hessian"}
        The curvature kind (:class:`minifim.options.Curvature`; ``"type-2"`` is ``"true"``).
        The keyword was ``curvature=`` before minifim 0.2 (still accepted, deprecated).
    method : {"auto", "dense", "gram", "lanczos"}
        See the module table. ``"gram"`` is not available for the Hessian; ``"lanczos"``
        needs ``k``. ``"auto"`` picks, in order: ``"gram"`` when the factor has fewer rows
        than columns (``N K < P``), its ``(N K)^2`` Gram matrix fits the memory budget and
        ``k`` (if given) is at most ``N K``; else ``"dense"`` when the ``P x P`` eigenproblem
        fits and (if ``k`` is given) ``P <= AUTO_DENSE_MAX_P``; else ``"lanczos"`` if ``k`` is
        given; else it raises :class:`~minifim.MemoryBudgetError` naming the cheaper routes.
        The choice is logged (logger ``minifim.geometry.spectrum``, level INFO) and returned in
        :class:`SpectrumInfo` with ``return_info=True``.
    k : int, optional
        Number of largest eigenvalues to compute; all (``P``, or ``min(N K, P)`` by the Gram
        route) when ``None``.
    vectors : bool
        Also return the eigenvectors.
    n_samples, rng : Monte-Carlo labels per input and their generator (``fisher="mc"``);
        an integer seed gives the same labels on every route.
    reduction : {"mean", "sum"}
    tol : float
        ARPACK's relative accuracy for the Lanczos route (``0``: machine precision).
    maxiter : int, optional
        ARPACK's iteration limit (Lanczos route).
    chunk_size : int, optional
        Samples per chunk when building factors (dense and Gram routes).
    return_info : bool
        Append a :class:`SpectrumInfo` to the result.

    Returns
    -------
    values : ndarray, shape (m,)
        Descending eigenvalues: ``m = P`` (dense), ``min(N K, P)`` (Gram; the other ``P - N K``
        eigenvalues are exactly zero), or ``k``.
    vectors : ndarray, shape (P, m)
        Orthonormal eigenvectors, returned as ``(values, vectors)`` when ``vectors=True``.
    info : SpectrumInfo
        Last element of the returned tuple when ``return_info=True``.

    Notes
    -----
    Accuracy: the dense and Gram routes are backward stable (eigenvalue errors of order
    ``P eps lambda_max``, resp. ``N K eps lambda_max``). Gram-route eigenvectors are
    ``U^T w sqrt(c / mu)``; their residual ``|M v - mu v|`` is of order
    ``eps lambda_max sqrt(lambda_max / mu)``, tight for the leading eigenvalues and looser for
    the smallest non-zero ones. The Lanczos start vector is drawn from
    ``numpy.random.default_rng(0)`` so every call is reproducible; ``which="LA"`` (largest
    algebraic), so for the Hessian the top ``k`` are the most positive eigenvalues.

    Examples
    --------
    >>> import numpy as np, minifim
    >>> net = minifim.MLP([3, 16, 4]); theta = net.init(0)
    >>> X = np.random.default_rng(0).standard_normal((5, 3))
    >>> values, info = minifim.curvature_spectrum(net, theta, X, return_info=True)
    >>> info.method, values.shape, net.num_params
    ('gram', (20,), 132)
    >>> dense = minifim.curvature_spectrum(net, theta, X, method="dense")
    >>> bool(np.allclose(values, dense[:20], rtol=0, atol=1e-12 * dense[0]))
    True
    """
    check_net(net)
    fisher = as_option(fisher, Curvature, "fisher", CURVATURES).value
    check_choice(method, "method", SPECTRUM_METHODS)
    vectors = check_bool(vectors, "vectors")
    return_info = check_bool(return_info, "return_info")
    tol = check_nonnegative(tol, "tol")
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    N, P = X.shape[0], net.num_params
    if fisher == "hessian":
        if y is None:
            raise ValueError("y: the Hessian of the NLL needs the data targets y, received None")
        y = net.check_targets(y, N)
        K = None
    elif not curvature_is_psd(net, fisher):  # the signed GGN has no factor: dense / Lanczos
        K = None
    else:
        K = _num_seeds(net, fisher, n_samples)
    rows: Any = None if K is None else N * K  # an int on every route that reads it
    k = _check_k(k, P, f"P = {P}")

    if method == "auto":
        route, reason = _choose(net, fisher, N, K, k, vectors, P)
        logger.info("curvature_spectrum(fisher=%r): %s", fisher, reason)
    else:
        route, reason = method, f"{method}: requested"
    if route == "gram":
        if K is None:
            raise ValueError(
                f"method: 'gram' needs a factor M = c U^T U, which the {fisher!r} curvature "
                f"of the {net.likelihood.describe()} likelihood does not have (indefinite); "
                f"use 'dense' or 'lanczos' for fisher={fisher!r}"
            )
        k = _check_k(
            k, min(rows, P), f"the Gram route has min(N*K, P) = {min(rows, P)} eigenvalues"
        )
        values, V = _gram_route(
            net, theta, X, y, fisher, k, vectors, n_samples, rng, reduction, chunk_size
        )
    elif route == "dense":
        # the matrix is owned here: LAPACK reads its upper triangle and destroys it in place
        if fisher == "hessian":
            M = hessian(net, theta, X, cast("ArrayLike", y), reduction=reduction)
        else:
            M = curvature_matrix(
                net,
                theta,
                X,
                y,
                fisher,
                n_samples=n_samples,
                rng=rng,
                reduction=reduction,
                chunk_size=chunk_size,
                triangle="upper",
            )
        values, V = _eigh_top(M, k, vectors, upper=True, overwrite=True)
        del M
    else:
        if k is None:
            raise ValueError(
                f"k: the Lanczos route computes the top k eigenvalues; pass an "
                f"integer 1 <= k < P = {P}, received None"
            )
        k = _check_k(k, P - 1, f"ARPACK needs k < P = {P}")
        values, V = _lanczos_route(
            net, theta, X, y, fisher, k, vectors, n_samples, rng, reduction, tol, maxiter
        )
    info = SpectrumInfo(
        method=route,
        requested=method,
        reason=reason,
        curvature=fisher,
        num_params=P,
        num_rows=rows,
        num_values=int(values.shape[0]),
        complete=(route != "lanczos" and k is None),
        tol=tol if route == "lanczos" else None,
    )
    out = (values, V) if vectors else (values,)
    if return_info:
        out = out + (info,)
    return out[0] if len(out) == 1 else out


def fisher_spectrum(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    method: str = "auto",
    k: int | None = None,
    vectors: bool = False,
    **kwargs: Any,
) -> Any:
    """Eigenvalues (descending) and optionally eigenvectors of the TRUE Fisher.

    ``curvature_spectrum(net, theta, X, fisher="true", method=method, k=k,
    vectors=vectors, **kwargs)``: a 1-D array of eigenvalues when ``vectors=False``,
    ``(values, vectors)`` when ``vectors=True``, with a trailing :class:`SpectrumInfo` when
    ``return_info=True``. See :func:`curvature_spectrum` for the routes and keywords
    (``reduction``, ``tol``, ``maxiter``, ``chunk_size``, ``return_info``).

    Examples
    --------
    >>> import numpy as np, minifim
    >>> net = minifim.MLP([4, 32, 3]); theta = net.init(0)
    >>> X = np.random.default_rng(1).standard_normal((10, 4))
    >>> lam = minifim.fisher_spectrum(net, theta, X)          # Gram route: N*C = 30 < P = 259
    >>> minifim.numerical_rank(lam, num_params=net.num_params)  # N * (C - 1)
    20
    """
    check_net(net)
    for bad in ("y", "fisher", "curvature"):
        if bad in kwargs:
            raise TypeError(
                f"{bad}: fisher_spectrum is the true Fisher; use "
                "curvature_spectrum(..., fisher=...) for the other kinds"
            )
    return curvature_spectrum(
        net, theta, X, None, "true", method=method, k=k, vectors=vectors, **kwargs
    )


# --- statistics of (net, theta, X) ---------------------------------------------------------
@deprecated_keywords(curvature="fisher")
def fisher_rao_norm(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    fisher: str = "true",
    *,
    v: ArrayLike | None = None,
    n_samples: int = 1,
    rng: np.random.Generator | int | None = None,
    reduction: str = "mean",
    squared: bool = True,
) -> float:
    """The Fisher-Rao norm ``theta^T M(theta) theta`` (Liang et al. 2019), matrix-free.

    Parameters
    ----------
    net : Sequential (or MLP)
    theta : ndarray, shape (P,)
        Where the curvature is evaluated.
    X : ndarray, shape ``(N, *input_shape)``
    y : targets (``fisher="empirical"`` or ``"hessian"``)
    fisher : {"true", "empirical", "mc", "argmax", "ggn", "hessian"}
        The curvature kind (was ``curvature=``, deprecated).
    v : ndarray, shape (P,), optional
        The vector of the quadratic form; default ``theta``.
    n_samples, rng, reduction : as in :func:`curvature_spectrum`
    squared : bool
        Return ``||v||_fr^2 = v^T M v`` (default) or its square root.

    Returns
    -------
    float

    Notes
    -----
    ``v^T M v = c sum_n |E_n J_n v|^2`` with the seeds ``E_n`` of the curvature: one
    forward-mode pass ``J v``, no ``P x P`` matrix. For the Hessian, one Hessian-vector
    product. For bias-free ReLU networks with ``L`` weight layers, ``J_n theta = L f_n``
    (Euler), so ``theta^T F theta = L^2 c sum_n E_{y~p}[<d log p / d f, f_n>^2]``.
    """
    check_net(net)
    fisher = as_option(fisher, Curvature, "fisher", CURVATURES).value
    squared = check_bool(squared, "squared")
    theta = net.check_theta(theta)
    v = theta if v is None else net.check_theta(v, "v")
    if fisher == "hessian":
        q = float(
            v @ (hessian_operator(net, theta, X, cast("ArrayLike", y), reduction=reduction) @ v)
        )
    else:
        theta, X, y, y_samples = prepare_inputs(net, theta, X, y, fisher, n_samples, rng)
        scale = reduction_scale(reduction, X.shape[0])
        cache = forward_cache(net, theta, X)
        Jv = jvp_cached(net, cache, v[:, None])[..., 0]  # (N, *output_shape)
        N = Jv.shape[0]
        Jv2 = Jv.reshape(N, -1)
        q = 0.0
        for sign in (1, -1):  # the signed GGN: |P J v|^2 - |M J v|^2 (M empty when PSD)
            E = output_seeds(net, cache.outputs, fisher, y, y_samples, sign=sign)
            E2 = E.reshape(N, E.shape[1], Jv2.shape[1])  # (N, K, Q); K = 0 when M is empty
            q += sign * float(scale * np.sum(np.einsum("nkc,nc->nk", E2, Jv2) ** 2))
    if squared:
        return q
    if q < 0:
        raise ValueError(
            f"squared: the quadratic form is negative ({q!r}, an indefinite "
            "Hessian or GGN); use squared=True"
        )
    return float(np.sqrt(q))


@deprecated_keywords(curvature="fisher")
def curvature_statistics(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    fisher: str = "true",
    *,
    damping: float,
    z: float | None = None,
    method: str = "auto",
    n_samples: int = 1,
    rng: np.random.Generator | int | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> dict:
    """:func:`spectrum_statistics` of the complete spectrum plus the Fisher-Rao norm.

    The spectrum comes from :func:`curvature_spectrum` (``k=None``: Gram or dense route);
    the dict adds ``fisher_rao_norm`` (``theta^T M theta``) and ``method`` (the route used).
    """
    check_net(net)
    check_choice(method, "method", SPECTRUM_METHODS)
    if method == "lanczos":
        raise ValueError(
            "method: the statistics need the complete spectrum; use 'auto', "
            "'gram' or 'dense', received 'lanczos'"
        )
    values, info = curvature_spectrum(
        net,
        theta,
        X,
        y,
        fisher,
        method=method,
        n_samples=n_samples,
        rng=rng,
        reduction=reduction,
        chunk_size=chunk_size,
        return_info=True,
    )
    stats = spectrum_statistics(values, damping=damping, num_params=info.num_params, z=z)
    stats["fisher_rao_norm"] = fisher_rao_norm(
        net, theta, X, y, fisher, n_samples=n_samples, rng=rng, reduction=reduction
    )
    stats["method"] = info.method
    return stats
