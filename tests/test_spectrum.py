"""Spectra (dense, Gram, Lanczos) and their statistics against independent routes."""

import itertools
import logging

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minifim
from minifim.geometry.spectrum import CURVATURES

from .cases import CASES, make_case
from .tolerances import check_elementwise, eig_atol, logdet_atol, product_rtol

FACTORED = ("true", "empirical", "mc", "argmax", "ggn")
TOL = 1e-10  # only for the (non-eigen) comparisons below that are not yet derived


def eig_tol(case, scale):
    """Weyl bound on an eigenvalue of a curvature of ``case`` from two routes (dense ``P x P``
    eigensolver, Gram ``N K x N K`` eigensolver, Lanczos to machine precision): each within
    ``~P EPS ||M||`` of the exact spectrum of a matrix that is itself a product accumulating
    ``P + N K`` terms (``tolerances.curvature_rtol``): ``eig_atol(||M||, P + N K)``."""
    return eig_atol(scale, case.P + case.N * max(case.net.sizes[-1], 2))


def eigvec_atol(case, values, method):
    """Entrywise bounds on ``V^T V - I`` and on the columns of ``M V - V diag(values)``.

    Dense route: a backward-stable eigensolver (``c n EPS`` orthonormality, ``c n EPS ||M||``
    residual). Gram route ``V = U^T W diag(N lambda)^{-1/2}`` from the Gram eigenvectors ``W``:
    ``W^T G W = diag(lambda) + E`` with ``|E| <= c n EPS ||G||``, so ``(V^T V - I)_ij =
    E_ij / sqrt(lambda_i lambda_j)`` and the residual's column ``i`` is ``||U|| / sqrt(N) *
    c n EPS ||G|| / sqrt(lambda_i)``: both grow like ``sqrt(lambda_max / lambda_i)``.
    """
    lam = np.asarray(values, dtype=float)
    lam = np.maximum(lam, eig_tol(case, lam[0]))  # a computed zero is at most eig_tol
    e = eig_tol(case, 1.0)
    if method == "dense":
        return e * np.ones((lam.size, lam.size)), e * lam[0] * np.ones(lam.size)
    growth = np.sqrt(lam[0] / lam)
    return e * np.outer(growth, growth), e * lam[0] * growth


def _matrix(case, curvature, rng=7):
    if curvature == "hessian":
        return minifim.hessian(case.net, case.theta, case.X, case.y)
    return minifim.curvature_matrix(case.net, case.theta, case.X, case.y, curvature, rng=rng)


def _spectrum(case, curvature, **kw):
    return minifim.curvature_spectrum(case.net, case.theta, case.X, case.y, curvature, rng=7, **kw)


# --- routes agree --------------------------------------------------------------------------
@pytest.mark.parametrize("curvature", FACTORED)
def test_gram_matches_dense(case, curvature):
    gram, info = _spectrum(case, curvature, method="gram", return_info=True)
    dense = np.linalg.eigvalsh(_matrix(case, curvature))[::-1]
    scale = dense[0]
    m = gram.shape[0]
    assert info.method == "gram" and info.complete
    assert m == min(info.num_rows, case.P) and info.implicit_zeros == case.P - m
    assert np.all(np.diff(gram) <= 0)
    check_elementwise(gram, dense[:m], eig_tol(case, scale), "gram eigenvalues")
    # the implicit eigenvalues are zeros
    check_elementwise(dense[m:], np.zeros(case.P - m), eig_tol(case, scale), "implicit zeros")


@pytest.mark.parametrize("curvature", FACTORED)
def test_dense_route_matches_numpy(case, curvature):
    values = _spectrum(case, curvature, method="dense")
    ref = np.linalg.eigvalsh(_matrix(case, curvature))[::-1]
    assert values.shape == (case.P,)
    check_elementwise(values, ref, eig_tol(case, ref[0]), "dense eigenvalues")


@pytest.mark.parametrize("method", ["gram", "dense"])
@pytest.mark.parametrize("curvature", ["true", "empirical"])
def test_eigenvectors_are_orthonormal_eigenvectors(case, method, curvature):
    M = _matrix(case, curvature)
    values, V = _spectrum(case, curvature, method=method, vectors=True)
    assert V.shape == (case.P, values.shape[0])
    ortho, resid = eigvec_atol(case, values, method)
    check_elementwise(M @ V, V * values, np.broadcast_to(resid, V.shape), "M V = V diag(values)")
    # the dense route uses dsyevd/dsyevx: the default MRRR driver (dsyevr) lost orthogonality
    # on the cluster of zero eigenvalues of a rank-deficient Fisher (up to 8.5 P EPS)
    check_elementwise(V.T @ V, np.eye(values.shape[0]), ortho, "orthonormality")


