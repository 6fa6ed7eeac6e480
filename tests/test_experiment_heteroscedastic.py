"""The heteroscedastic experiment's criteria (experiments/heteroscedastic.py) on a tiny run.

The identities the verdict rests on hold exactly on any run (E_y[G(y)] = F, F PSD, the GGN of
one sample indefinite); the criteria decide "agrees" only when every interval clears its
threshold (checked on synthetic runs on both sides of each threshold).
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "heteroscedastic.py"


@pytest.fixture(scope="module")
def exp():
    spec = importlib.util.spec_from_file_location("heteroscedastic_experiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(exp):
    return [exp.run_seed(s, n=16, early_steps=5, check_identity=(s == 0)) for s in range(2)]


def test_tiny_run_identities(exp, runs):
    r = runs[0]
    assert r["identity_err"] < 1e-10  # E_y[G(y)] = F (Gauss-Hermite, exact for H_f(y))
    for run in runs:
        for k in ("F", "EF"):
            assert run[f"{k}_min"] >= -run["P"] * exp.EPS * run[f"{k}_max"]
        assert run["batch_map_1_indef"] == 1.0  # one sample: det H_f(y) < 0 unless y = mu
        assert 0 <= run["angle_G_F"] <= 180 and np.isfinite(run["logratio_EF"])
    checks = exp.criteria(runs, r["identity_err"])
    assert len(checks) == 4 and all(isinstance(ok, bool) for ok, _ in checks.values())
    assert checks["2. E_y[G(y)] = F to 1e-10"][0]


def _fake(**over):
    base = dict(
        P=10,
        G_min=-1.0,
        G_max=10.0,
        G_neg_mass=0.05,
        F_min=0.0,
        F_max=1.0,
        EF_min=0.0,
        EF_max=1.0,
        angle_G_F=30.0,
        angle_EF_F=30.0,
        logratio_EF=0.1,
        **{"logratio_G+": 0.1},
    )
    base.update(over)
    return base


def test_criteria_decide_on_both_sides(exp):
    rng = np.random.default_rng(0)

    def runs(**over):
        return [
            _fake(**{k: v * (1 + 0.01 * rng.standard_normal()) for k, v in over.items()})
            for _ in range(5)
        ]

    assert all(ok for ok, _ in exp.criteria(runs(), 1e-15).values())
    assert not exp.criteria(runs(G_neg_mass=1e-5), 1e-15)[
        "1. G indefinite on every seed, negative mass interval > 1e-3, F and EF PSD"
    ][0]
    assert not exp.criteria(runs(F_min=-1e-3), 1e-15)[
        "1. G indefinite on every seed, negative mass interval > 1e-3, F and EF PSD"
    ][0]
    assert not exp.criteria(runs(), 1e-8)["2. E_y[G(y)] = F to 1e-10"][0]
    key3 = "3. angle(d_G, d_F) and angle(d_EF, d_F) intervals > 5 deg"
    assert not exp.criteria(runs(angle_G_F=3.0), 1e-15)[key3][0]
    key4 = "4. Laplace predictive std: |log ratio| intervals > 0.02 (EF vs F, G+ vs F)"
    assert not exp.criteria(runs(**{"logratio_G+": 0.01}), 1e-15)[key4][0]
