"""Curvature structures (``minifim.geometry.structures``): every method against a second route.

The second route is the dense matrix of the same structure, assembled independently
(``curvature_matrix``, ``fisher_diagonal``, ``block_diagonal``, ``KFACFactors.to_dense``), and
NumPy's dense linear algebra on it (``np.linalg.solve``, ``slogdet``, ``inv``, ``eigvalsh``).
Bounds from ``tests/tolerances.py`` with the case's condition number.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.sparse.linalg import LinearOperator

import minifim
from minifim.geometry.structures import KFAC, BlockDiagonal, Dense, Diagonal, curvature

from .tolerances import (
    EPS,
    check,
    check_close,
    check_elementwise,
    damped_cond,
    eig_atol,
    identity_tol,
    logdet_atol,
    product_atol,
    product_rtol,
    solve_rtol,
)

STRUCTS = [
    ("full", "folded"),
    ("diag", "folded"),
    ("block", "folded"),
    ("kfac", "folded"),
    ("kfac", "separate"),
]
IDS = ["full", "diag", "block", "kfac-folded", "kfac-separate"]
DAMPING = 0.1


def reference_dense(case, structure, bias):
    """The dense matrix of the structure by an independent assembly."""
    net, th, X, y = case.net, case.theta, case.X, case.y
    if structure == "full":
        return minifim.curvature_matrix(net, th, X, y)
    if structure == "diag":
        return np.diag(minifim.fisher_diagonal(net, th, X, y))
    if structure == "block":
        D = np.zeros((case.P, case.P))
        for sl, B in zip(net.layer_param_slices(), minifim.block_diagonal(net, th, X, y)):
            D[sl, sl] = B
        return D
    return minifim.kfac(net, th, X, y, bias=bias).to_dense()


def build(case, structure, bias):
    return curvature(case.net, case.theta, case.X, case.y, structure=structure, bias=bias)


def damped(D, d=DAMPING):
    return D + d * np.eye(D.shape[0])


@pytest.mark.parametrize("structure, bias", STRUCTS, ids=IDS)
def test_representation_against_dense(case, structure, bias):
    M = build(case, structure, bias)
    assert isinstance(M, LinearOperator)
    assert isinstance(
        M, {"full": Dense, "diag": Diagonal, "block": BlockDiagonal, "kfac": KFAC}[structure]
    )
    assert M.shape == (case.P, case.P) and M.dtype == np.float64 and M.name == structure
    D = reference_dense(case, structure, bias)
    np.testing.assert_array_equal(M.to_dense(), D)  # the same sums, entry by entry
    np.testing.assert_array_equal(M.diagonal(), np.diag(D))
    check(abs(M.trace() - np.trace(D)), product_rtol(case.P) * np.abs(np.diag(D)).sum(), "trace")
    V = np.random.default_rng(3).standard_normal((case.P, 3))
    check_elementwise(M @ V, D @ V, product_atol(D, V, c=2), "matmat")
    check_elementwise(M.matvec(V[:, 0]), D @ V[:, 0], product_atol(D, V[:, 0], c=2), "matvec")
    check_elementwise(M.rmatvec(V[:, 0]), D @ V[:, 0], product_atol(D, V[:, 0], c=2), "rmatvec")
    assert M.H is M and M.T is M


@pytest.mark.parametrize("structure, bias", STRUCTS, ids=IDS)
def test_eigen_coordinates_reconstruct_the_matrix(case, structure, bias):
    M = build(case, structure, bias)
    D = M.to_dense()
    P, norm = case.P, max(np.linalg.norm(D, 2), 1e-300)
    Q = M.from_eigenbasis(np.eye(P))
    w = M.eigenvalues()
    check(np.linalg.norm(Q.T @ Q - np.eye(P), 2), eig_atol(1.0, P), "Q orthogonal")
    check(np.linalg.norm((Q * w) @ Q.T - D, 2), eig_atol(norm, P), "Q diag(w) Q^T = M")
    check_close(M.to_eigenbasis(np.eye(P)), Q.T, identity_tol(P), "to_eigenbasis = Q^T")
    ref = np.clip(np.linalg.eigvalsh(D), 0.0, None)
    check(np.abs(np.sort(w) - ref).max(), eig_atol(norm, P), "eigenvalues = eigvalsh")


@pytest.mark.parametrize("structure, bias", STRUCTS, ids=IDS)
def test_eigh_in_the_structure_form(case, structure, bias):
    M = build(case, structure, bias)
    D = M.to_dense()
    P, norm = case.P, np.linalg.norm(D, 2)
    e = M.eigh()
    if structure == "full":
        w, Q = e
        check(np.linalg.norm((Q * w) @ Q.T - D, 2), eig_atol(norm, P), "dense eigh")
    elif structure == "diag":
        np.testing.assert_array_equal(e, np.diag(D))
    elif structure == "block":
        for (w, Q), sl in zip(e, case.net.layer_param_slices()):
            check(np.linalg.norm((Q * w) @ Q.T - D[sl, sl], 2), eig_atol(norm, P), "block eigh")
    else:
        for layer, sl in zip(e, case.net.layer_param_slices()):
            w = np.kron(layer.g, layer.a)  # the eigenvalues as a Kronecker product
            if bias == "separate":
                w = np.concatenate([w, layer.g])
            ref = np.linalg.eigvalsh(D[sl, sl])
            check(np.abs(np.sort(w) - ref).max(), eig_atol(norm, P), "kron(g, a) = eigvalsh")


@pytest.mark.parametrize("structure, bias", STRUCTS, ids=IDS)
def test_solve_logdet_and_matrix_functions(case, structure, bias):
    M = build(case, structure, bias)
    D = M.to_dense()
    P, Dd = case.P, damped(D)
    c = damped_cond(D, DAMPING)
    V = np.random.default_rng(4).standard_normal((P, 2))
    check_close(M.solve(V, DAMPING), np.linalg.solve(Dd, V), solve_rtol(c, P), "solve (P, k)")
    check_close(
        M.solve(V[:, 0], DAMPING), np.linalg.solve(Dd, V[:, 0]), solve_rtol(c, P), "solve (P,)"
    )
    assert M.solve(V[:, 0], DAMPING).shape == (P,)
    wd = np.linalg.eigvalsh(Dd)
    check(abs(M.logdet(DAMPING) - np.linalg.slogdet(Dd)[1]), logdet_atol(wd, P), "logdet")
    inv = np.linalg.inv(Dd)
    S = M.inverse(DAMPING).to_dense()
    check_close(S, inv, solve_rtol(c, P), "inverse")
    check_close(M.inverse(DAMPING).diagonal(), np.diag(S), identity_tol(P), "inverse diagonal")
    R = M.inv_sqrt(DAMPING).to_dense()
    check(np.abs(R - R.T).max(), identity_tol(np.abs(R).max(), P), "inv_sqrt symmetric")
    check_close(R @ R, inv, solve_rtol(c, P), "inv_sqrt @ inv_sqrt = (M + d I)^-1")
    check_close(R @ Dd @ R, np.eye(P), solve_rtol(c, P), "R (M + d I) R = I")


@pytest.mark.parametrize("structure, bias", STRUCTS, ids=IDS)
def test_sample_is_the_symmetric_root_of_the_covariance(case, structure, bias):
    M = build(case, structure, bias)
    R = M.inv_sqrt(DAMPING).to_dense()
    x = M.sample(np.random.default_rng(9), DAMPING, 4)
    z = np.random.default_rng(9).standard_normal((4, case.P))
    # two associations of z Q diag(s) Q^T: bound by the magnitudes |z| |Q| s |Q|^T
    Q, s = np.abs(M.from_eigenbasis(np.eye(case.P))), 1.0 / np.sqrt(M.eigenvalues() + DAMPING)
    atol = product_rtol(case.P, c=3) * (np.abs(z) @ (Q * s) @ Q.T)
    check_elementwise(x, z @ R, atol, "sample = R z")
    # the same draws through the dense reference's own symmetric root
    w, Q = np.linalg.eigh(damped(M.to_dense()))
    R_ref = (Q / np.sqrt(w)) @ Q.T
    c = damped_cond(M.to_dense(), DAMPING)
    check_close(x, z @ R_ref, solve_rtol(c, case.P), "sample = (M + d I)^{-1/2} z")


@pytest.mark.parametrize("structure, bias", STRUCTS, ids=IDS)
def test_scaling_and_addition_keep_the_structure(case, structure, bias):
    M = build(case, structure, bias)
    D = M.to_dense()
    for S, ref in (
        (2.0 * M, 2.0 * D),
        (M * 0.5, 0.5 * D),
        (M / 4, D / 4),
        (np.float64(3.0) * M, 3.0 * D),
    ):
        assert type(S) is type(M)
        np.testing.assert_array_equal(S.to_dense(), ref)  # powers of two: exact
    T = M + 0.3 * M
    assert type(T) is type(M)
    Dt = D + 0.3 * D
    check_close(T.to_dense(), Dt, identity_tol(ulps=2), "sum dense")
    assert sum([M, M]).shape == M.shape
    if structure == "kfac":
        assert len(T.terms) == 2  # a sum of Kronecker terms stays a list of terms
        with pytest.raises(ValueError, match="to_block"):
            T.eigh()
        with pytest.raises(ValueError, match="terms"):
            T.factors  # noqa: B018
    P, c = case.P, damped_cond(Dt, DAMPING)
    v = np.random.default_rng(5).standard_normal(P)
    check_close(T.solve(v, DAMPING), np.linalg.solve(damped(Dt), v), solve_rtol(c, P), "sum solve")
    check(
        abs(T.logdet(DAMPING) - np.linalg.slogdet(damped(Dt))[1]),
        logdet_atol(np.linalg.eigvalsh(damped(Dt)), P),
        "sum logdet",
    )
    R = T.inv_sqrt(DAMPING).to_dense()
    check_close(R @ R, np.linalg.inv(damped(Dt)), solve_rtol(c, P), "sum inv_sqrt")
    with pytest.raises(ValueError, match="non-negative"):
        -1.0 * M


def test_kfac_sum_of_different_tasks_is_exact(case):
    net, X = case.net, case.X
    F1 = minifim.kfac(net, case.theta, X)
    F2 = minifim.kfac(net, case.theta + 0.3, X[::-1] * 0.5)
    M = KFAC([(2.0, F1), (0.7, F2)])
    D = 2.0 * F1.to_dense() + 0.7 * F2.to_dense()
    check_close(M.to_dense(), D, identity_tol(ulps=2), "dense")
    np.testing.assert_allclose(M.diagonal(), np.diag(D), rtol=4 * EPS, atol=0)
    c = damped_cond(D, DAMPING)
    v = np.random.default_rng(6).standard_normal(case.P)
    check_close(
        M.solve(v, DAMPING),
        np.linalg.solve(damped(D), v),
        solve_rtol(c, case.P),
        "solve through the layer blocks",
    )
    assert (KFAC(F1) + KFAC(F2)).terms == ((1.0, F1), (1.0, F2))
    # one term with a coefficient: the factors' solve with the damping rescaled
    one = 2.0 * KFAC(F1)
    check_close(
        one.solve(v, DAMPING),
        np.linalg.solve(damped(2.0 * F1.to_dense()), v),
        solve_rtol(damped_cond(2.0 * F1.to_dense(), DAMPING), case.P),
        "scaled solve",
    )
    np.testing.assert_array_equal(one.factors.G[0], 2.0 * F1.G[0])


def test_mismatched_sums_fall_back_to_a_generic_operator(case):
    M = curvature(case.net, case.theta, case.X, structure="diag")
    K = curvature(case.net, case.theta, case.X, structure="kfac")
    S = M + K
    assert not isinstance(S, (Dense, Diagonal, KFAC))
    v = np.ones(case.P)
    np.testing.assert_allclose(S @ v, M @ v + K @ v, rtol=0, atol=1e-13 * np.abs(K @ v).max())
    sep = curvature(case.net, case.theta, case.X, structure="kfac", bias="separate")
    assert not isinstance(K + sep, KFAC)
    with pytest.raises(ValueError, match="bias"):
        KFAC([(1.0, K.factors), (1.0, sep.factors)])


def test_singular_systems_are_refused(case):
    K = curvature(case.net, case.theta, case.X, structure="full")
    if np.linalg.matrix_rank(K.to_dense()) == case.P:
        pytest.skip("curvature of full rank")
    with pytest.raises(ValueError, match="damping"):
        K.solve(np.ones(case.P), 0.0)
    with pytest.raises(ValueError, match="damping"):
        K.logdet(0.0)
    with pytest.raises(ValueError, match="damping"):
        K.inv_sqrt(0.0)
    with pytest.raises(ValueError, match="damping"):
        Diagonal(np.zeros(case.P)).solve(np.ones(case.P), 0.0)


def test_memory_guard_names_the_cheaper_route(case):
    P = case.P
    D = curvature(case.net, case.theta, case.X, structure="full")
    K = curvature(case.net, case.theta, case.X, structure="kfac")
    KK = K + K
    with minifim.memory_limit(8 * P * P - 1):
        with pytest.raises(minifim.MemoryBudgetError, match="matrix"):
            D.to_dense()
        with pytest.raises(minifim.MemoryBudgetError, match="Diagonal / KFAC"):
            Dense(D.matrix).eigh()
        with pytest.raises(minifim.MemoryBudgetError, match=r"\.diagonal\(\)"):
            K.to_dense()
        with pytest.raises(minifim.MemoryBudgetError, match="diagonal"):
            K.inverse(1.0).to_dense()
        # the cheap routes still work under the same budget
        K.solve(np.ones(P), 1.0)
        K.logdet(1.0)
        K.sample(0, 1.0)
        assert D.diagonal().shape == (P,)
    with minifim.memory_limit(7):
        with pytest.raises(minifim.MemoryBudgetError, match="single K-FAC term"):
            KK.solve(np.ones(P), 1.0)


def test_factory_vocabulary_and_arguments(case):
    assert minifim.curvature is curvature and "curvature" in minifim.__all__
    for name in ("Dense", "Diagonal", "BlockDiagonal", "KFAC"):
        assert name in minifim.__all__
    K = curvature(case.net, case.theta, case.X, structure="kron")  # laplace-torch's word
    assert isinstance(K, KFAC)
    S = curvature(case.net, case.theta, case.X, structure="full", reduction="sum")
    check_close(
        S.to_dense(),
        case.N * curvature(case.net, case.theta, case.X).to_dense(),
        product_rtol(case.P + case.N * 3),
        "reduction='sum'",
    )
    with pytest.raises(ValueError, match="structure"):
        curvature(case.net, case.theta, case.X, structure="dense")
    with pytest.raises(ValueError, match="bias"):
        curvature(case.net, case.theta, case.X, structure="kfac", bias="none")
    with pytest.raises(ValueError, match="v"):
        K.solve(np.ones(case.P + 1), 1.0)
    with pytest.raises(TypeError, match="blocks"):
        BlockDiagonal(np.eye(3))
    with pytest.raises(ValueError, match="square"):
        Dense(np.ones((3, 2)))


def test_indefinite_dense_solves_symmetrically(case):
    H = minifim.hessian(case.net, case.theta, case.X, case.y)
    M = Dense(H, psd=False)
    v = np.random.default_rng(2).standard_normal(case.P)
    Hd = damped(H, 2.0)
    w = np.abs(np.linalg.eigvalsh(Hd))
    check_close(
        M.solve(v, 2.0),
        np.linalg.solve(Hd, v),
        solve_rtol(w.max() / w.min(), case.P),
        "LDL^T solve",
    )
    np.testing.assert_array_equal(M.eigenvalues(), np.linalg.eigh(H)[0])  # not clipped
    assert type(-1.0 * M) is Dense


@given(st.integers(1, 6), st.integers(1, 4), st.floats(1e-3, 10.0), st.integers(0, 2**31))
def test_block_structures_agree_with_dense_on_random_psd(n_blocks, size, damping, seed):
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(n_blocks):
        B = rng.standard_normal((size, size + 1))
        blocks.append(B @ B.T)
    M = BlockDiagonal(blocks)
    D = M.to_dense()
    np.testing.assert_array_equal(Dense(D).to_dense(), D)
    P = D.shape[0]
    v = rng.standard_normal(P)
    for S, Dr in ((M, D), (Dense(D), D), (M + M * 0.5, 1.5 * D)):
        c = damped_cond(Dr, damping)
        check_close(
            S.solve(v, damping), np.linalg.solve(damped(Dr, damping), v), solve_rtol(c, P), "solve"
        )
        check(
            abs(S.logdet(damping) - np.linalg.slogdet(damped(Dr, damping))[1]),
            logdet_atol(np.linalg.eigvalsh(damped(Dr, damping)), P),
            "logdet",
        )
    d = np.diag(D)
    check_close(Diagonal(d).solve(v, damping), v / (d + damping), identity_tol(), "diag solve")


@pytest.mark.parametrize("structure, bias", STRUCTS, ids=IDS)
def test_data_round_trips_through_the_registry(case, structure, bias):
    from minifim.geometry.structures import STRUCTURE_CLASSES

    M = build(case, structure, bias)
    again = STRUCTURE_CLASSES[structure](M.data)
    assert type(again) is type(M)
    np.testing.assert_array_equal(again.to_dense(), M.to_dense())


def test_copy_false_wraps_without_copying_and_never_mutates_the_input():
    A = np.diag([1.0, 2.0, 3.0])
    D, C = Dense(A, copy=False), Dense(A)
    assert np.shares_memory(D.matrix, A) and not np.shares_memory(C.matrix, A)
    assert A.flags.writeable and not D.matrix.flags.writeable and not C.matrix.flags.writeable
    d = np.array([1.0, 2.0])
    assert np.shares_memory(Diagonal(d, copy=False).entries, d) and d.flags.writeable
    B = BlockDiagonal([A], copy=False)
    assert np.shares_memory(B.blocks[0], A)


def test_laplace_holds_the_structure_and_samples_through_it(case):
    la = minifim.Laplace(case.net, case.theta, case.X, case.y, 0.8, structure="kfac")
    assert isinstance(la.curvature, KFAC)
    np.testing.assert_array_equal(
        la.curvature.to_dense(),
        minifim.kfac(case.net, case.theta, case.X, case.y, reduction="sum").to_dense(),
    )
    draws = la.sample(3, np.random.default_rng(4))
    ref = case.theta + la.curvature.sample(np.random.default_rng(4), 0.8, 3)
    np.testing.assert_array_equal(draws, ref)


def test_factory_passes_kfac_approx_and_validates_it():
    """``curvature(structure="kfac", kfac_approx=...)`` is ``kfac(..., kfac_approx=...)``; on a
    weight-shared net the two flavours differ (second route: the function itself)."""
    import numpy as np
    import pytest

    import minifim
    from minifim.layers import Linear, Mean, Tanh

    net = minifim.Sequential([Linear(3, 4), Tanh(), Mean(1), Linear(4, 2)], input_shape=(5, 3))
    theta = net.init(0)
    X = np.random.default_rng(1).standard_normal((6, 5, 3))
    for approx in ("expand", "reduce"):
        S = minifim.curvature(net, theta, X, structure="kfac", kfac_approx=approx)
        ref = minifim.kfac(net, theta, X, kfac_approx=approx)
        assert S.factors.kfac_approx == approx
        for a, b in zip(S.factors.A + S.factors.G, ref.A + ref.G):
            np.testing.assert_array_equal(a, b)  # the same call, the same BLAS shapes
    e = minifim.curvature(net, theta, X, structure="kfac", kfac_approx="expand").factors.A[0]
    r = minifim.curvature(net, theta, X, structure="kfac", kfac_approx="reduce").factors.A[0]
    assert np.abs(e - r).max() > 1e-3 * np.abs(e).max()
    with pytest.raises(ValueError, match="kfac_approx"):
        minifim.curvature(net, theta, X, structure="kfac", kfac_approx="expnad")
