"""The exact curvature family against independent routes: closed forms, enumeration over labels,
autograd Hessians, finite differences, the KL expansion, and statistical tests for the sampled
estimators (bounds derived from the exact variance, fixed seeds)."""

import autograd
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minifim
from minifim.core.scores import expand_gradients
from minifim.geometry.curvature import FISHER_KINDS, output_seeds

from .cases import (
    ACTIVATIONS,
    CASES,
    LIKELIHOODS,
    assert_close,
    enumerated_fisher,
    expected_hessian,
    get_case,
    homogeneous_to_flat,
    kl_outputs,
    make_case,
    outcomes,
)


def _scores(case, y, method="autograd"):
    return minifim.per_sample_scores(case.net, case.theta, case.X, y, backend=method)


# --- closed forms ---------------------------------------------------------------------------------
def test_logistic_regression_closed_form():
    """``F = X~^T diag(p (1-p)) X~ / N`` with ``X~ = [X, 1]``: minifim's flat order ``w, b``
    is exactly the bias-column order for one output."""
    case = get_case("bernoulli-identity-3x1")
    Xt = np.hstack([case.X, np.ones((case.N, 1))])
    p = 1 / (1 + np.exp(-(Xt @ case.theta)))
    ref = Xt.T @ (Xt * (p * (1 - p))[:, None]) / case.N
    assert_close(minifim.true_fisher(case.net, case.theta, case.X), ref, 1e-14)
    y = case.y[:, 0]
    ref_ef = Xt.T @ (Xt * ((y - p) ** 2)[:, None]) / case.N
    assert_close(minifim.empirical_fisher(case.net, case.theta, case.X, case.y), ref_ef, 1e-14)


def test_linear_gaussian_closed_form():
    """``F = I_C kron X~^T X~ / (sigma^2 N)`` in the homogeneous layout ``[W | b]``, mapped to
    minifim's flat order ``W (C, D) row-major, b``."""
    case = get_case("gaussian-identity-4x3")
    C, D, sigma = 3, 4, case.net.likelihood.sigma
    Xt = np.hstack([case.X, np.ones((case.N, 1))])
    hom = np.kron(np.eye(C), Xt.T @ Xt) / (sigma**2 * case.N)
    idx = homogeneous_to_flat(C, D)
    ref = hom[np.ix_(idx, idx)]
    F = minifim.true_fisher(case.net, case.theta, case.X)
    assert_close(F, ref, 1e-14)
    # the model is linear in theta: the Hessian of the NLL is the Fisher, for any targets
    assert_close(minifim.hessian(case.net, case.theta, case.X, case.y), ref, 1e-13)


def test_softmax_regression_closed_form():
    """REFERENCES.md: ``F = 1/N sum_n (diag(p_n) - p_n p_n^T) kron x~_n x~_n^T`` (homogeneous
    layout, bias as a last input column), permuted to minifim's ``W then b`` order."""
    case = get_case("categorical-identity-3x4")
    C, D = 4, 3
    Xt = np.hstack([case.X, np.ones((case.N, 1))])
    logits = case.net.forward(case.theta, case.X)
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    hom = sum(np.kron(np.diag(p) - np.outer(p, p), np.outer(x, x)) for p, x in zip(P, Xt))
    idx = homogeneous_to_flat(C, D)
    ref = hom[np.ix_(idx, idx)] / case.N
    assert_close(minifim.true_fisher(case.net, case.theta, case.X), ref, 1e-14)
    assert_close(minifim.hessian(case.net, case.theta, case.X, case.y), ref, 1e-13)


# --- the true Fisher by independent routes ----------------------------------------------------------
def test_true_fisher_equals_ggn(case):
    F = minifim.true_fisher(case.net, case.theta, case.X)
    assert F.shape == (case.P, case.P)
    assert_close(minifim.ggn(case.net, case.theta, case.X), F, 1e-13)
    assert_close(minifim.ggn(case.net, case.theta, case.X, case.y), F, 1e-13)


