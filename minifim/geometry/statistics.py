"""Statistics of a spectrum: pure functions of a 1-D array of eigenvalues.

Each takes the eigenvalues of a symmetric ``P x P`` matrix ``M`` (any order), plus
``num_params=P`` when the array holds only the non-zero part of the spectrum (the Gram route
returns ``min(N K, P)`` values; the other eigenvalues are exactly zero and are counted as
such): trace, Frobenius norm, numerical rank, condition number and log-determinant of the
damped matrix ``M + damping I``, the effective dimension, the effective dimension of Abbas et
al. (2021) and the Karakida et al. (2019) moments. :func:`eigenvalue_array` and
:func:`spectrum_dimension` are the argument checks they share (public for the plotting
helpers). :mod:`minifim.geometry.spectrum` computes the eigenvalues.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.special import logsumexp

from .._validation import as_float_array, check_bool, check_int, check_nonnegative

__all__ = [
    "eigenvalue_array",
    "spectrum_dimension",
    "KarakidaStatistics",
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
]


def eigenvalue_array(values: Any, name: str = "eigenvalues") -> np.ndarray:
    """``values`` as a non-empty 1-D float64 array (``ValueError``/``TypeError`` naming
    ``name`` otherwise): the check every statistic below applies to its eigenvalues."""
    arr = as_float_array(values, name, ndim=1)
    if arr.size == 0:
        raise ValueError(f"{name}: expected at least one eigenvalue, received an empty array")
    return arr


def spectrum_dimension(values: np.ndarray, num_params: int | None) -> int:
    """``P``, the dimension of the matrix whose (possibly incomplete) spectrum is ``values``:
    ``num_params`` (at least ``len(values)``; the missing eigenvalues are implicit zeros),
    default ``len(values)``."""
    if num_params is None:
        return values.shape[0]
    P = check_int(num_params, "num_params", 1)
    if P < values.shape[0]:
        raise ValueError(
            f"num_params: expected at least the number of eigenvalues "
            f"({values.shape[0]}), received {P}"
        )
    return P


def default_rank_tolerance(eigenvalues: Any, *, num_params: int | None = None) -> float:
    """``P * eps * max |lambda|``: the threshold below which an eigenvalue counts as zero.

    It is NumPy's ``matrix_rank`` default (``S.max() * max(M, N) * eps``) for a symmetric
    ``P x P`` matrix, ``P = num_params`` (default ``len(eigenvalues)``).
    """
    lam = eigenvalue_array(eigenvalues)
    P = spectrum_dimension(lam, num_params)
    return float(P * np.finfo(np.float64).eps * np.max(np.abs(lam)))


def spectral_trace(eigenvalues: Any) -> float:
    """``tr M = sum_i lambda_i`` (implicit zero eigenvalues do not contribute)."""
    return float(np.sum(eigenvalue_array(eigenvalues)))


def spectral_frobenius_norm(eigenvalues: Any) -> float:
    """``||M||_F = sqrt(tr M^2) = sqrt(sum_i lambda_i^2)`` for a symmetric ``M``."""
    return float(np.sqrt(np.sum(eigenvalue_array(eigenvalues) ** 2)))


def numerical_rank(
    eigenvalues: Any, *, num_params: int | None = None, tol: float | None = None
) -> int:
    """Number of eigenvalues with ``|lambda_i| > tol``.

    Parameters
    ----------
    eigenvalues : ndarray, shape (m,)
    num_params : int, optional
        ``P``, the dimension of the matrix (sets the default tolerance).
    tol : float, optional
        Absolute threshold; default :func:`default_rank_tolerance`,
        ``P * eps * max |lambda|`` (NumPy's ``matrix_rank`` convention).
    """
    lam = eigenvalue_array(eigenvalues)
    tol = (
        default_rank_tolerance(lam, num_params=num_params)
        if tol is None
        else check_nonnegative(tol, "tol")
    )
    return int(np.count_nonzero(np.abs(lam) > tol))


def _damped(values: Any, damping: Any, num_params: Any) -> tuple[np.ndarray, int, float]:
    lam = eigenvalue_array(values)
    damping = check_nonnegative(damping, "damping")
    P = spectrum_dimension(lam, num_params)
    shifted = lam + damping
    if P > lam.shape[0]:
        shifted = np.concatenate([shifted, [damping]])  # the implicit zeros
    return shifted, P, damping


def damped_condition_number(
    eigenvalues: Any, damping: float, *, num_params: int | None = None
) -> float:
    """2-norm condition number of ``M + damping I``: ``max_i |lambda_i + d| / min_i |...|``.

    For a positive semi-definite ``M`` this is ``(lambda_max + d) / (lambda_min + d)``, with
    ``lambda_min = 0`` when ``num_params`` exceeds the number of eigenvalues given. Returns
    ``inf`` for a singular damped matrix.
    """
    shifted, _, _ = _damped(eigenvalues, damping, num_params)
    a = np.abs(shifted)
    return float(np.inf) if a.min() == 0.0 else float(a.max() / a.min())


def damped_logdet(eigenvalues: Any, damping: float, *, num_params: int | None = None) -> float:
    """``log det(M + damping I) = sum_i log(lambda_i + d) + (P - m) log d``.

    ``P - m`` implicit zero eigenvalues (``num_params = P``, ``m = len(eigenvalues)``) each
    contribute ``log d``. Raises ``ValueError`` if ``M + d I`` is not positive definite.
    """
    shifted, P, damping = _damped(eigenvalues, damping, num_params)
    if shifted.min() <= 0.0:
        raise ValueError(
            f"damping: M + damping I must be positive definite for its log-"
            f"determinant; its smallest eigenvalue is {shifted.min()!r} "
            f"(damping = {damping!r}); pass a larger damping"
        )
    m = np.shape(eigenvalues)[0]
    logdet = float(np.sum(np.log(shifted[:m])))
    if P > m:
        logdet += (P - m) * float(np.log(damping))
    return logdet


def effective_dimension(eigenvalues: Any, z: Any) -> Any:
    """MacKay's effective number of parameters ``d_eff(z) = sum_i lambda_i / (lambda_i + z)``.

    Parameters
    ----------
    eigenvalues : ndarray, shape (m,)
        Implicit zero eigenvalues contribute nothing.
    z : float or ndarray, shape (q,)
        Positive prior precision(s) / damping(s).

    Returns
    -------
    float, or ndarray of shape (q,) for an array ``z``.
    """
    lam = eigenvalue_array(eigenvalues)
    zs = as_float_array(z, "z")
    if zs.ndim > 1:
        raise ValueError(f"z: expected a number or a 1-D array, received shape {zs.shape}")
    if np.any(zs <= 0):
        raise ValueError(f"z: expected positive values, received {zs[zs <= 0].ravel()[0]!r}")
    out = np.sum(lam[None, :] / (lam[None, :] + zs.reshape(-1, 1)), axis=1)
    return float(out[0]) if zs.ndim == 0 else out


def abbas_effective_dimension(
    spectra: Any,
    n: Any,
    *,
    num_params: int | None = None,
    gamma: float = 1.0,
    normalized: bool = True,
) -> Any:
    """The effective dimension of Abbas et al. (2021), from Fisher spectra at sampled thetas.

    Parameters
    ----------
    spectra : ndarray, shape (m_theta, P) or (P,), or a sequence of 1-D arrays
        Eigenvalues of the per-input MEAN Fisher ``F(theta_j)`` at ``m_theta`` parameter draws
        (uniform over the parameter space in the paper; a single trained ``theta`` gives the
        local version). Arrays may be shorter than ``P`` (Gram route): the missing
        eigenvalues are zeros and contribute nothing.
    n : int or float, or ndarray of shape (q,)
        Number of data samples ``n``; needs ``kappa = gamma n / (2 pi log n) > 1``.
    num_params : int, optional
        ``d = P``; default the common length of the spectra.
    gamma : float in (0, 1]
    normalized : bool
        Return ``d_{gamma,n} / d`` (the "normalised effective dimension" of the paper's
        figures) instead of ``d_{gamma,n}``.

    Returns
    -------
    float, or ndarray of shape (q,) for an array ``n``.

    Notes
    -----
    Abbas, Sutter, Zoufal, Lucchi, Figalli, Woerner (2021), "The power of quantum neural
    networks", Nat. Comput. Sci., Eq. (2), with the normalised Fisher
    ``F_hat(theta) = d F(theta) / E_theta[tr F(theta)]`` (so ``E_theta tr F_hat = d``) and
    ``kappa = gamma n / (2 pi log n)``:

    ``d_{gamma,n} = 2 log( E_theta[ sqrt(det(I_d + kappa F_hat(theta))) ] ) / log(kappa)``,

    the expectation over ``theta`` estimated by the mean over the ``m_theta`` spectra (in
    log-space: ``log E = logsumexp_j(r_j) - log m_theta`` with
    ``r_j = 1/2 sum_i log1p(kappa d lambda_ij / mean_j tr F_j)``). For finite ``n`` the
    value can slightly exceed ``d``; it tends to the rank-based dimension as ``n`` grows.
    """
    if isinstance(spectra, np.ndarray) and spectra.ndim == 2:
        rows = [spectra[j] for j in range(spectra.shape[0])]
    elif isinstance(spectra, np.ndarray) or np.isscalar(spectra):
        rows = [spectra]
    else:
        rows = list(spectra)
        if rows and np.ndim(rows[0]) == 0:  # a flat list of numbers is one spectrum
            rows = [rows]
    if not rows:
        raise ValueError("spectra: expected at least one spectrum, received none")
    lams = [eigenvalue_array(r, f"spectra[{j}]") for j, r in enumerate(rows)]
    longest = max(lam.shape[0] for lam in lams)
    if num_params is None:
        if any(lam.shape[0] != longest for lam in lams):
            raise ValueError(
                "num_params: spectra of different lengths need num_params = P "
                "(the missing eigenvalues are zeros)"
            )
        d = longest
    else:
        d = check_int(num_params, "num_params", 1)
        if d < longest:
            raise ValueError(
                f"num_params: expected at least the longest spectrum ({longest}), received {d}"
            )
    gamma = check_nonnegative(gamma, "gamma")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma: expected a number in (0, 1], received {gamma!r}")
    normalized = check_bool(normalized, "normalized")
    ns = as_float_array(n, "n")
    if ns.ndim > 1:
        raise ValueError(f"n: expected a number or a 1-D array, received shape {ns.shape}")
    if np.any(ns <= 1):
        raise ValueError(f"n: expected sample sizes > 1, received {ns[ns <= 1].ravel()[0]!r}")
    kappa = gamma * ns / (2.0 * np.pi * np.log(ns))
    if np.any(kappa <= 1):
        bad = ns.ravel()[np.argmin(kappa.ravel() > 1)]
        raise ValueError(
            f"n: the effective dimension needs gamma n / (2 pi log n) > 1 (its "
            f"log is the denominator); received n = {bad!r} with gamma = {gamma}"
        )
    mean_trace = np.mean([np.sum(lam) for lam in lams])
    if not mean_trace > 0:
        raise ValueError(f"spectra: expected a positive mean trace, received {mean_trace!r}")
    kap = kappa.reshape(-1)
    r = np.stack(
        [
            0.5 * np.sum(np.log1p(kap[:, None] * d * lam[None, :] / mean_trace), axis=1)
            for lam in lams
        ],
        axis=1,
    )  # (q, m_theta)
    dims = 2.0 * (logsumexp(r, axis=1) - np.log(len(lams))) / np.log(kap)
    if normalized:
        dims = dims / d
    return float(dims[0]) if ns.ndim == 0 else dims


class KarakidaStatistics(NamedTuple):
    """Karakida, Akaho, Amari (2019) moments of a Fisher spectrum of dimension ``P``.

    ``mean = tr F / P``, ``second_moment = tr F^2 / P``, ``max = lambda_max``.
    """

    mean: float
    second_moment: float
    max: float


def karakida_statistics(eigenvalues: Any, *, num_params: int | None = None) -> KarakidaStatistics:
    """``(m1, m2, lambda_max) = (tr F / P, tr F^2 / P, max_i lambda_i)``.

    ``P = num_params`` (default ``len(eigenvalues)``); implicit zeros lower the moments.
    Karakida et al. (2019): for wide random networks ``m1 -> 0`` like ``1 / width`` while
    ``lambda_max`` grows like the width, i.e. the spectrum is pathologically skewed.
    """
    lam = eigenvalue_array(eigenvalues)
    P = spectrum_dimension(lam, num_params)
    return KarakidaStatistics(
        float(np.sum(lam) / P), float(np.sum(lam * lam) / P), float(np.max(lam))
    )


def spectrum_statistics(
    eigenvalues: Any,
    *,
    damping: float,
    num_params: int | None = None,
    z: float | None = None,
    rank_tol: float | None = None,
) -> dict:
    """Every statistic of one spectrum, as a dict of floats.

    Keys: ``num_params``, ``trace``, ``frobenius_norm``, ``rank``, ``rank_tol``,
    ``near_zero_fraction`` (``1 - rank / P``), ``condition_number`` and ``logdet`` (of
    ``M + damping I``), ``effective_dimension`` (at ``z``, default ``damping``), ``mean``,
    ``second_moment``, ``max`` (Karakida). ``eigenvalues`` must be the complete spectrum,
    up to ``num_params - len(eigenvalues)`` implicit zeros.
    """
    lam = eigenvalue_array(eigenvalues)
    P = spectrum_dimension(lam, num_params)
    tol = default_rank_tolerance(lam, num_params=P) if rank_tol is None else rank_tol
    rank = numerical_rank(lam, num_params=P, tol=tol)
    kar = karakida_statistics(lam, num_params=P)
    damping = check_nonnegative(damping, "damping")
    return {
        "num_params": P,
        "trace": spectral_trace(lam),
        "frobenius_norm": spectral_frobenius_norm(lam),
        "rank": rank,
        "rank_tol": float(tol),
        "near_zero_fraction": 1.0 - rank / P,
        "condition_number": damped_condition_number(lam, damping, num_params=P),
        "logdet": damped_logdet(lam, damping, num_params=P),
        "effective_dimension": effective_dimension(lam, damping if z is None else z),
        "mean": kar.mean,
        "second_moment": kar.second_moment,
        "max": kar.max,
    }
