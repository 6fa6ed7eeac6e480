"""The oracle: layouts against hand-built JAX/x@W orderings, comparisons and their failure
messages (one test per recognisable mistake), diagnosis of every Fisher variant, and the exact
Monte-Carlo error moments against brute-force enumeration and simulation."""

import itertools
import json

import numpy as np
import pytest
from minifim.fixtures import make_fixture

import minifim
from minifim import oracle
from minifim.oracle import (
    assert_matches,
    check,
    compare,
    diagnose,
    fisher_variants,
    from_minifim_layout,
    layout_permutation,
    mc_error_moments,
    output_outcomes,
    to_minifim_layout,
)

from .cases import assert_close

_CACHE = {}


def get(name):
    if name not in _CACHE:
        _CACHE[name] = make_fixture(name)
    return _CACHE[name]


# --- layouts ----------------------------------------------------------------------------------------
def _ravel_pytree(tree):
    """What ``jax.flatten_util.ravel_pytree`` does to nested dicts: keys sorted, leaves raveled."""
    if isinstance(tree, dict):
        return np.concatenate([_ravel_pytree(tree[k]) for k in sorted(tree)])
    return np.asarray(tree).ravel()


@pytest.mark.parametrize("sizes", [(3, 4, 2), (2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2)])
def test_layouts_match_hand_built_orderings(sizes):
    net = minifim.MLP(list(sizes))
    theta = net.init(0)
    in_out = np.concatenate(
        [np.concatenate([np.asarray(W).T.ravel(), b]) for W, b in net.unflatten(theta)]
    )
    jax = _ravel_pytree(net.to_flax(theta))  # 12 layers: Dense_10 sorts before Dense_2
    for layout, expected in (("pytorch", theta), ("in-out", in_out), ("jax", jax)):
        perm = layout_permutation(net, layout)
        assert np.array_equal(theta[perm], expected), layout
        assert np.array_equal(from_minifim_layout(net, theta, [0], layout), expected)
        assert np.array_equal(to_minifim_layout(net, expected, [0], layout), theta)
    M = np.outer(theta, np.arange(net.num_params))
    assert np.array_equal(
        to_minifim_layout(net, from_minifim_layout(net, M, [0, 1], "jax"), [0, 1], "jax"), M
    )
    with pytest.raises(ValueError, match="layout"):
        layout_permutation(net, "tensorflow")


# --- compare ------------------------------------------------------------------------------------------
def test_compare_semantics():
    ref = np.array([[1.0, -2.0], [0.0, 1e-3]])
    c = compare(ref, ref.copy(), name="A")
    assert c.passed and c.max_abs_err == 0 and c.atol == pytest.approx(2e-7)
    # the zero entry tolerates rtol * max|r| by default, not with atol=0
    cand = ref.copy()
    cand[1, 0] = 1e-8
    assert compare(ref, cand, name="A").passed
    bad = compare(ref, cand, name="A", atol=0.0)
    assert not bad.passed and bad.worst_index == (1, 0) and bad.max_rel_err == 0.0
    cand = ref.copy()
    cand[0, 1] = -2.1
    r = compare(ref, cand, name="A", rtol=1e-3)
    assert not r.passed and r.worst_index == (0, 1) and r.worst_label == "A[0, 1]"
    assert r.max_abs_err == pytest.approx(0.1) and r.max_rel_err == pytest.approx(0.05)
    assert r.reference_value == -2.0 and r.candidate_value == -2.1
    assert r.norm_rel_err == pytest.approx(0.1 / np.linalg.norm(ref))
    shape = compare(ref, ref.T[:1], name="A")
    assert not shape.passed and shape.max_abs_err is None and "shape mismatch" in shape.message()
    nan = ref.copy()
    nan[1, 1] = np.nan
    n = compare(ref, nan, name="A")
    assert not n.passed and n.worst_index == (1, 1) and "NaN" in n.message()
    assert compare(nan, nan.copy(), name="A").passed  # matching NaN (undefined state) entries
    assert not compare(nan, ref, name="A").passed
    assert compare(ref, ref, rtol=0.0).passed  # rtol = 0 (and atol = 0): bit-exact
    assert not compare(ref, ref * (1 + 1e-16) + 1e-300, rtol=0.0, atol=0.0).passed
    for kwargs, err in (
        ({"rtol": -1.0}, ValueError),
        ({"atol": -1.0}, ValueError),
        ({"rtol": "1"}, TypeError),
    ):
        with pytest.raises(err):
            compare(ref, ref, **kwargs)
    with pytest.raises(TypeError, match="candidate"):
        compare(ref, "abc")


