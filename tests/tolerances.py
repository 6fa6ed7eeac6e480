"""Error bounds for the test suite, derived from floating-point error analysis, in one place.

Every numerical assertion of the suite compares an error with one of these bounds rather than
with a literal tuned on one machine: the bounds hold for any correctly rounded BLAS/LAPACK
(any OpenBLAS kernel, any thread count), so the suite passes on every CPU, and they are as
tight as the analysis allows, so a real defect still fails.

Notation (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed. 2002, ch. 2-3):
``u = EPS / 2`` is the unit roundoff of float64, ``gamma_n = n u / (1 - n u) ~ n u`` the
bound of ``n`` accumulated roundings. All bounds are first order in ``EPS`` (the cases are tiny:
``n <= a few hundred``, so ``n u << 1``).

The constants ``c`` are the worst-case constants of the theorems cited, rounded up to a small
integer: ``c = 1`` for two differently ordered evaluations of a product (``2 gamma_n = n EPS``),
``c = 2`` for solves (Cholesky / LU backward error ``gamma_{3n} ~ 1.5 n EPS``, plus the
``gamma_n`` of the residual product or of the reference solve's own error). The worst-case
backward error of Cholesky is ``O(n^2 u)`` normwise (``|| |R^T| |R| || <= n ||A||``), but
roundings accumulate like a random walk (Higham sec. 2.8: ``sqrt(n) u`` is typical), so one
factor ``n`` covers both. Measured (OpenBLAS Haswell, Nehalem, unset), the suite's errors reach at most
0.8 of these bounds (dense eigenvector orthogonality; the product and solve bounds below 0.45),
so they are tight, not fudged (see ``MINIFIM_TOL_REPORT`` below).

Set ``MINIFIM_TOL_REPORT=1`` to have pytest print the largest measured error / bound ratios
of the session (:func:`check` records them).
"""

from __future__ import annotations

import os

import numpy as np

EPS = float(np.finfo(np.float64).eps)  # 2.22e-16, the spacing of float64 at 1.0 (= 2 u)

#: ``(ratio, what, test)`` of every :func:`check`, for the end-of-session report.
RATIOS: list[tuple[float, str, str]] = []


# --- condition numbers -----------------------------------------------------------------------
def cond(A) -> float:
    """2-norm condition number ``||A||_2 ||A^{-1}||_2`` of a square matrix (``inf`` if singular).

    Symmetric ``A``: ``max |lambda| / min |lambda|`` from ``eigvalsh``; otherwise singular
    values (``np.linalg.cond``).
    """
    A = np.asarray(A, dtype=float)
    if np.array_equal(A, A.T):
        w = np.abs(np.linalg.eigvalsh(A))
        return float(w.max() / w.min()) if w.min() > 0 else np.inf
    return float(np.linalg.cond(A))


def damped_cond(M, damping: float) -> float:
    """Condition number of ``M + damping I`` for a symmetric positive semi-definite ``M``.

    ``(lambda_max + damping) / (lambda_min + damping)`` with the eigenvalues clipped at zero
    (a PSD matrix's computed ``lambda_min`` may be ``-O(EPS ||M||)``).
    """
    w = np.clip(np.linalg.eigvalsh(np.asarray(M, dtype=float)), 0.0, None)
    return float((w.max() + damping) / (w.min() + damping)) if w.min() + damping > 0 else np.inf


def woodbury_cond(M, damping: float) -> float:
    """``(||M||_2 + damping) / damping``: the condition number that governs the Woodbury route.

    The push-through solve ``d = (g - U^T (damping I + U U^T / N)^{-1} U g / N) / damping``
    factors the Gram matrix ``damping I + U U^T / N`` (eigenvalues: those of ``M`` plus
    ``damping``, and ``damping`` itself when ``N K > rank M``) and divides a difference of
    ``O(||g||)`` terms by ``damping``: its roundoff is ``||M|| / damping`` times that of ``g``.
    Equal to :func:`damped_cond` when ``M`` is singular (``N K < P``, the route's use case),
    larger otherwise.
    """
    return float((np.linalg.norm(np.asarray(M, dtype=float), 2) + damping) / damping)