def test_top_k_subsets(case):
    full = _spectrum(case, "true", method="dense")
    for method in ("dense", "gram"):
        values, V = _spectrum(case, "true", method=method, k=2, vectors=True)
        check_elementwise(values, full[:2], eig_tol(case, full[0]), method)
        assert V.shape == (case.P, 2)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.net.activation.name != "identity"][::3], ids=lambda c: c.name
)
def test_lanczos_top_k_matches_dense(case):
    dense = _spectrum(case, "true", method="dense")
    values, V, info = _spectrum(case, "true", method="lanczos", k=3, vectors=True, return_info=True)
    assert info.method == "lanczos" and not info.complete and info.tol == 0.0
    # ARPACK at tol = 0 converges to machine precision: residual and eigenvalue c n EPS ||M||
    check_elementwise(values, dense[:3], eig_tol(case, dense[0]), "lanczos eigenvalues")
    M = _matrix(case, "true")
    check_elementwise(M @ V, V * values, eig_tol(case, dense[0]), "lanczos residual")


def test_hessian_routes():
    case = make_case((3, 5, 3), "tanh", "categorical", N=6, seed=11)
    H = minifim.hessian(case.net, case.theta, case.X, case.y)
    ref = np.linalg.eigvalsh(H)[::-1]
    values, info = _spectrum(case, "hessian", return_info=True)
    assert info.method == "dense" and info.num_rows is None
    tol = eig_tol(case, np.abs(ref).max())
    check_elementwise(values, ref, tol, "dense")
    assert ref[-1] < 0  # an indefinite Hessian: the spectrum keeps its sign
    top = _spectrum(case, "hessian", method="lanczos", k=3)
    check_elementwise(top, ref[:3], tol, "lanczos")
    with pytest.raises(ValueError, match="gram"):
        _spectrum(case, "hessian", method="gram")


def test_gram_across_chunks_and_sum_reduction():
    case = make_case((3, 6, 4), "softplus", "categorical", N=7, seed=5)
    one = _spectrum(case, "true", method="gram")
    chunked, V = _spectrum(case, "true", method="gram", chunk_size=2, vectors=True)
    check_elementwise(chunked, one, eig_tol(case, one[0]), "chunked")
    summed = _spectrum(case, "true", method="gram", reduction="sum")
    check_elementwise(summed, case.N * one, eig_tol(case, summed[0]), "sum reduction")
    F = _matrix(case, "true")
    _, resid = eigvec_atol(case, chunked, "gram")
    check_elementwise(F @ V, V * chunked, np.broadcast_to(resid, V.shape), "chunked vectors")


def test_fisher_spectrum_interface():
    case = make_case((4, 12, 3), "tanh", "categorical", N=6, seed=3)
    lam = minifim.fisher_spectrum(case.net, case.theta, case.X)
    assert isinstance(lam, np.ndarray) and lam.ndim == 1
    lam2, V = minifim.fisher_spectrum(case.net, case.theta, case.X, vectors=True)
    check_elementwise(lam, lam2, eig_tol(case, lam[0]), "another LAPACK driver")
    lam3, V3, info = minifim.fisher_spectrum(
        case.net, case.theta, case.X, "dense", 4, True, return_info=True
    )
    assert info.method == info.requested == "dense" and V3.shape == (case.P, 4)
    check_elementwise(lam3, lam[:4], eig_tol(case, lam[0]), "dense top 4")
    assert isinstance(info.as_dict(), dict)