# --- assert_matches and the likely causes ---------------------------------------------------------
def test_assert_matches_passes_on_every_array(tmp_path):
    fx = get("categorical-tanh")
    path = fx.save(tmp_path / "f.npz")
    for key in fx.keys():
        assert assert_matches(path, key, fx[key].copy()).passed
    assert assert_matches(fx, "F", fx["true_fisher"]).name == "true_fisher"  # alias
    assert assert_matches(fx, "0.weight", fx["state_dict/0.weight"]).passed  # state dict key
    perturbed = fx["true_fisher"] * (1 + 1e-9)
    assert assert_matches(fx, "true_fisher", perturbed)
    with pytest.raises(AssertionError):
        assert_matches(fx, "true_fisher", perturbed, rtol=1e-12)


def _fails(fx, key, cand, **kwargs):
    with pytest.raises(AssertionError) as info:
        assert_matches(fx, key, cand, **kwargs)
    return str(info.value)


def test_message_names_the_worst_entry():
    fx = get("categorical-tanh")
    F = fx["true_fisher"].copy()
    F[40, 3] += 1e-3
    msg = _fails(fx, "true_fisher", F)
    assert "worst entry true_fisher[W1[0, 0], W0[0, 3]]" in msg
    assert f"expected {float(fx['true_fisher'][40, 3])!r}" in msg and "rtol=1e-07" in msg
    assert "Likely cause" not in msg  # a single corrupted entry has no recognisable cause


def test_cause_empirical_instead_of_true():
    fx = get("categorical-tanh")
    msg = _fails(fx, "true_fisher", fx["empirical_fisher"])
    assert "Likely cause: the empirical Fisher (data labels) instead of the true Fisher" in msg
    assert "empirical Fisher's diagonal" in _fails(
        fx, "fisher_diagonal", fx["empirical_fisher_diagonal"]
    )
    assert "empirical" in _fails(fx, "kfac/true/folded/G0", fx["kfac/empirical/folded/G0"])


def test_cause_sum_vs_mean():
    fx = get("categorical-tanh")
    for key in (
        "true_fisher",
        "gradient",
        "fisher_diagonal",
        "fisher_eigenvalues",
        "kfac/true/separate/G1",
        "loss",
    ):
        assert "sum instead of mean over the N = 8 samples" in _fails(fx, key, 8 * fx[key])
    assert "divided by N = 8 once too often" in _fails(fx, "hessian", fx["hessian"] / 8)
    # the same candidate passes when its reduction is declared
    assert_matches(fx, "true_fisher", 8 * fx["true_fisher"], reduction="sum")
    assert_matches(fx, "scores", fx["scores"], reduction="sum")  # scores do not scale


def test_cause_transposed_layouts():
    fx = get("categorical-tanh")
    net = fx.net
    assert "transposed layout" in _fails(fx, "state_dict/0.weight", fx["state_dict/0.weight"].T)
    msg = _fails(fx, "scores", from_minifim_layout(net, fx["scores"], [1], "in-out"))
    assert "transposed weight layout" in msg and "layout='in-out'" in msg
    msg = _fails(fx, "true_fisher", from_minifim_layout(net, fx["true_fisher"], [0, 1], "jax"))
    assert "different parameter order" in msg and "layout='jax'" in msg
    # declared, they pass; declared wrongly, the message says so
    assert_matches(
        fx, "jacobians", from_minifim_layout(net, fx["jacobians"], [2], "jax"), layout="jax"
    )
    assert_matches(fx, "state_dict/2.weight", fx["state_dict/2.weight"].T, layout="jax")
    assert "drop layout='in-out'" in _fails(fx, "gradient", fx["gradient"], layout="in-out")