def test_true_fisher_equals_enumerated_score_outer_products(case):
    """``F = 1/N sum_n sum_y p(y | x_n) s_n(y) s_n(y)^T`` with scores from the autograd route
    for every label (all 2^C joint outcomes for Bernoulli)."""
    assert_close(
        minifim.true_fisher(case.net, case.theta, case.X),
        enumerated_fisher(case.net, case.theta, case.X),
        1e-13,
    )


def test_true_fisher_equals_expected_hessian(case):
    """``F = E_{y ~ p_theta}[Hessian_theta -log p(y | x)]`` (autograd Hessian, enumerated)."""
    assert_close(
        minifim.true_fisher(case.net, case.theta, case.X),
        expected_hessian(case.net, case.theta, case.X),
        1e-13,
    )


def test_true_fisher_equals_jacobian_sandwich(case):
    J = minifim.output_jacobians(case.net, case.theta, case.X, backend="autograd")
    Lam = case.net.likelihood.fisher_outputs(case.net.forward(case.theta, case.X))
    ref = np.einsum("ncp,ncd,ndq->pq", J, Lam, J) / case.N
    assert_close(minifim.true_fisher(case.net, case.theta, case.X), ref, 1e-13)


@pytest.mark.parametrize(
    "name",
    [
        "categorical-tanh-3x4x3",
        "bernoulli-softplus-3x4x3",
        "gaussian-sigmoid-3x4x3",
        "categorical-tanh-2x3x4x2",
        "gaussian-identity-4x3",
    ],
)
def test_kl_second_order_expansion(name):
    """``KL(p_theta || p_{theta + eps d}) / (eps^2/2 d^T F d) = 1 + O(eps)``: with the KL in closed
    form per likelihood, the relative error shrinks ~10x per decade of eps (asserted: at least
    5x) and is below 1e-3 at eps = 1e-4. Exactly quadratic for a linear-Gaussian model."""
    case = get_case(name)
    F = minifim.true_fisher(case.net, case.theta, case.X)
    d = np.random.default_rng(0).standard_normal(case.P)
    d /= np.linalg.norm(d)
    f0 = case.net.forward(case.theta, case.X)
    errs = []
    for eps in (1e-2, 1e-3, 1e-4):
        kl = kl_outputs(
            case.net.likelihood, f0, case.net.forward(case.theta + eps * d, case.X)
        ).mean()
        errs.append(abs(kl / (0.5 * eps**2 * d @ F @ d) - 1))
    assert errs[1] <= 0.2 * errs[0] + 1e-8 and errs[2] <= 0.2 * errs[1] + 1e-8, errs
    assert errs[2] < 1e-3, errs


# --- empirical Fisher, Hessian ---------------------------------------------------------------------
def test_empirical_fisher_is_score_gram(case):
    S = _scores(case, case.y)
    EF = minifim.empirical_fisher(case.net, case.theta, case.X, case.y)
    assert_close(EF, S.T @ S / case.N, 1e-13)
    g = S.mean(axis=0)
    sq = minifim.square_of_mean_gradient(case.net, case.theta, case.X, case.y)
    assert_close(sq, np.outer(g, g), 1e-13)
    assert_close(
        minifim.square_of_mean_gradient(case.net, case.theta, case.X, case.y, diagonal=True),
        g * g,
        1e-13,
    )


def test_argmax_fisher_is_empirical_at_the_mode(case):
    lik = case.net.likelihood
    mode = lik.most_likely(case.net.forward(case.theta, case.X))
    S = _scores(case, mode)
    assert_close(
        minifim.curvature_matrix(case.net, case.theta, case.X, fisher="argmax"),
        S.T @ S / case.N,
        1e-13,
    )