# --- the auto policy -----------------------------------------------------------------------
def test_auto_policy_and_its_report(caplog):
    wide = make_case((4, 30, 3), "tanh", "categorical", N=5, seed=1)  # N*C = 15 < P = 243
    narrow = make_case((3, 2, 3), "tanh", "categorical", N=20, seed=2)  # N*C = 60 > P = 17
    with caplog.at_level(logging.INFO, logger="minifim.geometry.spectrum"):
        _, info = _spectrum(wide, "true", return_info=True)
    assert info.method == "gram" and info.requested == "auto" and "N*K = 15 < P" in info.reason
    assert any("gram" in r.getMessage() for r in caplog.records)
    assert _spectrum(narrow, "true", return_info=True)[1].method == "dense"
    # k larger than N*K: the Gram route cannot give it, dense does
    assert _spectrum(wide, "true", k=20, return_info=True)[1].method == "dense"
    # the empirical Fisher has N rows
    assert _spectrum(narrow, "empirical", return_info=True)[1].method == "dense"
    with minifim.memory_limit(2_000):  # neither P^2 nor (NK)^2 fits
        values, info = _spectrum(wide, "true", k=2, return_info=True)
        assert info.method == "lanczos"
        with pytest.raises(minifim.MemoryBudgetError, match="dense"):
            _spectrum(wide, "true", method="dense")
        with pytest.raises(minifim.MemoryBudgetError, match="k="):
            _spectrum(wide, "true")
    check_elementwise(values, _spectrum(wide, "true", k=2), eig_tol(wide, values[0]), "lanczos")


# --- trace, rank, Fisher-Rao ----------------------------------------------------------------
def _enumerated_expected_score_norm(case):
    """``1/N sum_n E_{y~p}[|s(y)|^2]`` by enumerating the labels (or via J for Gaussians)."""
    net, theta, X = case.net, case.theta, case.X
    N, C = X.shape[0], net.output_dim
    lik = net.likelihood
    F = net.forward(theta, X)
    if lik.name == "gaussian":
        J = minifim.output_jacobians(net, theta, X, backend="autograd")
        return np.sum(J * J) / (N * lik.sigma**2)
    total = 0.0
    labels = range(C) if lik.name == "categorical" else itertools.product([0.0, 1.0], repeat=C)
    for lab in labels:
        y = np.full(N, lab) if lik.name == "categorical" else np.tile(np.array(lab), (N, 1))
        prob = np.exp(lik.log_prob(F, y))
        S = minifim.per_sample_scores(net, theta, X, y, backend="autograd")
        total += np.sum(prob * np.sum(S * S, axis=1))
    return total / N


def test_trace_equals_enumerated_expected_score_norm(case):
    ref = _enumerated_expected_score_norm(case)
    for method in ("gram", "dense"):
        lam = _spectrum(case, "true", method=method)
        # a sum of P (or N K) eigenvalues each within eig_tol: P eig_tol, relative to the trace
        # (the largest eigenvalue <= trace); the enumerated reference is a sum of squares
        assert minifim.spectral_trace(lam) == pytest.approx(ref, rel=case.P * eig_tol(case, 1.0))


@pytest.mark.parametrize(
    "likelihood,rank",
    [
        ("categorical", lambda N, C: N * (C - 1)),
        ("bernoulli", lambda N, C: N * C),
        ("gaussian", lambda N, C: N * C),
    ],
)
def test_rank_of_a_generic_wide_net(likelihood, rank):
    case = make_case((3, 24, 4), "tanh", likelihood, N=6, seed=21)
    expected = rank(case.N, case.net.output_dim)
    assert expected < case.P
    for method in ("gram", "dense"):
        lam = _spectrum(case, "true", method=method)
        assert minifim.numerical_rank(lam, num_params=case.P) == expected
    # the same through the matrix, numpy's rule
    assert np.linalg.matrix_rank(_matrix(case, "true"), hermitian=True) == expected


def test_rank_bound_on_every_categorical_case():
    for case in CASES:
        if case.net.likelihood.name == "categorical":
            lam = _spectrum(case, "true")
            bound = case.N * (case.net.output_dim - 1)
            assert minifim.numerical_rank(lam, num_params=case.P) <= bound


@pytest.mark.parametrize("curvature", CURVATURES)
def test_fisher_rao_norm_matches_dense_quadratic_form(case, curvature):
    M = _matrix(case, curvature)
    v = np.random.default_rng(3).standard_normal(case.P)
    for vec in (None, v):
        x = case.theta if vec is None else vec
        ref = x @ M @ x
        got = minifim.fisher_rao_norm(case.net, case.theta, case.X, case.y, curvature, v=vec, rng=7)
        assert got == pytest.approx(ref, rel=1e-9, abs=1e-12 * np.abs(M).max())


