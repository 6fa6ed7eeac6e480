"""Likelihoods: closed forms (scipy.stats), autograd derivatives, enumerated output Fisher,
stability at logits of magnitude 1e3, and sampling frequencies."""

import itertools
import warnings

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
import scipy.stats

import minifim
from minifim.core.likelihoods import LIKELIHOODS, Bernoulli, Categorical, Gaussian, get_likelihood

from .cases import assert_close, outcomes

N, C = 6, 3
RNG = np.random.default_rng(7)
F0 = 2.0 * RNG.standard_normal((N, C))

LIKS = {"categorical": Categorical(), "bernoulli": Bernoulli(), "gaussian": Gaussian(0.7)}


def targets(lik, F, rng):
    return lik.sample(F, rng)


@pytest.fixture(params=sorted(LIKS))
def lik(request):
    return LIKS[request.param]


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


# --- log_prob against scipy.stats ------------------------------------------------------------
def test_log_prob_categorical_scipy():
    lik = LIKS["categorical"]
    y = np.array([0, 1, 2, 2, 1, 0])
    p = scipy.special.softmax(F0, axis=1)
    ref = [scipy.stats.multinomial(1, p[n]).logpmf(np.eye(C)[y[n]]) for n in range(N)]
    assert_close(lik.log_prob(F0, y), ref, 1e-13)


def test_log_prob_bernoulli_scipy():
    lik = LIKS["bernoulli"]
    y = (RNG.random((N, C)) < 0.5).astype(float)
    p = scipy.special.expit(F0)
    ref = scipy.stats.bernoulli(p).logpmf(y).sum(axis=1)
    assert_close(lik.log_prob(F0, y), ref, 1e-13)


def test_log_prob_gaussian_scipy():
    lik = LIKS["gaussian"]
    y = F0 + RNG.standard_normal((N, C))
    ref = [scipy.stats.multivariate_normal(F0[n], 0.49 * np.eye(C)).logpdf(y[n]) for n in range(N)]
    assert_close(lik.log_prob(F0, y), ref, 1e-13)
    ref2 = scipy.stats.norm(F0, 0.7).logpdf(y).sum(axis=1)
    assert_close(lik.log_prob(F0, y), ref2, 1e-13)


# --- derivatives against autograd --------------------------------------------------------------
def test_grad_log_prob_autograd(lik):
    y = targets(lik, F0, 1)
    ref = autograd.grad(lambda F: anp.sum(lik.log_prob(F, y)))(F0)
    assert_close(lik.grad_log_prob(F0, y), ref, 1e-14)


def test_hessian_outputs_autograd(lik):
    """Per-sample Hessian of ``-log p(y | f_n)`` w.r.t. ``f_n``, for several labels (it does not
    depend on ``y`` for the canonical links)."""
    H = lik.hessian_outputs(F0)
    assert H.shape == (N, C, C)
    for seed in range(3):
        y = targets(lik, F0, seed)
        for n in range(N):

            def nll(f, n=n, y=y):
                return -lik.log_prob(f[None, :], y[n : n + 1])[0]

            assert_close(H[n], autograd.hessian(nll)(F0[n]), 1e-14, f"sample {n}")


# --- output-space Fisher ---------------------------------------------------------------------
def test_factor_squares_to_lambda(lik):
    R, Lam = lik.fisher_factor(F0), lik.fisher_outputs(F0)
    assert R.shape == (N, C, C) and Lam.shape == (N, C, C)
    assert_close(np.einsum("nkc,nkd->ncd", R, R), Lam, 1e-15)
    assert_close(Lam, Lam.transpose(0, 2, 1), 0.0, "symmetry")
    assert np.linalg.eigvalsh(Lam).min() >= -1e-15


def test_lambda_closed_forms():
    p = scipy.special.softmax(F0, axis=1)
    assert_close(
        LIKS["categorical"].fisher_outputs(F0),
        np.stack([np.diag(q) - np.outer(q, q) for q in p]),
        1e-15,
    )
    s = scipy.special.expit(F0)
    assert_close(
        LIKS["bernoulli"].fisher_outputs(F0), np.stack([np.diag(q * (1 - q)) for q in s]), 1e-15
    )
    assert_close(
        LIKS["gaussian"].fisher_outputs(F0), np.broadcast_to(np.eye(C) / 0.49, (N, C, C)), 1e-15
    )


