"""Elementwise activations with their derivatives, written with ``autograd.numpy``.

An :class:`Activation` carries the function ``phi`` (used by the forward pass, so the generic
autograd route can differentiate it) and its derivative ``dphi`` (used by the batched
backpropagation of :mod:`minifim.core.scores`). Named activations have closed-form derivatives; a
user callable gets its derivative from ``autograd.elementwise_grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import autograd.numpy as anp
import numpy as np
from autograd import elementwise_grad

__all__ = ["Activation", "get_activation", "ACTIVATIONS"]


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity ``phi`` and its derivative ``dphi``, ``(N, H) -> (N, H)``."""

    name: str
    phi: Callable
    dphi: Callable

    def __call__(self, z: Any) -> Any:
        return self.phi(z)


def _sigmoid(z: Any) -> Any:
    return 0.5 * (anp.tanh(0.5 * z) + 1.0)


def _dtanh(z: np.ndarray) -> np.ndarray:
    t = np.tanh(z)
    return 1.0 - t * t


def _dsigmoid(z: np.ndarray) -> np.ndarray:
    s = 0.5 * (np.tanh(0.5 * z) + 1.0)
    return s * (1.0 - s)


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", anp.tanh, _dtanh),
    "relu": Activation("relu", lambda z: anp.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "sigmoid": Activation("sigmoid", _sigmoid, _dsigmoid),
    "softplus": Activation(
        "softplus", lambda z: anp.logaddexp(0.0, z), lambda z: 0.5 * (np.tanh(0.5 * z) + 1.0)
    ),
    "identity": Activation("identity", lambda z: z, lambda z: np.ones_like(z)),
}


def get_activation(activation: str | Activation | Callable[..., Any]) -> Activation:
    """Resolve a name in ``ACTIVATIONS``, an :class:`Activation`, or a callable.

    A callable must be elementwise and written with ``autograd.numpy``; its derivative is
    taken with ``autograd.elementwise_grad``.
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(ACTIVATIONS)} or a callable, "
                f"received {activation!r}"
            )
        return ACTIVATIONS[activation]
    if callable(activation):
        name = getattr(activation, "__name__", "custom")
        return Activation(name, activation, elementwise_grad(activation))
    raise TypeError(
        f"activation: expected a name in {sorted(ACTIVATIONS)} or a callable, "
        f"received {type(activation).__name__}"
    )
