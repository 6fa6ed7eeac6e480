"""Tests of minifim.methods.laplace against closed forms and independent dense routes.

References: Bayesian linear regression (posterior, predictive, marginal likelihood in closed
form) for the linear-Gaussian model; dense ``np.linalg.inv`` / ``slogdet`` of the assembled
precision for the structures; ``KFACFactors.solve`` for K-FAC; autograd Jacobians for the GLM
predictive; Gauss-Hermite quadrature for the sigmoid predictive; statistical bounds (fixed
seeds) for everything sampled.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from minifim.optim import fit_map
from scipy.optimize import brentq
from scipy.stats import multivariate_normal

import minifim
from minifim.methods.laplace import Laplace

from .cases import assert_close
from .tolerances import (
    check,
    check_close,
    cond,
    identity_tol,
    logdet_atol,
    product_rtol,
    solve_rtol,
)

RTOL = 1e-10  # only for the comparisons below that are not yet derived (predictive, evidence)


def close(a, b, rtol=RTOL):
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = max(1.0, float(np.max(np.abs(b))))
    return float(np.max(np.abs(a - b))) <= rtol * scale


def posterior_bounds(A, N, C):
    """Bounds on the posterior of the precision ``A = N M + alpha I: (P, P)`` (tolerances.py):
    ``A`` itself, a curvature product accumulating ``P + N max(C, 2)`` terms, scale-relative;
    its inverse (Frobenius-relative; a backward-stable inverse column by column, ``c P EPS
    cond A``); ``diag A^{-1}`` (at most ``sqrt(P)`` times that: ``||S||_F <= tr S``); and
    ``log det A`` (absolute, Weyl)."""
    P = A.shape[0]
    inv = solve_rtol(cond(A), P)
    return {
        "precision": product_rtol(P + N * max(C, 2)) + identity_tol(),
        "covariance": inv,
        "variance": inv * np.sqrt(P),
        "logdet": logdet_atol(np.linalg.eigvalsh(A), P),
    }


def check_posterior(la, A, N, C, S=None):
    """The precision, covariance, variance, covariance matvec and log det of ``la`` against
    ``A`` (and its inverse ``S``, computed here when not given)."""
    b = posterior_bounds(A, N, C)
    S = np.linalg.inv(A) if S is None else S
    assert_close(la.posterior_precision(), A, b["precision"], "precision")
    check_close(la.posterior_covariance(), S, b["covariance"], "covariance")
    check_close(la.posterior_variance(), np.diag(S), b["variance"], "variance")
    V = np.random.default_rng(0).standard_normal((A.shape[0], 2))
    check_close(la.covariance_matvec(V), S @ V, b["covariance"], "covariance matvec")
    check(abs(la.log_det_precision() - np.linalg.slogdet(A)[1]), b["logdet"], "log det")


# --- Bayesian linear regression, written out independently ----------------------------------
class BLR:
    """``y = W x + b + sigma eps`` with ``C`` outputs sharing the design ``X~ = [X, 1]``;
    prior ``N(0, alpha^{-1} I)`` on every weight; parameters in minifim's flat order."""

    def __init__(self, N=25, D=3, C=1, sigma=0.6, seed=0):
        rng = np.random.default_rng(seed)
        self.D, self.C, self.sigma = D, C, sigma
        self.net = minifim.MLP([D, C], activation="identity", likelihood="gaussian", sigma=sigma)
        self.X = rng.standard_normal((N, D))
        self.Xt = np.hstack([self.X, np.ones((N, 1))])
        Wtrue = rng.standard_normal((C, D + 1))
        self.y = self.Xt @ Wtrue.T + sigma * rng.standard_normal((N, C))
        # flat index of homogeneous entry (c, j): W[c, j] -> c D + j, b[c] -> C D + c
        self.flat = np.array(
            [c * D + j if j < D else C * D + c for c in range(C) for j in range(D + 1)]
        )

    def shared_precision(self, alpha):
        return self.Xt.T @ self.Xt / self.sigma**2 + alpha * np.eye(self.D + 1)

    def to_flat(self, M_hom):
        P = M_hom.shape[0]
        out = np.empty_like(M_hom)
        idx = np.empty(P, int)
        idx[self.flat] = np.arange(P)  # hom position of each flat index
        out[...] = M_hom[np.ix_(idx, idx)]
        return out

    def precision(self, alpha):
        return self.to_flat(np.kron(np.eye(self.C), self.shared_precision(alpha)))

    def covariance(self, alpha):
        return self.to_flat(np.kron(np.eye(self.C), np.linalg.inv(self.shared_precision(alpha))))

    def mean(self, alpha):
        S = np.linalg.inv(self.shared_precision(alpha))
        M = (S @ self.Xt.T @ self.y / self.sigma**2).T  # (C, D + 1) rows [w_c, b_c]
        theta = np.empty(self.C * (self.D + 1))
        theta[self.flat] = M.ravel()
        return theta

    def log_evidence(self, alpha):
        N = self.X.shape[0]
        K = self.sigma**2 * np.eye(N) + self.Xt @ self.Xt.T / alpha
        return sum(multivariate_normal(np.zeros(N), K).logpdf(self.y[:, c]) for c in range(self.C))

    def d_log_evidence(self, alpha):
        """d/d alpha of :meth:`log_evidence`, in closed form."""
        N = self.X.shape[0]
        G = self.Xt @ self.Xt.T
        Ki = np.linalg.inv(self.sigma**2 * np.eye(N) + G / alpha)
        dK = -G / alpha**2
        return sum(
            0.5 * self.y[:, c] @ Ki @ dK @ Ki @ self.y[:, c] - 0.5 * np.trace(Ki @ dK)
            for c in range(self.C)
        )

    def predictive(self, Xs, alpha):
        Xst = np.hstack([Xs, np.ones((Xs.shape[0], 1))])
        S = np.linalg.inv(self.shared_precision(alpha))
        M = (S @ self.Xt.T @ self.y / self.sigma**2).T
        var = np.einsum("md,de,me->m", Xst, S, Xst)
        cov = (var[:, None, None] + self.sigma**2) * np.eye(self.C)[None]
        return Xst @ M.T, cov