def test_cause_square_of_mean_gradient_and_argmax():
    fx = get("categorical-tanh")
    net, th, X = fx.net, fx.theta, fx.X
    msg = _fails(fx, "fisher_diagonal", fx["gradient"] ** 2)
    assert "square of the batch-mean gradient" in msg
    arg = minifim.curvature_matrix(net, th, X, None, "argmax")
    assert "argmax" in _fails(fx, "true_fisher", arg)


def test_cause_factor_two_of_the_mse():
    fx = get("gaussian-softplus")  # sigma = 0.3
    F = fx["true_fisher"]
    assert "factor 2: the MSE |y - f|^2" in _fails(fx, "true_fisher", 2 * F)
    assert "sigma ignored" in _fails(fx, "true_fisher", 0.09 * F)
    assert "Hessian of the MSE" in _fails(fx, "ggn", 2 * 0.09 * fx["ggn"])
    assert "squared gradients of the MSE" in _fails(fx, "true_fisher", 4 * 0.3**4 * F)
    fx1 = get("linear-regression")  # sigma = 1: the MSE's factor 2 on the gradient
    assert "factor 2" in _fails(fx1, "gradient", 2 * fx1["gradient"])
    assert "sign flipped" in _fails(fx1, "gradient", -fx1["gradient"])


def test_cause_scale_and_eigen_order():
    fx = get("bernoulli-sigmoid")
    assert "candidate = 3.7 x reference" in _fails(fx, "true_fisher", 3.7 * fx["true_fisher"])
    assert "ascending order" in _fails(fx, "fisher_eigenvalues", fx["fisher_eigenvalues"][::-1])
    assert "empirical Fisher used in the natural-gradient step" in _fails(
        fx,
        "ngd_step",
        np.linalg.solve(fx["empirical_fisher"] + fx.damping * np.eye(fx.P), fx["gradient"]),
    )


def test_assert_matches_bad_input():
    fx = get("logistic-regression")
    with pytest.raises(KeyError, match="not an array"):
        assert_matches(fx, "nope", np.ones(3))
    with pytest.raises(TypeError, match="name"):
        assert_matches(fx, 3, np.ones(3))
    with pytest.raises(ValueError, match="layout"):
        assert_matches(fx, "theta", fx.theta, layout="tf")
    with pytest.raises(ValueError, match="reduction"):
        assert_matches(fx, "theta", fx.theta, reduction="max")
    msg = _fails(fx, "true_fisher", np.ones((3, 3)))
    assert "shape mismatch, expected (5, 5), received (3, 3)" in msg
    assert "reshape" in _fails(fx, "true_fisher", fx["true_fisher"].reshape(25))


# --- check ----------------------------------------------------------------------------------------
def test_check_maps_keys_and_reports():
    fx = get("categorical-tanh")
    cand = {
        "F": fx["true_fisher"],
        "grad": 8 * fx["gradient"],
        "mine": fx["hessian"],
        "2.bias": fx["state_dict/2.bias"],
        "unknown": np.ones(2),
    }
    res = check(fx, cand, mapping={"mine": "hessian"})
    assert not res.passed
    by = {c.candidate_name: c for c in res.comparisons}
    assert by["F"].passed and by["mine"].passed and by["2.bias"].passed
    assert not by["grad"].passed and "sum instead of mean" in by["grad"].causes[0]
    assert res.unmatched == ["unknown"]
    table = res.table()
    assert "grad -> gradient" in table and "FAIL" in table and "FAILED: 2 problem(s)" in table
    data = json.loads(res.to_json())
    assert data["passed"] is False and data["unmatched"] == ["unknown"]
    assert {c["candidate_name"] for c in data["comparisons"]} == {"F", "grad", "mine", "2.bias"}
    ok = check(fx, cand, keys=["F", "mine"], mapping={"mine": "hessian"})
    assert ok.passed and "PASSED" in ok.table()
    with pytest.raises(ValueError, match="no array 'nope'"):
        check(fx, cand, mapping={"mine": "nope"})
    with pytest.raises(ValueError, match="not in the candidate"):
        check(fx, cand, keys=["zzz"])
    with pytest.raises(TypeError, match="mapping"):
        check(fx, [1, 2])
    nan = check(fx, {"F": np.full_like(fx["true_fisher"], np.nan)})
    assert json.loads(nan.to_json())["comparisons"][0]["max_abs_err"] == "inf"
    assert not check(fx, {}).passed  # nothing compared is not a pass


