"""experiments/continual_learning.py: the verdict's criterion on synthetic per-seed results where
the claims hold and where they fail (L2 more plastic than EWC; EWC no better than fine-tuning)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "experiments" / "continual_learning.py"


@pytest.fixture(scope="module")
def cl():
    spec = importlib.util.spec_from_file_location("experiment_continual_learning", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _seeds(mean, rng, n=6, sd=0.01):
    return mean + sd * rng.standard_normal(n)


def test_verdict_agrees_where_ewc_beats_both_and_recursive_beats_separate(cl):
    rng = np.random.default_rng(0)
    status, parts = cl.continual_verdict(
        _seeds(0.7, rng),
        _seeds(0.5, rng),
        _seeds(0.6, rng),
        _seeds(0.75, rng),
        _seeds(0.9, rng),
        _seeds(0.7, rng),
    )
    assert status == "agrees", parts
    assert all(sign == 1 for sign, _ in parts.values())


def test_verdict_disagrees_where_l2_is_more_plastic(cl):
    rng = np.random.default_rng(1)
    status, parts = cl.continual_verdict(
        _seeds(0.7, rng),
        _seeds(0.5, rng),
        _seeds(0.6, rng),
        _seeds(0.75, rng),
        _seeds(0.7, rng),
        _seeds(0.9, rng),
    )
    assert status == "disagrees"
    assert parts["L2 less plastic than EWC"][0] == -1


def test_verdict_is_inconclusive_without_a_resolved_difference(cl):
    rng = np.random.default_rng(2)
    same = _seeds(0.6, rng, sd=0.05)
    status, parts = cl.continual_verdict(
        same,
        same + 0.05 * rng.standard_normal(6),
        _seeds(0.4, rng),
        _seeds(0.7, rng),
        _seeds(0.9, rng),
        _seeds(0.7, rng),
    )
    assert status == "inconclusive" and parts["EWC > fine-tuning"][0] == 0


def test_metrics_of_an_accuracy_matrix(cl):
    R = np.tril(np.full((5, 5), 0.5)) + np.diag(np.full(5, 0.4))
    assert cl.final_average(R) == pytest.approx(np.mean(R[-1]))
    assert cl.plasticity(R) == pytest.approx(0.9)
    assert cl.forgetting(R) == pytest.approx(0.4)
    assert cl.interval_sign(0.1, 0.2) == 1 and cl.interval_sign(-0.1, 0.2) == 0
