"""K-FAC: factors against their definitions, exactness where theory says so (one sample; one
linear layer with a Gaussian likelihood), the folded/separate relation, and the dense algebra
of to_dense/matvec/diagonal/solve (including factored damping against an explicit kron)."""

import numpy as np
import pytest

import minifim
from minifim import kfac

from .cases import (
    SINGLE_SAMPLE_CASES,
    assert_close,
    get_case,
    homogeneous_to_flat,
    make_case,
)
from .tolerances import (
    check_close,
    check_elementwise,
    cond,
    curvature_rtol,
    damped_cond,
    identity_tol,
    product_atol,
    product_rtol,
    solve_rtol,
)

KINDS = ("true", "empirical", "ggn", "mc", "argmax")


def dense(case, kind, **kw):
    return minifim.curvature_matrix(
        case.net, case.theta, case.X, case.y, kind, n_samples=2, rng=4, **kw
    )


def factors(case, kind, bias, **kw):
    return kfac(case.net, case.theta, case.X, case.y, kind, bias=bias, n_samples=2, rng=4, **kw)


def seeds(case):
    """Upper bound ``N max(C, n_samples)`` on the backpropagated seeds summed in a curvature."""
    return case.N * max(case.net.sizes[-1], 2)


def zero_cross_terms(net, M):
    """``M`` with every weight-bias cross entry of each layer set to zero, and off-layer blocks
    dropped (block-diagonal)."""
    out = np.zeros_like(M)
    for ws, bs in net.layer_slices:
        out[ws, ws] = M[ws, ws]
        out[bs, bs] = M[bs, bs]
    return out


def block_diag_part(net, M):
    out = np.zeros_like(M)
    for sl in net.layer_param_slices():
        out[sl, sl] = M[sl, sl]
    return out


def hand_layer_inputs(net, theta, X):
    a, acts = X, []
    for l, (W, b) in enumerate(net.unflatten(theta)):
        acts.append(a)
        if l < net.num_layers - 1:
            a = net.activation.phi(a @ W.T + b)
    return acts


# --- factors against their definitions ----------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_factors_against_definitions(case, kind):
    """``A_l = mean a~ a~^T`` (hand forward); ``G_l`` equals the (b_l, b_l) block of the curvature
    itself, since ``d f / d b_l = d f / d z_l`` (mean reduction)."""
    net = case.net
    M = dense(case, kind)
    Kf, Ks = factors(case, kind, "folded"), factors(case, kind, "separate")
    for l, ((_ws, bs), a) in enumerate(
        zip(net.layer_slices, hand_layer_inputs(net, case.theta, case.X))
    ):
        at = np.hstack([a, np.ones((case.N, 1))])
        # A: a product of inner dimension N (hand forward: up to P roundings per activation)
        assert_close(Kf.A[l], at.T @ at / case.N, product_rtol(case.N + case.P), f"A{l}")
        assert_close(Ks.A[l], a.T @ a / case.N, product_rtol(case.N + case.P), f"A{l} separate")
        assert_close(Kf.G[l], M[bs, bs], curvature_rtol(case), f"G{l}")
        # G does not depend on the bias convention: the same computation, bit-identical
        np.testing.assert_array_equal(Kf.G[l], Ks.G[l])
    assert Kf.shapes == tuple(net.shapes) and Kf.num_params == case.P
    assert Kf.bias == "folded" and Ks.bias == "separate"


# --- exactness ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", SINGLE_SAMPLE_CASES, ids=lambda c: c.name)
def test_exact_for_a_single_sample(case, kind):
    """With N = 1, ``sum_k (b_k a~^T) (b_k a~^T)^T = (sum_k b_k b_k^T) kron a~ a~^T``: folded K-FAC
    equals the exact per-layer blocks; separate K-FAC equals them with the weight-bias cross
    terms dropped (its convention), the weight and bias blocks being exact."""
    M = dense(case, kind)
    tol = curvature_rtol(case)
    assert_close(factors(case, kind, "folded").to_dense(), block_diag_part(case.net, M), tol)
    assert_close(factors(case, kind, "separate").to_dense(), zero_cross_terms(case.net, M), tol)


@pytest.mark.parametrize("kind", ["true", "ggn"])
def test_exact_for_linear_gaussian(kind):
    """One linear layer, Gaussian likelihood: ``G_n = I / sigma^2`` for every sample, so the
    folded K-FAC is the exact Fisher (and the separate one drops only the cross terms)."""
    case = get_case("gaussian-identity-4x3")
    F = dense(case, kind)
    Kf = factors(case, kind, "folded")
    assert_close(Kf.G[0], np.eye(3) / case.net.likelihood.sigma**2, product_rtol(seeds(case)))
    assert_close(Kf.to_dense(), F, curvature_rtol(case))
    assert_close(
        factors(case, kind, "separate").to_dense(),
        zero_cross_terms(case.net, F),
        curvature_rtol(case),
    )
    # the cross terms are really dropped (mean input is not zero here)
    assert np.abs(F - zero_cross_terms(case.net, F)).max() > 1e-3


