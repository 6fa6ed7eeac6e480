"""Fisher merging: exact joint training for linear-Gaussian models; diag/block/full agree."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.linalg import block_diag

import minifim
from minifim.methods.merging import fisher_merge

from .cases import make_case
from .tolerances import check, cond, identity_tol, product_rtol, rel_err, solve_rtol

SIGMA = 0.7


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


def _merge_tol(A, thetas):
    """A full/block merge solves ``A theta = sum_i A_i theta_i`` (``A = sum_i A_i`` plus damping
    or prior): a backward-stable solve, ``c P EPS cond A`` (tolerances.solve_rtol); the
    right-hand side's product errors enter as a perturbation of the same order."""
    return solve_rtol(cond(A), A.shape[0])


def _least_squares(net, X, y):
    """The exact maximum-likelihood theta of a linear-Gaussian model (closed form)."""
    Xt = np.hstack([X, np.ones((X.shape[0], 1))])
    beta = np.linalg.lstsq(Xt, y, rcond=None)[0]  # (D + 1, C)
    D = net.input_dim
    return net.flatten([(beta[:D].T, beta[D])])


def _disjoint_linear_models(sizes=(11, 17, 25), D=4, C=2, seed=0):
    rng = np.random.default_rng(seed)
    net = minifim.MLP([D, C], activation="identity", likelihood="gaussian", sigma=SIGMA)
    w = rng.standard_normal((D, C))
    parts = []
    for n in sizes:  # different input distributions per model: the Fishers differ
        X = rng.standard_normal((n, D)) * rng.uniform(0.3, 2.0, D) + rng.standard_normal(D)
        parts.append((X, X @ w - 0.4 + SIGMA * rng.standard_normal((n, C))))
    thetas = [_least_squares(net, X, y) for X, y in parts]
    X_all = np.vstack([X for X, _ in parts])
    y_all = np.vstack([y for _, y in parts])
    return net, thetas, parts, _least_squares(net, X_all, y_all)


def test_full_fisher_merging_of_linear_gaussian_models_is_joint_training():
    net, thetas, parts, joint = _disjoint_linear_models()
    merged = fisher_merge(net, thetas, data=parts, structure="full")
    Fs = [minifim.true_fisher(net, t, X) for t, (X, _) in zip(thetas, parts)]
    Ns = [X.shape[0] for X, _ in parts]
    # the merge solves the joint normal equations; lstsq is within cond(X~) EPS of joint
    tol = _merge_tol(sum(n * F for n, F in zip(Ns, Fs)), thetas)
    check(rel_err(merged, joint), tol, "data")
    # the same with the curvatures given: N_i F_i as fishers, or F_i with weights N_i
    check(
        rel_err(
            fisher_merge(net, thetas, [n * F for n, F in zip(Ns, Fs)], structure="full"), joint
        ),
        tol,
        "N_i F_i",
    )
    check(
        rel_err(fisher_merge(net, thetas, Fs, structure="full", weights=Ns), joint), tol, "weights"
    )
    # a single dense layer: its one block is the whole Fisher
    check(rel_err(fisher_merge(net, thetas, data=parts, structure="block"), joint), tol, "block")
    # the isotropic average and the diagonal merge are not joint training here
    assert _rel(fisher_merge(net, thetas, structure="isotropic"), joint) > 1e-3
    assert _rel(fisher_merge(net, thetas, data=parts, structure="diag"), joint) > 1e-3


def _ridge(net, X, y, alpha, mu):
    """MAP of a linear-Gaussian model under the prior N(mu, alpha^-1 I) on the flat theta."""
    N, D = X.shape
    C = net.output_dim
    Xt = np.hstack([X, np.ones((N, 1))])
    # flat order: W (C, D) row-major, then b (C,); the Fisher is block diagonal over outputs
    A = np.zeros((net.num_params,) * 2)
    rhs = alpha * mu.copy()
    for c in range(C):
        idx = np.append(np.arange(c * D, (c + 1) * D), C * D + c)
        A[np.ix_(idx, idx)] += Xt.T @ Xt / SIGMA**2
        rhs[idx] += Xt.T @ y[:, c] / SIGMA**2
    return np.linalg.solve(A + alpha * np.eye(net.num_params), rhs)


