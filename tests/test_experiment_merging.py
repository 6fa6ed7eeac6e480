"""experiments/merging.py: the verdict's criterion where the Fisher merge is more accurate than
the plain average and where it is less accurate or indistinguishable."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "experiments" / "merging.py"


@pytest.fixture(scope="module")
def me():
    spec = importlib.util.spec_from_file_location("experiment_merging", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verdict_follows_the_paired_interval(me):
    rng = np.random.default_rng(0)
    iso = 0.9 + 0.02 * rng.standard_normal(8)  # seed-to-seed spread larger than the effect
    better = iso + 0.01 + 0.002 * rng.standard_normal(8)
    assert me.merging_verdict(better, iso)[0] == "agrees"
    assert me.merging_verdict(iso - 0.01 + 0.002 * rng.standard_normal(8), iso)[0] == "disagrees"
    assert me.merging_verdict(iso + 0.01 * rng.standard_normal(8), iso)[0] == "inconclusive"
