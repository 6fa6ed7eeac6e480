"""The training objective every optimiser, penalty and curvature in minifim refers to.

``loss(theta) = c sum_n -log p_theta(y_n | x_n)`` with ``c = 1/N`` (``reduction="mean"``, the
default) or ``1`` (``"sum"``); :func:`gradient` is its exact gradient by one batched
backward pass (``-c sum_n J_n^T g_n`` with ``g_n`` the output-space score).
See :doc:`/conventions` for the symbols and the reductions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .._validation import check_net
from .conventions import reduction_scale
from .scores import forward_cache, vjp_cached

if TYPE_CHECKING:
    from .model import Sequential

__all__ = ["loss", "gradient", "loss_and_gradient", "accuracy"]


def _checked(
    net: Sequential, theta: ArrayLike, X: ArrayLike, y: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    check_net(net)
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    return theta, X, net.check_targets(y, X.shape[0])


def loss(
    net: Sequential, theta: ArrayLike, X: ArrayLike, y: ArrayLike, *, reduction: str = "mean"
) -> float:
    """Negative log-likelihood ``c sum_n -log p_theta(y_n | x_n)`` (a float).

    Parameters
    ----------
    net : Sequential
    theta : ndarray, shape (P,)
    X : ndarray, shape ``(N, *input_shape)``
    y : targets of the likelihood
    reduction : {"mean", "sum"}
    """
    theta, X, y = _checked(net, theta, X, y)
    scale = reduction_scale(reduction, X.shape[0])
    return float(-scale * np.sum(net.output_log_prob(net.apply(theta, X), y)))


def loss_and_gradient(
    net: Sequential, theta: ArrayLike, X: ArrayLike, y: ArrayLike, *, reduction: str = "mean"
) -> tuple[float, np.ndarray]:
    """``(loss, gradient: (P,))`` from one forward and one backward pass."""
    theta, X, y = _checked(net, theta, X, y)
    scale = reduction_scale(reduction, X.shape[0])
    cache = forward_cache(net, theta, X)
    value = float(-scale * np.sum(net.output_log_prob(cache.outputs, y)))  # validated above
    g_out = -scale * net.output_score(cache.outputs, y)  # (N, *output_shape)
    return value, vjp_cached(net, cache, g_out[..., None])[:, 0]


def gradient(
    net: Sequential, theta: ArrayLike, X: ArrayLike, y: ArrayLike, *, reduction: str = "mean"
) -> np.ndarray:
    """Gradient of :func:`loss`, shape ``(P,)``: ``-c sum_n J_n^T d log p(y_n | f_n) / d f``."""
    return loss_and_gradient(net, theta, X, y, reduction=reduction)[1]


def accuracy(net: Sequential, theta: ArrayLike, X: ArrayLike, y: ArrayLike) -> float:
    """Fraction of targets equal to the model's most likely prediction.

    Categorical: ``argmax_c f_c == y``; Bernoulli: every output thresholded at ``p = 1/2``
    equals its label (mean over outputs and samples; with positional outputs, also over the
    positions). Not defined for the Gaussian, heteroscedastic and Poisson likelihoods.
    """
    theta, X, y = _checked(net, theta, X, y)
    if net.likelihood.name not in ("categorical", "bernoulli"):
        raise ValueError(
            "net: accuracy is defined for categorical and bernoulli likelihoods, "
            f"received a {net.likelihood.name} likelihood (use loss)"
        )
    F = net.apply(theta, X)
    pred = net.likelihood._most_likely(F) if not net.has_positions else net.most_likely_targets(F)
    return float(np.mean(pred == y))