@pytest.fixture(params=[1, 2], ids=["C1", "C2"])
def blr(request):
    return BLR(C=request.param, seed=request.param)


STRUCTURES_EXACT_FOR_BLR = ("full", "kfac")


@pytest.mark.parametrize("curvature", STRUCTURES_EXACT_FOR_BLR)
def test_blr_posterior_equals_closed_form(blr, curvature):
    """Full and folded-bias K-FAC are exact here (the separate-bias K-FAC drops the
    weight-bias cross terms; its blocks are checked in the structure tests)."""
    alpha = 1.7
    m = blr.mean(alpha)
    la = Laplace(blr.net, m, blr.X, blr.y, alpha, structure=curvature)
    A, S = blr.precision(alpha), blr.covariance(alpha)
    check_posterior(la, A, blr.X.shape[0], blr.C, S)
    assert la.map_gradient_norm <= 1e-10 * np.abs(A).max() * np.abs(m).max()


@pytest.mark.parametrize("curvature", STRUCTURES_EXACT_FOR_BLR)
@pytest.mark.parametrize("alpha", [0.05, 1.0, 30.0])
def test_blr_log_marginal_likelihood_equals_closed_form(blr, curvature, alpha):
    la = Laplace(blr.net, blr.mean(alpha), blr.X, blr.y, alpha, structure=curvature)
    assert abs(la.log_marginal_likelihood() - blr.log_evidence(alpha)) <= RTOL * max(
        1.0, abs(blr.log_evidence(alpha))
    )


@pytest.mark.parametrize("curvature", STRUCTURES_EXACT_FOR_BLR)
def test_blr_predictive_equals_closed_form(blr, curvature):
    alpha = 0.8
    la = Laplace(blr.net, blr.mean(alpha), blr.X, blr.y, alpha, structure=curvature)
    Xs = np.random.default_rng(7).standard_normal((9, blr.D)) * 2.0
    mean, cov = la.predictive(Xs)
    ref_mean, ref_cov = blr.predictive(Xs, alpha)
    assert mean.shape == (9, blr.C) and cov.shape == (9, blr.C, blr.C)
    assert close(mean, ref_mean) and close(cov, ref_cov)
    f_mean, f_cov = la.functional_posterior(Xs)
    assert close(f_mean, ref_mean)
    assert close(f_cov, ref_cov - blr.sigma**2 * np.eye(blr.C)[None])
    # "probit" and "mc" links are irrelevant for regression: same exact Gaussian
    mean2, cov2 = la.predictive(Xs, link_approx="mc")
    assert np.array_equal(mean, mean2) and np.array_equal(cov, cov2)


def test_blr_mc_predictive_statistics():
    blr = BLR(C=1, seed=3)
    alpha = 0.5
    la = Laplace(blr.net, blr.mean(alpha), blr.X, blr.y, alpha)
    Xs = np.random.default_rng(1).standard_normal((4, blr.D))
    S = 20000
    mean, cov = la.predictive(Xs, pred_type="nn", n_draws=S, rng=11)
    ref_mean, ref_cov = blr.predictive(Xs, alpha)
    fvar = ref_cov[:, 0, 0] - blr.sigma**2
    # sample mean: sd sqrt(fvar / S); sample variance: sd fvar sqrt(2 / S)
    assert np.all(np.abs(mean[:, 0] - ref_mean[:, 0]) <= 5 * np.sqrt(fvar / S))
    assert np.all(np.abs(cov[:, 0, 0] - ref_cov[:, 0, 0]) <= 5 * fvar * np.sqrt(2 / S))


