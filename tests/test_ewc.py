"""Tests of minifim.methods.ewc: exact recursive Laplace, the modes, every curvature, the named mistakes."""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minifim
from minifim.methods import ewc as ewc_mod

from .cases import KFAC_EXACT_CASES, make_case
from .tolerances import check, check_close, cond, solve_rtol

KINDS = ("diag", "block", "kfac", "full")
SIGMA = 0.7


# --- helpers -------------------------------------------------------------------------------
def design(X):
    return np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)


def least_squares(Xs, ys):
    """Joint least squares of stacked tasks, in minifim's order (W0 row, b0)."""
    A = np.concatenate([design(X) for X in Xs])
    b = np.concatenate(ys)[:, 0]
    return np.linalg.lstsq(A, b, rcond=None)[0]


def solve_penalised(net, ewc, X, y):
    """Minimise the SUMMED NLL of (X, y) plus ewc.penalty by Newton's method (the objective is
    quadratic for linear-Gaussian regression: the first step is exact, the second polishes)."""
    theta = np.zeros(net.num_params)
    H = minifim.hessian(net, theta, X, y, reduction="sum") + ewc.hessian()
    for _ in range(2):
        g = minifim.gradient(net, theta, X, y, reduction="sum") + ewc.grad(theta)
        theta = theta - np.linalg.solve(H, g)
    return theta


@pytest.fixture
def linear_tasks():
    """Three linear-Gaussian regression tasks with different inputs and different truths."""
    rng = np.random.default_rng(7)
    net = minifim.MLP([3, 1], activation="identity", likelihood="gaussian", sigma=SIGMA)
    tasks = []
    for t, n in enumerate((8, 11, 14)):
        X = rng.standard_normal((n, 3)) * (1.0, 1.5, 0.6)[t] + t
        w = rng.standard_normal(3) * 2
        y = (X @ w + 0.5 * t + 0.3 * rng.standard_normal(n))[:, None]
        tasks.append((X, y))
    return net, tasks


def dense_structure(kind, F, net, factors=None):
    """The dense matrix whose quadratic form each curvature kind must give, from a dense F."""
    if kind == "diag":
        return np.diag(np.diag(F))
    if kind == "block":
        M = np.zeros_like(F)
        for s in net.layer_param_slices():
            M[s, s] = F[s, s]
        return M
    if kind == "kfac":
        return factors.to_dense()
    return F


def two_tasks(case, seed=0):
    rng = np.random.default_rng(seed)
    th1 = case.theta
    th2 = case.theta + 0.3 * rng.standard_normal(case.P)
    X2 = 1.1 * rng.standard_normal((case.N + 2, case.net.input_dim))
    return [(th1, case.X), (th2, X2)]


# --- exactness on linear-Gaussian regression (Huszar 2018) -----------------------------------
def test_recursive_full_reproduces_joint_least_squares_after_each_task(linear_tasks):
    net, tasks = linear_tasks
    ewc = minifim.EWC(net, structure="full", fisher="true", mode="recursive", strength=1.0)
    for t, (X, y) in enumerate(tasks):
        theta = solve_penalised(net, ewc, X, y)
        joint = least_squares([X for X, _ in tasks[: t + 1]], [y for _, y in tasks[: t + 1]])
        np.testing.assert_allclose(theta, joint, rtol=1e-10, atol=1e-12)
        ewc.add_task(theta, X, y)
        # the penalty IS the summed NLL of the tasks so far, up to a constant
        rng = np.random.default_rng(t)
        a, b = rng.standard_normal((2, net.num_params))
        nll = sum(
            minifim.loss(net, a, Xi, yi, reduction="sum")
            - minifim.loss(net, b, Xi, yi, reduction="sum")
            for Xi, yi in tasks[: t + 1]
        )
        assert ewc.penalty(a) - ewc.penalty(b) == pytest.approx(nll, rel=1e-10)