def test_hessian_central_differences_of_gradient(case):
    """Columns of H against ``(g(theta + h e_i) - g(theta - h e_i)) / 2h`` of the autograd
    gradient of the mean NLL, ``h = 1e-5``; relu cases have a piecewise-linear network whose
    Hessian is the GGN of that linear piece (no kink lies within ``h`` of these inputs)."""
    net, h = case.net, 1e-5
    lik = net.likelihood

    def nll(th):
        return -autograd.numpy.mean(lik.log_prob(net.apply(th, case.X), case.y))

    g = autograd.grad(nll)
    H = minifim.hessian(net, case.theta, case.X, case.y)
    fd = np.stack(
        [(g(case.theta + e) - g(case.theta - e)) / (2 * h) for e in np.eye(case.P) * h], axis=1
    )
    assert_close(H, fd, 1e-7)
    assert_close(H, H.T, 1e-14)


def test_hessian_of_linear_model_is_fisher():
    """With identity activations ``f`` is bilinear, not linear, in ``theta``; with one layer it is
    linear and the NLL Hessian equals the GGN = Fisher for every likelihood."""
    for name in ("bernoulli-identity-3x1", "categorical-identity-3x4", "gaussian-identity-4x3"):
        case = get_case(name)
        assert_close(
            minifim.hessian(case.net, case.theta, case.X, case.y),
            minifim.true_fisher(case.net, case.theta, case.X),
            1e-13,
        )


# --- sampled estimators: statistical tests with bounds from the exact variance -----------------------
def _exact_moments(case):
    """Exact per-entry mean ``F`` and variance of the one-label estimator
    ``1/N sum_n s_n(y_n) s_n(y_n)^T``, ``y_n ~ p_theta(y | x_n)`` (enumeration over labels)."""
    f = case.net.forward(case.theta, case.X)
    first = np.zeros((case.N, case.P, case.P))
    second = np.zeros((case.N, case.P, case.P))
    for w, y in outcomes(case.net.likelihood, f):
        S = _scores(case, y, "backprop")
        O = S[:, :, None] * S[:, None, :]
        first += w[:, None, None] * O
        second += w[:, None, None] * O**2
    var = (second - first**2).sum(axis=0) / case.N**2
    return first.mean(axis=0), var


STAT_CASES = ["categorical-tanh-3x4x3", "bernoulli-tanh-3x4x3"]


@pytest.mark.parametrize("name", STAT_CASES)
def test_mc_fisher_unbiased_with_exact_variance(name):
    """``mc_fisher(k)`` averages ``k`` independent one-label estimators, so each entry has mean
    ``F_ij`` and variance ``var_ij / k`` (exact, by enumeration). With k = 400 the CLT makes
    ``z_ij = (F_k - F)_ij / sqrt(var_ij / k)`` standard normal; ``max |z| < 5.5`` over the
    ``P^2`` entries has false-alarm probability < 1e-4 (Bonferroni). A wrong ``1/sqrt(k)`` seed
    scaling or biased labels would give |z| in the hundreds (the argmax check below)."""
    case = get_case(name)
    F, var = _exact_moments(case)
    assert_close(F, minifim.true_fisher(case.net, case.theta, case.X), 1e-13)
    k = 400
    Fk = minifim.mc_fisher(case.net, case.theta, case.X, k, rng=0)
    z = (Fk - F) / np.sqrt(var / k)
    assert np.abs(z).max() < 5.5, np.abs(z).max()


@pytest.mark.parametrize("name", STAT_CASES)
def test_empirical_fisher_at_model_labels_is_unbiased(name):
    """Labels drawn from the model: the empirical Fisher over R = 2000 independent label draws
    (the inputs tiled R times, one ``empirical_fisher`` call) has per-entry variance
    ``var_ij / R``; ``max |z| < 5.5`` as above. Power: the same statistic for the labels at the
    mode (argmax Fisher) exceeds 5.5 by far."""
    case = get_case(name)
    F, var = _exact_moments(case)
    R = 2000
    X = np.tile(case.X, (R, 1))
    lik = case.net.likelihood
    y = lik.sample(case.net.forward(case.theta, X), np.random.default_rng(1))
    EF = minifim.empirical_fisher(case.net, case.theta, X, y)
    z = (EF - F) / np.sqrt(var / R)
    assert np.abs(z).max() < 5.5, np.abs(z).max()
    mode = minifim.curvature_matrix(case.net, case.theta, case.X, fisher="argmax")
    assert np.abs((mode - F) / np.sqrt(var / R)).max() > 20


