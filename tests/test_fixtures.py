"""Fixtures: every stored array against an independent route, the presets' promises, the
manifest, determinism (byte-identical files), and the loader's errors on bad files."""

import io
import json
import zipfile

import numpy as np
import pytest
from minifim.fixtures import (
    PRESETS,
    SCHEMA_VERSION,
    Fixture,
    FixtureError,
    build_fixture,
    load_fixture,
    make_fixture,
    param_label,
    parse_trajectory,
    save_fixture,
)

import minifim
from minifim import fixtures
from minifim.core.scores import forward_cache

from .cases import ACTIVATIONS, LIKELIHOODS, assert_close, enumerated_fisher
from .tolerances import check_close, damped_cond, identity_tol, solve_rtol

# every MLP preset but the wide one (P = 324) is cheap enough to check in full; the
# weight-sharing presets (Sequential models, issue 14) have their own tests below
MLP_PRESETS = [n for n in PRESETS if "sizes" in PRESETS[n]]
CHECKED = [n for n in MLP_PRESETS if n != "wide-rank-deficient"]
LAYERED = [n for n in PRESETS if "layers" in PRESETS[n]]
_CACHE = {}


def get(name):
    if name not in _CACHE:
        _CACHE[name] = make_fixture(name)
    return _CACHE[name]


# --- the presets' promises ------------------------------------------------------------------
def test_presets_cover_every_likelihood_and_activation():
    specs = [fixtures.resolve_spec(n)[1] for n in MLP_PRESETS]
    assert {s["likelihood"] for s in specs} == set(LIKELIHOODS)
    assert {s["activation"] for s in specs} == set(ACTIVATIONS)
    for s in specs:
        net = minifim.MLP(s["sizes"], s["activation"], s["likelihood"], s["sigma"])
        assert net.num_params <= 400  # small: every preset is made in well under a second
    assert set(LAYERED) == {"cnn-digits", "sequence-expand", "sequence-reduce"}
    for name in LAYERED:
        net = fixtures.net_from_spec(fixtures.resolve_spec(name)[1])
        assert net.weight_sharing and net.num_params <= 150


def test_deep_narrow_preset():
    s = fixtures.resolve_spec("deep-narrow")[1]
    assert len(s["sizes"]) - 1 >= 6 and max(s["sizes"][1:-1]) <= 4


def test_wide_preset_is_rank_deficient():
    fx = get("wide-rank-deficient")
    N, C, P = fx.N, fx.net.output_dim, fx.P
    assert N * C < P
    eig = fx["fisher_eigenvalues"]
    rank = int(np.sum(eig > 1e-10 * eig[0]))
    assert rank == N * (C - 1)  # softmax: rank(F) <= N (C - 1), attained generically
    assert_close(eig.sum(), np.trace(fx["true_fisher"]), 1e-12)


@pytest.mark.parametrize("name", ["saturated-categorical", "saturated-bernoulli"])
def test_saturated_presets_reach_logit_50(name):
    fx = get(name)
    assert np.max(np.abs(fx["outputs"])) == pytest.approx(50.0, rel=1e-12)
    for key in fx.keys():
        assert np.all(np.isfinite(fx[key])), key


def test_saturated_output_fisher_is_accurate_entrywise():
    """Lambda = diag(p) - p p^T with 1 - p_max ~ 1e-16 for a logit gap of ~36: the diagonal
    must be p_c * (sum of the other classes), not the rounded p - p^2 (= 0)."""
    fx = get("saturated-categorical")
    f = fx["outputs"]
    logp = f - np.logaddexp.reduce(f, axis=1, keepdims=True)
    p = np.exp(logp)
    C = p.shape[1]
    others = np.array([[p[n, np.arange(C) != c].sum() for c in range(C)] for n in range(fx.N)])
    diag = np.einsum("ncc->nc", fx["output_fisher"])
    np.testing.assert_allclose(diag, p * others, rtol=1e-13, atol=0)
    assert np.min(others[p > 0.5]) < 1e-15  # the case is really saturated


# --- contents against independent routes --------------------------------------------------------
@pytest.mark.parametrize("name", CHECKED)
def test_weights_data_and_outputs(name):
    fx = get(name)
    net = fx.net
    assert np.array_equal(net.from_state_dict(fx.state_dict()), fx.theta)
    assert list(fx.state_dict()) == list(net.to_state_dict(fx.theta))
    for l, (W, b) in enumerate(net.unflatten(fx.theta)):
        assert np.array_equal(fx[f"state_dict/{2 * l}.weight"], W)
        assert np.array_equal(fx[f"state_dict/{2 * l}.bias"], b)
    assert_close(fx["outputs"], net.forward(fx.theta, fx.X), 1e-15)
    assert float(fx["loss"]) == pytest.approx(
        -np.mean(net.log_prob(fx.theta, fx.X, fx.y)), rel=1e-13
    )
    if net.likelihood.name == "categorical":
        assert fx.y.dtype == np.int64 and fx["y"].dtype == np.float64


@pytest.mark.parametrize("name", CHECKED)
def test_scores_jacobians_gradient(name):
    fx = get(name)
    net, th, X, y = fx.net, fx.theta, fx.X, fx.y
    assert_close(fx["scores"], minifim.per_sample_scores(net, th, X, y, backend="autograd"), 1e-12)
    assert_close(fx["jacobians"], minifim.output_jacobians(net, th, X, backend="autograd"), 1e-12)
    # gradient of the mean NLL = - mean of the per-sample scores (two different passes)
    assert_close(fx["gradient"], -fx["scores"].mean(axis=0), 1e-12)
    # the output-space score is the last layer's bias gradient
    bs = net.layer_slices[-1][1]
    g = net.likelihood.grad_log_prob(fx["outputs"], y)
    assert_close(fx["scores"][:, bs], g, 1e-13)


@pytest.mark.parametrize("name", CHECKED)
def test_curvatures(name):
    fx = get(name)
    net, th, X, N = fx.net, fx.theta, fx.X, fx.N
    F = fx["true_fisher"]
    # enumeration over the output distribution with autograd scores
    assert_close(F, enumerated_fisher(net, th, X), 1e-12)
    # J^T Lambda J from the stored Jacobians and output Fisher
    assert_close(
        F,
        np.einsum("ncp,ncd,ndq->pq", fx["jacobians"], fx["output_fisher"], fx["jacobians"]) / N,
        1e-12,
    )
    assert_close(fx["ggn"], F, 1e-12)  # canonical links
    S = fx["scores"]
    assert_close(fx["empirical_fisher"], S.T @ S / N, 1e-13)
    assert_close(fx["fisher_diagonal"], np.diag(F), 1e-13)
    assert_close(fx["empirical_fisher_diagonal"], np.diag(fx["empirical_fisher"]), 1e-13)
    for key in ("true_fisher", "empirical_fisher", "ggn", "hessian"):
        assert np.array_equal(fx[key], fx[key].T), key


