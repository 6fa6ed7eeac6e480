"""Every exact quantity of a :class:`minifim.Sequential` network (convolutions, positional
outputs, reductions) against an independent route: autograd of the forward pass (whose
convolution is a gather that autograd differentiates itself), finite differences, enumeration
of the joint labels of a sequence, and the per-position decomposition of the expand setting."""

from __future__ import annotations

import itertools

import autograd
import numpy as np
import pytest

import minifim
from minifim.core.scores import backprop_seeds, expand_gradients, forward_cache

from .cases import CNN_CASES, SEQUENCE_CASES, SEQUENTIAL_CASES, assert_close, make_sequential_case
from .tolerances import damped_cond, solve_rtol

IDS = [c.name for c in SEQUENTIAL_CASES]
EPS = np.finfo(float).eps


@pytest.fixture(params=SEQUENTIAL_CASES, ids=IDS)
def seq_case(request):
    return request.param


def _per_position_fisher_and_ggn(c):
    """``1/N sum_n sum_r J_nr^T Lambda_nr J_nr`` with the autograd Jacobian ``J: (N, *pos, C,
    P)`` and the likelihood's closed-form ``Lambda`` per position (the expand setting's
    decomposition: a sample's Fisher is the sum of its positions' Fishers)."""
    net = c.net
    J = minifim.output_jacobians(net, c.theta, c.X, backend="autograd")
    C, P = net.output_dim, net.num_params
    Jf = J.reshape(-1, C, P)
    Lam = net.likelihood.fisher_outputs(net.flat_outputs(net.forward(c.theta, c.X)))
    return np.einsum("ncp,ncd,ndq->pq", Jf, Lam, Jf) / c.N


def test_scores_and_jacobians_against_autograd(seq_case):
    c = seq_case
    S = minifim.per_sample_scores(c.net, c.theta, c.X, c.y)
    Sa = minifim.per_sample_scores(c.net, c.theta, c.X, c.y, backend="autograd")
    assert S.shape == (c.N, c.P)
    assert_close(S, Sa, 1e-12)
    J = minifim.output_jacobians(c.net, c.theta, c.X)
    Ja = minifim.output_jacobians(c.net, c.theta, c.X, backend="autograd")
    assert J.shape == (c.N,) + c.net.output_shape + (c.P,)
    assert_close(J, Ja, 1e-12)


def test_scores_against_finite_differences(seq_case):
    c = seq_case
    S = minifim.per_sample_scores(c.net, c.theta, c.X, c.y)
    h = 1e-5
    rng = np.random.default_rng(0)
    V = rng.standard_normal((c.P, 3))
    fd = np.stack(
        [
            (c.net.log_prob(c.theta + h * v, c.X, c.y) - c.net.log_prob(c.theta - h * v, c.X, c.y))
            / (2 * h)
            for v in V.T
        ],
        axis=1,
    )
    # central differences: truncation ~h^2 |f'''| (log-likelihoods of O(1) curvature)
    assert_close(S @ V, fd, 1e-7)


def test_jvp_vjp_against_the_jacobian(seq_case):
    c = seq_case
    J = minifim.output_jacobians(c.net, c.theta, c.X, backend="autograd")
    rng = np.random.default_rng(1)
    V = rng.standard_normal((c.P, 2))
    Jv = minifim.jacobian_vector_product(c.net, c.theta, c.X, V)
    assert_close(Jv, J @ V, 1e-12)
    assert_close(minifim.jacobian_vector_product(c.net, c.theta, c.X, V[:, 0]), J @ V[:, 0], 1e-12)
    U = rng.standard_normal(Jv.shape)
    axes = tuple(range(U.ndim - 1))
    ref = np.tensordot(J, U, axes=(axes, axes))  # (P, m)
    assert_close(minifim.vector_jacobian_product(c.net, c.theta, c.X, U), ref, 1e-12)
    # the internal building blocks with the contract's shapes
    cache = forward_cache(c.net, c.theta, c.X)
    for layer, a in zip(c.net.parametric_layers, cache.acts):
        assert a.shape == (c.N, layer.positions, layer.matrix_shape[1])
    E = rng.standard_normal((c.N, 4) + c.net.output_shape)
    Bs = backprop_seeds(c.net, cache, E)
    for layer, B in zip(c.net.parametric_layers, Bs):
        assert B.shape == (c.N, 4, layer.positions, layer.matrix_shape[0])
    Jf = J.reshape(c.N, -1, c.P)
    assert_close(
        expand_gradients(c.net, cache.acts, Bs),
        np.einsum("nkq,nqp->nkp", E.reshape(c.N, 4, -1), Jf),
        1e-12,
    )