@pytest.mark.parametrize("name", STAT_CASES)
def test_mc_fisher_error_shrinks_like_inverse_sqrt(name):
    """``E ||F_k - F||_F^2 = V / k`` with ``V = sum_ij var_ij`` exact. For k in (1, 8, 64) the mean
    over 30 replicates of ``k ||F_k - F||^2 / V`` is 1 within 4.5 of its standard errors (CLT
    on the replicates): the RMS error falls like ``1/sqrt(k)`` with the exact constant."""
    case = get_case(name)
    F, var = _exact_moments(case)
    V = var.sum()
    for k in (1, 8, 64):
        e = np.array(
            [
                k
                * np.sum(
                    (minifim.mc_fisher(case.net, case.theta, case.X, k, rng=1000 * k + r) - F) ** 2
                )
                / V
                for r in range(30)
            ]
        )
        se = e.std(ddof=1) / np.sqrt(len(e))
        assert abs(e.mean() - 1) < 4.5 * se, (k, e.mean(), se)


def test_mc_fisher_reproducible_and_matches_explicit_labels():
    """The documented estimator exactly: ``k`` label sets from ``likelihood.sample`` with the
    same generator, averaged empirical Fishers (a sharp check a statistical test cannot be)."""
    case = get_case("categorical-tanh-3x4x3")
    net, theta, X = case.net, case.theta, case.X
    k = 50
    M = minifim.mc_fisher(net, theta, X, k, rng=7)
    np.testing.assert_array_equal(
        M, minifim.mc_fisher(net, theta, X, k, rng=np.random.default_rng(7))
    )
    ys = net.likelihood.sample(net.forward(theta, X), np.random.default_rng(7), k)
    ref = sum(minifim.empirical_fisher(net, theta, X, y) for y in ys) / k
    assert_close(M, ref, 1e-13)
    assert not np.allclose(M, minifim.mc_fisher(net, theta, X, k, rng=8))


# --- structure: symmetry, PSD, rank -----------------------------------------------------------
def _all_kinds(case):
    kw = dict(y=case.y, n_samples=2, rng=3)
    return {
        k: minifim.curvature_matrix(case.net, case.theta, case.X, fisher=k, **kw)
        for k in FISHER_KINDS
    }


def test_symmetric_psd(case):
    for kind, M in _all_kinds(case).items():
        assert_close(M, M.T, 1e-15, kind)
        w = np.linalg.eigvalsh(M)
        assert w.min() >= -1e-13 * max(w.max(), 1e-300), (kind, w.min())


@pytest.mark.parametrize("N", [1, 2, 3])
def test_rank_bound_categorical(N):
    """``rank(F) <= N (C - 1)`` for softmax outputs, attained for generic inputs (P = 45)."""
    case = make_case((3, 6, 3), "tanh", "categorical", N=N, seed=N)
    F = minifim.true_fisher(case.net, case.theta, case.X)
    w = np.linalg.eigvalsh(F)
    assert int(np.sum(w > 1e-10 * w.max())) == N * 2
    EF = minifim.empirical_fisher(case.net, case.theta, case.X, case.y)
    assert np.linalg.matrix_rank(EF) <= N


# --- diagonal, blocks, chunks, reduction --------------------------------------------------------
def test_diagonal_and_blocks_are_dense_entries(case):
    kw = dict(n_samples=2, rng=3)
    for kind, M in _all_kinds(case).items():
        y = case.y if kind == "empirical" else None
        d = minifim.fisher_diagonal(case.net, case.theta, case.X, y, kind, **kw)
        assert_close(d, np.diag(M), 1e-13, kind)
        blocks = minifim.block_diagonal(case.net, case.theta, case.X, y, kind, **kw)
        assert len(blocks) == case.net.num_layers
        for b, sl in zip(blocks, case.net.layer_param_slices()):
            assert_close(b, M[sl, sl], 1e-13, kind)