# --- prior precision: the evidence maximiser --------------------------------------------------
def dense_optimum(la):
    """Root of d/d alpha [log-evidence at fixed theta*] = P/(2 alpha) - |theta*|^2/2
    - tr((N F + alpha I)^{-1})/2, with a dense inverse (independent of the eigen route)."""
    P = la.num_params
    M = la.posterior_precision() - la.prior_precision * np.eye(P)
    sq = la.theta_map @ la.theta_map

    def deriv(t):
        a = math.exp(t)
        return P / a - sq - np.trace(np.linalg.inv(M + a * np.eye(P)))

    return math.exp(brentq(deriv, -30, 30, xtol=1e-14, rtol=1e-15))


@pytest.mark.parametrize("curvature", ["full", "kfac", "diag"])
def test_optimize_prior_precision_matches_dense_stationarity(curvature):
    case = BLR(N=12, D=4, C=2, seed=5)
    la = Laplace(case.net, case.mean(3.0), case.X, case.y, 3.0, structure=curvature)
    opt = la.optimize_prior_precision()
    assert la.prior_precision == 3.0  # not mutated
    ref = dense_optimum(la)
    assert abs(opt.prior_precision - ref) <= 1e-10 * ref
    # MacKay's fixed point alpha = gamma / |theta|^2 holds; the optimum is a maximum
    w = la.curvature_eigenvalues
    gamma = np.sum(w / (w + opt.prior_precision))
    assert abs(opt.prior_precision - gamma / (la.theta_map @ la.theta_map)) <= 1e-12 * ref
    best = opt.log_marginal_likelihood()
    for f in (0.99, 1.01):
        assert la.log_marginal_likelihood(f * opt.prior_precision) < best


def test_optimize_prior_precision_recovers_blr_evidence_maximiser():
    """At the MAP of the exact evidence maximiser, post-hoc tuning returns that maximiser
    (envelope theorem); the maximiser comes from the closed-form derivative of the BLR
    evidence with the MAP refit at every alpha."""
    case = BLR(N=30, D=3, C=2, sigma=0.5, seed=8)
    a_opt = math.exp(
        brentq(lambda t: case.d_log_evidence(math.exp(t)), -15, 15, xtol=1e-14, rtol=1e-15)
    )
    la = Laplace(case.net, case.mean(a_opt), case.X, case.y, prior_precision=1.0)
    opt = la.optimize_prior_precision()
    assert abs(opt.prior_precision - a_opt) <= 1e-9 * a_opt
    assert abs(opt.log_marginal_likelihood() - case.log_evidence(a_opt)) <= 1e-10 * abs(
        case.log_evidence(a_opt)
    )
    # and the exact evidence is indeed maximal there
    for f in (0.9, 1.1):
        assert case.log_evidence(f * a_opt) < case.log_evidence(a_opt)


def test_with_prior_precision_is_consistent_and_pure():
    case = BLR(seed=2)
    la = Laplace(case.net, case.mean(1.0), case.X, case.y, 1.0)
    other = la.with_prior_precision(4.0)
    assert la.prior_precision == 1.0 and other.prior_precision == 4.0
    assert other.log_marginal_likelihood() == la.log_marginal_likelihood(4.0)
    assert close(other.posterior_precision(), case.precision(4.0))
    assert la.map_gradient_norm < 1e-9 < other.map_gradient_norm  # theta* not refit


@given(st.floats(1e-3, 1e3), st.sampled_from(["full", "kfac", "diag"]))
def test_log_marginal_likelihood_terms(alpha, curvature):
    case = CLASSIFIER
    la = Laplace(case.net, case.theta, case.X, case.y, 0.3, structure=curvature)
    A = la.with_prior_precision(alpha).posterior_precision()
    P, th = case.P, case.theta
    log_lik = -case.N * minifim.loss(case.net, th, case.X, case.y)
    log_prior = -0.5 * P * math.log(2 * math.pi / alpha) - 0.5 * alpha * th @ th
    ref = log_lik + log_prior + 0.5 * P * math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(A)[1]
    assert abs(la.log_marginal_likelihood(alpha) - ref) <= 1e-10 * abs(ref)


# --- structures -------------------------------------------------------------------------------
def _case(sizes, likelihood, N=9, seed=0, activation="tanh"):
    rng = np.random.default_rng(seed)
    net = minifim.MLP(sizes, activation=activation, likelihood=likelihood, sigma=0.8)
    theta = net.init(rng)
    X = 1.2 * rng.standard_normal((N, sizes[0]))
    y = net.likelihood.sample(net.forward(theta, X), rng)

    class C:
        pass

    c = C()
    c.net, c.theta, c.X, c.y, c.N, c.P = net, theta, X, y, N, net.num_params
    return c