@pytest.mark.parametrize(
    "name",
    [
        "categorical-tanh",
        "bernoulli-sigmoid",
        "gaussian-softplus",
        "deep-narrow",
        "saturated-bernoulli",
    ],
)
def test_hessian_against_finite_differences_of_the_gradient(name):
    """Autograd reverse-over-reverse vs central differences of the batched backprop gradient."""
    fx = get(name)
    net, th, X, y = fx.net, fx.theta, fx.X, fx.y
    h = 1e-5
    P = fx.P
    cols = []
    for i in range(P):
        e = np.zeros(P)
        e[i] = h
        cols.append(
            (minifim.gradient(net, th + e, X, y) - minifim.gradient(net, th - e, X, y)) / (2 * h)
        )
    assert_close(fx["hessian"], np.array(cols).T, 1e-7)


@pytest.mark.parametrize("name", CHECKED)
def test_eigenvalues_and_ngd_step(name):
    fx = get(name)
    F, eig, P = fx["true_fisher"], fx["fisher_eigenvalues"], fx.P
    assert np.all(np.diff(eig) <= 0), "descending"
    assert_close(eig.sum(), np.trace(F), 1e-12)
    assert_close(np.sum(eig**2), np.sum(F * F), 1e-12)  # Frobenius norm = spectral
    lam = fx.damping
    x = fx["ngd_step"]
    residual = (F + lam * np.eye(P)) @ x - fx["gradient"]
    assert np.linalg.norm(residual) <= 1e-12 * (np.linalg.norm(F) + lam) * np.linalg.norm(x)


@pytest.mark.parametrize("name", CHECKED)
def test_kfac_factors_against_definitions(name):
    """A = mean of the (homogeneous) layer inputs' outer products; the bias-bias block of the
    exact Fisher (true or empirical) is exactly G; both bias conventions share G."""
    fx = get(name)
    net, N = fx.net, fx.N
    acts = [np.reshape(a, (N, -1)) for a in forward_cache(net, fx.theta, fx.X).acts]  # R = 1
    for fisher, M in (("true", fx["true_fisher"]), ("empirical", fx["empirical_fisher"])):
        folded, separate = fx.kfac(fisher, "folded"), fx.kfac(fisher, "separate")
        for l, (a, (_, bs)) in enumerate(zip(acts, net.layer_slices)):
            at = np.hstack([a, np.ones((N, 1))])
            assert_close(folded.A[l], at.T @ at / N, 1e-14)
            assert_close(separate.A[l], a.T @ a / N, 1e-14)
            assert_close(folded.G[l], M[bs, bs], 1e-12)
            assert np.array_equal(folded.G[l], separate.G[l])
        assert_close(
            folded.to_dense(), minifim.kfac(net, fx.theta, fx.X, fx.y, fisher).to_dense(), 1e-15
        )


def test_kfac_is_exact_for_linear_regression():
    fx = get("linear-regression")
    assert_close(fx.kfac("true", "folded").to_dense(), fx["true_fisher"], 1e-13)


# --- manifest, API, determinism -------------------------------------------------------------------
def test_manifest_contents():
    fx = get("gaussian-softplus")
    m = fx.manifest
    assert m["format"] == "minifim-fixture" and m["schema_version"] == SCHEMA_VERSION
    assert m["minifim_version"] == minifim.__version__
    assert (
        m["model"]
        == fx.net.config()
        == {"sizes": [3, 8, 2], "activation": "softplus", "likelihood": "gaussian", "sigma": 0.3}
    )
    assert m["parameter_order"] == ["W0", "b0", "W1", "b1"]
    assert m["reduction"] == "mean" and m["damping"] == 1e-3
    assert m["seeds"]["seed"] == PRESETS["gaussian-softplus"]["seed"]
    assert m["command"] == "minifim fixture make gaussian-softplus"
    blocks = m["parameter_layout"]["blocks"]
    assert [b["name"] for b in blocks] == ["W0", "b0", "W1", "b1"]
    assert blocks[0] == {"name": "W0", "shape": [8, 3], "start": 0, "stop": 24}
    assert set(m["arrays"]) == set(fx.keys())
    for key, info in m["arrays"].items():
        assert info["shape"] == list(fx[key].shape)
        assert {"description", "param_axes", "reduction_power"} <= set(info), key
    assert m["arrays"]["true_fisher"]["param_axes"] == [0, 1]
    assert m["arrays"]["scores"]["param_axes"] == [1]
    assert m["arrays"]["true_fisher"]["reduction_power"] == 1
    assert m["arrays"]["ngd_step"]["reduction_power"] is None
    json.dumps(m)


def test_fixture_api():
    fx = get("categorical-tanh")
    with pytest.raises(KeyError, match="available: theta"):
        fx["nope"]
    assert "true_fisher" in fx and "nope" not in fx
    assert fx.param_label(0) == "W0[0, 0]"
    assert fx.param_label(5) == "W0[1, 1]"
    assert fx.param_label(32) == "b0[0]"
    assert fx.param_label(66) == "b1[2]"
    with pytest.raises(ValueError, match="index"):
        param_label(fx.net, 67)
    assert "categorical-tanh" in repr(fx) and fx.trajectory() == {}


