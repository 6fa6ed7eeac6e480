"""experiments/ngd_vs_gd.py: the verdict's criterion where NGD makes more progress per
iteration than the baselines and where it does not."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "experiments" / "ngd_vs_gd.py"


@pytest.fixture(scope="module")
def ng():
    spec = importlib.util.spec_from_file_location("experiment_ngd_vs_gd", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_criterion_agrees_when_ngd_is_lower_on_every_seed(ng):
    rng = np.random.default_rng(0)
    base = 0.5 + 0.1 * rng.standard_normal(5)
    status, pos, ivs = ng.ngd_criterion(
        base - 0.2 + 0.02 * rng.standard_normal(5), {"SGD": base, "Adam": base - 0.05}
    )
    assert status == "agrees" and all(iv[2] < 0 for iv in ivs.values())


def test_criterion_disagrees_when_a_baseline_is_lower(ng):
    rng = np.random.default_rng(1)
    base = 0.5 + 0.1 * rng.standard_normal(5)
    status, pos, _ = ng.ngd_criterion(
        base + 0.02 * rng.standard_normal(5), {"SGD": base + 0.3, "Adam": base - 0.2}
    )
    assert status == "disagrees" and pos == {"SGD": "inside", "Adam": "outside"}


def test_criterion_inconclusive_on_a_tie(ng):
    rng = np.random.default_rng(2)
    base = 0.5 + 0.1 * rng.standard_normal(6)
    status, _, _ = ng.ngd_criterion(
        base + 0.05 * rng.standard_normal(6), {"SGD": base, "Adam": base}
    )
    assert status == "inconclusive"


def test_method_table_uses_one_budget(ng):
    assert set(ng.NGD_BASELINES) <= set(ng.CLF_METHODS) and ng.NGD_NAME in ng.CLF_METHODS
    assert ng.CLF["max_configs"] >= 3
