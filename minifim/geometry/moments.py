"""Exact statistics of the Monte-Carlo Fisher estimator, by enumeration of the outputs.

:func:`output_outcomes` writes each input's label distribution as weighted outcomes with their
scores; :func:`mc_error_moments` uses them for the exact mean and variance of the squared
error ``|F_mc - F|_F^2`` of a ``k``-sample Monte-Carlo Fisher (the sampling band that
:func:`minifim.oracle.diagnose` tests a candidate against).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_int, check_net
from ..core.model import Sequential
from ..core.scores import backprop_seeds, expand_gradients, forward_cache
from ..memory import require_memory
from ..options import Bias, as_option

__all__ = ["MAX_OUTCOMES", "output_outcomes", "mc_error_moments", "mc_kfac_error_moments"]

#: Largest number of outcomes per input enumerated (``C``, ``2^C`` or ``5^C``).
MAX_OUTCOMES = 4096


def output_outcomes(net: Sequential, theta: Any, X: Any) -> tuple[np.ndarray, np.ndarray]:
    """The output distribution of every input as weighted outcomes: ``(w, U)``.

    ``w: (N, O)`` are weights summing to 1 per input and ``U: (N, O, P)`` the scores
    ``grad_theta log p(y_o | x_n)`` of the outcomes, such that
    ``E_{y ~ p(y | x_n)}[h(s)] = sum_o w[n, o] h(U[n, o])``: the outcomes are those of
    :meth:`minifim.Likelihood.outcomes` (exact for every ``h`` for discrete labels; for
    polynomials of degree <= 9 per output for the Gaussian, enough for the fourth moments of
    the Fisher estimator used by :func:`mc_error_moments`). With positional outputs ``(N, R,
    C)`` the outcomes are the ``O^R`` joint labels of the independent positions (weights the
    products of the positions' weights, scores those of the whole sequence). At most
    :data:`MAX_OUTCOMES` outcomes per input (``ValueError`` otherwise).
    """
    check_net(net)
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    lik = net.likelihood
    N, C, R = X.shape[0], net.output_dim, net.positions
    O1 = lik.num_outcomes(C)
    O = O1**R
    if O > MAX_OUTCOMES:
        per = f" per position, {R} positions" if net.has_positions else ""
        raise ValueError(
            f"the output distribution has {O} outcomes per input ({lik.name}, "
            f"C = {C}, {O1} outcomes{per}), over the enumeration limit {MAX_OUTCOMES}; the "
            "exact Monte-Carlo band needs fewer outputs"
        )
    require_memory(
        8 * N * O * net.num_params,
        f"outcome scores (N, O, P) = ({N}, {O}, {net.num_params}) float64",
        "fewer samples or a diagonal candidate",
    )
    w, acts, Bs = _outcome_seeds(net, theta, X)
    return w, expand_gradients(net, acts, Bs)


def _outcome_seeds(
    net: Sequential, theta: np.ndarray, X: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """``(w, acts, Bs)``: outcome weights ``(N, O)``, the layer inputs and the outcomes'
    backpropagated seeds (``Bs[l]: (N, O, out_l)`` for a layer without positions: the K-FAC
    ``b`` of every outcome). ``theta``, ``X`` validated by the caller."""
    lik = net.likelihood
    N, C, R = X.shape[0], net.output_dim, net.positions
    O1 = lik.num_outcomes(C)
    O = O1**R
    cache = forward_cache(net, theta, X)
    F = net.flat_outputs(cache.outputs)  # (N R, C): one row per position
    w, Y = lik.outcomes(F)
    # output-space scores g = d log p(y_o | f_nr) / d f_nr of every outcome, (N R, O1, C)
    g = lik.grad_log_prob(np.repeat(F, O1, axis=0), Y.reshape((N * R * O1,) + Y.shape[2:]))
    g = g.reshape(N * R, O1, C)
    if net.has_positions:
        # joint outcomes (o_1, ..., o_R) of independent positions, o_1 slowest: the weight is
        # the product of the positions' weights, the output score sits at every position
        idx = np.indices((O1,) * R).reshape(R, -1)  # (R, O)
        w_r, g_r = w.reshape(N, R, O1), g.reshape(N, R, O1, C)
        w = np.prod([w_r[:, r, idx[r]] for r in range(R)], axis=0)  # (N, O)
        seeds = np.stack([g_r[:, r, idx[r]] for r in range(R)], axis=2)  # (N, O, R, C)
        seeds = seeds.reshape((N, O) + net.output_shape)
    else:
        seeds = g
    return w, cache.acts, backprop_seeds(net, cache, seeds)


def mc_error_moments(
    net: Sequential, theta: Any, X: Any, n_samples: int, *, diagonal: bool = False
) -> tuple[float, float]:
    """Exact mean and variance of ``D = |F_mc - F|_F^2`` for ``k = n_samples`` labels per input.

    ``F_mc = 1/N sum_n 1/k sum_j s(y_nj) s(y_nj)^T`` (or its diagonal) with independent
    ``y_nj ~ p_theta(y | x_n)``, ``F`` the true Fisher (or its diagonal).

    Notes
    -----
    With ``x_nj = phi(s(y_nj)) - E phi`` (``phi(s) = s s^T`` or ``s * s``), independent and
    zero-mean, ``F_mc - F = 1/(N k) sum_{n,j} x_nj``, so with ``e_n = E|x_n|^2``,
    ``f_n = E|x_n|^4`` and ``t_nm = E[(x_n . x'_m)^2]`` (independent copies):
    ``E D = sum_n e_n / (N^2 k)`` and
    ``Var D = [k sum f_n - k sum e_n^2 + 2 k^2 sum_{n,m} t_nm - 2 k sum_n t_nn] / (N k)^4``.
    Every moment is a finite sum over the outcomes of :func:`output_outcomes`, through the
    Gram matrix ``<phi(s_no), phi(s_mo')>`` = ``(s_no . s_mo')^2`` (dense) or
    ``(s_no^2) . (s_mo'^2)`` (diagonal).
    """
    check_net(net)
    k = check_int(n_samples, "n_samples", 1)
    w, U = output_outcomes(net, theta, X)
    N, O, P = U.shape
    require_memory(
        3 * 8 * (N * O) ** 2,
        f"the outcome Gram matrices (N O)^2 = ({N * O})^2 float64, three of them",
        "fewer samples in the fixture (the band is exact but needs all pairs of outcomes)",
    )
    flat = U.reshape(N * O, P)
    if diagonal:
        Q = flat * flat
        K = Q @ Q.T
    else:
        K = (flat @ flat.T) ** 2
    return _gram_moments(w, K, k)


def _gram_moments(w: np.ndarray, K: np.ndarray, k: int) -> tuple[float, float]:
    """Exact ``(E D, Var D)`` of ``D = |1/(N k) sum_{n,j} x_nj|^2`` from the outcome weights
    ``w: (N, O)`` and the uncentred Gram matrix ``K: (N O, N O)`` of ``phi`` (see
    :func:`mc_error_moments`)."""
    N, O = w.shape
    K = K.reshape(N, O, N, O)
    # centre both arguments: Kc = K - E_o K - E_o' K + E_o E_o' K
    first = np.einsum("no,nomq->nmq", w, K)[:, None, :, :]  # E over the first outcome
    second = np.einsum("nomq,mq->nom", K, w)[:, :, :, None]  # E over the second outcome
    both = np.einsum("no,nomq,mq->nm", w, K, w)[:, None, :, None]
    Kc = K - first - second + both
    idx = np.arange(N)
    diag_blocks = Kc[idx, :, idx, :]  # (N, O, O)
    self_sq = np.einsum("noo->no", diag_blocks)  # |x_no|^2
    e = np.einsum("no,no->n", w, self_sq)
    f = np.einsum("no,no->n", w, self_sq**2)
    t = np.einsum("no,nomq,mq->nm", w, Kc**2, w)
    Nk = float(N * k)
    mean = float(e.sum()) / (N * N * k)
    var = (k * f.sum() - k * np.sum(e * e) + 2 * k * k * t.sum() - 2 * k * np.trace(t)) / Nk**4
    return mean, float(max(var, 0.0))


def mc_kfac_error_moments(
    net: Sequential, theta: Any, X: Any, n_samples: int, *, bias: str = "folded"
) -> tuple[float, float]:
    """Exact mean and variance of ``D = |K_mc - K|_F^2`` for the dense Monte-Carlo K-FAC.

    ``K = blockdiag_l(G_l kron A~_l)`` (folded) or with the separate bias block ``G_l``; the
    Monte-Carlo ``G_l = 1/N sum_n 1/k sum_j b_l(y_nj) b_l(y_nj)^T`` with ``k = n_samples``
    labels per input, ``A`` exact. ``|dG kron A|_F = |dG|_F |A|_F``, so
    ``D = sum_l c_l |dG_l|^2`` with ``c_l = |A~_l|^2`` (folded) or ``|A_l|^2 + 1``
    (separate): the moments of :func:`mc_error_moments` with the Gram matrix
    ``sum_l c_l (b_l . b_l')^2`` of the outcomes.
    """
    check_net(net)
    k = check_int(n_samples, "n_samples", 1)
    bias = as_option(bias, Bias, "bias")
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    lik = net.likelihood
    N = X.shape[0]
    O = lik.num_outcomes(net.output_dim) ** net.positions
    if O > MAX_OUTCOMES:
        raise ValueError(
            f"the output distribution has {O} outcomes per input ({lik.name}), over the "
            f"enumeration limit {MAX_OUTCOMES}; the exact Monte-Carlo band needs fewer outputs"
        )
    require_memory(
        3 * 8 * (N * O) ** 2,
        f"the outcome Gram matrices (N O)^2 = ({N * O})^2 float64, three of them",
        "fewer samples in the fixture (the band is exact but needs all pairs of outcomes)",
    )
    from .kronecker import kfac  # the exact factors' A and layer layout (bias=False layers)

    w, acts, Bs = _outcome_seeds(net, theta, X)
    # acts[l]: (N, R_l, in), Bs[l]: (N, O, R_l, out); the band needs R_l = 1 (no sharing)
    if net.has_positions or any(np.shape(a)[1:-1] not in ((), (1,)) for a in acts):
        raise ValueError(
            "net: the exact Monte-Carlo K-FAC band covers layers without weight sharing "
            "(no positions); compare a weight-shared K-FAC's factors exactly"
        )
    true = kfac(net, theta, X, None, "true", bias=bias)
    K = np.zeros((N * O, N * O))
    for A, layer, B in zip(true.A, true.layers, Bs):
        c = float(np.vdot(A, A)) + (1.0 if layer.separate_bias else 0.0)
        flat = B.reshape(N * O, B.shape[-1])
        K += c * (flat @ flat.T) ** 2
    return _gram_moments(w, K, k)