@pytest.mark.parametrize("name", ["logistic-regression", "categorical-tanh"])
def test_same_command_gives_byte_identical_files(name, tmp_path):
    save_fixture(make_fixture(name), tmp_path / "a.npz")
    save_fixture(make_fixture(name), tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_save_load_round_trip(tmp_path):
    fx = get("bernoulli-sigmoid")
    path = fx.save(tmp_path / "f.npz")
    back = load_fixture(path)
    assert back.manifest == fx.manifest and back.keys() == fx.keys()
    for k in fx.keys():
        assert np.array_equal(back[k], fx[k]) and back[k].dtype == np.float64
    assert back.path == str(path) and load_fixture(back) is back
    again = load_fixture(path)  # read once per (path, inode, mtime, size), a new container
    assert again is not back and again["true_fisher"].base is back["true_fisher"].base
    with pytest.raises(ValueError, match="read-only"):
        back["true_fisher"][0, 0] = 1.0
    with np.load(path, allow_pickle=False) as z:  # plain numpy can read it
        assert "manifest" in z.files and z["manifest"].dtype == np.uint8


# --- specs ------------------------------------------------------------------------------------------
def test_spec_with_preset_override_and_explicit_arrays():
    fx = make_fixture({"preset": "logistic-regression", "num_samples": 4, "damping": 0.1})
    assert fx.N == 4 and fx.damping == 0.1 and fx.name == "logistic-regression"
    theta = [0.5, -1.0, 0.25, 2.0, 0.1]
    X = [[1.0, 0.0, 0.5, 0.2], [0.3, -1.0, 0.0, 1.0]]
    y = [[1.0], [0.0]]
    fx2 = make_fixture(
        {
            "sizes": [4, 1],
            "activation": "identity",
            "likelihood": "bernoulli",
            "theta": theta,
            "X": X,
            "y": y,
            "name": "mine",
        }
    )
    assert fx2.name == "mine" and np.array_equal(fx2.theta, theta)
    assert np.array_equal(fx2.X, X) and np.array_equal(fx2["y"], y)
    assert fx2.manifest["spec"]["theta"] == theta
    Xt = np.hstack([np.array(X), np.ones((2, 1))])
    p = 1 / (1 + np.exp(-Xt @ theta))
    assert_close(fx2["true_fisher"], Xt.T @ (Xt * (p * (1 - p))[:, None]) / 2, 1e-14)


@pytest.mark.parametrize(
    "spec, err, match",
    [
        ({"sizes": [2, 2], "colour": 1}, ValueError, "unknown key"),
        ({"activation": "tanh"}, ValueError, "sizes"),
        ({"sizes": [2, 2], "num_samples": 0}, ValueError, "num_samples"),
        ({"sizes": [2, 2], "labels": "argmax"}, ValueError, "labels"),
        ({"sizes": [2, 2], "damping": -1.0}, ValueError, "damping"),
        ({"sizes": [2, 2], "init": "xavier"}, ValueError, "init"),
        ({"sizes": [2, 2], "activation": "gelu"}, ValueError, "activation"),
        ({"sizes": [2, 2], "X": [[1.0, 2.0, 3.0]]}, ValueError, "X"),
        ({"sizes": [2, 2], "y": [5, 0, 1, 0, 1, 0, 1, 0]}, ValueError, "y"),
        ({"preset": "nope"}, ValueError, "preset"),
        ("nope", ValueError, "preset"),
        (3, TypeError, "spec"),
    ],
)
def test_bad_specs(spec, err, match):
    with pytest.raises(err, match=match):
        make_fixture(spec)


def test_custom_activation_cannot_be_stored():
    import autograd.numpy as anp

    net = minifim.MLP([2, 3, 2], activation=lambda z: anp.tanh(z) ** 3)
    with pytest.raises(ValueError, match="custom callable"):
        build_fixture(net, net.init(0), np.ones((2, 2)), np.array([0, 1]))


# --- trajectories ------------------------------------------------------------------------------------
def test_parse_trajectory():
    assert parse_trajectory("sgd:steps=3,lr=0.5") == ("sgd", 3, {"lr": 0.5})
    assert parse_trajectory("adam:steps=2,lr=1e-2,b1=0.8") == ("adam", 2, {"lr": 0.01, "b1": 0.8})
    for bad in ("sgd", "sgd:lr=0.1", "sgd:steps=0", "sgd:steps=1.5", "sgd:steps=2,lr"):
        with pytest.raises(ValueError, match="trajectory"):
            parse_trajectory(bad)


def test_sgd_trajectory_is_gradient_descent(tmp_path):
    fx = make_fixture("linear-regression", trajectory="sgd:steps=4,lr=0.3")
    tr = fx.trajectory()
    assert tr["theta"].shape == (5, fx.P) and tr["loss"].shape == (5,)
    assert np.array_equal(tr["theta"][0], fx.theta)
    for t in range(4):
        g = minifim.gradient(fx.net, tr["theta"][t], fx.X, fx.y)
        assert_close(tr["gradient"][t], g, 1e-14)
        assert_close(tr["theta"][t + 1], tr["theta"][t] - 0.3 * g, 1e-15)
    assert np.all(np.diff(tr["loss"]) < 0)  # a convex quadratic with a small step
    m = fx.manifest["trajectory"]
    assert m["optimiser"] == "sgd" and m["steps"] == 4 and m["options"] == {"lr": 0.3}
    assert fx.manifest["command"].endswith("--trajectory sgd:steps=4,lr=0.3")
    back = load_fixture(fx.save(tmp_path / "t.npz"))
    assert np.array_equal(back["trajectory/theta"], tr["theta"])


def test_adam_trajectory_stores_state_with_a_step_axis():
    fx = make_fixture("logistic-regression", trajectory="adam:steps=3,lr=0.01")
    tr = fx.trajectory()
    assert tr["state/m"].shape == tr["state/v"].shape == (4, fx.P)
    assert np.array_equal(tr["state/m"][0], np.zeros(fx.P))
    assert np.array_equal(tr["state/theta"], tr["theta"])
    g0 = tr["gradient"][0]
    assert_close(tr["state/m"][1], 0.1 * g0, 1e-15)


def test_ngd_trajectory_solves_the_damped_fisher_system():
    fx = make_fixture("categorical-tanh", trajectory="ngd:steps=2,lr=0.5,damping=0.1")
    tr = fx.trajectory()
    for t in range(2):
        th = tr["theta"][t]
        F = minifim.true_fisher(fx.net, th, fx.X)
        direction = np.linalg.solve(F + 0.1 * np.eye(fx.P), tr["gradient"][t])
        tol = solve_rtol(damped_cond(F, 0.1), fx.P)
        check_close(tr["state/direction"][t + 1], direction, tol, "direction")
        # theta - lr d: the direction's error at the scale of lr d, plus one rounding
        step = 0.5 * np.linalg.norm(direction) / np.linalg.norm(th)
        check_close(
            tr["theta"][t + 1], th - 0.5 * direction, tol * step + identity_tol(ulps=2), "theta"
        )
    assert fx.manifest["arrays"]["trajectory/state/direction"]["param_axes"] == [1]


def test_kfac_trajectory_gets_the_net_and_stores_per_layer_state(tmp_path):
    fx = make_fixture("logistic-regression", trajectory="kfac:steps=2,lr=0.2,damping=0.01")
    tr = fx.trajectory()
    assert tr["state/A0"].shape == (3, 5, 5) and tr["state/G0"].shape == (3, 1, 1)
    back = load_fixture(fx.save(tmp_path / "k.npz"))
    assert np.array_equal(back["trajectory/state/A0"], tr["state/A0"])
    with pytest.raises(ValueError, match="do not pass it"):
        make_fixture("logistic-regression", trajectory="kfac:steps=2,net=1")


def test_bad_trajectories():
    with pytest.raises(ValueError, match="unknown optimiser"):
        make_fixture("logistic-regression", trajectory="lbfgs:steps=2")
    with pytest.raises(ValueError, match="bad options"):
        make_fixture("logistic-regression", trajectory="sgd:steps=2,colour=3")


# --- the loader's errors --------------------------------------------------------------------------
def _write(path, manifest, arrays):
    buf = io.BytesIO()
    payload = {"manifest": np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)}
    payload.update(arrays)
    np.savez(buf, **payload)
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture
def small():
    fx = get("logistic-regression")
    return json.loads(json.dumps(fx.manifest)), dict(fx.arrays)