def test_separate_double_counts_beyond_two_tasks_by_the_predicted_amount(linear_tasks):
    net, tasks = linear_tasks
    sep = minifim.EWC(net, structure="full", mode="separate")
    rec = minifim.EWC(net, structure="full", mode="recursive")
    sols = []
    for X, y in tasks:
        th_s, th_r = solve_penalised(net, sep, X, y), solve_penalised(net, rec, X, y)
        sols.append((th_s, th_r))
        sep.add_task(th_s, X, y)
        rec.add_task(th_r, X, y)
    H = [design(X).T @ design(X) / SIGMA**2 for X, _ in tasks]
    P = net.num_params
    # Newton steps solve with the summed Hessians: backward-stable, c P EPS cond
    tol12 = solve_rtol(max(cond(H[0]), cond(H[0] + H[1])), P)
    tol = solve_rtol(cond(H[0] + H[1] + H[2]), P)
    # tasks 1 and 2: one penalty each, identical and exact
    for th_s, th_r in sols[:2]:
        check_close(th_s, th_r, tol12, "separate = recursive")
    # task 3: separate counts task 1 twice (once directly, once through theta*_2)
    alone = [least_squares([X], [y]) for X, y in tasks]
    joint = least_squares([X for X, _ in tasks], [y for _, y in tasks])
    predicted = np.linalg.solve(
        H[0] + H[1] + H[2], H[1] @ np.linalg.solve(H[0] + H[1], H[0] @ (alone[0] - alone[1]))
    )
    th_sep, th_rec = sols[2]
    check_close(th_rec, joint, tol, "recursive = joint")
    # a difference of two solutions: their errors at the scale of ||joint||, plus the nested
    # solves of the prediction
    err = np.linalg.norm(th_sep - joint - predicted)
    check(
        err,
        tol * np.linalg.norm(joint) + (tol + tol12) * np.linalg.norm(predicted),
        "separate - joint = predicted",
    )
    assert np.linalg.norm(predicted) > 0.05 * np.linalg.norm(joint)  # 11% here: visible
    # its cost in the joint objective: exactly 1/2 delta^T (H1 + H2 + H3) delta > 0
    excess = sum(
        minifim.loss(net, th_sep, X, y, reduction="sum")
        - minifim.loss(net, joint, X, y, reduction="sum")
        for X, y in tasks
    )
    assert excess == pytest.approx(0.5 * predicted @ (H[0] + H[1] + H[2]) @ predicted, rel=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_online_gamma_one_equals_recursive(kind):
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=3)
    online = minifim.EWC(case.net, structure=kind, mode="online", gamma=1.0)
    rec = minifim.EWC(case.net, structure=kind, mode="recursive")
    rng = np.random.default_rng(0)
    for k in range(3):
        th = case.theta + 0.2 * k * rng.standard_normal(case.P)
        online.add_task(th, case.X + k)
        rec.add_task(th, case.X + k)
    theta = case.theta + rng.standard_normal(case.P)
    assert online.penalty(theta) == pytest.approx(rec.penalty(theta), rel=1e-13)
    np.testing.assert_allclose(online.grad(theta), rec.grad(theta), rtol=1e-13, atol=1e-15)


# --- penalties are the quadratic forms of the dense Fisher's structures ---------------------
@pytest.mark.parametrize("mode", ["separate", "recursive", "online"])
@pytest.mark.parametrize("kind", KINDS)
def test_penalty_and_grad_equal_dense_quadratic_forms(case, kind, mode):
    net = case.net
    strength, gamma = 0.8, (0.6 if mode == "online" else 1.0)
    ewc = minifim.EWC(net, structure=kind, mode=mode, strength=strength, gamma=gamma)
    terms = []  # (centre, coefficient, dense structure)
    for th, X in two_tasks(case):
        ewc.add_task(th, X)
        F = minifim.true_fisher(net, th, X)
        fac = minifim.kfac(net, th, X) if kind == "kfac" else None
        terms.append((th, strength * X.shape[0], dense_structure(kind, F, net, fac)))
    if mode != "separate":  # accumulated precision at the latest centre
        w = [gamma ** (len(terms) - 1 - i) for i in range(len(terms))]
        terms = [(terms[-1][0], wi * c, M) for wi, (_, c, M) in zip(w, terms)]

    def dense_penalty(theta):
        return sum(0.5 * c * anp.dot(theta - th, anp.dot(M, theta - th)) for th, c, M in terms)

    rng = np.random.default_rng(1)
    for _ in range(2):
        theta = case.theta + rng.standard_normal(case.P)
        want = dense_penalty(theta)
        assert ewc.penalty(theta) == pytest.approx(want, rel=1e-10, abs=1e-14)
        np.testing.assert_allclose(
            ewc.grad(theta), autograd.grad(dense_penalty)(theta), rtol=1e-10, atol=1e-13
        )
        # one pass (train's route): the same quadratic forms, summed in another order
        value, g = ewc.penalty_and_grad(theta)
        assert value == pytest.approx(want, rel=1e-10, abs=1e-14)
        np.testing.assert_allclose(g, ewc.grad(theta), rtol=1e-12, atol=1e-14)
    H = sum(c * M for _, c, M in terms)
    np.testing.assert_allclose(ewc.hessian(), H, rtol=1e-10, atol=1e-14)
    v = rng.standard_normal(case.P)
    np.testing.assert_allclose(ewc.hessian_matvec(v), H @ v, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_grad_matches_central_differences_of_the_penalty(kind):
    """A quadratic's central difference is exact: only rounding separates the two routes."""
    case = make_case((2, 3, 4, 2), "tanh", "categorical", N=6, seed=101)
    ewc = minifim.EWC(case.net, structure=kind, mode="separate")
    for th, X in two_tasks(case):
        ewc.add_task(th, X)
    rng = np.random.default_rng(2)
    theta = case.theta + rng.standard_normal(case.P)
    g = ewc.grad(theta)
    for _ in range(3):
        v = rng.standard_normal(case.P)
        fd = (ewc.penalty(theta + 1e-3 * v) - ewc.penalty(theta - 1e-3 * v)) / 2e-3
        assert fd == pytest.approx(g @ v, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize(
    "case", [c for c in KFAC_EXACT_CASES if c.net.num_layers == 1], ids=lambda c: c.name
)
def test_kfac_equals_full_where_kfac_is_exact(case):
    """One linear layer with a Gaussian likelihood: G_n = I / sigma^2, K-FAC is the Fisher."""
    pens = {}
    for kind in ("kfac", "full"):
        ewc = minifim.EWC(case.net, structure=kind, mode="recursive")
        for th, X in two_tasks(case):
            ewc.add_task(th, X)
        pens[kind] = ewc
    theta = np.random.default_rng(3).standard_normal(case.P)
    assert pens["kfac"].penalty(theta) == pytest.approx(pens["full"].penalty(theta), rel=1e-12)
    np.testing.assert_allclose(
        pens["kfac"].grad(theta), pens["full"].grad(theta), rtol=1e-11, atol=1e-13
    )


@pytest.mark.parametrize("bias", ["folded", "separate"])
def test_kfac_penalty_is_trace_form_per_layer(bias):
    """1/2 c sum_l tr(D~^T G D~ A) (folded) or tr(dW^T G dW A) + db^T G db (separate)."""
    case = make_case((2, 3, 4, 2), "tanh", "categorical", N=6, seed=101)
    ewc = minifim.EWC(case.net, structure="kfac", bias=bias)
    rec = ewc.add_task(case.theta, case.X)
    theta = case.theta + np.random.default_rng(4).standard_normal(case.P)
    total = 0.0
    for l, (dW, db) in enumerate(case.net.unflatten(theta - case.theta)):
        A, G = rec.curvature.A[l], rec.curvature.G[l]
        if bias == "folded":
            D = np.concatenate([dW, db[:, None]], axis=1)
            total += np.trace(D.T @ G @ D @ A)
        else:
            total += np.trace(dW.T @ G @ dW @ A) + db @ G @ db
    assert ewc.penalty(theta) == pytest.approx(0.5 * case.N * total, rel=1e-12)


@pytest.mark.parametrize("fisher", ["empirical", "argmax", "mc"])
@pytest.mark.parametrize("kind", ["diag", "full", "kfac"])
def test_other_fisher_kinds_use_the_named_curvature(fisher, kind):
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=5)
    net = case.net
    kw = {"n_samples": 3, "rng": 11} if fisher == "mc" else {}
    ewc = minifim.EWC(net, structure=kind, fisher=fisher, **kw)
    rec = ewc.add_task(case.theta, case.X, case.y)
    ref_kw = {"n_samples": 3, "rng": np.random.default_rng(11)} if fisher == "mc" else {}
    y = case.y if fisher == "empirical" else None
    if kind == "kfac":
        ref = minifim.kfac(net, case.theta, case.X, y, fisher, **ref_kw).to_dense()
        got = rec.curvature.to_dense()
    else:
        ref = minifim.curvature_matrix(net, case.theta, case.X, y, fisher, **ref_kw)
        ref = np.diag(ref) if kind == "diag" else ref
        got = rec.curvature
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
    if fisher != "true":
        T = minifim.true_fisher(net, case.theta, case.X)
        assert not np.allclose(
            minifim.curvature_matrix(net, case.theta, case.X, y, fisher, **ref_kw), T
        )


def test_mc_draws_consecutively_from_one_generator_and_replays():
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=5)
    a = minifim.EWC(case.net, fisher="mc", n_samples=2, rng=3)
    a.add_task(case.theta, case.X)
    a.add_task(case.theta, case.X)
    g = np.random.default_rng(3)
    d1 = minifim.fisher_diagonal(case.net, case.theta, case.X, None, "mc", n_samples=2, rng=g)
    d2 = minifim.fisher_diagonal(case.net, case.theta, case.X, None, "mc", n_samples=2, rng=g)
    np.testing.assert_array_equal(a.tasks[0].curvature, d1)
    np.testing.assert_array_equal(a.tasks[1].curvature, d2)
    assert not np.array_equal(d1, d2)


