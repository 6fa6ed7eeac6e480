"""Conventions shared by every layer above the model: the reduction and curvature inputs.

- **Reduction.** A quantity summed over the ``N`` samples is scaled by ``c``:
  ``c = 1/N`` for ``reduction="mean"`` (the default everywhere in minifim) and ``c = 1`` for
  ``"sum"`` (:func:`reduction_scale`; the vocabulary is :class:`minifim.options.Reduction`).
- **Curvature inputs.** Every curvature of a kind ``fisher`` is built from validated
  ``(theta, X)``, the data targets for the empirical Fisher, and Monte-Carlo labels drawn ONCE
  for all samples for ``"mc"`` (so every chunking and every route sees the same labels):
  :func:`prepare_inputs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_generator, check_int, check_net
from ..options import FisherKind, Reduction, as_option

if TYPE_CHECKING:
    from .model import Sequential

__all__ = ["REDUCTIONS", "reduction_scale", "prepare_inputs"]

#: The reductions, ``("mean", "sum")`` as :class:`~minifim.options.Reduction` members.
REDUCTIONS: tuple[Reduction, ...] = tuple(Reduction)


def reduction_scale(reduction: str, N: int) -> float:
    """``c`` of a reduction over ``N`` samples: ``1 / N`` for ``"mean"``, ``1`` for ``"sum"``.

    Raises ``ValueError`` naming ``reduction`` for another value, and naming ``X`` when
    ``N < 1`` (no samples).
    """
    reduction = as_option(reduction, Reduction, "reduction")
    if N < 1:
        raise ValueError(f"X: expected at least one sample (N >= 1), received N = {N}")
    return 1.0 / N if reduction == "mean" else 1.0


def prepare_inputs(
    net: Sequential, theta: Any, X: Any, y: Any, fisher: str, n_samples: int, rng: Any
) -> tuple[np.ndarray, np.ndarray, Any, np.ndarray | None]:
    """Validate the inputs of a curvature of kind ``fisher`` and draw its Monte-Carlo labels.

    Parameters
    ----------
    net : Sequential
    theta : array_like, shape (P,)
    X : array_like, shape (N, D)
    y : targets or None
        Required (and validated) for ``fisher="empirical"`` and for ``fisher="ggn"`` when
        the likelihood's link is not canonical (its loss Hessian depends on the labels);
        passed through otherwise.
    fisher : str
        A :class:`~minifim.options.FisherKind`.
    n_samples : int
        ``S``, Monte-Carlo labels per input (``fisher="mc"``).
    rng : numpy.random.Generator or int
        Their generator (``fisher="mc"``; ``None`` is refused there).

    Returns
    -------
    theta : ndarray, shape (P,)
    X : ndarray, shape (N, D)
    y : targets in canonical dtype, or as given
    y_samples : ndarray with a leading axis of ``S``, or None
        ``S`` labels per input drawn from ``p_theta(y | x_n)`` for ``"mc"``, at once for all
        samples (independent of any later chunking).
    """
    check_net(net)
    fisher = as_option(fisher, FisherKind, "fisher")
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    N = X.shape[0]
    y_samples = None
    if fisher == "empirical":
        if y is None:
            raise ValueError("y: the empirical Fisher needs the data targets y, received None")
        y = net.check_targets(y, N)
    elif fisher == "ggn" and not net.likelihood.canonical:
        if y is None:
            raise TypeError(
                f"y: the GGN of the {net.likelihood.describe()} likelihood (non-canonical "
                "link) depends on the labels, J^T H_f(y) J; pass the targets y (fisher='true' "
                "is its expectation over the model's labels), received None"
            )
        y = net.check_targets(y, N)
    elif fisher == "mc":
        k = check_int(n_samples, "n_samples", 1)
        rng = as_generator(rng)
        y_samples = net.sample_targets(net.apply(theta, X), rng, k)
    return theta, X, y, y_samples