def _liang_rhs(net, theta, X, y, curvature):
    """``L^2 1/N sum_n E[<d log p / d f, f>^2]``: expectation over the model's labels (true
    Fisher, enumerated) or at the data labels (empirical)."""
    lik = net.likelihood
    F = net.forward(theta, X)
    N, C = F.shape
    L = net.num_layers
    if curvature == "empirical":
        inner = np.sum(lik.grad_log_prob(F, y) * F, axis=1) ** 2
        return L**2 * inner.mean()
    if lik.name == "gaussian":  # E[(eps . f)^2] / sigma^4 = |f|^2 / sigma^2
        return L**2 * np.mean(np.sum(F * F, axis=1)) / lik.sigma**2
    total = np.zeros(N)
    labels = range(C) if lik.name == "categorical" else itertools.product([0.0, 1.0], repeat=C)
    for lab in labels:
        yy = np.full(N, lab) if lik.name == "categorical" else np.tile(np.array(lab), (N, 1))
        prob = np.exp(lik.log_prob(F, yy))
        total += prob * np.sum(lik.grad_log_prob(F, yy) * F, axis=1) ** 2
    return L**2 * total.mean()


@pytest.mark.parametrize("likelihood", ["categorical", "bernoulli", "gaussian"])
@pytest.mark.parametrize("sizes", [(3, 6, 3), (4, 5, 6, 2), (2, 4, 4, 3, 3)])
@pytest.mark.parametrize("curvature", ["true", "empirical"])
def test_liang_fisher_rao_identity_for_bias_free_relu(likelihood, sizes, curvature):
    """Liang et al. (2019), Thm 3.1: a bias-free ReLU net with L weight layers is positively
    homogeneous of degree L in its weights, so <theta, d f / d theta> = L f (Euler) and
    theta^T F theta = L^2 E_x E_y[<d log p / d f, f>^2] (y ~ model for the true Fisher, the
    data label for the empirical one)."""
    case = make_case(sizes, "relu", likelihood, N=6, seed=len(sizes) * 7)
    net = case.net
    theta = net.init(np.random.default_rng(1), scheme="normal") * 1.5
    for _, bs in net.layer_slices:
        theta[bs] = 0.0  # bias-free: theta is supported on the weights only
    J = minifim.output_jacobians(net, theta, case.X)
    np.testing.assert_allclose(
        J @ theta, net.num_layers * net.forward(theta, case.X), rtol=1e-12, atol=1e-12
    )  # Euler's identity itself
    lhs = minifim.fisher_rao_norm(net, theta, case.X, case.y, curvature)
    rhs = _liang_rhs(net, theta, case.X, case.y, curvature)
    assert lhs == pytest.approx(rhs, rel=TOL)
    M = minifim.curvature_matrix(net, theta, case.X, case.y, curvature)
    assert theta @ M @ theta == pytest.approx(rhs, rel=TOL)
    assert minifim.fisher_rao_norm(
        net, theta, case.X, case.y, curvature, squared=False
    ) == pytest.approx(np.sqrt(rhs), rel=TOL)


# --- statistics on known spectra ------------------------------------------------------------
KNOWN = np.array([5.0, 2.0, 1.0, 0.5, 1e-3, 0.0, 0.0, 0.0])


def test_statistics_of_a_diagonal_matrix():
    D = np.diag(KNOWN)
    P, d, z = KNOWN.size, 0.1, 0.3
    lam = np.linalg.eigvalsh(D)[::-1]
    assert minifim.spectral_trace(lam) == pytest.approx(np.trace(D), rel=1e-15)
    assert minifim.spectral_frobenius_norm(lam) == pytest.approx(
        np.linalg.norm(D, "fro"), rel=1e-15
    )
    assert minifim.numerical_rank(lam) == np.linalg.matrix_rank(D) == 5
    assert minifim.numerical_rank(lam, tol=0.01) == 4
    Dd = D + d * np.eye(P)
    assert minifim.damped_condition_number(lam, d) == pytest.approx(np.linalg.cond(Dd), rel=1e-14)
    assert minifim.damped_condition_number(lam, 0.0) == np.inf
    assert minifim.damped_logdet(lam, d) == pytest.approx(np.linalg.slogdet(Dd)[1], rel=1e-14)
    deff = np.trace(D @ np.linalg.inv(D + z * np.eye(P)))
    assert minifim.effective_dimension(lam, z) == pytest.approx(deff, rel=1e-14)
    np.testing.assert_allclose(
        minifim.effective_dimension(lam, np.array([z, 2 * z])),
        [deff, np.trace(D @ np.linalg.inv(D + 2 * z * np.eye(P)))],
        rtol=1e-14,
    )
    m1, m2, top = minifim.karakida_statistics(lam)
    assert (m1, m2, top) == pytest.approx((np.trace(D) / P, np.trace(D @ D) / P, 5.0), rel=1e-15)
    stats = minifim.spectrum_statistics(lam, damping=d, z=z)
    assert stats["rank"] == 5 and stats["near_zero_fraction"] == pytest.approx(3 / 8)
    assert stats["effective_dimension"] == pytest.approx(deff, rel=1e-14)


