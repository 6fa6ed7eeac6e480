"""Objective: the mean NLL and its gradient against closed forms, autograd and finite
differences."""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
import scipy.special

import minifim

from .cases import assert_close, get_case


def test_loss_closed_forms():
    cat = get_case("categorical-tanh-3x4x3")
    f = cat.net.forward(cat.theta, cat.X)
    ce = -np.mean(scipy.special.log_softmax(f, axis=1)[np.arange(cat.N), cat.y])
    assert_close(minifim.loss(cat.net, cat.theta, cat.X, cat.y), ce, 1e-15)
    gauss = get_case("gaussian-tanh-3x4x3")
    f = gauss.net.forward(gauss.theta, gauss.X)
    s2 = gauss.net.likelihood.sigma**2
    ref = np.mean(np.sum((gauss.y - f) ** 2, axis=1) / (2 * s2)) + 1.5 * np.log(2 * np.pi * s2)
    assert_close(minifim.loss(gauss.net, gauss.theta, gauss.X, gauss.y), ref, 1e-15)
    bern = get_case("bernoulli-tanh-3x4x3")
    f = bern.net.forward(bern.theta, bern.X)
    p = scipy.special.expit(f)
    bce = -np.mean(np.sum(bern.y * np.log(p) + (1 - bern.y) * np.log1p(-p), axis=1))
    assert_close(minifim.loss(bern.net, bern.theta, bern.X, bern.y), bce, 1e-14)


def test_gradient_autograd_and_scores(case):
    net, theta, X, y = case.net, case.theta, case.X, case.y

    def nll(th):
        return -anp.mean(net.likelihood.log_prob(net.apply(th, X), y))

    value, g = minifim.loss_and_gradient(net, theta, X, y)
    assert isinstance(value, float) and g.shape == (case.P,)
    assert_close(value, nll(theta), 1e-15)
    assert_close(g, autograd.grad(nll)(theta), 1e-12)
    assert_close(minifim.gradient(net, theta, X, y), g, 0.0)
    assert_close(g, -minifim.per_sample_scores(net, theta, X, y).mean(axis=0), 1e-12)


def test_gradient_central_differences(case):
    net, theta, X, y, h = case.net, case.theta, case.X, case.y, 1e-6
    fd = np.array(
        [
            (minifim.loss(net, theta + e, X, y) - minifim.loss(net, theta - e, X, y)) / (2 * h)
            for e in np.eye(case.P) * h
        ]
    )
    assert_close(minifim.gradient(net, theta, X, y), fd, 1e-6)


def test_reduction_sum(case):
    net, theta, X, y, N = case.net, case.theta, case.X, case.y, case.N
    v, g = minifim.loss_and_gradient(net, theta, X, y)
    vs, gs = minifim.loss_and_gradient(net, theta, X, y, reduction="sum")
    assert_close(vs, N * v, 1e-14)
    assert_close(gs, N * g, 1e-14)
    assert_close(minifim.loss(net, theta, X, y, reduction="sum"), vs, 1e-15)


def test_bad_input():
    case = get_case("categorical-tanh-3x4x3")
    net, theta, X, y = case.net, case.theta, case.X, case.y
    for fn in (minifim.loss, minifim.gradient, minifim.loss_and_gradient):
        with pytest.raises(ValueError, match=r"theta: expected shape \(31,\)"):
            fn(net, theta[:3], X, y)
        with pytest.raises(ValueError, match="theta: expected finite"):
            fn(net, theta * np.nan, X, y)
        with pytest.raises(ValueError, match="X: expected a 2-D array"):
            fn(net, theta, X.ravel(), y)
        with pytest.raises(ValueError, match="X: expected 3 input features"):
            fn(net, theta, X[:, :1], y)
        with pytest.raises(ValueError, match="X: expected finite"):
            fn(net, theta, X * np.inf, y)
        with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\)"):
            fn(net, theta, X, y + 3)
        with pytest.raises(ValueError, match="y: expected integer class labels"):
            fn(net, theta, X, y + 0.25)
        with pytest.raises(ValueError, match=r"y: expected shape \(5,\)"):
            fn(net, theta, X, y[:4])
        with pytest.raises(ValueError, match=r"reduction: expected one of \['mean', 'sum'\]"):
            fn(net, theta, X, y, reduction="none")


def test_accuracy_counts_most_likely_predictions():
    net = minifim.MLP([2, 3], activation="identity")
    theta = np.zeros(net.num_params)
    theta[:6] = [1.0, 0.0, 0.0, 1.0, -1.0, -1.0]  # W0 rows: class 0 <- x0, class 1 <- x1
    X = np.array([[2.0, 0.0], [0.0, 2.0], [3.0, 1.0], [0.0, 1.0]])
    assert minifim.accuracy(net, theta, X, np.array([0, 1, 0, 0])) == 0.75
    bern = minifim.MLP([2, 2], activation="identity", likelihood="bernoulli")
    tb = np.zeros(bern.num_params)
    tb[:4] = [1.0, 0.0, 0.0, -1.0]
    yb = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert minifim.accuracy(bern, tb, np.array([[1.0, 1.0], [1.0, 1.0]]), yb) == 0.75
    gauss = minifim.MLP([2, 1], activation="identity", likelihood="gaussian")
    with pytest.raises(ValueError, match="accuracy"):
        minifim.accuracy(gauss, gauss.init(0), X, np.zeros((4, 1)))