def test_check_with_layout_and_reduction():
    fx = get("deep-narrow")
    net = fx.net
    cand = {
        k: from_minifim_layout(net, fx.N * fx[k], fx.array_info(k)["param_axes"], "jax")
        for k in ("true_fisher", "gradient", "fisher_diagonal", "empirical_fisher")
    }
    assert check(fx, cand, layout="jax", reduction="sum").passed
    assert not check(fx, cand).passed
    res = check(fx, {"ngd_step": fx["ngd_step"]}, reduction="sum")
    assert res.passed and "not a pure rescaling" in res.comparisons[0].note


# --- diagnosis ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["categorical-tanh", "gaussian-softplus", "bernoulli-sigmoid"])
@pytest.mark.parametrize("diagonal", [False, True])
def test_diagnose_identifies_every_variant(name, diagonal):
    fx = get(name)
    variants = fisher_variants(fx, diagonal=diagonal)
    names = [v for v, _, _ in variants]
    assert names[0] == "true" and {
        "empirical",
        "argmax",
        "square-of-mean-gradient",
        "true-sum",
        "true-in-out-layout",
        "hessian",
    } <= set(names)
    for v, _, M in variants:
        d = diagnose(fx, M)
        assert d.closest == v and d.distances[0][2] <= 1e-14
        assert d.ok == (v == "true")
        assert d.kind == ("diagonal" if diagonal else "dense")
        second = d.distances[1][2]
        assert second > 1e-3, (v, d.distances[1])  # the variants are far apart


def test_diagnose_variants_are_exact():
    fx = get("bernoulli-sigmoid")
    V = {v: M for v, _, M in fisher_variants(fx)}
    N = fx.N
    S = fx["scores"]
    assert_close(V["true"], fx["true_fisher"], 1e-13)
    assert_close(V["empirical"], S.T @ S / N, 1e-13)
    g = S.mean(axis=0)
    assert_close(V["square-of-mean-gradient"], np.outer(g, g), 1e-12)
    assert_close(V["square-of-sum-gradient"], np.outer(N * g, N * g), 1e-12)
    f = fx["outputs"]
    ym = (f > 0).astype(float)
    Sa = minifim.per_sample_scores(fx.net, fx.theta, fx.X, ym, backend="autograd")
    assert_close(V["argmax"], Sa.T @ Sa / N, 1e-12)


def test_diagnose_gaussian_sigma_variants():
    fx = get("gaussian-softplus")
    F = fx["true_fisher"]
    assert diagnose(fx, 0.09 * F).closest == "unit-sigma"
    assert diagnose(fx, 2 * 0.09 * F).closest == "mse-ggn"
    assert diagnose(fx, 4 * 0.3**4 * F).closest == "mse-squared-gradients"
    names = [v for v, _, _ in fisher_variants(get("linear-regression"))]
    assert "unit-sigma" not in names  # sigma = 1: identical to the true Fisher, dropped


def test_diagnose_with_layout_and_reduction():
    fx = get("categorical-relu")
    F = from_minifim_layout(fx.net, fx.N * fx["true_fisher"], [0, 1], "jax")
    d = diagnose(fx, F, layout="jax", reduction="sum")
    assert d.ok and d.closest == "true"
    assert diagnose(fx, F).closest != "true"


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("k", [1, 4, 30])
def test_diagnose_accepts_monte_carlo_within_the_band(k, diagonal):
    fx = get("categorical-tanh")
    accepted = 0
    for seed in range(5):
        if diagonal:
            c = minifim.fisher_diagonal(fx.net, fx.theta, fx.X, fisher="mc", n_samples=k, rng=seed)
        else:
            c = minifim.mc_fisher(fx.net, fx.theta, fx.X, k, rng=seed)
        d = diagnose(fx, c, n_samples=k)
        accepted += d.ok
        assert d.monte_carlo["k"] == k
    assert accepted >= 4  # Cantelli: at most 10% false alarms at z = 3
    assert "consistent with a Monte-Carlo estimate" in d.verdict or not d.ok