def test_implicit_zeros_count_exactly():
    full = KNOWN
    part = KNOWN[:5]  # what the Gram route would return for a rank-5, P = 8 matrix
    P = full.size
    for fn, kw in [
        (minifim.damped_logdet, {"damping": 0.2}),
        (minifim.damped_condition_number, {"damping": 0.2}),
        (minifim.numerical_rank, {}),
    ]:
        assert fn(part, num_params=P, **kw) == pytest.approx(fn(full, **kw), rel=1e-15)
    assert minifim.karakida_statistics(part, num_params=P) == pytest.approx(
        tuple(minifim.karakida_statistics(full)), rel=1e-15
    )
    a = minifim.spectrum_statistics(part, damping=0.2, num_params=P)
    b = minifim.spectrum_statistics(full, damping=0.2)
    assert a == pytest.approx(b, rel=1e-14)


def test_statistics_of_a_network_spectrum_via_gram_and_dense():
    case = make_case((3, 20, 3), "tanh", "categorical", N=5, seed=9)
    gram = _spectrum(case, "true", method="gram")
    dense = _spectrum(case, "true", method="dense")
    F = _matrix(case, "true")
    d = 1e-3
    a = minifim.spectrum_statistics(gram, damping=d, num_params=case.P)
    b = minifim.spectrum_statistics(dense, damping=d)
    # every eigenvalue within e = eig_tol (Weyl); statistics propagate it to first order
    e = eig_tol(case, dense[0])
    lam = np.clip(dense, 0.0, None)
    damped = lam + d
    bounds = {  # absolute bounds
        "trace": case.P * e,
        "mean": e,
        "max": e,
        "frobenius_norm": e * np.sqrt(case.P),  # ||lam + dlam|| - ||lam|| <= ||dlam||
        "second_moment": 2 * e * lam.sum() / case.P,
        "logdet": logdet_atol(damped, case.P + case.N * 3),  # sum of e / (lambda_i + d)
        "effective_dimension": e * np.sum(d / damped**2),  # d/dl [l / (l + d)] = d / (l + d)^2
    }
    for key, bound in bounds.items():
        assert a[key] == pytest.approx(b[key], rel=0, abs=2 * bound), key  # two routes
    assert a["rank"] == b["rank"]
    assert a["logdet"] == pytest.approx(
        np.linalg.slogdet(F + d * np.eye(case.P))[1], rel=0, abs=2 * bounds["logdet"]
    )
    assert a["frobenius_norm"] == pytest.approx(
        np.linalg.norm(F), rel=0, abs=2 * bounds["frobenius_norm"]
    )
    # cond = (lmax + d) / (lmin + d): relative error e / (lmax + d) + e / (lmin + d)
    kappa = np.linalg.cond(F + d * np.eye(case.P))
    assert a["condition_number"] == pytest.approx(
        kappa, rel=2 * e * (1 / damped.max() + 1 / damped.min())
    )
    stats = minifim.curvature_statistics(case.net, case.theta, case.X, damping=d)
    assert stats["method"] == "gram"
    assert stats["logdet"] == pytest.approx(a["logdet"], rel=0, abs=2 * bounds["logdet"])
    # a quadratic form: |theta|^T |F| |theta| n EPS, relative to theta^T F theta
    quad = np.abs(case.theta) @ np.abs(F) @ np.abs(case.theta)
    assert stats["fisher_rao_norm"] == pytest.approx(
        case.theta @ F @ case.theta, rel=0, abs=2 * product_rtol(case.P + case.N * 3) * quad
    )


