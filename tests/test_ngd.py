"""Tests of minifim.methods.ngd.natural_gradient: every route against a dense solve, the residual,
Gauss-Newton on least squares, covariance under reparameterisation, K-FAC invariances, bad
input."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad as agrad
from autograd import hessian as ahessian
from autograd import jacobian
from hypothesis import given
from hypothesis import strategies as st

import minifim
from minifim import natural_gradient
from minifim._linalg import damped_solve

from .cases import CASES, RANK_DEFICIENT_CASES, make_case
from .tolerances import (
    cg_rtol,
    check,
    cond,
    curvature_rtol,
    damped_cond,
    identity_tol,
    solve_rtol,
    woodbury_cond,
)

FACTOR = ("true", "empirical", "mc", "ggn")


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def block_diag_part(net, M):
    out = np.zeros_like(M)
    for sl in net.layer_param_slices():
        out[sl, sl] = M[sl, sl]
    return out


def route_bound(M, damping, method, tol=None):
    """Bound on the relative error of ``method``'s solution of ``(M + damping I) d = g`` (and on
    its relative residual): backward-stable dense solve ``c P EPS cond``; Woodbury the same
    with the condition number of its Gram matrix (``woodbury_cond``); CG/GMRES stopped at
    relative residual ``tol``: ``cond tol`` (tolerances.cg_rtol)."""
    P = M.shape[0]
    if method == "woodbury":
        return solve_rtol(woodbury_cond(M, damping), P)
    kappa = cond(M + damping * np.eye(P))
    return solve_rtol(kappa, P) if method in ("dense", "auto") else cg_rtol(kappa, P, tol)


def residual_bound(M, damping, method, tol=None):
    """Relative residual bound: ``c P EPS cond`` (direct routes), ``tol`` plus the residual's own
    roundoff (iterative routes, which stop on the true residual)."""
    if method in ("cg", "gmres"):
        P = M.shape[0]
        return tol + solve_rtol(cond(M + damping * np.eye(P)), P)
    return route_bound(M, damping, method)


def dense_curvature(c, curvature, rng=0):
    if curvature == "hessian":
        return minifim.hessian(c.net, c.theta, c.X, c.y)
    return minifim.curvature_matrix(c.net, c.theta, c.X, c.y, curvature, rng=rng)


# --- every route against a dense solve and the residual ----------------------------------------
@pytest.mark.parametrize("curvature", FACTOR)
def test_factor_curvature_routes_agree(case, curvature):
    damping = 1e-2
    M = dense_curvature(case, curvature)
    g = minifim.gradient(case.net, case.theta, case.X, case.y)
    ref = np.linalg.solve(M + damping * np.eye(case.P), g)
    for method in ("dense", "woodbury", "cg"):
        d = natural_gradient(
            case.net, case.theta, case.X, case.y, damping, curvature, method, rng=0, tol=1e-12
        )
        check(rel(d, ref), route_bound(M, damping, method, 1e-12), method)
        # residual (M + damping I) d = g
        check(
            rel((M + damping * np.eye(case.P)) @ d, g),
            residual_bound(M, damping, method, 1e-12),
            f"{method} residual",
        )


def test_damped_newton_equals_autograd_hessian_solve(case):
    net, X, y = case.net, case.X, case.y

    def nll(th):
        return -anp.mean(net.likelihood.log_prob(net.apply(th, X), y))

    H = ahessian(nll)(case.theta)
    g = agrad(nll)(case.theta)
    damping = 0.05
    ref = np.linalg.solve(H + damping * np.eye(case.P), g)
    for method in ("dense", "cg"):  # cg: restarted GMRES on the indefinite Hessian
        d = natural_gradient(net, case.theta, X, y, damping, "hessian", method, tol=1e-12)
        check(rel(d, ref), route_bound(H, damping, method, 1e-12), method)
        check(
            rel((H + damping * np.eye(case.P)) @ d, g),
            residual_bound(H, damping, method, 1e-12),
            f"{method} residual",
        )


@pytest.mark.parametrize("fisher", ["true", "empirical"])
def test_diag_and_block_equal_solves_with_parts_of_the_dense_matrix(case, fisher):
    damping = 1e-2
    M = dense_curvature(case, fisher)
    g = minifim.gradient(case.net, case.theta, case.X, case.y)
    d = natural_gradient(case.net, case.theta, case.X, case.y, damping, fisher, structure="diag")
    # entrywise: a diagonal (sum of squares, no cancellation) within curvature_rtol, 2 roundings
    check(rel(d, g / (np.diag(M) + damping)), curvature_rtol(case) + identity_tol(ulps=2), "diag")
    d = natural_gradient(case.net, case.theta, case.X, case.y, damping, fisher, structure="block")
    ref = np.concatenate(
        [
            np.linalg.solve(M[s, s] + damping * np.eye(s.stop - s.start), g[s])
            for s in case.net.layer_param_slices()
        ]
    )
    check(rel(d, ref), route_bound(block_diag_part(case.net, M), damping, "dense"), "block")
    structure = {
        "diag": np.diag(np.diag(M)),
        "block": block_diag_part(case.net, M),
        "kfac": minifim.kfac(case.net, case.theta, case.X, case.y, fisher).to_dense(),
    }
    for curvature in ("diag", "block", "kfac"):  # the dense check route of each structure
        a = natural_gradient(
            case.net, case.theta, case.X, case.y, damping, fisher, "structured", structure=curvature
        )
        b = natural_gradient(
            case.net, case.theta, case.X, case.y, damping, fisher, "dense", structure=curvature
        )
        check(rel(a, b), route_bound(structure[curvature], damping, "dense"), curvature)


@pytest.mark.parametrize("bias", ["folded", "separate"])
def test_kfac_is_the_damped_inverse_of_its_dense_matrix(bias):
    c = CASES[0]
    damping = 0.03
    g = minifim.gradient(c.net, c.theta, c.X, c.y)
    K = minifim.kfac(c.net, c.theta, c.X, bias=bias).to_dense()
    d = natural_gradient(c.net, c.theta, c.X, c.y, damping, structure="kfac", bias=bias)
    check(
        rel(d, np.linalg.solve(K + damping * np.eye(c.P), g)),
        route_bound(K, damping, "dense"),
        "eigen",
    )
    # factored Tikhonov damping with the pi-correction, against dense damped factors
    f = minifim.kfac(c.net, c.theta, c.X, bias=bias)
    A, G, blocks = [], [], []
    for a, gg in zip(f.A, f.G):
        pi = np.sqrt((np.trace(a) / len(a)) / (np.trace(gg) / len(gg)))
        A.append(a + pi * np.sqrt(damping) * np.eye(len(a)))
        G.append(gg + np.sqrt(damping) / pi * np.eye(len(gg)))
    damped = minifim.KFACFactors(tuple(A), tuple(G), bias, f.shapes)
    for l, (o, i) in enumerate(f.shapes):
        block = damped.layer_block(l)
        if bias == "separate":  # the separate bias block is damped additively
            block[o * i :, o * i :] = f.G[l] + damping * np.eye(o)
        blocks.append(block)
    ref = np.concatenate(
        [np.linalg.solve(B, g[s]) for B, s in zip(blocks, c.net.layer_param_slices())]
    )
    d = natural_gradient(
        c.net, c.theta, c.X, c.y, damping, structure="kfac", bias=bias, damping_type="factored"
    )
    check(rel(d, ref), solve_rtol(max(cond(B) for B in blocks), c.P), "factored")


@given(damping=st.floats(1e-3, 10.0), index=st.integers(0, len(CASES) - 1))
def test_routes_agree_for_any_damping(damping, index):
    c = CASES[index]
    d = natural_gradient(c.net, c.theta, c.X, c.y, damping, "true", "dense")
    w = natural_gradient(c.net, c.theta, c.X, c.y, damping, "true", "woodbury")
    F = minifim.true_fisher(c.net, c.theta, c.X)
    g = minifim.gradient(c.net, c.theta, c.X, c.y)
    # the bound of each example from the condition number of its own damped system (the
    # Woodbury route's Gram matrix: (||F|| + damping) / damping, 1e4 at damping 1e-3)
    tol = route_bound(F, damping, "woodbury")
    check(rel(w, d), tol, "woodbury vs dense")
    check(rel((F + damping * np.eye(c.P)) @ w, g), tol, "woodbury residual")


def test_woodbury_never_forms_p_by_p():
    """A net with P = 50,410 under a 200 MB budget (a P x P matrix would need 20 GB)."""
    rng = np.random.default_rng(0)
    net = minifim.MLP([100, 400, 20, 10])
    theta = net.init(rng)
    X = rng.standard_normal((6, 100))
    y = rng.integers(0, 10, 6)
    with minifim.memory_limit(200 * 2**20):
        d, info = natural_gradient(net, theta, X, y, 0.1, return_info=True)
    assert info["method"] == "woodbury" and d.shape == (net.num_params,)
    # residual through the matrix-free operator
    op = minifim.fisher_operator(net, theta, X)
    g = minifim.gradient(net, theta, X, y)
    # no dense cond here: ||F||_2 <= tr F (PSD) bounds the Woodbury condition number, and the
    # products accumulate along the layers (sum of widths) and the N K = 60 seeds, not over P
    kappa = (minifim.fisher_diagonal(net, theta, X).sum() + 0.1) / 0.1
    check(rel(op @ d + 0.1 * d, g), solve_rtol(kappa, sum(net.sizes) + 60), "residual")


def test_auto_says_which_route_it_picked():
    c = RANK_DEFICIENT_CASES[0]  # N K < P: the Woodbury route is the cheaper one
    assert c.N * c.net.output_dim < c.P
    _, info = natural_gradient(c.net, c.theta, c.X, c.y, 0.1, return_info=True)
    assert info["method"] == "woodbury" and "N K" in info["reason"]
    big = make_case((3, 4, 3), N=40, seed=7)  # N K = 120 > P = 31
    _, info = natural_gradient(big.net, big.theta, big.X, big.y, 0.1, return_info=True)
    assert info["method"] == "dense"
    with minifim.memory_limit(4000):  # neither Gram nor P x P fits
        d, info = natural_gradient(big.net, big.theta, big.X, big.y, 0.1, return_info=True)
    assert info["method"] == "cg" and info["residual"] <= 1e-10 and info["tol"] == 1e-10
    _, info = natural_gradient(c.net, c.theta, c.X, c.y, 0.1, structure="kfac", return_info=True)
    assert info["method"] == "structured"
    _, info = natural_gradient(c.net, c.theta, c.X, c.y, 0.1, "hessian", return_info=True)
    assert info["method"] == "dense"


def test_grad_argument_is_preconditioned(case):
    v = np.random.default_rng(1).standard_normal(case.P)
    F = minifim.true_fisher(case.net, case.theta, case.X)
    d = natural_gradient(case.net, case.theta, case.X, case.y, 0.5, grad=v, method="woodbury")
    check(
        rel(d, np.linalg.solve(F + 0.5 * np.eye(case.P), v)),
        route_bound(F, 0.5, "woodbury"),
        "woodbury",
    )


# --- exact statements --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["dense", "cg"])
def test_one_gauss_newton_step_lands_on_least_squares(method):
    rng = np.random.default_rng(5)
    net = minifim.MLP([4, 3], activation="identity", likelihood="gaussian", sigma=0.3)
    X = rng.standard_normal((20, 4))
    y = rng.standard_normal((20, 3))
    theta = net.init(rng)
    F = minifim.true_fisher(net, theta, X)
    coef = np.linalg.lstsq(np.hstack([X, np.ones((20, 1))]), y, rcond=None)[0]
    ref = net.flatten([(coef[:4].T, coef[4])])
    # theta - d loses the digits d shares with theta: scale the error of d by ||d|| / ||ref||;
    # lstsq (QR/SVD) is within cond(X~) EPS, below the normal-equations bound cond(F) = cond(X~)^2
    for curvature in ("true", "hessian"):  # Newton: for this model H = F
        d = natural_gradient(net, theta, X, y, 0.0, curvature, method, tol=1e-14)
        bound = route_bound(F, 0.0, method, 1e-14) * np.linalg.norm(d) / np.linalg.norm(ref)
        check(rel(theta - d, ref), bound + identity_tol(ulps=2), curvature)


def _phi_coordinates_direction(net, A, phi, X, y):
    """Exact NGD direction in phi coordinates (theta = A phi) by autograd: independent of
    minifim's Fisher (Jacobians through the reparameterised forward pass)."""
    J = jacobian(lambda p: net.apply(anp.dot(A, p), X))(phi)  # (N, C, P)
    Lam = net.likelihood.fisher_outputs(net.forward(A @ phi, X))
    F = np.einsum("ncp,ncd,ndq->pq", J, Lam, J) / X.shape[0]
    g = agrad(lambda p: -anp.mean(net.likelihood.log_prob(net.apply(anp.dot(A, p), X), y)))(phi)
    return np.linalg.solve(F, g), g, F


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])  # softmax F is singular
def test_exact_natural_gradient_is_covariant_plain_gradient_is_not(likelihood):
    c = make_case((2, 3, 3), "tanh", likelihood, N=30, seed=11)
    rng = np.random.default_rng(2)
    A = np.eye(c.P) + 0.3 * rng.standard_normal((c.P, c.P))  # general invertible A
    scale = np.ones(c.P)
    scale[c.net.layer_param_slices()[0]] = 7.0  # one layer rescaled
    F = minifim.true_fisher(c.net, c.theta, c.X)
    for T in (A, np.diag(scale)):
        phi = np.linalg.solve(T, c.theta)
        d_phi, g_phi, F_phi = _phi_coordinates_direction(c.net, T, phi, c.X, c.y)
        d_theta = natural_gradient(c.net, c.theta, c.X, c.y, 0.0, "true", "dense")
        # the phi solve's error is mapped back by T (amplified by at most cond T)
        bound = solve_rtol(cond(F) + cond(T) * cond(F_phi), c.P)
        check(rel(T @ d_phi, d_theta), bound, "covariance")
        g_theta = minifim.gradient(c.net, c.theta, c.X, c.y)
        assert rel(T @ g_phi, g_theta) > 0.1  # plain gradient steps are not covariant


