"""minifim._linalg: damped solves, inverses, log-determinants and their condition checks.

Second routes: ``numpy.linalg.solve`` / ``inv`` / ``slogdet`` (LU, independent of the Cholesky
and ``LDL^T`` used here), elementwise division, and eigenvalues from ``eigvalsh``; bounds from
:mod:`tests.tolerances`.
"""

from __future__ import annotations

import numpy as np
import pytest

from minifim._linalg import (
    EPS,
    check_conditioned,
    cholesky_factor,
    cholesky_logdet,
    damped_inverse,
    damped_solve,
    diagonal_solve,
    is_numerically_singular,
    singular_error,
)

from .tolerances import (
    check,
    check_close,
    cond,
    damped_cond,
    identity_tol,
    logdet_atol,
    product_rtol,
    rel_err,
    solve_rtol,
)


def _psd(n, rank=None, seed=0):
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((n if rank is None else rank, n))
    return U.T @ U / n


@pytest.mark.parametrize("n, rank, damping", [(6, None, 0.0), (8, 3, 1e-2), (5, 5, 1.0)])
def test_damped_solve_matches_lu(n, rank, damping):
    M = _psd(n, rank, seed=n)
    g = np.random.default_rng(1).standard_normal(n)
    A = M + damping * np.eye(n)
    ref = np.linalg.solve(A, g)
    check_close(
        damped_solve(M, g, damping),
        ref,
        solve_rtol(damped_cond(M, damping), n),
        "Cholesky solve vs LU",
    )
    G = np.random.default_rng(2).standard_normal((n, 3))  # several right-hand sides
    check_close(
        damped_solve(M, G, damping),
        np.linalg.solve(A, G),
        solve_rtol(damped_cond(M, damping), n),
        "matrix right-hand side",
    )


def test_damped_solve_keeps_or_overwrites_m():
    M = _psd(5)
    keep = M.copy()
    g = np.ones(5)
    x = damped_solve(M, g, 0.1)
    assert np.array_equal(M, keep)  # not touched by default
    y = damped_solve(M, g, 0.1, overwrite_m=True)
    assert not np.array_equal(M, keep)  # factored in place
    assert np.array_equal(x, y)


def test_symmetric_indefinite_solve():
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    w = np.array([-3.0, -1.0, 0.5, 1.0, 2.0, 4.0])
    H = (Q * w) @ Q.T
    H = 0.5 * (H + H.T)
    g = rng.standard_normal(6)
    cond = float(np.max(np.abs(w + 0.1)) / np.min(np.abs(w + 0.1)))
    check_close(
        damped_solve(H, g, 0.1, symmetric_indefinite=True),
        np.linalg.solve(H + 0.1 * np.eye(6), g),
        solve_rtol(cond, 6),
        "LDL^T vs LU",
    )
    with pytest.raises(ValueError, match="damping"):  # not positive definite for Cholesky
        damped_solve(H, g, 0.1)


def test_singular_and_underflow_systems_are_refused():
    M = _psd(6, rank=2)
    with pytest.raises(ValueError, match=r"damping: the system \(M \+ damping I\) is singular"):
        damped_solve(M, np.ones(6), 0.0)
    with pytest.raises(ValueError, match="damping.*reciprocal condition number"):
        damped_solve(np.diag([1.0, 1e-17]), np.ones(2), 0.0)
    with pytest.raises(ValueError, match="damping.*underflow"):
        damped_solve(1e-300 * np.eye(3), np.ones(3), 0.0)
    with pytest.raises(ValueError, match="damping.*underflow"):
        damped_solve(1e-300 * np.eye(3), np.ones(3), 0.0, symmetric_indefinite=True)
    with pytest.raises(ValueError, match="damping"):
        damped_solve(np.zeros((2, 2)), np.ones(2), 0.0, symmetric_indefinite=True)
    with pytest.raises(ValueError, match="square"):
        damped_solve(np.ones((2, 3)), np.ones(2), 0.1)
    with pytest.raises(ValueError, match="g: expected 2 rows"):
        damped_solve(np.eye(2), np.ones(3), 0.1)
    with pytest.raises(ValueError, match="damping"):
        damped_solve(np.eye(2), np.ones(2), -1.0)
    err = singular_error("block M_0", 0.0, "why")
    assert isinstance(err, ValueError) and str(err).startswith("damping: the system (block M_0")