@given(
    st.lists(st.floats(0.0, 1e3), min_size=1, max_size=12), st.integers(0, 5), st.floats(1e-3, 10.0)
)
def test_statistics_ignore_order_and_explicit_zeros(values, n_zeros, damping):
    lam = np.array(values)
    padded = np.concatenate([lam, np.zeros(n_zeros)])
    P = padded.size
    shuffled = np.random.default_rng(0).permutation(padded)
    a = minifim.spectrum_statistics(lam, damping=damping, num_params=P)
    b = minifim.spectrum_statistics(shuffled, damping=damping)
    for key in a:
        if key != "rank_tol":
            assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-300), key


# --- the effective dimension of Abbas et al. (2021) ----------------------------------------
def _abbas_dense(fishers, n, gamma=1.0):
    """Their recipe on dense matrices: F_hat = d F / mean tr F, slogdet, logsumexp."""
    d = fishers[0].shape[0]
    fhat = [d * F / np.mean([np.trace(G) for G in fishers]) for F in fishers]
    kappa = gamma * n / (2 * np.pi * np.log(n))
    r = np.array([0.5 * np.linalg.slogdet(np.eye(d) + kappa * Fh)[1] for Fh in fhat])
    return 2 * (np.log(np.mean(np.exp(r - r.max()))) + r.max()) / np.log(kappa)


def test_abbas_effective_dimension_against_dense_determinants():
    fishers, spectra = [], []
    for seed in range(3):
        case = make_case((3, 10, 3), "tanh", "categorical", N=4, seed=40 + seed)
        fishers.append(_matrix(case, "true"))
        spectra.append(_spectrum(case, "true", method="gram"))  # length N*C < P
    P = fishers[0].shape[0]
    for n in (100, 5000.0, 1e6):
        ref = _abbas_dense(fishers, n)
        got = minifim.abbas_effective_dimension(spectra, n, num_params=P, normalized=False)
        assert got == pytest.approx(ref, rel=1e-10)
        assert minifim.abbas_effective_dimension(spectra, n, num_params=P) == pytest.approx(
            ref / P, rel=1e-10
        )
    ns = np.array([100.0, 1e4])
    np.testing.assert_allclose(
        minifim.abbas_effective_dimension(spectra, ns, num_params=P),
        [_abbas_dense(fishers, n) / P for n in ns],
        rtol=1e-10,
    )
    # a local version (one theta), the scale of F does not matter (F_hat is normalised)
    one = minifim.abbas_effective_dimension(spectra[0], 1000, num_params=P)
    assert one == pytest.approx(
        minifim.abbas_effective_dimension(7.0 * spectra[0], 1000, num_params=P), rel=1e-12
    )


def test_abbas_effective_dimension_closed_forms():
    P = 6
    kappa_of = lambda n: n / (2 * np.pi * np.log(n))  # noqa: E731
    for n in (50, 1e5):
        k = kappa_of(n)
        # F = I: F_hat = I, d = P log(1 + kappa) / log(kappa)
        assert minifim.abbas_effective_dimension(np.ones(P), n, normalized=False) == pytest.approx(
            P * np.log1p(k) / np.log(k), rel=1e-13
        )
    # rank r of P: the normalised dimension tends to r / P as n grows
    lam = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    far = minifim.abbas_effective_dimension(lam, 1e250)
    assert far == pytest.approx(2 / 6, rel=0.02) and far > 2 / 6