def _affine_reparam_case(seed, bias):
    """Deep linear Gaussian net and an affine change of layer-0's input and of the hidden
    layer (layer 1's input), compensated in the parameters; returns both parameterisations
    and the map of directions back to the original ones."""
    rng = np.random.default_rng(seed)
    D, H, C = 3, 2, 3  # H <= C keeps G_0 = W1^T W1 / sigma^2 invertible
    net = minifim.MLP([D, H, C], activation="identity", likelihood="gaussian", sigma=0.8)
    theta = net.init(rng)
    X = rng.standard_normal((25, D))
    y = rng.standard_normal((25, C))
    Om0 = np.eye(D) + 0.4 * rng.standard_normal((D, D))
    c0 = rng.standard_normal(D)
    Phi0 = np.eye(H) + 0.4 * rng.standard_normal((H, H))  # layer-0 pre-activations / layer-1
    e0 = rng.standard_normal(H)  # input: a1' = Phi0 a1 + e0

    def hom(Om, c):
        T = np.eye(len(c) + 1)
        T[:-1, :-1], T[:-1, -1] = Om, c
        return T

    (W0, b0), (W1, b1) = net.unflatten(theta)
    T0, T1 = hom(Om0, c0), hom(Phi0, e0)
    W0t = Phi0 @ np.hstack([W0, b0[:, None]]) @ np.linalg.inv(T0)
    W0t[:, -1] += e0
    W1t = np.hstack([W1, b1[:, None]]) @ np.linalg.inv(T1)
    theta_p = net.flatten([(W0t[:, :-1], W0t[:, -1]), (W1t[:, :-1], W1t[:, -1])])
    X_p = X @ Om0.T + c0
    assert np.allclose(net.forward(theta, X), net.forward(theta_p, X_p), atol=1e-12)

    def back(d_p):  # d_W~0 = Phi0^{-1} d_W~0' T0, d_W~1 = d_W~1' T1
        (dW0, db0), (dW1, db1) = net.unflatten(d_p)
        D0 = np.linalg.solve(Phi0, np.hstack([dW0, db0[:, None]])) @ T0
        D1 = np.hstack([dW1, db1[:, None]]) @ T1
        return net.flatten([(D0[:, :-1], D0[:, -1]), (D1[:, :-1], D1[:, -1])])

    return net, (theta, X), (theta_p, X_p), y, back


