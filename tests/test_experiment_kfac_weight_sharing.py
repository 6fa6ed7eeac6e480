"""The verdict rule of experiments/kfac_weight_sharing.py: it says "agrees" on synthetic errors
where the exactness claim holds and "disagrees" where it fails, and the claim holds on a real
(small) run of one case per setting."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "experiments" / "kfac_weight_sharing.py"


@pytest.fixture(scope="module")
def exp():
    spec = importlib.util.spec_from_file_location("kfac_weight_sharing", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _synthetic(rng, matched, mismatched, seeds=6, layers=2):
    """Per-seed errors: the matching flavour ~ ``matched``, the other ~ ``mismatched``."""
    out = {}
    for name, setting in (("expand case", "expand"), ("reduce case", "reduce")):
        other = "reduce" if setting == "expand" else "expand"
        errs = {
            setting: matched * (1 + rng.random((seeds, layers))),
            other: mismatched * (1 + 0.1 * rng.standard_normal((seeds, layers))),
        }
        out[name] = (setting, 0, errs)
    return out


def test_criterion_agrees_where_the_claim_holds(exp):
    rng = np.random.default_rng(0)
    status, checks, details = exp.criterion(_synthetic(rng, 1e-15, 0.3))
    assert status == "agrees" and all(checks.values()) and len(checks) == 4
    assert details["expand case"][0] == "expand" and details["expand case"][2] == "reduce"


@pytest.mark.parametrize(
    "matched, mismatched, failing",
    [
        (1e-6, 0.3, "exact"),  # the matching flavour is not exact
        (1e-15, 1e-4, "not exact"),  # the flavours do not differ
    ],
)
def test_criterion_disagrees_where_the_claim_fails(exp, matched, mismatched, failing):
    rng = np.random.default_rng(1)
    status, checks, _ = exp.criterion(_synthetic(rng, matched, mismatched))
    assert status == "disagrees"
    failed = [name for name, ok in checks.items() if not ok]
    assert len(failed) == 2  # the failing check in each of the two cases, and only it
    assert all((" not exact" in name) == (failing == "not exact") for name in failed)


def test_criterion_is_decided_by_the_t_interval_not_the_mean(exp):
    """A mismatched mean above the threshold with an interval reaching below it is no
    evidence of a difference: "disagrees"."""
    errs = {
        "case": (
            "expand",
            0,
            {"expand": np.full((3, 1), 1e-15), "reduce": np.array([[0.0], [0.0], [0.09]])},
        )
    }
    status, checks, details = exp.criterion(errs)
    _, _, _, mean, low, _ = details["case"]
    assert mean > exp.DISTINCT > low and status == "disagrees"


def test_the_claim_holds_on_a_small_run(exp):
    """Two seeds of each linear case: the matching flavour is exact, the other is not."""
    rng = np.random.default_rng(0)
    linear = {}
    for name, (net, setting, layer) in exp._linear_cases().items():
        rows = exp.run_case(net, rng, 2, with_angles=False)
        errs = {a: np.array([r["errors"][a] for r in rows]) for a in exp.FLAVOURS}
        linear[name] = (setting, layer, errs)
        assert np.max(errs[setting]) <= exp.EXACT_TOL, name
        other = "reduce" if setting == "expand" else "expand"
        assert np.min(errs[other][:, layer]) > exp.DISTINCT, name
