"""experiments/fisher_rao_norm.py: label corruption, Liang et al.'s Lemma 2.1 identity and the
verdict's criterion where the Fisher-Rao norm tracks the gap and where it does not."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "experiments" / "fisher_rao_norm.py"


@pytest.fixture(scope="module")
def frn():
    spec = importlib.util.spec_from_file_location("experiment_fisher_rao_norm", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_corrupt_replaces_the_share(frn):
    y = np.zeros(1000, dtype=int)
    out = frn.corrupt(y, 0.5, np.random.default_rng(0))
    # half the labels are redrawn uniformly from 10 classes: 1/10 of them stay 0
    assert np.mean(out != 0) == pytest.approx(0.5 * 0.9, abs=0.05)
    assert np.array_equal(frn.corrupt(y, 0.0, np.random.default_rng(0)), y)


def test_lemma_identity_for_bias_free_relu(frn):
    # inputs in [0, 1] like the digits, so the test needs no scikit-learn
    X = np.random.default_rng(3).uniform(size=(200, 64))
    lhs, rhs = frn.lemma_identity(X=X)
    assert lhs == pytest.approx(rhs, rel=1e-10)
    # a wrong depth factor (L instead of L^2) fails
    assert lhs != pytest.approx(rhs / 3, rel=1e-2)


def test_rank_correlations(frn):
    rho = frn.rank_correlations([[1, 2, 3], [3, 2, 1], [1, 1, 1]], [[1, 2, 3]] * 3)
    np.testing.assert_allclose(rho, [1.0, -1.0, 0.0])


def test_criterion_agrees_when_the_norm_tracks_the_gap(frn):
    rng = np.random.default_rng(0)
    status, pos, _ = frn.tracking_criterion(
        0.9 + 0.05 * rng.standard_normal(5), -1.0 + 0.1 * rng.standard_normal(5), np.log(16)
    )
    assert status == "agrees", pos


def test_criterion_rejects_a_norm_that_scales_with_the_parameter_count(frn):
    # e.g. |theta|^2 at fixed per-weight scale: grows like P
    rng = np.random.default_rng(1)
    status, pos, _ = frn.tracking_criterion(
        0.9 + 0.05 * rng.standard_normal(5), np.log(16) + 0.1 * rng.standard_normal(5), np.log(16)
    )
    assert status == "disagrees" and pos["width: norm grows slower than P^1/2"] == "outside"


def test_criterion_rejects_a_norm_that_falls_as_the_gap_grows(frn):
    rng = np.random.default_rng(2)
    status, pos, _ = frn.tracking_criterion(
        -0.8 + 0.05 * rng.standard_normal(5), -1.0 + 0.1 * rng.standard_normal(5), np.log(16)
    )
    assert status == "disagrees" and pos["label noise: norm rises with the gap"] == "outside"