def test_kfac_invariant_to_affine_layer_input_transforms():
    """Martens & Grosse (2015, sec. 10): undamped K-FAC with the bias folded into A is
    invariant to invertible affine transforms of every layer's input (a_l -> Om a_l + c),
    together with invertible linear transforms of the pre-activations, compensated in the
    weights. Exact block NGD is invariant too (the transforms act within layers); the
    diagonal and the separate-bias K-FAC are not (the latter breaks under the translation c).
    Undamped: damping is not transformed with the parameters and breaks the invariance."""
    net, (theta, X), (theta_p, X_p), y, back = _affine_reparam_case(0, "folded")
    P = net.num_params
    Bk = np.column_stack([back(e) for e in np.eye(P)])  # the linear map back, as a matrix

    def matrix(th, x, curvature):
        if curvature == "kfac":
            return minifim.kfac(net, th, x).to_dense()
        return block_diag_part(net, minifim.true_fisher(net, th, x))

    # (the full Fisher of a deep linear net is singular: W1 M^-1, M W0 is a symmetry)
    for curvature, invariant in (("kfac", True), ("block", True), ("diag", False)):
        d = natural_gradient(net, theta, X, y, 0.0, structure=curvature)
        d_p = natural_gradient(net, theta_p, X_p, y, 0.0, structure=curvature)
        err = rel(back(d_p), d)
        if invariant:  # both solves' errors, the transformed one mapped back through Bk
            kappa = cond(matrix(theta, X, curvature)) + cond(Bk) * cond(
                matrix(theta_p, X_p, curvature)
            )
            check(err, solve_rtol(kappa, P), curvature)
        else:
            assert err > 1e-2, (curvature, err)
    d = natural_gradient(net, theta, X, y, 0.0, structure="kfac", bias="separate")
    d_p = natural_gradient(net, theta_p, X_p, y, 0.0, structure="kfac", bias="separate")
    assert rel(back(d_p), d) > 1e-2
    # damping breaks the invariance (it is not transformed with the parameters)
    d = natural_gradient(net, theta, X, y, 1.0, structure="kfac")
    d_p = natural_gradient(net, theta_p, X_p, y, 1.0, structure="kfac")
    assert rel(back(d_p), d) > 1e-3