def test_not_exact_in_general():
    """Guard against a vacuous exactness test: with several samples and a hidden layer K-FAC
    differs from the exact blocks."""
    case = get_case("categorical-tanh-2x3x4x2")
    F = dense(case, "true")
    err = np.abs(factors(case, "true", "folded").to_dense() - block_diag_part(case.net, F)).max()
    assert err > 1e-4 * np.abs(F).max()


def test_folded_separate_relation(case):
    """Separate ``A`` is folded ``A`` without its homogeneous row/column; the separate dense
    matrix is the folded one with the weight-bias cross terms zeroed (folded bias block
    ``G * A[-1, -1] = G``)."""
    Kf, Ks = factors(case, "true", "folded"), factors(case, "true", "separate")
    acts = hand_layer_inputs(case.net, case.theta, case.X)
    for Af, As, (_, i), a in zip(Kf.A, Ks.A, case.net.shapes, acts):
        # two GEMMs of different shapes ((N, i+1) and (N, i)): equal up to the product bound
        # (bit-equal on some OpenBLAS kernels only), entrywise n EPS |a|^T |a| / N
        check_elementwise(Af[:i, :i], As, product_atol(a.T, a) / case.N, "A without its 1")
        assert Af[i, i] == 1.0  # a mean of N ones: exact
    # each dense entry is one product g a of entries within product_rtol(N) of each other
    assert_close(
        Ks.to_dense(),
        zero_cross_terms(case.net, Kf.to_dense()),
        product_rtol(case.N) + identity_tol(),
    )


def test_layer_block_layout():
    """Folded block = ``G kron A`` in homogeneous ``[W | b]`` order, permuted to flat order."""
    case = get_case("categorical-tanh-2x3x4x2")
    K = factors(case, "true", "folded")
    for l, (o, i) in enumerate(case.net.shapes):
        idx = homogeneous_to_flat(o, i)
        assert_close(
            K.layer_block(l), np.kron(K.G[l], K.A[l])[np.ix_(idx, idx)], identity_tol(ulps=1)
        )  # the same products g a, permuted
    assert [b.shape for b in K.blocks()] == [(o * i + o,) * 2 for o, i in case.net.shapes]


# --- dense algebra ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", ["folded", "separate"])
def test_matvec_diagonal_dense_consistent(case, bias):
    K = factors(case, "true", bias)
    M = K.to_dense()
    v = np.random.default_rng(0).standard_normal(case.P)
    # G V A (inner dimensions o, i + 1) against M v (inner dimension P): |G| kron |A| = |M|
    check_elementwise(K.matvec(v), M @ v, product_atol(M, v), "matvec")
    assert_close(K.diagonal(), np.diag(M), identity_tol(ulps=1))  # the same products g a
    # G, A are Gram matrices: (i, j) and (j, i) are one inner product summed in two orders
    assert_close(M, M.T, product_rtol(seeds(case)))
    assert_close(M, block_diag_part(case.net, M), 0.0)  # structural zeros


@pytest.mark.parametrize("bias", ["folded", "separate"])
@pytest.mark.parametrize("damping", [1e-3, 0.1, 2.0])
def test_eigen_solve_is_damped_inverse(case, bias, damping):
    K = factors(case, "true", bias)
    v = np.random.default_rng(1).standard_normal(case.P)
    A = K.to_dense() + damping * np.eye(case.P)
    tol = solve_rtol(damped_cond(K.to_dense(), damping), case.P)
    x = K.solve(v, damping)
    check_close(x, np.linalg.solve(A, v), tol, "eigen solve")
    check_close(A @ x, v, tol, "residual")


def _factored_reference(K, damping, pi_correction):
    """Explicit ``(G + sqrt(l)/pi I) kron (A + pi sqrt(l) I)`` per layer (REFERENCES.md, with
    ``pi = sqrt((tr A / dim A) / (tr G / dim G))``); a separate bias block is ``G + l I``."""
    blocks = []
    for G, A, (o, i) in zip(K.G, K.A, K.shapes):
        pi = (
            np.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
            if pi_correction
            else 1.0
        )
        kr = np.kron(
            G + np.sqrt(damping) / pi * np.eye(o), A + pi * np.sqrt(damping) * np.eye(A.shape[0])
        )
        if K.bias == "folded":
            idx = homogeneous_to_flat(o, i)
            blocks.append(kr[np.ix_(idx, idx)])
        else:
            b = np.zeros((o * i + o,) * 2)
            b[: o * i, : o * i] = kr
            b[o * i :, o * i :] = G + damping * np.eye(o)
            blocks.append(b)
    P = sum(b.shape[0] for b in blocks)
    M, off = np.zeros((P, P)), 0
    for b in blocks:
        M[off : off + b.shape[0], off : off + b.shape[0]] = b
        off += b.shape[0]
    return M


