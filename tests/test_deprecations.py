"""Renamed keywords keep working for one release: each old spelling warns (naming the old and
the new keyword) and gives exactly the result of the new one; giving both raises TypeError."""

import warnings

import numpy as np
import pytest

import minifim

from .cases import get_case

OLD_NEW = r"keyword '{old}' is deprecated since minifim .* use '{new}'"


def _new(fn, *args, **kwargs):
    """Call with the new keywords: no DeprecationWarning at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return fn(*args, **kwargs)


def _old(fn, old, new, *args, **kwargs):
    with pytest.warns(DeprecationWarning, match=OLD_NEW.format(old=old, new=new)):
        return fn(*args, **kwargs)


def test_mlp_init_seed_or_rng_is_rng():
    net = minifim.MLP([3, 4, 2])
    ref = _new(net.init, rng=7)
    assert np.array_equal(_old(net.init, "seed_or_rng", "rng", seed_or_rng=7), ref)
    assert np.array_equal(_new(net.init, 7), ref)  # positional calls are unaffected
    with pytest.raises(TypeError, match="both 'seed_or_rng'"):
        net.init(seed_or_rng=7, rng=7)


@pytest.mark.parametrize("backend", ["backprop", "autograd"])
def test_scores_and_jacobians_method_is_backend(backend):
    c = get_case("categorical-tanh-3x4x3")
    S = _new(minifim.per_sample_scores, c.net, c.theta, c.X, c.y, backend=backend)
    S_old = _old(
        minifim.per_sample_scores, "method", "backend", c.net, c.theta, c.X, c.y, method=backend
    )
    assert np.array_equal(S, S_old)
    J = _new(minifim.output_jacobians, c.net, c.theta, c.X, backend=backend)
    J_old = _old(minifim.output_jacobians, "method", "backend", c.net, c.theta, c.X, method=backend)
    assert np.array_equal(J, J_old)
    with pytest.raises(TypeError, match="both 'method'"):
        minifim.output_jacobians(c.net, c.theta, c.X, method=backend, backend=backend)


@pytest.mark.parametrize("damping_type", ["eigen", "factored"])
def test_kfac_solve_method_is_damping_type(damping_type):
    c = get_case("categorical-tanh-3x4x3")
    K = minifim.kfac(c.net, c.theta, c.X, c.y)
    v = np.random.default_rng(0).standard_normal(c.P)
    x = _new(K.solve, v, 0.1, damping_type=damping_type)
    x_old = _old(K.solve, "method", "damping_type", v, 0.1, method=damping_type)
    assert np.array_equal(x, x_old)
    inv = _old(K.inverse, "method", "damping_type", 0.1, method=damping_type)
    assert inv.damping_type == damping_type
    assert np.array_equal(inv.apply(v), x)
    with pytest.raises(TypeError, match="both 'method'"):
        K.solve(v, 0.1, method=damping_type, damping_type=damping_type)


def _laplace():
    c = get_case("categorical-tanh-3x4x3")
    return c, minifim.Laplace(c.net, c.theta, c.X, c.y, prior_precision=1.0)


def test_laplace_sample_n_is_n_draws():
    c, la = _laplace()
    ref = _new(la.sample, n_draws=5, rng=3)
    assert ref.shape == (5, c.P)
    assert np.array_equal(_old(la.sample, "n", "n_draws", n=5, rng=3), ref)
    assert np.array_equal(_new(la.sample, 5, 3), ref)
    with pytest.raises(TypeError, match="both 'n'"):
        la.sample(n=5, n_draws=5, rng=3)


def test_laplace_predictive_method_mc_is_pred_type_nn():
    """``method="mc"`` (minifim's old name) is laplace-torch's ``pred_type="nn"``; the old
    ``n_samples=`` (posterior draws here, MC labels elsewhere) is ``n_draws=``."""
    c, la = _laplace()
    ref = _new(la.predictive, c.X, pred_type="nn", n_draws=7, rng=1)
    with pytest.warns(DeprecationWarning) as rec:
        old = la.predictive(c.X, method="mc", n_samples=7, rng=1)
    msgs = " | ".join(str(w.message) for w in rec)
    assert "'method' is deprecated" in msgs and "use 'pred_type'" in msgs
    assert "'n_samples' is deprecated" in msgs and "use 'n_draws'" in msgs
    assert "pred_type='nn'" in msgs  # the value "mc" is renamed too
    assert np.array_equal(old, ref)
    with pytest.warns(DeprecationWarning, match="use pred_type='nn'"):
        assert np.array_equal(la.predictive(c.X, "mc", n_draws=7, rng=1), ref)  # positional
    glm = _new(la.predictive, c.X, pred_type="glm")
    assert np.array_equal(_old(la.predictive, "method", "pred_type", c.X, method="glm"), glm)
    mc_link = _new(la.predictive, c.X, link_approx="mc", n_draws=9, rng=2)
    assert np.array_equal(
        _old(la.predictive, "n_samples", "n_draws", c.X, link_approx="mc", n_samples=9, rng=2),
        mc_link,
    )
    with pytest.raises(TypeError, match="both 'method'"):
        la.predictive(c.X, method="glm", pred_type="glm")
    with pytest.raises(ValueError, match=r"pred_type: expected one of \['glm', 'nn'\]"):
        la.predictive(c.X, pred_type="laplace")