def test_true_fisher_and_ggn_equal_the_sum_of_per_position_fishers(seq_case):
    c = seq_case
    ref = _per_position_fisher_and_ggn(c)
    assert_close(minifim.true_fisher(c.net, c.theta, c.X), ref, 1e-12)
    assert_close(minifim.ggn(c.net, c.theta, c.X), ref, 1e-11)
    op = minifim.fisher_operator(c.net, c.theta, c.X)
    V = np.random.default_rng(2).standard_normal((c.P, 3))
    assert_close(op @ V, ref @ V, 1e-12)


def test_true_fisher_of_a_sequence_is_the_expectation_over_joint_labels():
    """The definition: ``1/N sum_n sum_{y_1..y_R} p(y | x_n) s_n(y) s_n(y)^T`` with the score
    of the whole sequence, enumerated over the ``C^R`` joint labels (cross-position terms have
    expectation zero, so the per-position seeds give the same matrix)."""
    c = next(s for s in SEQUENCE_CASES if s.net.likelihood.name == "categorical")
    net = c.net
    R, C = net.positions, net.output_dim
    F = net.forward(c.theta, c.X)
    logp = F - np.log(np.exp(F).sum(axis=-1, keepdims=True))  # (N, R, C)
    M = np.zeros((c.P, c.P))
    for labels in itertools.product(range(C), repeat=R):
        y = np.broadcast_to(np.array(labels), (c.N, R))
        w = np.exp(logp[:, np.arange(R), list(labels)].sum(axis=1))  # p(y | x_n)
        S = minifim.per_sample_scores(net, c.theta, c.X, y, backend="autograd")
        M += (S * w[:, None]).T @ S
    assert_close(minifim.true_fisher(net, c.theta, c.X), M / c.N, 1e-12)


def test_empirical_and_mc_fisher_from_sequence_scores(seq_case):
    c = seq_case
    S = minifim.per_sample_scores(c.net, c.theta, c.X, c.y, backend="autograd")
    # a sample is the whole sequence: sum_n s_n s_n^T over samples, not over positions
    assert_close(minifim.empirical_fisher(c.net, c.theta, c.X, c.y), S.T @ S / c.N, 1e-12)
    assert_close(
        minifim.empirical_fisher(c.net, c.theta, c.X, c.y, reduction="sum"), S.T @ S, 1e-12
    )
    k = 3
    ys = c.net.sample_targets(c.net.forward(c.theta, c.X), np.random.default_rng(7), k)
    ref = sum(
        (T := minifim.per_sample_scores(c.net, c.theta, c.X, yj, backend="autograd")).T @ T
        for yj in ys
    ) / (c.N * k)
    assert_close(minifim.mc_fisher(c.net, c.theta, c.X, k, rng=7), ref, 1e-12)


def test_hessian_against_finite_differences_of_the_gradient(seq_case):
    c = seq_case
    H = minifim.hessian(c.net, c.theta, c.X, c.y)
    h = 1e-5
    V = np.random.default_rng(3).standard_normal((c.P, 2))
    fd = np.stack(
        [
            (
                minifim.gradient(c.net, c.theta + h * v, c.X, c.y)
                - minifim.gradient(c.net, c.theta - h * v, c.X, c.y)
            )
            / (2 * h)
            for v in V.T
        ],
        axis=1,
    )
    assert_close(H @ V, fd, 1e-6)
    op = minifim.hessian_operator(c.net, c.theta, c.X, c.y)
    assert_close(op @ V, H @ V, 1e-12)