def test_kfac_equals_exact_ngd_for_a_single_linear_gaussian_layer():
    c = make_case((4, 3), "identity", "gaussian", N=9, seed=3)
    F = minifim.true_fisher(c.net, c.theta, c.X)
    for damping in (0.0, 1e-3, 0.7):
        tol = solve_rtol(damped_cond(F, damping), c.P)
        exact = natural_gradient(c.net, c.theta, c.X, c.y, damping, "true", "dense")
        block = natural_gradient(c.net, c.theta, c.X, c.y, damping, structure="block")
        for bias in ("folded",):
            k = natural_gradient(c.net, c.theta, c.X, c.y, damping, structure="kfac", bias=bias)
            check(rel(k, exact), tol, "kfac")
            check(rel(block, exact), tol, "block")


# --- bad input ---------------------------------------------------------------------------------
def test_bad_input():
    c = CASES[0]
    args = (c.net, c.theta, c.X, c.y)
    for damping in (-1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="damping"):
            natural_gradient(*args, damping)
    with pytest.raises(TypeError, match="damping"):
        natural_gradient(*args, "small")
    with pytest.raises(ValueError, match="fisher.*'fisher'"):
        natural_gradient(*args, 0.1, "fisher")
    with pytest.raises(ValueError, match="method"):
        natural_gradient(*args, 0.1, "true", "lu")
    with pytest.raises(ValueError, match="fisher"):
        natural_gradient(*args, 0.1, "hessian", structure="diag")
    with pytest.raises(ValueError, match="theta"):
        natural_gradient(c.net, c.theta[:-1], c.X, c.y)
    with pytest.raises(ValueError, match="X"):
        natural_gradient(c.net, c.theta, c.X[:, :2], c.y)
    with pytest.raises(ValueError, match="y"):
        natural_gradient(c.net, c.theta, c.X, c.y[:-1])
    with pytest.raises(ValueError, match="grad"):
        natural_gradient(*args, 0.1, grad=np.ones(3))
    with pytest.raises(TypeError, match="rng"):
        natural_gradient(*args, 0.1, "mc")
    with pytest.raises(ValueError, match="structured"):
        natural_gradient(*args, 0.1, "true", "structured")
    with pytest.raises(ValueError, match="woodbury"):
        natural_gradient(*args, 0.1, "true", "woodbury", structure="kfac")
    with pytest.raises(ValueError, match="woodbury"):
        natural_gradient(*args, 0.1, "hessian", "woodbury")
    with pytest.raises(ValueError, match="factored"):
        natural_gradient(*args, 0.1, "true", "dense", structure="kfac", damping_type="factored")
    with pytest.raises(ValueError, match="tol"):
        natural_gradient(*args, 0.1, tol=0.0)
    with pytest.raises(RuntimeError, match="tol"):
        natural_gradient(*args, 1e-3, "true", "cg", maxiter=1)


