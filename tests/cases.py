"""Small seeded cases shared by the test modules: architecture x activation x likelihood.

Each case is tiny (P <= ~100, N <= 7) so that dense brute-force references (enumeration over
labels, autograd Jacobians and Hessians, finite differences) stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import minifim

ACTIVATIONS = ("tanh", "relu", "sigmoid", "softplus", "identity")
LIKELIHOODS = ("categorical", "bernoulli", "gaussian")


@dataclass
class Case:
    """A model, parameters, inputs and targets drawn from the model (float64, seeded)."""

    name: str
    net: minifim.MLP
    theta: np.ndarray
    X: np.ndarray
    y: np.ndarray

    @property
    def N(self):
        return self.X.shape[0]

    @property
    def P(self):
        return self.net.num_params


def make_case(sizes, activation="tanh", likelihood="categorical", sigma=0.7, N=5, seed=0):
    rng = np.random.default_rng(seed)
    net = minifim.MLP(sizes, activation=activation, likelihood=likelihood, sigma=sigma)
    theta = net.init(rng)
    # shift relu biases away from exact kinks; scale inputs to exercise the nonlinearity
    X = 1.3 * rng.standard_normal((N, sizes[0]))
    y = net.likelihood.sample(net.forward(theta, X), rng)
    name = f"{likelihood}-{activation}-{'x'.join(map(str, sizes))}"
    return Case(name, net, theta, X, y)


CASES = [make_case((3, 4, 3), a, lik, seed=i)
         for i, (a, lik) in enumerate((a, lik) for lik in LIKELIHOODS for a in ACTIVATIONS)]
CASES += [
    make_case((2, 3, 4, 2), "tanh", "categorical", N=6, seed=101),     # deeper
    make_case((4, 3), "identity", "gaussian", N=7, seed=102),          # linear-Gaussian regression
    make_case((3, 1), "identity", "bernoulli", N=7, seed=103),         # logistic regression
    make_case((3, 4), "identity", "categorical", N=7, seed=104),       # softmax regression
    make_case((2, 5, 2), "softplus", "gaussian", sigma=0.3, N=4, seed=105),
]
