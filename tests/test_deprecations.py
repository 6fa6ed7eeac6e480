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
    S_old = _old(minifim.per_sample_scores, "method", "backend", c.net, c.theta, c.X, c.y,
                 method=backend)
    assert np.array_equal(S, S_old)
    J = _new(minifim.output_jacobians, c.net, c.theta, c.X, backend=backend)
    J_old = _old(minifim.output_jacobians, "method", "backend", c.net, c.theta, c.X,
                 method=backend)
    assert np.array_equal(J, J_old)
    with pytest.raises(TypeError, match="both 'method'"):
        minifim.output_jacobians(c.net, c.theta, c.X, method=backend, backend=backend)