@pytest.mark.parametrize("method", ["auto", "dense", "woodbury", "cg"])
def test_singular_undamped_system_names_the_damping(method):
    c = RANK_DEFICIENT_CASES[0]  # N K < P: the undamped Fisher is singular
    with pytest.raises(ValueError, match="damping"):
        natural_gradient(c.net, c.theta, c.X, c.y, 0.0, "true", method)


def test_singular_dense_and_structured_systems_name_the_damping():
    # N K >= P but every input identical: rank F <= C (dense rcond check)
    c = make_case((2, 2), "identity", "gaussian", N=8, seed=1)
    X = np.ones_like(c.X)
    for fisher, structure in (
        ("true", "full"),
        ("hessian", "full"),
        ("true", "block"),
        ("true", "kfac"),
    ):
        with pytest.raises(ValueError, match="damping"):
            natural_gradient(c.net, c.theta, X, c.y, 0.0, fisher, "auto", structure=structure)
    # the categorical output factor G of K-FAC is singular (softmax sums to one)
    c = CASES[0]
    with pytest.raises(ValueError, match="damping"):
        natural_gradient(c.net, c.theta, c.X, c.y, 0.0, structure="kfac")
    # a zero diagonal entry: a dead input feature
    X = c.X.copy()
    X[:, 0] = 0.0
    with pytest.raises(ValueError, match="damping"):
        natural_gradient(c.net, c.theta, X, c.y, 0.0, structure="diag")


