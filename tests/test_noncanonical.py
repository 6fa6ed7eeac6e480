"""Likelihoods whose Fisher is not the GGN (issue 15): the heteroscedastic Gaussian (log-variance
and natural parameterisations) and the Poisson likelihood with the softplus link, against the
canonical Poisson (log link).

Independent routes: ``Lambda = E_y[g g^T]`` and ``E_y[H_f(y)] = Lambda`` by Gauss-Hermite
quadrature built here (exact for the polynomial moments of the Gaussian scores) and by the
truncated Poisson series with a computed tail bound below 1e-15; ``hessian_outputs`` and the
scores against autograd; ``log_prob`` against ``scipy.stats``; sampling moments by z-scores.
"""

import math
import warnings

import autograd
import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from numpy.polynomial.hermite_e import hermegauss

import minifim
from minifim.core.likelihoods import HeteroscedasticGaussian, Poisson, get_likelihood

from .cases import assert_close
from .tolerances import (
    EPS,
    cg_rtol,
    check,
    check_close,
    check_elementwise,
    cond,
    curvature_rtol,
    identity_tol,
    rel_err,
    solve_rtol,
)

RNG = np.random.default_rng(15)
N, C = 5, 2
# outputs (N, 2C): means, then log-variances (or natural parameters)
F_HET = np.concatenate([1.5 * RNG.standard_normal((N, C)), RNG.uniform(-2, 2, (N, C))], axis=1)
F_POI = RNG.uniform(-3.0, 3.0, (N, C))

LIKS = {
    "het-logvar": HeteroscedasticGaussian("logvar"),
    "het-natural": HeteroscedasticGaussian("natural"),
    "poisson-log": Poisson("log"),
    "poisson-softplus": Poisson("softplus"),
}


def outputs(name):
    return F_HET if name.startswith("het") else F_POI


@pytest.fixture(params=sorted(LIKS))
def case(request):
    return LIKS[request.param], outputs(request.param)


def no_warnings():
    """Context: any warning or floating-point overflow/invalid/divide is an error."""

    class _Ctx:
        def __enter__(self):
            self.w = warnings.catch_warnings()
            self.w.__enter__()
            warnings.simplefilter("error")
            self.e = np.errstate(over="raise", invalid="raise", divide="raise")
            self.e.__enter__()

        def __exit__(self, *exc):
            self.e.__exit__(*exc)
            return self.w.__exit__(*exc)

    return _Ctx()


def outer(a, b=None):
    b = a if b is None else b
    return a[..., :, None] * b[..., None, :]


# --- independent expectations over the labels ------------------------------------------------
def gauss_expectation(lik, F, h, points=12):
    """``E_{y ~ p(y | f_n)}[h(y)]`` by a tensor Gauss-Hermite rule over the ``C`` outputs.

    Built from the mean and standard deviation written out here (not the likelihood's own
    ``outcomes``); ``points = 12`` is exact for polynomials of degree <= 23 per output.
    Returns ``(E[h], E[|h|])``: the second bounds the rounding of the weighted sum.
    """
    Cy = F.shape[1] // 2
    f1, f2 = F[:, :Cy], F[:, Cy:]
    if lik.parameterization == "natural":
        mu, sd = f1 * np.exp(-f2), np.exp(-0.5 * f2)
    else:
        mu, sd = f1, np.exp(0.5 * f2)
    x, w = hermegauss(points)
    w = w / math.sqrt(2 * math.pi)
    acc = abs_acc = 0.0
    for idx in np.ndindex(*([points] * Cy)):
        y = mu + sd * x[list(idx)]
        weight = float(np.prod(w[list(idx)]))
        val = h(y)
        acc = acc + weight * val
        abs_acc = abs_acc + weight * np.abs(val)
    return acc, abs_acc


def poisson_series(lik, F, h, tail_target=1e-17):
    """``E_{y ~ Poisson(r(f))}[h(y)]`` by the series truncated at ``K``, one output at a time
    (``F: (N, 1)``), with the tail ``sum_{y >= K} p(y) (y + 1)^2`` bounded by the ratio test.

    ``h(y)`` must satisfy ``|h(y)| <= A (y + 1)^2`` with ``A`` returned by the caller's ``h``
    (here: the scores squared and the Hessian). Returns ``(E[h], E[|h|], tail bound)``.
    """
    r = lik.mean(F)[:, 0]
    K = int(np.ceil(r.max() + 20 * np.sqrt(r.max()) + 30))
    ys = np.arange(K, dtype=float)
    logpmf = ys[None, :] * np.log(r)[:, None] - r[:, None] - scipy.special.gammaln(ys + 1)[None]
    pmf = np.exp(logpmf)  # (N, K)
    # tail: t(y) = p(y) (y + 1)^2 has t(y + 1) / t(y) <= q = r / (K + 1) ((K + 2) / (K + 1))^2
    q = r / (K + 1) * ((K + 2) / (K + 1)) ** 2
    assert np.all(q < 0.5)
    tK = scipy.stats.poisson.pmf(K, r) * (K + 1) ** 2
    tail = tK / (1 - q)
    acc = abs_acc = 0.0
    for k in range(K):
        yk = np.full((F.shape[0], 1), float(k))
        val = h(yk)
        acc = acc + pmf[:, k, None, None] * val
        abs_acc = abs_acc + pmf[:, k, None, None] * np.abs(val)
    # relative rounding of each pmf: the exponent's |y log r| + r + gammaln(y + 1) ulps
    exponent = np.abs(ys[None] * np.log(r)[:, None]) + r[:, None] + scipy.special.gammaln(ys + 1)
    pmf_err = (exponent.max(axis=1) + 4) * EPS
    return acc, abs_acc, tail, pmf_err, K


# --- the closed forms against autograd and scipy ---------------------------------------------
def test_log_prob_against_scipy(case):
    lik, F = case
    y = lik.sample(F, 0)
    if lik.name == "heteroscedastic":
        mu, logvar = lik.mean_and_log_variance(F)
        ref = scipy.stats.norm(mu, np.exp(0.5 * logvar)).logpdf(y).sum(axis=1)
    else:
        ref = scipy.stats.poisson(lik.mean(F)).logpmf(y).sum(axis=1)
    assert_close(lik.log_prob(F, y), ref, 1e-13)


