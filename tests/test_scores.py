"""Per-sample scores and output Jacobians: batched backprop against autograd (1e-12), central
finite differences (1e-6), the zero-mean score identity, and jvp/vjp against dense J."""

import numpy as np
import pytest

import minifim
from minifim.core.scores import (
    backprop_seeds,
    expand_gradients,
    forward_cache,
    jvp_cached,
    vjp_cached,
)

from .cases import assert_close, get_case, outcomes


def test_scores_backprop_vs_autograd(case):
    S = minifim.per_sample_scores(case.net, case.theta, case.X, case.y)
    assert S.shape == (case.N, case.P) and S.dtype == np.float64
    S_ag = minifim.per_sample_scores(case.net, case.theta, case.X, case.y, backend="autograd")
    assert_close(S, S_ag, 1e-12)


def test_jacobians_backprop_vs_autograd(case):
    J = minifim.output_jacobians(case.net, case.theta, case.X)
    C = case.net.output_dim
    assert J.shape == (case.N, C, case.P)
    assert_close(
        J, minifim.output_jacobians(case.net, case.theta, case.X, backend="autograd"), 1e-12
    )


def test_scores_are_jacobian_transpose_times_output_score(case):
    J = minifim.output_jacobians(case.net, case.theta, case.X, backend="autograd")
    g = case.net.likelihood.grad_log_prob(case.net.forward(case.theta, case.X), case.y)
    assert_close(
        minifim.per_sample_scores(case.net, case.theta, case.X, case.y),
        np.einsum("ncp,nc->np", J, g),
        1e-12,
    )


def test_scores_central_differences(case):
    """``(log p(theta + h e_i) - log p(theta - h e_i)) / 2h`` with ``h = 1e-6``: truncation
    ``O(h^2)`` and cancellation ``O(eps / h)``, both far below the 1e-6 tolerance."""
    net, theta, h = case.net, case.theta, 1e-6
    E = np.eye(case.P) * h
    fd = np.stack(
        [
            (net.log_prob(theta + e, case.X, case.y) - net.log_prob(theta - e, case.X, case.y))
            / (2 * h)
            for e in E
        ],
        axis=1,
    )
    assert_close(minifim.per_sample_scores(net, theta, case.X, case.y), fd, 1e-6)
    fdJ = np.stack(
        [(net.forward(theta + e, case.X) - net.forward(theta - e, case.X)) / (2 * h) for e in E],
        axis=2,
    )
    assert_close(minifim.output_jacobians(net, theta, case.X), fdJ, 1e-6)


def test_enumerated_mean_score_is_zero(case):
    """``sum_y p(y | x_n) s_n(y) = 0`` for every sample, exactly (enumeration over labels;
    Gaussian by a cubature exact for the affine score, see ``cases.outcomes``)."""
    f = case.net.forward(case.theta, case.X)
    mean = np.zeros((case.N, case.P))
    scale = 0.0
    for w, y in outcomes(case.net.likelihood, f):
        S = minifim.per_sample_scores(case.net, case.theta, case.X, y)
        mean += w[:, None] * S
        scale = max(scale, np.abs(S).max())
    assert np.abs(mean).max() <= 1e-13 * scale


def test_samples_are_independent(case):
    """Scores of a batch equal those computed one sample at a time (no cross-sample terms)."""
    S = minifim.per_sample_scores(case.net, case.theta, case.X, case.y)
    J = minifim.output_jacobians(case.net, case.theta, case.X)
    for n in range(case.N):
        assert_close(
            S[n : n + 1],
            minifim.per_sample_scores(case.net, case.theta, case.X[n : n + 1], case.y[n : n + 1]),
            1e-14,
        )
        assert_close(
            J[n : n + 1], minifim.output_jacobians(case.net, case.theta, case.X[n : n + 1]), 1e-14
        )