def test_gradient_and_loss_against_autograd(seq_case):
    c = seq_case
    value, g = minifim.loss_and_gradient(c.net, c.theta, c.X, c.y)
    ga = autograd.grad(lambda th: -np.mean(c.net.log_prob(th, c.X, c.y)))(c.theta)
    assert_close(g, ga, 1e-12)
    assert np.isclose(value, -np.mean(c.net.log_prob(c.theta, c.X, c.y)), rtol=1e-14)


@pytest.mark.parametrize("fisher", ["true", "empirical", "ggn", "argmax"])
def test_diagonal_and_blocks_are_those_of_the_dense_matrix(seq_case, fisher):
    c = seq_case
    M = minifim.curvature_matrix(c.net, c.theta, c.X, c.y, fisher)
    assert_close(minifim.fisher_diagonal(c.net, c.theta, c.X, c.y, fisher), np.diag(M), 1e-12)
    blocks = minifim.block_diagonal(c.net, c.theta, c.X, c.y, fisher)
    for s, B in zip(c.net.layer_param_slices(), blocks):
        assert_close(B, M[s, s], 1e-12)
    # chunking does not change the sum (beyond rounding)
    assert_close(minifim.curvature_matrix(c.net, c.theta, c.X, c.y, fisher, chunk_size=2), M, 1e-12)


def test_spectra_dense_gram_and_lanczos_agree(seq_case):
    c = seq_case
    M = minifim.true_fisher(c.net, c.theta, c.X)
    ref = np.sort(np.linalg.eigvalsh(M))[::-1]
    gram = minifim.fisher_spectrum(c.net, c.theta, c.X, method="gram")
    vals = np.asarray(getattr(gram, "eigenvalues", gram))
    top = ref[: vals.size]
    assert_close(np.sort(vals)[::-1], top, 1e-10)
    lz = minifim.fisher_spectrum(c.net, c.theta, c.X, method="lanczos", k=2)
    assert_close(np.sort(np.asarray(getattr(lz, "eigenvalues", lz)))[::-1], ref[:2], 1e-9)


def test_methods_accept_a_sequential(seq_case):
    """NGD (every route), EWC, Laplace, pruning, merging and sensitivities on a Sequential,
    each against its closed form in the dense Fisher."""
    c = seq_case
    g = minifim.gradient(c.net, c.theta, c.X, c.y)
    M = minifim.true_fisher(c.net, c.theta, c.X)
    lam = 1e-2
    ref = np.linalg.solve(M + lam * np.eye(c.P), g)
    for method, tol in (("dense", 1e-11), ("woodbury", 1e-10), ("cg", 1e-7)):
        d = minifim.natural_gradient(c.net, c.theta, c.X, c.y, damping=lam, method=method)
        assert_close(d, ref, tol, method)
    v = 0.1 * np.random.default_rng(4).standard_normal(c.P)
    ewc = minifim.EWC(c.net)
    ewc.add_task(c.theta, c.X, c.y)
    # the penalty of a task is (N / 2) (theta - theta*)^T diag(F) (theta - theta*)
    assert np.isclose(ewc.penalty(c.theta + v), 0.5 * c.N * v @ (np.diag(M) * v), rtol=1e-12)
    la = minifim.Laplace(c.net, c.theta, c.X, c.y, prior_precision=1.0)
    assert_close(la.posterior_precision(), c.N * M + np.eye(c.P), 1e-12)
    res = minifim.prune(c.net, c.theta, c.X, c.y, sparsity=0.5, criterion="obd")
    assert res.theta.shape == (c.P,) and np.count_nonzero(res.theta[res.mask == 0]) == 0
    merged = minifim.fisher_merge(c.net, [c.theta, c.theta], data=[(c.X, c.y), (c.X, c.y)])
    assert_close(merged, c.theta, 1e-14)
    assert_close(minifim.sensitivity(c.net, c.theta, c.X), np.diag(M), 1e-12)
    with pytest.raises(ValueError, match="per: 'unit' scores the units"):
        minifim.sensitivity(c.net, c.theta, c.X, per="unit")