@pytest.mark.parametrize(
    "name", ["categorical-tanh-2x3x4x2", "bernoulli-relu-3x4x3", "gaussian-softplus-2x5x2"]
)
def test_chunked_equals_unchunked(name):
    case = get_case(name)
    net, theta, X, y = case.net, case.theta, case.X, case.y
    for kind in FISHER_KINDS:
        for n_samples in (1, 3) if kind == "mc" else (1,):
            kw = dict(y=y, fisher=kind, n_samples=n_samples, rng=5)
            ref = minifim.curvature_matrix(net, theta, X, **kw)
            dref = minifim.fisher_diagonal(net, theta, X, **kw)
            bref = minifim.block_diagonal(net, theta, X, **kw)
            for chunk in (1, 2, 3, case.N + 4):
                assert_close(
                    minifim.curvature_matrix(net, theta, X, chunk_size=chunk, **kw),
                    ref,
                    1e-14,
                    f"{kind} chunk {chunk}",
                )
                assert_close(
                    minifim.fisher_diagonal(net, theta, X, chunk_size=chunk, **kw), dref, 1e-14
                )
                for b, b0 in zip(
                    minifim.block_diagonal(net, theta, X, chunk_size=chunk, **kw), bref
                ):
                    assert_close(b, b0, 1e-14)


def test_reduction_sum_is_n_times_mean(case):
    net, theta, X, y, N = case.net, case.theta, case.X, case.y, case.N
    pairs = [
        (minifim.true_fisher, (), {}),
        (minifim.empirical_fisher, (y,), {}),
        (minifim.mc_fisher, (2, 9), {}),
        (minifim.ggn, (), {}),
        (minifim.hessian, (y,), {}),
        (minifim.fisher_diagonal, (y, "empirical"), {}),
        (minifim.square_of_mean_gradient, (y,), {"diagonal": True}),
    ]
    for fn, args, kw in pairs:
        mean = fn(net, theta, X, *args, **kw)
        total = fn(net, theta, X, *args, reduction="sum", **kw)
        if fn is minifim.square_of_mean_gradient:
            assert_close(total, N**2 * mean, 1e-13, fn.__name__)
        else:
            assert_close(total, N * mean, 1e-13, fn.__name__)
    for b, b0 in zip(
        minifim.block_diagonal(net, theta, X, reduction="sum"),
        minifim.block_diagonal(net, theta, X),
    ):
        assert_close(b, N * b0, 1e-13)


def test_curvature_factors_reconstruct_the_matrix(case):
    for kind in ("true", "empirical"):
        M = minifim.curvature_matrix(case.net, case.theta, case.X, case.y, kind, reduction="sum")
        acc = np.zeros_like(M)
        for acts, Bs in minifim.curvature_factors(
            case.net, case.theta, case.X, case.y, kind, chunk_size=2
        ):
            U = expand_gradients(case.net, acts, Bs)
            acc += np.einsum("nkp,nkq->pq", U, U)
        assert_close(acc, M, 1e-13, kind)


def test_output_seeds_square_to_the_output_curvature():
    case = get_case("categorical-tanh-3x4x3")
    f = case.net.forward(case.theta, case.X)
    lam = case.net.likelihood.fisher_outputs(f)
    for kind in ("true", "ggn"):
        E = output_seeds(case.net, f, kind)
        assert_close(np.einsum("nkc,nkd->ncd", E, E), lam, 1e-14, kind)
    with pytest.raises(ValueError, match="fisher: expected one of"):
        output_seeds(case.net, f, "fake")