CLASSIFIER = _case((3, 4, 3), "categorical", seed=1)
CASES = [
    CLASSIFIER,
    _case((2, 3, 2, 2), "bernoulli", seed=2),
    _case((2, 3, 2), "gaussian", seed=3, activation="softplus"),
]


@pytest.mark.parametrize("c", CASES, ids=["categorical", "bernoulli", "gaussian"])
@pytest.mark.parametrize("fisher", ["true", "ggn", "empirical"])
def test_full_precision_is_N_F_plus_alpha(c, fisher):
    alpha = 0.7
    la = Laplace(c.net, c.theta, c.X, c.y, alpha, fisher=fisher)
    M = minifim.curvature_matrix(c.net, c.theta, c.X, c.y, fisher)
    A = c.N * M + alpha * np.eye(c.P)
    check_posterior(la, A, c.N, c.net.sizes[-1])


@pytest.mark.parametrize("c", CASES, ids=["categorical", "bernoulli", "gaussian"])
def test_diag_precision_is_diagonal_of_dense(c):
    alpha = 0.4
    full = Laplace(c.net, c.theta, c.X, c.y, alpha, structure="full").posterior_precision()
    la = Laplace(c.net, c.theta, c.X, c.y, alpha, structure="diag")
    # a diagonal of sums of squares (no cancellation), then one division or log per entry
    d = np.diag(full)
    tol = product_rtol(c.P + c.N * max(c.net.sizes[-1], 2)) + identity_tol()
    assert_close(la.posterior_precision(), np.diag(d), tol, "precision")
    check_close(la.posterior_covariance(), np.diag(1 / d), tol, "covariance")
    check_close(la.posterior_variance(), 1 / d, tol, "variance")
    check(abs(la.log_det_precision() - np.sum(np.log(d))), c.P * tol, "log det")


@pytest.mark.parametrize("c", CASES, ids=["categorical", "bernoulli", "gaussian"])
@pytest.mark.parametrize("bias", ["folded", "separate"])
def test_kfac_precision_blocks(c, bias):
    alpha = 0.9
    la = Laplace(c.net, c.theta, c.X, c.y, alpha, structure="kfac", bias=bias)
    F = minifim.kfac(c.net, c.theta, c.X, bias=bias)  # mean factors
    A = np.zeros((c.P, c.P))
    for sl, block in zip(c.net.layer_param_slices(), F.blocks()):
        A[sl, sl] = c.N * block
    A += alpha * np.eye(c.P)
    # block structure N G kron A + alpha I, by layer, with the folded/separate layout
    for l, sl in enumerate(c.net.layer_param_slices()):
        o, i = c.net.shapes[l]
        Gl, Al = F.G[l], F.A[l]
        if bias == "separate":
            assert close(A[sl, sl][: o * i, : o * i], c.N * np.kron(Gl, Al) + alpha * np.eye(o * i))
            assert close(A[sl, sl][o * i :, o * i :], c.N * Gl + alpha * np.eye(o))
    check_posterior(la, A, c.N, c.net.sizes[-1])
    V = np.random.default_rng(4).standard_normal((c.P, 3))
    # an independent implementation of the eigen-damped solve
    check_close(
        la.covariance_matvec(V[:, 0]),
        F.solve(V[:, 0], alpha / c.N) / c.N,
        posterior_bounds(A, c.N, c.net.sizes[-1])["covariance"],
        "K-FAC solve",
    )
    # the factors kept by the Laplace object carry N (reduction="sum"): a sum vs a mean * N
    assert_close(la.kfac_factors.G[0], c.N * F.G[0], identity_tol(ulps=2), "G carries N")


def test_kfac_equals_full_for_single_linear_gaussian_layer():
    case = BLR(C=3, seed=4)
    full = Laplace(case.net, case.mean(1.0), case.X, case.y, 1.0)
    kf = Laplace(case.net, case.mean(1.0), case.X, case.y, 1.0, structure="kfac")
    check_close(
        kf.posterior_covariance(),
        full.posterior_covariance(),
        solve_rtol(cond(full.posterior_precision()), case.net.num_params),
        "covariance",
    )
    assert abs(kf.log_marginal_likelihood() - full.log_marginal_likelihood()) <= 1e-10 * abs(
        full.log_marginal_likelihood()
    )


