"""MLP: parameter layout, hand-built forward, import/export round trips, init, config, errors."""

import json

import autograd.numpy as anp
import numpy as np
import pytest

import minifim
from minifim import MLP

from .cases import assert_close


def hand_forward(theta, X, sizes, phi):
    """Forward pass written from the documented layout alone: W0 (out, in) row-major, b0, ..."""
    off, a = 0, X
    for l in range(len(sizes) - 1):
        n_in, n_out = sizes[l], sizes[l + 1]
        W = np.array([[theta[off + o * n_in + i] for i in range(n_in)] for o in range(n_out)])
        off += n_in * n_out
        b = theta[off : off + n_out]
        off += n_out
        z = np.array(
            [
                [sum(W[o, i] * a[n, i] for i in range(n_in)) + b[o] for o in range(n_out)]
                for n in range(a.shape[0])
            ]
        )
        a = phi(z) if l < len(sizes) - 2 else z
    assert off == len(theta)
    return a


@pytest.mark.parametrize("sizes", [(3, 4, 2), (2, 3, 4, 5), (4, 1), (1, 1, 1)])
def test_parameter_layout_against_hand_forward(sizes):
    net = MLP(sizes, activation="tanh")
    P = sum(sizes[l] * sizes[l + 1] + sizes[l + 1] for l in range(len(sizes) - 1))
    assert net.num_params == P
    theta = np.random.default_rng(0).standard_normal(P)
    X = np.random.default_rng(1).standard_normal((5, sizes[0]))
    assert_close(net.forward(theta, X), hand_forward(theta, X, sizes, np.tanh), 1e-14)


def test_flat_order_indices():
    net = MLP([3, 2, 4])
    theta = np.arange(net.num_params, dtype=float)
    (W0, b0), (W1, b1) = net.unflatten(theta)
    assert W0.shape == (2, 3) and b0.shape == (2,) and W1.shape == (4, 2) and b1.shape == (4,)
    assert W0[0, 1] == 1 and W0[1, 0] == 3  # row-major (out, in)
    assert list(b0) == [6, 7] and W1[0, 0] == 8 and W1[3, 1] == 15 and list(b1) == [16, 17, 18, 19]
    assert net.shapes == [(2, 3), (4, 2)]
    assert net.layer_slices == [(slice(0, 6), slice(6, 8)), (slice(8, 16), slice(16, 20))]
    assert net.layer_param_slices() == [slice(0, 8), slice(8, 20)]
    assert net.param_names() == ["W0", "b0", "W1", "b1"]
    assert (net.num_layers, net.input_dim, net.output_dim) == (2, 3, 4)


def test_flatten_unflatten_round_trip_bit_exact():
    net = MLP([3, 5, 4, 2])
    theta = np.random.default_rng(0).standard_normal(net.num_params)
    back = net.flatten(net.unflatten(theta))
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, theta)
    layers = [
        (np.ones((5, 3)), np.zeros(5)),
        (2 * np.ones((4, 5)), np.ones(4)),
        (np.ones((2, 4)), np.ones(2)),
    ]
    for (W, b), (W2, b2) in zip(layers, net.unflatten(net.flatten(layers))):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)


def test_flatten_bad_input():
    net = MLP([3, 2])
    with pytest.raises(ValueError, match=r"layers: expected 1 \(W, b\) pairs, received 2"):
        net.flatten([(np.ones((2, 3)), np.ones(2))] * 2)
    with pytest.raises(ValueError, match=r"layers\[0\]: expected a \(W, b\) pair"):
        net.flatten([(np.ones((2, 3)),)])
    with pytest.raises(ValueError, match=r"W0.*expected shape \(2, 3\), received shape \(3, 2\)"):
        net.flatten([(np.ones((3, 2)), np.ones(2))])
    with pytest.raises(ValueError, match=r"b0.*expected shape \(2,\), received shape \(1,\)"):
        net.flatten([(np.ones((2, 3)), np.ones(1))])
    with pytest.raises(ValueError, match="W0.*finite"):
        net.flatten([(np.full((2, 3), np.nan), np.ones(2))])
    with pytest.raises(TypeError, match="layers: expected a list"):
        net.flatten(5)