@pytest.mark.parametrize("bias", ["folded", "separate"])
@pytest.mark.parametrize("pi_correction", [True, False])
def test_factored_damping_against_explicit_kron(bias, pi_correction):
    case = get_case("categorical-tanh-2x3x4x2")
    K = factors(case, "true", bias)
    v = np.random.default_rng(2).standard_normal(case.P)
    for damping in (1e-2, 0.5):
        M = _factored_reference(K, damping, pi_correction)
        x = K.solve(v, damping, damping_type="factored", pi_correction=pi_correction)
        check_close(x, np.linalg.solve(M, v), solve_rtol(cond(M), case.P), "factored")
    if pi_correction:  # the correction matters here, so the test distinguishes the two
        x0 = K.solve(v, 0.5, damping_type="factored", pi_correction=False)
        assert np.abs(x0 - K.solve(v, 0.5, damping_type="factored")).max() > 1e-6


def test_undamped_solve_on_nonsingular_factors():
    case = make_case((3, 2), "identity", "gaussian", N=9, seed=3)
    K = factors(case, "true", "folded")
    v = np.random.default_rng(3).standard_normal(case.P)
    ref = np.linalg.solve(K.to_dense(), v)
    tol = solve_rtol(cond(K.to_dense()), case.P)
    check_close(K.solve(v, 0.0), ref, tol, "eigen")
    check_close(K.solve(v, 0.0, damping_type="factored"), ref, tol, "factored")


def test_reduction_and_chunks(case):
    K = factors(case, "true", "folded")
    Ks = factors(case, "true", "folded", reduction="sum")
    for a, b, ga, gb in zip(K.A, Ks.A, K.G, Ks.G):
        np.testing.assert_array_equal(a, b)  # A is always a mean: the same computation
        assert_close(gb, case.N * ga, identity_tol(ulps=2))  # sum * (1/N) * N: 3 roundings
    assert_close(Ks.to_dense(), case.N * K.to_dense(), identity_tol(ulps=3))
    # chunks reorder the sums over N (A) and N K seeds (G): each entry g a within both bounds
    tol = product_rtol(case.N + seeds(case))
    for chunk in (1, 2):
        Kc = factors(case, "true", "folded", chunk_size=chunk)
        assert_close(Kc.to_dense(), K.to_dense(), tol)
        Kc = factors(case, "mc", "separate", chunk_size=chunk)
        assert_close(Kc.to_dense(), factors(case, "mc", "separate").to_dense(), tol)


# --- bad input ---------------------------------------------------------------------------------------
def test_bad_input():
    case = get_case("categorical-tanh-3x4x3")
    net, theta, X, y = case.net, case.theta, case.X, case.y
    with pytest.raises(
        ValueError,
        match=r"bias: expected one of \['folded', 'separate'\], "
        r"received 'merged'",
    ):
        kfac(net, theta, X, bias="merged")
    with pytest.raises(ValueError, match="fisher: expected one of"):
        kfac(net, theta, X, fisher="hessian")
    with pytest.raises(ValueError, match="reduction: expected one of"):
        kfac(net, theta, X, reduction="avg")
    with pytest.raises(ValueError, match="chunk_size"):
        kfac(net, theta, X, chunk_size=0)
    with pytest.raises(ValueError, match=r"theta: expected shape \(31,\)"):
        kfac(net, theta[:-1], X)
    with pytest.raises(ValueError, match="X: expected a 2-D array"):
        kfac(net, theta, X[0])
    with pytest.raises(ValueError, match="X: expected finite"):
        kfac(net, theta, X * np.nan)
    with pytest.raises(ValueError, match="y: the empirical Fisher needs the data targets"):
        kfac(net, theta, X, fisher="empirical")
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\)"):
        kfac(net, theta, X, y + 3, fisher="empirical")
    with pytest.raises(TypeError, match="rng"):
        kfac(net, theta, X, fisher="mc")
    K = kfac(net, theta, X, y)
    with pytest.raises(ValueError, match=r"v: expected shape \(31,\), received shape \(30,\)"):
        K.matvec(np.ones(30))
    with pytest.raises(ValueError, match=r"v: expected shape \(31,\)"):
        K.solve(np.ones((31, 2)), 1.0)
    with pytest.raises(ValueError, match="v: expected finite"):
        K.matvec(np.full(31, np.nan))
    with pytest.raises(ValueError, match="damping: expected a non-negative number"):
        K.solve(np.ones(31), -1.0)
    with pytest.raises(ValueError, match="damping: expected a finite number"):
        K.solve(np.ones(31), np.nan)
    with pytest.raises(TypeError, match="damping: expected a real number"):
        K.solve(np.ones(31), "1")
    with pytest.raises(ValueError, match=r"damping_type: expected one of \['eigen', 'factored'\]"):
        K.solve(np.ones(31), 1.0, damping_type="cholesky")
    # a single sample makes the factors singular: undamped solves are refused
    K1 = kfac(net, theta, X[:1], y[:1], "empirical")
    for method in ("eigen", "factored"):
        with pytest.raises(ValueError, match="damping: the K-FAC factors are singular"):
            K1.solve(np.ones(31), 0.0, damping_type=method)
