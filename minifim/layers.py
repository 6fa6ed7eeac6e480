"""The layers of a :class:`minifim.Sequential` network, named and parameterised like ``torch.nn``.

A public namespace for :mod:`minifim.core.layers` (where they are defined and documented):
``Linear``, ``Conv2d``, ``Flatten``, ``Mean`` and the activations ``Tanh``, ``ReLU``, ``Sigmoid``,
``Softplus``, ``Identity`` (and ``Elementwise`` for a custom elementwise callable).

>>> import minifim
>>> from minifim.layers import Conv2d, Flatten, Linear, ReLU
>>> net = minifim.Sequential(
...     [Conv2d(1, 4, 3, stride=2, padding=1), ReLU(), Flatten(), Linear(4 * 4 * 4, 10)],
...     input_shape=(1, 8, 8),
... )
>>> net.shapes  # the weights as matrices on the unfolded inputs
[(4, 9), (10, 64)]
"""

from .core.layers import (
    LAYERS,
    Conv2d,
    Elementwise,
    Flatten,
    Identity,
    Layer,
    Linear,
    Mean,
    ParametricLayer,
    ReLU,
    Sigmoid,
    Softplus,
    Tanh,
    activation_layer,
    layer_from_config,
)

__all__ = [
    "Layer",
    "ParametricLayer",
    "Linear",
    "Conv2d",
    "Flatten",
    "Mean",
    "Elementwise",
    "Tanh",
    "ReLU",
    "Sigmoid",
    "Softplus",
    "Identity",
    "LAYERS",
    "layer_from_config",
    "activation_layer",
]
