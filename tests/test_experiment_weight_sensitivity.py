"""experiments/weight_sensitivity.py: the centred network, mean imputation, and the verdict's
criterion where the Fisher order beats the baselines and where it does not."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import minifim

PATH = Path(__file__).resolve().parents[1] / "experiments" / "weight_sensitivity.py"


@pytest.fixture(scope="module")
def ws():
    spec = importlib.util.spec_from_file_location("experiment_weight_sensitivity", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_centred_network_is_the_same_function_and_gate_is_mean_imputation(ws):
    rng = np.random.default_rng(0)
    net = minifim.MLP([4, 5, 3], activation="tanh", likelihood="categorical")
    theta = net.init(0)
    X = rng.standard_normal((20, 4)) + 2.0
    mu = X.mean(axis=0)
    thc = ws.centred(net, theta, mu)
    np.testing.assert_allclose(net.forward(thc, X - mu), net.forward(theta, X), atol=1e-12)
    # closing the gate on centred input j = replacing x_j by mu_j
    ws_, _ = net.layer_slices[0]
    gated = thc.copy()
    W = gated[ws_].reshape(net.shapes[0])
    W[:, 1] = 0.0
    gated[ws_] = W.ravel()
    Xi = X.copy()
    Xi[:, 1] = mu[1]
    np.testing.assert_allclose(net.forward(gated, X - mu), net.forward(theta, Xi), atol=1e-12)


def test_gate_score_predicts_the_kl_of_a_small_gate_change(ws):
    # second route: KL(p_gate=1 || p_gate=1-eps) / eps^2 -> F_gate / 2 (mean over inputs)
    rng = np.random.default_rng(1)
    net = minifim.MLP([3, 6, 3], activation="tanh", likelihood="categorical")
    theta = net.init(1)
    X = rng.standard_normal((30, 3))
    F = minifim.sensitivity(net, theta, X, per="input", aggregate="gate")
    eps, j = 1e-4, 2
    ws_, _ = net.layer_slices[0]
    th = theta.copy()
    W = th[ws_].reshape(net.shapes[0])
    W[:, j] *= 1 - eps
    th[ws_] = W.ravel()
    logp = net.forward(theta, X) - np.log(np.exp(net.forward(theta, X)).sum(1, keepdims=True))
    logq = net.forward(th, X) - np.log(np.exp(net.forward(th, X)).sum(1, keepdims=True))
    kl = np.mean(np.sum(np.exp(logp) * (logp - logq), axis=1))
    assert kl / eps**2 == pytest.approx(F[j] / 2, rel=1e-3)


def test_criterion_holds_when_the_fisher_order_keeps_accuracy(ws):
    rng = np.random.default_rng(2)
    base = 0.6 + 0.02 * rng.standard_normal(6)
    status, pos, _ = ws.sensitivity_criterion(
        base + 0.05 + 0.005 * rng.standard_normal(6),
        {"least variance first": base, "random order (mean)": base - 0.1},
    )
    assert status == "agrees" and set(pos.values()) == {"inside"}


def test_criterion_fails_when_a_curvature_free_baseline_wins(ws):
    rng = np.random.default_rng(3)
    base = 0.6 + 0.02 * rng.standard_normal(6)
    status, pos, _ = ws.sensitivity_criterion(
        base - 0.03 + 0.005 * rng.standard_normal(6),
        {"least variance first": base, "random order (mean)": base - 0.1},
    )
    assert status == "disagrees" and pos["least variance first"] == "outside"