def test_score_and_hessian_against_autograd(case):
    """``grad_log_prob`` and ``hessian_outputs(F, y)`` against autograd of ``log_prob``, for
    several labels; the signed factors reproduce ``H`` (``P^T P - M^T M``)."""
    lik, F = case
    for seed in range(3):
        y = lik.sample(F, seed)
        g = lik.grad_log_prob(F, y)
        H = lik.hessian_outputs(F, y)
        P, M = lik.hessian_factors(F, y)
        assert H.shape == (N, F.shape[1], F.shape[1])
        assert_close(np.einsum("nkc,nkd->ncd", P, P) - np.einsum("nkc,nkd->ncd", M, M), H, 1e-14)
        if lik.hessian_psd:
            assert M.shape[1] == 0
        for n in range(N):

            def nll(f, n=n, y=y):
                return -lik.log_prob(f[None, :], y[n : n + 1])[0]

            assert_close(g[n], -autograd.grad(nll)(F[n]), 1e-14, f"score {n}")
            assert_close(H[n], autograd.hessian(nll)(F[n]), 1e-14, f"hessian {n}")


def test_heteroscedastic_closed_forms():
    """``Lambda = diag(1/sigma^2, 1/2)`` per output and ``det H = -(y - mu)^2 / (2 sigma^4)``
    (the issue's formulas, log-variance coordinates); natural: ``det H = (y^2 - mu^2) / 2``."""
    lik = LIKS["het-logvar"]
    mu, s = F_HET[:, :C], F_HET[:, C:]
    Lam = lik.fisher_outputs(F_HET)
    diag = np.concatenate([np.exp(-s), np.full_like(s, 0.5)], axis=1)
    assert_close(Lam, np.stack([np.diag(d) for d in diag]), 1e-15)
    y = lik.sample(F_HET, 1)
    H = lik.hessian_outputs(F_HET, y)
    for c in range(C):
        blk = H[:, [c, C + c]][:, :, [c, C + c]]
        det = np.linalg.det(blk)
        ref = -((y[:, c] - mu[:, c]) ** 2) / (2 * np.exp(2 * s[:, c]))
        assert_close(det, ref, 1e-13, f"det of block {c}")
        assert np.all(np.linalg.eigvalsh(blk)[:, 0] < 0)  # indefinite for y != mu
    lik = LIKS["het-natural"]
    H = lik.hessian_outputs(F_HET, y)
    mu = F_HET[:, :C] * np.exp(-F_HET[:, C:])
    for c in range(C):
        blk = H[:, [c, C + c]][:, :, [c, C + c]]
        assert_close(np.linalg.det(blk), 0.5 * (y[:, c] ** 2 - mu[:, c] ** 2), 1e-12)


def test_poisson_softplus_closed_forms():
    """Softplus rate ``log(1 + e^f)``: ``Lambda = sigmoid(f)^2 / r``;
    ``H(y) = r'' - y (log r)''`` with ``(log r)''`` by autograd of the composition."""
    lik = LIKS["poisson-softplus"]
    s = scipy.special.expit(F_POI)
    r = np.log1p(np.exp(F_POI))
    assert_close(np.diagonal(lik.fisher_outputs(F_POI), axis1=1, axis2=2), s * s / r, 1e-14)
    d2 = np.vectorize(autograd.grad(autograd.grad(lambda f: np.log(np.log1p(np.exp(f))))))
    y = lik.sample(F_POI, 2)
    ref = s * (1 - s) - y * d2(F_POI)
    assert_close(np.diagonal(lik.hessian_outputs(F_POI, y), axis1=1, axis2=2), ref, 1e-13)


# --- Lambda = E[g g^T], E[g] = 0, E[H(y)] = Lambda (quadrature / series) ----------------------
@pytest.mark.parametrize("name", ["het-logvar", "het-natural"])
def test_expectations_heteroscedastic(name):
    """Gauss-Hermite with 12 nodes per output (built here) is exact for the score (degree 2 in
    y), ``g g^T`` (degree 4) and ``H(y)`` (degree 2): the errors are roundings only, bounded by
    ``64 EPS E|h|`` (a few dozen operations per node)."""
    lik = LIKS[name]
    F = F_HET
    Lam = lik.fisher_outputs(F)
    total, _ = gauss_expectation(lik, F, lambda y: np.ones(N))
    check(np.abs(total - 1).max(), 64 * EPS, "weights sum to one")
    Eg, Eg_abs = gauss_expectation(lik, F, lambda y: lik.grad_log_prob(F, y))
    check_elementwise(Eg, np.zeros_like(Eg), 64 * EPS * Eg_abs + 1e-300, f"{name} E[g] = 0")
    Egg, Egg_abs = gauss_expectation(lik, F, lambda y: outer(lik.grad_log_prob(F, y)))
    check_elementwise(Lam, Egg, 64 * EPS * (Egg_abs + np.abs(Lam)), f"{name} E[g g^T]")
    EH, EH_abs = gauss_expectation(lik, F, lambda y: lik.hessian_outputs(F, y))
    check_elementwise(Lam, EH, 64 * EPS * (EH_abs + np.abs(Lam)), f"{name} E[H(y)]")
    # and Fisher != GGN(y) at a label
    y = lik.sample(F, 3)
    assert np.abs(lik.hessian_outputs(F, y) - Lam).max() > 0.1


@pytest.mark.parametrize("link", ["log", "softplus"])
def test_expectations_poisson_series(link):
    """The truncated series ``sum_{y < K} p(y) h(y)``: its tail is bounded by the ratio test
    (below 1e-15 relative here), each ``p(y)`` carries the rounding of its exponent."""
    lik = LIKS[f"poisson-{link}"]
    F = np.array([[-6.0], [-1.0], [0.3], [2.0], [3.4]])  # rates 2.5e-3 .. 30 (log link)
    Lam = np.diagonal(lik.fisher_outputs(F), axis1=1, axis2=2)[:, 0]
    rp = np.exp(F[:, 0]) if link == "log" else scipy.special.expit(F[:, 0])
    r = lik.mean(F)[:, 0]
    # |g|^2 <= (r'/r)^2 (y + r)^2 <= A (y + 1)^2 and |H| <= (r'' + kappa) (y + 1)
    A_g = (rp / r) ** 2 * max(1.0, r.max()) ** 2
    H1 = lik.hessian_outputs(F, np.ones_like(F))[:, 0, 0]  # r'' + kappa
    for what, h, A, scale in [
        ("E[1]", lambda y: np.ones((len(F), 1, 1)), np.ones(len(F)), np.ones(len(F))),
        ("E[g]", lambda y: lik.grad_log_prob(F, y)[:, :, None], np.sqrt(A_g), np.sqrt(Lam)),
        ("E[g g]", lambda y: outer(lik.grad_log_prob(F, y)), A_g, Lam),
        ("E[H]", lambda y: lik.hessian_outputs(F, y), Lam + H1, Lam),
    ]:
        E, Eabs, tail, pmf_err, K = poisson_series(lik, F, h)
        ref = {"E[1]": np.ones(len(F)), "E[g]": np.zeros(len(F))}.get(what, Lam)
        tail_bound = A * tail
        assert np.all(tail_bound < 1e-15 * scale), (what, tail_bound / scale)
        atol = (pmf_err + K * EPS) * Eabs[:, 0, 0] + tail_bound + 8 * EPS * np.abs(ref)
        check_elementwise(E[:, 0, 0], ref, atol, f"poisson {link} {what}")
    if link == "softplus":  # not canonical: H(y) differs from Lambda at every label but one
        y = np.array([[0.0], [3.0], [0.0], [10.0], [1.0]])
        assert np.all(np.abs(lik.hessian_outputs(F, y)[:, 0, 0] / Lam - 1) > 1e-3)