@pytest.mark.parametrize("curvature", ["full", "kfac", "diag"])
def test_samples_have_the_posterior_covariance(curvature):
    c = CLASSIFIER
    la = Laplace(c.net, c.theta, c.X, c.y, 2.0, structure=curvature)
    n = 20000
    T = la.sample(n, np.random.default_rng(2024))
    assert T.shape == (n, c.P)
    S = la.posterior_covariance()
    d = np.diag(S)
    emp_mean = T.mean(axis=0)
    assert np.all(np.abs(emp_mean - c.theta) <= 5 * np.sqrt(d / n))
    D = T - c.theta
    emp = D.T @ D / n
    # sd of a sample covariance entry: sqrt((S_ii S_jj + S_ij^2) / n); 5.5 sd over P^2 entries
    bound = 5.5 * np.sqrt((np.outer(d, d) + S**2) / n)
    assert np.all(np.abs(emp - S) <= bound)
    # whitened: A^{1/2} (theta - theta*) has identity covariance (trace within 5 sd)
    L = np.linalg.cholesky(la.posterior_precision())
    Wt = D @ L
    tr = np.trace(Wt.T @ Wt / n)  # sum of P independent chi^2_n / n: mean P, var 2 P / n
    assert abs(tr - c.P) <= 5 * math.sqrt(2 * c.P / n)
    # reproducible from a seed
    assert np.array_equal(la.sample(5, 7), la.sample(5, 7))


def test_wrong_covariance_would_fail_the_sample_bound():
    """The sampling bound above can fail: samples with a 10% inflated covariance violate it."""
    c = CLASSIFIER
    la = Laplace(c.net, c.theta, c.X, c.y, 2.0)
    n = 20000
    D = 1.1 * (la.sample(n, 2024) - c.theta)
    S = la.posterior_covariance()
    d = np.diag(S)
    bound = 5.5 * np.sqrt((np.outer(d, d) + S**2) / n)
    assert np.any(np.abs(D.T @ D / n - S) > bound)


# --- classification predictive ------------------------------------------------------------
@pytest.mark.parametrize("c", CASES[:2], ids=["categorical", "bernoulli"])
@pytest.mark.parametrize("curvature", ["full", "kfac", "diag"])
def test_glm_predictive_classification(c, curvature):
    la = Laplace(c.net, c.theta, c.X, c.y, 1.3, structure=curvature)
    Xs = np.random.default_rng(5).standard_normal((6, c.net.input_dim))
    J = minifim.output_jacobians(c.net, c.theta, Xs, backend="autograd")
    S = np.linalg.inv(la.posterior_precision())
    ref_cov = np.einsum("mcp,pq,mdq->mcd", J, S, J)
    f = c.net.forward(c.theta, Xs)
    mean, cov = la.functional_posterior(Xs)
    assert close(mean, f) and close(cov, ref_cov)
    kappa = 1 / np.sqrt(1 + np.pi / 8 * np.diagonal(ref_cov, axis1=1, axis2=2))
    z = f * kappa
    if c.net.likelihood.name == "categorical":
        ref = np.exp(z - z.max(axis=1, keepdims=True))
        ref /= ref.sum(axis=1, keepdims=True)
    else:
        ref = 1 / (1 + np.exp(-z))
    probs = la.predictive(Xs)
    assert close(probs, ref)
    if c.net.likelihood.name == "categorical":
        assert close(probs.sum(axis=1), np.ones(6))


def test_predictive_collapses_to_map_with_a_huge_prior_precision():
    c = CLASSIFIER
    la = Laplace(c.net, c.theta, c.X, c.y, 1e12)
    Xs = np.random.default_rng(6).standard_normal((5, 3))
    p_map = c.net.predict(c.theta, Xs)
    for kw in ({}, {"link_approx": "mc", "rng": 0}, {"pred_type": "nn", "rng": 0}):
        assert np.max(np.abs(la.predictive(Xs, **kw) - p_map)) < 1e-5


def test_sigmoid_predictive_routes_against_quadrature():
    """Logistic regression (linear in theta, so the GLM is exact): GLM with MC link and the
    nonlinear MC predictive both estimate E[sigmoid(f)], f ~ N(mu, s^2), computed here by
    Gauss-Hermite quadrature; the probit approximation is within its known ~0.02 error."""
    c = _case((2, 1), "bernoulli", N=15, seed=9, activation="identity")
    la = Laplace(c.net, c.theta, c.X, c.y, 0.05)
    Xs = np.array([[0.3, -0.2], [2.0, 1.0], [-1.5, 0.5]])
    mu, cov = la.functional_posterior(Xs)
    x, wq = np.polynomial.hermite_e.hermegauss(80)
    s = np.sqrt(cov[:, 0, 0])
    exact = (1 / (1 + np.exp(-(mu[:, :1] + s[:, None] * x[None])))) @ wq / np.sqrt(2 * np.pi)
    for n, kw in ((40000, {"link_approx": "mc"}), (8000, {"pred_type": "nn"})):
        p = la.predictive(Xs, n_draws=n, rng=3, **kw)[:, 0]
        assert np.all(np.abs(p - exact) <= 5 * np.sqrt(exact * (1 - exact) / n))
    probit = la.predictive(Xs)[:, 0]
    assert np.all(np.abs(probit - exact) < 0.02)
    assert np.any(np.abs(probit - exact) > 1e-4)  # an approximation, not exact