def test_load_rejects_newer_schema(tmp_path, small):
    manifest, arrays = small
    manifest["schema_version"] = SCHEMA_VERSION + 1
    manifest["minifim_version"] = "9.0"
    with pytest.raises(FixtureError, match=rf"schema {SCHEMA_VERSION + 1} by minifim 9.0.*Upgrade"):
        load_fixture(_write(tmp_path / "f.npz", manifest, arrays))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m, a: a.pop("true_fisher"), r"missing array\(s\) \['true_fisher'\]"),
        (lambda m, a: a.__setitem__("extra", np.ones(2)), "unexpected array"),
        (lambda m, a: a.__setitem__("gradient", a["gradient"].astype(np.float32)), "dtype float32"),
        (
            lambda m, a: (
                a.__setitem__("hessian", np.ones((4, 4))),
                m["arrays"]["hessian"].__setitem__("shape", [4, 4]),
            ),
            "shape",
        ),
        (lambda m, a: a.__setitem__("ngd_step", np.full(5, np.nan)), "NaN"),
        (lambda m, a: m.__setitem__("format", "other"), "not a minifim fixture"),
        (lambda m, a: m.__setitem__("schema_version", "1"), "schema_version"),
        (lambda m, a: m.__setitem__("model", {"sizes": [4, 1], "activation": "gelu"}), "model"),
        (lambda m, a: (m["arrays"].pop("loss"), a.pop("loss")), r"required array\(s\) \['loss'\]"),
        (lambda m, a: m.__setitem__("num_samples", 0), "num_samples"),
        (lambda m, a: m.__setitem__("arrays", [1]), "'arrays' entry"),
        (lambda m, a: m.__setitem__("trajectory", {"steps": "3"}), "trajectory"),
        (lambda m, a: m.pop("damping"), "no 'damping' entry"),
    ],
)
def test_load_rejects_odd_files(tmp_path, small, edit, match):
    manifest, arrays = small
    edit(manifest, arrays)
    with pytest.raises(FixtureError, match=match):
        load_fixture(_write(tmp_path / "f.npz", manifest, arrays))


def test_load_rejects_non_fixtures(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_fixture(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", a=np.ones(2))
    with pytest.raises(FixtureError, match="no 'manifest' entry"):
        load_fixture(tmp_path / "plain.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(FixtureError, match="cannot be read"):
        load_fixture(tmp_path / "junk.npz")
    np.save(tmp_path / "single.npy", np.ones(3))
    with pytest.raises(FixtureError, match="single .npy"):
        load_fixture(tmp_path / "single.npy")
    with zipfile.ZipFile(tmp_path / "badjson.npz", "w") as z:
        buf = io.BytesIO()
        np.save(buf, np.frombuffer(b"{not json", dtype=np.uint8))
        z.writestr("manifest.npy", buf.getvalue())
    with pytest.raises(FixtureError, match="not valid UTF-8 JSON"):
        load_fixture(tmp_path / "badjson.npz")
    with pytest.raises(TypeError, match="path"):
        load_fixture(3)


def test_load_refuses_pickled_arrays(tmp_path, small):
    manifest, arrays = small
    arrays["X"] = np.array([{"a": 1}], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, manifest=np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8), **arrays)
    (tmp_path / "p.npz").write_bytes(buf.getvalue())
    with pytest.raises(FixtureError, match="without pickle"):
        load_fixture(tmp_path / "p.npz")


def test_save_checks_its_arguments(tmp_path):
    with pytest.raises(TypeError, match="Fixture"):
        save_fixture({"a": 1}, tmp_path / "x.npz")
    with pytest.raises(ValueError, match=".npz"):
        save_fixture(get("logistic-regression"), tmp_path / "x.npy")
    bad = Fixture(get("logistic-regression").manifest, {"manifest": np.ones(2)})
    with pytest.raises(ValueError, match="reserved"):
        save_fixture(bad, tmp_path / "x.npz")


# --- the registry of trajectory optimisers ----------------------------------------------------
def test_trajectory_optimisers_are_an_explicit_registry():
    assert sorted(fixtures.TRAJECTORY_OPTIMISERS) == sorted(
        ["sgd", "momentum", "adam", "ngd", "gauss_newton", "kfac"]
    )
    for name in ("GaussianPrior", "fit_map", "train", "Optimizer", "Batch", "objective"):
        with pytest.raises(ValueError, match=r"unknown optimiser .*expected one of \['adam'"):
            make_fixture("logistic-regression", trajectory=f"{name}:steps=1,precision=1.0")


# --- a spec name is a file name ------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["../x", "/tmp/x", "a/b", "a\\b", "", ".", "..", "x\x00y", "tab\tname", "x" * 201]
)
def test_spec_name_cannot_escape_the_output_folder(name):
    with pytest.raises(ValueError, match=r"spec\['name'\]: expected a file name"):
        make_fixture({"preset": "logistic-regression", "name": name})
    fx = get("logistic-regression")
    with pytest.raises(ValueError, match="name: expected a file name"):
        build_fixture(fx.net, fx.theta, fx.X, fx.y, name=name)


def test_ordinary_spec_names_are_kept():
    for name in ("mine", "my-fixture_2.v1", "Café 3"):
        assert make_fixture({"preset": "logistic-regression", "name": name}).name == name


# --- one caller cannot change the fixture another caller loads --------------------------------
def test_loaded_fixture_is_fresh_per_call_and_read_only(tmp_path):
    path = get("logistic-regression").save(tmp_path / "f.npz")
    first = load_fixture(path)
    F = first["true_fisher"].copy()
    with pytest.raises(ValueError, match="read-only"):
        first.arrays["true_fisher"][:] = 0.0
    with pytest.raises(ValueError):
        first.arrays["true_fisher"].flags.writeable = True
    first.arrays["true_fisher"] = np.zeros_like(F)  # item assignment: this copy only
    first.manifest["arrays"]["true_fisher"]["reduction_power"] = 0
    first.manifest["model"]["sizes"] = [1, 1]
    second = load_fixture(path)
    assert second is not first and second.arrays is not first.arrays
    assert np.array_equal(second["true_fisher"], F)
    assert second.manifest["arrays"]["true_fisher"]["reduction_power"] == 1
    assert second.net.sizes == (4, 1)
    assert second["gradient"].base is first["gradient"].base  # the file is read once
    assert not minifim.check(path, {"true_fisher": np.zeros_like(F)}).passed


# --- fixtures are untrusted input -------------------------------------------------------------------
def _npy_header(shape, descr="<f8", fortran=False, version=(1, 0)):
    from numpy.lib import format as npf

    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}
    (npf.write_array_header_1_0 if version == (1, 0) else npf.write_array_header_2_0)(buf, header)
    return buf.getvalue()