def test_canonical_poisson_fisher_is_ggn_is_expected_hessian():
    """Log link: ``H_f(y) = e^f = Lambda`` for every label (and without a label)."""
    lik = LIKS["poisson-log"]
    assert lik.canonical and lik.hessian_psd
    Lam = lik.fisher_outputs(F_POI)
    for seed in range(3):
        y = lik.sample(F_POI, seed)
        assert_close(lik.hessian_outputs(F_POI, y), Lam, 0.0)
    assert_close(lik.hessian_outputs(F_POI), Lam, 0.0)
    assert_close(np.diagonal(Lam, axis1=1, axis2=2), np.exp(F_POI), 0.0)


def test_outcomes_heteroscedastic():
    """The likelihood's own 5-point Gauss-Hermite outcomes integrate the Fisher exactly."""
    lik = LIKS["het-logvar"]
    w, Y = lik.outcomes(F_HET)
    assert w.shape == (N, 25) and Y.shape == (N, 25, C)
    assert lik.num_outcomes(2 * C) == 25
    g = np.stack([lik.grad_log_prob(F_HET, Y[:, o]) for o in range(25)], axis=1)
    assert_close(np.einsum("no,noc,nod->ncd", w, g, g), lik.fisher_outputs(F_HET), 1e-13)
    with pytest.raises(ValueError, match="unbounded support"):
        LIKS["poisson-log"].num_outcomes(2)


# --- sampling -------------------------------------------------------------------------------
def test_sample_moments():
    """z-scores below 5 for the mean (variance ``sigma^2 / n``, Poisson ``r / n``) and the
    variance (``2 sigma^4 / (n - 1)``; Poisson ``Var[s^2] ~ (r + 2 r^2) / n``)."""
    n = 4000
    for name in ("het-logvar", "het-natural"):
        lik = LIKS[name]
        ys = lik.sample(F_HET, np.random.default_rng(5), n_samples=n)
        assert ys.shape == (n, N, C)
        mu, logvar = lik.mean_and_log_variance(F_HET)
        var = np.exp(logvar)
        assert_close(lik.variance(F_HET), var, 1e-15)
        assert np.abs((ys.mean(axis=0) - mu) / np.sqrt(var / n)).max() < 5
        zv = (ys.var(axis=0, ddof=1) - var) / (var * np.sqrt(2 / (n - 1)))
        assert np.abs(zv).max() < 5
    for link in ("log", "softplus"):
        lik = LIKS[f"poisson-{link}"]
        ys = lik.sample(F_POI, np.random.default_rng(6), n_samples=n)
        assert ys.shape == (n, N, C) and np.all(ys == np.round(ys)) and ys.min() >= 0
        r = lik.mean(F_POI)
        assert np.abs((ys.mean(axis=0) - r) / np.sqrt(r / n)).max() < 5
        zv = (ys.var(axis=0, ddof=1) - r) / np.sqrt((r + 2 * r * r) / n)
        assert np.abs(zv).max() < 5
        assert_close(lik.most_likely(F_POI), np.floor(r), 0.0)


# --- numerical safety (issue item 3) ----------------------------------------------------------
def test_heteroscedastic_log_variances_30():
    lik = LIKS["het-logvar"]
    F = np.array([[0.0, 1e3, -30.0, 30.0], [5.0, -5.0, 30.0, -30.0]])
    y = np.array([[1e-3, 1e3 + 1e6], [-1e4, 1e4]])
    with no_warnings():
        for lk in (lik, LIKS["het-natural"]):
            parts = [
                lk.log_prob(F, y),
                lk.grad_log_prob(F, y),
                lk.fisher_outputs(F),
                lk.fisher_factor(F),
                lk.hessian_outputs(F, y),
                *lk.hessian_factors(F, y),
                lk.sample(F, 0, n_samples=2),
            ]
            assert all(np.all(np.isfinite(p)) for p in parts)
    # the log-density of a point 1e-3 away from the mean with sigma = e^-15
    ref = scipy.stats.norm(0.0, np.exp(-15.0)).logpdf(1e-3)
    assert_close(lik.log_prob(F[:1, [0, 2]], y[:1, :1]), [ref], 1e-14)