@pytest.mark.parametrize("curvature", ["full", "block"])
def test_merging_ridge_models_with_the_prior_counted_once_is_joint_ridge(curvature):
    """Models trained with weight decay alpha/2 |theta - mu|^2 on the summed NLL: merging their
    Laplace posteriors with the prior counted once is the joint MAP, exactly."""
    net, _, parts, _ = _disjoint_linear_models()
    alpha = 3.0
    for mu in (np.zeros(net.num_params), np.linspace(-1, 1, net.num_params)):
        thetas = [_ridge(net, X, y, alpha, mu) for X, y in parts]
        joint = _ridge(
            net, np.vstack([X for X, _ in parts]), np.vstack([y for _, y in parts]), alpha, mu
        )
        merged = fisher_merge(
            net,
            thetas,
            data=parts,
            structure=curvature,
            prior_precision=alpha,
            prior_mean=None if not mu.any() else mu,
        )
        Fs = [minifim.true_fisher(net, t, X) * len(X) for t, (X, _) in zip(thetas, parts)]
        A = sum(Fs) + alpha * np.eye(net.num_params)
        check(rel_err(merged, joint), _merge_tol(A, thetas), "joint ridge")
        # without the prior correction the merge is not the joint MAP
        assert _rel(fisher_merge(net, thetas, data=parts, structure=curvature), joint) > 1e-4


def test_equal_fisher_weights_give_the_count_weighted_average():
    net, thetas, parts, _ = _disjoint_linear_models()
    F = minifim.true_fisher(net, thetas[0], parts[0][0])
    Ns = np.array([X.shape[0] for X, _ in parts], float)
    ref = Ns @ np.array(thetas) / Ns.sum()
    check(
        rel_err(fisher_merge(net, thetas, [F] * 3, structure="full", weights=Ns), ref),
        _merge_tol(Ns.sum() * F, thetas),
        "full",
    )
    # a weighted mean of 3 vectors: 3 products and sums, one division per entry
    tol = product_rtol(3) + identity_tol()
    assert _rel(fisher_merge(net, thetas, structure="isotropic", data=parts), ref) < tol
    assert _rel(fisher_merge(net, thetas, structure="isotropic", weights=Ns), ref) < tol


def test_diag_merge_is_the_elementwise_formula(case):
    net = case.net
    rng = np.random.default_rng(3)
    thetas = [case.theta, net.init(rng), net.init(rng)]
    Xs = [case.X, rng.standard_normal((4, net.input_dim)), rng.standard_normal((6, net.input_dim))]
    damping = 1e-3
    ds = [minifim.fisher_diagonal(net, t, X) for t, X in zip(thetas, Xs)]
    num = sum(X.shape[0] * d * t for X, d, t in zip(Xs, ds, thetas)) + damping * np.mean(thetas, 0)
    den = sum(X.shape[0] * d for X, d in zip(Xs, ds)) + damping
    merged = fisher_merge(net, thetas, data=Xs, damping=damping)
    assert _rel(merged, num / den) < 1e-12
    # data route = fishers route
    given_ = fisher_merge(net, thetas, ds, damping=damping, weights=[X.shape[0] for X in Xs])
    assert _rel(merged, given_) < 1e-14