# --- MAP fitting ----------------------------------------------------------------------------
def test_fit_map_reaches_the_closed_form_map():
    case = BLR(C=2, seed=6)
    theta, info = fit_map(case.net, np.zeros(case.net.num_params), case.X, case.y, 2.5)
    assert np.max(np.abs(theta - case.mean(2.5))) <= 1e-7
    assert info["success"] and info["grad_norm"] < 1e-7
    mle, _ = fit_map(case.net, np.zeros(case.net.num_params), case.X, case.y, 0.0)
    ls = np.linalg.lstsq(case.Xt, case.y, rcond=None)[0].T  # (C, D + 1)
    ref = np.empty_like(mle)
    ref[case.flat] = ls.ravel()
    assert np.max(np.abs(mle - ref)) <= 1e-7


def test_fit_map_warns_when_not_converged():
    c = CLASSIFIER
    with pytest.warns(RuntimeWarning, match="gtol"):
        fit_map(c.net, c.theta, c.X, c.y, 1.0, max_iter=1)


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "alpha, err",
    [
        (0.0, ValueError),
        (-1.0, ValueError),
        (float("nan"), ValueError),
        ("1", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_bad_prior_precision(alpha, err):
    c = CLASSIFIER
    with pytest.raises(err, match="prior_precision"):
        Laplace(c.net, c.theta, c.X, c.y, alpha)
    la = Laplace(c.net, c.theta, c.X, c.y, 1.0)
    with pytest.raises(err, match="prior_precision"):
        la.with_prior_precision(alpha)
    if alpha is not None:  # None means "this object's alpha" in the evaluators
        with pytest.raises(err, match="prior_precision"):
            la.log_marginal_likelihood(alpha)
        with pytest.raises(err, match="prior_precision"):
            la.precision_eigenvalues(alpha)
        with pytest.raises(err, match="prior_precision"):
            fit_map(c.net, c.theta, c.X, c.y, -1.0 if alpha == 0.0 else alpha)


def test_bad_arguments():
    c = CLASSIFIER
    with pytest.raises(ValueError, match="structure"):  # "kron" is now laplace-torch's alias
        Laplace(c.net, c.theta, c.X, c.y, structure="kronecker")
    with pytest.raises(ValueError, match="fisher"):
        Laplace(c.net, c.theta, c.X, c.y, fisher="argmax")
    with pytest.raises(ValueError, match="bias"):
        Laplace(c.net, c.theta, c.X, c.y, structure="kfac", bias="none")
    with pytest.raises(ValueError, match="theta_map"):
        Laplace(c.net, c.theta[:-1], c.X, c.y)
    with pytest.raises(ValueError, match="X"):
        Laplace(c.net, c.theta, c.X[:, :2], c.y)
    with pytest.raises(ValueError, match="y"):
        Laplace(c.net, c.theta, c.X, c.y[:-1])
    with pytest.raises(TypeError, match="rng"):
        Laplace(c.net, c.theta, c.X, c.y, fisher="mc")
    la = Laplace(c.net, c.theta, c.X, c.y)
    with pytest.raises(ValueError, match="n"):
        la.sample(0, 1)
    with pytest.raises(TypeError, match="rng"):
        la.sample(3, None)
    with pytest.raises(ValueError, match="pred_type"):
        la.predictive(c.X, pred_type="laplace")
    with pytest.raises(ValueError, match="link_approx"):
        la.predictive(c.X, link_approx="bridge")
    with pytest.raises(TypeError, match="rng"):
        la.predictive(c.X, pred_type="nn")
    with pytest.raises(ValueError, match="X"):
        la.predictive(c.X[0])
    with pytest.raises(ValueError, match="v"):
        la.covariance_matvec(np.ones(c.P + 1))
    with pytest.raises(TypeError, match="v"):
        la.covariance_matvec("abc")
    with pytest.raises(AttributeError, match="kfac"):
        la.kfac_factors  # noqa: B018
    with pytest.raises(ValueError, match="theta_map"):
        Laplace(c.net, np.zeros(c.P), c.X, c.y).optimize_prior_precision()


def test_fisher_mc_runs_with_rng():
    c = CLASSIFIER
    a = Laplace(c.net, c.theta, c.X, c.y, fisher="mc", n_samples=3, rng=5)
    b = Laplace(c.net, c.theta, c.X, c.y, fisher="mc", n_samples=3, rng=5)
    assert np.array_equal(a.posterior_precision(), b.posterior_precision())


def test_dense_requests_over_the_memory_budget():
    c = CLASSIFIER
    la = Laplace(c.net, c.theta, c.X, c.y)
    small = 8 * c.P * c.P - 1
    with minifim.memory_limit(small):
        with pytest.raises(minifim.MemoryBudgetError, match="posterior_variance"):
            la.posterior_covariance()
        with pytest.raises(minifim.MemoryBudgetError, match="precision"):
            la.posterior_precision()
        with pytest.raises(minifim.MemoryBudgetError, match="structure='kfac'"):
            Laplace(c.net, c.theta, c.X, c.y, structure="full")
        # the cheap routes still work under the same budget
        kf = Laplace(c.net, c.theta, c.X, c.y, structure="kfac")
        assert kf.posterior_variance().shape == (c.P,)
        assert la.posterior_variance().shape == (c.P,)
        assert la.sample(2, 0).shape == (2, c.P)


# --- calibration --------------------------------------------------------------------------
def test_calibration_against_a_loop():
    rng = np.random.default_rng(0)
    logits = 2 * rng.standard_normal((300, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, 4, 300)
    probs[0] = [0.2, 0.2, 0.2, 0.4]  # confidence exactly on the edge 2/5: bin (1/5, 2/5]
    B = 5
    cal = minifim.methods.laplace.calibration(probs, y, B)
    edges = np.linspace(0, 1, B + 1)
    ece, counts = 0.0, []
    for b in range(B):
        members = [
            n
            for n in range(300)
            if (edges[b] < probs[n].max() <= edges[b + 1]) or (b == 0 and probs[n].max() == 0)
        ]
        counts.append(len(members))
        if members:
            acc = np.mean([np.argmax(probs[n]) == y[n] for n in members])
            conf = np.mean([probs[n].max() for n in members])
            ece += len(members) / 300 * abs(acc - conf)
            assert abs(cal.bin_accuracy[b] - acc) < 1e-14
            assert abs(cal.bin_confidence[b] - conf) < 1e-14
        else:
            assert np.isnan(cal.bin_accuracy[b])
    assert list(cal.bin_count) == counts and sum(counts) == 300
    assert abs(cal.ece - ece) < 1e-14


def test_calibration_of_calibrated_and_overconfident_predictions():
    rng = np.random.default_rng(1)
    n = 40000
    p1 = rng.uniform(0.5, 1.0, n)
    y = (rng.random(n) >= p1).astype(int)  # label 0 with probability p1: calibrated
    probs = np.stack([p1, 1 - p1], axis=1)
    assert minifim.methods.laplace.calibration(probs, y).ece < 0.02
    sharp = np.stack([np.minimum(1.0, p1 + 0.2), 1 - np.minimum(1.0, p1 + 0.2)], axis=1)
    assert minifim.methods.laplace.calibration(sharp, y).ece > 0.15


def test_calibration_bad_input():
    cal = minifim.methods.laplace.calibration
    with pytest.raises(ValueError, match="probs"):
        cal(np.array([[0.5, 0.6]]), np.array([0]))
    with pytest.raises(ValueError, match="y"):
        cal(np.array([[0.5, 0.5]]), np.array([2]))
    with pytest.raises(ValueError, match="y"):
        cal(np.array([[0.5, 0.5]]), np.array([0.0]))
    with pytest.raises(ValueError, match="n_bins"):
        cal(np.array([[0.5, 0.5]]), np.array([0]), 0)


# --- determinism across BLAS thread counts (issue 12, item 11) ----------------------------------
_THREAD_SCRIPT = r"""
import sys
import numpy as np
import minifim

out = sys.argv[1]
rng = np.random.default_rng(0)
net = minifim.MLP([12, 16, 6], activation="tanh")  # P = 208 + 102 = 310
X = rng.standard_normal((40, 12))
y = rng.integers(0, 6, 40)
theta = net.init(1)
res = {}
for curvature in ("full", "kfac", "diag"):
    la = minifim.Laplace(net, theta, X, y, prior_precision=0.5, structure=curvature)
    res[curvature] = la.sample(4, 123)
    res[curvature + "_eig"] = la.precision_eigenvalues()
    res[curvature + "_theta"] = la.theta_map
la = minifim.Laplace(net, theta, X, y, prior_precision=0.5, structure="diag")
res["link_mc"] = la.predictive(X[:8], link_approx="mc", n_draws=16, rng=5)
np.savez(out, **res)
"""


def _run_with_threads(tmp_path, threads: int):
    import os
    import subprocess
    import sys

    path = tmp_path / f"samples_{threads}.npz"
    env = dict(
        os.environ,
        OPENBLAS_NUM_THREADS=str(threads),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
    )
    subprocess.run(
        [sys.executable, "-c", _THREAD_SCRIPT, str(path)], check=True, env=env, timeout=300
    )
    return dict(np.load(path))


def test_posterior_samples_do_not_depend_on_the_blas_thread_count(tmp_path):
    # before: the full-curvature samples differed by O(1) between 1 and 2 threads (eigenvector
    # signs and rotations inside degenerate eigenspaces are not fixed by eigh); sampling through
    # the unique symmetric square root A^{-1/2} makes them continuous in A, so the thread count
    # changes them only by roundoff amplified by the conditioning of A
    from .tolerances import check, solve_rtol

    one, two = _run_with_threads(tmp_path, 1), _run_with_threads(tmp_path, 2)
    for curvature in ("full", "kfac", "diag"):
        w = one[curvature + "_eig"]
        kappa = float(w.max() / w.min())
        P = w.size
        dev1 = one[curvature] - one[curvature + "_theta"]
        dev2 = two[curvature] - two[curvature + "_theta"]
        # |delta A^{-1/2}| / |A^{-1/2}| <= 1/2 cond(A) |delta A| / |A| (Frechet derivative of
        # x^{-1/2}); |delta A| / |A| is a product / eigh roundoff c P eps
        bound = solve_rtol(kappa, P)
        err = float(np.linalg.norm(dev1 - dev2) / np.linalg.norm(dev1))
        check(err, bound, f"{curvature} samples across thread counts")
    np.testing.assert_allclose(one["link_mc"], two["link_mc"], rtol=0, atol=1e-8)


# --- structure objects and the renamed keyword (issue 13) ----------------------------------
def test_curvature_keyword_is_deprecated_and_equal():
    c = CLASSIFIER
    with pytest.warns(DeprecationWarning, match="'curvature' is deprecated.*'structure'"):
        old = Laplace(c.net, c.theta, c.X, c.y, 0.7, curvature="kfac")
    new = Laplace(c.net, c.theta, c.X, c.y, 0.7, structure="kfac")
    assert old.structure == new.structure == "kfac"
    np.testing.assert_array_equal(old.posterior_variance(), new.posterior_variance())
    with pytest.raises(TypeError, match="both"):
        Laplace(c.net, c.theta, c.X, c.y, curvature="kfac", structure="kfac")


@pytest.mark.parametrize("c", CASES, ids=["categorical", "bernoulli", "gaussian"])
def test_block_precision_is_the_dense_blocks(c):
    alpha = 0.6
    la = Laplace(c.net, c.theta, c.X, c.y, alpha, structure="block")
    assert isinstance(la.curvature, minifim.BlockDiagonal)
    full = Laplace(c.net, c.theta, c.X, c.y, alpha).posterior_precision()
    A = np.zeros_like(full)
    for sl in c.net.layer_param_slices():
        A[sl, sl] = full[sl, sl]
    np.testing.assert_array_equal(la.posterior_precision(), A)  # the same sums, entry by entry
    S = la.posterior_covariance()
    check_close(S, np.linalg.inv(A), solve_rtol(cond(A), c.P), "block covariance")
    check(
        abs(la.log_det_precision() - np.linalg.slogdet(A)[1]),
        logdet_atol(np.linalg.eigvalsh(A), c.P),
        "block log det",
    )


@pytest.mark.parametrize("likelihood", ["categorical", "gaussian"])
def test_nn_predictive_batched_equals_loop_over_draws(likelihood):
    """The batched forward over parameter draws against one ``net.forward`` per draw with
    the same draws (same seed): sums of ``S`` terms in a different order, ``product_rtol``."""
    from .tolerances import product_rtol

    rng = np.random.default_rng(4)
    net = minifim.MLP([3, 5, 2], likelihood=likelihood, sigma=0.5)
    theta, X = net.init(rng), rng.standard_normal((12, 3))
    y = net.likelihood.sample(net.forward(theta, X), rng)
    la = Laplace(net, theta, X, y, 2.0)
    Xs, S = rng.standard_normal((6, 3)), 37
    out = la.predictive(Xs, pred_type="nn", n_draws=S, rng=5)
    thetas = la.sample(S, np.random.default_rng(5))
    fs = np.stack([net.forward(t, Xs) for t in thetas])
    if likelihood == "categorical":
        ref = np.mean([net.likelihood.mean(f) for f in fs], axis=0)
        assert_close(out, ref, product_rtol(S + net.num_params, 4.0))
        return
    mean, cov = out
    d = fs - fs.mean(axis=0)
    ref_cov = np.einsum("smc,smd->mcd", d, d) / S + net.likelihood.sigma**2 * np.eye(2)
    assert_close(mean, fs.mean(axis=0), product_rtol(S + net.num_params, 4.0))
    assert_close(cov, ref_cov, product_rtol(S + net.num_params, 16.0))