# --- bounds ----------------------------------------------------------------------------------
def product_rtol(n: int, c: float = 1.0) -> float:
    """Relative forward error of a matrix product with inner dimension ``n``: ``c n EPS``.

    ``|fl(A B) - A B| <= gamma_n |A| |B|`` elementwise (Higham Thm 3.5 / eq. 3.13, for any
    summation order and blocking), so two evaluations with different orders (different BLAS
    kernels, shapes, chunkings or thread counts) differ by at most ``2 gamma_n |A||B| =
    n EPS |A||B|``: ``c = 1``. Relative to the scale ``max(|A||B|)``; use it with
    :func:`product_atol` where the result has cancellation (entries far below ``|A||B|``).
    """
    return c * n * EPS


def product_atol(A, B, c: float = 1.0) -> np.ndarray:
    """Elementwise bound ``c n EPS |A| |B|`` on the difference of two evaluations of ``A @ B``.

    ``n`` is the inner dimension; see :func:`product_rtol`. Returns an array shaped like
    ``A @ B`` (use it as ``np.abs(x - y) <= product_atol(A, B)``).
    """
    A, B = np.abs(np.asarray(A, dtype=float)), np.abs(np.asarray(B, dtype=float))
    return product_rtol(A.shape[-1], c) * (A @ B)


def curvature_rtol(case, c: float = 1.0) -> float:
    """Scale-relative distance of two routes to one curvature matrix ``1/N sum_r u_r u_r^T``.

    Each entry is a sum over ``N max(C, 2)`` seed rows ``u_r`` (``C`` outputs, or 2 Monte-Carlo
    samples in this suite), each row a backpropagated product accumulating at most ``P``
    terms: :func:`product_rtol` with ``n = P + N max(C, 2)``, relative to the largest entry
    (which bounds ``|U|^T |U|`` entrywise: Cauchy-Schwarz on the PSD diagonal).
    ``case`` has ``P``, ``N`` and ``net.sizes`` (a :class:`cases.Case`).
    """
    return product_rtol(case.P + case.N * max(case.net.sizes[-1], 2), c)


def identity_tol(scale: float = 1.0, ulps: float = 4.0) -> float:
    """``ulps EPS scale``: an identity that holds up to a fixed handful of roundings.

    For quantities computed by a few (``<= ulps``) correctly rounded operations from the same
    data, independent of any dimension (a rescaling, a permutation, a transpose, an exact
    shortcut against its long form). Each rounding costs ``u = EPS / 2`` of the scale.
    """
    return ulps * EPS * scale


def solve_rtol(cond_number: float, n: int, c: float = 2.0) -> float:
    """Relative error ``c n EPS cond`` of a backward-stable solve, inverse or factorisation.

    A backward-stable solver (Cholesky, ``LDL^T``, LU with partial pivoting, QR, a symmetric
    eigendecomposition) returns the exact solution of ``(A + dA) x = b`` with ``||dA|| <=
    gamma_{3n} ||A|| ~ 1.5 n EPS ||A||`` (Higham Thm 10.3/10.4, 9.4, 19.5); hence (Thm 7.2)
    ``||x^ - x|| / ||x|| <= cond(A) ||dA|| / ||A||`` and the relative residual
    ``||b - A x^|| / ||b|| <= (||dA|| + gamma_n ||A||) ||x^|| / ||b|| <= 2.5 n EPS cond``
    (the ``gamma_n`` is the residual's own product). ``c = 2`` bounds the distance between two
    routes' solutions of the same system (each within ``~1.5 n EPS cond`` of the exact one,
    with the random-walk accumulation of the module docstring) and the residual. Perturbations
    of ``A`` by a differently computed product (``n EPS ||A||``, :func:`product_rtol`) enter the
    same way, so the bound also covers two routes that build ``A`` differently.
    """
    return c * n * EPS * cond_number