def test_lambda_is_enumerated_score_covariance(lik):
    """``Lambda_n = E_y[g g^T]``: categorical over the C classes, Bernoulli over ALL 2^C joint
    outcomes, Gaussian by a cubature exact for quadratics (see ``cases.outcomes``)."""
    ref = np.zeros((N, C, C))
    total = np.zeros(N)
    mean_score = np.zeros((N, C))
    for w, y in outcomes(lik, F0):
        g = lik.grad_log_prob(F0, y)
        ref += w[:, None, None] * g[:, :, None] * g[:, None, :]
        mean_score += w[:, None] * g
        total += w
    assert_close(total, np.ones(N), 1e-15, "probabilities sum to one")
    assert np.abs(mean_score).max() < 1e-15, "E[g] = 0"
    assert_close(lik.fisher_outputs(F0), ref, 1e-14)


def test_bernoulli_enumeration_covers_all_joint_outcomes():
    outs = outcomes(LIKS["bernoulli"], F0)
    assert len(outs) == 2**C
    assert {tuple(y[0]) for _, y in outs} == set(itertools.product((0.0, 1.0), repeat=C))
    # the joint law is the product of the marginals
    p = scipy.special.expit(F0)
    for w, y in outs:
        assert_close(w, np.prod(np.where(y == 1, p, 1 - p), axis=1), 1e-14)


# --- stability -------------------------------------------------------------------------------
BIG = np.array([[1e3, 0.0, -1e3], [-1e3, -1e3, -1e3], [1e3, 1e3, -1e3], [0.0, 5e2, -7e2]])


@pytest.mark.parametrize("name", ["categorical", "bernoulli"])
def test_stable_for_logits_1e3(name):
    lik = LIKS[name]
    rng = np.random.default_rng(0)
    with no_warnings():
        p = lik.mean(BIG)
        y = lik.sample(BIG, rng)
        parts = [
            lik.log_prob(BIG, y),
            lik.grad_log_prob(BIG, y),
            p,
            lik.fisher_outputs(BIG),
            lik.fisher_factor(BIG),
            lik.hessian_outputs(BIG),
            lik.sample(BIG, rng, n_samples=3),
        ]
    for part in parts:
        assert np.all(np.isfinite(part))
    if name == "categorical":
        # log-sum-exp at magnitude 1e3 is exact to ulp(1e3) ~ 1.1e-13, hence the tolerance
        assert_close(p.sum(axis=1), np.ones(4), 1e-12)
        assert_close(
            lik.log_prob(BIG, np.array([2, 0, 0, 2])),
            [-2000.0, -np.log(3), -np.log(2), -1200.0],
            1e-15,
        )
        assert_close(p[2], [0.5, 0.5, 0.0], 1e-12)
    else:
        y = np.array([[0.0, 1.0, 1.0]] * 4)
        ref = scipy.stats.bernoulli(scipy.special.expit(BIG)).logpmf(y).sum(axis=1)
        # scipy underflows to -inf where the exact value is -1e3; compare where it is finite
        exact = -np.logaddexp(0, -BIG * (2 * y - 1)).sum(axis=1)
        assert_close(lik.log_prob(BIG, y), exact, 1e-15)
        assert np.isinf(ref).any()  # why the closed form above is used, not scipy
        assert_close(
            np.diagonal(lik.fisher_outputs(BIG), axis1=1, axis2=2)[0], [0.0, 0.25, 0.0], 1e-15
        )


# --- sampling ----------------------------------------------------------------------------------
def test_sample_frequencies_categorical():
    """Counts are Binomial(n, p_c): each z-score ``(count - n p) / sqrt(n p (1-p))`` is
    below 5 (the normal approximation holds with n p >= 40 here; Bonferroni over 12 cells,
    a false alarm has probability < 1e-5)."""
    lik = LIKS["categorical"]
    F = np.log(
        np.array([[0.2, 0.3, 0.5], [0.05, 0.9, 0.05], [1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1]])
    )
    n = 4000
    ys = lik.sample(F, np.random.default_rng(3), n_samples=n)
    assert ys.shape == (n, 4) and ys.dtype.kind == "i"
    p = lik.mean(F)
    counts = np.stack([(ys == c).sum(axis=0) for c in range(3)], axis=1)
    z = (counts - n * p) / np.sqrt(n * p * (1 - p))
    assert np.abs(z).max() < 5, z
    # power: the same test rejects a wrong probability vector
    z_wrong = (counts - n * p[::-1]) / np.sqrt(n * p * (1 - p))
    assert np.abs(z_wrong).max() > 5