def test_damped_solve_checks():
    with pytest.raises(ValueError, match="square"):
        damped_solve(np.ones((2, 3)), np.ones(2), 0.1)
    with pytest.raises(ValueError, match="g"):
        damped_solve(np.eye(2), np.ones(3), 0.1)
    with pytest.raises(ValueError, match="damping"):
        damped_solve(np.zeros((2, 2)), np.ones(2), 0.0)
    with pytest.raises(ValueError, match="damping"):
        damped_solve(np.zeros((2, 2)), np.ones(2), 0.0, symmetric_indefinite=True)
    np.testing.assert_allclose(
        damped_solve(np.diag([1.0, -3.0]), np.ones(2), 1.0, symmetric_indefinite=True),
        [0.5, -0.5],
        rtol=solve_rtol(1.0, 2),
    )  # diag(2, -2): cond 1


def test_torch_cross_check_of_the_natural_gradient():
    torch = pytest.importorskip("torch")
    c = CASES[0]
    damping = 0.1
    net = c.net
    (W0, b0), (W1, b1) = net.unflatten(c.theta)
    params = [torch.tensor(np.array(p), requires_grad=True) for p in (W0, b0, W1, b1)]
    X = torch.tensor(c.X)

    def logits(ps):
        return torch.tanh(X @ ps[0].T + ps[1]) @ ps[2].T + ps[3]

    def flat(ts):
        return torch.cat([t.reshape(-1) for t in ts])

    out = logits(params)
    logp = torch.log_softmax(out, dim=1)
    probs = logp.exp().detach()
    N, C = out.shape
    F = torch.zeros(c.P, c.P, dtype=torch.float64)
    for n in range(N):
        for k in range(C):
            s = flat(torch.autograd.grad(logp[n, k], params, retain_graph=True))
            F += probs[n, k] * torch.outer(s, s) / N
    loss = -logp[torch.arange(N), torch.tensor(c.y)].mean()
    g = flat(torch.autograd.grad(loss, params))
    ref = torch.linalg.solve(F + damping * torch.eye(c.P, dtype=torch.float64), g).numpy()
    d = natural_gradient(net, c.theta, c.X, c.y, damping)
    check(rel(d, ref), route_bound(F.numpy(), damping, "woodbury"), "against torch")


