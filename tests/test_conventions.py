"""``minifim.core.conventions`` (the reduction and the curvature inputs, below every curvature
module) and ``MLP.apply`` (the unvalidated forward pass)."""

import numpy as np
import pytest

import minifim
from minifim.core.conventions import REDUCTIONS, prepare_inputs, reduction_scale

from .cases import CASES


def test_reduction_scale():
    assert REDUCTIONS == ("mean", "sum")
    assert reduction_scale("mean", 4) == 0.25 and reduction_scale("sum", 4) == 1.0
    with pytest.raises(ValueError, match="reduction"):
        reduction_scale("avg", 4)
    with pytest.raises(ValueError, match="X: expected at least one sample"):
        reduction_scale("mean", 0)


def test_reduction_scale_is_the_ratio_of_the_two_reductions():
    case = CASES[0]
    mean = minifim.true_fisher(case.net, case.theta, case.X)
    total = minifim.true_fisher(case.net, case.theta, case.X, reduction="sum")
    N = case.X.shape[0]
    # The two reductions round differently (the scale is folded into the factor, or into the
    # SYRK's alpha): each entry is a sum of N K products, so forward error analysis bounds the
    # gap by c N K eps (|G|^T |G|)_ij <= c N K eps sqrt(F_ii F_jj) (Cauchy-Schwarz on the
    # nonnegative diagonal); elementwise rtol would fail on entries that cancel.
    K = case.net.output_dim
    d = np.sqrt(np.diag(mean))
    bound = 4 * N * K * np.finfo(float).eps * np.outer(d, d)
    gap = np.abs(total * reduction_scale("mean", N) - mean)
    assert np.all(gap <= bound), float(np.max(gap / np.where(bound > 0, bound, 1)))
    # and the bound is not vacuous: it is far below the entries of the matrix
    assert np.max(bound) < 1e-12 * np.max(np.abs(mean))


def test_prepare_inputs_draws_the_monte_carlo_labels_once():
    case = CASES[0]
    net = case.net
    _, _, _, ys = prepare_inputs(net, case.theta, case.X, None, "mc", 3, 7)
    ref = net.likelihood.sample(net.forward(case.theta, case.X), np.random.default_rng(7), 3)
    np.testing.assert_array_equal(ys, ref)
    theta, X, y, none = prepare_inputs(net, case.theta, case.X, case.y, "empirical", 1, None)
    assert none is None and y.shape[0] == X.shape[0] and theta.dtype == np.float64
    with pytest.raises(ValueError, match="y: the empirical Fisher needs"):
        prepare_inputs(net, case.theta, case.X, None, "empirical", 1, None)
    with pytest.raises(TypeError, match="net: expected a minifim.MLP"):
        prepare_inputs([3, 4], case.theta, case.X, None, "true", 1, None)


def test_apply_is_the_unvalidated_forward():
    for case in CASES[:3]:
        np.testing.assert_array_equal(
            case.net.apply(case.theta, case.X), case.net.forward(case.theta, case.X)
        )
    assert isinstance(CASES[0].net, minifim.MLP)
