"""experiments/pruning.py: the verdict's criterion where OBS < OBD < magnitude at every level and
where one-shot OBS is worse than magnitude at 95% sparsity."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "experiments" / "pruning.py"
LEVELS = [0.0, 0.5, 0.9, 0.95]


@pytest.fixture(scope="module")
def pr():
    spec = importlib.util.spec_from_file_location("experiment_pruning", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rise(scale, rng, n=5):
    base = np.array([1e-6, 0.1, 1.0, 2.0])
    return scale * base * np.exp(0.05 * rng.standard_normal((n, len(base))))


def test_agrees_when_curvature_orders_the_rise_at_every_level(pr):
    rng = np.random.default_rng(0)
    rise = {"magnitude": _rise(4.0, rng), "obd": _rise(2.0, rng), "obs": _rise(1.0, rng)}
    status, table = pr.pruning_verdict(rise, LEVELS)
    assert status == "agrees"
    assert {s for _, s in table} == {0.5, 0.9, 0.95}  # level 0 is outside the criterion


def test_disagrees_when_one_shot_obs_loses_at_95_percent(pr):
    rng = np.random.default_rng(1)
    rise = {"magnitude": _rise(4.0, rng), "obd": _rise(2.0, rng), "obs": _rise(1.0, rng)}
    rise["obs"][:, -1] *= 10.0  # worse than magnitude at the last level only
    status, table = pr.pruning_verdict(rise, LEVELS)
    assert status == "disagrees"
    assert table[("obs < magnitude", 0.95)][2] < 0 and table[("obs < magnitude", 0.9)][1] > 0