def test_extra_curvature_is_added_to_the_matrix(case):
    rng = np.random.default_rng(4)
    B = rng.standard_normal((case.P, case.P))
    E = B @ B.T / case.P
    F = minifim.true_fisher(case.net, case.theta, case.X)
    g = minifim.gradient(case.net, case.theta, case.X, case.y)
    ref = np.linalg.solve(F + E + 0.01 * np.eye(case.P), g)
    for extra in (E, lambda v: E @ v):
        for method in ("auto", "dense", "cg"):
            d, info = natural_gradient(
                case.net,
                case.theta,
                case.X,
                case.y,
                0.01,
                method=method,
                extra_curvature=extra,
                tol=1e-12,
                return_info=True,
            )
            assert info["method"] in ("dense", "cg")
            check(rel(d, ref), route_bound(F + E, 0.01, info["method"], 1e-12), method)
    with pytest.raises(ValueError, match="extra_curvature"):
        natural_gradient(
            case.net, case.theta, case.X, case.y, 0.01, method="woodbury", extra_curvature=E
        )
    with pytest.raises(ValueError, match="extra_curvature"):
        natural_gradient(case.net, case.theta, case.X, case.y, 0.01, extra_curvature=E[:2])


# --- near-singular solves fail loudly on every route (issue 12, item 8) -------------------------
def _woodbury_case():
    # N K = 4 * 2 = 8 < P = 50: the Woodbury route's use case, M is singular; Gaussian outputs
    # (Lambda = I) make the (N K, N K) Gram matrix itself non-singular
    net = minifim.MLP([3, 8, 2], likelihood="gaussian")
    rng = np.random.default_rng(0)
    return net, net.init(0), rng.standard_normal((4, 3)), rng.standard_normal((4, 2))