def cg_rtol(cond_number: float, n: int, tol: float) -> float:
    """Relative error of an iterative solve stopped at true relative residual ``tol``.

    ``||x^ - x|| / ||x|| <= cond ||r|| / ||b||`` (Higham Thm 7.2 with a residual-based
    backward error), plus the roundoff of the residual evaluation itself
    (:func:`solve_rtol`).
    """
    return cond_number * tol + solve_rtol(cond_number, n)


def eig_atol(norm: float, n: int, c: float = 2.0) -> float:
    """Absolute error ``c n EPS ||A||_2`` of the eigenvalues of a symmetric ``A`` (Weyl).

    A backward-stable symmetric eigensolver returns the exact eigenvalues of ``A + dA`` with
    ``||dA||_2 <= ~n EPS ||A||_2`` (Higham sec. 19 / Demmel 1997 sec. 5.4), and Weyl's
    inequality gives ``|lambda_i^ - lambda_i| <= ||dA||_2``. ``c = 2``: two routes compared,
    or one route whose matrix is itself a differently computed product (``n EPS ||A||``).
    """
    return c * n * EPS * norm


def eigvec_tol(norm: float, gap: float, n: int, c: float = 2.0) -> float:
    """``sin`` of the angle between a computed and an exact eigenvector (Davis-Kahan).

    ``sin theta <= ||dA||_2 / gap`` with ``gap`` the distance of the eigenvalue to the rest of
    the spectrum and ``||dA||_2 <= eig_atol(norm, n, c)``: eigenvectors are only as accurate
    as their eigenvalue is separated.
    """
    return eig_atol(norm, n, c) / gap


def logdet_atol(eigenvalues, n: int, c: float = 2.0) -> float:
    """Absolute error of ``log det A = sum log lambda_i`` for a symmetric positive-definite ``A``.

    Each ``lambda_i`` is perturbed by at most ``eig_atol`` (Weyl), so ``log lambda_i`` by
    ``eig_atol / lambda_i``: ``c n EPS ||A|| sum_i 1 / lambda_i``.
    """
    w = np.asarray(eigenvalues, dtype=float)
    return eig_atol(float(w.max()), n, c) * float(np.sum(1.0 / w))


# --- assertions --------------------------------------------------------------------------------
def rel_err(actual, expected) -> float:
    """``||actual - expected|| / ||expected||`` (2-norm / Frobenius)."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-300))


def check(err: float, bound: float, what: str = "") -> float:
    """Assert ``err <= bound`` with a message naming both, and record ``err / bound``."""
    ratio = err / bound if bound > 0 else (0.0 if err == 0 else np.inf)
    RATIOS.append((float(ratio), what, os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]))
    assert err <= bound, f"{what}: error {err:.3e} > bound {bound:.3e} (ratio {ratio:.3g})"
    return err


def check_close(actual, expected, bound: float, what: str = "") -> float:
    """:func:`check` of the relative error :func:`rel_err` of ``actual`` against ``bound``."""
    return check(rel_err(actual, expected), bound, what)


def check_elementwise(actual, expected, atol, what: str = "") -> float:
    """Assert ``|actual - expected| <= atol`` entrywise (``atol`` an array or a scalar).

    Records the worst entry's ``|difference| / atol`` (entries with ``atol = 0`` must be equal).
    """
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    diff = np.abs(actual - expected)
    atol = np.broadcast_to(np.asarray(atol, dtype=float), diff.shape)
    assert np.all(diff[atol == 0] == 0), f"{what}: an entry with zero bound differs"
    pos = atol > 0
    ratio = float(np.max(diff[pos] / atol[pos], initial=0.0))
    return check(ratio, 1.0, what) if pos.any() else 0.0