# --- the square-of-mean-gradient mistake, by hand -------------------------------------------
@pytest.fixture
def logistic_by_hand():
    """Logistic regression at theta = 0 (p = 1/2): per-sample scores (y - 1/2) (x, 1) with
    x = (1, -1, 2), y = (1, 1, 0): s_w = (1/2, -1/2, -1), s_b = (1/2, 1/2, -1/2)."""
    net = minifim.MLP([1, 1], activation="identity", likelihood="bernoulli")
    X = np.array([[1.0], [-1.0], [2.0]])
    y = np.array([[1.0], [1.0], [0.0]])
    return net, np.zeros(2), X, y


def test_square_of_mean_gradient_differs_from_true_diagonal_as_predicted(logistic_by_hand):
    net, theta, X, y = logistic_by_hand
    true = ewc_mod.task_curvature(net, theta, X, y, "diag", "true")
    som = ewc_mod.task_curvature(net, theta, X, y, "diag", "square_of_mean_gradient")
    # true: mean p(1-p) (x^2, 1) = (1/4 * 6/3, 1/4); mistake: (mean s)^2 = ((-1/3)^2, (1/6)^2)
    np.testing.assert_allclose(true, [1 / 2, 1 / 4], rtol=1e-15)
    np.testing.assert_allclose(som, [1 / 9, 1 / 36], rtol=1e-15)
    # the gap is the variance of the per-sample scores (here the empirical equals the true diag)
    np.testing.assert_allclose(true - som, [7 / 18, 2 / 9], rtol=1e-14)
    # mini-batches of 1 give the empirical Fisher; of 2: g = (0, 1/2), (1, 1/2) -> (1/2, 1/4)
    for b in (1, 2):
        got = ewc_mod.task_curvature(
            net, theta, X, y, "diag", "square_of_mean_gradient", batch_size=b
        )
        np.testing.assert_allclose(got, [1 / 2, 1 / 4], rtol=1e-15)
    # the EWC penalties on the summed scale: N/2 sum F_ii d_i^2, N = 3
    d = np.array([0.3, -0.7])
    for fisher, F in (("true", [1 / 2, 1 / 4]), ("square_of_mean_gradient", [1 / 9, 1 / 36])):
        ewc = minifim.EWC(net, fisher=fisher)
        ewc.add_task(theta, X, y)
        assert ewc.penalty(theta + d) == pytest.approx(1.5 * np.dot(F, d * d), rel=1e-14)