def test_block_merge_equals_full_merge_with_block_diagonal_fishers():
    case = make_case((3, 5, 4, 2), "tanh", "categorical", N=8, seed=9)
    net = case.net
    rng = np.random.default_rng(0)
    thetas = [net.init(rng) for _ in range(3)]
    Xs = [rng.standard_normal((n, 3)) for n in (5, 7, 9)]
    blocks = [minifim.block_diagonal(net, t, X) for t, X in zip(thetas, Xs)]
    full = [block_diag(*b) for b in blocks]
    a = fisher_merge(net, thetas, blocks, structure="block", damping=1e-2)
    b = fisher_merge(net, thetas, full, structure="full", damping=1e-2)
    c = fisher_merge(net, thetas, data=Xs, structure="block", damping=1e-2, weights=[1.0, 1.0, 1.0])
    Ab = sum(block_diag(*b) for b in blocks) + 1e-2 * np.eye(net.num_params)
    check(rel_err(a, b), _merge_tol(Ab, thetas), "block vs full")
    assert _rel(c, a) < 1e-14
    # and the full merge with the data route is the dense solve written out
    Fs = [minifim.true_fisher(net, t, X) for t, X in zip(thetas, Xs)]
    A = sum(len(X) * F for X, F in zip(Xs, Fs)) + 1e-2 * np.eye(net.num_params)
    rhs = sum(len(X) * F @ t for X, F, t in zip(Xs, Fs, thetas)) + 1e-2 * np.mean(thetas, 0)
    merged = fisher_merge(net, thetas, data=Xs, structure="full", damping=1e-2)
    check(rel_err(merged, np.linalg.solve(A, rhs)), _merge_tol(A, thetas), "dense solve")


def test_empirical_fisher_from_data_needs_and_uses_the_targets():
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=1)
    net = case.net
    thetas = [case.theta, net.init(5)]
    data = [(case.X, case.y), (case.X[:3], case.y[:3])]
    merged = fisher_merge(net, thetas, data=data, fisher="empirical", damping=1e-3)
    ds = [minifim.fisher_diagonal(net, t, X, y, "empirical") for t, (X, y) in zip(thetas, data)]
    ref = fisher_merge(net, thetas, ds, weights=[6, 3], damping=1e-3)
    assert _rel(merged, ref) < 1e-14
    with pytest.raises(ValueError, match="y"):
        fisher_merge(net, thetas, data=[case.X, case.X], fisher="empirical")


@given(
    seed=st.integers(0, 1000),
    M=st.integers(1, 4),
    curvature=st.sampled_from(["isotropic", "diag", "block", "full"]),
)
def test_merge_invariances(seed, M, curvature):
    """Identical models merge to themselves; the merge ignores the order of the models."""
    case = make_case((2, 3, 2), "tanh", "categorical", N=4, seed=seed)
    net, rng = case.net, np.random.default_rng(seed)
    thetas = [net.init(rng) for _ in range(M)]
    Xs = [rng.standard_normal((int(rng.integers(2, 6)), 2)) for _ in range(M)]
    kw = dict(structure=curvature, damping=1e-3)
    data = None if curvature == "isotropic" else Xs
    same = fisher_merge(net, [thetas[0]] * M, data=None if data is None else Xs, **kw)
    assert _rel(same, thetas[0]) < 1e-10
    perm = rng.permutation(M)
    a = fisher_merge(net, thetas, data=data, **kw)
    b = fisher_merge(
        net, [thetas[i] for i in perm], data=None if data is None else [Xs[i] for i in perm], **kw
    )
    assert _rel(a, b) < 1e-10


def test_damping_falls_back_to_the_plain_average():
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=1)
    net = case.net
    thetas = np.stack([case.theta, net.init(3), net.init(4)])
    zero = np.zeros(net.num_params)
    for curvature, F in [("diag", zero), ("full", np.zeros((net.num_params,) * 2))]:
        merged = fisher_merge(net, thetas, [F] * 3, structure=curvature, damping=0.5)
        assert _rel(merged, thetas.mean(0)) < 1e-14
    huge = fisher_merge(net, thetas, data=[case.X] * 3, damping=1e12)
    assert _rel(huge, thetas.mean(0)) < 1e-9


