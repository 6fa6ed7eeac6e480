"""Damped symmetric solves, inverses, log-determinants and their condition checks.

The generic dense linear algebra of minifim, in one place: every solve of a damped curvature
system ``(M + damping I) x = b`` (``M`` symmetric, usually positive semi-definite) goes through
the functions here, so that every route refuses a system it cannot solve with the same
criterion and the same message.

The criterion
-------------
A damped system is refused (``ValueError`` naming ``damping``) when it has no correct digit in
working precision: its reciprocal condition number is at most ``n eps`` (``eps`` the float64
spacing at 1, ``n`` the dimension). Dense routes estimate it with LAPACK's ``dpocon`` from the
Cholesky factor (:func:`cholesky_factor`); routes that hold the eigenvalues compute it exactly
(:func:`check_conditioned`); a diagonal system checks its entries (:func:`diagonal_solve`).
A matrix whose entries sit at the underflow threshold (1-norm below ``tiny / eps``) is refused
too: its entries have lost their relative precision.

Every function here is a pure function of float64 arrays, memory-guarded by its caller.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg as sla
from numpy.typing import ArrayLike

from ._validation import as_float_array, check_nonnegative

__all__ = [
    "EPS",
    "singular_error",
    "check_conditioned",
    "is_numerically_singular",
    "cholesky_factor",
    "damped_solve",
    "damped_inverse",
    "diagonal_solve",
    "cholesky_logdet",
]

EPS = float(np.finfo(np.float64).eps)
_TINY = float(np.finfo(np.float64).tiny)


def singular_error(what: str, damping: float, detail: str) -> ValueError:
    """The ``ValueError`` of a damped system ``(what + damping I)`` with no correct digit.

    Parameters
    ----------
    what : str
        The matrix, as the message should name it (``"true curvature"``, ``"block M_0"``).
    damping : float
        The damping of the refused system.
    detail : str
        Why: the figure that failed the criterion.
    """
    return ValueError(
        f"damping: the system ({what} + damping I) is singular to working "
        f"precision with damping = {damping!r} ({detail}); use damping > 0 "
        "(or a larger damping)"
    )


def check_conditioned(eigenvalues: ArrayLike, damping: float, what: str) -> None:
    """Refuse a damped symmetric system from its eigenvalues.

    Parameters
    ----------
    eigenvalues : ndarray, any shape
        The ``n`` eigenvalues of the damped matrix (damping included), e.g. ``g a^T +
        damping`` for a Kronecker product ``G kron A + damping I``.
    damping : float
        The damping, named in the message.
    what : str
        The damped matrix, named in the message.

    Raises
    ------
    ValueError
        Naming ``damping``, when ``min <= 0`` or ``min <= n eps max``, i.e. the condition number
        ``max / min >= 1 / (n eps)`` (the dense route's ``dpocon`` criterion, exact here).
    """
    w = np.ravel(np.asarray(eigenvalues, dtype=np.float64))
    lo, hi = float(w.min()), float(w.max())
    n = w.size
    if not (lo > 0 and lo > n * EPS * hi):
        cond = hi / lo if lo > 0 else float("inf")
        raise ValueError(
            f"damping: the system {what} has condition number {cond:.3g} "
            f">= 1 / (n eps) = {1 / (n * EPS):.3g} (eigenvalues in [{lo:.3g}, "
            f"{hi:.3g}]) with damping = {damping!r}; increase damping (the solve "
            "cannot be accurate)"
        )


def is_numerically_singular(M: ArrayLike) -> bool:
    """Whether a symmetric PSD ``M: (n, n)`` is singular: ``lambda_min <= n eps lambda_max``.

    Also ``True`` for ``lambda_max <= 0`` (a zero matrix).
    """
    M = np.asarray(M, dtype=np.float64)
    w = np.linalg.eigvalsh(M)
    return bool(w[-1] <= 0 or w[0] <= M.shape[0] * EPS * w[-1])


def _fortran_view(A: np.ndarray, lower: bool) -> tuple[np.ndarray, bool]:
    """A symmetric ``A`` as a Fortran-ordered array without a copy, and the triangle to use.

    LAPACK works on column-major arrays: handed a C-ordered matrix, SciPy's wrappers copy it
    (one ``(n, n)`` temporary per call, even with ``overwrite_a``). For a symmetric ``A`` the
    transpose is the same matrix and is Fortran-ordered, so it is used instead, with the
    other triangle (the upper factor of ``A`` is the lower factor of ``A^T``, in the same
    memory).
    """
    if A.flags.c_contiguous and not A.flags.f_contiguous:
        return A.T, not lower
    return A, lower


def cholesky_factor(
    A: np.ndarray, *, what: str, damping: float, lower: bool = False, hint: str | None = None
) -> tuple[np.ndarray, bool]:
    """Checked Cholesky factor ``(c, lower)`` of a symmetric positive-definite ``A: (n, n)``.

    ``A`` is overwritten (pass a copy to keep it). The factor is refused (``ValueError`` naming
    ``damping``, ending with ``hint`` when given) when ``A`` has its entries at the underflow
    threshold, is not positive definite, or has a reciprocal condition number (LAPACK
    ``dpocon`` from the factor and the 1-norm) at most ``n eps``.

    Parameters
    ----------
    A : ndarray, shape (n, n)
        The damped matrix (damping already added), float64, writeable.
    what : str
        The undamped matrix, as :func:`singular_error` names it.
    damping : float
        The damping included in ``A``, named in the message.
    lower : bool
        Lower (``A = L L^T``) or upper (``A = R^T R``) factor.
    hint : str, optional
        Advice appended to the message.

    Returns
    -------
    (c, lower)
        As ``scipy.linalg.cho_factor``: ready for ``scipy.linalg.cho_solve``. ``c`` shares
        ``A``'s memory (no copy); for a C-ordered ``A`` it is ``A``'s transpose and the
        returned ``lower`` is the opposite of the argument (the same factor).
    """
    n = A.shape[0]
    tail = "" if hint is None else f"; {hint}"
    A, lower = _fortran_view(A, lower)
    anorm = float(sla.lapack.dlange("1", A))  # 1-norm without an |A| temporary
    if not anorm > _TINY / EPS:
        raise singular_error(
            what,
            damping,
            f"1-norm {anorm:.3g} at the underflow threshold, "
            "the entries have lost their relative precision" + tail,
        )
    try:
        c, low = sla.cho_factor(A, lower=lower, overwrite_a=True, check_finite=False)
    except sla.LinAlgError:
        raise singular_error(
            what, damping, "Cholesky failed: not positive definite" + tail
        ) from None
    if not np.all(np.diag(c) > 0):
        raise singular_error(what, damping, "Cholesky failed: not positive definite" + tail)
    rcond, _ = sla.lapack.dpocon(c, anorm, uplo="L" if low else "U")
    if not rcond > n * EPS:
        raise singular_error(
            what,
            damping,
            f"reciprocal condition number {rcond:.3g} <= n eps "
            f"(condition number ~{1 / rcond if rcond > 0 else np.inf:.3g})" + tail,
        )
    return c, low


def _damped_copy(M: ArrayLike, damping: float, overwrite: bool) -> np.ndarray:
    """``M + damping I`` as a float64 square matrix (in place when allowed)."""
    M = as_float_array(M, "M", ndim=2)
    n = M.shape[0]
    if M.shape != (n, n):
        raise ValueError(f"M: expected a square matrix, received shape {M.shape}")
    A = M if overwrite and M.flags.writeable else M.copy()
    A[np.diag_indices(n)] += damping
    return A


def damped_solve(
    M: ArrayLike,
    g: ArrayLike,
    damping: float,
    *,
    what: str = "M",
    symmetric_indefinite: bool = False,
    overwrite_m: bool = False,
) -> np.ndarray:
    """``(M + damping I)^{-1} g`` for a dense symmetric ``M``.

    Parameters
    ----------
    M : ndarray, shape (n, n)
        Symmetric; positive semi-definite unless ``symmetric_indefinite``.
    g : ndarray, shape (n,) or (n, m)
    damping : float >= 0
    what : str
        The matrix, as the error message names it.
    symmetric_indefinite : bool
        A symmetric ``LDL^T`` solve (a Hessian, possibly indefinite) instead of Cholesky; a
        singular or ill-conditioned factor (LAPACK's condition warning) is refused.
    overwrite_m : bool
        Factor ``M`` in place (no ``(n, n)`` copy; ``M`` is destroyed).

    Returns
    -------
    ndarray, shaped like ``g``

    Raises
    ------
    ValueError
        Naming ``damping``: the system is not positive definite, or its reciprocal condition
        number is at most ``n eps`` (:func:`cholesky_factor`).
    """
    damping = check_nonnegative(damping, "damping")
    A = _damped_copy(M, damping, overwrite_m)
    n = A.shape[0]
    g = as_float_array(g, "g", ndim=1 if np.ndim(g) == 1 else 2)
    if g.shape[0] != n:
        raise ValueError(f"g: expected {n} rows to match M, received shape {g.shape}")
    if not symmetric_indefinite:
        c = cholesky_factor(A, what=what, damping=damping)
        return sla.cho_solve(c, g, check_finite=False)
    A = _fortran_view(A, False)[0]  # symmetric: the transpose, without LAPACK's copy
    anorm = float(sla.lapack.dlange("1", A))
    if not anorm > _TINY / EPS:
        raise singular_error(
            what,
            damping,
            f"1-norm {anorm:.3g} at the underflow threshold, "
            "the entries have lost their relative precision",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", sla.LinAlgWarning)
        try:
            return sla.solve(A, g, assume_a="sym", overwrite_a=True)
        except (sla.LinAlgError, sla.LinAlgWarning) as err:
            raise singular_error(what, damping, f"symmetric solve: {err}") from None


def damped_inverse(
    M: ArrayLike,
    damping: float,
    *,
    what: str = "M",
    hint: str | None = None,
    overwrite_m: bool = False,
) -> np.ndarray:
    """``(M + damping I)^{-1}`` of a dense symmetric PSD ``M``, symmetrised.

    By the checked Cholesky factor (:func:`cholesky_factor`) and ``cho_solve`` with the
    identity; the result is ``(X + X^T) / 2``. Arguments and errors as :func:`damped_solve`
    (``hint`` is appended to the error message).

    Returns
    -------
    ndarray, shape (n, n)
    """
    damping = check_nonnegative(damping, "damping")
    A = _damped_copy(M, damping, overwrite_m)
    c = cholesky_factor(A, what=what, damping=damping, lower=True, hint=hint)
    X = sla.cho_solve(c, np.eye(A.shape[0]), check_finite=False)
    return 0.5 * (X + X.T)


def diagonal_solve(
    d: ArrayLike, g: ArrayLike, damping: float, *, what: str = "diag(M)"
) -> np.ndarray:
    """``g / (d + damping)`` for a diagonal curvature ``d: (n,)`` and ``g: (n,)``.

    Refused (``ValueError`` naming ``damping``) when an entry of ``d + damping`` is at most
    ``n eps max |d + damping|``: the diagonal system's condition criterion.
    """
    damping = check_nonnegative(damping, "damping")
    dd = as_float_array(d, "d", ndim=1) + damping
    g = as_float_array(g, "g", shape=dd.shape)
    floor = dd.size * EPS * max(float(np.max(np.abs(dd))), _TINY)
    bad = dd <= floor
    if np.any(bad):
        raise singular_error(what, damping, f"{int(np.sum(bad))} diagonal entries are zero")
    return g / dd


def cholesky_logdet(c: np.ndarray) -> float:
    """``log det A = 2 sum_i log c_ii`` from a Cholesky factor ``c`` of ``A``."""
    return 2.0 * float(np.sum(np.log(np.diag(c))))