def test_diagnose_monte_carlo_mistakes():
    fx = get("categorical-tanh")
    k = 30
    c = minifim.mc_fisher(fx.net, fx.theta, fx.X, k, rng=0)
    d = diagnose(fx, k * c, n_samples=k)
    assert not d.ok and "summed over the k Monte-Carlo samples instead of averaged" in d.verdict
    assert d.explanation["factors"] == {"k": 1} and d.explanation["consistent"]
    d = diagnose(fx, fx.N * c, n_samples=k)
    assert not d.ok and "summed over the samples instead of averaged" in d.verdict
    assert d.explanation["variant"] == "mc" and d.explanation["factors"] == {"N": 1}
    # the empirical Fisher is an exact variant, not "a noisy estimate"
    d = diagnose(fx, fx["empirical_fisher"], n_samples=k)
    assert not d.ok and d.closest == "empirical" and "'empirical' variant" in d.verdict
    # a biased estimate far outside the band for large k
    d = diagnose(fx, 1.2 * c, n_samples=k)  # a 20% scale error: k / (N C) = 1.25 fits the band
    assert not d.ok and d.explanation["consistent"] and d.explanation["factors"]
    d = diagnose(fx, c + 0.5 * fx["empirical_fisher"], n_samples=k)  # no scale explains it
    assert not d.ok and "not explained by sampling" in d.verdict
    assert d.monte_carlo["within_band"] is False
    json.dumps(d.to_dict())
    assert "OUTSIDE the band" in d.report()


def test_diagnose_k_eff_estimates_the_number_of_samples():
    fx = get("categorical-tanh")
    keff = [
        diagnose(fx, minifim.mc_fisher(fx.net, fx.theta, fx.X, 64, rng=s)).monte_carlo["k_eff"]
        for s in range(6)
    ]
    assert 20 < np.median(keff) < 200


def test_diagnose_bad_input():
    fx = get("logistic-regression")
    with pytest.raises(ValueError, match=r"shape \(5, 5\), a diagonal of shape \(5,\)"):
        diagnose(fx, np.ones((4, 4)))
    with pytest.raises(ValueError, match="n_samples"):
        diagnose(fx, fx["true_fisher"], n_samples=0)
    bad = diagnose(fx, np.full(5, np.nan))  # a failure naming the entries, not a crash
    assert not bad.ok and "5 NaN/Inf entries" in bad.verdict and "W0[0, 0] = nan" in bad.verdict


# --- exact outcomes and Monte-Carlo moments --------------------------------------------------------
@pytest.mark.parametrize("lik", ["categorical", "bernoulli", "gaussian"])
def test_output_outcomes_are_the_output_distribution(lik):
    net = minifim.MLP([3, 4, 2], "tanh", lik, sigma=0.6)
    theta = net.init(1)
    X = np.random.default_rng(2).standard_normal((5, 3))
    w, U = output_outcomes(net, theta, X)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-14)
    assert np.all(w >= 0)
    mean_score = np.einsum("no,nop->np", w, U)
    assert np.max(np.abs(mean_score)) <= 1e-14 * np.max(np.abs(U))  # E_y[s] = 0
    assert_close(
        np.einsum("no,nop,noq->pq", w, U, U) / 5, minifim.true_fisher(net, theta, X), 1e-13
    )


def _brute_force_moments(net, theta, X, k, diagonal):
    """Enumerate every joint draw of the N k labels (exact E D and Var D)."""
    w, U = output_outcomes(net, theta, X)
    N, O, _ = U.shape
    F = np.einsum("no,nop,noq->pq", w, U, U) / N
    if diagonal:
        F = np.diag(F)
    ED = ED2 = 0.0
    for cfg in itertools.product(range(O), repeat=N * k):
        cfg = np.array(cfg).reshape(N, k)
        prob = np.prod(w[np.arange(N)[:, None], cfg])
        Us = U[np.arange(N)[:, None], cfg].reshape(N * k, -1)
        M = np.einsum("ip,iq->pq", Us, Us) / (N * k)
        D = np.sum(((np.diag(M) if diagonal else M) - F) ** 2)
        ED += prob * D
        ED2 += prob * D * D
    return ED, ED2 - ED * ED