def test_poisson_rates_1e8_and_counts_1e6():
    """Rates 1e-8 .. 1e8 and counts up to 1e6: finite everywhere, ``log_prob`` equal to
    ``scipy.stats.poisson.logpmf``, the softplus rate exact (``log r = f + log1p(-e^f/2 + ...)``
    for very negative f, and for large ``f`` NOT the identity: ``r - f = log1p(e^-f)``)."""
    rates = np.array([1e-8, 1e-3, 1.0, 1e3, 1e8])
    y = np.array([0.0, 1e6, 3.0, 1e3, 1e6])[:, None]
    for link in ("log", "softplus"):
        lik = LIKS[f"poisson-{link}"]
        # softplus^-1(r) = log(expm1(r)) = r + log1p(-e^-r)
        f = np.log(rates) if link == "log" else rates + np.log(-np.expm1(-rates))
        F = f[:, None]
        with no_warnings():
            parts = [
                lik.log_prob(F, y),
                lik.grad_log_prob(F, y),
                lik.fisher_outputs(F),
                lik.fisher_factor(F),
                lik.hessian_outputs(F, y),
                *lik.hessian_factors(F, y),
                lik.sample(F, 0, n_samples=2),
            ]
        assert all(np.all(np.isfinite(p)) for p in parts)
        assert_close(lik.mean(F)[:, 0], rates, 1e-13)
        # logpmf has |y log r| ~ 2e7 terms: ulps of those
        lp = lik.log_prob(F, y)
        ref = scipy.stats.poisson(rates).logpmf(y[:, 0])
        check_elementwise(lp, ref, 8 * EPS * (np.abs(y[:, 0] * np.log(rates)) + rates + 1e7))
    lik = LIKS["poisson-softplus"]
    F = np.array([[-800.0], [-40.0], [40.0], [800.0]])
    with no_warnings():
        log_r = lik.log_rate(F)[:, 0]
        Lam = lik.fisher_outputs(F)[:, 0, 0]
        H1 = lik.hessian_outputs(F, np.ones_like(F))[:, 0, 0]
        lp = lik.log_prob(F, np.ones_like(F))
    assert np.all(np.isfinite(log_r)) and np.all(np.isfinite(lp))
    # f = -800: r = e^-800 (1 - e^-800 / 2) underflows, its log does not
    check(abs(log_r[0] + 800.0), identity_tol(800.0), "log r at f = -800")
    check(abs(log_r[1] - math.log(math.log1p(math.exp(-40.0)))), identity_tol(40.0), "f = -40")
    check(abs(np.exp(log_r[2]) - (40.0 + math.log1p(math.exp(-40.0)))), identity_tol(40.0), "40")
    # Lambda ~ e^f at -inf, ~ 1 / f at +inf; H(y=1) = r'' + kappa with kappa ~ e^f / 2, 1 / f^2
    assert Lam[0] == 0.0 and Lam[3] > 0 and abs(Lam[3] * 800 - 1) < 1e-2
    assert abs(H1[1] / (1.5 * math.exp(-40.0)) - 1) < 1e-12
    assert abs(H1[3] * 800**2 - 1) < 1e-2


def test_log_x_minus_log1p_exact():
    """``log(e^f - log(1 + e^f))`` (the softplus Hessian's kappa) against a long-double-free
    reference: the alternating series in exact rational arithmetic for small x, direct
    evaluation where no cancellation occurs."""
    from fractions import Fraction

    from minifim.core.likelihoods import _log_x_minus_log1p

    for f in [-700.0, -50.0, -5.0, -1.5, -1.3, -0.5, 0.0, 0.7, 5.0, 50.0, 700.0]:
        got = _log_x_minus_log1p(np.array([f]))[0]
        if f <= -1.3:
            x = Fraction(math.exp(f))
            series = sum(Fraction((-1) ** k, k) * x ** (k - 2) for k in range(2, 40))
            ref = 2 * f + math.log(float(series))
        elif f <= 0:
            xm = math.exp(f)
            ref = math.log(xm - math.log1p(xm))
        else:
            ref = f + math.log1p(-(f + math.log1p(math.exp(-f))) * math.exp(-f))
        check(abs(got - ref), identity_tol(max(abs(ref), 1.0), 16), f"f = {f}")


# --- bad input ---------------------------------------------------------------------------------
def test_poisson_refuses_bad_counts():
    lik = LIKS["poisson-softplus"]
    F = F_POI
    good = lik.sample(F, 0)
    for y, err, msg in [
        (-good - 1, ValueError, "y: expected non-negative Poisson counts, received a value -"),
        (good + 0.5, ValueError, "y: expected integer Poisson counts, received a non-integer"),
        (good[:, 0], ValueError, r"y: expected counts of shape \(5, 2\).*y\[:, None\]"),
        (np.full_like(good, np.nan), ValueError, "y: expected finite counts"),
        (None, TypeError, "y: expected non-negative integer counts"),
        (good.astype(complex), TypeError, "y: expected integer counts"),
    ]:
        for method in ("log_prob", "grad_log_prob", "hessian_outputs"):
            if y is None and method == "hessian_outputs":
                msg = "y: the poisson.* non-canonical link"
            with pytest.raises(err, match=msg):
                getattr(lik, method)(F, y)
    # integer arrays and integer-valued floats are both counts
    assert_close(lik.log_prob(F, good.astype(np.int64)), lik.log_prob(F, good), 0.0)


def test_heteroscedastic_refuses_odd_widths_and_wrong_targets():
    lik = LIKS["het-logvar"]
    with pytest.raises(ValueError, match="F: the heteroscedastic likelihood needs 2C outputs"):
        lik.fisher_outputs(F_HET[:, :3])
    with pytest.raises(ValueError, match=r"y: expected real targets .*shape \(5, 2\)"):
        lik.log_prob(F_HET, np.zeros((N, 2 * C)))
    with pytest.raises(ValueError, match="sizes: the heteroscedastic likelihood needs an even"):
        minifim.MLP([2, 3], likelihood="heteroscedastic")
    with pytest.raises(ValueError, match="parameterization: expected one of"):
        HeteroscedasticGaussian("variance")


@pytest.mark.parametrize("name", ["het-logvar", "het-natural", "poisson-softplus"])
def test_missing_y_for_noncanonical_hessian(name):
    lik = LIKS[name]
    assert not lik.canonical
    with pytest.raises(TypeError, match="y: the .* non-canonical link.*pass the targets y"):
        lik.hessian_outputs(outputs(name))
    with pytest.raises(TypeError, match="y: the .* non-canonical"):
        lik.hessian_factors(outputs(name))


def test_link_and_parameterization_keywords():
    assert get_likelihood("poisson", link="softplus") == Poisson("softplus")
    assert get_likelihood("poisson") == Poisson("log")
    assert get_likelihood("heteroscedastic", parameterization="natural").natural
    for lik in LIKS.values():
        assert get_likelihood(**lik.config()) == lik
    net = minifim.MLP([2, 3, 1], likelihood="poisson", link="softplus")
    assert net.likelihood == Poisson("softplus")
    assert minifim.MLP(**net.config()).likelihood == net.likelihood
    assert "link='softplus'" in repr(net)
    het = minifim.MLP([2, 3, 4], likelihood="heteroscedastic", parameterization="natural")
    assert het.target_dim == 2 and het.output_dim == 4
    assert minifim.MLP(**het.config()).likelihood == het.likelihood
    with pytest.raises(ValueError, match="link: only the poisson likelihood"):
        get_likelihood("gaussian", link="softplus")
    with pytest.raises(ValueError, match="link: expected one of"):
        get_likelihood("poisson", link="identity")
    with pytest.raises(ValueError, match="parameterization: only the heteroscedastic"):
        minifim.MLP([2, 2], likelihood="poisson", parameterization="natural")
    with pytest.raises(ValueError, match="link: .* carries its own link"):
        get_likelihood(Poisson("log"), link="softplus")
    # the canonical likelihoods' config is unchanged (fixtures and saved models rebuild)
    assert minifim.MLP([2, 2]).config() == {
        "sizes": [2, 2],
        "activation": "tanh",
        "likelihood": "categorical",
        "sigma": 1.0,
    }