def test_bad_input():
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=1)
    net, X = case.net, case.X
    P = net.num_params
    thetas = [case.theta, net.init(2)]
    with pytest.raises(ValueError, match=r"thetas\[1\]: expected shape"):
        fisher_merge(net, [case.theta, case.theta[:-1]], structure="isotropic")
    with pytest.raises(ValueError, match="thetas"):
        fisher_merge(net, [], structure="isotropic")
    with pytest.raises(TypeError, match="thetas"):
        fisher_merge(net, 3.0, structure="isotropic")
    with pytest.raises(ValueError, match="structure"):
        fisher_merge(net, thetas, structure="kfac")
    with pytest.raises(ValueError, match="fisher"):
        fisher_merge(net, thetas, data=[X, X], fisher="hessian")
    with pytest.raises(ValueError, match="exactly one"):
        fisher_merge(net, thetas)
    with pytest.raises(ValueError, match="exactly one"):
        fisher_merge(net, thetas, [np.ones(P)] * 2, data=[X, X])
    with pytest.raises(ValueError, match="fishers"):
        fisher_merge(net, thetas, [np.ones(P)] * 2, structure="isotropic")
    with pytest.raises(ValueError, match="fishers: expected 2"):
        fisher_merge(net, thetas, [np.ones(P)])
    with pytest.raises(ValueError, match="data: expected 2"):
        fisher_merge(net, thetas, data=[X])
    with pytest.raises(TypeError, match=r"data\[1\]"):
        fisher_merge(net, thetas, data=[X, (X, case.y, 1)])
    with pytest.raises(ValueError, match=r"data\[1\] inputs"):
        fisher_merge(net, thetas, data=[X, X[:, :2]])
    with pytest.raises(ValueError, match="weights: expected 2"):
        fisher_merge(net, thetas, [np.ones(P)] * 2, weights=[1.0])
    with pytest.raises(ValueError, match=r"weights\[0\]"):
        fisher_merge(net, thetas, [np.ones(P)] * 2, weights=[-1.0, 1.0])
    with pytest.raises(ValueError, match="damping"):
        fisher_merge(net, thetas, [np.ones(P)] * 2, damping=-1.0)
    with pytest.raises(ValueError, match="prior_precision"):
        fisher_merge(net, thetas, [np.ones(P)] * 2, prior_precision=-1.0)
    with pytest.raises(ValueError, match="prior_mean"):
        fisher_merge(net, thetas, [np.ones(P)] * 2, prior_mean=np.ones(3))
    with pytest.raises(ValueError, match="prior_precision"):
        fisher_merge(net, thetas, structure="isotropic", prior_precision=1.0)
    with pytest.raises(ValueError, match=r"fishers\[1\]: expected shape"):
        fisher_merge(net, thetas, [np.ones(P), np.ones(P - 1)])
    with pytest.raises(ValueError, match="non-negative"):
        fisher_merge(net, thetas, [np.ones(P), -np.ones(P)])
    with pytest.raises(ValueError, match="symmetric"):
        fisher_merge(net, thetas, [np.triu(np.ones((P, P)))] * 2, structure="full")
    with pytest.raises(ValueError, match="blocks"):
        fisher_merge(net, thetas, [[np.eye(P)]] * 2, structure="block")
    # singular summed precision without damping: clear error naming damping
    with pytest.raises(ValueError, match="damping > 0"):
        fisher_merge(net, thetas, data=[X, X], structure="full")
    with pytest.raises(ValueError, match="damping > 0"):
        fisher_merge(net, thetas, data=[X, X], structure="block")
    with pytest.raises(ValueError, match="damping > 0"):
        fisher_merge(net, thetas, [np.zeros(P)] * 2)
    with minifim.memory_limit(1000), pytest.raises(minifim.MemoryBudgetError, match="block"):
        fisher_merge(net, thetas, data=[X, X], structure="full", damping=1.0)
