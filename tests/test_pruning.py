"""Pruning: OBS is exact on a quadratic loss, OBD = OBS for a diagonal curvature, invariants."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.linalg import hadamard

import minifim
from minifim.methods.pruning import prune, prune_path

from .cases import make_case
from .tolerances import check, cond, rel_err, solve_rtol

SIGMA = 0.7


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


def _linear_gaussian(N=40, D=6, C=2, seed=0):
    """Linear-Gaussian regression and its exact least-squares (= maximum-likelihood) theta."""
    rng = np.random.default_rng(seed)
    net = minifim.MLP([D, C], activation="identity", likelihood="gaussian", sigma=SIGMA)
    X = rng.standard_normal((N, D))
    y = X @ rng.standard_normal((D, C)) + 0.3 + SIGMA * rng.standard_normal((N, C))
    Xt = np.hstack([X, np.ones((N, 1))])
    beta = np.linalg.lstsq(Xt, y, rcond=None)[0]  # (D + 1, C)
    theta = net.flatten([(beta[:D].T, beta[D])])
    return net, theta, X, y, Xt


@pytest.mark.parametrize("block_size", [1, 3])
def test_obs_predicted_increase_is_exact_for_a_quadratic_loss(block_size):
    """Linear-Gaussian: the mean NLL is exactly quadratic with Hessian = the mean Fisher."""
    net, theta, X, y, _ = _linear_gaussian()
    base = minifim.loss(net, theta, X, y)
    path = prune_path(net, theta, X, y, [0.0, 0.25, 0.5, 0.75, 0.9], "obs", block_size=block_size)
    assert path[0].predicted_increase == 0.0 and np.array_equal(path[0].theta, theta)
    for res in path[1:]:
        actual = minifim.loss(net, res.theta, X, y) - base
        assert actual > 0
        assert abs(res.predicted_increase - actual) <= 1e-10 * actual


def test_obs_equals_least_squares_refit_on_the_kept_weights():
    """The OBS result is the exact minimiser over the kept weights: a refit per output."""
    net, theta, X, y, Xt = _linear_gaussian()
    D, C = net.sizes
    for res in prune_path(net, theta, X, y, [0.3, 0.6, 0.8], "obs", block_size=2):
        Wmask = res.mask[net.layer_slices[0][0]].reshape(C, D)
        W, b = np.zeros((C, D)), np.zeros(C)
        for c in range(C):
            cols = np.append(np.flatnonzero(Wmask[c]), D)  # kept inputs and the bias
            beta = np.linalg.lstsq(Xt[:, cols], y[:, c], rcond=None)[0]
            W[c, cols[:-1]], b[c] = beta[:-1], beta[-1]
        assert _rel(res.theta, net.flatten([(W, b)])) < 1e-10


def _orthogonal_design():
    """Inputs whose columns, with the bias column, are orthogonal: a diagonal Fisher."""
    H = hadamard(8).astype(float)
    X = H[:, 1:5] * np.array([0.3, 1.0, 2.0, 0.7])
    net = minifim.MLP([4, 2], activation="identity", likelihood="gaussian", sigma=SIGMA)
    return net, X


def test_obd_equals_obs_when_the_fisher_is_diagonal():
    net, X = _orthogonal_design()
    F = minifim.true_fisher(net, net.init(0), X)
    assert np.abs(F - np.diag(np.diag(F))).max() < 1e-14
    theta = np.random.default_rng(1).standard_normal(net.num_params)
    levels = [0.125, 0.25, 0.5, 0.75]
    for damping in (0.0, 0.1):
        obd = prune_path(net, theta, X, None, levels, "obd", damping=damping)
        obs = prune_path(net, theta, X, None, levels, "obs", damping=damping)
        for a, b in zip(obd, obs):
            assert np.array_equal(a.pruned, b.pruned) and np.array_equal(a.mask, b.mask)
            assert _rel(b.theta, a.theta) < 1e-13  # the OBS update is then zero
            assert _rel(b.scores, a.scores) < 1e-13
            assert abs(b.predicted_increase - a.predicted_increase) <= (
                1e-13 * a.predicted_increase
            )


def test_obd_equals_obs_with_a_given_diagonal_curvature(case):
    d = minifim.fisher_diagonal(case.net, case.theta, case.X) + 0.01
    a = prune(case.net, case.theta, None, None, 0.5, "obd", curvature=d)
    b = prune(case.net, case.theta, None, None, 0.5, "obs", curvature=np.diag(d), block_size=2)
    assert np.array_equal(np.sort(a.pruned), np.sort(b.pruned))
    assert _rel(b.theta, a.theta) < 1e-13
    assert abs(a.predicted_increase - b.predicted_increase) <= 1e-13 * a.predicted_increase


@pytest.mark.parametrize("block_size", [1, 4])
def test_obs_closed_form_and_pinned_zeros(case, block_size):
    """Sequential OBS = the joint constrained minimiser for its final set Q (closed form with an
    independently computed inverse); pruned weights are exactly zero along the path."""
    net, theta, damping = case.net, case.theta, 1e-2
    A = minifim.true_fisher(net, theta, case.X) + damping * np.eye(net.num_params)
    Ainv = np.linalg.inv(A)
    weights = np.zeros(net.num_params, bool)
    for ws, _ in net.layer_slices:
        weights[ws] = True
    path = prune_path(
        net, theta, case.X, None, [0.2, 0.5, 0.8], "obs", damping=damping, block_size=block_size
    )
    prev = np.ones(net.num_params, bool)
    for level, res in zip([0.2, 0.5, 0.8], path):
        K = int(round(level * weights.sum()))
        assert res.pruned.size == K == (~res.mask).sum() and len(set(res.pruned)) == K
        assert np.all(res.theta[~res.mask] == 0.0)  # exactly, not approximately
        assert np.all(res.mask[~weights])  # biases are never removed
        assert np.all(~res.mask[~prev])  # nested: pruned stays pruned
        prev = res.mask
        Q = res.pruned
        z = np.linalg.solve(Ainv[np.ix_(Q, Q)], theta[Q])
        # an inverse (cond A) then a solve with its (Q, Q) block (cond of that block), in the
        # reference; the OBS route downdates the same inverse, a backward-stable elimination
        tol = solve_rtol(cond(A) + cond(Ainv[np.ix_(Q, Q)]), net.num_params)
        check(rel_err(res.theta, theta - Ainv[:, Q] @ z), tol, "theta")
        delta = res.theta - theta
        check(
            abs(res.predicted_increase - 0.5 * delta @ A @ delta) / res.predicted_increase,
            2 * tol,
            "increase as a quadratic form",
        )  # quadratic in delta: twice its error
        check(
            abs(res.predicted_increase - 0.5 * theta[Q] @ z) / res.predicted_increase,
            tol,
            "increase as theta_Q^T z",
        )
        # compensation never costs more than zeroing the same weights
        dz = np.where(res.mask, 0.0, -theta)
        assert res.predicted_increase <= 0.5 * dz @ A @ dz * (1 + 1e-12)


def test_first_obs_step_is_the_single_weight_formula():
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=2)
    net, theta, damping = case.net, case.theta, 1e-3
    A = minifim.true_fisher(net, theta, case.X) + damping * np.eye(net.num_params)
    Ainv = np.linalg.inv(A)
    n_weights = 3 * 4 + 4 * 3
    res = prune(net, theta, case.X, None, 1 / n_weights, "obs", damping=damping)
    weights = np.concatenate([np.arange(s.start, s.stop) for s, _ in net.layer_slices])
    sal = theta[weights] ** 2 / (2 * np.diag(Ainv)[weights])
    q = weights[np.argmin(sal)]
    assert res.pruned.tolist() == [q]
    tol = solve_rtol(cond(A), net.num_params)  # both sides from an inverse of A
    check(abs(res.scores[0] - sal.min()) / sal.min(), tol, "saliency")
    check(rel_err(res.theta, theta - theta[q] / Ainv[q, q] * Ainv[:, q]), tol, "theta")


def test_recomputing_a_constant_curvature_changes_nothing():
    """Linear-Gaussian: the Fisher does not depend on theta, so recomputing it (fresh inverse
    on the remaining set) reproduces the downdated one-shot path."""
    net, theta, X, y, _ = _linear_gaussian()
    a = prune_path(net, theta, X, y, [0.25, 0.5, 0.75], "obs", block_size=2)
    b = prune_path(net, theta, X, y, [0.25, 0.5, 0.75], "obs", block_size=2, recompute_every=1)
    for ra, rb in zip(a, b):
        assert np.array_equal(ra.pruned, rb.pruned)
        assert _rel(rb.theta, ra.theta) < 1e-10
        assert abs(rb.predicted_increase - ra.predicted_increase) < 1e-10 * ra.predicted_increase


def test_recomputed_obs_second_step_uses_the_curvature_at_the_updated_theta():
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=2)
    net, theta, X, damping = case.net, case.theta, case.X, 1e-3
    P = net.num_params
    weights = np.concatenate([np.arange(s.start, s.stop) for s, _ in net.layer_slices])

    def step(th, free):
        A = minifim.true_fisher(net, th, X) + damping * np.eye(P)
        Hinv = np.linalg.inv(A[np.ix_(free, free)])
        cand = np.flatnonzero(np.isin(free, weights))
        sal = th[free[cand]] ** 2 / (2 * np.diag(Hinv)[cand])
        j = cand[np.argmin(sal)]
        new = th.copy()
        new[free] -= th[free[j]] / Hinv[j, j] * Hinv[:, j]
        new[free[j]] = 0.0
        return new, free[j], free[np.arange(free.size) != j]

    th1, q1, free = step(theta, np.arange(P))
    th2, q2, _ = step(th1, free)
    res = prune(net, theta, X, None, 2 / weights.size, "obs", damping=damping, recompute_every=1)
    assert res.pruned.tolist() == [q1, q2]
    A = minifim.true_fisher(net, theta, X) + damping * np.eye(P)
    check(rel_err(res.theta, th2), 2 * solve_rtol(cond(A), P), "two recomputed steps")
    assert res.theta[q1] == 0.0 == res.theta[q2]
    one_shot = prune(net, theta, X, None, 2 / weights.size, "obs", damping=damping)
    assert _rel(one_shot.theta, th2) > 1e-6  # the recomputation does change the result


def test_magnitude_and_obd_rankings(case):
    net, theta = case.net, case.theta
    weights = np.concatenate([np.arange(s.start, s.stop) for s, _ in net.layer_slices])
    K = int(round(0.4 * weights.size))
    res = prune(net, theta, None, None, 0.4, "magnitude")
    assert set(res.pruned) == set(weights[np.argsort(np.abs(theta[weights]))[:K]])
    assert np.isnan(res.predicted_increase)
    assert np.array_equal(res.theta, np.where(res.mask, theta, 0.0))
    F = minifim.empirical_fisher(net, theta, case.X, case.y)
    res = prune(net, theta, case.X, case.y, 0.4, "obd", fisher="empirical", damping=0.5)
    sal = 0.5 * (np.diag(F) + 0.5) * theta**2
    assert set(res.pruned) == set(weights[np.argsort(sal[weights])[:K]])
    assert abs(res.predicted_increase - sal[res.pruned].sum()) <= 1e-12 * sal.sum()
    every = prune(net, theta, None, None, 0.5, "magnitude", prunable="all")
    assert (~every.mask).sum() == int(round(0.5 * net.num_params))


def test_custom_prunable_mask():
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=2)
    mask = np.zeros(case.net.num_params, bool)
    mask[case.net.layer_slices[0][0]] = True  # first-layer weights only
    res = prune(case.net, case.theta, case.X, None, 0.5, "obs", prunable=mask, damping=0.1)
    assert set(res.pruned) <= set(np.flatnonzero(mask)) and res.pruned.size == 6
    assert res.sparsity == 0.5


@given(
    seed=st.integers(0, 10_000),
    P=st.integers(2, 12),
    level=st.floats(0.0, 0.99),
    block=st.integers(1, 4),
)
def test_obs_on_random_quadratics(seed, P, level, block):
    """For any SPD curvature: cost = 1/2 delta^T A delta, pinned zeros, nested path."""
    rng = np.random.default_rng(seed)
    net = minifim.MLP([P - 1, 1], activation="identity", likelihood="gaussian")
    B = rng.standard_normal((P + 2, P))
    A = B.T @ B / P + 0.05 * np.eye(P)
    theta = rng.standard_normal(P)
    res = prune(net, theta, None, None, level, "obs", curvature=A, prunable="all", block_size=block)
    assert np.all(res.theta[~res.mask] == 0.0)
    delta = res.theta - theta
    assert abs(res.predicted_increase - 0.5 * delta @ A @ delta) <= 1e-9 * max(
        res.predicted_increase, 1e-12
    )


def test_bad_input():
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=2)
    net, theta, X = case.net, case.theta, case.X
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"sparsity: expected a fraction in \[0, 1\)"):
            prune(net, theta, X, None, bad)
    for bad in ("0.5", True, None):
        with pytest.raises(TypeError, match="sparsity"):
            prune(net, theta, X, None, bad)
    with pytest.raises(ValueError, match=r"sparsities\[1\]"):
        prune_path(net, theta, X, None, [0.5, 1.0])
    with pytest.raises(ValueError, match="non-decreasing"):
        prune_path(net, theta, X, None, [0.5, 0.2])
    with pytest.raises(ValueError, match="at least one"):
        prune_path(net, theta, X, None, [])
    with pytest.raises(ValueError, match="criterion"):
        prune(net, theta, X, None, 0.5, "random")
    with pytest.raises(ValueError, match="fisher"):
        prune(net, theta, X, None, 0.5, "obd", fisher="hessian")
    with pytest.raises(ValueError, match="damping"):
        prune(net, theta, X, None, 0.5, "obs", damping=-1.0)
    with pytest.raises(ValueError, match="block_size"):
        prune(net, theta, X, None, 0.5, "obs", block_size=0)
    with pytest.raises(ValueError, match="recompute_every"):
        prune(net, theta, X, None, 0.5, "obs", recompute_every=0, damping=0.1)
    with pytest.raises(ValueError, match="recompute_every"):
        prune(net, theta, X, None, 0.5, "obd", recompute_every=2)
    with pytest.raises(ValueError, match="recompute_every"):
        prune(net, theta, X, None, 0.5, "obs", recompute_every=2, curvature=np.eye(net.num_params))
    with pytest.raises(ValueError, match="prunable"):
        prune(net, theta, X, None, 0.5, prunable=np.ones(3, bool))
    with pytest.raises(ValueError, match="prunable"):
        prune(net, theta, X, None, 0.5, prunable=np.zeros(net.num_params, bool))
    with pytest.raises(ValueError, match="prunable"):
        prune(net, theta, X, None, 0.5, prunable="biases")
    with pytest.raises(ValueError, match="curvature"):
        prune(net, theta, None, None, 0.5, "obs", curvature=np.ones(net.num_params))
    with pytest.raises(ValueError, match="symmetric"):
        prune(net, theta, None, None, 0.5, "obs", curvature=np.triu(np.ones((net.num_params,) * 2)))
    with pytest.raises(ValueError, match="X"):
        prune(net, theta, None, None, 0.5, "obd")
    with pytest.raises(ValueError, match="y"):
        prune(net, theta, X, None, 0.5, "obd", fisher="empirical")
    with pytest.raises(ValueError, match="theta"):
        prune(net, theta[:-1], X, None, 0.5)
    # a softmax network's Fisher is singular: OBS without damping must say so
    with pytest.raises(ValueError, match="damping > 0"):
        prune(net, theta, X, None, 0.5, "obs")
    with minifim.memory_limit(1000), pytest.raises(minifim.MemoryBudgetError, match="obd"):
        prune(net, theta, X, None, 0.5, "obs", damping=0.1)
