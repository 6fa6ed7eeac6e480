"""experiments/cramer_rao.py: the verdict's criterion where the bound is attained and where
an estimator is inefficient (or the bound is computed wrongly)."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "experiments" / "cramer_rao.py"


@pytest.fixture(scope="module")
def cr():
    spec = importlib.util.spec_from_file_location("experiment_cramer_rao", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mean_whitened(cov_scale, rng, R=4000, P=3):
    """Mean whitened eigenvalue and its 95% interval for R Gaussian estimates with
    covariance cov_scale * F^-1 (whitened: cov_scale * I)."""
    Z = math.sqrt(cov_scale) * rng.standard_normal((R, P))
    lam = np.linalg.eigvalsh(np.cov(Z.T))
    se = math.sqrt(2 / (P * R))
    return lam.mean(), lam.mean() - 1.96 * se, lam.mean() + 1.96 * se


def test_criterion_agrees_for_an_efficient_estimator(cr):
    rng = np.random.default_rng(0)
    status, pos = cr.cramer_rao_criterion(
        {"a": _mean_whitened(1.0, rng), "b": _mean_whitened(1.0, rng)}
    )
    assert status == "agrees", pos


def test_criterion_disagrees_for_an_inefficient_estimator_or_a_wrong_bound(cr):
    rng = np.random.default_rng(1)
    # an estimator with twice the bound's variance, or a bound missing the factor N (here 1/2)
    status, pos = cr.cramer_rao_criterion(
        {"a": _mean_whitened(1.0, rng), "b": _mean_whitened(2.0, rng)}
    )
    assert status == "disagrees" and pos == {"a": "inside", "b": "outside"}


def test_criterion_inconclusive_with_too_few_replicates(cr):
    rng = np.random.default_rng(2)
    status, _ = cr.cramer_rao_criterion({"a": _mean_whitened(1.0, rng, R=50)})
    assert status == "inconclusive"
