"""Small seeded cases shared by the test modules: architecture x activation x likelihood.

Each case is tiny (P <= ~100, N <= 7) so that dense brute-force references (enumeration over
labels, autograd Jacobians and Hessians, finite differences) stay cheap.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import autograd
import autograd.numpy as anp
import numpy as np
import scipy.special

import minifim

from .tolerances import check

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


CASES = [
    make_case((3, 4, 3), a, lik, seed=i)
    for i, (a, lik) in enumerate((a, lik) for lik in LIKELIHOODS for a in ACTIVATIONS)
]
CASES += [
    make_case((2, 3, 4, 2), "tanh", "categorical", N=6, seed=101),  # deeper
    make_case((4, 3), "identity", "gaussian", N=7, seed=102),  # linear-Gaussian regression
    make_case((3, 1), "identity", "bernoulli", N=7, seed=103),  # logistic regression
    make_case((3, 4), "identity", "categorical", N=7, seed=104),  # softmax regression
    make_case((2, 5, 2), "softplus", "gaussian", sigma=0.3, N=4, seed=105),
]


# --- brute-force references shared by the test modules ---------------------------------------
def assert_close(actual, expected, rtol=1e-12, what=""):
    """``max |actual - expected| <= rtol * max |expected|`` (relative to the array's scale).

    A scale-relative bound rather than an elementwise one: entries that are zero in exact
    arithmetic come out as roundoff of the size of the largest entries.
    """
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    err = float(np.max(np.abs(actual - expected), initial=0.0)) / scale
    return check(err, rtol, what or "assert_close")


def outcomes(lik, F):
    """Every outcome of ``p(y | f)`` with its probability: a list of ``(w: (N,), y)``, from
    :meth:`minifim.Likelihood.outcomes` (categorical: the ``C`` classes; Bernoulli: all
    ``2^C`` joint 0/1 vectors; Gaussian: the 5-point Gauss-Hermite rule per output, exact for
    polynomials of degree <= 9 in ``y``, so for scores, ``s s^T`` and the Hessian)."""
    w, Y = lik.outcomes(np.asarray(F, dtype=float))
    return [(w[:, o], Y[:, o]) for o in range(w.shape[1])]


def enumerated_fisher(net, theta, X, method="autograd"):
    """``1/N sum_n sum_y p(y | x_n) s_n(y) s_n(y)^T`` from per-sample scores of every outcome."""
    F = net.forward(theta, X)
    M = np.zeros((net.num_params, net.num_params))
    for w, y in outcomes(net.likelihood, F):
        S = minifim.per_sample_scores(net, theta, X, y, backend=method)
        M += (S * w[:, None]).T @ S
    return M / X.shape[0]


def expected_hessian(net, theta, X):
    """``1/N sum_n E_{y ~ p_theta0}[Hessian_theta -log p(y | x_n)]`` through autograd.

    The outcome weights are held fixed at ``theta0`` (they are the expectation's measure, not a
    function of the differentiated ``theta``), so one autograd Hessian gives the expectation.
    """
    lik = net.likelihood
    outs = outcomes(lik, net.forward(theta, X))

    def objective(th):
        f = net.apply(th, X)
        return -sum(anp.sum(w * lik.log_prob(f, y)) for w, y in outs) / X.shape[0]

    return np.asarray(autograd.hessian(objective)(theta))


def kl_outputs(lik, F0, F1):
    """Per-sample ``KL(p(. | f0) || p(. | f1))`` in closed form, shape ``(N,)``."""
    F0, F1 = np.asarray(F0, dtype=float), np.asarray(F1, dtype=float)
    if lik.name == "categorical":
        l0 = F0 - scipy.special.logsumexp(F0, axis=1, keepdims=True)
        l1 = F1 - scipy.special.logsumexp(F1, axis=1, keepdims=True)
        return np.sum(np.exp(l0) * (l0 - l1), axis=1)
    if lik.name == "bernoulli":
        a1, a0 = -np.logaddexp(0.0, -F0), -np.logaddexp(0.0, F0)
        b1, b0 = -np.logaddexp(0.0, -F1), -np.logaddexp(0.0, F1)
        return np.sum(np.exp(a1) * (a1 - b1) + np.exp(a0) * (a0 - b0), axis=1)
    if lik.name == "gaussian":
        return np.sum((F0 - F1) ** 2, axis=1) / (2.0 * lik.sigma**2)
    raise AssertionError(lik.name)


def homogeneous_to_flat(out, inp):
    """Flat ``[W (out*inp, row-major), b (out)]`` index -> index in the homogeneous layout
    ``[W | b]: (out, inp + 1)`` flattened row-major (bias as a last input column)."""
    idx = np.empty(out * inp + out, dtype=int)
    for o in range(out):
        for i in range(inp):
            idx[o * inp + i] = o * (inp + 1) + i
        idx[out * inp + o] = o * (inp + 1) + inp
    return idx


def get_case(name):
    """The case in :data:`CASES` called ``name`` (e.g. ``"bernoulli-identity-3x1"``)."""
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(name)


# --- named case groups -----------------------------------------------------------------------
# Each group holds the cases with one property that an identity needs; tests/test_cases.py checks
# the property itself, so a group cannot silently lose it when a case changes.
def log_odds(lik, F):
    """The largest log-odds of the model's outputs: ``max_n (max_c f_nc - min_c f_nc)`` for
    the (shift-invariant) softmax, ``max_nc |f_nc|`` for Bernoulli and Gaussian outputs."""
    F = np.asarray(F, dtype=float)
    return float(np.max(np.ptp(F, axis=1)) if lik.name == "categorical" else np.max(np.abs(F)))


def _saturated(case, logit=50.0, seed=0):
    """``case`` with its last layer scaled so that :func:`log_odds` is ``logit``; targets
    redrawn from the saturated model."""
    net, theta = case.net, case.theta.copy()
    scale = logit / log_odds(net.likelihood, net.forward(theta, case.X))
    theta[net.layer_param_slices()[-1]] *= scale  # the outputs are linear in the last layer
    y = net.likelihood.sample(net.forward(theta, case.X), np.random.default_rng(seed))
    return dataclasses.replace(case, name=f"{case.name}-saturated", theta=theta, y=y)


#: One sample (N = 1): every curvature has rank <= C, and K-FAC is exact per layer.
SINGLE_SAMPLE_CASES = [
    dataclasses.replace(c, name=f"{c.name}-N1")
    for c in (
        make_case((2, 3, 4, 2), "tanh", "categorical", N=1, seed=11),
        make_case((3, 4, 3), "relu", "bernoulli", N=1, seed=11),
        make_case((2, 5, 2), "softplus", "gaussian", N=1, seed=11),
    )
]

#: Folded K-FAC equals the exact per-layer blocks: one sample (``sum_k (b_k a^T)(b_k a^T)^T``
#: factorises), or one linear layer with a Gaussian likelihood (``G_n = I / sigma^2`` for all n).
KFAC_EXACT_CASES = SINGLE_SAMPLE_CASES + [get_case("gaussian-identity-4x3")]

#: Log-odds of 50: an outcome probability near ``e^-50 ~ 2e-22 < EPS``, so ``1 - p`` of its
#: complement is lost to rounding; the output Fisher must be formed without that cancellation.
SATURATED_CASES = [
    _saturated(get_case(n))
    for n in ("categorical-tanh-3x4x3", "bernoulli-tanh-3x4x3", "categorical-identity-3x4")
]

#: ``N C < P``: the Fisher, GGN and empirical Fisher are singular (rank <= N C), so undamped
#: solves must be refused and spectra have an exact zero cluster.
RANK_DEFICIENT_CASES = [c for c in CASES if c.N * c.net.output_dim < c.P]


# --- Sequential networks: convolutions, positions (expand), reductions (reduce) ---------------
def make_sequential_case(
    name, layers, input_shape, likelihood="categorical", sigma=0.7, N=4, seed=0
):
    """A :class:`minifim.Sequential` case; inputs ``1.3 N(0, 1)`` of shape ``(N, *input_shape)``,
    targets drawn from the model (every position independently)."""
    rng = np.random.default_rng(seed)
    net = minifim.Sequential(layers, likelihood=likelihood, input_shape=input_shape, sigma=sigma)
    theta = net.init(rng)
    X = 1.3 * rng.standard_normal((N,) + tuple(input_shape))
    y = net.sample_targets(net.forward(theta, X), rng)
    return Case(f"{name}-{likelihood}", net, theta, X, y)


def _cnn_layers(bias=True):
    """1x6x6 -> strided padded conv (2, 3, 3) -> tanh -> dilated padded conv (3, 3, 3) ->
    softplus -> flatten -> linear 3."""
    L = minifim.layers
    return [
        L.Conv2d(1, 2, 3, stride=2, padding=1),
        L.Tanh(),
        L.Conv2d(2, 3, 2, padding=1, dilation=2, bias=bias),
        L.Softplus(),
        L.Flatten(),
        L.Linear(27, 3),
    ]


def _sequence_layers(out=3):
    """(R, D) = (3, 2) -> linear 4 on every position -> tanh -> linear ``out``: outputs (3, out)."""
    L = minifim.layers
    return [L.Linear(2, 4), L.Tanh(), L.Linear(4, out)]


def _reduce_layers():
    """(R, D) = (4, 3) -> linear 5 on every position -> softplus -> mean over the positions ->
    linear 3 (the reduce setting: weight sharing that does not reach the output)."""
    L = minifim.layers
    return [L.Linear(3, 5), L.Softplus(), L.Mean(1), L.Linear(5, 3)]


#: Convolutional networks on 1x6x6 inputs: a strided padded and a dilated convolution.
CNN_CASES = [
    make_sequential_case("cnn", _cnn_layers(), (1, 6, 6), "categorical", N=3, seed=201),
    make_sequential_case("cnn-nobias", _cnn_layers(False), (1, 6, 6), "gaussian", N=3, seed=202),
]

#: Dense layers on every position of a sequence with positional outputs (the expand setting):
#: outputs (N, R, C), one target per position, a sample's log-likelihood sums its positions.
SEQUENCE_CASES = [
    make_sequential_case("sequence", _sequence_layers(), (3, 2), "categorical", N=4, seed=211),
    make_sequential_case("sequence", _sequence_layers(2), (3, 2), "bernoulli", N=3, seed=212),
    make_sequential_case("sequence", _sequence_layers(2), (3, 2), "gaussian", N=3, seed=213),
]

#: Weight sharing reduced by a Mean before the classifier (the reduce setting): outputs (N, C).
REDUCE_CASES = [
    make_sequential_case("reduce", _reduce_layers(), (4, 3), "categorical", N=4, seed=221),
]

SEQUENTIAL_CASES = CNN_CASES + SEQUENCE_CASES + REDUCE_CASES