# --- curvature: GGN(y) = J^T H_f(y) J, E_y[GGN(y)] = F, structures, routes ---------------------
NETS = {
    "het-logvar": dict(sizes=(2, 4, 4), likelihood="heteroscedastic"),
    "het-natural": dict(sizes=(2, 4, 2), likelihood="heteroscedastic", parameterization="natural"),
    "poisson-log": dict(sizes=(2, 4, 2), likelihood="poisson"),
    "poisson-softplus": dict(sizes=(2, 4, 2), likelihood="poisson", link="softplus"),
    "poisson-softplus-1": dict(sizes=(2, 3, 1), likelihood="poisson", link="softplus"),
}


class NetCase:
    """A tiny model with its inputs and model-drawn labels (``P <= 34``, ``N = 4``)."""

    def __init__(self, name, N=4, seed=0):
        kw = dict(NETS[name])
        sizes = kw.pop("sizes")
        rng = np.random.default_rng(seed)
        self.name = name
        self.net = minifim.MLP(sizes, "tanh", **kw)
        self.theta = self.net.init(rng)
        self.X = 1.3 * rng.standard_normal((N, sizes[0]))
        self.F = self.net.forward(self.theta, self.X)
        self.y = self.net.likelihood.sample(self.F, rng)
        self.N, self.P = N, self.net.num_params

    def jacobians(self):
        """``J: (N, C, P)`` by autograd of the forward pass (independent of backprop)."""
        return autograd.jacobian(lambda th: self.net.apply(th, self.X))(self.theta)

    def rtol(self, c=1.0):
        return curvature_rtol(self, c)


_NET_CASES = {}


def net_case(name):
    if name not in _NET_CASES:
        _NET_CASES[name] = NetCase(name)
    return _NET_CASES[name]


@pytest.fixture(params=sorted(set(NETS) - {"poisson-softplus-1"}))
def ncase(request):
    return net_case(request.param)


def test_ggn_is_jacobian_sandwich_of_the_label_hessian(ncase):
    """``ggn(net, theta, X, y) = 1/N sum_n J_n^T H_f(y_n) J_n`` with ``J`` by autograd and
    ``H_f(y)`` by autograd of ``-log p``: the signed assembly (two factored sums) against the
    dense sandwich."""
    net, theta, X, y = ncase.net, ncase.theta, ncase.X, ncase.y
    J = ncase.jacobians()
    lik = net.likelihood
    H = np.stack(
        [
            autograd.hessian(lambda f, n=n: -lik.log_prob(f[None], y[n : n + 1])[0])(ncase.F[n])
            for n in range(ncase.N)
        ]
    )
    ref = np.einsum("ncp,ncd,ndq->pq", J, H, J) / ncase.N
    G = minifim.ggn(net, theta, X, y)
    assert_close(G, ref, ncase.rtol(4), "ggn vs J^T H J")
    assert_close(G, G.T, 0.0, "symmetric")
    Lam = lik.fisher_outputs(ncase.F)
    assert_close(
        minifim.true_fisher(net, theta, X),
        np.einsum("ncp,ncd,ndq->pq", J, Lam, J) / 4,
        ncase.rtol(4),
        "true Fisher vs J^T Lambda J",
    )
    if lik.canonical:  # Fisher = GGN, with or without labels
        assert_close(G, minifim.true_fisher(net, theta, X), ncase.rtol(4))
        assert_close(minifim.ggn(net, theta, X), G, ncase.rtol(4))
    else:  # Fisher != GGN(y)
        F = minifim.true_fisher(net, theta, X)
        assert np.abs(G - F).max() > 1e-3 * np.abs(F).max()
    w = np.linalg.eigvalsh(G)
    if lik.hessian_psd:
        assert minifim.curvature_is_psd(net, "ggn")
        assert w[0] > -ncase.rtol(4) * np.abs(w).max()
    else:  # heteroscedastic: indefinite at sampled labels (beyond any rounding)
        assert not minifim.curvature_is_psd(net, "ggn")
        assert w[0] < -1e3 * ncase.rtol(4) * w[-1]


@pytest.mark.parametrize("name", ["het-logvar", "het-natural"])
def test_expected_ggn_is_the_fisher_by_quadrature(name):
    """``E_{y ~ p_theta}[GGN(y)] = F``: the same Gauss-Hermite node for every sample (the GGN is
    a sum of per-sample terms, so the tensor rule over samples is not needed); 5 nodes are
    exact for ``H_f(y)`` (degree 2 in y)."""
    ncase = net_case(name)
    net, theta, X = ncase.net, ncase.theta, ncase.X
    lik = net.likelihood
    mu, logvar = lik.mean_and_log_variance(ncase.F)
    sd = np.exp(0.5 * logvar)
    x, w = hermegauss(5)
    w = w / math.sqrt(2 * math.pi)
    Cy = mu.shape[1]
    EG = 0.0
    for idx in np.ndindex(*([5] * Cy)):
        y = mu + sd * x[list(idx)]
        EG = EG + float(np.prod(w[list(idx)])) * minifim.ggn(net, theta, X, y)
    F = minifim.true_fisher(net, theta, X)
    assert_close(EG, F, ncase.rtol(16), "E_y[GGN(y)] = F")


def test_expected_ggn_is_the_fisher_poisson_series():
    """Softplus link: ``sum_k p_n(k) GGN_n(k)`` over the counts (truncated with a tail below
    1e-15 of the largest rate's moment), per sample, equals the true Fisher."""
    ncase = net_case("poisson-softplus-1")
    net, theta, X = ncase.net, ncase.theta, ncase.X
    r = net.likelihood.mean(ncase.F)  # (N, 1)
    K = int(np.ceil(r.max() + 20 * np.sqrt(r.max()) + 30))
    assert scipy.stats.poisson.sf(K - 1, r.max()) * (K + 1) < 1e-15
    EG = np.zeros((ncase.P, ncase.P))
    for n in range(ncase.N):
        pmf = scipy.stats.poisson.pmf(np.arange(K)[:, None], r[n][None, :])  # (K, C)
        for idx in np.ndindex(*([K] * r.shape[1])):
            weight = float(np.prod(pmf[list(idx), range(r.shape[1])]))
            if weight < 1e-30:
                continue
            y = np.array([idx], dtype=float)
            EG += weight * minifim.ggn(net, theta, X[n : n + 1], y) / ncase.N
    assert_close(EG, minifim.true_fisher(net, theta, X), ncase.rtol(16) + 1e-15, "E[GGN] = F")