def test_square_of_mean_gradient_vanishes_at_the_task_optimum():
    """At the maximum-likelihood solution the mean gradient is zero: the mistaken EWC has no
    penalty at all, while the true Fisher's is unchanged in size."""
    rng = np.random.default_rng(9)
    net = minifim.MLP([3, 1], activation="identity", likelihood="bernoulli")
    X = rng.standard_normal((40, 3))
    y = (rng.random((40, 1)) < 1 / (1 + np.exp(-X @ [[1.0], [-1.0], [0.5]]))).astype(float)
    theta = np.zeros(4)
    for _ in range(25):  # Newton on the logistic log-likelihood
        theta = theta - np.linalg.solve(
            minifim.hessian(net, theta, X, y), minifim.gradient(net, theta, X, y)
        )
    som = ewc_mod.task_curvature(net, theta, X, y, "diag", "square_of_mean_gradient")
    true = ewc_mod.task_curvature(net, theta, X, y, "diag", "true")
    assert np.max(som) < 1e-25 * np.max(true)
    assert np.min(true) > 1e-2


@pytest.mark.parametrize("kind", ["diag", "block", "full"])
def test_square_of_mean_gradient_matches_curvature_route(kind):
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=6)
    net = case.net
    got = ewc_mod.task_curvature(net, case.theta, case.X, case.y, kind, "square_of_mean_gradient")
    full = minifim.square_of_mean_gradient(net, case.theta, case.X, case.y)  # autograd route
    got = ewc_mod.curvature_dense(kind, got)
    np.testing.assert_allclose(got, dense_structure(kind, full, net), rtol=1e-12, atol=1e-16)
    # batch_size >= N is the whole task; batch_size = 1 is the empirical Fisher
    whole = ewc_mod.task_curvature(
        net, case.theta, case.X, case.y, kind, "square_of_mean_gradient", batch_size=case.N
    )
    np.testing.assert_allclose(ewc_mod.curvature_dense(kind, whole), got, rtol=1e-14, atol=0)
    one = ewc_mod.task_curvature(
        net, case.theta, case.X, case.y, kind, "square_of_mean_gradient", batch_size=1
    )
    EF = minifim.empirical_fisher(net, case.theta, case.X, case.y)
    np.testing.assert_allclose(
        ewc_mod.curvature_dense(kind, one), dense_structure(kind, EF, net), rtol=1e-12, atol=1e-16
    )


# --- state, replay, conventions --------------------------------------------------------------
@pytest.mark.parametrize("mode", ["separate", "recursive", "online"])
@pytest.mark.parametrize("kind", KINDS)
def test_incremental_state_equals_pure_core_and_replays(kind, mode):
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=8)
    gamma = 0.5 if mode == "online" else 1.0
    ewc = minifim.EWC(case.net, structure=kind, mode=mode, strength=2.0, gamma=gamma)
    rng = np.random.default_rng(0)
    for k in range(3):
        ewc.add_task(case.theta + 0.3 * rng.standard_normal(case.P), case.X * (1 + k))
    quads = ewc_mod.quadratics(ewc.tasks, kind, mode, 2.0, gamma)
    replay = minifim.EWC(
        case.net, structure=kind, mode=mode, strength=2.0, gamma=gamma, tasks=ewc.tasks
    )
    theta = case.theta + rng.standard_normal(case.P)
    want = ewc_mod.quadratic_penalty(quads, kind, theta)
    assert ewc.penalty(theta) == pytest.approx(want, rel=1e-13)
    np.testing.assert_allclose(
        ewc.grad(theta), ewc_mod.quadratic_grad(quads, kind, theta), rtol=1e-13, atol=1e-15
    )
    assert replay.penalty(theta) == ewc.penalty(theta)
    assert len(ewc.quadratics) == (3 if mode == "separate" else 1)
    assert all(isinstance(t, minifim.EWCTask) and t.n_samples == case.N for t in ewc.tasks)
    assert len(ewc.quadratics[-1].terms) == (3 if kind == "kfac" and mode != "separate" else 1)


def test_no_tasks_no_penalty_and_record_is_a_copy():
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=8)
    ewc = minifim.EWC(case.net)
    assert ewc.penalty(case.theta) == 0.0
    np.testing.assert_array_equal(ewc.grad(case.theta), np.zeros(case.P))
    theta = case.theta.copy()
    rec = ewc.add_task(theta, case.X)
    theta += 1.0
    np.testing.assert_array_equal(rec.theta_star, case.theta)
    assert ewc.penalty(case.theta) == 0.0 and repr(ewc).startswith("EWC(")
    assert ewc.config()["structure"] == "diag"