@pytest.mark.parametrize("lik", ["categorical", "bernoulli"])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("diagonal", [False, True])
def test_mc_moments_against_brute_force_enumeration(lik, k, diagonal):
    net = minifim.MLP([2, 3, 2], "tanh", lik)
    theta = net.init(0)
    X = np.random.default_rng(1).standard_normal((2, 2))
    mean, var = mc_error_moments(net, theta, X, k, diagonal=diagonal)
    ED, VD = _brute_force_moments(net, theta, X, k, diagonal)
    assert mean == pytest.approx(ED, rel=1e-12)
    assert var == pytest.approx(VD, rel=1e-11)


def test_mc_moments_gaussian_mean_closed_form():
    """Isserlis: with s ~ N(0, F_n), E|ss^T - F_n|^2 = (tr F_n)^2 + |F_n|^2 and
    E|s*s - diag F_n|^2 = 2 |diag F_n|^2."""
    net = minifim.MLP([3, 4, 2], "softplus", "gaussian", sigma=0.4)
    theta = net.init(3)
    X = np.random.default_rng(4).standard_normal((6, 3))
    J = minifim.output_jacobians(net, theta, X)
    Fn = np.einsum("ncp,ncq->npq", J, J) / 0.4**2
    N, k = 6, 3
    dense = sum(np.trace(f) ** 2 + np.sum(f * f) for f in Fn) / (N * N * k)
    diag = sum(2 * np.sum(np.diag(f) ** 2) for f in Fn) / (N * N * k)
    assert mc_error_moments(net, theta, X, k)[0] == pytest.approx(dense, rel=1e-12)
    assert mc_error_moments(net, theta, X, k, diagonal=True)[0] == pytest.approx(diag, rel=1e-12)


@pytest.mark.parametrize("lik", ["gaussian", "categorical"])
def test_mc_moments_against_simulation(lik):
    """minifim.mc_fisher's error over 600 seeds: mean within 4 standard errors of the exact
    mean, variance within 25% (the sampling error of a variance from 600 draws)."""
    net = minifim.MLP([2, 3, 2], "tanh", lik, sigma=0.8)
    theta = net.init(5)
    X = np.random.default_rng(6).standard_normal((3, 2))
    F = minifim.true_fisher(net, theta, X)
    k = 2
    D = np.array(
        [np.sum((minifim.mc_fisher(net, theta, X, k, rng=s) - F) ** 2) for s in range(600)]
    )
    mean, var = mc_error_moments(net, theta, X, k)
    assert abs(D.mean() - mean) <= 4 * np.sqrt(var / len(D))
    assert D.var() == pytest.approx(var, rel=0.25)


def test_mc_moments_enumeration_limit():
    net = minifim.MLP([2, 13], "identity", "bernoulli")
    with pytest.raises(ValueError, match="enumeration limit"):
        mc_error_moments(net, net.init(0), np.ones((2, 2)), 1)
    with pytest.raises(ValueError, match="n_samples"):
        mc_error_moments(net, net.init(0), np.ones((2, 2)), 0)
    assert oracle.MAX_OUTCOMES == 4096


def test_check_trajectory_arrays():
    fx = make_fixture("logistic-regression", trajectory="kfac:steps=2,lr=0.2,damping=0.01")
    net = fx.net
    cand = {
        "trajectory/theta": from_minifim_layout(net, fx["trajectory/theta"], [1], "jax"),
        "trajectory/state/rho": fx["trajectory/state/rho"].copy(),
    }
    assert check(fx, cand, layout="jax").passed
    wrong = fx["trajectory/theta"].copy()
    wrong[2, 4] += 1e-3
    res = check(fx, {"trajectory/theta": wrong})
    assert not res.passed
    assert res.comparisons[0].worst_label == "trajectory/theta[step 2, b0[0]]"