@pytest.mark.parametrize("damping", [1e-300, 1e-200, 1e-30])
def test_woodbury_refuses_a_damping_it_cannot_solve_with(damping):
    # before: |d| ~ 1e284 at damping 1e-300, returned silently
    net, th, X, y = _woodbury_case()
    with pytest.raises(ValueError, match=r"damping.*condition number") as info:
        natural_gradient(net, th, X, y, damping, method="woodbury")
    assert "increase damping" in str(info.value) or "larger damping" in str(info.value)


@pytest.mark.parametrize("damping", [1e-10, 1e-8, 1e-6])
def test_woodbury_is_backward_stable_at_small_damping(damping):
    # before: relative residual 1e-6 at damping 1e-10 (the push-through formula divides by the
    # damping); now refined until the backward error is that of a stable solve, or it raises
    net, th, X, y = _woodbury_case()
    F = minifim.true_fisher(net, th, X)
    g = minifim.gradient(net, th, X, y)
    A = F + damping * np.eye(net.num_params)
    d, info = natural_gradient(net, th, X, y, damping, method="woodbury", return_info=True)
    r = np.linalg.norm(A @ d - g)
    # backward error |r| / (|A| |d| + |g|) of a backward-stable solve: c n eps
    eta = r / (np.linalg.norm(A, 2) * np.linalg.norm(d) + np.linalg.norm(g))
    check(eta, solve_rtol(1.0, net.num_params), "woodbury backward error")
    assert info["residual"] == pytest.approx(r / np.linalg.norm(g), rel=0.5, abs=1e-15)
    dense = natural_gradient(net, th, X, y, damping, method="dense") if damping >= 1e-8 else d
    check(rel(d, dense), solve_rtol(damped_cond(F, damping), net.num_params), "vs dense")


def test_kfac_solves_refuse_near_singular_factors():
    net, th, X, y = _woodbury_case()
    fac = minifim.kfac(net, th, X)
    g = minifim.gradient(net, th, X, y)
    for method in ("eigen", "factored"):
        with pytest.raises(ValueError, match=r"damping.*condition number"):
            fac.solve(g, 1e-300, damping_type=method)
        with pytest.raises(ValueError, match="damping"):
            natural_gradient(net, th, X, y, 1e-300, structure="kfac", damping_type=method)
        d = fac.solve(g, 1e-2, damping_type=method)  # well conditioned: solves
        assert np.all(np.isfinite(d))


def test_cg_non_convergence_raises():
    net, th, X, y = _woodbury_case()
    F = minifim.true_fisher(net, th, X)
    g = minifim.gradient(net, th, X, y)
    # g lies in the range of M, where CG's Krylov space stays: at damping 1e-300 CG either
    # reaches its residual tolerance (checked independently here) or raises, never silently
    try:
        d = natural_gradient(net, th, X, y, 1e-300, method="cg")
    except RuntimeError as err:
        assert "damping" in str(err)
    else:
        assert np.linalg.norm(F @ d + 1e-300 * d - g) <= 1e-10 * np.linalg.norm(g) * 1.01
    with pytest.raises(RuntimeError, match="maxiter"):
        natural_gradient(net, th, X, y, 1e-6, method="cg", maxiter=1)


def test_pruning_obs_refuses_a_near_singular_curvature():
    net, th, X, y = _woodbury_case()
    for damping in (1e-300, 1e-30, 1e-20):
        with pytest.raises(ValueError, match="damping"):
            minifim.prune(net, th, X, y, 0.2, "obs", damping=damping)
    minifim.prune(net, th, X, y, 0.2, "obs", damping=1e-3)