def test_structures_of_the_signed_ggn(ncase):
    """diagonal, blocks, operator products, the Fisher-Rao quadratic form and the spectrum of
    the GGN at the labels agree with the dense signed GGN; indefinite structures are marked
    ``psd=False``; K-FAC and the Gram route refuse an indefinite GGN."""
    net, theta, X, y = ncase.net, ncase.theta, ncase.X, ncase.y
    G = minifim.ggn(net, theta, X, y)
    tol = ncase.rtol(4)
    assert_close(minifim.fisher_diagonal(net, theta, X, y, "ggn"), np.diag(G), tol, "diag")
    blocks = minifim.block_diagonal(net, theta, X, y, "ggn")
    for sl, B in zip(net.layer_param_slices(), blocks):
        assert_close(B, G[sl, sl], tol, "block")
    v = np.random.default_rng(1).standard_normal(ncase.P)
    assert_close(minifim.ggn_operator(net, theta, X, y) @ v, G @ v, tol, "operator")
    q = minifim.fisher_rao_norm(net, theta, X, y, "ggn", v=v)
    check(abs(q - v @ G @ v), tol * np.abs(G).max() * np.sum(np.abs(v)) ** 2, "v^T G v")
    w = minifim.curvature_spectrum(net, theta, X, y, "ggn")  # descending; Gram: the nonzero
    assert_close(w, np.linalg.eigvalsh(G)[::-1][: len(w)], tol, "spectrum")
    psd = minifim.curvature_is_psd(net, "ggn")
    for structure in ("full", "diag", "block"):
        assert minifim.curvature(net, theta, X, y, "ggn", structure).psd == psd
    if psd:
        minifim.kfac(net, theta, X, y, "ggn")
        return
    with pytest.raises(ValueError, match="fisher: the 'ggn' curvature of the heteroscedastic"):
        minifim.kfac(net, theta, X, y, "ggn")
    with pytest.raises(ValueError, match="positive semi-definite M = U"):
        minifim.curvature(net, theta, X, y, "ggn", "kfac")
    with pytest.raises(ValueError, match="method: 'gram' needs a factor"):
        minifim.curvature_spectrum(net, theta, X, y, "ggn", method="gram")
    with pytest.raises(ValueError, match="fisher: the 'ggn' curvature"):
        list(minifim.curvature_factors(net, theta, X, y, "ggn"))


def test_ngd_with_the_indefinite_ggn():
    """Dense (``LDL^T``) and GMRES routes solve ``(G + lambda I) d = g`` with the indefinite
    GGN; the Woodbury route and K-FAC refuse it; the direction differs from the Fisher's."""
    ncase = net_case("het-logvar")
    net, theta, X, y = ncase.net, ncase.theta, ncase.X, ncase.y
    lam = 0.5
    G = minifim.ggn(net, theta, X, y)
    g = minifim.gradient(net, theta, X, y)
    d = minifim.natural_gradient(net, theta, X, y, lam, "ggn", method="dense")
    A = G + lam * np.eye(ncase.P)
    kappa = cond(A)
    check_close(A @ d, g, solve_rtol(kappa, ncase.P), "dense residual")
    d_auto, info = minifim.natural_gradient(net, theta, X, y, lam, "ggn", return_info=True)
    assert info["method"] == "dense"
    assert_close(d_auto, d, solve_rtol(kappa, ncase.P))
    d_cg = minifim.natural_gradient(net, theta, X, y, lam, "ggn", method="cg", tol=1e-12)
    check_close(d_cg, d, cg_rtol(kappa, ncase.P, 1e-12), "GMRES vs dense")
    with pytest.raises(ValueError, match="no factor M = U\\^T U for the Woodbury"):
        minifim.natural_gradient(net, theta, X, y, lam, "ggn", method="woodbury")
    with pytest.raises(ValueError, match="indefinite"):
        minifim.natural_gradient(net, theta, X, y, lam, "ggn", structure="kfac")
    d_F = minifim.natural_gradient(net, theta, X, y, lam, "true")
    assert rel_err(d, d_F) > 1e-2


@pytest.mark.parametrize("name", ["het-logvar", "het-natural", "poisson-softplus"])
def test_ggn_requires_y_when_not_canonical(name):
    ncase = net_case(name)
    net, theta, X = ncase.net, ncase.theta, ncase.X
    for call in (
        lambda: minifim.ggn(net, theta, X),
        lambda: minifim.curvature_matrix(net, theta, X, None, "ggn"),
        lambda: minifim.fisher_diagonal(net, theta, X, None, "ggn"),
        lambda: minifim.ggn_operator(net, theta, X),
    ):
        with pytest.raises(TypeError, match="y: the GGN of the .* depends on the labels"):
            call()
    # every other kind works as before
    minifim.true_fisher(net, theta, X)
    minifim.empirical_fisher(net, theta, X, ncase.y)
    minifim.mc_fisher(net, theta, X, 2, 0)


# --- uses: Laplace, merging, accuracy ----------------------------------------------------------
@pytest.mark.parametrize("parameterization", ["logvar", "natural"])
def test_heteroscedastic_glm_moments_by_quadrature(parameterization):
    """Exact predictive moments under ``f ~ N(m, S)`` against tensor Gauss-Hermite over the
    ``2C = 4`` outputs (14 nodes each: the integrands are polynomials times exponentials of
    linear forms ``e^{a^T f}`` with ``|a| S |a| < 1``, whose Gauss-Hermite error is below
    ``(a^T S a)^14 / 28! < 1e-29`` relative)."""
    import itertools

    from minifim.methods.laplace import heteroscedastic_glm_moments

    lik = HeteroscedasticGaussian(parameterization)
    rng = np.random.default_rng(3)
    m = 0.5 * rng.standard_normal((2, 4))
    A = 0.3 * rng.standard_normal((2, 4, 4))
    S = A @ A.transpose(0, 2, 1)
    Ey, Cy = heteroscedastic_glm_moments(lik, m, S)
    x, w = hermegauss(14)
    w = w / w.sum()
    nodes = np.array(list(itertools.product(x, repeat=4)))
    ws = np.prod(np.array(list(itertools.product(w, repeat=4))), axis=1)
    for n in range(2):
        f = m[n] + nodes @ np.linalg.cholesky(S[n]).T
        mu, var = lik.mean(f), lik.variance(f)
        E = ws @ mu
        C_ref = np.einsum("s,si,sj->ij", ws, mu - E, mu - E) + np.diag(ws @ var)
        assert_close(Ey[n], E, 1e-12, "E[y]")
        assert_close(Cy[n], C_ref, 1e-12, "Cov[y]")