# --- interchange -------------------------------------------------------------------------------
def test_state_dict_round_trip_bit_exact():
    net = MLP([3, 4, 5, 2])
    theta = np.random.default_rng(2).standard_normal(net.num_params)
    sd = net.to_state_dict(theta)
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert sd["0.weight"].shape == (4, 3) and sd["4.bias"].shape == (2,)
    np.testing.assert_array_equal(net.from_state_dict(sd), theta)
    sd2 = net.to_state_dict(theta, keys=["fc1", "fc2", "out"])
    assert list(sd2)[0] == "fc1.weight"
    np.testing.assert_array_equal(net.from_state_dict(sd2), theta)
    np.testing.assert_array_equal(net.from_state_dict(sd2, keys=["fc1", "fc2", "out"]), theta)
    # exported arrays are copies: mutating them leaves theta alone
    sd["0.weight"][...] = 0.0
    assert np.all(theta[:12] != 0.0)


def test_state_dict_errors():
    net = MLP([3, 4, 2])
    sd = net.to_state_dict(net.init(0))
    wrong = dict(sd, **{"0.weight": sd["0.weight"].T})
    with pytest.raises(
        ValueError,
        match=r"state_dict: .*W0.*expected shape \(4, 3\), received "
        r"shape \(3, 4\).*PyTorch layout \(out, in\)",
    ):
        net.from_state_dict(wrong)
    missing = {k: v for k, v in sd.items() if k != "2.bias"}
    with pytest.raises(ValueError, match="state_dict: missing entry '2.bias' for layer 1"):
        net.from_state_dict(missing)
    too_few = {k: v for k, v in sd.items() if not k.startswith("2.")}
    with pytest.raises(ValueError, match=r"state_dict: expected 2 '\*\.weight' entries"):
        net.from_state_dict(too_few)
    with pytest.raises(ValueError, match="keys: expected 2 layer prefixes, received 1"):
        net.from_state_dict(sd, keys=["0"])
    with pytest.raises(ValueError, match="state_dict: missing entry 'a.weight'"):
        net.from_state_dict(sd, keys=["a", "b"])
    with pytest.raises(TypeError, match="state_dict: expected a mapping"):
        net.from_state_dict([sd["0.weight"]])
    with pytest.raises(ValueError, match="b1.*finite"):
        net.from_state_dict(dict(sd, **{"2.bias": np.array([np.nan, 0.0])}))