# --- property tests -------------------------------------------------------------------------------
@st.composite
def small_models(draw):
    depth = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 4)) for _ in range(depth + 1)]
    lik = draw(st.sampled_from(LIKELIHOODS))
    act = draw(st.sampled_from(ACTIVATIONS))
    N = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**20))
    return make_case(
        tuple(sizes), act, lik, sigma=draw(st.sampled_from([0.5, 1.0, 2.0])), N=N, seed=seed
    )


@given(small_models())
def test_property_fisher_identities(case):
    net, theta, X = case.net, case.theta, case.X
    F = minifim.true_fisher(net, theta, X)
    C = net.output_dim
    assert_close(F, F.T, 1e-15)
    w = np.linalg.eigvalsh(F)
    assert w.min() >= -1e-13 * max(w.max(), 1e-300)
    bound = case.N * (C - 1 if net.likelihood.name == "categorical" else C)
    assert int(np.sum(w > 1e-10 * max(w.max(), 1e-300))) <= bound
    assert_close(minifim.ggn(net, theta, X), F, 1e-13)
    assert_close(enumerated_fisher(net, theta, X), F, 1e-12)
    assert_close(minifim.fisher_diagonal(net, theta, X), np.diag(F), 1e-13)
    S = minifim.per_sample_scores(net, theta, X, case.y)
    assert_close(S, minifim.per_sample_scores(net, theta, X, case.y, backend="autograd"), 1e-12)
    assert_close(minifim.empirical_fisher(net, theta, X, case.y), S.T @ S / case.N, 1e-12)


# --- bad input -----------------------------------------------------------------------------------------
def _curvature_calls(case):
    y = case.y
    return {
        "true_fisher": lambda th, X, **kw: minifim.true_fisher(case.net, th, X, **kw),
        "empirical_fisher": lambda th, X, **kw: minifim.empirical_fisher(case.net, th, X, y, **kw),
        "mc_fisher": lambda th, X, **kw: minifim.mc_fisher(case.net, th, X, 2, 0, **kw),
        "ggn": lambda th, X, **kw: minifim.ggn(case.net, th, X, **kw),
        "fisher_diagonal": lambda th, X, **kw: minifim.fisher_diagonal(case.net, th, X, **kw),
        "block_diagonal": lambda th, X, **kw: minifim.block_diagonal(case.net, th, X, **kw),
        "curvature_matrix": lambda th, X, **kw: minifim.curvature_matrix(
            case.net, th, X, y, "empirical", **kw
        ),
        "curvature_factors": lambda th, X, **kw: minifim.curvature_factors(
            case.net, th, X, **{k: v for k, v in kw.items() if k != "reduction"}
        ),
    }


def test_bad_theta_and_X():
    case = get_case("categorical-tanh-3x4x3")
    theta, X = case.theta, case.X
    calls = _curvature_calls(case)
    calls["hessian"] = lambda th, X, **kw: minifim.hessian(case.net, th, X, case.y)
    calls["square_of_mean_gradient"] = lambda th, X, **kw: minifim.square_of_mean_gradient(
        case.net, th, X, case.y
    )
    bad = [
        ((theta[:-1], X), ValueError, r"theta: expected shape \(31,\)"),
        ((np.append(theta, 0.0), X), ValueError, r"theta: expected shape \(31,\)"),
        ((np.where(theta > 0, np.nan, theta), X), ValueError, "theta: expected finite"),
        ((theta, X[0]), ValueError, r"X: expected a 2-D array"),
        ((theta, X[:, :2]), ValueError, "X: expected 3 input features"),
        ((theta, np.where(X > 0, np.inf, X)), ValueError, "X: expected finite"),
        ((theta, X[:0]), ValueError, "X: expected at least one sample"),
        ((theta, "X"), TypeError, "X: expected a real numeric array"),
    ]
    for fn in calls.values():
        for args, err, msg in bad:
            with pytest.raises(err, match=msg):
                fn(*args)


