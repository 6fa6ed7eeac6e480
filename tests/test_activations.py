"""Activations: values against NumPy closed forms, derivatives against autograd, stability."""

import warnings

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import elementwise_grad

import minifim
from minifim.core.activations import ACTIVATIONS, Activation, get_activation

from .cases import assert_close

# away from relu's kink at 0, both signs, up to moderately large magnitudes
Z = np.concatenate([np.linspace(-6.0, -0.05, 40), np.linspace(0.05, 6.0, 40)]).reshape(8, 10)

CLOSED_FORMS = {
    "tanh": (np.tanh, lambda z: 1.0 / np.cosh(z) ** 2),
    "relu": (lambda z: np.where(z > 0, z, 0.0), lambda z: (z > 0).astype(float)),
    "sigmoid": (lambda z: 1.0 / (1.0 + np.exp(-z)), lambda z: np.exp(-z) / (1.0 + np.exp(-z)) ** 2),
    "softplus": (lambda z: np.log1p(np.exp(z)), lambda z: 1.0 / (1.0 + np.exp(-z))),
    "identity": (lambda z: z, np.ones_like),
}


def test_names_exported():
    assert set(ACTIVATIONS) == set(CLOSED_FORMS)
    assert minifim.ACTIVATIONS is ACTIVATIONS


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_value_and_derivative_closed_form(name):
    act = get_activation(name)
    phi, dphi = CLOSED_FORMS[name]
    assert act.name == name
    assert_close(act(Z), phi(Z), 1e-14, f"{name} phi")
    assert_close(act.dphi(Z), dphi(Z), 1e-13, f"{name} dphi")


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_derivative_matches_autograd(name):
    act = get_activation(name)
    assert_close(act.dphi(Z), elementwise_grad(act.phi)(Z), 1e-14, name)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_stable_at_large_magnitude(name):
    act = get_activation(name)
    z = np.array([[-1e3, -50.0, 0.0, 50.0, 1e3]])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        v, d = act(z), act.dphi(z)
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(d))
    if name in ("softplus", "relu"):
        assert v[0, -1] == 1e3 and v[0, 0] == 0.0
    if name == "sigmoid":
        assert v[0, -1] == 1.0 and v[0, 0] == 0.0 and v[0, 2] == 0.5


def test_get_activation_resolves_instances_and_callables():
    act = ACTIVATIONS["tanh"]
    assert get_activation(act) is act

    def cube(z):
        return z * z * z

    custom = get_activation(cube)
    assert isinstance(custom, Activation) and custom.name == "cube"
    assert_close(custom.dphi(Z), 3 * Z**2, 1e-14, "autograd derivative of a callable")

    def swish(z):
        return z / (1.0 + anp.exp(-z))

    sw = get_activation(swish)
    s = 1 / (1 + np.exp(-Z))
    assert_close(sw.dphi(Z), s + Z * s * (1 - s), 1e-14, "swish'")


def test_get_activation_bad_input():
    with pytest.raises(ValueError, match=r"activation: expected one of .*received 'gelu'"):
        get_activation("gelu")
    with pytest.raises(TypeError, match=r"activation: expected a name .* received int"):
        get_activation(3)
    with pytest.raises(TypeError, match="activation"):
        get_activation(None)