def test_cholesky_factor_reconstructs_and_names_the_hint():
    M = _psd(5) + 0.1 * np.eye(5)
    for lower in (False, True):
        c, low = cholesky_factor(M.copy(), what="M", damping=0.1, lower=lower)
        R = np.tril(c) if low else np.triu(c)
        back = R @ R.T if low else R.T @ R
        check(float(np.abs(back - M).max() / np.abs(M).max()), product_rtol(5, 2), "R^T R = A")
    with pytest.raises(ValueError, match="try this"):
        cholesky_factor(
            np.zeros((3, 3)) + np.diag([1, 1, -1.0]), what="M", damping=0.0, hint="try this"
        )


def test_damped_inverse_matches_lu_and_is_symmetric():
    M = _psd(7, rank=4, seed=5)
    X = damped_inverse(M, 0.05)
    assert np.array_equal(X, X.T)
    ref = np.linalg.inv(M + 0.05 * np.eye(7))
    check_close(X, ref, solve_rtol(damped_cond(M, 0.05), 7), "inverse vs LU")
    with pytest.raises(ValueError, match=r"damping: .*my hint\); use damping > 0"):
        damped_inverse(M, 0.0, hint="my hint")


def test_diagonal_solve_is_elementwise_and_refuses_zero_entries():
    d = np.array([3.0, 0.5, 2.0])
    g = np.array([1.0, -2.0, 4.0])
    assert np.array_equal(diagonal_solve(d, g, 0.25), g / (d + 0.25))
    with pytest.raises(ValueError, match="damping.*1 diagonal entries are zero"):
        diagonal_solve(np.array([1.0, 0.0, 2.0]), g, 0.0)
    with pytest.raises(ValueError, match="damping.*diagonal entries"):
        diagonal_solve(np.array([1.0, 1e-17, 2.0]), g, 0.0)
    with pytest.raises(ValueError, match="g"):
        diagonal_solve(d, np.ones(2), 0.0)


def test_check_conditioned_is_the_n_eps_criterion():
    n = 4
    check_conditioned(np.array([1.0, 2.0, 3.0, 4.0]), 0.0, "A")
    # condition number just inside / outside 1 / (n eps)
    check_conditioned(np.array([1.0, 1.0, 1.0, 0.5 / (n * EPS)]), 0.0, "A")
    with pytest.raises(ValueError, match=r"damping: the system A has condition number"):
        check_conditioned(np.array([1.0, 1.0, 1.0, 2.0 / (n * EPS)]), 0.0, "A")
    with pytest.raises(ValueError, match="condition number inf"):
        check_conditioned(np.array([[0.0, 1.0], [2.0, 3.0]]), 0.0, "A")  # any shape
    with pytest.raises(ValueError, match="damping = 0.5"):
        check_conditioned(np.array([-1.0, 1.0]), 0.5, "A")


def test_is_numerically_singular():
    assert is_numerically_singular(_psd(5, rank=3))
    assert is_numerically_singular(np.zeros((2, 2)))
    assert not is_numerically_singular(np.eye(3))
    assert not is_numerically_singular(_psd(5) + 1e-3 * np.eye(5))


def test_cholesky_logdet_matches_slogdet():
    M = _psd(6, seed=9) + 0.2 * np.eye(6)
    c = cholesky_factor(M.copy(), what="M", damping=0.2)[0]
    sign, ref = np.linalg.slogdet(M)
    assert sign == 1
    err = abs(cholesky_logdet(c) - ref)
    check(
        err,
        logdet_atol(np.linalg.eigvalsh(M), 6) + identity_tol(abs(ref)),
        "log det from the Cholesky factor",
    )
    assert rel_err(np.exp(cholesky_logdet(c)), np.linalg.det(M)) < solve_rtol(
        damped_cond(M, 0.0), 6
    )


@pytest.mark.parametrize("indefinite", [False, True])
def test_damped_solve_in_place_allocates_no_square_copy(indefinite):
    """``overwrite_m=True`` factors the caller's C-ordered matrix in its own memory: LAPACK's
    wrappers copy a C-ordered array, so the symmetric matrix is handed over as its transpose."""
    import tracemalloc

    n = 400
    B = np.random.default_rng(3).standard_normal((n, n))
    M = B @ B.T / n
    if indefinite:
        M -= 0.5 * np.eye(n)
    g = np.ones(n)
    ref = np.linalg.solve(M + 0.1 * np.eye(n), g)
    A = np.ascontiguousarray(M)
    tracemalloc.start()
    try:
        d = damped_solve(A, g, 0.1, symmetric_indefinite=indefinite, overwrite_m=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * 8 * n * n, f"peak {peak} bytes: an (n, n) copy was made"
    check_close(d, ref, solve_rtol(cond(M + 0.1 * np.eye(n)), n), "in-place solve")