def test_flax_round_trip_bit_exact():
    net = MLP([3, 4, 2])
    theta = np.random.default_rng(3).standard_normal(net.num_params)
    params = net.to_flax(theta)
    W0 = net.unflatten(theta)[0][0]
    assert params["params"]["Dense_0"]["kernel"].shape == (3, 4)  # (in, out)
    np.testing.assert_array_equal(params["params"]["Dense_0"]["kernel"], W0.T)
    np.testing.assert_array_equal(net.from_flax(params), theta)
    np.testing.assert_array_equal(net.from_flax(params["params"]), theta)
    # a flax forward written from the flax convention, x @ kernel + bias
    X = np.random.default_rng(4).standard_normal((5, 3))
    p = params["params"]
    h = np.tanh(X @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    assert_close(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"], net.forward(theta, X), 1e-14)


def test_flax_orders_layers_numerically():
    sizes = [2] + [1] * 11  # 11 layers: Dense_10 must come after Dense_9
    net = MLP(sizes, activation="identity")
    theta = np.arange(net.num_params, dtype=float)
    params = net.to_flax(theta)["params"]
    shuffled = {k: params[k] for k in sorted(params)}  # lexicographic: Dense_10 before Dense_2
    assert list(shuffled)[2] == "Dense_10"
    np.testing.assert_array_equal(net.from_flax(shuffled), theta)


def test_flax_errors():
    net = MLP([3, 4, 2])
    params = net.to_flax(net.init(0))["params"]
    bad = dict(
        params, Dense_0={"kernel": params["Dense_0"]["kernel"].T, "bias": params["Dense_0"]["bias"]}
    )
    with pytest.raises(
        ValueError,
        match=r"params: .*W0.*expected shape \(4, 3\), received "
        r"shape \(3, 4\).*flax kernels are \(in, out\)",
    ):
        net.from_flax(bad)
    with pytest.raises(ValueError, match=r"params\['Dense_0'\]: expected a mapping with 'kernel'"):
        net.from_flax(dict(params, Dense_0={"bias": params["Dense_0"]["bias"]}))
    with pytest.raises(ValueError, match="params: expected 2 dense layers .* received 1"):
        net.from_flax({"Dense_0": params["Dense_0"]})
    with pytest.raises(TypeError, match="params: expected a mapping"):
        net.from_flax([1, 2])


def test_torch_state_dict_and_forward():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    seq = torch.nn.Sequential(
        torch.nn.Linear(3, 5),
        torch.nn.Tanh(),
        torch.nn.Linear(5, 4),
        torch.nn.Tanh(),
        torch.nn.Linear(4, 2),
    ).double()
    net = MLP([3, 5, 4, 2], activation="tanh")
    theta = net.from_state_dict(seq.state_dict())
    X = np.random.default_rng(0).standard_normal((6, 3))
    assert_close(net.forward(theta, X), seq(torch.from_numpy(X)).detach().numpy(), 1e-14)
    seq2 = torch.nn.Sequential(
        torch.nn.Linear(3, 5),
        torch.nn.Tanh(),
        torch.nn.Linear(5, 4),
        torch.nn.Tanh(),
        torch.nn.Linear(4, 2),
    ).double()
    seq2.load_state_dict({k: torch.from_numpy(v) for k, v in net.to_state_dict(theta).items()})
    np.testing.assert_array_equal(net.from_state_dict(seq2.state_dict()), theta)


# --- init ---------------------------------------------------------------------------------------
def test_init_reproducible():
    net = MLP([4, 6, 3])
    np.testing.assert_array_equal(net.init(5), net.init(5))
    np.testing.assert_array_equal(net.init(5), net.init(np.random.default_rng(5)))
    assert not np.array_equal(net.init(5), net.init(6))
    rng = np.random.default_rng(0)
    assert not np.array_equal(net.init(rng), net.init(rng))  # the generator advances
    assert net.init(0).shape == (net.num_params,) and net.init(0).dtype == np.float64


def test_init_schemes():
    net = MLP([200, 50, 3])
    theta = net.init(0)
    for (W, b), (_, n_in) in zip(net.unflatten(theta), net.shapes):
        bound = 1 / np.sqrt(n_in)
        assert np.abs(W).max() <= bound and np.abs(b).max() <= bound
        assert np.abs(W).max() > 0.9 * bound  # uniform fills its range
    theta = net.init(0, scheme="normal")
    (W0, b0), _ = net.unflatten(theta)
    assert np.all(b0 == 0)
    # sample variance of 10,000 N(0, 1/200) draws: within 5 standard errors (sqrt(2/n) rel.)
    assert abs(W0.var() * 200 - 1) < 5 * np.sqrt(2 / W0.size)
    with pytest.raises(ValueError, match="scheme: expected 'pytorch' or 'normal', received 'x'"):
        net.init(0, scheme="x")
    with pytest.raises(
        TypeError,
        match="rng: expected a numpy.random.Generator or an integer seed, received NoneType",
    ):
        net.init(None)


# --- config, repr, custom activation ----------------------------------------------------------
@pytest.mark.parametrize("lik", ["categorical", "bernoulli", "gaussian"])
def test_config_round_trip(lik):
    net = MLP([3, 4, 2], activation="softplus", likelihood=lik, sigma=0.3)
    cfg = json.loads(json.dumps(net.config()))
    net2 = MLP(**cfg)
    assert net2.config() == net.config() and repr(net2) == repr(net)
    assert net2.likelihood == net.likelihood
    theta, X = net.init(0), np.ones((2, 3))
    np.testing.assert_array_equal(net2.forward(theta, X), net.forward(theta, X))
    assert ("sigma=0.3" in repr(net)) == (lik == "gaussian")


def test_custom_activation_config_refused():
    def relu(z):  # a custom callable that shares a built-in's name must not be serialised
        return 2.0 * anp.maximum(z, 0.0)

    with pytest.raises(ValueError, match="activation: a custom callable .*'relu'"):
        MLP([3, 2], activation=relu).config()
    with pytest.raises(ValueError, match="activation: a custom callable"):
        MLP([3, 2], activation=lambda z: z).config()


def test_custom_callable_activation_both_routes():
    """A user activation written with autograd.numpy: its derivative comes from autograd, and
    the batched backprop route agrees with the generic autograd route and a hand forward."""

    def swish(z):
        return z / (1.0 + anp.exp(-z))

    net = MLP([3, 4, 3], activation=swish)
    rng = np.random.default_rng(0)
    theta, X = net.init(rng), rng.standard_normal((5, 3))
    y = np.array([0, 1, 2, 1, 0])
    assert_close(
        net.forward(theta, X),
        hand_forward(theta, X, [3, 4, 3], lambda z: z / (1 + np.exp(-z))),
        1e-14,
    )
    S1 = minifim.per_sample_scores(net, theta, X, y)
    S2 = minifim.per_sample_scores(net, theta, X, y, backend="autograd")
    assert_close(S1, S2, 1e-12)
    J1 = minifim.output_jacobians(net, theta, X)
    assert_close(J1, minifim.output_jacobians(net, theta, X, backend="autograd"), 1e-12)


def test_log_prob_and_predict():
    net = MLP([3, 4, 3])
    theta, X = net.init(0), np.random.default_rng(0).standard_normal((4, 3))
    y = np.array([2, 0, 1, 1])
    f = net.forward(theta, X)
    np.testing.assert_array_equal(net.log_prob(theta, X, y), net.likelihood.log_prob(f, y))
    assert_close(net.predict(theta, X), np.exp(f) / np.exp(f).sum(1, keepdims=True), 1e-15)
    # lists and integer arrays are converted losslessly, inputs are not modified
    Xi = np.arange(12).reshape(4, 3)
    np.testing.assert_array_equal(
        net.forward(list(theta), Xi.tolist()), net.forward(theta, Xi.astype(float))
    )
    Xc = X.copy()
    net.forward(theta, X)
    np.testing.assert_array_equal(X, Xc)


# --- bad input -----------------------------------------------------------------------------------
def test_constructor_bad_input():
    cases = [
        (dict(sizes=3), TypeError, "sizes: expected a sequence"),
        (dict(sizes="34"), TypeError, "sizes: expected a sequence"),
        (dict(sizes=[3]), ValueError, r"sizes: expected at least 2 widths .*received \(3,\)"),
        (dict(sizes=[3, 0]), ValueError, r"sizes\[1\]: expected an integer >= 1, received 0"),
        (dict(sizes=[3, 2.0]), TypeError, r"sizes\[1\]: expected an integer, received float"),
        (dict(sizes=[3, True]), TypeError, r"sizes\[1\]: expected an integer, received bool"),
        (dict(sizes=[3, 2], activation="gelu"), ValueError, "activation: expected one of"),
        (dict(sizes=[3, 2], activation=1), TypeError, "activation: expected a name"),
        (dict(sizes=[3, 2], likelihood="negbinomial"), ValueError, "likelihood: expected one of"),
        (dict(sizes=[3, 2], likelihood=None), TypeError, "likelihood: expected one of"),
        (
            dict(sizes=[3, 2], likelihood="gaussian", sigma=0),
            ValueError,
            "sigma: expected a positive number, received 0.0",
        ),
        (dict(sizes=[3, 2], likelihood="gaussian", sigma="1"), TypeError, "sigma"),
    ]
    for kwargs, err, msg in cases:
        with pytest.raises(err, match=msg):
            MLP(**kwargs)
    assert MLP(np.array([3, 2])).sizes == (3, 2)


def test_forward_bad_input():
    net = MLP([3, 4, 2])
    theta, X = net.init(0), np.ones((5, 3))
    bad_theta = [
        (
            theta[:-1],
            ValueError,
            r"theta: expected shape \(26,\) for MLP\(\[3, 4, 2\].*received "
            r"shape \(25,\)",
        ),
        (theta[None], ValueError, r"theta: expected shape \(26,\)"),
        (np.where(np.arange(26) == 3, np.nan, theta), ValueError, "theta: expected finite"),
        (np.where(np.arange(26) == 3, np.inf, theta), ValueError, "theta: expected finite"),
        (theta.astype(complex), TypeError, "theta: expected a real array"),
        ("abc", TypeError, "theta: expected a real numeric array"),
        (None, TypeError, "theta"),
    ]
    for th, err, msg in bad_theta:
        with pytest.raises(err, match=msg):
            net.forward(th, X)
    bad_X = [
        (
            np.ones(3),
            ValueError,
            r"X: expected a 2-D array of shape \(N, 3\), received shape "
            r"\(3,\) \(use X\[None, :\] for one sample\)",
        ),
        (np.ones((2, 3, 1)), ValueError, "X: expected a 2-D array"),
        (np.ones((5, 2)), ValueError, r"X: expected 3 input features .*received shape \(5, 2\)"),
        (np.ones((0, 3)), ValueError, "X: expected at least one sample"),
        (np.full((5, 3), np.nan), ValueError, "X: expected finite values"),
        (np.full((5, 3), -np.inf), ValueError, "X: expected finite values"),
        ([["a", "b", "c"]], TypeError, "X: expected a real numeric array"),
    ]
    for XX, err, msg in bad_X:
        with pytest.raises(err, match=msg):
            net.forward(theta, XX)
        with pytest.raises(err, match=msg):
            net.predict(theta, XX)
        with pytest.raises(err, match=msg):
            net.log_prob(theta, XX, np.zeros(5, int))
    with pytest.raises(ValueError, match="y: expected labels in"):
        net.log_prob(theta, X, np.full(5, 2))
    with pytest.raises(ValueError, match=r"y: expected shape \(5,\)"):
        net.check_targets(np.zeros(4, int), 5)
    with pytest.raises(ValueError, match=r"theta: expected shape"):
        net.to_state_dict(theta[:-1])
    with pytest.raises(ValueError, match=r"theta: expected shape"):
        net.to_flax(theta[:-1])


def test_unflatten_refuses_wrong_theta():
    """A short theta used to be truncated (a 2-entry last bias) and a long one cut silently."""
    net = MLP([4, 5, 3])  # P = 25 + 18 = 43
    theta = net.init(0)
    for th, err, msg in [
        (theta[:-1], ValueError, r"theta: expected shape \(43,\) .*received shape \(42,\)"),
        (np.concatenate([theta, [1.0]]), ValueError, r"received shape \(44,\)"),
        (theta[:40], ValueError, r"received shape \(40,\)"),
        (theta[None], ValueError, r"received shape \(1, 43\)"),
        (theta.astype(complex), TypeError, "theta: expected a real array"),
        (np.where(np.arange(43) == 0, np.nan, theta), ValueError, "theta: expected finite"),
        ("abc", TypeError, "theta: expected a real numeric array"),
    ]:
        with pytest.raises(err, match=msg):
            net.unflatten(th)
    layers = net.unflatten(list(theta))  # sequences are converted like everywhere else
    assert_close(net.flatten(layers), theta, 0.0)


def test_unflatten_differentiable_with_boxed_theta():
    import autograd

    net = MLP([2, 3, 1])
    theta = net.init(1)
    g = autograd.grad(lambda th: anp.sum(net.unflatten(th)[1][0] ** 2))(theta)
    expected = np.zeros_like(theta)
    expected[net.layer_slices[1][0]] = 2 * theta[net.layer_slices[1][0]]
    assert_close(g, expected, 0.0)
    with pytest.raises(ValueError, match=r"theta: expected shape \(13,\)"):
        autograd.grad(lambda th: anp.sum(net.unflatten(th[:-1])[0][0]))(theta)