def _rezip(src, dst, replace=None, add=None, drop=(), compression=zipfile.ZIP_STORED):
    """Copy the members of ``src`` to ``dst``; ``replace``/``add``: name -> bytes or a
    callable writing to a file handle (to stream large members without holding them)."""
    replace, add = dict(replace or {}), dict(add or {})
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        items = [(i.filename, None) for i in zin.infolist()] + list(add.items())
        for name, content in items:
            if name in drop:
                continue
            content = replace.get(name, content)
            if content is None:
                content = zin.read(name)
            if callable(content):
                with zout.open(name, "w", force_zip64=True) as fh:
                    content(fh)
            else:
                zout.writestr(name, content)
    return dst


def _zeros_writer(header, nbytes):
    def write(fh):
        fh.write(header)
        chunk = bytes(1 << 20)
        left = nbytes
        while left > 0:
            fh.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)

    return write


@pytest.fixture
def saved(tmp_path):
    return get("logistic-regression").save(tmp_path / "good.npz")


def _bomb(saved, tmp_path, nbytes=64 * 2**20):
    """A deflated member that decompresses to ``nbytes`` of zeros under a header claiming
    the matching shape: a ~65 KB file that asks for 64 MiB."""
    P = int(nbytes // 8)
    return _rezip(
        saved,
        tmp_path / "bomb.npz",
        compression=zipfile.ZIP_DEFLATED,
        replace={"true_fisher.npy": _zeros_writer(_npy_header((P,)), nbytes)},
    )


def test_zip_bomb_is_refused_before_decompressing(saved, tmp_path):
    import tracemalloc

    bomb = _bomb(saved, tmp_path)
    assert bomb.stat().st_size < 200_000
    load_fixture(saved)  # warm the imports
    tracemalloc.start()
    try:
        with pytest.raises(
            FixtureError,
            match=r"'true_fisher.npy' declares 67108992 bytes.*"
            r"expected at most",
        ):
            load_fixture(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # before: the full 64 MiB


def test_lying_npy_header_is_refused_before_allocating(saved, tmp_path):
    import tracemalloc

    # a stored member whose header claims 10^8 float64 (800 MB) with no data behind it
    liar = _rezip(saved, tmp_path / "liar.npz", replace={"true_fisher.npy": _npy_header((10**8,))})
    huge = _rezip(
        saved, tmp_path / "huge.npz", replace={"true_fisher.npy": _npy_header((10**15, 10**15))}
    )
    tracemalloc.start()
    try:
        for path in (liar, huge):
            with pytest.raises(FixtureError, match=r"'true_fisher.npy' has shape \(1"):
                load_fixture(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # before: 763 MiB / MemoryError


def test_manifest_bomb_is_refused(saved, tmp_path):
    nbytes = 32 * 2**20
    bomb = _rezip(
        saved,
        tmp_path / "mbomb.npz",
        compression=zipfile.ZIP_DEFLATED,
        replace={"manifest.npy": _zeros_writer(_npy_header((nbytes,), "|u1"), nbytes)},
    )
    with pytest.raises(FixtureError, match="manifest.*over the limit"):
        load_fixture(bomb)


def _manifest_edit(saved, tmp_path, edit):
    with np.load(saved) as z:
        manifest = json.loads(bytes(z["manifest"]).decode())
    edit(manifest)
    data = json.dumps(manifest).encode()
    return _rezip(
        saved,
        tmp_path / "edited.npz",
        replace={"manifest.npy": _npy_header((len(data),), "|u1") + data},
    )


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m.__setitem__("num_samples", "10"), "num_samples"),
        (lambda m: m.__setitem__("num_samples", -10), "num_samples"),
        (lambda m: m.__setitem__("num_samples", True), "num_samples"),
        (lambda m: m.__setitem__("num_params", "5"), "num_params"),
        (lambda m: m.__setitem__("num_params", 6), "num_params"),
        (lambda m: m["model"].__setitem__("sizes", [4, -1]), "model"),
        (lambda m: m["model"].__setitem__("sizes", ["4", "1"]), "model"),
        (lambda m: m["model"].__setitem__("colour", 1), "model"),
        (lambda m: m.__setitem__("model", [4, 1]), "model"),
        (lambda m: m.__setitem__("damping", "0.001"), "damping"),
        (lambda m: m.__setitem__("damping", float("nan")), "damping"),
        (lambda m: m.__setitem__("damping", -1.0), "damping"),
        (lambda m: m.pop("name"), "no 'name' entry"),
        (lambda m: m.pop("parameter_order"), "no 'parameter_order' entry"),
        (lambda m: m.__setitem__("parameter_order", ["b0", "W0"]), "parameter_order"),
        (lambda m: m.__setitem__("name", 3), "'name'"),
        (lambda m: m.__setitem__("reduction", "sum"), "reduction"),
        (lambda m: m.__setitem__("colour", "blue"), r"unknown manifest entr.*'colour'"),
        (lambda m: m["arrays"]["gradient"].__setitem__("shape", ["5"]), "gradient.*shape"),
        (lambda m: m["arrays"]["gradient"].__setitem__("shape", [-5]), "gradient.*shape"),
        (lambda m: m["arrays"]["gradient"].__setitem__("param_axes", [3]), "gradient.*param_axes"),
        (lambda m: m["arrays"]["gradient"].__setitem__("param_axes", "0"), "gradient.*param_axes"),
        (
            lambda m: m["arrays"]["true_fisher"].__setitem__("reduction_power", 0),
            "true_fisher.*reduction_power",
        ),
        (
            lambda m: m["arrays"]["true_fisher"].__setitem__("reduction_power", "1"),
            "true_fisher.*reduction_power",
        ),
        (
            lambda m: m["arrays"]["true_fisher"].__setitem__("description", 3),
            "true_fisher.*description",
        ),
        (
            lambda m: m["arrays"]["true_fisher"].__setitem__("colour", 3),
            r"true_fisher.*unknown key",
        ),
        (lambda m: m["arrays"].__setitem__("extra", {"shape": [1]}), "extra"),
        (lambda m: m.__setitem__("trajectory", {"steps": 10**12, "state_keys": []}), "trajectory"),
    ],
)
def test_manifest_with_wrong_types_is_refused(saved, tmp_path, edit, match):
    with pytest.raises(FixtureError, match=match):
        load_fixture(_manifest_edit(saved, tmp_path, edit))


