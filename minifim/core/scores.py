"""Exact per-sample scores and output Jacobians by batched backpropagation.

A dense layer ``z = a W^T + b`` has the per-sample Jacobian of any scalar ``s`` with respect to
``W`` equal to an outer product ``(ds/dz) a^T``. Backpropagating a batch of output-space seeds
``E: (N, K, C)`` through the network therefore gives, for every sample and seed, the gradient
``E_nk^T J_n: (P,)`` as per-layer factors ``B_l: (N, K, out_l)`` (the seed carried back to the
pre-activations of layer ``l``) and the layer inputs ``a_l: (N, in_l)``; the ``W_l`` block of the
gradient is ``B_l[n, k] outer a_l[n]`` and the ``b_l`` block is ``B_l[n, k]``. Every curvature
in minifim is built from these two arrays:

- seeds ``e_y - p`` etc. (the output-space score) give per-sample scores ``S: (N, P)``;
- seeds ``I_C`` give output Jacobians ``J: (N, C, P)``;
- seeds ``R_n`` (``R^T R = Lambda``) give the factor of the true Fisher.

One GEMM per layer moves the whole batch back; there is no Python loop over samples.
``backend="autograd"`` computes the same quantities with the generic ``autograd`` package
differentiating :meth:`MLP.forward` (an independent route for tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from autograd import jacobian
from numpy.typing import ArrayLike

from .._validation import as_float_array, check_net
from ..memory import require_memory
from ..options import ScoreBackend, as_option, deprecated_keywords

if TYPE_CHECKING:
    from .model import MLP

__all__ = [
    "per_sample_scores",
    "output_jacobians",
    "jacobian_vector_product",
    "vector_jacobian_product",
]


@dataclass
class ForwardCache:
    """Forward pass of a batch: layer weights, layer inputs and pre-activations.

    ``acts[l]: (N, in_l)`` is the input of layer ``l`` (``acts[0] = X``), ``pres[l]: (N, out_l)``
    its pre-activation, ``outputs: (N, C)`` the network outputs (``pres[-1]``).
    """

    layers: list[tuple[np.ndarray, np.ndarray]]
    acts: list[np.ndarray]
    pres: list[np.ndarray]

    @property
    def outputs(self) -> np.ndarray:
        return self.pres[-1]

    @property
    def num_samples(self) -> int:
        return self.acts[0].shape[0]


def forward_cache(net: MLP, theta: np.ndarray, X: np.ndarray) -> ForwardCache:
    """Run the forward pass keeping every layer input and pre-activation (validated inputs)."""
    layers = [(np.asarray(W), np.asarray(b)) for W, b in net._unflatten(theta)]
    acts: list[np.ndarray] = []
    pres: list[np.ndarray] = []
    a = X
    for l, (W, b) in enumerate(layers):
        acts.append(a)
        z = a @ W.T + b
        pres.append(z)
        if l < len(layers) - 1:
            a = np.asarray(net.activation.phi(z))
    return ForwardCache(layers, acts, pres)


def backprop_seeds(net: MLP, cache: ForwardCache, seeds: np.ndarray) -> list[np.ndarray]:
    """Carry output-space seeds ``E: (N, K, C)`` back to every layer's pre-activations.

    Returns ``[B_0, ..., B_{L-1}]`` with ``B_l: (N, K, out_l)``, ``B_l[n, k] = E_nk^T dz_L/dz_l``.
    Recursion: ``B_{l-1} = (B_l W_l) * phi'(z_{l-1})``, one GEMM of ``(N K, out_l) x
    (out_l, in_l)`` per layer.
    """
    N, K, _ = seeds.shape
    Bs: list[np.ndarray] = [seeds] * net.num_layers  # every entry is overwritten below
    B = seeds
    for l in range(net.num_layers - 1, -1, -1):
        Bs[l] = B
        if l > 0:
            W = cache.layers[l][0]
            back = (B.reshape(N * K, -1) @ W).reshape(N, K, -1)
            B = back * np.asarray(net.activation.dphi(cache.pres[l - 1]))[:, None, :]
    return Bs


def _block_view(U: np.ndarray, sl: slice, shape: tuple[int, ...]) -> np.ndarray:
    view = U[..., sl].reshape(U.shape[:-1] + shape)
    if not np.may_share_memory(view, U):  # pragma: no cover - guarded invariant
        raise AssertionError("internal: expected a view into the factor array")
    return view


def expand_gradients(net: MLP, acts: list[np.ndarray], Bs: list[np.ndarray]) -> np.ndarray:
    """Materialise the per-sample, per-seed gradients ``U: (N, K, P)`` in flat order.

    ``acts[l]: (N, in_l)`` layer inputs, ``Bs[l]: (N, K, out_l)`` backpropagated seeds.
    """
    N, K, _ = Bs[-1].shape
    U = np.empty((N, K, net.num_params))
    for (out, inp), (ws, bs), a, B in zip(net.shapes, net.layer_slices, acts, Bs):
        np.multiply(B[:, :, :, None], a[:, None, None, :], out=_block_view(U, ws, (out, inp)))
        U[:, :, bs] = B
    return U


def _validated(net: MLP, theta: ArrayLike, X: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    check_net(net)
    return net.check_theta(theta), net.check_inputs(X)


@deprecated_keywords(method="backend")
def per_sample_scores(
    net: MLP, theta: ArrayLike, X: ArrayLike, y: ArrayLike, backend: str | ScoreBackend = "backprop"
) -> np.ndarray:
    """Per-sample scores ``S: (N, P)``, ``S[n] = grad_theta log p_theta(y_n | x_n)``.

    Parameters
    ----------
    net : MLP
    theta : ndarray, shape (P,)
    X : ndarray, shape (N, D)
    y : ndarray, targets of the likelihood (``(N,)`` labels or ``(N, C)``)
    backend : {"backprop", "autograd"}
        The differentiation backend: batched backpropagation of the output-space score
        ``g_n = d log p / d f`` (default), or the generic ``autograd.jacobian`` of the
        per-sample log-likelihoods (formerly ``method=``, deprecated).

    Notes
    -----
    ``S[n] = J_n^T g_n``; the ``W_l`` block is ``B_l[n] outer a_l[n]``.
    """
    theta, X = _validated(net, theta, X)
    backend = as_option(backend, ScoreBackend, "backend")
    y = net.check_targets(y, X.shape[0])
    N = X.shape[0]
    require_memory(
        8 * N * net.num_params,
        f"per-sample scores (N, P) = ({N}, {net.num_params}) float64",
        "the empirical Fisher's diagonal "
        "(fisher_diagonal) or operator (fisher_operator), which never form S",
    )
    if backend == "autograd":
        lik = net.likelihood
        return jacobian(lambda th: lik._log_prob(net.apply(th, X), y))(theta)
    cache = forward_cache(net, theta, X)
    seeds = net.likelihood._grad_log_prob(cache.outputs, y)[:, None, :]
    Bs = backprop_seeds(net, cache, seeds)
    return expand_gradients(net, cache.acts, Bs)[:, 0, :]


@deprecated_keywords(method="backend")
def output_jacobians(
    net: MLP, theta: ArrayLike, X: ArrayLike, backend: str | ScoreBackend = "backprop"
) -> np.ndarray:
    """Output Jacobians ``J: (N, C, P)``, ``J[n, c] = grad_theta f_c(x_n)``.

    ``backend="backprop"`` backpropagates the ``C`` unit seeds of every sample at once;
    ``backend="autograd"`` uses ``autograd.jacobian`` of :meth:`MLP.forward` (formerly
    ``method=``, deprecated).
    """
    theta, X = _validated(net, theta, X)
    backend = as_option(backend, ScoreBackend, "backend")
    N, C, P = X.shape[0], net.output_dim, net.num_params
    require_memory(
        8 * N * C * P,
        f"output Jacobians (N, C, P) = ({N}, {C}, {P}) float64",
        "jacobian_vector_product / vector_jacobian_product (matrix-free), or "
        "fewer samples per call",
    )
    if backend == "autograd":
        return jacobian(lambda th: net.apply(th, X))(theta)
    cache = forward_cache(net, theta, X)
    seeds = np.broadcast_to(np.eye(C), (N, C, C))
    return expand_gradients(net, cache.acts, backprop_seeds(net, cache, seeds))


def _split_tangents(net: MLP, V: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    m = V.shape[1]
    for (out, inp), (ws, bs) in zip(net.shapes, net.layer_slices):
        yield V[ws].T.reshape(m, out, inp), V[bs].T


def jvp_cached(net: MLP, cache: ForwardCache, V: np.ndarray) -> np.ndarray:
    """Forward-mode products ``J_n V``: ``V: (P, m) -> (N, C, m)`` on a cached forward pass."""
    m = V.shape[1]
    N = cache.num_samples
    da = None
    for l, ((W, _), (dW, db)) in enumerate(zip(cache.layers, _split_tangents(net, V))):
        a = cache.acts[l]
        dz = np.matmul(a[None], dW.transpose(0, 2, 1)) + db[:, None, :]  # (m, N, out)
        if da is not None:
            dz += (da.reshape(m * N, -1) @ W.T).reshape(m, N, -1)
        if l < net.num_layers - 1:
            da = np.asarray(net.activation.dphi(cache.pres[l]))[None] * dz
    return dz.transpose(1, 2, 0)


def vjp_cached(net: MLP, cache: ForwardCache, U: np.ndarray) -> np.ndarray:
    """Reverse-mode products ``sum_n J_n^T U_n``: ``U: (N, C, m) -> (P, m)``."""
    N, _, m = U.shape
    out = np.empty((net.num_params, m))
    delta = U.transpose(2, 0, 1)  # (m, N, C)
    for l in range(net.num_layers - 1, -1, -1):
        (out_l, in_l), (ws, bs) = net.shapes[l], net.layer_slices[l]
        a = cache.acts[l]
        gW = np.matmul(np.ascontiguousarray(delta.transpose(0, 2, 1)), a[None])  # (m, out, in)
        out[ws] = gW.reshape(m, out_l * in_l).T
        out[bs] = delta.sum(axis=1).T
        if l > 0:
            W = cache.layers[l][0]
            delta = (delta.reshape(m * N, out_l) @ W).reshape(m, N, in_l) * np.asarray(
                net.activation.dphi(cache.pres[l - 1])
            )[None]
    return out


def _as_tangents(net: MLP, V: ArrayLike, name: str) -> np.ndarray:
    V = as_float_array(V, name)
    if V.ndim not in (1, 2) or V.shape[0] != net.num_params:
        raise ValueError(
            f"{name}: expected shape ({net.num_params},) or ({net.num_params}, m), "
            f"received shape {V.shape}"
        )
    return V


def jacobian_vector_product(net: MLP, theta: ArrayLike, X: ArrayLike, v: ArrayLike) -> np.ndarray:
    """``J_n v`` for every sample: ``v: (P,) -> (N, C)`` (or ``(P, m) -> (N, C, m)``).

    Forward-mode differentiation through the cached forward pass; never forms ``J``.
    """
    theta, X = _validated(net, theta, X)
    v = _as_tangents(net, v, "v")
    out = jvp_cached(net, forward_cache(net, theta, X), v.reshape(net.num_params, -1))
    return out[:, :, 0] if v.ndim == 1 else out


def vector_jacobian_product(net: MLP, theta: ArrayLike, X: ArrayLike, u: ArrayLike) -> np.ndarray:
    """``sum_n J_n^T u_n``: ``u: (N, C) -> (P,)`` (or ``(N, C, m) -> (P, m)``)."""
    theta, X = _validated(net, theta, X)
    u = as_float_array(u, "u")
    N, C = X.shape[0], net.output_dim
    if u.shape[:2] != (N, C) or u.ndim not in (2, 3):
        raise ValueError(f"u: expected shape ({N}, {C}) or ({N}, {C}, m), received shape {u.shape}")
    out = vjp_cached(net, forward_cache(net, theta, X), u.reshape(N, C, -1))
    return out[:, 0] if u.ndim == 2 else out