def test_lambda_mapping_to_the_mean_loss_convention():
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=8)
    net = case.net
    strength, n_cur = 3.0, 10
    ewc = minifim.EWC(net, strength=strength)
    rec = ewc.add_task(case.theta, case.X)
    lam = minifim.ewc_lambda(strength, case.N, n_cur)
    theta = case.theta + np.random.default_rng(0).standard_normal(case.P)
    d = theta - case.theta
    usual = lam / 2 * np.sum(rec.curvature * d * d)  # added to the MEAN loss of n_cur samples
    assert ewc.penalty(theta) / n_cur == pytest.approx(usual, rel=1e-13)
    assert lam == pytest.approx(strength * case.N / n_cur, rel=1e-15)
    assert minifim.ewc_strength(lam, case.N, n_cur) == pytest.approx(strength, rel=1e-15)


@given(t=st.floats(-3, 3), s=st.floats(0, 5))
def test_penalty_is_a_nonnegative_quadratic_in_the_offset(t, s):
    case = make_case((3, 4, 3), "tanh", "categorical", N=6, seed=8)
    d = np.random.default_rng(0).standard_normal(case.P)
    ewc1 = minifim.EWC(case.net, structure="kfac", strength=1.0)
    ewc1.add_task(case.theta, case.X)
    ewcs = minifim.EWC(case.net, structure="kfac", strength=s, tasks=ewc1.tasks)
    base = ewc1.penalty(case.theta + d)
    assert base > 0
    assert ewc1.penalty(case.theta + t * d) == pytest.approx(t * t * base, rel=1e-12, abs=1e-15)
    assert ewcs.penalty(case.theta + d) == pytest.approx(s * base, rel=1e-12, abs=1e-15)


def test_works_as_a_train_penalty(linear_tasks):
    """minifim.train with the recursive full EWC reaches the joint least-squares solution."""
    if not hasattr(minifim, "train"):
        pytest.skip("minifim.train not available")
    net, tasks = linear_tasks
    ewc = minifim.EWC(net, structure="full", mode="recursive")
    (X1, y1), (X2, y2) = tasks[:2]
    ewc.add_task(least_squares([X1], [y1]), X1, y1)
    H = (minifim.hessian(net, np.zeros(4), X2, y2, reduction="sum") + ewc.hessian()) / len(X2)
    lr = 1.0 / np.linalg.eigvalsh(H)[-1]
    theta, _ = minifim.train(
        net, np.zeros(4), X2, y2, minifim.optim.sgd(lr), 3000, progress=False, penalty=ewc
    )
    np.testing.assert_allclose(theta, least_squares([X1, X2], [y1, y2]), rtol=1e-8, atol=1e-9)


# --- bad input -------------------------------------------------------------------------------
@pytest.fixture
def small():
    return make_case((3, 4, 3), "tanh", "categorical", N=6, seed=8)


def test_bad_names_and_numbers(small):
    net = small.net
    for kwargs, exc, words in [
        ({"structure": "diagonal"}, ValueError, "structure"),
        ({"fisher": "Fisher"}, ValueError, "fisher"),
        ({"fisher": "ggn"}, ValueError, "fisher"),
        ({"mode": "joint"}, ValueError, "mode"),
        ({"mode": 1}, TypeError, "mode"),
        ({"strength": -1.0}, ValueError, "strength"),
        ({"strength": "1"}, TypeError, "strength"),
        ({"mode": "online", "gamma": 1.5}, ValueError, "gamma"),
        ({"mode": "online", "gamma": -0.1}, ValueError, "gamma"),
        ({"mode": "recursive", "gamma": 0.5}, ValueError, "gamma"),
        ({"fisher": "mc"}, TypeError, "rng"),
        ({"fisher": "mc", "rng": 0, "n_samples": 0}, ValueError, "n_samples"),
        ({"rng": 0}, ValueError, "rng"),
        ({"n_samples": 2}, ValueError, "n_samples"),
        ({"batch_size": 4}, ValueError, "batch_size"),
        ({"fisher": "square_of_mean_gradient", "batch_size": 0}, ValueError, "batch_size"),
        ({"bias": "folded"}, ValueError, "bias"),
        ({"structure": "kfac", "bias": "homogeneous"}, ValueError, "bias"),
        ({"structure": "kfac", "fisher": "square_of_mean_gradient"}, ValueError, "K-FAC"),
        ({"tasks": [1]}, TypeError, "tasks"),
    ]:
        with pytest.raises(exc, match=words):
            minifim.EWC(net, **kwargs)


def test_bad_add_task_and_penalty_inputs(small):
    net = small.net
    ewc = minifim.EWC(net)
    with pytest.raises(ValueError, match=rf"theta_star: expected shape \({small.P},\)"):
        ewc.add_task(small.theta[:-1], small.X)
    with pytest.raises(ValueError, match="X"):
        ewc.add_task(small.theta, small.X[:, :2])
    with pytest.raises(ValueError, match="y"):
        ewc.add_task(small.theta, small.X, small.y[:-1])  # validated even when unused
    for fisher in ("empirical", "square_of_mean_gradient"):
        with pytest.raises(ValueError, match="y: .*received None"):
            minifim.EWC(net, fisher=fisher).add_task(small.theta, small.X)
    ewc.add_task(small.theta, small.X)
    with pytest.raises(ValueError, match="theta"):
        ewc.penalty(small.theta[:-1])
    with pytest.raises(ValueError, match="theta"):
        ewc.grad(np.full(small.P, np.nan))
    assert len(ewc.tasks) == 1  # failed calls record nothing
    bad = minifim.EWCTask(small.theta, small.N, np.ones(small.P - 1))
    with pytest.raises(ValueError, match=r"tasks\[\]\.curvature"):
        minifim.EWC(net, tasks=[bad])
    with pytest.raises(TypeError, match="KFACFactors"):
        minifim.EWC(net, structure="kfac", tasks=[minifim.EWCTask(small.theta, 6, np.ones(3))])
    with pytest.raises(ValueError, match="strength"):
        minifim.ewc_lambda(-1.0, 10, 10)
    with pytest.raises(ValueError, match="n_current"):
        minifim.ewc_lambda(1.0, 10, 0)


