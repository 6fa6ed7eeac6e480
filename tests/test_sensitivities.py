"""Weight sensitivity against the dense curvature: diagonal, unit sums, gate quadratic forms."""

import numpy as np
import pytest

import minifim
from minifim.methods.sensitivities import sensitivity

from .cases import make_case

RTOL = 1e-11


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= rtol * scale, np.abs(a - b).max() / scale


@pytest.mark.parametrize("fisher", ["true", "empirical", "ggn"])
def test_parameter_sensitivity_is_the_dense_diagonal(case, fisher):
    M = minifim.curvature_matrix(case.net, case.theta, case.X, case.y, fisher)
    d = sensitivity(case.net, case.theta, case.X, case.y, fisher=fisher)
    _close(d, np.diag(M))


def _dense_diag_blocks(case, fisher="true"):
    M = minifim.curvature_matrix(case.net, case.theta, case.X, case.y, fisher)
    d = np.diag(M)
    return M, [
        (d[ws].reshape(s), d[bs]) for s, (ws, bs) in zip(case.net.shapes, case.net.layer_slices)
    ]


def test_unit_sums_match_the_dense_diagonal(case):
    if case.net.num_layers < 2:
        pytest.skip("no hidden layer")
    _, blocks = _dense_diag_blocks(case)
    inc = sensitivity(case.net, case.theta, case.X, per="unit")
    out = sensitivity(case.net, case.theta, case.X, per="unit", aggregate="outgoing")
    both = sensitivity(case.net, case.theta, case.X, per="unit", aggregate="both")
    assert len(inc) == len(out) == len(both) == case.net.num_layers - 1
    for l in range(case.net.num_layers - 1):
        # loops over units, a route independent of the vectorised sums
        ref_in = [blocks[l][0][i, :].sum() + blocks[l][1][i] for i in range(case.net.sizes[l + 1])]
        ref_out = [blocks[l + 1][0][:, i].sum() for i in range(case.net.sizes[l + 1])]
        _close(inc[l], ref_in)
        _close(out[l], ref_out)
        _close(both[l], np.add(ref_in, ref_out))


def test_input_sums_match_the_dense_diagonal(case):
    _, blocks = _dense_diag_blocks(case)
    ref = [blocks[0][0][:, j].sum() for j in range(case.net.input_dim)]
    _close(sensitivity(case.net, case.theta, case.X, per="input"), ref)


def _outgoing_direction(net, theta, l, i):
    """Flat vector holding column i of W_l (the weights leaving input i of layer l)."""
    v = np.zeros(net.num_params)
    ws, _ = net.layer_slices[l]
    out, inp = net.shapes[l]
    block = np.zeros((out, inp))
    block[:, i] = theta[ws].reshape(out, inp)[:, i]
    v[ws] = block.ravel()
    return v


@pytest.mark.parametrize("fisher", ["true", "empirical"])
def test_gate_scores_are_quadratic_forms_of_the_dense_fisher(case, fisher):
    net, theta = case.net, case.theta
    M = minifim.curvature_matrix(net, theta, case.X, case.y, fisher)
    gin = sensitivity(net, theta, case.X, case.y, fisher, per="input", aggregate="gate")
    ref = [v @ M @ v for v in (_outgoing_direction(net, theta, 0, j) for j in range(net.input_dim))]
    _close(gin, ref, 1e-10)
    if net.num_layers > 1:
        gates = sensitivity(net, theta, case.X, case.y, fisher, per="unit", aggregate="gate")
        for l, g in enumerate(gates):
            ref = [
                v @ M @ v
                for v in (
                    _outgoing_direction(net, theta, l + 1, i) for i in range(net.sizes[l + 1])
                )
            ]
            _close(g, ref, 1e-10)


def test_gate_is_the_fisher_of_a_multiplicative_gate_by_enumeration():
    """Third route: scores of a gated copy of the network, by autograd and enumeration."""
    import autograd.numpy as anp
    from autograd import jacobian

    case = make_case((3, 4, 3), "tanh", "categorical", N=5, seed=7)
    net, theta, X = case.net, case.theta, case.X
    (W0, b0), (W1, b1) = [(np.asarray(W), np.asarray(b)) for W, b in net.unflatten(theta)]

    def log_probs(m):  # log p(c | x_n), shape (N, C), gate m on the hidden units
        f = (anp.tanh(X @ W0.T + b0) * m) @ W1.T + b1
        return f - anp.log(anp.sum(anp.exp(f), axis=1, keepdims=True))

    m1 = np.ones(4)
    dlp = jacobian(log_probs)(m1)  # (N, C, H): d log p(c | x_n) / d m
    p = np.exp(log_probs(m1))
    ref = np.einsum("nc,nch->h", p, dlp**2) / X.shape[0]  # E_{c ~ p}[(d log p / d m)^2]
    _close(sensitivity(net, theta, X, per="unit", aggregate="gate")[0], ref, 1e-12)