def test_laplace_heteroscedastic_regression():
    """Laplace with the true Fisher (or the empirical / MC Fisher) for heteroscedastic
    regression; the indefinite GGN is refused; the GLM predictive is the exact moment pair of
    the linearised model, the NN predictive its Monte-Carlo counterpart (agreement within 5
    standard errors at a point where both are defined)."""
    rng = np.random.default_rng(0)
    net = minifim.MLP([1, 6, 2], likelihood="heteroscedastic")
    X = rng.uniform(-2, 2, (20, 1))
    y = np.sin(2 * X) + 0.1 * (1 + X**2) * rng.standard_normal((20, 1))
    theta, _ = minifim.fit_map(net, net.init(0), X, y, prior_precision=1.0, gtol=1e-6)
    la = minifim.Laplace(net, theta, X, y, 1.0, "full", "true")
    Xt = np.linspace(-1, 1, 3)[:, None]
    mean, cov = la.predictive(Xt)
    assert mean.shape == (3, 1) and cov.shape == (3, 1, 1)
    fm, fS = la.functional_posterior(Xt)
    from minifim.methods.laplace import heteroscedastic_glm_moments

    Ey, Cy = heteroscedastic_glm_moments(net.likelihood, fm, fS)
    assert_close(mean, Ey, 0.0)
    assert_close(cov, Cy, 0.0)
    assert np.all(cov[:, 0, 0] > np.exp(fm[:, 1]))  # noise plus the epistemic part
    with pytest.raises(ValueError, match="fisher: the 'ggn' curvature .* indefinite"):
        minifim.Laplace(net, theta, X, y, 1.0, "full", "ggn")
    for structure in ("diag", "kfac"):
        minifim.Laplace(net, theta, X, y, 1.0, structure, "true").predictive(Xt)
    minifim.Laplace(net, theta, X, y, 1.0, "full", "empirical").predictive(Xt)


def test_merging_and_accuracy_refuse():
    ncase = net_case("het-logvar")
    net, theta, X, y = ncase.net, ncase.theta, ncase.X, ncase.y
    with pytest.raises(ValueError, match="fisher: the 'ggn' curvature .* Fisher merging"):
        minifim.fisher_merge(net, [theta, theta], data=[(X, y), (X, y)], fisher="ggn")
    merged = minifim.fisher_merge(net, [theta, theta], data=[(X, y), (X, y)], damping=1e-6)
    assert_close(merged, theta, 1e-10)
    with pytest.raises(ValueError, match="accuracy is defined .* heteroscedastic"):
        minifim.accuracy(net, theta, X, y)


# --- fixtures and check ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec",
    [
        dict(sizes=[2, 3, 4], likelihood="heteroscedastic"),
        dict(sizes=[2, 3, 4], likelihood="heteroscedastic", parameterization="natural"),
        dict(sizes=[2, 3, 2], likelihood="poisson", link="softplus", labels="uniform"),
    ],
    ids=["het-logvar", "het-natural", "poisson-softplus"],
)
def test_fixture_round_trip_and_check_causes(spec, tmp_path):
    """A fixture of a non-canonical model stores the GGN at its labels; ``check`` names the
    mistake "true Fisher for the GGN" (and the reverse, and the per-label clipping)."""
    from minifim.oracle import fixtures
    from minifim.oracle.checking import check as check_fixture

    fx = fixtures.make_fixture(spec)
    net = fx.net
    assert net.likelihood.config()["likelihood"] == spec["likelihood"]
    assert fx["y"].shape == (fx.N, net.target_dim)
    assert_close(fx["ggn"], minifim.ggn(net, fx.theta, fx.X, fx.y), 0.0)
    path = fixtures.save_fixture(fx, tmp_path / "fx.npz")
    back = fixtures.load_fixture(path)
    assert back.net.likelihood == net.likelihood
    assert check_fixture(path, {"ggn": fx["ggn"], "true_fisher": fx["true_fisher"]}).passed
    res = check_fixture(path, {"ggn": fx["true_fisher"], "true_fisher": fx["ggn"]})
    causes = {c.name: " ".join(c.causes) for c in res.comparisons}
    assert "true Fisher (the expected loss Hessian) instead of the GGN" in causes["ggn"]
    assert "GGN at the data labels instead of the true Fisher" in causes["true_fisher"]
    if not net.likelihood.hessian_psd:
        J = minifim.output_jacobians(net, fx.theta, fx.X)
        P, _ = net.likelihood.hessian_factors(net.forward(fx.theta, fx.X), fx.y)
        U = np.einsum("nkc,ncp->nkp", P, J).reshape(-1, fx.P)
        res = check_fixture(path, {"ggn": U.T @ U / fx.N})
        assert "clipped to its positive part" in " ".join(res.comparisons[0].causes)


# --- PyTorch cross-checks (make crosscheck; skipped without torch) ----------------------------
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", sorted(set(NETS) - {"poisson-softplus-1"}))
def test_torch_losses_agree(name):
    """``GaussianNLLLoss(full=True, eps=0)`` and ``PoissonNLLLoss`` (+ ``lgamma(y + 1)``) through
    ``torch.func``: scores, the true and empirical Fisher, the GGN at the labels (torch's own
    output Hessian of the loss), the Hessian, the gradient and the loss."""
    torch = pytest.importorskip("torch")
    from minifim.oracle import torch as mt

    ncase = net_case(name)
    net, theta, X, y = ncase.net, ncase.theta, ncase.X, ncase.y
    ref = mt.torch_quantities(net, theta, X, y)
    ours = {
        "outputs": net.forward(theta, X),
        "scores": minifim.per_sample_scores(net, theta, X, y),
        "true_fisher": minifim.true_fisher(net, theta, X),
        "empirical_fisher": minifim.empirical_fisher(net, theta, X, y),
        "ggn": minifim.ggn(net, theta, X, y),
        "hessian": minifim.hessian(net, theta, X, y),
        "gradient": minifim.gradient(net, theta, X, y),
        "loss": np.asarray(minifim.loss(net, theta, X, y)),
        "output_fisher": net.likelihood.fisher_outputs(ncase.F),
    }
    for key, value in ours.items():
        assert_close(ref[key], value, 1e-12, key)
    # PyTorch's defaults are other conventions: GaussianNLLLoss(full=False) drops log(2 pi)/2
    # per element and reduction="mean" divides by N C; PoissonNLLLoss omits log y!
    f = torch.from_numpy(ncase.F)
    yt = torch.from_numpy(np.asarray(y, dtype=float))
    if name.startswith("het") and not net.likelihood.natural:
        Cy = y.shape[1]
        full = torch.nn.functional.gaussian_nll_loss(
            f[:, :Cy], yt, torch.exp(f[:, Cy:]), full=True, eps=1e-300, reduction="none"
        )
        assert_close(-full.sum(1).numpy(), net.likelihood.log_prob(ncase.F, y), 1e-13, "full")
        default = torch.nn.GaussianNLLLoss()(f[:, :Cy], yt, torch.exp(f[:, Cy:]))
        nll = -net.likelihood.log_prob(ncase.F, y)
        assert_close(
            float(default),
            (nll.sum() - 0.5 * ncase.N * Cy * math.log(2 * math.pi)) / (ncase.N * Cy),
            1e-13,
            "GaussianNLLLoss defaults",
        )
    if name == "poisson-log":
        default = torch.nn.PoissonNLLLoss(reduction="sum")(f, yt)
        nll = -net.likelihood.log_prob(ncase.F, y).sum()
        assert_close(float(default), nll - scipy.special.gammaln(y + 1).sum(), 1e-13, "no log y!")


