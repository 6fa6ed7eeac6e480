"""Tests of minifim.optim: the (init, update, get_params) contract, each update against its
formula, the objective with a penalty, and the training loop."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minifim
from minifim import optim

from .tolerances import cg_rtol, check_close, cond, damped_cond, solve_rtol


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

    def hessian_matvec(self, v):
        return self.lam * np.asarray(v)


FIRST_ORDER = {
    "sgd": lambda: optim.sgd(0.1),
    "momentum": lambda: optim.momentum(0.1, 0.9),
    "adam": lambda: optim.adam(1e-2),
}


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
    np.testing.assert_allclose(s["v"], w2 @ grads**2, rtol=1e-14)
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
    assert value == pytest.approx(
        minifim.loss(net, theta, X, y) + pen.penalty(theta) / N, rel=1e-14
    )
    # gradient against central finite differences of the objective
    eps = 1e-6
    fd = np.array(
        [
            (optim.objective(batch, theta + eps * e) - optim.objective(batch, theta - eps * e))
            / (2 * eps)
            for e in np.eye(net.num_params)
        ]
    )
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-9)


def test_train_full_batch_equals_manual_loop(linreg):
    net, theta0, X, y = linreg
    pen = QuadPenalty(np.zeros(net.num_params), 0.5)
    theta, hist = minifim.train(
        net, theta0, X, y, optim.momentum(0.05, 0.7), 6, penalty=pen, progress=False
    )
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

    a = minifim.train(
        net,
        theta0,
        X,
        y,
        optim.sgd(0.1),
        7,
        batch_size=5,
        rng=1,
        penalty=Spy(),
        callback=cb,
        progress=False,
    )
    b = minifim.train(net, theta0, X, y, optim.sgd(0.1), 7, batch_size=5, rng=1, progress=False)
    np.testing.assert_array_equal(a[0], b[0])
    assert seen == list(range(7)) and np.all(a[1]["batch_size"] == 5)


def test_train_callback_stops_early(linreg):
    net, theta0, X, y = linreg
    _, hist = minifim.train(
        net,
        theta0,
        X,
        y,
        optim.sgd(0.1),
        50,
        progress=False,
        callback=lambda step, theta, state: step == 2,
    )
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


# --- curvature optimisers ----------------------------------------------------------------------
@pytest.fixture
def clf():
    rng = np.random.default_rng(8)
    net = minifim.MLP([3, 5, 3], activation="tanh", likelihood="categorical")
    X = rng.standard_normal((20, 3))
    y = rng.integers(0, 3, 20)
    return net, net.init(rng), X, y


def _curvature_optimizers(net):
    return {
        "ngd": optim.ngd(0.5, 1e-2),
        "gauss_newton": optim.gauss_newton(0.5, 0.1),
        "kfac": optim.kfac(net, 0.2, 0.1),
        "kfac-eigen-separate": optim.kfac(
            net, 0.2, 0.1, damping_type="eigen", bias="separate", adapt_damping=True
        ),
    }


def test_curvature_optimizers_get_params_of_init(clf):
    net, theta, _, _ = clf
    for init, _, get in _curvature_optimizers(net).values():
        state = init(theta)
        assert np.array_equal(get(state), theta) and not np.shares_memory(get(state), theta)
        assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in state.values())


def test_curvature_optimizer_states_keep_keys_and_shapes(clf):
    """Every state entry keeps its shape across steps (storable step by step)."""
    net, theta, X, y = clf
    batch = optim.Batch(net, X, y, None, len(X))
    for name, (init, update, get) in _curvature_optimizers(net).items():
        s0 = init(theta)
        s = s0
        for i in range(3):
            s = update(i, optim.objective_and_gradient(batch, get(s))[1], s, batch)
        assert set(s) == set(s0), name
        assert all(s[k].shape == s0[k].shape for k in s0), name


def test_ngd_update_is_the_natural_gradient_step(clf):
    net, theta, X, y = clf
    batch = optim.Batch(net, X, y, None, len(X))
    g = minifim.gradient(net, theta, X, y)
    for fisher, structure in (
        ("true", "full"),
        ("empirical", "full"),
        ("true", "diag"),
        ("true", "block"),
        ("true", "kfac"),
        ("hessian", "full"),
    ):
        init, update, get = optim.ngd(0.3, 0.05, fisher, structure=structure)
        s = update(0, g, init(theta), batch)
        d = minifim.natural_gradient(net, theta, X, y, 0.05, fisher, structure=structure)
        np.testing.assert_array_equal(s["direction"], d)
        np.testing.assert_allclose(get(s), theta - 0.3 * d, rtol=0, atol=1e-15)


def test_ngd_monte_carlo_is_replayable(clf):
    net, theta, X, y = clf
    batch = optim.Batch(net, X, y, None, len(X))
    g = minifim.gradient(net, theta, X, y)
    init, update, _ = optim.ngd(0.3, 0.05, "mc", n_samples=2, rng=4)
    s = init(theta)
    a, b = update(3, g, s, batch), update(3, g, s, batch)
    c = update(4, g, s, batch)
    np.testing.assert_array_equal(a["theta"], b["theta"])
    assert not np.array_equal(a["theta"], c["theta"])
    ref = minifim.natural_gradient(
        net, theta, X, y, 0.05, "mc", n_samples=2, rng=np.random.default_rng([4, 3])
    )
    np.testing.assert_array_equal(a["direction"], ref)


def test_ngd_adds_the_penalty_curvature(clf):
    net, theta, X, y = clf
    N = 50
    pen = QuadPenalty(np.zeros(net.num_params), 3.0)
    batch = optim.Batch(net, X, y, pen, N)
    _, g = optim.objective_and_gradient(batch, theta)
    F = minifim.true_fisher(net, theta, X)
    P = net.num_params
    kappa = damped_cond(F, 3.0 / N + 0.01)
    for method in ("auto", "dense", "cg"):
        init, update, _ = optim.ngd(1.0, 0.01, "true", method, tol=1e-13)
        d = update(0, g, init(theta), batch)["direction"]
        ref = np.linalg.solve(F + 3.0 / N * np.eye(P) + 0.01 * np.eye(P), g)
        check_close(d, ref, cg_rtol(kappa, P, 1e-13), method)  # (dense: below solve_rtol)
    init, update, _ = optim.ngd(1.0, 0.01, "true", penalty_curvature=False)
    d = update(0, g, init(theta), batch)["direction"]
    check_close(
        d,
        np.linalg.solve(F + 0.01 * np.eye(P), g),
        solve_rtol(damped_cond(F, 0.01), P),
        "no penalty curvature",
    )


def test_gauss_newton_one_step_solves_least_squares(linreg):
    net, theta0, X, y = linreg
    theta, hist = minifim.train(net, theta0, X, y, optim.gauss_newton(), 1, progress=False)
    coef = np.linalg.lstsq(np.hstack([X, np.ones((len(X), 1))]), y, rcond=None)[0]
    expect = net.flatten([(coef[:-1].T, coef[-1])])
    assert np.linalg.norm(theta - expect) / np.linalg.norm(expect) < 1e-10
    # a second step does not move (the gradient vanishes at the solution)
    _, hist = minifim.train(net, theta, X, y, optim.gauss_newton(), 1, progress=False)
    assert hist["step_norm"][0] < 1e-12


@pytest.mark.parametrize("bias", ["folded", "separate"])
@pytest.mark.parametrize("solve", ["factored", "eigen"])
def test_kfac_without_averaging_is_the_kfac_natural_gradient(clf, bias, solve):
    net, theta, X, y = clf
    batch = optim.Batch(net, X, y, None, len(X))
    init, update, get = optim.kfac(
        net, 0.4, 0.02, decay=0.0, inverse_period=1, bias=bias, damping_type=solve
    )
    s = init(theta)
    for step in range(3):
        th = get(s)
        g = minifim.gradient(net, th, X, y)
        s = update(step, g, s, batch)
        ref = minifim.natural_gradient(
            net, th, X, y, 0.02, structure="kfac", bias=bias, damping_type=solve
        )
        np.testing.assert_allclose(s["direction"], ref, rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(get(s), th - 0.4 * ref, rtol=1e-12, atol=1e-14)


def test_kfac_running_averages_and_inverse_period(clf):
    net, theta, X, y = clf
    batch = optim.Batch(net, X, y, None, len(X))
    decay, T = 0.6, 3
    init, update, get = optim.kfac(net, 0.3, 0.05, decay=decay, inverse_period=T)
    s = init(theta)
    thetas, states = [], []
    for step in range(5):
        thetas.append(get(s))
        s = update(step, minifim.gradient(net, get(s), X, y), s, batch)
        states.append(s)
    # replay the averages from the K-FAC factors at each visited theta
    facs = [minifim.kfac(net, th, X) for th in thetas]
    for l in range(net.num_layers):
        A = np.zeros_like(facs[0].A[l])
        for t, f in enumerate(facs):
            eps = min(1 - 1 / (t + 1), decay)
            A = eps * A + (1 - eps) * f.A[l]
            np.testing.assert_allclose(states[t][f"A{l}"], A, rtol=1e-13, atol=1e-15)
    # inverses: recomputed at steps 0 and 3 only, from the averages and damping of that step
    for t in range(5):
        src = t - t % T
        A, G = states[src]["A0"], states[src]["G0"]
        pi = np.sqrt((np.trace(A) / len(A)) / (np.trace(G) / len(G)))
        Ad = A + pi * np.sqrt(0.05) * np.eye(len(A))
        check_close(
            states[t]["Ainv0"], np.linalg.inv(Ad), solve_rtol(cond(Ad), len(A)), "damped inverse"
        )
        assert float(states[t]["pi0"]) == pytest.approx(pi, rel=1e-13)
    assert np.array_equal(states[1]["Ginv1"], states[2]["Ginv1"])
    assert not np.array_equal(states[2]["Ginv1"], states[3]["Ginv1"])
    # a stale preconditioner is applied to the current gradient
    g4 = minifim.gradient(net, thetas[4], X, y)
    f = minifim.KFACFactors(
        (states[3]["A0"], states[3]["A1"]),
        (states[3]["G0"], states[3]["G1"]),
        "folded",
        tuple(net.shapes),
    )
    np.testing.assert_allclose(
        states[4]["direction"], f.solve(g4, 0.05, damping_type="factored"), rtol=1e-10
    )


def test_kfac_levenberg_marquardt_damping(clf):
    net, theta, X, y = clf
    batch = optim.Batch(net, X, y, None, len(X))
    g = minifim.gradient(net, theta, X, y)
    F = minifim.true_fisher(net, theta, X)
    omega = (19 / 20) ** 5
    for lr, expect in ((0.05, omega), (4.0, 1 / omega), (60.0, 1 / omega)):
        init, update, _ = optim.kfac(net, lr, 0.1, adapt_damping=True)
        s = update(0, g, init(theta), batch)
        delta = s["theta"] - theta
        model = g @ delta + 0.5 * delta @ F @ delta
        rho = (
            (minifim.loss(net, s["theta"], X, y) - minifim.loss(net, theta, X, y)) / model
            if model < 0
            else -np.inf
        )  # a step that does not decrease the model
        assert float(s["rho"]) == pytest.approx(rho, rel=1e-10)
        assert float(s["damping"]) == pytest.approx(0.1 * expect, rel=1e-14)
        # not adapted between lm_period steps
        s2 = update(1, minifim.gradient(net, s["theta"], X, y), s, batch)
        assert float(s2["damping"]) == float(s["damping"]) and np.isnan(s2["rho"])
    init, update, _ = optim.kfac(net, 0.05, 0.1)  # adaptation off: damping fixed
    assert float(update(0, g, init(theta), batch)["damping"]) == 0.1


def test_curvature_optimizers_train_a_classifier(clf):
    net, theta, X, y = clf
    start = minifim.loss(net, theta, X, y)
    for name, opt in _curvature_optimizers(net).items():
        _, hist = minifim.train(net, theta, X, y, opt, 15, progress=False)
        assert hist["loss"][-1] < 0.8 * start, name


def test_curvature_optimizer_bad_input(clf):
    net, theta, X, y = clf
    with pytest.raises(TypeError, match="net"):
        optim.kfac(None)
    with pytest.raises(ValueError, match="decay"):
        optim.kfac(net, decay=1.0)
    with pytest.raises(ValueError, match="inverse_period"):
        optim.kfac(net, inverse_period=0)
    with pytest.raises(ValueError, match="damping"):
        optim.kfac(net, damping=0.0)
    with pytest.raises(ValueError, match="fisher"):
        optim.kfac(net, fisher="ggn")
    with pytest.raises(ValueError, match="lm_omega"):
        optim.kfac(net, lm_omega=1.5)
    with pytest.raises(ValueError, match="fisher"):
        optim.ngd(fisher="fisher")
    with pytest.raises(ValueError, match="damping"):
        optim.ngd(damping=-1.0)
    init, update, _ = optim.ngd()
    with pytest.raises(TypeError, match="batch"):
        update(0, np.zeros(net.num_params), init(theta), (net, X, y))
    init, update, _ = optim.kfac(net)
    with pytest.raises(ValueError, match="theta"):
        init(theta[:-1])
    with pytest.raises(ValueError, match="damping"):  # singular: undamped Gauss-Newton, N C < P
        minifim.train(net, theta, X[:5], y[:5], optim.gauss_newton(), 1, progress=False)


def test_ngd_kl_clipping(clf):
    net, theta, X, y = clf
    batch = optim.Batch(net, X, y, None, len(X))
    g = minifim.gradient(net, theta, X, y)
    F = minifim.true_fisher(net, theta, X)
    init, update, get = optim.ngd(1.0, 1e-3, max_kl=1e-3)
    s = update(0, g, init(theta), batch)
    delta = get(s) - theta
    # the second-order KL estimate of the step equals max_kl (the clip is active here)
    assert 0.5 * delta @ F @ delta == pytest.approx(1e-3, rel=1e-9)
    assert float(s["step_size"]) < 1.0
    np.testing.assert_allclose(
        delta, -float(s["step_size"]) * s["direction"], rtol=1e-12, atol=1e-15
    )
    # inactive clip: the step is lr * d
    s = optim.ngd(1e-3, 1e-3, max_kl=10.0).update(0, g, init(theta), batch)
    assert float(s["step_size"]) == 1e-3
    with pytest.raises(ValueError, match="max_kl"):
        optim.ngd(max_kl=0.0)


# --- GaussianPrior --------------------------------------------------------------------------
def test_gaussian_prior_penalty_gradient_and_hessian():
    from autograd import grad as agrad

    rng = np.random.default_rng(3)
    mean = rng.standard_normal(5)
    prior = optim.GaussianPrior(2.5, mean)
    theta, v = rng.standard_normal(5), rng.standard_normal(5)
    assert prior.penalty(theta) == pytest.approx(1.25 * np.sum((theta - mean) ** 2), rel=1e-15)
    ref = agrad(lambda t: 1.25 * np.sum((t - mean) ** 2))(theta)
    np.testing.assert_allclose(prior.grad(theta), ref, rtol=1e-14)
    np.testing.assert_allclose(prior.hessian_matvec(v), 2.5 * v, rtol=1e-15)
    with pytest.raises(ValueError, match="precision"):
        optim.GaussianPrior(-1.0)
    with pytest.raises(ValueError, match="theta"):
        prior.penalty(np.zeros(4))


def test_train_with_gaussian_prior_reaches_ridge_solution():
    """Full-batch GD on mean NLL + alpha/(2N)|theta|^2 of a linear-Gaussian model = ridge."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((30, 3))
    y = X @ np.array([[1.0], [-1.0], [0.5]]) + 0.1 * rng.standard_normal((30, 1))
    net = minifim.MLP([3, 1], activation="identity", likelihood="gaussian")
    alpha = 3.0
    theta, _ = minifim.train(
        net,
        net.init(0),
        X,
        y,
        optim.sgd(0.3),
        2000,
        penalty=optim.GaussianPrior(alpha),
        progress=False,
    )
    Xt = np.hstack([X, np.ones((30, 1))])  # flat order W0 (3), b0 (1)
    ridge = np.linalg.solve(Xt.T @ Xt + alpha * np.eye(4), Xt.T @ y[:, 0])
    np.testing.assert_allclose(theta, ridge, rtol=1e-10, atol=1e-12)
    fitted, info = minifim.fit_map(net, np.zeros(4), X, y, alpha, gtol=1e-12)
    np.testing.assert_allclose(fitted, ridge, rtol=1e-9, atol=1e-11)
    assert info["success"]