def test_jvp_vjp_against_dense_jacobian(case):
    net, theta, X = case.net, case.theta, case.X
    rng = np.random.default_rng(0)
    J = minifim.output_jacobians(net, theta, X, backend="autograd")
    C = net.output_dim
    v, V = rng.standard_normal(case.P), rng.standard_normal((case.P, 3))
    u, U = rng.standard_normal((case.N, C)), rng.standard_normal((case.N, C, 3))
    jv = minifim.jacobian_vector_product(net, theta, X, v)
    assert jv.shape == (case.N, C)
    assert_close(jv, J @ v, 1e-12)
    assert_close(minifim.jacobian_vector_product(net, theta, X, V), J @ V, 1e-12)
    uj = minifim.vector_jacobian_product(net, theta, X, u)
    assert uj.shape == (case.P,)
    assert_close(uj, np.einsum("ncp,nc->p", J, u), 1e-12)
    assert_close(
        minifim.vector_jacobian_product(net, theta, X, U), np.einsum("ncp,ncm->pm", J, U), 1e-12
    )
    # adjoint identity <u, J v> = <J^T u, v>
    assert np.isclose(np.sum(u * jv), uj @ v, rtol=1e-12)


def test_internal_building_blocks():
    case = get_case("categorical-tanh-2x3x4x2")
    net, theta, X = case.net, case.theta, case.X
    cache = forward_cache(net, theta, X)
    assert cache.num_samples == case.N
    assert_close(cache.outputs, net.forward(theta, X), 1e-15)
    assert [a.shape[1:] for a in cache.acts] == [(1, s) for s in net.sizes[:-1]]
    E = np.random.default_rng(1).standard_normal((case.N, 4, net.output_dim))
    U = expand_gradients(net, cache.acts, backprop_seeds(net, cache, E))
    J = minifim.output_jacobians(net, theta, X, backend="autograd")
    assert_close(U, np.einsum("nkc,ncp->nkp", E, J), 1e-12)
    V = np.random.default_rng(2).standard_normal((case.P, 2))
    assert_close(jvp_cached(net, cache, V), J @ V, 1e-12)
    assert_close(
        vjp_cached(net, cache, E[:, :2].transpose(0, 2, 1)),
        np.einsum("ncp,nkc->pk", J, E[:, :2]),
        1e-12,
    )


# --- bad input -----------------------------------------------------------------------------------
def test_bad_input():
    case = get_case("categorical-tanh-3x4x3")
    net, theta, X, y = case.net, case.theta, case.X, case.y
    N, P, C = case.N, case.P, net.output_dim
    for fn, args in [
        (minifim.per_sample_scores, (y,)),
        (minifim.output_jacobians, ()),
        (minifim.jacobian_vector_product, (np.ones(P),)),
        (minifim.vector_jacobian_product, (np.ones((N, C)),)),
    ]:
        with pytest.raises(ValueError, match=r"theta: expected shape \(31,\)"):
            fn(net, theta[:-1], X, *args)
        with pytest.raises(ValueError, match="theta: expected finite"):
            fn(net, np.full(P, np.nan), X, *args)
        with pytest.raises(ValueError, match="X: expected a 2-D array"):
            fn(net, theta, X[0], *args)
        with pytest.raises(ValueError, match="X: expected 3 input features"):
            fn(net, theta, X[:, :2], *args)
        with pytest.raises(ValueError, match="X: expected finite"):
            fn(net, theta, np.where(X > 0, np.inf, X), *args)
    for method in ("backprop", "autograd"):
        with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\)"):
            minifim.per_sample_scores(net, theta, X, np.full(N, 3), backend=method)
        with pytest.raises(ValueError, match="y: expected integer class labels"):
            minifim.per_sample_scores(net, theta, X, y + 0.5, backend=method)
        with pytest.raises(ValueError, match=r"y: expected shape \(5,\)"):
            minifim.per_sample_scores(net, theta, X, y[:-1], backend=method)
    with pytest.raises(ValueError, match=r"backend: expected one of \['autograd', 'backprop'\]"):
        minifim.per_sample_scores(net, theta, X, y, backend="fd")
    with pytest.raises(ValueError, match="backend"):
        minifim.output_jacobians(net, theta, X, backend="torch")
    with pytest.raises(
        ValueError,
        match=r"v: expected shape \(31,\) or \(31, m\), received "
        r"shape \(30,\)",
    ):
        minifim.jacobian_vector_product(net, theta, X, np.ones(P - 1))
    with pytest.raises(ValueError, match="v: expected shape"):
        minifim.jacobian_vector_product(net, theta, X, np.ones((P, 2, 2)))
    with pytest.raises(ValueError, match="v: expected finite"):
        minifim.jacobian_vector_product(net, theta, X, np.full(P, np.nan))
    with pytest.raises(
        ValueError,
        match=r"u: expected shape \(5, 3\) or \(5, 3, m\), received "
        r"shape \(5,\)",
    ):
        minifim.vector_jacobian_product(net, theta, X, np.ones(N))
    with pytest.raises(ValueError, match="u: expected shape"):
        minifim.vector_jacobian_product(net, theta, X, np.ones((N, C + 1)))
    with pytest.raises(ValueError, match="u: expected finite"):
        minifim.vector_jacobian_product(net, theta, X, np.full((N, C), np.inf))
    bern = get_case("bernoulli-tanh-3x4x3")
    with pytest.raises(ValueError, match=r"y: expected Bernoulli labels in \{0, 1\}"):
        minifim.per_sample_scores(bern.net, bern.theta, bern.X, 2 * bern.y + 0.5)
    gauss = get_case("gaussian-tanh-3x4x3")
    with pytest.raises(ValueError, match="y: expected finite"):
        minifim.per_sample_scores(gauss.net, gauss.theta, gauss.X, gauss.y * np.nan)
    with pytest.raises(ValueError, match=r"y: expected real targets of shape \(5, 3\)"):
        minifim.per_sample_scores(gauss.net, gauss.theta, gauss.X, gauss.y[:, 0])


