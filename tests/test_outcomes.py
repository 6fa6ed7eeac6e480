"""``Likelihood.outcomes``: the label distribution as weighted outcomes. The weights are
probabilities, the mean score vanishes, ``sum_o w_o g_o g_o^T`` is the output Fisher, and in
parameter space ``sum_o w_o s_o s_o^T`` is the true Fisher computed by minifim's own route."""

import numpy as np
import pytest

import minifim
from minifim.geometry.moments import output_outcomes

from .cases import make_case
from .tolerances import product_rtol

LIKS = {
    "categorical": minifim.Categorical(),
    "bernoulli": minifim.Bernoulli(),
    "gaussian": minifim.Gaussian(0.6),
}
F0 = np.array([[0.3, -1.2, 2.0], [40.0, -40.0, 0.5], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize("name", LIKS)
def test_weights_are_probabilities_and_outcomes_are_targets(name):
    lik = LIKS[name]
    w, Y = lik.outcomes(F0)
    N, C = F0.shape
    assert w.shape == (N, lik.num_outcomes(C)) == Y.shape[:2]
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=product_rtol(w.shape[1]))
    for o in range(w.shape[1]):  # every outcome is a valid target array
        lik.check_targets(Y[:, o], N, C)
    assert {"categorical": C, "bernoulli": 2**C, "gaussian": 5**C}[name] == w.shape[1]


@pytest.mark.parametrize("name", LIKS)
def test_mean_score_is_zero_and_second_moment_is_the_output_fisher(name):
    lik = LIKS[name]
    w, Y = lik.outcomes(F0)
    g = np.stack([lik.grad_log_prob(F0, Y[:, o]) for o in range(w.shape[1])], axis=1)
    scale = np.max(np.abs(g))
    mean = np.einsum("no,noc->nc", w, g)
    assert np.max(np.abs(mean)) <= product_rtol(w.shape[1], c=2) * scale
    Lam = np.einsum("no,noc,nod->ncd", w, g, g)
    ref = lik.fisher_outputs(F0)  # closed form: diag(p) - p p^T, diag(p (1 - p)), I / sigma^2
    assert np.max(np.abs(Lam - ref)) <= product_rtol(w.shape[1], c=4) * scale**2


def test_gaussian_rule_is_exact_for_the_fourth_moment():
    """E[(y - f)^4] = 3 sigma^4 and E[(y - f)^6] = 15 sigma^6 per output (degree <= 9)."""
    lik = LIKS["gaussian"]
    w, Y = lik.outcomes(F0[:1])
    r = Y[0] - F0[0]
    for power, moment in ((4, 3.0), (6, 15.0)):
        np.testing.assert_allclose(w[0] @ r**power, moment * lik.sigma**power, rtol=1e-12)


@pytest.mark.parametrize("lik", ["categorical", "bernoulli", "gaussian"])
def test_parameter_space_fisher_is_the_weighted_sum_of_outcome_scores(lik):
    """F = 1/N sum_n sum_o w_no s_no s_no^T, with s_no the scores at the outcome labels
    (per_sample_scores) against minifim.true_fisher (the factor route). Entries are bounded by
    the largest diagonal entry (Cauchy-Schwarz), hence the scale of the product bound."""
    case = make_case((3, 4, 2), "tanh", lik, N=4, seed=3)
    net, theta, X = case.net, case.theta, case.X
    w, Y = net.likelihood.outcomes(net.forward(theta, X))
    N = X.shape[0]
    F = np.zeros((net.num_params, net.num_params))
    for o in range(w.shape[1]):
        S = minifim.per_sample_scores(net, theta, X, Y[:, o])
        F += (S * w[:, o, None]).T @ S / N
    ref = minifim.true_fisher(net, theta, X)
    assert np.max(np.abs(F - ref)) <= product_rtol(w.shape[1] * N + net.num_params, c=4) * np.max(
        np.abs(ref)
    )
    # the oracle's moments use the same outcomes
    w2, U = output_outcomes(net, theta, X)
    np.testing.assert_array_equal(w2, w)
    F2 = np.einsum("no,nop,noq->pq", w2, U, U) / N
    assert np.max(np.abs(F2 - ref)) <= product_rtol(w.shape[1] * N + net.num_params, c=4) * np.max(
        np.abs(ref)
    )


def test_num_outcomes_validates_C():
    with pytest.raises(ValueError, match="C"):
        LIKS["bernoulli"].num_outcomes(0)