def test_input_shape_and_reduction():
    case = make_case((6, 5, 3), "relu", "categorical", N=9, seed=3)
    a = sensitivity(case.net, case.theta, case.X, per="input", input_shape=(2, 3))
    assert a.shape == (2, 3)
    _close(a.ravel(), sensitivity(case.net, case.theta, case.X, per="input"), 0)
    s = sensitivity(case.net, case.theta, case.X, per="input", aggregate="gate", reduction="sum")
    m = sensitivity(case.net, case.theta, case.X, per="input", aggregate="gate")
    _close(s, case.N * m)


def test_sensitivity_is_a_sample_weighted_mean_over_subsets():
    """Per-class maps combine into the overall map with weights N_c / N (the experiment's use)."""
    case = make_case((5, 6, 3), "tanh", "categorical", N=12, seed=4)
    groups = [np.flatnonzero(case.y == c) for c in range(3)]
    groups = [g for g in groups if g.size]
    for per, agg in [("parameter", None), ("input", None), ("input", "gate")]:
        total = sensitivity(case.net, case.theta, case.X, per=per, aggregate=agg)
        parts = (
            sum(
                g.size * sensitivity(case.net, case.theta, case.X[g], per=per, aggregate=agg)
                for g in groups
            )
            / case.N
        )
        _close(parts, total)


def test_mc_sensitivity_is_reproducible_and_matches_mc_fisher():
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=5)
    a = sensitivity(case.net, case.theta, case.X, fisher="mc", n_samples=3, rng=11)
    b = sensitivity(case.net, case.theta, case.X, fisher="mc", n_samples=3, rng=11)
    assert np.array_equal(a, b)
    _close(a, np.diag(minifim.mc_fisher(case.net, case.theta, case.X, 3, rng=11)))


def test_bad_input():
    case = make_case((3, 4, 3), "tanh", "categorical", N=5, seed=0)
    net, theta, X = case.net, case.theta, case.X
    with pytest.raises(ValueError, match="per"):
        sensitivity(net, theta, X, per="layer")
    with pytest.raises(ValueError, match="aggregate"):
        sensitivity(net, theta, X, per="unit", aggregate="sideways")
    with pytest.raises(ValueError, match="aggregate"):
        sensitivity(net, theta, X, per="input", aggregate="incoming")
    with pytest.raises(ValueError, match="aggregate"):
        sensitivity(net, theta, X, aggregate="gate")
    with pytest.raises(ValueError, match="input_shape"):
        sensitivity(net, theta, X, per="input", input_shape=(2, 2))
    with pytest.raises(ValueError, match="input_shape"):
        sensitivity(net, theta, X, per="unit", input_shape=(3,))
    with pytest.raises(TypeError, match="input_shape"):
        sensitivity(net, theta, X, per="input", input_shape=3)
    with pytest.raises(ValueError, match="fisher"):
        sensitivity(net, theta, X, fisher="hessian")
    with pytest.raises(ValueError, match="y"):
        sensitivity(net, theta, X, fisher="empirical")
    with pytest.raises(ValueError, match="theta"):
        sensitivity(net, theta[:-1], X)
    with pytest.raises(ValueError, match="X"):
        sensitivity(net, theta, X[:, :2], per="input", aggregate="gate")
    linear = minifim.MLP([3, 2], activation="identity")
    with pytest.raises(ValueError, match="hidden"):
        sensitivity(linear, linear.init(0), X, per="unit")


def test_targets_are_validated_even_by_kinds_that_ignore_them():
    """y passed with fisher='true' is harmless and common (one call site for every kind): it
    is validated, then ignored; a wrong y used to pass silently."""
    net = minifim.MLP([3, 4, 2])
    theta, X = net.init(0), np.ones((5, 3))
    y = np.array([0, 1, 1, 0, 1])
    np.testing.assert_array_equal(sensitivity(net, theta, X, y), sensitivity(net, theta, X))
    for per in ("parameter", "unit", "input"):
        with pytest.raises(ValueError, match=r"y: expected labels in \[0, 2\)"):
            sensitivity(net, theta, X, np.array([0, 1, 1, 0, -1]), per=per)
        with pytest.raises(ValueError, match=r"y: expected shape \(5,\)"):
            sensitivity(net, theta, X, y[:, None], per=per)