def test_positional_outputs_without_weight_sharing_below_them():
    """A network whose first layer sees positions but whose sharing is undone by Flatten:
    positions reach neither the loss nor the last layer (a control for the expand route)."""
    L = minifim.layers
    c = make_sequential_case(
        "flat", [L.Linear(2, 3), L.Tanh(), L.Flatten(), L.Linear(9, 2)], (3, 2), N=4, seed=5
    )
    S = minifim.per_sample_scores(c.net, c.theta, c.X, c.y)
    assert_close(S, minifim.per_sample_scores(c.net, c.theta, c.X, c.y, backend="autograd"), 1e-12)
    assert_close(minifim.true_fisher(c.net, c.theta, c.X), _per_position_fisher_and_ggn(c), 1e-12)


def test_laplace_predictions_of_a_sequential(seq_case):
    """The linearised posterior of every (input, position): ``J_r A^{-1} J_r^T`` with the
    autograd Jacobian and the dense posterior precision; predictive shapes follow the outputs."""
    c = seq_case
    la = minifim.Laplace(c.net, c.theta, c.X, c.y, prior_precision=1.0)
    C = c.net.output_dim
    J = minifim.output_jacobians(c.net, c.theta, c.X, backend="autograd").reshape(-1, C, c.P)
    ref = np.einsum("ncp,pq,ndq->ncd", J, np.linalg.inv(la.posterior_precision()), J)
    mean, cov = la.functional_posterior(c.X)
    assert mean.shape == (c.N,) + c.net.output_shape and cov.shape == mean.shape + (C,)
    # A = N F + I is well conditioned here (prior precision 1): inverse-level accuracy
    assert_close(cov.reshape(ref.shape), ref, 1e-10)
    _, var = la.functional_variance(c.X)
    assert_close(var.reshape(-1, C), np.einsum("ncc->nc", ref), 1e-10)
    out = la.predictive(c.X)
    shapes = [o.shape for o in out] if isinstance(out, tuple) else [out.shape]
    assert shapes[0] == mean.shape


@pytest.mark.parametrize("damping_type", ["factored", "eigen"])
@pytest.mark.parametrize("bias", ["folded", "separate"])
def test_kfac_optimizer_on_a_cnn_with_a_bias_free_layer(bias, damping_type):
    """The optimiser's first direction (decay 0) is the K-FAC solve of the batch's factors,
    also for a Conv2d without bias (no homogeneous coordinate, no separate bias block)."""
    from minifim.methods.optim import Batch

    for c in CNN_CASES:
        opt = minifim.optim.kfac(
            c.net, damping=1e-2, decay=0.0, bias=bias, damping_type=damping_type
        )
        g = minifim.gradient(c.net, c.theta, c.X, c.y)
        state = opt.update(0, g, opt.init(c.theta), Batch(c.net, c.X, c.y))
        ref = minifim.kfac(c.net, c.theta, c.X, bias=bias).solve(g, 1e-2, damping_type)
        assert_close(state["direction"], ref, 1e-13)


def test_block_structures_of_a_bias_free_layer():
    """EWC and Fisher merging with per-layer blocks size them from the layer slices (a
    ``bias=False`` Conv2d has ``out * in`` parameters, no bias)."""
    c = CNN_CASES[1]
    blocks = minifim.block_diagonal(c.net, c.theta, c.X)
    assert [b.shape[0] for b in blocks] == [s.stop - s.start for s in c.net.layer_param_slices()]
    ewc = minifim.EWC(c.net, structure="block")
    ewc.add_task(c.theta, c.X, c.y)
    v = 0.1 * np.random.default_rng(8).standard_normal(c.P)
    quad = sum(v[s] @ B @ v[s] for s, B in zip(c.net.layer_param_slices(), blocks))
    assert np.isclose(ewc.penalty(c.theta + v), 0.5 * c.N * quad, rtol=1e-12)
    merged = minifim.fisher_merge(
        c.net, [c.theta, c.theta], data=[(c.X, c.y), (c.X, c.y)], structure="block", damping=1e-3
    )
    # (sum_t F_t + lambda I)^{-1} sum_t F_t theta: a damped solve per block
    kappa = max(damped_cond(2 * B, 1e-3) for B in blocks)
    assert_close(merged, c.theta, solve_rtol(kappa, max(b.shape[0] for b in blocks)))


