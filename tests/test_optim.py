"""Tests of minifim.optim: the (init, update, get_params) contract, each update against its
formula, the objective with a penalty, and the training loop."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minifim
from minifim import optim


@pytest.fixture
def linreg():
    rng = np.random.default_rng(3)
    net = minifim.MLP([3, 2], activation="identity", likelihood="gaussian", sigma=0.5)
    X = rng.standard_normal((12, 3))
    y = X @ rng.standard_normal((3, 2)) + 0.1 * rng.standard_normal((12, 2))
    return net, net.init(rng), X, y


class QuadPenalty:
    """``lam/2 |theta - c|^2`` on the summed-NLL scale."""

    def __init__(self, c, lam):
        self.c, self.lam = c, lam

    def penalty(self, theta):
        return 0.5 * self.lam * float(np.sum((theta - self.c) ** 2))

    def grad(self, theta):
        return self.lam * (theta - self.c)

    def hessian(self, theta):
        return self.lam * np.eye(theta.size)


FIRST_ORDER = {"sgd": lambda: optim.sgd(0.1), "momentum": lambda: optim.momentum(0.1, 0.9),
               "adam": lambda: optim.adam(1e-2)}


@pytest.mark.parametrize("name", sorted(FIRST_ORDER))
@given(theta=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=7))
def test_get_params_of_init_is_identity(name, theta):
    theta = np.asarray(theta)
    init, _, get_params = FIRST_ORDER[name]()
    state = init(theta)
    out = get_params(state)
    assert np.array_equal(out, theta) and not np.shares_memory(out, theta)
    assert all(isinstance(v, np.ndarray) for v in state.values())


def test_sgd_momentum_adam_match_their_formulas(rng):
    theta0 = rng.standard_normal(5)
    grads = rng.standard_normal((4, 5))
    # sgd
    init, update, get = optim.sgd(0.3)
    s = init(theta0)
    for i, g in enumerate(grads):
        s = update(i, g, s, None)
    np.testing.assert_allclose(get(s), theta0 - 0.3 * grads.sum(0), rtol=0, atol=1e-14)
    # momentum: v_t = sum_j mass^(t-j) g_j
    init, update, get = optim.momentum(0.3, 0.5)
    s = init(theta0)
    expect, v = theta0.copy(), np.zeros(5)
    for i, g in enumerate(grads):
        s = update(i, g, s, None)
        v = 0.5 * v + g
        expect = expect - 0.3 * v
    np.testing.assert_allclose(get(s), expect, rtol=0, atol=1e-14)
    # adam: closed-form moments
    init, update, get = optim.adam(0.01, 0.8, 0.9, 1e-8)
    s = init(theta0)
    for i, g in enumerate(grads):
        s = update(i, g, s, None)
    t = len(grads)
    w1 = 0.2 * 0.8 ** np.arange(t - 1, -1, -1)
    w2 = 0.1 * 0.9 ** np.arange(t - 1, -1, -1)
    np.testing.assert_allclose(s["m"], w1 @ grads, rtol=1e-14)
    np.testing.assert_allclose(s["v"], w2 @ grads ** 2, rtol=1e-14)
    # first Adam step moves every coordinate by lr * sign(g) (up to eps)
    s1 = optim.adam(0.01).update(0, grads[0], optim.adam(0.01).init(theta0), None)
    np.testing.assert_allclose(s1["theta"], theta0 - 0.01 * np.sign(grads[0]), atol=1e-9)


def test_update_does_not_mutate_state(rng):
    theta0 = rng.standard_normal(4)
    for make in FIRST_ORDER.values():
        init, update, _ = make()
        s = init(theta0)
        before = {k: v.copy() for k, v in s.items()}
        update(0, np.ones(4), s, None)
        assert all(np.array_equal(before[k], s[k]) for k in s)


def test_schedule_is_called_with_the_step():
    seen = []

    def lr(step):
        seen.append(step)
        return 0.1

    init, update, _ = optim.sgd(lr)
    s = init(np.zeros(2))
    for i in range(3):
        s = update(i, np.ones(2), s, None)
    assert seen == [0, 1, 2]


def test_objective_with_penalty_is_on_the_summed_scale(linreg):
    net, theta, X, y = linreg
    pen = QuadPenalty(np.ones(net.num_params), 2.0)
    N = 40  # size of the "whole" training set, larger than the batch
    batch = optim.Batch(net, X, y, pen, N)
    value, g = optim.objective_and_gradient(batch, theta)
    assert value == pytest.approx(minifim.loss(net, theta, X, y) + pen.penalty(theta) / N,
                                  rel=1e-14)
    # gradient against central finite differences of the objective
    eps = 1e-6
    fd = np.array([(optim.objective(batch, theta + eps * e) - optim.objective(batch, theta - eps
                                                                              * e)) / (2 * eps)
                   for e in np.eye(net.num_params)])
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-9)


def test_train_full_batch_equals_manual_loop(linreg):
    net, theta0, X, y = linreg
    pen = QuadPenalty(np.zeros(net.num_params), 0.5)
    theta, hist = minifim.train(net, theta0, X, y, optim.momentum(0.05, 0.7), 6, penalty=pen,
                                progress=False)
    init, update, get = optim.momentum(0.05, 0.7)
    s = init(theta0)
    batch = optim.Batch(net, X, y, pen, len(X))
    losses, norms = [], []
    for i in range(6):
        value, g = optim.objective_and_gradient(batch, get(s))
        old = get(s)
        s = update(i, g, s, batch)
        losses.append(value)
        norms.append(np.linalg.norm(get(s) - old))
    np.testing.assert_array_equal(theta, get(s))
    np.testing.assert_array_equal(hist["loss"], losses)
    np.testing.assert_array_equal(hist["step_norm"], norms)
    assert set(hist) == {"loss", "grad_norm", "step_norm", "time", "batch_size"}
    assert all(v.shape == (6,) for v in hist.values()) and np.all(hist["time"] >= 0)


def test_train_minibatches_are_reproducible_and_cover_epochs(linreg):
    net, theta0, X, y = linreg
    seen = []

    class Spy:
        def penalty(self, theta):
            return 0.0

        def grad(self, theta):
            return np.zeros_like(theta)

    def cb(step, theta, state):
        seen.append(step)

    a = minifim.train(net, theta0, X, y, optim.sgd(0.1), 7, batch_size=5, rng=1,
                      penalty=Spy(), callback=cb, progress=False)
    b = minifim.train(net, theta0, X, y, optim.sgd(0.1), 7, batch_size=5, rng=1,
                      progress=False)
    np.testing.assert_array_equal(a[0], b[0])
    assert seen == list(range(7)) and np.all(a[1]["batch_size"] == 5)


def test_train_callback_stops_early(linreg):
    net, theta0, X, y = linreg
    _, hist = minifim.train(net, theta0, X, y, optim.sgd(0.1), 50, progress=False,
                            callback=lambda step, theta, state: step == 2)
    assert hist["loss"].shape == (3,)


def test_train_converges_to_least_squares(linreg):
    net, theta0, X, y = linreg
    theta, _ = minifim.train(net, theta0, X, y, optim.adam(0.05), 1500, progress=False)
    Xt = np.hstack([X, np.ones((len(X), 1))])
    coef = np.linalg.lstsq(Xt, y, rcond=None)[0]  # (D + 1, C)
    W, b = net.unflatten(theta)[0]
    np.testing.assert_allclose(np.hstack([W, b[:, None]]), coef.T, atol=1e-6)


def test_train_bad_input(linreg):
    net, theta0, X, y = linreg
    sgd = optim.sgd(0.1)
    with pytest.raises(TypeError, match="optimizer"):
        minifim.train(net, theta0, X, y, "sgd", 3)
    with pytest.raises(TypeError, match="rng"):
        minifim.train(net, theta0, X, y, sgd, 3, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        minifim.train(net, theta0, X, y, sgd, 3, batch_size=13, rng=0)
    with pytest.raises(ValueError, match="steps"):
        minifim.train(net, theta0, X, y, sgd, -1)
    with pytest.raises(TypeError, match="penalty"):
        minifim.train(net, theta0, X, y, sgd, 3, penalty=lambda t: 0.0)
    with pytest.raises(ValueError, match="theta"):
        minifim.train(net, theta0[:-1], X, y, sgd, 3)
    with pytest.raises(FloatingPointError, match="step"):
        minifim.train(net, theta0, X, y, optim.sgd(1e3), 500, progress=False)
    with pytest.raises(ValueError, match="lr"):
        optim.sgd(-1.0)
    with pytest.raises(TypeError, match="lr"):
        optim.adam("fast")
    with pytest.raises(ValueError, match="mass"):
        optim.momentum(0.1, 1.0)
    with pytest.raises(ValueError, match="b2"):
        optim.adam(b2=1.0)
    init, update, get = sgd
    with pytest.raises(ValueError, match="grad"):
        update(0, np.ones(3), init(np.zeros(4)), None)
    with pytest.raises(TypeError, match="state"):
        get(np.zeros(4))