def test_bad_options():
    case = get_case("categorical-tanh-3x4x3")
    theta, X = case.theta, case.X
    for name, fn in _curvature_calls(case).items():
        if name != "curvature_factors":
            with pytest.raises(
                ValueError,
                match=r"reduction: expected one of \['mean', 'sum'\], "
                r"received 'avg'",
            ):
                fn(theta, X, reduction="avg")
        for chunk, err in [
            (0, ValueError),
            (-2, ValueError),
            (1.5, TypeError),
            (True, TypeError),
            ("2", TypeError),
        ]:
            with pytest.raises(err, match="chunk_size: expected an integer"):
                fn(theta, X, chunk_size=chunk)
    for fn in (
        minifim.curvature_matrix,
        minifim.fisher_diagonal,
        minifim.block_diagonal,
        minifim.curvature_factors,
    ):
        with pytest.raises(
            ValueError,
            match=r"fisher: expected one of \['argmax', 'empirical', "
            r"'ggn', 'mc', 'true'\], received 'fake'",
        ):
            fn(case.net, theta, X, None, "fake")
        with pytest.raises(TypeError, match="fisher: expected one of"):
            fn(case.net, theta, X, None, 1)
        with pytest.raises(ValueError, match="y: the empirical Fisher needs the data targets"):
            fn(case.net, theta, X, None, "empirical")
        with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
            fn(case.net, theta, X, None, "mc")
        with pytest.raises(ValueError, match="n_samples: expected an integer >= 1, received 0"):
            fn(case.net, theta, X, None, "mc", n_samples=0, rng=0)
    with pytest.raises(TypeError, match="rng: mc_fisher samples labels"):
        minifim.mc_fisher(case.net, theta, X, 2)
    with pytest.raises(TypeError, match="n_samples: expected an integer"):
        minifim.mc_fisher(case.net, theta, X, 2.5, 0)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        minifim.mc_fisher(case.net, theta, X, 2, "seed")
    with pytest.raises(ValueError, match="reduction"):
        minifim.hessian(case.net, theta, X, case.y, reduction="none")


def test_bad_targets():
    cat = get_case("categorical-tanh-3x4x3")
    bern = get_case("bernoulli-tanh-3x4x3")
    gauss = get_case("gaussian-tanh-3x4x3")
    fns = [
        minifim.empirical_fisher,
        minifim.hessian,
        minifim.ggn,
        minifim.square_of_mean_gradient,
        lambda net, th, X, y: minifim.fisher_diagonal(net, th, X, y, "empirical"),
        lambda net, th, X, y: minifim.block_diagonal(net, th, X, y, "empirical"),
    ]
    bad = [
        (cat, np.full(5, 3), ValueError, r"y: expected labels in \[0, 3\)"),
        (cat, np.full(5, -1), ValueError, r"y: expected labels in \[0, 3\)"),
        (cat, np.full(5, 0.5), ValueError, "y: expected integer class labels"),
        (cat, np.full(5, np.nan), ValueError, "y: expected finite integer labels"),
        (cat, np.zeros(4, int), ValueError, r"y: expected shape \(5,\), received shape \(4,\)"),
        (cat, np.eye(3)[[0, 1, 2, 0, 1]], ValueError, "not one-hot rows"),
        (bern, np.full((5, 3), 0.5), ValueError, r"y: expected Bernoulli labels in \{0, 1\}"),
        (bern, np.full((5, 3), np.inf), ValueError, "y: expected finite"),
        (bern, np.zeros(5), ValueError, r"y: expected 0/1 labels of shape \(5, 3\)"),
        (gauss, np.full((5, 3), np.nan), ValueError, "y: expected finite"),
        (gauss, np.zeros((5, 2)), ValueError, r"y: expected real targets of shape \(5, 3\)"),
    ]
    for c, y, err, msg in bad:
        for fn in fns:
            with pytest.raises(err, match=msg):
                fn(c.net, c.theta, c.X, y)


def test_all_cases_are_distinct():
    assert len({c.name for c in CASES}) == len(CASES)
