"""The named case groups of tests/cases.py have the property that defines them.

A test that takes its cases from a group relies on that property (K-FAC exact, one sample,
saturated outputs, a singular Fisher); these tests check it directly, with a second route
where the property is an identity.
"""

import numpy as np
import pytest

import minifim

from .cases import (
    CASES,
    KFAC_EXACT_CASES,
    RANK_DEFICIENT_CASES,
    SATURATED_CASES,
    SINGLE_SAMPLE_CASES,
    assert_close,
    enumerated_fisher,
    log_odds,
)
from .tolerances import curvature_rtol

EPS = np.finfo(float).eps


def ids(cases):
    return [c.name for c in cases]


def block_diag_part(net, M):
    """``M`` restricted to its per-layer diagonal blocks ``(P_l, P_l)``."""
    out = np.zeros_like(M)
    for sl in net.layer_param_slices():
        out[sl, sl] = M[sl, sl]
    return out


def test_groups_are_not_empty_and_names_are_unique():
    groups = [SINGLE_SAMPLE_CASES, KFAC_EXACT_CASES, SATURATED_CASES, RANK_DEFICIENT_CASES]
    assert all(groups)
    names = [c.name for c in CASES + SINGLE_SAMPLE_CASES + SATURATED_CASES]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("case", SINGLE_SAMPLE_CASES, ids=ids(SINGLE_SAMPLE_CASES))
def test_single_sample_cases_have_one_sample_and_rank_at_most_C(case):
    assert case.N == 1 and case.X.shape == (1, case.net.input_dim)
    F = minifim.true_fisher(case.net, case.theta, case.X)
    assert np.linalg.matrix_rank(F) <= case.net.output_dim < case.P


@pytest.mark.parametrize("case", KFAC_EXACT_CASES, ids=ids(KFAC_EXACT_CASES))
def test_kfac_exact_cases_kfac_equals_the_dense_fisher_blocks(case):
    """Folded K-FAC of the true Fisher == the per-layer blocks of the dense true Fisher."""
    F = minifim.true_fisher(case.net, case.theta, case.X)
    K = minifim.kfac(case.net, case.theta, case.X, case.y, "true")
    assert_close(K.to_dense(), block_diag_part(case.net, F), curvature_rtol(case), case.name)


@pytest.mark.parametrize("case", SATURATED_CASES, ids=ids(SATURATED_CASES))
def test_saturated_cases_have_log_odds_50_and_an_outcome_below_eps(case):
    f = case.net.forward(case.theta, case.X)
    assert log_odds(case.net.likelihood, f) == pytest.approx(50.0, rel=1e-12)
    lik = case.net.likelihood
    # the log-probability of the least likely outcome, without forming 1 - p
    if lik.name == "categorical":
        logp = f - np.logaddexp.reduce(f, axis=1, keepdims=True)
    else:
        logp = -np.logaddexp(0.0, np.abs(f))  # log sigmoid(-|f|), the rarer 0/1 outcome
    assert np.exp(np.min(logp)) < EPS


@pytest.mark.parametrize("case", SATURATED_CASES, ids=ids(SATURATED_CASES))
def test_saturated_cases_true_fisher_equals_enumeration(case):
    """Second route at saturation: the sum over every outcome of ``p(y) s(y) s(y)^T``."""
    F = minifim.true_fisher(case.net, case.theta, case.X)
    M = enumerated_fisher(case.net, case.theta, case.X, method="backprop")
    assert_close(F, M, curvature_rtol(case), case.name)


@pytest.mark.parametrize("case", RANK_DEFICIENT_CASES, ids=ids(RANK_DEFICIENT_CASES))
def test_rank_deficient_cases_have_a_singular_fisher(case):
    """``rank F <= N C < P`` for the true and empirical Fisher."""
    N, C, P = case.N, case.net.output_dim, case.P
    assert N * C < P
    for F in (
        minifim.true_fisher(case.net, case.theta, case.X),
        minifim.empirical_fisher(case.net, case.theta, case.X, case.y),
    ):
        assert np.linalg.matrix_rank(F) <= N * C < P


def test_rank_deficient_group_is_every_case_with_fewer_seeds_than_parameters():
    expected = [c for c in CASES if c.N * c.net.output_dim < c.P]
    assert [c.name for c in RANK_DEFICIENT_CASES] == [c.name for c in expected]
    assert RANK_DEFICIENT_CASES[0] is CASES[0]  # the case tests use as "rank-deficient"