def test_diagnose_without_the_band_says_why():
    net = minifim.MLP([2, 13], "identity", "bernoulli")  # 2^13 outcomes: over the limit
    theta = net.init(0)
    X = np.random.default_rng(0).standard_normal((3, 2))
    fx = minifim.fixtures.build_fixture(net, theta, X, np.zeros((3, 13)))
    c = minifim.mc_fisher(net, theta, X, 2, rng=0)
    d = diagnose(fx, c, n_samples=2)
    assert not d.ok and d.monte_carlo is None
    assert "Monte-Carlo band was not computed" in d.verdict and "enumeration limit" in d.verdict
    fx2 = make_fixture({"preset": "logistic-regression", "num_samples": 200})
    c2 = minifim.mc_fisher(fx2.net, fx2.theta, fx2.X, 2, rng=0)
    with minifim.memory_limit(1_000_000):  # the (N O)^2 = 400^2 Gram matrices need 3.8 MB
        d2 = diagnose(fx2, c2, n_samples=2)
    assert "memory budget" in d2.verdict and "Gram" in d2.verdict
    assert diagnose(fx2, c2, n_samples=2).ok


# --- what the oracle cannot judge ------------------------------------------------------------
def test_complex_candidates_are_refused():
    fx = get("logistic-regression")
    F = fx["true_fisher"] + 0j  # even with a zero imaginary part: the dtype is a mistake
    with pytest.raises(
        TypeError,
        match=r"candidate\['true_fisher'\]: expected a real array, "
        "received complex dtype complex128",
    ):
        check(fx, {"true_fisher": F})
    with pytest.raises(TypeError, match="complex"):
        assert_matches(fx, "true_fisher", F)
    with pytest.raises(TypeError, match="complex"):
        diagnose(fx, F)
    with pytest.raises(TypeError, match="complex"):
        compare(fx["true_fisher"], F)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_candidates_fail_naming_the_entries(bad):
    fx = get("categorical-tanh")
    F = fx["true_fisher"].copy()
    F[0, 1] = F[3, 2] = F[40, 40] = bad
    res = check(fx, {"F": F})
    assert not res.passed
    comp = res.comparisons[0]
    assert comp.num_nonfinite == 3 and comp.max_abs_err == np.inf
    msg = comp.message()
    assert (
        f"3 NaN/Inf entries where the reference is finite: true_fisher[W0[0, 0], W0[0, 1]] = "
        f"{bad!r}" in msg
    )
    assert "true_fisher[W1[0, 0], W1[0, 0]]" in msg
    table = res.table()
    assert "FAIL" in table and "true_fisher[W0[0, 0], W0[0, 1]]" in table
    assert json.loads(res.to_json())["comparisons"][0]["num_nonfinite"] == 3
    with pytest.raises(AssertionError, match=r"3 NaN/Inf entries.*W0\[0, 1\]"):
        assert_matches(fx, "true_fisher", F)
    G = fx["gradient"].copy()
    G[:] = np.nan
    msg = check(fx, {"gradient": G}).comparisons[0].message()
    assert f"{fx.P} NaN/Inf entries" in msg and "..." in msg and msg.count(" = nan") == 5
    d = diagnose(fx, F)
    assert not d.ok and "3 NaN/Inf entries" in d.verdict and "W0[0, 1]" in d.report()
    J = from_minifim_layout(fx.net, fx["fisher_diagonal"], [0], "jax")
    J[0] = np.nan  # the first entry of ravel_pytree order is Dense_0's bias
    assert "(b0[0] = nan)" in diagnose(fx, J, layout="jax").verdict


def test_non_finite_reference_entries_must_be_matched():
    fx = make_fixture("logistic-regression", trajectory="adam:steps=2,lr=0.01")
    ref = fx["trajectory/state/theta"]
    assert check(fx, {"trajectory/state/theta": ref}).passed
    comp = compare(np.array([np.nan, 1.0]), np.array([0.5, 1.0]), name="state")
    assert not comp.passed and "1 NaN/Inf entry where the candidate is finite" in comp.message()