@pytest.mark.parametrize(
    "name",
    [
        "categorical-tanh-2x3x4x2",
        "bernoulli-softplus-3x4x3",
        "gaussian-sigmoid-3x4x3",
        "categorical-relu-3x4x3",
    ],
)
def test_scores_match_torch_func(name):
    """Third route: ``torch.func.vmap(grad(log p))`` on the same weights (float64)."""
    torch = pytest.importorskip("torch")
    from torch.func import functional_call, grad, vmap

    case = get_case(name)
    net = case.net
    acts = {
        "tanh": torch.nn.Tanh,
        "relu": torch.nn.ReLU,
        "sigmoid": torch.nn.Sigmoid,
        "softplus": torch.nn.Softplus,
    }
    mods = []
    for l, (o, i) in enumerate(net.shapes):
        mods.append(torch.nn.Linear(i, o))
        if l < net.num_layers - 1:
            mods.append(acts[net.activation.name]())
    seq = torch.nn.Sequential(*mods).double()
    seq.load_state_dict({k: torch.from_numpy(v) for k, v in net.to_state_dict(case.theta).items()})
    params = {k: v.detach() for k, v in seq.named_parameters()}
    lik = net.likelihood.name
    sigma = getattr(net.likelihood, "sigma", 1.0)

    def log_p(p, x, y):
        f = functional_call(seq, p, (x[None],))[0]
        if lik == "categorical":
            return torch.gather(torch.log_softmax(f, 0), 0, y[None])[0]
        if lik == "bernoulli":
            return -torch.nn.functional.binary_cross_entropy_with_logits(f, y, reduction="sum")
        return -0.5 * torch.sum((y - f) ** 2) / sigma**2

    g = vmap(grad(log_p), in_dims=(None, 0, 0))(
        params, torch.from_numpy(case.X), torch.from_numpy(case.y)
    )
    S_torch = np.concatenate([g[k].reshape(case.N, -1).numpy() for k in params], axis=1)
    assert list(params) == [
        f"{2 * l}.{s}" for l in range(net.num_layers) for s in ("weight", "bias")
    ]  # flat order W0, b0, W1, b1, ...
    assert_close(minifim.per_sample_scores(net, case.theta, case.X, case.y), S_torch, 1e-12)
