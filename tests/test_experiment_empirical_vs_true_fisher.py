"""experiments/empirical_vs_true_fisher.py: the verdict's criteria on small synthetic cases
where Kunstner et al.'s claims hold and where they fail (a broken EF, a wrong rate)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import minifim
from minifim.tools.report import loglog_slope, t_interval, verdict_from_positions

PATH = Path(__file__).resolve().parents[1] / "experiments" / "empirical_vs_true_fisher.py"


@pytest.fixture(scope="module")
def ev():
    spec = importlib.util.spec_from_file_location("experiment_empirical_vs_true_fisher", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scale_shape_split(ev):
    F = np.diag([2.0, 1.0])
    total, scale, shape = ev.scale_shape(3.0 * F, F)
    assert total == pytest.approx(2.0, rel=1e-14) and scale == pytest.approx(3.0, rel=1e-14)
    assert shape == pytest.approx(0.0, abs=1e-15)  # a pure rescaling has no shape error
    total, scale, shape = ev.scale_shape(np.diag([1.0, 2.0]), F)
    assert scale == pytest.approx(1.0) and shape == pytest.approx(total)


def _far_slopes(ev, empirical):
    """Slopes of log|M^-1 g| against log|g| on a small linear regression, far from the MLE,
    with the EF from minifim (the claim holds) or replaced by F (a broken EF)."""
    rng = np.random.default_rng(0)
    net = minifim.MLP([3, 1], activation="identity", likelihood="gaussian", sigma=0.5)
    X = rng.standard_normal((200, 3))
    y = X @ np.array([[1.0], [-0.5], [0.3]]) + 0.5 * rng.standard_normal((200, 1))
    star = ev.mle(net, X, y)
    slopes_ef, slopes_f = [], []
    for _ in range(4):
        u = rng.standard_normal(net.num_params)
        u /= np.linalg.norm(u)
        g_n, ef_n, f_n = [], [], []
        for t in np.logspace(1, 3, 5):
            th = star + t * u
            g = minifim.gradient(net, th, X, y)
            F = minifim.true_fisher(net, th, X)
            EF = minifim.empirical_fisher(net, th, X, y) if empirical else F
            g_n.append(np.linalg.norm(g))
            ef_n.append(np.linalg.norm(np.linalg.solve(EF, g)))
            f_n.append(np.linalg.norm(np.linalg.solve(F, g)))
        slopes_ef.append(loglog_slope(g_n, ef_n))
        slopes_f.append(loglog_slope(g_n, f_n))
    return t_interval(slopes_ef), t_interval(slopes_f)


def test_magnitude_criterion_holds_for_the_empirical_fisher(ev):
    pos = ev.magnitude_criterion(*_far_slopes(ev, empirical=True))
    assert verdict_from_positions(pos.values()) == "agrees", pos


def test_magnitude_criterion_fails_for_a_broken_ef(ev):
    pos = ev.magnitude_criterion(*_far_slopes(ev, empirical=False))  # "EF" = F: slope +1
    assert list(pos.values()) == ["outside", "inside"]


def test_consistency_criterion(ev):
    rng = np.random.default_rng(1)
    ns = np.array([100, 300, 1000, 3000])
    good_w = t_interval(
        [loglog_slope(ns, ns**-0.5 * np.exp(0.05 * rng.standard_normal(4))) for _ in range(6)]
    )
    flat = t_interval(
        [loglog_slope(ns, 0.4 * np.exp(0.05 * rng.standard_normal(4))) for _ in range(6)]
    )
    assert verdict_from_positions(ev.consistency_criterion(good_w, flat).values()) == "agrees"
    # a wrong theory: EF converges under misspecification too
    assert verdict_from_positions(ev.consistency_criterion(good_w, good_w).values()) == "disagrees"
    # or the well-specified EF converges at the wrong rate (1/N)
    fast = t_interval(
        [loglog_slope(ns, 1.0 / ns * np.exp(0.05 * rng.standard_normal(4))) for _ in range(6)]
    )
    assert verdict_from_positions(ev.consistency_criterion(fast, flat).values()) == "disagrees"


def test_classifier_criterion(ev):
    rng = np.random.default_rng(2)
    above = {d: t_interval(10 + rng.standard_normal(6)) for d in (1e-3, 1e-2)}
    below = {d: t_interval(-5 + rng.standard_normal(6)) for d in (1e-3, 1e-2)}
    assert set(ev.classifier_criterion(above).values()) == {"inside"}
    assert set(ev.classifier_criterion(below).values()) == {"outside"}