def test_a_mutated_fixture_cannot_fool_the_next_check(tmp_path):
    path = get("logistic-regression").save(tmp_path / "lr.npz")
    fx = minifim.load_fixture(path)
    zeros = np.zeros_like(fx["true_fisher"])
    with pytest.raises(ValueError, match="read-only"):
        fx.arrays["true_fisher"][:] = 0.0
    fx.arrays["true_fisher"] = zeros
    assert not check(path, {"true_fisher": zeros}).passed
    with pytest.raises(AssertionError):
        assert_matches(str(path), "true_fisher", zeros)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_low_precision_candidates_are_compared_in_float64_with_a_note(dtype):
    fx = get("categorical-tanh")
    F = fx["true_fisher"].astype(dtype)
    res = check(fx, {"true_fisher": F})
    comp = res.comparisons[0]
    eps = np.finfo(dtype).eps
    # compared exactly as stored: the float64 value of each low-precision entry
    assert comp.max_abs_err == np.max(np.abs(F.astype(np.float64) - fx["true_fisher"]))
    assert np.dtype(dtype).name in comp.note and f"{eps:.1e}" in comp.note
    assert "cannot meet rtol = 1e-07" in comp.note and "ill-conditioned" in comp.note
    assert "note" in res.table() or "FAIL" in res.table()
    loose = check(fx, {"true_fisher": F}, rtol=10 * eps)
    assert loose.passed and np.dtype(dtype).name in loose.comparisons[0].note
    assert "cannot meet" not in loose.comparisons[0].note
    if dtype == np.float16:  # its storage alone is far from rtol = 1e-7
        assert not comp.passed
        with pytest.raises(AssertionError, match="float16 candidate compared in float64"):
            assert_matches(fx, "true_fisher", F)
    else:  # exactly rounded float32 meets 1e-7 (eps / 2 = 6e-8); computed float32 would not
        assert comp.passed
    comp = assert_matches(fx, "true_fisher", F, rtol=10 * eps)
    assert np.dtype(dtype).name in comp.note


def test_integer_candidates_are_compared_in_float64_with_a_note():
    fx = get("categorical-tanh")
    y = fx["y"].astype(np.int64)
    comp = check(fx, {"y": y}).comparisons[0]
    assert comp.passed and "int64 candidate compared in float64" in comp.note
    assert "int64" in assert_matches(fx, "y", y).note
    assert assert_matches(fx, "true_fisher", fx["true_fisher"]).note == ""


def test_layout_helpers_validate_their_arguments():
    net = minifim.MLP([3, 4, 2])
    P = net.num_params
    M = np.zeros((P, 2))
    with pytest.raises(TypeError, match="net: expected a minifim.MLP"):
        layout_permutation(np.ones(3), "jax")
    with pytest.raises(TypeError, match="layout"):
        layout_permutation(net, 1)
    for fn in (to_minifim_layout, from_minifim_layout):
        with pytest.raises(
            ValueError,
            match=rf"param_axes: axis 1 of arr has length 2, expected "
            rf"P = {P}",
        ):
            fn(net, M, [1], "jax")
        with pytest.raises(
            ValueError,
            match=r"param_axes: axis 2 is out of range for arr of "
            r"shape \(26, 2\)",
        ):
            fn(net, M, [2], "jax")
        with pytest.raises(ValueError, match="param_axes: axis 0 is listed twice"):
            fn(net, M, [0, -2], "jax")
        with pytest.raises(TypeError, match="param_axes: expected a sequence of integers"):
            fn(net, M, 0, "jax")
        with pytest.raises(TypeError, match="param_axes: expected a sequence of integers"):
            fn(net, M, [0.0], "jax")
        with pytest.raises(TypeError, match="arr: expected a real numeric array"):
            fn(net, "abc", [0], "jax")
        with pytest.raises(TypeError, match="arr: expected a real array"):
            fn(net, M + 0j, [0], "jax")
        with pytest.raises(ValueError, match="layout"):
            fn(net, M, [0], "tf")
        with pytest.raises(TypeError, match="net"):
            fn([3, 4, 2], M, [0], "jax")
    # negative axes are axes, and the round trip is exact
    V = np.arange(2.0 * P).reshape(2, P)
    assert np.array_equal(
        to_minifim_layout(net, from_minifim_layout(net, V, [-1], "jax"), [1], "jax"), V
    )