def test_sample_frequencies_bernoulli():
    lik = LIKS["bernoulli"]
    n = 4000
    ys = lik.sample(F0, np.random.default_rng(4), n_samples=n)
    assert ys.shape == (n, N, C) and set(np.unique(ys)) <= {0.0, 1.0}
    p = lik.mean(F0)
    z = (ys.sum(axis=0) - n * p) / np.sqrt(n * p * (1 - p))
    assert np.abs(z).max() < 5, z
    # outputs are independent: the joint frequency of (1, 1) matches p_0 p_1
    both = (ys[:, :, 0] * ys[:, :, 1]).sum(axis=0)
    q = p[:, 0] * p[:, 1]
    assert np.abs((both - n * q) / np.sqrt(n * q * (1 - q))).max() < 5


def test_sample_moments_gaussian():
    """Sample mean z-score < 5 (variance sigma^2 / n) and sample variance within 5 standard
    deviations (``Var[s^2] = 2 sigma^4 / (n - 1)`` for normal data)."""
    lik = LIKS["gaussian"]
    n = 4000
    ys = lik.sample(F0, np.random.default_rng(5), n_samples=n)
    assert ys.shape == (n, N, C)
    z = (ys.mean(axis=0) - F0) / (0.7 / np.sqrt(n))
    assert np.abs(z).max() < 5
    zv = (ys.var(axis=0, ddof=1) - 0.49) / (0.49 * np.sqrt(2 / (n - 1)))
    assert np.abs(zv).max() < 5
    # pooled over all N * C outputs: ((y - f) / sigma)^2 has mean 1 and variance 2, so a 2%
    # error in sigma (a 4% variance error) is 7 standard errors away
    r2 = ((ys - F0) / 0.7) ** 2
    assert abs(r2.mean() - 1) < 5 * np.sqrt(2 / r2.size)