@pytest.mark.parametrize("kind", ["full", "block"])
def test_dense_curvature_over_budget_names_the_cheaper_curvature(small, kind):
    net = small.net
    with (
        minifim.memory_limit(64),
        pytest.raises(minifim.MemoryBudgetError, match="structure='kfac'.*structure='diag'"),
    ):
        minifim.EWC(net, structure=kind)
    ewc = minifim.EWC(net, structure=kind)  # budget lowered after construction
    with (
        minifim.memory_limit(64),
        pytest.raises(minifim.MemoryBudgetError, match="structure='kfac'"),
    ):
        ewc.add_task(small.theta, small.X)
    assert ewc.tasks == ()


# --- PyTorch cross-check: EWC as it is usually written ----------------------------------------
def test_torch_ewc_loops_match():
    """The usual PyTorch loops: p.grad ** 2 of the batch-mean loss over a loader (the mistake),
    per-sample squares at the data labels (empirical), and the enumerated expectation over the
    model's classes (true), then lambda/2 sum F (p - p_old)^2 on the mean loss."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    seq = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    ).double()
    net = minifim.MLP([3, 5, 3], activation="tanh")
    theta = net.from_state_dict(seq.state_dict())
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((7, 3)), rng.integers(0, 3, 7)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    params = list(seq.parameters())

    def flat_grad():
        return np.concatenate([p.grad.detach().numpy().ravel() for p in params])

    def loader_fisher(B):
        out, batches = np.zeros(net.num_params), range(0, len(X), B)
        for s in batches:
            seq.zero_grad()
            torch.nn.functional.cross_entropy(seq(Xt[s : s + B]), yt[s : s + B]).backward()
            out += flat_grad() ** 2 / len(batches)
        return out

    for B in (1, 3, 7):
        got = ewc_mod.task_curvature(
            net, theta, X, y, "diag", "square_of_mean_gradient", batch_size=B
        )
        np.testing.assert_allclose(got, loader_fisher(B), rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(
        ewc_mod.task_curvature(net, theta, X, y, "diag", "empirical"),
        loader_fisher(1),
        rtol=1e-12,
        atol=1e-16,
    )
    true = np.zeros(net.num_params)
    for n in range(len(X)):
        probs = torch.softmax(seq(Xt[n : n + 1]), dim=1)[0].detach().numpy()
        for c in range(3):
            seq.zero_grad()
            torch.log_softmax(seq(Xt[n : n + 1]), dim=1)[0, c].backward()
            true += probs[c] * flat_grad() ** 2 / len(X)
    np.testing.assert_allclose(
        ewc_mod.task_curvature(net, theta, X, y, "diag", "true"), true, rtol=1e-12, atol=1e-16
    )
    # the usual penalty lambda/2 sum F (p - p_old)^2 on the mean loss of N_cur samples
    ewc = minifim.EWC(net, strength=2.0)
    ewc.add_task(theta, X)
    n_cur, new = 11, theta + rng.standard_normal(net.num_params)
    lam = minifim.ewc_lambda(2.0, len(X), n_cur)
    usual = lam / 2 * np.sum(true * (new - theta) ** 2)
    assert ewc.penalty(new) / n_cur == pytest.approx(usual, rel=1e-12)


# --- the pure helpers validate like the core (issue 12) ----------------------------------------
@pytest.fixture
def recorded(small):
    ewc = minifim.EWC(small.net, structure="diag")
    ewc.add_task(small.theta, small.X)
    return ewc


def test_curvature_matvec_and_dense_refuse_bad_input(small):
    P = small.P
    d = np.abs(np.random.default_rng(0).standard_normal(P))
    v = np.ones(P)
    with pytest.raises(
        ValueError,
        match=r"structure: expected one of \['block', 'diag', 'full', "
        r"'kfac'\], received 'diagonal'",
    ):
        ewc_mod.curvature_matvec("diagonal", d, v)  # used to be treated as a list of blocks
    with pytest.raises(ValueError, match="structure"):
        ewc_mod.curvature_dense("dense", np.diag(d))
    # v: (P, 1) against a diagonal used to broadcast to a (P, P) "product"
    with pytest.raises(
        ValueError,
        match=rf"v: expected shape \({P},\), received shape "
        rf"\({P}, 1\)",
    ):
        ewc_mod.curvature_matvec("diag", d, v[:, None])
    with pytest.raises(
        ValueError,
        match=rf"v: expected shape \({P},\), received shape "
        rf"\({P - 1},\)",
    ):
        ewc_mod.curvature_matvec("full", np.diag(d), v[:-1])
    with pytest.raises(ValueError, match=r"M: expected a square 2-D array"):
        ewc_mod.curvature_matvec("full", np.ones((P, P - 1)), v)
    with pytest.raises(ValueError, match=r"M: expected a 1-D array"):
        ewc_mod.curvature_matvec("diag", np.diag(d), v)
    with pytest.raises(ValueError, match=r"M\[1\]: expected a square 2-D array"):
        ewc_mod.curvature_matvec("block", [np.eye(3), np.ones((2, 3))], np.ones(5))
    with pytest.raises(TypeError, match="M: expected a list of square"):
        ewc_mod.curvature_matvec("block", np.eye(3), np.ones(3))
    with pytest.raises(TypeError, match="M: expected KFACFactors"):
        ewc_mod.curvature_matvec("kfac", np.eye(3), np.ones(3))
    with pytest.raises(ValueError, match="M: expected finite values"):
        ewc_mod.curvature_dense("diag", np.full(P, np.nan))
    with pytest.raises(TypeError, match="v: expected a real"):
        ewc_mod.curvature_matvec("diag", d, v + 1j)


def test_quadratic_penalty_and_grad_refuse_bad_input(small, recorded):
    quads, P = recorded.quadratics, small.P
    theta = small.theta + 0.1
    want = recorded.penalty(theta)
    assert ewc_mod.quadratic_penalty(quads, "diag", theta) == want
    with pytest.raises(
        ValueError,
        match=rf"theta: expected shape \({P},\), received shape "
        rf"\({P}, 1\)",
    ):
        ewc_mod.quadratic_penalty(quads, "diag", theta[:, None])  # used to broadcast
    with pytest.raises(
        ValueError,
        match=rf"theta: expected shape \({P},\), received shape "
        rf"\({P - 1},\)",
    ):
        ewc_mod.quadratic_grad(quads, "diag", theta[:-1])
    with pytest.raises(ValueError, match="theta: expected finite"):
        ewc_mod.quadratic_grad(quads, "diag", np.full(P, np.inf))
    with pytest.raises(ValueError, match="structure"):
        ewc_mod.quadratic_penalty(quads, "diagonal", theta)
    with pytest.raises(TypeError, match=r"quads\[0\]: expected a Quadratic"):
        ewc_mod.quadratic_penalty([recorded.tasks[0]], "diag", theta)
    with pytest.raises(TypeError, match=r"quads: expected a sequence of Quadratic"):
        ewc_mod.quadratic_grad(quads[0], "diag", theta)
    bad = ewc_mod.Quadratic(quads[0].centre, ((1.0, np.ones(P + 1)),))
    with pytest.raises(
        ValueError,
        match=r"quads\[0\]\.terms\[0\]: expected a curvature of "
        rf"size P = {P}, received {P + 1}",
    ):
        ewc_mod.quadratic_penalty([bad], "diag", theta)
    bad = ewc_mod.Quadratic(quads[0].centre, ((np.nan, quads[0].terms[0][1]),))
    with pytest.raises(ValueError, match=r"quads\[0\]\.terms\[0\] coefficient"):
        ewc_mod.quadratic_grad([bad], "diag", theta)
    # the (kind, representation) pair must agree: a K-FAC record under kind="diag" is refused
    kf = minifim.EWC(small.net, structure="kfac")
    kf.add_task(small.theta, small.X)
    with pytest.raises(
        TypeError,
        match=r"quads\[0\]\.terms\[0\]: expected a 1-D array .*"
        r"received KFACFactors",
    ):
        ewc_mod.quadratic_penalty(kf.quadratics, "diag", theta)


def test_quadratics_refuses_bad_tasks(small, recorded):
    task = recorded.tasks[0]
    assert ewc_mod.quadratics([task], "diag")[0].centre is task.theta_star
    with pytest.raises(TypeError, match=r"tasks\[1\]: expected an EWCTask, received tuple"):
        ewc_mod.quadratics([task, (task.theta_star, 6, task.curvature)], "diag")
    with pytest.raises(ValueError, match=r"tasks\[0\]\.n_samples: expected an integer >= 1"):
        ewc_mod.quadratics([ewc_mod.EWCTask(task.theta_star, 0, task.curvature)], "diag")
    with pytest.raises(ValueError, match=r"tasks\[0\]\.theta_star: expected a 1-D array"):
        ewc_mod.quadratics([ewc_mod.EWCTask(task.theta_star[None], 6, task.curvature)], "diag")
    with pytest.raises(
        ValueError,
        match=r"tasks\[0\]\.curvature: expected a curvature of size "
        rf"P = {small.P}",
    ):
        ewc_mod.quadratics([ewc_mod.EWCTask(task.theta_star, 6, task.curvature[1:])], "diag")
    other = ewc_mod.EWCTask(task.theta_star[1:], 6, task.curvature[1:])
    with pytest.raises(
        ValueError,
        match=r"tasks\[1\]\.theta_star: expected shape "
        rf"\({small.P},\) like tasks\[0\]",
    ):
        ewc_mod.quadratics([task, other], "diag", "recursive")
    with pytest.raises(TypeError, match="tasks: expected a sequence of EWCTask"):
        ewc_mod.quadratics(task, "diag")


def test_ewc_functions_refuse_a_non_net(small):
    for call in (
        lambda: minifim.EWC([3, 4, 3]),
        lambda: minifim.task_curvature("net", small.theta, small.X),
    ):
        with pytest.raises(TypeError, match="net: expected a minifim.MLP"):
            call()


def test_task_curvature_refuses_arguments_its_configuration_ignores(small):
    """Like EWC(...): n_samples/rng only with fisher='mc', bias only with structure='kfac',
    batch_size only with 'square_of_mean_gradient' (each used to be dropped silently)."""
    net, theta, X, y = small.net, small.theta, small.X, small.y
    for kwargs, msg in [
        ({"rng": 0}, "rng: only fisher='mc' samples labels"),
        ({"n_samples": 4}, "n_samples: only fisher='mc' samples labels"),
        ({"bias": "separate"}, "bias: only structure='kfac' has a bias convention"),
        ({"batch_size": 2}, "batch_size: only fisher='square_of_mean_gradient' uses"),
    ]:
        with pytest.raises(ValueError, match=msg):
            ewc_mod.task_curvature(net, theta, X, y, "diag", "true", **kwargs)
    a = ewc_mod.task_curvature(net, theta, X, None, "diag", "mc", rng=3)  # n_samples: 1
    b = ewc_mod.task_curvature(net, theta, X, None, "diag", "mc", n_samples=1, rng=3)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="rng: fisher='mc' samples labels"):
        ewc_mod.task_curvature(net, theta, X, None, "diag", "mc")
    kf = ewc_mod.task_curvature(net, theta, X, None, "kfac", "true", bias="separate")
    assert kf.bias == "separate"
    # y is validated and ignored by the kinds that do not use it (documented)
    with pytest.raises(ValueError, match="y"):
        ewc_mod.task_curvature(net, theta, X, y[:-1], "diag", "true")


# --- the renamed keyword and the structure objects (issue 13) -------------------------------
def test_curvature_keyword_is_deprecated_and_equal(small):
    net, theta, X = small.net, small.theta, small.X
    with pytest.warns(DeprecationWarning, match="'curvature' is deprecated.*'structure'"):
        old = minifim.EWC(net, curvature="kfac", mode="recursive")
    new = minifim.EWC(net, structure="kfac", mode="recursive")
    for e in (old, new):
        e.add_task(theta, X)
        e.add_task(theta + 0.1, X[::-1])
    assert old.structure == new.structure == "kfac"
    assert old.penalty(theta + 0.3) == new.penalty(theta + 0.3)
    with pytest.warns(DeprecationWarning, match="EWC.curvature is deprecated"):
        assert new.curvature == "kfac"
    with pytest.warns(DeprecationWarning, match="'curvature' is deprecated"):
        d_old = ewc_mod.task_curvature(net, theta, X, curvature="diag")
    np.testing.assert_array_equal(d_old, ewc_mod.task_curvature(net, theta, X, structure="diag"))
    with pytest.raises(TypeError, match="both"):
        minifim.EWC(net, curvature="diag", structure="diag")


@pytest.mark.parametrize("kind", KINDS)
def test_records_are_the_data_of_the_structure_objects(small, kind):
    """task_curvature returns the representation of minifim.curvature's object; the merged
    precision of "recursive" is the structures' sum (K-FAC: the list of Kronecker terms)."""
    net, theta, X = small.net, small.theta, small.X
    rec = ewc_mod.task_curvature(net, theta, X, structure=kind)
    S = minifim.curvature(net, theta, X, structure=kind)
    np.testing.assert_array_equal(ewc_mod.curvature_dense(kind, rec), S.to_dense())
    ewc = minifim.EWC(net, structure=kind, mode="recursive", strength=2.0)
    ewc.add_task(theta, X)
    ewc.add_task(theta + 0.2, X[::-1] * 0.5)
    S2 = minifim.curvature(net, theta + 0.2, X[::-1] * 0.5, structure=kind)
    total = 2.0 * X.shape[0] * S + 2.0 * X.shape[0] * S2
    assert type(total) is type(S)
    np.testing.assert_allclose(
        ewc.hessian(),
        total.to_dense(),
        rtol=0,
        atol=8 * np.finfo(float).eps * np.abs(total.to_dense()).max(),
    )