@pytest.mark.parametrize("name", ["het-logvar", "poisson-softplus"])
def test_ewc_and_pruning_take_the_new_likelihoods(name):
    """EWC's diagonal task curvature is the exact Fisher diagonal; OBD with the GGN at the labels
    scores with ``diag(G)`` (signed for the heteroscedastic Gaussian), not with the Fisher's."""
    from minifim.methods import ewc, pruning

    ncase = net_case(name)
    net, theta, X, y = ncase.net, ncase.theta, ncase.X, ncase.y
    d = ewc.task_curvature(net, theta, X, y, "diag", "true")
    assert_close(d, np.diag(minifim.true_fisher(net, theta, X)), ncase.rtol(4))
    res_f = pruning.prune(net, theta, X, y, 0.5, criterion="obd")
    res_g = pruning.prune(net, theta, X, y, 0.5, criterion="obd", fisher="ggn")
    G = minifim.ggn(net, theta, X, y)
    F = minifim.true_fisher(net, theta, X)
    for res, M in ((res_g, G), (res_f, F)):  # OBD saliency 1/2 M_ii theta_i^2 of the removed
        i = res.pruned
        assert_close(res.scores, 0.5 * np.diag(M)[i] * theta[i] ** 2, ncase.rtol(4))


@pytest.mark.parametrize("name", ["het-logvar", "het-natural", "poisson-softplus"])
def test_hessian_against_central_differences_of_the_gradient(name):
    """``hessian`` (autograd of ``log_prob``) against central differences of the backprop
    gradient: truncation ``h^2 / 6 |g'''|`` plus rounding ``EPS |g| / h``; with ``h = 1e-4`` and
    third derivatives of order 1e2 here, about 2e-7 of the Hessian's scale (measured: 1e-8)."""
    ncase = net_case(name)
    net, theta, X, y = ncase.net, ncase.theta, ncase.X, ncase.y
    H = minifim.hessian(net, theta, X, y)
    h = 1e-4
    cols = [
        (minifim.gradient(net, theta + h * e, X, y) - minifim.gradient(net, theta - h * e, X, y))
        / (2 * h)
        for e in np.eye(ncase.P)
    ]
    assert_close(np.stack(cols, axis=1), H, 1e-6, "central differences")
    assert_close(H, H.T, 1e-13, "symmetric")


@given(
    mu=st.floats(-1e3, 1e3),
    s=st.floats(-30.0, 30.0),
    y=st.floats(-1e3, 1e3),
    natural=st.booleans(),
)
def test_signed_factors_reproduce_the_hessian_everywhere(mu, s, y, natural):
    """Over means up to 1e3, log-variances +-30 and labels up to 1e3: ``P^T P - M^T M = H``
    entrywise to a few ulps of the terms' magnitudes, the inertia of ``H`` (one negative
    eigenvalue when ``det H < 0``) is that of the factorisation, and everything is finite."""
    lik = HeteroscedasticGaussian("natural" if natural else "logvar")
    F = np.array([[mu, s]])
    Y = np.array([[y]])
    with no_warnings():
        H = lik.hessian_outputs(F, Y)[0]
        P, M = (A[0] for A in lik.hessian_factors(F, Y))
    assert np.all(np.isfinite(H)) and np.all(np.isfinite(P)) and np.all(np.isfinite(M))
    terms = np.abs(P).T @ np.abs(P) + np.abs(M).T @ np.abs(M)
    check_elementwise(P.T @ P - M.T @ M, H, 16 * EPS * terms + 1e-300, "signed factors")
    d = H[0, 0] * H[1, 1] - H[0, 1] ** 2  # the L D L^T pivot of the factors has its sign
    if abs(d) > 1e-8 * abs(H[0, 0] * H[1, 1]):
        assert (np.linalg.norm(M) > 0) == (d < 0)


@pytest.mark.parametrize(
    "kw", [dict(likelihood="heteroscedastic"), dict(likelihood="poisson", link="softplus")]
)
def test_positional_outputs(kw):
    """A Sequential with outputs ``(N, R, 2C)`` (heteroscedastic: targets ``(N, R, C)``): the GGN
    at the labels is the sum over positions of ``J_nr^T H_f(y_nr) J_nr`` (output Jacobians by
    backprop, ``H`` per position), its diagonal the signed route's."""
    from minifim.layers import Linear, Tanh

    rng = np.random.default_rng(0)
    net = minifim.Sequential([Linear(3, 4), Tanh(), Linear(4, 2)], input_shape=(5, 3), **kw)
    theta, X = net.init(0), rng.standard_normal((4, 5, 3))
    F = net.forward(theta, X)
    y = net.sample_targets(F, 1)
    assert y.shape == (4, 5, net.target_dim)
    G = minifim.ggn(net, theta, X, y)
    H = net.likelihood.hessian_outputs(F.reshape(20, 2), y.reshape(20, -1)).reshape(4, 5, 2, 2)
    J = minifim.output_jacobians(net, theta, X).reshape(4, 5, 2, -1)
    ref = np.einsum("nrcp,nrcd,nrdq->pq", J, H, J) / 4
    assert_close(G, ref, 1e-13, "positional GGN")
    assert_close(minifim.fisher_diagonal(net, theta, X, y, "ggn"), np.diag(G), 1e-13)
    with pytest.raises(TypeError, match="y: the GGN"):
        minifim.ggn(net, theta, X)
