"""experiments/laplace.py: the criteria (evidence ranking, calibration with its premise) on
synthetic cases where the claims hold and where they fail."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

PATH = Path(__file__).resolve().parents[1] / "experiments" / "laplace.py"


@pytest.fixture(scope="module")
def la():
    spec = importlib.util.spec_from_file_location("experiment_laplace", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rhos(noise, rng, seeds=5, configs=20):
    """Spearman correlations of a score that is the truth plus noise (per seed)."""
    out = []
    for _ in range(seeds):
        truth = rng.standard_normal(configs)
        out.append(stats.spearmanr(truth + noise * rng.standard_normal(configs), truth)[0])
    return np.array(out)


def test_evidence_verdict_agrees_for_a_ranking_score_and_disagrees_for_noise(la):
    rng = np.random.default_rng(0)
    assert la.evidence_verdict(_rhos(0.2, rng))[0] == "agrees"
    assert la.evidence_verdict(_rhos(50.0, rng))[0] == "disagrees"


def test_calibration_verdict_needs_the_premise_then_follows_the_ece(la):
    rng = np.random.default_rng(1)
    ece_map = 0.05 + 0.005 * rng.standard_normal(5)
    over = 0.04 + 0.005 * rng.standard_normal(5)
    good, bad = ece_map - 0.02, ece_map + 0.02
    assert la.calibration_verdict(ece_map, good, over)[0] == "agrees"
    assert la.calibration_verdict(ece_map, bad, over)[0] == "disagrees"
    # an under-confident MAP: the premise fails, whatever the ECE says
    status, premise, _ = la.calibration_verdict(ece_map, good, -over)
    assert status == "inconclusive" and premise[2] < 0
    assert la.combine(["agrees", "agrees"]) == "agrees"
    assert la.combine(["agrees", "inconclusive"]) == "inconclusive"
    assert la.combine(["inconclusive", "disagrees"]) == "disagrees"
