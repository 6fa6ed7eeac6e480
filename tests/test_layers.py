"""minifim.layers: each layer against its definition, the equivalences between layers, the
shape rules and the refusals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minifim
from minifim.layers import (
    Conv2d,
    Elementwise,
    Flatten,
    Identity,
    Linear,
    Mean,
    ReLU,
    Sigmoid,
    Softplus,
    Tanh,
    layer_from_config,
)

from .cases import CNN_CASES, SEQUENTIAL_CASES, assert_close

EPS = np.finfo(float).eps


def conv2d_loops(X, W, b, stride, padding, dilation):
    """Cross-correlation from the definition, one output entry at a time:
    ``z[n, o, h, w] = b[o] + sum_{c, i, j} W[o, c, i, j] x[n, c, h s - p + i d, w s - p + j d]``
    (zero outside the input)."""
    N, C, H, Wd = X.shape
    O, _, kh, kw = W.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (Wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    Z = np.zeros((N, O, Ho, Wo))
    for n, o, h, w in itertools.product(range(N), range(O), range(Ho), range(Wo)):
        acc = 0.0 if b is None else b[o]
        for c, i, j in itertools.product(range(C), range(kh), range(kw)):
            r, s = h * sh - ph + i * dh, w * sw - pw + j * dw
            if 0 <= r < H and 0 <= s < Wd:
                acc += W[o, c, i, j] * X[n, c, r, s]
        Z[n, o, h, w] = acc
    return Z


def _net(layers, input_shape, likelihood="gaussian"):
    return minifim.Sequential(layers, likelihood=likelihood, input_shape=input_shape)


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation, shape",
    [
        (3, 2, 1, 1, (2, 6, 6)),
        ((2, 3), (1, 2), (1, 0), (2, 1), (2, 5, 7)),
        (1, 1, 0, 1, (3, 4, 4)),
        (2, 3, 2, 2, (1, 5, 5)),
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_forward_equals_the_nested_loop_definition(
    kernel, stride, padding, dilation, shape, bias
):
    conv = Conv2d(shape[0], 2, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias)
    net = _net([conv], shape)
    rng = np.random.default_rng(0)
    theta = net.init(rng)
    X = rng.standard_normal((3,) + shape)
    ((W, b),) = net.unflatten(theta)
    ref = conv2d_loops(X, W, b if bias else None, conv.stride, conv.padding, conv.dilation)
    assert net.output_shape == ref.shape[1:]
    # each output is a sum of C kh kw + 1 products: error <= that many ulps of the terms
    assert_close(net.forward(theta, X), ref, 4 * EPS * (np.prod(W.shape[1:]) + 1))


def test_conv_with_a_1x1_kernel_is_linear_on_the_channel_axis():
    rng = np.random.default_rng(1)
    conv = _net([Conv2d(3, 4, 1)], (3, 5, 2))
    theta = conv.init(rng)
    X = rng.standard_normal((2, 3, 5, 2))
    ((W, b),) = conv.unflatten(theta)
    lin = _net([Linear(3, 4)], (5, 2, 3))  # channels last: positions (5, 2)
    theta_lin = lin.flatten([(W[:, :, 0, 0], b)])
    out = lin.forward(theta_lin, X.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert_close(conv.forward(theta, X), out, 8 * EPS)
    # and their gradients agree, block by block (the conv weight is the linear weight)
    y = rng.standard_normal((2, 4, 5, 2))
    gc = minifim.gradient(_net([Conv2d(3, 4, 1), Flatten()], (3, 5, 2)), theta, X, y.reshape(2, -1))
    lin_flat = _net([Linear(3, 4)], (5, 2, 3))
    yl = y.transpose(0, 2, 3, 1)
    gl = minifim.gradient(lin_flat, theta_lin, X.transpose(0, 2, 3, 1), yl)
    assert_close(gc, gl, 64 * EPS)


def test_conv_whose_kernel_covers_the_input_is_linear_on_the_flattened_input():
    rng = np.random.default_rng(2)
    conv = _net([Conv2d(2, 3, (3, 4)), Flatten()], (2, 3, 4))
    theta = conv.init(rng)
    X = rng.standard_normal((4, 2, 3, 4))
    lin = _net([Linear(24, 3)], (24,))
    # same flat theta: (3, 2, 3, 4) row-major is (3, 24) row-major, in C-order flattening
    assert_close(conv.forward(theta, X), lin.forward(theta, X.reshape(4, -1)), 32 * EPS)
    y = rng.integers(0, 3, 4)
    for fisher in ("true", "empirical"):
        Fc = minifim.curvature_matrix(
            minifim.Sequential(conv.layers, "categorical", (2, 3, 4)), theta, X, y, fisher
        )
        Fl = minifim.curvature_matrix(
            minifim.Sequential(lin.layers, "categorical", (24,)), theta, X.reshape(4, -1), y, fisher
        )
        assert_close(Fc, Fl, 1e-13)


def test_mean_then_linear_equals_linear_then_mean():
    rng = np.random.default_rng(3)
    a = _net([Mean(1), Linear(3, 2)], (4, 3))
    b = _net([Linear(3, 2), Mean(1)], (4, 3))
    theta = a.init(rng)
    X = rng.standard_normal((5, 4, 3))
    assert_close(a.forward(theta, X), b.forward(theta, X), 16 * EPS)
    y = rng.standard_normal((5, 2))
    assert_close(minifim.gradient(a, theta, X, y), minifim.gradient(b, theta, X, y), 64 * EPS)
    assert_close(minifim.true_fisher(a, theta, X), minifim.true_fisher(b, theta, X), 64 * EPS)
    # Mean over a middle axis, counted on the batch array
    c = _net([Mean(2), Flatten(), Linear(8, 2)], (2, 3, 4))
    X3 = rng.standard_normal((2, 2, 3, 4))
    th = c.init(rng)
    ((W, bias),) = c.unflatten(th)
    assert_close(c.forward(th, X3), X3.mean(axis=2).reshape(2, -1) @ W.T + bias, 16 * EPS)


def test_flatten_follows_torch():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((2, 3, 4, 5))
    for start, end, shape in [(1, -1, (60,)), (2, 3, (3, 20)), (1, 2, (12, 5)), (-2, -1, (3, 20))]:
        layer = Flatten(start, end)
        assert layer.build((3, 4, 5)) == shape
        assert np.array_equal(layer.apply(X), X.reshape((2,) + shape))


def test_activation_layers_apply_their_functions():
    z = np.linspace(-3, 3, 13)[None]
    for layer, ref in [
        (Tanh(), np.tanh(z)),
        (ReLU(), np.maximum(z, 0)),
        (Sigmoid(), 1 / (1 + np.exp(-z))),
        (Softplus(), np.log1p(np.exp(z))),
        (Identity(), z),
    ]:
        assert_close(layer.apply(z), ref, 4 * EPS)
    assert Elementwise("tanh") == Tanh() and Tanh().config() == {"type": "Tanh"}


def test_configs_rebuild_layers_and_networks():
    for c in SEQUENTIAL_CASES:
        cfg = c.net.config()
        again = minifim.Sequential(**cfg)
        assert again.config() == cfg and again.num_params == c.P
        assert np.array_equal(again.forward(c.theta, c.X), c.net.forward(c.theta, c.X))
        for layer in c.net.layers:
            assert layer_from_config(layer.config()) == layer
    net = minifim.MLP([3, 4, 2])
    seq = minifim.Sequential(**net.sequential_config())
    theta = net.init(0)
    X = np.ones((2, 3))
    assert np.array_equal(seq.forward(theta, X), net.forward(theta, X))


def test_state_dict_keys_are_nn_sequential_indices():
    c = CNN_CASES[0]
    sd = c.net.to_state_dict(c.theta)
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias"]
    assert sd["0.weight"].shape == (2, 1, 3, 3)
    assert np.array_equal(c.net.from_state_dict(sd), c.theta)
    nobias = CNN_CASES[1]
    sd = nobias.net.to_state_dict(nobias.theta)
    assert "2.bias" not in sd and "2.weight" in sd
    assert np.array_equal(nobias.net.from_state_dict(sd), nobias.theta)
    assert nobias.net.param_names() == ["W0", "b0", "W1", "W2", "b2"]
    with pytest.raises(ValueError, match="no flax equivalent"):
        c.net.to_flax(c.theta)


@pytest.mark.parametrize(
    "build, error, match",
    [
        (
            lambda: _net([Conv2d(1, 2, 5)], (1, 4, 4)),
            ValueError,
            "kernel_size: .*larger than the padded input",
        ),
        (
            lambda: _net([Conv2d(1, 2, 3, dilation=2)], (1, 4, 6)),
            ValueError,
            "kernel_size: .*spans 5",
        ),
        (lambda: Conv2d(1, 2, 3, stride=0), ValueError, "stride: expected an integer >= 1"),
        (
            lambda: Conv2d(1, 2, 3, dilation=(1, 0)),
            ValueError,
            r"dilation\[1\]: expected an integer >= 1",
        ),
        (lambda: Conv2d(1, 2, 3, padding=-1), ValueError, "padding: expected an integer >= 0"),
        (lambda: Conv2d(1, 2, (3, 3, 3)), ValueError, "kernel_size: expected an int or a pair"),
        (lambda: _net([Flatten(0), Linear(3, 2)], (3,)), ValueError, "start_dim: .*sample axis"),
        (lambda: _net([Mean(0), Linear(3, 2)], (4, 3)), ValueError, "axis: .*sample axis"),
        (lambda: _net([Mean(-3), Linear(3, 2)], (4, 3)), ValueError, "axis: .*sample axis"),
        (lambda: _net([Mean(3), Linear(3, 2)], (4, 3)), ValueError, "axis: expected an axis in"),
        (
            lambda: _net([Conv2d(2, 2, 1)], (1, 4, 4)),
            ValueError,
            r"input_shape: Conv2d.* expects inputs \(N, 2, H, W\)",
        ),
        (
            lambda: _net([Linear(3, 2)], (4, 2)),
            ValueError,
            r"input_shape: .*expects inputs \(N, \.\.\., 3\)",
        ),
        (
            lambda: _net([Tanh(), Flatten()], (3,)),
            ValueError,
            "layers: expected at least one parametric",
        ),
        (lambda: _net([Conv2d(1, 2, 1)], None), ValueError, "input_shape: expected one sample's"),
        (lambda: _net([{"type": "Pool"}], (3,)), ValueError, "layers: expected a layer type"),
        (lambda: _net("Linear", (3,)), TypeError, "layers: expected a list"),
        (lambda: Linear(3, 2, bias=1), TypeError, "bias: expected True or False"),
    ],
)
def test_bad_layers_and_shapes_are_refused(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_wrong_inputs_and_labels_are_refused_naming_the_shape():
    c = SEQUENTIAL_CASES[0]  # CNN, input (1, 6, 6)
    with pytest.raises(ValueError, match=r"X: expected shape \(N, 1, 6, 6\) for input_shape"):
        c.net.forward(c.theta, c.X[:, :, :5])
    with pytest.raises(ValueError, match="use X\\[None\\] for one sample"):
        c.net.forward(c.theta, c.X[0])
    seq = next(s for s in SEQUENTIAL_CASES if s.name == "sequence-categorical")
    with pytest.raises(ValueError, match=r"y: expected shape \(4, 3\) for outputs \(N, 3, 3\)"):
        minifim.per_sample_scores(seq.net, seq.theta, seq.X, seq.y[:, 0])
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\)"):
        minifim.per_sample_scores(seq.net, seq.theta, seq.X, seq.y + 3)
    with pytest.raises(TypeError, match="y: expected targets"):
        seq.net.check_targets(None, 4)


@st.composite
def _conv_geometries(draw):
    """A valid Conv2d geometry on a small input (the dilated kernel fits the padded input)."""
    C = draw(st.integers(1, 3))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    span = [d[a] * (k[a] - 1) + 1 for a in (0, 1)]
    H = draw(st.integers(max(1, span[0] - 2 * p[0]), 6))
    W = draw(st.integers(max(1, span[1] - 2 * p[1]), 6))
    return C, (H, W), k, s, p, d


@given(_conv_geometries(), st.integers(0, 2**31 - 1))
def test_conv_geometries_forward_and_col2im_adjoint(geometry, seed):
    """Any valid geometry: the forward pass equals the loops; col2im is the exact adjoint of
    im2col (``<unfold(x), G> = <x, input_grad(G)>``); the backprop scores equal autograd's
    (whose adjoint of the gather is numpy's ``add.at``, not the col2im)."""
    C, (H, W), k, s, p, d = geometry
    conv = Conv2d(C, 2, k, stride=s, padding=p, dilation=d)
    net = minifim.Sequential([conv, Tanh(), Flatten()], "gaussian", (C, H, W))
    conv = net.layers[0]  # the network's own (built) copy
    rng = np.random.default_rng(seed)
    theta = net.init(rng)
    X = rng.standard_normal((2, C, H, W))
    ((Wt, b),) = net.unflatten(theta)
    ref = np.tanh(conv2d_loops(X, Wt, b, conv.stride, conv.padding, conv.dilation))
    assert_close(net.forward(theta, X), ref.reshape(2, -1), 8 * EPS * (C * k[0] * k[1] + 1))
    G = rng.standard_normal((2, conv.positions, conv.fan_in))
    lhs = np.sum(conv.unfold(X) * G)
    rhs = np.sum(X * conv.input_grad(G))
    assert abs(lhs - rhs) <= 8 * EPS * G.size * np.max(np.abs(G)) * np.max(np.abs(X))
    deep = minifim.Sequential([Linear(W, W), conv, Flatten()], "gaussian", (C, H, W))
    th2 = deep.init(rng)
    y = rng.standard_normal((2, int(np.prod(deep.output_shape))))
    assert_close(
        minifim.per_sample_scores(deep, th2, X, y),
        minifim.per_sample_scores(deep, th2, X, y, backend="autograd"),
        1e-12,
    )


@given(_conv_geometries(), st.integers(0, 2**31 - 1))
def test_conv_input_seeds_both_routes_are_the_transposed_convolution(geometry, seed):
    """``input_seeds(B, W)`` is the adjoint of the bias-free convolution, ``<conv(x), B> = <x,
    input_seeds(B)>``, by the dense input map and by the batch-last im2col GEMM + col2im
    (forced by setting the dense route's flop ratio to zero / infinity); the dense map's
    rows are the convolution of the unit inputs (its definition, through the loops)."""
    C, (H, W), k, s, p, d = geometry
    net = minifim.Sequential(
        [Conv2d(C, 3, k, stride=s, padding=p, dilation=d)], "gaussian", (C, H, W)
    )
    conv = net.layers[0]
    rng = np.random.default_rng(seed)
    Wt = rng.standard_normal(conv.weight_shape)
    Wm = Wt.reshape(conv.matrix_shape)
    X = rng.standard_normal((2, C, H, W))
    B = rng.standard_normal((2,) + conv.out_shape)
    Z = conv2d_loops(X, Wt, None, conv.stride, conv.padding, conv.dilation)
    E = np.eye(C * H * W).reshape(-1, C, H, W)
    T = conv2d_loops(E, Wt, None, conv.stride, conv.padding, conv.dilation).reshape(C * H * W, -1)
    np.testing.assert_array_equal(conv.dense_input_map(Wm), T.T)  # single products, no sums
    lhs = np.sum(Z * B)
    scale = np.sum(np.abs(B).reshape(2, -1) @ np.abs(T).T * np.abs(X).reshape(2, -1))
    routes = {}
    for ratio in (0.0, np.inf):
        conv.DENSE_FLOPS_RATIO = ratio
        routes[ratio] = conv.input_seeds(B, Wm)
        assert routes[ratio].shape == X.shape
        rhs = np.sum(X * routes[ratio])
        # each side a sum of at most 2 |T| products of the same terms: c n eps of |B||T||X|
        n = 2 * (B.size + X.size + C * k[0] * k[1])
        assert abs(lhs - rhs) <= n * EPS * scale + 1e-300
    bound = 2 * (3 * conv.positions) * EPS * (np.abs(B).reshape(2, -1) @ np.abs(T).T)
    assert np.all(np.abs(routes[0.0] - routes[np.inf]).reshape(2, -1) <= bound)


def test_flatten_first_is_the_mlp_on_flattened_inputs():
    """Images flattened by the first layer: every quantity is the MLP's on ``X.reshape(N, -1)``
    (the layers before the first parametric one carry no tangent and need no backward pass)."""
    mlp = minifim.MLP([12, 5, 3], activation="relu")
    seq = minifim.Sequential([Flatten(), Linear(12, 5), ReLU(), Linear(5, 3)], input_shape=(3, 4))
    rng = np.random.default_rng(6)
    theta = mlp.init(rng)
    X = rng.standard_normal((5, 3, 4))
    y = rng.integers(0, 3, 5)
    X2 = X.reshape(5, -1)
    assert np.array_equal(seq.forward(theta, X), mlp.forward(theta, X2))
    assert np.array_equal(
        minifim.per_sample_scores(seq, theta, X, y), minifim.per_sample_scores(mlp, theta, X2, y)
    )
    assert np.array_equal(minifim.true_fisher(seq, theta, X), minifim.true_fisher(mlp, theta, X2))
    V = rng.standard_normal((mlp.num_params, 2))
    assert np.array_equal(
        minifim.jacobian_vector_product(seq, theta, X, V),
        minifim.jacobian_vector_product(mlp, theta, X2, V),
    )


def test_im2col_patches_and_position_seeds_are_memory_guarded():
    c = CNN_CASES[0]
    patches = sum(
        layer.positions * layer.fan_in for layer in c.net.parametric_layers if layer.positions > 1
    )
    with minifim.memory_limit(8 * c.N * patches // 2):
        with pytest.raises(minifim.MemoryBudgetError, match="im2col patches"):
            minifim.jacobian_vector_product(c.net, c.theta, c.X, np.ones(c.P))
    seq = next(s for s in SEQUENTIAL_CASES if s.name == "sequence-categorical")
    R, C = seq.net.positions, seq.net.output_dim
    with minifim.memory_limit(8 * seq.N * R * C * R * C - 8):
        with pytest.raises(minifim.MemoryBudgetError, match="per-position output seeds"):
            seq.net.spread_positions(np.zeros((seq.N * R, C, C)))