def test_kind_keyword_of_the_pure_functions_is_deprecated(small, recorded):
    d = recorded.tasks[0].curvature
    v = np.ones(small.P)
    theta = small.theta + 0.1
    quads = ewc_mod.quadratics(recorded.tasks, "diag")
    for f, args, new in [
        (ewc_mod.curvature_matvec, (d, v), lambda: ewc_mod.curvature_matvec("diag", d, v)),
        (ewc_mod.curvature_dense, (d,), lambda: ewc_mod.curvature_dense("diag", d)),
        (ewc_mod.quadratic_penalty, (quads,), None),
    ]:
        if new is None:
            with pytest.warns(DeprecationWarning, match="'kind' is deprecated"):
                got = ewc_mod.quadratic_penalty(quads, kind="diag", theta=theta)
            assert got == ewc_mod.quadratic_penalty(quads, structure="diag", theta=theta)
            continue
        with pytest.warns(DeprecationWarning, match="'kind' is deprecated.*'structure'"):
            got = f(kind="diag", M=args[0], **({"v": args[1]} if len(args) > 1 else {}))
        np.testing.assert_array_equal(got, new())
    with pytest.warns(DeprecationWarning, match="'kind' is deprecated"):
        old = ewc_mod.quadratics(recorded.tasks, kind="diag")
    np.testing.assert_array_equal(old[0].terms[0][1], quads[0].terms[0][1])
    with pytest.warns(DeprecationWarning, match="'kind' is deprecated"):
        g = ewc_mod.quadratic_grad(quads, kind="diag", theta=theta)
    np.testing.assert_array_equal(g, ewc_mod.quadratic_grad(quads, "diag", theta))