# --- near-singular curvature systems raise, naming the damping (issue 12, item 8) ---------------
def test_gauss_newton_training_raises_naming_damping_when_the_ggn_degenerates():
    rng = np.random.default_rng(0)
    net = minifim.MLP([2, 3, 1], likelihood="gaussian")
    X = rng.standard_normal((30, 2))
    y = rng.standard_normal((30, 1))
    for method in ("auto", "dense", "cg"):
        with pytest.raises((ValueError, RuntimeError), match="damping"):
            minifim.train(
                net,
                net.init(0),
                X,
                y,
                minifim.optim.gauss_newton(method=method),
                100,
                progress=False,
            )


def test_curvature_at_the_underflow_threshold_is_refused():
    from minifim._linalg import damped_solve

    M = 1e-300 * np.eye(3)
    with pytest.raises(ValueError, match="damping.*underflow"):
        damped_solve(M, np.ones(3), 0.0)


@pytest.mark.parametrize("solve", ["factored", "eigen"])
def test_kfac_optimizer_refuses_a_damping_its_solve_cannot_use(solve):
    rng = np.random.default_rng(1)
    net = minifim.MLP([3, 4, 2])
    X = rng.standard_normal((3, 3))  # 3 samples: A (4 x 4 folded) is singular
    y = rng.integers(0, 2, 3)
    opt = minifim.optim.kfac(net, lr=0.1, damping=1e-300, damping_type=solve)
    with pytest.raises(ValueError, match="damping.*condition number"):
        minifim.train(net, net.init(0), X, y, opt, 2, progress=False)
    minifim.train(
        net,
        net.init(0),
        X,
        y,
        minifim.optim.kfac(net, damping=1e-2, damping_type=solve),
        2,
        progress=False,
    )


def test_objective_and_gradient_uses_one_pass_penalty():
    """A penalty with ``penalty_and_grad`` is evaluated once per step, and the result equals
    the separate ``penalty`` + ``grad`` evaluation (a penalty without it)."""
    rng = np.random.default_rng(0)
    net = minifim.MLP([3, 4, 2])
    theta, X = net.init(rng), rng.standard_normal((6, 3))
    y = net.likelihood.sample(net.forward(theta, X), rng)
    ewc = minifim.EWC(net, structure="full")
    ewc.add_task(theta, X)
    calls = []

    class Separate:
        def penalty(self, t):
            calls.append("penalty")
            return ewc.penalty(t)

        def grad(self, t):
            calls.append("grad")
            return ewc.grad(t)

    th = theta + 0.1 * rng.standard_normal(net.num_params)
    one = minifim.optim.objective_and_gradient(minifim.optim.Batch(net, X, y, ewc, 6), th)
    two = minifim.optim.objective_and_gradient(minifim.optim.Batch(net, X, y, Separate(), 6), th)
    assert calls == ["penalty", "grad"]
    assert one[0] == pytest.approx(two[0], rel=1e-13)
    np.testing.assert_allclose(one[1], two[1], rtol=1e-12, atol=1e-15)