def test_joint_outcomes_of_positional_outputs():
    """The ``O^R`` joint outcomes of a sequence: weights sum to one, the mean score vanishes and
    ``sum_o w_o u_o u_o^T`` is the true Fisher; over the enumeration limit the refusal says why."""
    from minifim.geometry.moments import mc_error_moments, output_outcomes

    for c in SEQUENCE_CASES[:2]:
        w, U = output_outcomes(c.net, c.theta, c.X)
        assert w.shape == (
            c.N,
            minifim.get_likelihood(c.net.likelihood).num_outcomes(c.net.output_dim)
            ** c.net.positions,
        )
        assert_close(w.sum(axis=1), np.ones(c.N), 4 * EPS * w.shape[1])
        S = minifim.per_sample_scores(c.net, c.theta, c.X, c.y)
        assert np.max(np.abs(np.einsum("no,nop->np", w, U))) <= 1e-13 * np.max(np.abs(S))
        M = np.einsum("no,nop,noq->pq", w, U, U) / c.N
        assert_close(M, minifim.true_fisher(c.net, c.theta, c.X), 1e-12)
        # E |F_mc - F|_F^2 = 1 / (N^2 k) sum_n E_o |u_o u_o^T - F_n|_F^2, by brute force
        k = 2
        Fn = np.einsum("no,nop,noq->npq", w, U, U)
        dev = np.einsum("nop,noq->nopq", U, U) - Fn[:, None]
        brute = np.einsum("no,nopq,nopq->", w, dev, dev) / (c.N**2 * k)
        mean, var = mc_error_moments(c.net, c.theta, c.X, k)
        assert np.isclose(mean, brute, rtol=1e-12) and var > 0
    with pytest.raises(ValueError, match="25 outcomes per position, 3 positions"):
        output_outcomes(SEQUENCE_CASES[2].net, SEQUENCE_CASES[2].theta, SEQUENCE_CASES[2].X)


def test_layouts_of_a_sequential_are_permutations():
    """Every layout of a CNN with a bias-free layer is a permutation of the flat parameters
    whose inverse maps back (the round trip is exact)."""
    from minifim.oracle import from_minifim_layout, to_minifim_layout
    from minifim.oracle.layouts import layout_permutation

    c = CNN_CASES[1]
    for layout in ("pytorch", "in-out", "jax"):
        perm = layout_permutation(c.net, layout)
        assert np.array_equal(np.sort(perm), np.arange(c.P))
        there = from_minifim_layout(c.net, c.theta, [0], layout)
        assert np.array_equal(to_minifim_layout(c.net, there, [0], layout), c.theta)
    (W0, _), _, _ = c.net.unflatten(c.theta)
    ws = c.net.layer_slices[0][0]
    in_out = from_minifim_layout(c.net, c.theta, [0], "in-out")
    assert np.array_equal(in_out[ws], W0.reshape(2, -1).T.ravel())


def test_objective_helpers_on_positions(seq_case):
    """The square of the mean gradient is ``g g^T`` of the (sequence) scores' mean; accuracy
    averages over samples and positions; ``predict`` applies the link per position."""
    c = seq_case
    S = minifim.per_sample_scores(c.net, c.theta, c.X, c.y)
    g = S.mean(axis=0)
    assert_close(minifim.square_of_mean_gradient(c.net, c.theta, c.X, c.y), np.outer(g, g), 1e-12)
    F = c.net.forward(c.theta, c.X)
    lik = c.net.likelihood
    mean = c.net.predict(c.theta, c.X)
    assert mean.shape == F.shape
    assert_close(mean.reshape(-1, F.shape[-1]), lik.mean(F.reshape(-1, F.shape[-1])), 1e-15)
    if lik.name == "categorical":
        acc = np.mean(np.argmax(F, axis=-1) == c.y)
        assert minifim.accuracy(c.net, c.theta, c.X, c.y) == acc