def test_manifest_of_a_huge_model_is_refused_by_the_memory_budget(saved, tmp_path):
    import tracemalloc

    def edit(m):  # a consistent manifest of P = 40001 (dense arrays of 12 GiB each)
        m["model"]["sizes"] = [40000, 1]
        m["num_params"] = 40001
        shapes = fixtures.expected_shapes(minifim.MLP(**m["model"]), m["num_samples"])
        for key, shape in shapes.items():
            m["arrays"][key]["shape"] = list(shape)

    path = _manifest_edit(saved, tmp_path, edit)
    tracemalloc.start()
    try:
        with minifim.memory_limit(2**30):
            with pytest.raises(FixtureError, match=r"GiB.*over the memory budget"):
                load_fixture(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20


def test_damaged_files_are_refused(saved, tmp_path):
    data = saved.read_bytes()
    cases = {
        "empty.npz": (b"", "empty"),
        "truncated.npz": (data[: len(data) // 2], "not a zip archive"),
        "text.npz": (b"hello, not a fixture\n" * 20, "not a zip archive"),
        "tail.npz": (data[:-10], "not a zip archive"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(FixtureError, match=match):
            load_fixture(tmp_path / name)
    # a flipped data byte: the zip CRC catches it
    with zipfile.ZipFile(saved) as z:
        info = z.getinfo("true_fisher.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    flipped = bytearray(data)
    flipped[start] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    with pytest.raises(FixtureError, match="true_fisher.npy.*(CRC|corrupt)"):
        load_fixture(tmp_path / "flipped.npz")


@pytest.mark.filterwarnings("ignore:Duplicate name")  # the test writes one on purpose
def test_odd_members_are_refused(saved, tmp_path):
    fisher = get("logistic-regression")["true_fisher"]
    cases = [
        (dict(add={"junk.npy": _npy_header((10**8,))}), "unexpected array.*junk"),
        (dict(add={"notes.txt": b"hi"}), "notes.txt.*not an .npy"),
        (dict(add={"true_fisher.npy": b""}), "twice"),
        (dict(drop=("true_fisher.npy",)), r"missing array\(s\) \['true_fisher'\]"),
        (dict(replace={"true_fisher.npy": _npy_header((5, 5), "<f4") + bytes(100)}), "float32"),
        (
            dict(
                replace={
                    "true_fisher.npy": _npy_header((5, 5), ">f8") + fisher.astype(">f8").tobytes()
                }
            ),
            ">f8",
        ),
        (dict(replace={"true_fisher.npy": _npy_header((5, 5)) + bytes(100)}), "truncated"),
        (dict(replace={"true_fisher.npy": _npy_header((5, 5)) + bytes(400)}), "trailing"),
        (dict(replace={"true_fisher.npy": b"\x93NUMPY\x09\x00" + bytes(20)}), "version"),
        (dict(replace={"true_fisher.npy": b"not npy at all"}), "not an .npy"),
        (dict(replace={"true_fisher.npy": _npy_header((5, 5), "|O")}), "pickle|dtype"),
    ]
    for kwargs, match in cases:
        path = _rezip(saved, tmp_path / "odd.npz", **kwargs)
        with pytest.raises(FixtureError, match=match):
            load_fixture(path)


def test_fortran_order_and_deflate_are_read(saved, tmp_path):
    fx = get("logistic-regression")
    F = fx["true_fisher"]
    path = _rezip(
        saved,
        tmp_path / "f.npz",
        compression=zipfile.ZIP_DEFLATED,
        replace={
            "true_fisher.npy": _npy_header((5, 5), fortran=True)
            + np.asfortranarray(F).tobytes(order="F")
        },
    )
    back = load_fixture(path)
    assert np.array_equal(back["true_fisher"], F) and not back["true_fisher"].flags.writeable
    for key in fx.keys():
        assert np.array_equal(back[key], fx[key]), key


# --- the weight-sharing presets (Sequential models, issue 14) ------------------------------------
def _enumerated_fisher_positions(net, theta, X):
    """``E_y[s s^T]`` by brute force over EVERY joint label of a sample (``C^R`` label
    sequences for ``R`` positions), with autograd scores: no assumption that positions are
    independent or that cross-position terms vanish."""
    import itertools

    N, C = X.shape[0], net.output_dim
    pos = net.output_shape[:-1]
    R = int(np.prod(pos, dtype=int))
    labels = np.array(list(itertools.product(range(C), repeat=R))).reshape((-1,) + pos)
    K = labels.shape[0]
    Xk = np.repeat(X, K, axis=0)
    yk = np.tile(labels, (N,) + (1,) * len(pos))
    S = minifim.per_sample_scores(net, theta, Xk, yk, backend="autograd").reshape(N, K, -1)
    w = np.exp(net.log_prob(theta, Xk, yk)).reshape(N, K)  # p(y | x_n), summing to 1
    assert_close(w.sum(axis=1), np.ones(N), 1e-13)
    return np.einsum("nk,nkp,nkq->pq", w, S, S) / N


def test_weight_sharing_presets_are_what_they_say():
    cnn = get("cnn-digits").net
    convs = [layer for layer in cnn.layers if type(layer).__name__ == "Conv2d"]
    assert cnn.input_shape == (1, 8, 8) and len(convs) == 2
    assert convs[0].stride == (2, 2) and convs[0].padding == (1, 1)
    assert convs[1].dilation == (2, 2)
    assert [type(layer).__name__ for layer in cnn.layers][-2:] == ["Flatten", "Linear"]
    expand, reduce = get("sequence-expand"), get("sequence-reduce")
    assert expand.net.output_shape == (4, 3) and expand["y"].shape == (expand.N, 4)
    assert reduce.net.output_shape == (3,) and reduce["y"].shape == (reduce.N,)
    assert any(type(layer).__name__ == "Mean" for layer in reduce.net.layers)
    for name in LAYERED:
        fx = get(name)
        assert any(k.startswith("kfac-reduce/") for k in fx.keys()), name
        arch = fx.manifest["architecture"]
        assert [a["layer"] for a in arch] == fx.manifest["model"]["layers"]
        assert arch[0]["in_shape"] == list(fx.net.input_shape)
        assert arch[-1]["out_shape"] == list(fx.net.output_shape)
        shared = [a["positions"] for a in arch if "positions" in a]
        assert max(shared) > 1 and len(shared) == fx.net.num_layers
    # conv positions: 8x8 -> 4x4 (stride 2, padding 1), 4x4 -> 2x2 (dilation 2), R = 16, 4, 1
    assert [
        a["positions"] for a in get("cnn-digits").manifest["architecture"] if "positions" in a
    ] == [16, 4, 1]
    # no weight sharing: the MLP presets store the expand factors only, as in schema 1
    assert not any(k.startswith("kfac-reduce/") for k in get("categorical-tanh").keys())


@pytest.mark.parametrize("name", LAYERED)
def test_weight_sharing_presets_contents(name):
    fx = get(name)
    net, th, X, y, N = fx.net, fx.theta, fx.X, fx.y, fx.N
    assert np.array_equal(net.from_state_dict(fx.state_dict()), th)
    assert X.shape == (N, *net.input_shape) and fx["outputs"].shape == (N, *net.output_shape)
    assert_close(fx["outputs"], net.forward(th, X), 1e-15)
    assert float(fx["loss"]) == pytest.approx(-np.mean(net.log_prob(th, X, y)), rel=1e-13)
    assert_close(fx["scores"], minifim.per_sample_scores(net, th, X, y, backend="autograd"), 1e-12)
    assert_close(fx["jacobians"], minifim.output_jacobians(net, th, X, backend="autograd"), 1e-12)
    assert_close(fx["gradient"], -fx["scores"].mean(axis=0), 1e-12)
    F = fx["true_fisher"]
    assert_close(F, _enumerated_fisher_positions(net, th, X), 1e-12)
    C, P = net.output_dim, net.num_params
    J = fx["jacobians"].reshape(N, -1, C, P)
    Lam = fx["output_fisher"].reshape(N, -1, C, C)
    assert_close(F, np.einsum("nrcp,nrcd,nrdq->pq", J, Lam, J) / N, 1e-12)  # sum over positions
    assert_close(fx["ggn"], F, 1e-12)
    S = fx["scores"]
    assert_close(fx["empirical_fisher"], S.T @ S / N, 1e-13)
    assert_close(fx["fisher_diagonal"], np.diag(F), 1e-13)
    assert_close(fx["empirical_fisher_diagonal"], np.diag(fx["empirical_fisher"]), 1e-13)
    eig = fx["fisher_eigenvalues"]
    assert np.all(np.diff(eig) <= 0) and eig.sum() == pytest.approx(np.trace(F), rel=1e-12)
    residual = (F + fx.damping * np.eye(P)) @ fx["ngd_step"] - fx["gradient"]
    assert np.linalg.norm(residual) <= 1e-12 * (np.linalg.norm(F) + fx.damping) * np.linalg.norm(
        fx["ngd_step"]
    )


@pytest.mark.parametrize("name", LAYERED)
def test_weight_sharing_hessian_against_finite_differences(name):
    fx = get(name)
    net, th, X, y, P = fx.net, fx.theta, fx.X, fx.y, fx.P
    h = 1e-5
    cols = np.random.default_rng(0).choice(P, size=min(P, 40), replace=False)
    H = fx["hessian"]
    for i in cols:
        e = np.zeros(P)
        e[i] = h
        fd = (minifim.gradient(net, th + e, X, y) - minifim.gradient(net, th - e, X, y)) / (2 * h)
        assert_close(H[:, i], fd, 1e-7, what=f"column {i}")


@pytest.mark.parametrize("name", LAYERED)
def test_weight_sharing_kfac_factors_against_definitions(name):
    """A from the unfolded inputs (positions / im2col patches): expand averages over samples and
    positions, reduce averages over positions first. G: the reduce factor of a layer with bias is
    EXACTLY the bias-bias block of the Fisher (the bias gradient is the position-summed seed), for
    the true and the empirical Fisher; at the last layer of the expand preset the expand G is the
    sum over positions of the output-space Fisher (true) or of the output scores' outer products
    (empirical)."""
    fx = get(name)
    net, N = fx.net, fx.N
    acts = forward_cache(net, fx.theta, fx.X).acts  # (N, R_l, in_l)
    for l, (a, (_, bs)) in enumerate(zip(acts, net.layer_slices)):
        R = a.shape[1]
        at = np.concatenate([a, np.ones(a.shape[:2] + (1,))], axis=2)
        abar = np.concatenate([a.mean(axis=1), np.ones((N, 1))], axis=1)
        assert_close(
            fx.kfac("true", "folded", "expand").A[l],
            np.einsum("nri,nrj->ij", at, at) / (N * R),
            1e-13,
        )
        assert_close(fx.kfac("true", "folded", "reduce").A[l], abar.T @ abar / N, 1e-13)
        assert_close(
            fx.kfac("true", "separate", "reduce").A[l], abar[:, :-1].T @ abar[:, :-1] / N, 1e-13
        )
        for fisher, M in (("true", fx["true_fisher"]), ("empirical", fx["empirical_fisher"])):
            reduce = fx.kfac(fisher, "folded", "reduce")
            assert_close(reduce.G[l], M[bs, bs], 1e-12, what=f"reduce G{l} {fisher}")
            assert np.array_equal(reduce.G[l], fx.kfac(fisher, "separate", "reduce").G[l])
            if R == 1:  # no sharing at this layer: the flavours coincide
                assert_close(fx.kfac(fisher, "folded", "expand").G[l], reduce.G[l], 1e-13)
    if name == "sequence-expand":
        f, L = fx["outputs"], net.num_layers - 1
        C = net.output_dim
        lam = fx["output_fisher"].reshape(-1, C, C)
        assert_close(fx.kfac("true", "folded", "expand").G[L], lam.sum(axis=0) / N, 1e-13)
        g = net.output_score(f, fx.y).reshape(-1, C)
        assert_close(fx.kfac("empirical", "folded", "expand").G[L], g.T @ g / N, 1e-13)
        # positions do not mix in this model and the model's labels are independent across
        # positions: the true Fisher's cross-position terms vanish, so expand G == reduce G
        for l in range(net.num_layers):
            assert_close(
                fx.kfac("true", "folded", "expand").G[l],
                fx.kfac("true", "folded", "reduce").G[l],
                1e-12,
            )
    for approx in ("expand", "reduce"):
        for fisher in ("true", "empirical"):
            y = fx.y if fisher == "empirical" else None
            ref = minifim.kfac(net, fx.theta, fx.X, y, fisher, kfac_approx=approx)
            assert_close(fx.kfac(fisher, "folded", approx).to_dense(), ref.to_dense(), 1e-15)


def test_weight_sharing_fixture_round_trip_and_check(tmp_path):
    from minifim.oracle.cli import main

    fx = get("cnn-digits")
    path = fx.save(tmp_path / "cnn.npz")
    back = load_fixture(path)
    assert back.manifest == fx.manifest and back.net.config() == fx.net.config()
    for k in fx.keys():
        assert np.array_equal(back[k], fx[k]), k
    cand = tmp_path / "cand.npz"
    np.savez(
        cand,
        F=fx["true_fisher"],
        grad=fx["gradient"],
        scores=fx["scores"],
        **{"0.weight": fx["state_dict/0.weight"]},
    )
    out = io.StringIO()
    assert main(["check", str(path), str(cand)], out=out) == 0, out.getvalue()
    assert "PASSED" in out.getvalue()
    bad = tmp_path / "bad.npz"
    np.savez(bad, F=fx["empirical_fisher"], grad=fx["gradient"] * fx.N)
    out = io.StringIO()
    assert main(["check", str(path), str(bad)], out=out) == 1
    assert "sum instead of mean" in out.getvalue()
    result = minifim.check(fx, {"true_fisher": fx["true_fisher"]})
    assert result.passed


def test_weight_sharing_presets_are_deterministic(tmp_path):
    save_fixture(make_fixture("sequence-reduce"), tmp_path / "a.npz")
    save_fixture(make_fixture("sequence-reduce"), tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_layered_spec_and_overrides():
    fx = make_fixture({"preset": "sequence-expand", "num_samples": 2, "name": "short"})
    assert fx.N == 2 and fx.name == "short" and fx.net.output_shape == (4, 3)
    spec = {
        "layers": [{"type": "Linear", "in_features": 2, "out_features": 2, "bias": False}],
        "input_shape": [3, 2],
        "likelihood": "gaussian",
        "num_samples": 2,
    }
    fx = make_fixture(spec)
    assert fx.P == 4 and "state_dict/0.bias" not in fx and fx["y"].shape == (2, 3, 2)
    assert fx.manifest["parameter_order"] == ["W0"]
    assert fx.param_label(3) == "W0[1, 1]"
    assert get("cnn-digits").param_label(9 * 2 + 3 * 1 + 2) == "W0[2, 0, 1, 2]"
    assert get("cnn-digits").param_label(27) == "b0[0]"
    mlp = make_fixture({"preset": "sequence-reduce", "sizes": [3, 2], "activation": "identity"})
    assert isinstance(mlp.net, minifim.MLP) and mlp.net.sizes == (3, 2)
    for bad, match in (
        ({"layers": spec["layers"], "sizes": [2, 2]}, "either 'sizes'"),
        ({"sizes": [2, 2], "input_shape": [2]}, "input_shape"),
        ({**spec, "activation": "relu"}, "activation"),
        ({**spec, "input_shape": [3, 5]}, "input_shape"),
        (
            {
                **spec,
                "layers": [
                    {"type": "Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 9}
                ],
                "input_shape": [1, 4, 4],
            },
            "kernel_size",
        ),
    ):
        with pytest.raises(ValueError, match=match):
            make_fixture(bad)


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda m: m["model"]["layers"][0].__setitem__("kernel_size", [2, 2]),
            "architecture|shape",
        ),
        (lambda m: m["architecture"][0].__setitem__("positions", 3), "architecture"),
        (lambda m: m.__setitem__("schema_version", 1), "schema 1 does not know"),
        (lambda m: m["model"]["layers"].__setitem__(0, {"type": "Exec", "cmd": "rm"}), "model"),
        (lambda m: m["model"].__setitem__("input_shape", [1, -8, 8]), "model"),
        (
            lambda m: m["model"].__setitem__(
                "layers",
                [
                    {
                        "type": "Conv2d",
                        "in_channels": 1,
                        "out_channels": 1,
                        "kernel_size": 3,
                        "stride": 1,
                        "padding": 5000,
                        "dilation": 1,
                        "bias": True,
                    }
                ],
            ),
            "just to be built",
        ),
    ],
)
def test_layered_manifest_is_validated_before_building(tmp_path, edit, match):
    """An untrusted layered manifest: the layer configs, their shapes and positions, and the
    memory the model needs just to be built (the im2col index of a convolution) are checked
    before anything large is allocated."""
    import tracemalloc

    saved = get("cnn-digits").save(tmp_path / "cnn.npz")
    path = _manifest_edit(saved, tmp_path, edit)
    tracemalloc.start()
    try:
        with minifim.memory_limit(2**30):
            with pytest.raises(FixtureError, match=match):
                load_fixture(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20
