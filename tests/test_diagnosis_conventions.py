"""The oracle knows the field's conventions (issue 16).

- The explanation matrix: for every variant x factor x layout x batch size the explanation
  can name, a candidate built with minifim's own routes (``curvature_matrix``,
  ``ewc.task_curvature(batch_size=B)``, ``from_minifim_layout``, ``per_sample_scores``) on
  every fixture preset is explained exactly, with the alternatives where two fit (``C = 2``,
  ``N = 8``, ``sigma^2 = 1/2``, canonical links).
- Loss conventions: a candidate in each PyTorch / curvlinops convention (factors written out
  by hand here) passes ``check(loss=...)``, and fails without it naming the flag that fixes it.
- Monte-Carlo made exact: the stored labels reproduce the stored MC Fisher and MC K-FAC (a
  second route: the mean of empirical Fishers / K-FACs over the label draws), the band never
  accuses minifim's own MC Fisher or MC K-FAC more often than its nominal rate (every preset,
  the saturated ones included), and a 5% scale error is flagged at ``k = 8``, ``N = 100``.
- K-FAC compared whole: a scale split ``A * s``, ``G / s`` passes and is reported as such.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from minifim.fixtures import PRESETS, load_fixture, make_fixture, save_fixture

import minifim
from minifim.geometry.moments import mc_error_moments, mc_kfac_error_moments, output_outcomes
from minifim.oracle import check, diagnose, from_minifim_layout, layout_permutation
from minifim.oracle.diagnosis import kfac_band, scale_statistic_sd
from minifim.oracle.fixtures.schema import MC_SAMPLES, mc_generator

from .test_oracle import get  # one cache of the preset fixtures for both modules
from .tolerances import identity_tol, product_rtol


def sigma_of(fx):
    return float(fx.manifest["model"]["sigma"])


def main_of(d):
    ex = d.explanation
    return {k: ex[k] for k in ("variant", "factors", "sign", "batch_size", "layout")}


def all_of(d):
    """The main explanation and every alternative, as comparable tuples."""
    ex = d.explanation
    rows = [main_of(d)] + [
        {k: a[k] for k in ("variant", "factors", "sign", "batch_size", "layout")}
        for a in ex["alternatives"]
    ]
    return [
        (r["variant"], tuple(sorted(r["factors"].items())), r["sign"], r["batch_size"], r["layout"])
        for r in rows
    ]


def ex(variant, factors=None, sign=1, batch=None, layout="pytorch"):
    return {
        "variant": variant,
        "factors": dict(factors or {}),
        "sign": sign,
        "batch_size": batch,
        "layout": layout,
    }


def as_tuple(e):
    return (
        e["variant"],
        tuple(sorted(e["factors"].items())),
        e["sign"],
        e["batch_size"],
        e["layout"],
    )


def drop_unit(fx, factors):
    """Symbols whose value is 1 in the fixture are omitted from an explanation."""
    values = {"N": fx.N, "N-1": fx.N - 1, "C": fx.net.output_dim, "2": 2}
    if fx.net.likelihood.name == "gaussian":
        values["sigma"] = sigma_of(fx)
    return {s: e for s, e in factors.items() if values.get(s, 1) != 1}


def assert_explained(fx, d, expected, *, main=True):
    """``expected`` is the main explanation (``main=True``) or one of the equally good ones."""
    expected = {**expected, "factors": drop_unit(fx, expected["factors"])}
    if main:
        assert main_of(d) == expected, (d.verdict, d.explanation)
    else:
        assert as_tuple(expected) in all_of(d), (expected, d.explanation)
    assert d.explanation["relative_distance"] is not None
    assert d.explanation["relative_distance"] <= 1e-12


LAYOUT_NAMES = ("pytorch", "in-out", "jax")


# --- the explanation matrix ----------------------------------------------------------------
@pytest.mark.parametrize("name", list(PRESETS))
def test_explanation_matrix_dense(name):
    fx = get(name)
    net, theta, X, y, N = fx.net, fx.theta, fx.X, fx.y, fx.N
    F = minifim.curvature_matrix(net, theta, X, None, "true")
    d = diagnose(fx, F)
    assert d.ok and main_of(d) == ex("true")
    assert ("ggn", (), 1, None, "pytorch") in all_of(d)  # canonical link: either name is right
    # a sum over samples; in every layout
    for layout in LAYOUT_NAMES if fx.P < 200 else ("jax",):  # P = 324: one layout is enough
        if layout != "pytorch" and np.array_equal(layout_permutation(net, layout), np.arange(fx.P)):
            continue  # this layout is minifim's own order for this net
        c = from_minifim_layout(net, N * F, [0, 1], layout)
        d = diagnose(fx, c)
        assert not d.ok
        assert_explained(fx, d, ex("true", {"N": 1}, layout=layout))
        fix = {"reduction": "sum"} | ({"layout": layout} if layout != "pytorch" else {})
        assert d.fix == fix
        assert diagnose(fx, c, layout=layout, reduction="sum").ok
    # a mini-batched square of the mean gradient (B = 3: ragged for N = 4, 8, 10)
    c = minifim.task_curvature(net, theta, X, y, "full", "square_of_mean_gradient", batch_size=3)
    assert_explained(fx, diagnose(fx, c), ex("square-of-mean-gradient", batch=3))
    # Bessel's empirical Fisher, per-sample gradients of the mean loss, argmax labels
    EF = minifim.empirical_fisher(net, theta, X, y)
    d = diagnose(fx, EF * N / (N - 1), key="empirical_fisher")
    assert_explained(fx, d, ex("empirical", {"N": 1, "N-1": -1}))
    assert "Bessel" in d.verdict
    if net.likelihood.name != "gaussian":  # the Gaussian's argmax Fisher is 0
        d = diagnose(fx, minifim.curvature_matrix(net, theta, X, None, "argmax"))
        assert_explained(fx, d, ex("argmax"))
    # per-sample gradients of the mean loss: -1/N times the scores
    S = minifim.per_sample_scores(net, theta, X, y)
    assert_explained(fx, diagnose(fx, -S / N), ex("scores", {"N": -1}, sign=-1))
    # K-FAC with another scale split between A and G agrees when compared whole
    A0, G0 = fx["kfac/true/separate/A0"], fx["kfac/true/separate/G0"]
    res = check(fx, {"kfac/true/separate/A0": 3 * A0, "kfac/true/separate/G0": G0 / 3})
    assert res.passed and math.isclose(res.comparisons[0].scale_split, 3, rel_tol=1e-12)
    # the Hessian, against its own key and against the Fisher
    d = diagnose(fx, fx["hessian"], key="hessian")
    assert d.ok and main_of(d)["variant"] in ("hessian", "true", "ggn")


@pytest.mark.parametrize(
    "name", [n for n in PRESETS if n not in ("wide-rank-deficient", "deep-narrow")]
)
def test_explanation_matrix_minibatches_and_diagonals(name):
    fx = get(name)
    net, theta, X, y, N = fx.net, fx.theta, fx.X, fx.y, fx.N
    for B in range(2, N + 1):  # divisors of N and ragged last batches
        c = minifim.task_curvature(
            net, theta, X, y, "full", "square_of_mean_gradient", batch_size=B
        )
        d = diagnose(fx, c)
        assert_explained(fx, d, ex("square-of-mean-gradient", batch=B))
        assert f"B = {B}" in d.verdict or B == N
    full = minifim.task_curvature(net, theta, X, y, "full", "square_of_mean_gradient")
    assert main_of(diagnose(fx, full))["batch_size"] == N  # B = N is g g^T
    d = diagnose(
        fx,
        minifim.task_curvature(net, theta, X, y, "full", "square_of_mean_gradient", batch_size=1),
    )
    assert main_of(d)["variant"] == "empirical"  # B = 1 is the empirical Fisher
    # diagonals
    diag = minifim.fisher_diagonal(net, theta, X)
    assert diagnose(fx, diag).ok
    assert_explained(fx, diagnose(fx, N * diag), ex("true", {"N": 1}))
    c = minifim.task_curvature(net, theta, X, y, "diag", "square_of_mean_gradient", batch_size=2)
    assert_explained(fx, diagnose(fx, c), ex("square-of-mean-gradient", batch=2))
    # scores of the mean loss: -1/N times the scores
    S = minifim.per_sample_scores(net, theta, X, y)
    d = diagnose(fx, -S / N)
    assert_explained(fx, d, ex("scores", {"N": -1}, sign=-1))
    assert diagnose(fx, S).ok and d.kind == "scores"


@pytest.mark.parametrize("name", ["gaussian-softplus", "linear-regression"])
def test_explanation_matrix_mse_conventions(name):
    fx = get(name)
    net, theta, X, y, N = fx.net, fx.theta, fx.X, fx.y, fx.N
    s2, C = sigma_of(fx) ** 2, net.output_dim
    G = minifim.ggn(net, theta, X)
    EF = minifim.empirical_fisher(net, theta, X, y)
    S = minifim.per_sample_scores(net, theta, X, y)
    cases = [
        ("ggn", 2 * s2 / C * G, ex("ggn", {"2": 1, "sigma": 2, "C": -1}), "mse-mean"),
        ("ggn", N * 2 * s2 * G, ex("ggn", {"N": 1, "2": 1, "sigma": 2}), "mse-sum"),
        (
            "empirical_fisher",
            (2 * s2 / C) ** 2 * EF,
            ex("empirical", {"2": 2, "sigma": 4, "C": -2}),
            "mse-mean",
        ),
        ("scores", -(2 * s2 / C) * S, ex("scores", {"2": 1, "sigma": 2, "C": -1}, -1), "mse-mean"),
    ]
    values = {"2": 2.0, "sigma": sigma_of(fx), "C": C, "N": N}
    for key, c, expected, loss in cases:
        d = diagnose(fx, c, key=key)
        value = math.prod(values[s] ** e for s, e in expected["factors"].items())
        if math.isclose(value, 1) and key != "scores":
            assert d.ok  # sigma = 1, C = 2: the convention's factor is 1
            continue
        assert_explained(fx, d, expected, main=False)
        assert diagnose(fx, c, key=key, loss=loss).ok
        if not d.ok:
            assert d.fix.get("loss") in (loss, None) and d.fix
    if name == "gaussian-softplus":  # N = 8, C = 2, sigma = 0.3: the verdict names the product
        d = diagnose(fx, N * 2 * s2 * G, key="ggn")
        assert "sigma^2 = 1.44" in d.verdict and d.fix == {"loss": "mse-sum"}


def test_coincidences_list_every_explanation():
    fx = get("gaussian-softplus")  # C = 2: 2 sigma^2 / C = sigma^2
    F = fx["true_fisher"]
    d = diagnose(fx, 0.09 * F)
    assert main_of(d) == ex("true", {"sigma": 2})
    alts = all_of(d)
    for v in ("true", "ggn"):
        assert (v, (("2", 1), ("C", -1), ("sigma", 2)), 1, None, "pytorch") in alts
    assert ("ggn", (("sigma", 2),), 1, None, "pytorch") in alts
    assert d.fix == {"loss": "mse-mean"}
    # N = 8 = 2^3 = C^3
    d = diagnose(fx, 8 * F)
    for f in ((("N", 1),), (("2", 3),), (("C", 3),)):
        assert ("true", f, 1, None, "pytorch") in all_of(d)
    # every listed alternative reproduces the candidate: same value of the factor
    values = {"N": 8.0, "N-1": 7.0, "C": 2.0, "2": 2.0, "sigma": 0.3}
    for a in d.explanation["alternatives"]:
        assert math.isclose(
            math.prod(values[s] ** e for s, e in a["factors"].items()), 8.0, rel_tol=1e-12
        )
    # sigma^2 = 1/2: the MSE's 2 sigma^2 GGN is the Fisher itself
    fh = make_fixture({"preset": "linear-regression", "sigma": math.sqrt(0.5)})
    d = diagnose(fh, 2 * 0.5 * fh["ggn"], key="ggn")
    assert d.ok and ("ggn", (("2", 1), ("sigma", 2)), 1, None, "pytorch") in all_of(d)


def test_nothing_is_claimed_without_a_match():
    fx = get("categorical-tanh")
    F = fx["true_fisher"]
    noise = np.random.default_rng(0).standard_normal(F.shape) * 1e-3 * np.abs(F).max()
    d = diagnose(fx, F + noise + noise.T)
    assert not d.ok and d.explanation["variant"] is None and d.explanation["alternatives"] == []
    assert "nothing is claimed" in d.verdict
    # one ulp-scale perturbation per entry is still the reference (the match criterion)
    tiny = F * (1 + product_rtol(fx.P) * np.sign(noise))
    assert diagnose(fx, tiny).ok


def test_float32_candidates_match_at_their_precision():
    fx = get("categorical-tanh")
    d = diagnose(fx, (fx.N * fx["true_fisher"]).astype(np.float32))
    assert main_of(d) == ex("true", {"N": 1}) and "float32" in d.note


# --- loss conventions ------------------------------------------------------------------------
#: per-sample loss factor s and reduction of each convention, written out from PyTorch's docs
def loss_factor(fx, loss):
    C, s2 = fx.net.output_dim, sigma_of(fx) ** 2
    return {
        "nll": (1.0, "mean"),
        "mse-mean": (2 * s2 / C, "mean"),
        "mse-sum": (2 * s2, "sum"),
        "ce-mean": (1.0, "mean"),
        "ce-sum": (1.0, "sum"),
        "bce-mean": (1.0 / C, "mean"),
        "bce-sum": (1.0, "sum"),
    }[loss]


def converted_candidate(fx, loss):
    s, red = loss_factor(fx, loss)
    r = fx.N if red == "sum" else 1.0
    out = {
        "true_fisher": s * r * fx["true_fisher"],
        "ggn": s * r * fx["ggn"],
        "hessian": s * r * fx["hessian"],
        "fisher_diagonal": s * r * fx["fisher_diagonal"],
        "empirical_fisher": s * s * r * fx["empirical_fisher"],
        "empirical_fisher_diagonal": s * s * r * fx["empirical_fisher_diagonal"],
        "gradient": s * r * fx["gradient"],
        "scores": (-s if loss != "nll" else 1.0) * fx["scores"],
        "kfac/true/folded/G0": s * r * fx["kfac/true/folded/G0"],
        "kfac/empirical/separate/G0": s * s * r * fx["kfac/empirical/separate/G0"],
        "kfac/true/folded/A0": fx["kfac/true/folded/A0"],
    }
    f, Y, N = fx["outputs"], fx["y"], fx.N
    lik = fx.net.likelihood.name
    if lik == "gaussian" and loss.startswith("mse"):
        sq = np.sum((Y - f) ** 2)
        out["loss"] = sq / (N * f.shape[1]) if red == "mean" else sq
    elif lik == "categorical":
        lse = np.log(np.sum(np.exp(f - f.max(axis=1, keepdims=True)), axis=1)) + f.max(axis=1)
        nll = lse - f[np.arange(N), Y.astype(int)]
        out["loss"] = nll.mean() if red == "mean" else nll.sum()
    elif lik == "bernoulli":
        bce = np.logaddexp(0, f) - Y * f  # BCEWithLogitsLoss per entry
        out["loss"] = bce.mean() if red == "mean" else bce.sum()
    return out


VALID = {
    "gaussian": ("mse-mean", "mse-sum"),
    "categorical": ("ce-mean", "ce-sum"),
    "bernoulli": ("bce-mean", "bce-sum"),
}


@pytest.mark.parametrize(
    "name", ["gaussian-softplus", "linear-regression", "categorical-tanh", "bernoulli-sigmoid"]
)
def test_loss_conventions_pass_as_correct(name):
    fx = get(name)
    for loss in VALID[fx.net.likelihood.name]:
        cand = converted_candidate(fx, loss)
        res = check(fx, cand, loss=loss)
        assert res.passed, res.table()
        plain = check(fx, cand)
        for c in plain.comparisons:
            if c.passed:
                continue
            assert c.fix, (loss, c.name)  # the options under which it passes
            kwargs = {k: v for k, v in c.fix.items()}
            again = check(fx, {c.candidate_name: cand[c.candidate_name]}, **kwargs)
            assert again.passed
    with pytest.raises(ValueError, match="likelihood"):
        check(fx, {}, loss="ce-mean" if fx.net.likelihood.name != "categorical" else "mse-sum")
    with pytest.raises(ValueError, match="reduction"):
        check(fx, {}, loss=VALID[fx.net.likelihood.name][0], reduction="sum")


def test_comparisons_name_the_count_and_the_symmetry():
    fx = get("categorical-tanh")
    F = fx["true_fisher"].copy()
    F[0, 1] += 1.0  # one entry: the candidate is not symmetric
    c = check(fx, {"F": F}).comparisons[0]
    assert c.num_failed == 1 and c.error_symmetric is False and c.num_entries == fx.P**2
    assert "1 of 4489 entries fail" in c.message() and "NOT symmetric" in c.message()
    assert c.failed_by_parameter == {"W0": 1} and "by parameter: W0 1" in c.message()
    g = fx["gradient"].copy()
    g[-3:] += 1.0  # the three biases of the last layer
    assert check(fx, {"grad": g}).comparisons[0].failed_by_parameter == {"b1": 3}
    c = check(fx, {"F": 1.01 * fx["true_fisher"]}).comparisons[0]
    assert c.error_symmetric is True and c.num_failed == np.count_nonzero(fx["true_fisher"])


# --- Monte-Carlo made exact ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["categorical-tanh", "bernoulli-sigmoid", "gaussian-softplus"])
def test_stored_labels_reproduce_the_stored_mc_fisher_and_kfac(name):
    fx = get(name)
    net, theta, X = fx.net, fx.theta, fx.X
    labels = fx.mc_labels()
    assert labels.shape[0] == MC_SAMPLES == fx.mc_samples
    # second route: the mean of the empirical Fishers / K-FACs at each label draw
    MC = np.mean([minifim.empirical_fisher(net, theta, X, lab) for lab in labels], axis=0)
    scale = np.abs(fx["mc/fisher"]).max()
    tol = product_rtol(fx.P + fx.N * MC_SAMPLES) * scale
    assert np.abs(MC - fx["mc/fisher"]).max() <= tol
    for bias in ("folded", "separate"):
        ks = [minifim.kfac(net, theta, X, lab, "empirical", bias=bias) for lab in labels]
        mc = fx.kfac("mc", bias)
        for l in range(net.num_layers):
            G = np.mean([k.G[l] for k in ks], axis=0)
            assert np.abs(G - mc.G[l]).max() <= product_rtol(fx.N * MC_SAMPLES) * np.abs(G).max()
            assert np.array_equal(mc.A[l], fx.kfac("true", bias).A[l])
        dense = fx.kfac("true", bias).to_dense()
        assert np.abs(dense - fx[f"kfac_dense/true/{bias}"]).max() <= identity_tol(
            np.abs(dense).max()
        )
    # the labels come from the documented generator: minifim.mc_fisher draws the same
    seed = fx.manifest["mc"]["seed"][1]
    again = minifim.mc_fisher(net, theta, X, MC_SAMPLES, rng=mc_generator(seed))
    assert np.abs(again - fx["mc/fisher"]).max() <= identity_tol(scale)
    d = diagnose(fx, again, n_samples=MC_SAMPLES)
    assert d.ok and "stored labels" in d.verdict


def test_linear_regression_dense_kfac_is_the_fisher():
    fx = get("linear-regression")  # K-FAC is exact for a linear-Gaussian model
    F = fx["true_fisher"]
    assert np.abs(fx["kfac_dense/true/folded"] - F).max() <= product_rtol(fx.N) * np.abs(F).max()


@pytest.mark.parametrize("version", [1, 2])
def test_older_schema_files_still_load(tmp_path, version):
    fx = get("logistic-regression")
    manifest = dict(fx.manifest)
    manifest["schema_version"] = version
    for key in ("mc", "conventions"):
        manifest.pop(key)
    new = ("mc/", "kfac_dense/")
    manifest["arrays"] = {k: v for k, v in manifest["arrays"].items() if not k.startswith(new)}
    arrays = {k: v for k, v in fx.arrays.items() if not k.startswith(new)}
    path = save_fixture(minifim.fixtures.Fixture(manifest, arrays), tmp_path / "old.npz")
    old = load_fixture(path)
    assert old.mc_samples is None and "mc/fisher" not in old
    assert diagnose(old, old["true_fisher"]).ok


def _sampled_mc_fishers(fx, k, seeds):
    """Monte-Carlo Fishers of ``k`` labels per input: outcomes drawn by their probabilities
    (for discrete likelihoods the outcomes are the labels: the distribution of mc_fisher)."""
    w, U = output_outcomes(fx.net, fx.theta, fx.X)
    N, O, P = U.shape
    rng = np.random.default_rng(seeds)
    cum = np.cumsum(w, axis=1)
    for _ in range(seeds):
        u = rng.random((N, k))
        idx = np.minimum((u[:, :, None] > cum[:, None, :]).sum(axis=2), O - 1)
        G = U[np.arange(N)[:, None], idx].reshape(N * k, P)
        yield G.T @ G / (N * k)


Z = 3.0
NOMINAL = 1 - 1 / (1 + Z**2) - 1 / Z**2  # Cantelli for |F_mc - F|^2, Chebyshev for the scale


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_band_does_not_accuse_minifims_own_mc_fisher(name):
    fx = get(name)
    F = fx["true_fisher"]
    ff = float(np.vdot(F, F))
    discrete = fx.net.likelihood.name != "gaussian"
    for k in (1, 2, 8):
        mean, var = mc_error_moments(fx.net, fx.theta, fx.X, k)
        sd, sd_a = math.sqrt(var), scale_statistic_sd(fx, k)
        if discrete:
            draws = list(_sampled_mc_fishers(fx, k, 200 if fx.P < 100 else 60))
        else:
            draws = [minifim.mc_fisher(fx.net, fx.theta, fx.X, k, rng=s) for s in range(40)]
        accepted = [
            (np.sum((c - F) ** 2) - mean) / sd <= Z and abs(np.vdot(c, F) / ff - 1) <= Z * sd_a
            for c in draws
        ]
        assert np.mean(accepted) >= NOMINAL, (k, np.mean(accepted))
        for seed in range(1):  # diagnose agrees on minifim's own mc_fisher
            c = minifim.mc_fisher(fx.net, fx.theta, fx.X, k, rng=seed)
            d = diagnose(fx, c, n_samples=k)
            z_ok = d.monte_carlo["within_band"]
            assert d.ok == z_ok or d.ok  # never accused when the band accepts
            assert d.explanation["k"] == k and isinstance(d.explanation["consistent"], bool)


@pytest.mark.parametrize("name", ["saturated-categorical", "saturated-bernoulli"])
def test_saturated_mc_and_argmax_cannot_be_told_apart(name):
    fx = get(name)
    for seed in range(10):
        c = minifim.mc_fisher(fx.net, fx.theta, fx.X, 1, rng=seed)
        d = diagnose(fx, c, n_samples=1)
        assert d.ok and d.explanation["consistent"] and main_of(d)["variant"] == "mc"
        assert "cannot be told apart" in d.verdict and d.monte_carlo["indistinguishable"]


def test_power_a_five_percent_scale_error_is_flagged():
    fx = make_fixture({"preset": "categorical-tanh", "num_samples": 100})
    flagged = 0
    for seed in range(5):
        c = minifim.mc_fisher(fx.net, fx.theta, fx.X, 8, rng=seed)
        assert diagnose(fx, c, n_samples=8).ok
        d = diagnose(fx, 1.05 * c, n_samples=8)
        flagged += not d.ok
        assert d.monte_carlo["z_scale"] > Z
    assert flagged == 5


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_band_does_not_accuse_minifims_own_mc_kfac(name):
    fx = get(name)
    if fx.net.weight_sharing or fx.net.has_positions:
        with pytest.raises(ValueError, match="weight sharing"):
            mc_kfac_error_moments(fx.net, fx.theta, fx.X, 1)
        return
    bias = ("folded", "separate")[list(PRESETS).index(name) % 2]
    true = fx.kfac("true", bias)
    # |K_mc - K|^2 = sum_l c_l |dG_l|^2 (checked against the dense matrices below)
    c = [float(np.vdot(A, A)) + (bias == "separate") for A in true.A]
    for k in (1, 2, 8):
        mean, var = mc_kfac_error_moments(fx.net, fx.theta, fx.X, k, bias=bias)
        z = []
        for s in range(20):
            f = minifim.kfac(fx.net, fx.theta, fx.X, None, "mc", bias=bias, n_samples=k, rng=s)
            D = sum(cl * np.sum((G - G0) ** 2) for cl, G, G0 in zip(c, f.G, true.G))
            z.append((D - mean) / math.sqrt(var))
        assert np.mean(np.array(z) <= Z) >= 1 - 1 / (1 + Z**2)
    f = minifim.kfac(fx.net, fx.theta, fx.X, None, "mc", bias=bias, n_samples=2, rng=0)
    band = kfac_band(fx, f, 2, bias=bias)
    cand = {
        f"kfac/true/{bias}/{w}{l}": (f.A if w == "A" else f.G)[l]
        for l in range(len(f.A))
        for w in "AG"
    }
    res = check(fx, cand, mc_samples=2)
    assert res.passed == band["consistent"]


def test_mc_kfac_moments_against_simulation():
    fx = get("categorical-tanh")
    K = fx.kfac("true", "folded").to_dense()
    D = [
        np.sum(
            (minifim.kfac(fx.net, fx.theta, fx.X, None, "mc", n_samples=2, rng=s).to_dense() - K)
            ** 2
        )
        for s in range(200)
    ]
    mean, var = mc_kfac_error_moments(fx.net, fx.theta, fx.X, 2)
    assert abs(np.mean(D) - mean) <= 4 * math.sqrt(var / 200)
    assert abs(np.var(D) / var - 1) <= 0.5  # the variance too (a loose, 200-draw check)


# --- K-FAC compared whole --------------------------------------------------------------------
def test_kfac_scale_split_is_compared_whole():
    fx = get("categorical-tanh")
    s = math.sqrt(2)
    A0, G0 = fx["kfac/true/folded/A0"], fx["kfac/true/folded/G0"]
    res = check(fx, {"kfac/true/folded/A0": s * A0, "kfac/true/folded/G0": G0 / s})
    assert res.passed
    assert all(math.isclose(c.scale_split, s, rel_tol=1e-12) for c in res.comparisons)
    assert "compared whole" in res.comparisons[0].message()
    res = check(fx, {"kfac/true/folded/A0": s * A0, "kfac/true/folded/G0": G0})
    assert not res.passed and res.comparisons[0].scale_split is None
    # the dense K-FAC key takes any split
    dense = fx.kfac("true", "separate").to_dense()
    assert check(fx, {"kfac_dense/true/separate": dense}).passed


# --- the factor search itself -------------------------------------------------------------------
def test_factor_text_and_table():
    from minifim.oracle.explanation import FactorTable, format_factors, symbol_values

    values = symbol_values(8, 2, 0.3)
    assert values == {"N": 8.0, "N-1": 7.0, "C": 2.0, "2": 2.0, "sigma": 0.3}
    assert symbol_values(2, 1, None) == {"N": 2.0, "2": 2.0}  # N - 1 = 1, C = 1, no sigma
    assert format_factors({"N": 1, "2": 1, "sigma": 2}, values) == "N * 2 * sigma^2 = 1.44"
    assert format_factors({"N": 1, "N-1": -1}) == "N / (N-1)"
    assert format_factors({}) == "1"
    table = FactorTable.build(values)
    assert len(table.logs) == 9**5
    near = table.near(math.log(8) - 1e-12, math.log(8) + 1e-12)
    assert near[0] == {"N": 1} and {"2": 3} in near and {"C": 3} in near


@given(
    st.dictionaries(
        st.sampled_from(["N", "N-1", "C", "2", "sigma"]), st.integers(-2, 2), max_size=3
    ),
    st.sampled_from([1, -1]),
)
@settings(max_examples=15, deadline=None)
def test_any_factorisation_is_found(factors, sign):
    fx = get("gaussian-softplus")
    from minifim.oracle.explanation import explanation_key, factor_value

    factors = {s: e for s, e in factors.items() if e}
    values = {"N": 8.0, "N-1": 7.0, "C": 2.0, "2": 2.0, "sigma": 0.3}
    d = diagnose(fx, sign * factor_value(factors, values) * fx["true_fisher"])
    main = d.explanation
    assert main["sign"] == sign and main["variant"] in ("true", "ggn")
    assert math.isclose(
        factor_value(main["factors"], values), factor_value(factors, values), rel_tol=1e-12
    )
    assert explanation_key(main["factors"]) <= explanation_key(factors)
    total = sum(abs(e) for e in factors.values())
    if total <= max(
        explanation_key(main["factors"])[0] + 3, 2 * explanation_key(main["factors"])[0]
    ):
        assert ("true", tuple(sorted(factors.items())), sign, None, "pytorch") in all_of(d)
    value = factor_value(factors, values)
    assert d.ok == (sign == 1 and math.isclose(value, 1, rel_tol=1e-12))


def test_kfac_factors_are_explained():
    fx = get("categorical-tanh")
    d = diagnose(fx, fx.N * fx["kfac/empirical/folded/G1"], key="kfac/true/folded/G1")
    assert not d.ok and main_of(d) == ex("empirical", {"N": 1})
    assert "compare the pair whole" in d.verdict
    d = diagnose(fx, fx["mc/kfac/separate/G0"], key="kfac/true/separate/G0")
    assert main_of(d) == ex("mc")
    assert diagnose(fx, fx["kfac/true/separate/A0"], key="kfac/true/separate/A0").ok
    with pytest.raises(ValueError, match="K-FAC factor"):
        diagnose(fx, np.eye(2), key="kfac/true/folded/G9")


def test_check_does_not_fail_a_sampled_fisher_the_band_accepts():
    fx = get("categorical-tanh")
    c = minifim.mc_fisher(fx.net, fx.theta, fx.X, 4, rng=0)
    cand = {"F": c, "EF": fx["empirical_fisher"]}
    res = check(fx, cand, diagnose_keys=["F", "EF"], mc_samples=4)
    assert res.passed and "sampling band" in res.comparisons[0].note
    assert not check(fx, {"F": 1.5 * c}, diagnose_keys=["F"], mc_samples=4).passed
    assert not check(fx, {"F": c}).passed  # without k it is not the exact Fisher