def test_sample_reproducible_and_shapes(lik):
    a = lik.sample(F0, 11)
    b = lik.sample(F0, np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    assert lik.sample(F0, 0, n_samples=2).shape[0] == 2
    assert lik.sample(F0, 0).shape == ((N,) if lik.name == "categorical" else (N, C))
    lik.check_targets(a, N, C)  # samples are valid targets
    with pytest.raises(TypeError, match="rng"):
        lik.sample(F0, None)
    with pytest.raises(ValueError, match="n_samples"):
        lik.sample(F0, 0, n_samples=0)
    with pytest.raises(TypeError, match="n_samples"):
        lik.sample(F0, 0, n_samples=2.0)


def test_mean_and_mode():
    assert_close(LIKS["categorical"].mean(F0), scipy.special.softmax(F0, axis=1), 1e-15)
    assert_close(LIKS["bernoulli"].mean(F0), scipy.special.expit(F0), 1e-15)
    assert_close(LIKS["gaussian"].mean(F0), F0, 0.0)
    np.testing.assert_array_equal(LIKS["categorical"].most_likely(F0), F0.argmax(axis=1))
    np.testing.assert_array_equal(LIKS["bernoulli"].most_likely(F0), (F0 > 0).astype(float))
    np.testing.assert_array_equal(LIKS["gaussian"].most_likely(F0), F0)


# --- targets -----------------------------------------------------------------------------------
def test_categorical_targets():
    lik = LIKS["categorical"]
    out = lik.check_targets(np.array([0.0, 2.0, 1.0]), 3, 3)
    assert out.dtype == np.int64 and list(out) == [0, 2, 1]
    bad = [
        ([0, 3, 1], ValueError, r"y: expected labels in \[0, 3\), received values in \[0, 3\]"),
        ([-1, 0, 1], ValueError, r"y: expected labels in \[0, 3\)"),
        ([0.5, 0, 1], ValueError, "y: expected integer class labels, received non-integer"),
        ([np.nan, 0, 1], ValueError, "y: expected finite integer labels"),
        ([0, 1], ValueError, r"y: expected shape \(3,\), received shape \(2,\)"),
        (np.eye(3), ValueError, "not one-hot rows"),
        (np.array([True, False, True]), TypeError, "y: expected integer class labels"),
        ("abc", TypeError, "y: expected integer class labels"),
        (None, TypeError, "y: expected integer class labels"),
        (np.array([0, 1, 2], dtype=object), TypeError, "y"),
    ]
    for y, err, msg in bad:
        with pytest.raises(err, match=msg):
            lik.check_targets(y, 3, 3)
    with pytest.raises(ValueError, match="labels:"):
        lik.check_targets([0, 5, 1], 3, 3, name="labels")


def test_bernoulli_targets():
    lik = LIKS["bernoulli"]
    assert lik.check_targets([[0, 1], [1, 1]], 2, 2).dtype == np.float64
    assert lik.check_targets(np.array([[True, False]]), 1, 2).dtype == np.float64
    bad = [
        ([[0, 2], [1, 1]], ValueError, r"y: expected Bernoulli labels in \{0, 1\}.*2\.0"),
        ([[0, 0.5], [1, 1]], ValueError, "Bernoulli labels"),
        ([[0, np.nan], [1, 1]], ValueError, "y: expected finite values"),
        ([0, 1], ValueError, r"y: expected 0/1 labels of shape \(2, 2\), received shape \(2,\)"),
        ([[0, 1, 1], [1, 1, 0]], ValueError, r"shape \(2, 2\)"),
        ("ab", TypeError, "y: expected a real numeric array"),
    ]
    for y, err, msg in bad:
        with pytest.raises(err, match=msg):
            lik.check_targets(y, 2, 2)
    with pytest.raises(ValueError, match=r"y\[:, None\]"):
        lik.check_targets([0, 1], 2, 1)


def test_gaussian_targets():
    lik = LIKS["gaussian"]
    assert lik.check_targets([[0.3, -2.0]], 1, 2).shape == (1, 2)
    with pytest.raises(ValueError, match=r"y: expected finite values, received 1 NaN/Inf entry"):
        lik.check_targets([[0.3, np.inf]], 1, 2)
    with pytest.raises(ValueError, match=r"y: expected real targets of shape \(2, 1\)"):
        lik.check_targets([0.3, 0.1], 2, 1)
    with pytest.raises(TypeError, match="y: expected a real"):
        lik.check_targets([[1j, 0]], 1, 2)


# --- construction ----------------------------------------------------------------------------
def test_get_likelihood_and_config():
    assert set(LIKELIHOODS) == {
        "categorical",
        "bernoulli",
        "gaussian",
        "heteroscedastic",
        "poisson",
    }
    for name in LIKELIHOODS:
        lik = get_likelihood(name, 0.3)
        assert lik.name == name
        assert get_likelihood(**lik.config()) == lik
        assert get_likelihood(lik) is lik
        assert hash(lik) == hash(get_likelihood(**lik.config()))
    assert get_likelihood("gaussian", 0.3).sigma == 0.3
    assert Gaussian(0.3) != Gaussian(0.4)
    assert Categorical() != Bernoulli()
    assert repr(Gaussian(0.5)) == "Gaussian(sigma=0.5)"
    assert minifim.get_likelihood is get_likelihood


def test_get_likelihood_bad_input():
    with pytest.raises(ValueError, match=r"likelihood: expected one of .*received 'negbinomial'"):
        get_likelihood("negbinomial")
    with pytest.raises(TypeError, match="likelihood: expected one of .* received int"):
        get_likelihood(3)
    for sigma, err in [
        (0.0, ValueError),
        (-1.0, ValueError),
        (np.inf, ValueError),
        ("1", TypeError),
        (True, TypeError),
    ]:
        with pytest.raises(err, match="sigma"):
            Gaussian(sigma)


# --- the public methods validate their inputs (issue 12) -----------------------------------------
F_METHODS = ["fisher_outputs", "fisher_factor", "hessian_outputs", "mean", "most_likely"]


def _call(lik, method, F, y=None):
    if method in ("log_prob", "grad_log_prob"):
        return getattr(lik, method)(F, y)
    if method == "sample":
        return lik.sample(F, 0)
    return getattr(lik, method)(F)


@pytest.mark.parametrize("method", ["log_prob", "grad_log_prob", "sample"] + F_METHODS)
def test_methods_refuse_bad_outputs(lik, method):
    y = lik.sample(F0, 0)
    bad = [
        (F0[0], ValueError, r"F: expected a 2-D array of shape \(N, C\), received shape \(3,\)"),
        (F0[None], ValueError, r"F: expected a 2-D array .*received shape \(1, 6, 3\)"),
        (np.where(F0 > 1, np.nan, F0), ValueError, "F: expected finite values"),
        (F0 + 0j, TypeError, "F: expected a real array"),
        ("F0", TypeError, "F: expected a real numeric array"),
        (None, TypeError, "F: expected a real numeric array"),
    ]
    for F, err, msg in bad:
        with pytest.raises(err, match=msg):
            _call(lik, method, F, y)


@pytest.mark.parametrize("method", ["log_prob", "grad_log_prob"])
def test_categorical_methods_refuse_bad_labels(method):
    """Label -1 used to score the last class, (N, 1) labels broadcast to (N, N), 2.5 failed
    with an IndexError and 1.0 floats were used as indices."""
    lik = LIKS["categorical"]
    y = np.array([0, 1, 2, 2, 1, 0])
    bad = [
        (
            np.array([0, 1, 2, 2, 1, -1]),
            ValueError,
            r"y: expected labels in \[0, 3\), received values in \[-1, 2\]",
        ),
        (np.array([0, 1, 2, 3, 1, 0]), ValueError, r"y: expected labels in \[0, 3\)"),
        (y[:, None], ValueError, r"y: expected shape \(6,\), received shape \(6, 1\)"),
        (y[:5], ValueError, r"y: expected shape \(6,\), received shape \(5,\)"),
        (y + 0.5, ValueError, "y: expected integer class labels, received non-integer"),
        (np.eye(3)[y], ValueError, "not one-hot rows"),
        (y.astype(bool), TypeError, "y: expected integer class labels"),
        (None, TypeError, "y: expected integer class labels"),
    ]
    for yb, err, msg in bad:
        with pytest.raises(err, match=msg):
            getattr(lik, method)(F0, yb)
    # integer-valued floats are labels, as everywhere else
    assert_close(getattr(lik, method)(F0, y.astype(float)), getattr(lik, method)(F0, y), 0.0)


@pytest.mark.parametrize("name", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("method", ["log_prob", "grad_log_prob"])
def test_vector_methods_refuse_bad_targets(name, method):
    """A (N,) target with one output used to broadcast against F: (N, 1) to an (N, N) result."""
    lik = LIKS[name]
    F1 = F0[:, :1]
    y1 = lik.sample(F1, 0)
    with pytest.raises(
        ValueError,
        match=r"y: expected .*shape \(6, 1\), received shape \(6,\).*"
        r"y\[:, None\]",
    ):
        getattr(lik, method)(F1, y1[:, 0])
    with pytest.raises(ValueError, match=r"shape \(6, 3\), received shape \(6, 1\)"):
        getattr(lik, method)(F0, y1)
    with pytest.raises(ValueError, match=r"y: expected finite values"):
        getattr(lik, method)(F1, np.full((6, 1), np.nan))
    if name == "bernoulli":
        with pytest.raises(ValueError, match=r"y: expected Bernoulli labels in \{0, 1\}"):
            getattr(lik, method)(F1, 2 * y1 - 1)


def test_log_prob_still_differentiable_with_boxed_outputs(lik):
    """The autograd routes call log_prob on ArrayBox outputs: validation lets them through."""
    y = lik.sample(F0, 3)
    g = autograd.grad(lambda F: anp.sum(lik.log_prob(F, y)))(F0)
    assert_close(g, lik.grad_log_prob(F0, y), 1e-13)
    with pytest.raises(ValueError, match=r"y: expected"):
        autograd.grad(lambda F: anp.sum(lik.log_prob(F, y[:-1])))(F0)
    with pytest.raises(ValueError, match=r"F: expected a 2-D array"):
        autograd.grad(lambda F: anp.sum(lik.log_prob(F[0], y)))(F0)


def test_sample_refuses_bad_n_samples(lik):
    for n, err in [(0, ValueError), (2.0, TypeError), (True, TypeError)]:
        with pytest.raises(err, match="n_samples"):
            lik.sample(F0, 0, n)