# --- bad input ------------------------------------------------------------------------------
def test_bad_input_to_spectra():
    case = make_case((3, 4, 3), "tanh", "categorical", N=5, seed=0)
    net, theta, X, y = case.net, case.theta, case.X, case.y
    with pytest.raises(ValueError, match="method"):
        minifim.fisher_spectrum(net, theta, X, method="qr")
    with pytest.raises(TypeError, match="method"):
        minifim.fisher_spectrum(net, theta, X, method=None)
    with pytest.raises(ValueError, match="fisher"):
        minifim.curvature_spectrum(net, theta, X, y, "fisher")
    with pytest.raises(ValueError, match="k"):
        minifim.fisher_spectrum(net, theta, X, k=0)
    with pytest.raises(ValueError, match=r"k: expected an integer in \[1, 31\]"):
        minifim.fisher_spectrum(net, theta, X, method="dense", k=32)
    with pytest.raises(TypeError, match="k"):
        minifim.fisher_spectrum(net, theta, X, k=2.0)
    with pytest.raises(TypeError, match="vectors"):
        minifim.fisher_spectrum(net, theta, X, vectors="yes")
    with pytest.raises(ValueError, match="k: the Lanczos route"):
        minifim.fisher_spectrum(net, theta, X, method="lanczos")
    with pytest.raises(ValueError, match="ARPACK needs k < P"):
        minifim.fisher_spectrum(net, theta, X, method="lanczos", k=31)
    with pytest.raises(ValueError, match="Gram route has min"):
        minifim.fisher_spectrum(net, theta, X, method="gram", k=16)
    with pytest.raises(ValueError, match="tol"):
        minifim.fisher_spectrum(net, theta, X, method="lanczos", k=2, tol=-1.0)
    with pytest.raises(ValueError, match="y: the empirical"):
        minifim.curvature_spectrum(net, theta, X, None, "empirical")
    with pytest.raises(ValueError, match="y: the Hessian"):
        minifim.curvature_spectrum(net, theta, X, None, "hessian")
    with pytest.raises(TypeError, match="rng"):
        minifim.curvature_spectrum(net, theta, X, None, "mc")
    with pytest.raises(TypeError, match="curvature"):
        minifim.fisher_spectrum(net, theta, X, curvature="empirical")
    with pytest.raises(ValueError, match="theta"):
        minifim.fisher_spectrum(net, theta[:-1], X)
    with pytest.raises(ValueError, match="X"):
        minifim.fisher_spectrum(net, theta, X[:, :2])
    with pytest.raises(ValueError, match="method"):
        minifim.curvature_statistics(net, theta, X, damping=0.1, method="lanczos")
    with pytest.raises(ValueError, match="v"):
        minifim.fisher_rao_norm(net, theta, X, v=np.ones(3))


def test_bad_input_to_statistics():
    with pytest.raises(ValueError, match="eigenvalues: expected a 1-D"):
        minifim.spectral_trace(np.eye(2))
    with pytest.raises(ValueError, match="at least one"):
        minifim.numerical_rank([])
    with pytest.raises(TypeError, match="eigenvalues"):
        minifim.spectral_trace("1 2")
    with pytest.raises(ValueError, match="finite"):
        minifim.spectral_frobenius_norm([1.0, np.nan])
    with pytest.raises(ValueError, match="num_params: expected at least"):
        minifim.karakida_statistics([1.0, 2.0], num_params=1)
    with pytest.raises(ValueError, match="damping"):
        minifim.damped_logdet([1.0, 0.0], -1.0)
    with pytest.raises(ValueError, match="positive definite"):
        minifim.damped_logdet([1.0, 0.0], 0.0)
    with pytest.raises(ValueError, match="positive definite"):
        minifim.damped_logdet([1.0, 2.0], 0.0, num_params=3)
    with pytest.raises(ValueError, match="z: expected positive"):
        minifim.effective_dimension([1.0], 0.0)
    with pytest.raises(ValueError, match="tol"):
        minifim.numerical_rank([1.0], tol=-1.0)
    with pytest.raises(ValueError, match="2 pi log n"):
        minifim.abbas_effective_dimension([1.0, 2.0], 10)
    with pytest.raises(ValueError, match="n: expected sample sizes > 1"):
        minifim.abbas_effective_dimension([1.0, 2.0], 1)
    with pytest.raises(ValueError, match="gamma"):
        minifim.abbas_effective_dimension([1.0, 2.0], 100, gamma=2.0)
    with pytest.raises(ValueError, match="num_params: spectra of different lengths"):
        minifim.abbas_effective_dimension([np.ones(2), np.ones(3)], 100)
    with pytest.raises(ValueError, match="positive mean trace"):
        minifim.abbas_effective_dimension(np.zeros(3), 100)
    with pytest.raises(ValueError, match="squared"):
        case = make_case((3, 4, 3), "tanh", "categorical", N=5, seed=0)
        H = minifim.hessian(case.net, case.theta, case.X, case.y)
        w, Q = np.linalg.eigh(H)
        minifim.fisher_rao_norm(
            case.net, case.theta, case.X, case.y, "hessian", v=Q[:, 0], squared=False
        )
