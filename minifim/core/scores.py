"""Exact per-sample scores and output Jacobians by batched backpropagation.

A parametric layer ``z = fold(unfold(a) W^T + b)`` (:mod:`minifim.core.layers`) has the
per-sample Jacobian of any scalar ``s`` with respect to ``W`` equal to ``sum_r (ds/dz_r)^T
unfold(a)_r``, a sum over the ``R`` positions sharing the weight (an outer product for a plain
dense layer, ``R = 1``). Backpropagating a batch of output-space seeds ``E: (n, K,
*output_shape)`` through the network therefore gives, for every sample and seed, the gradient
``E_nk^T J_n: (P,)`` as per-layer factors ``B_l: (n, K, R_l, out_l)`` (the seed carried back to
the outputs of parametric layer ``l`` in the unfolded layout) and the unfolded layer inputs
``a_l: (n, R_l, in_l)``; the ``W_l`` block of the gradient is ``B_l[i, k]^T a_l[i]`` and the
``b_l`` block is ``B_l[i, k].sum(axis=0)``. Every curvature in minifim is built from these two
arrays:

- seeds ``e_y - p`` etc. (the output-space score) give per-sample scores ``S: (N, P)``;
- unit seeds give output Jacobians ``J: (N, *output_shape, P)``;
- seeds ``R_n`` (``R^T R = Lambda``, per position) give the factor of the true Fisher.

One GEMM per parametric layer (and a col2im over the kernel offsets for ``Conv2d``) moves the
whole batch back; there is no Python loop over samples or positions. ``backend="autograd"``
computes the same quantities with the generic ``autograd`` package differentiating
:meth:`Sequential.apply` (an independent route for tests: its convolution is a gather whose
adjoint autograd derives itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from autograd import jacobian
from numpy.typing import ArrayLike

from .._validation import as_float_array, check_net
from ..memory import require_memory
from ..options import ScoreBackend, as_option, deprecated_keywords
from .layers import Conv2d, ParametricLayer

if TYPE_CHECKING:
    from .model import Sequential

__all__ = [
    "per_sample_scores",
    "output_jacobians",
    "jacobian_vector_product",
    "vector_jacobian_product",
]


@dataclass
class ForwardCache:
    """Forward pass of a batch of ``n`` samples, kept for the backward passes.

    ``params[l] = (W_l: (out_l, in_l), b_l: (out_l,) or None)``: parametric layer ``l``'s
    weight as a matrix; ``inputs[j]: (n, *in_shape_j)``: the input of ``net.layers[j]``
    (``inputs[0] = X``); ``acts[l]: (n, R_l, in_l)``: parametric layer ``l``'s UNFOLDED input
    (im2col patches for ``Conv2d``; ``R_l = 1`` for a plain MLP layer); ``outputs: (n,
    *output_shape)``.
    """

    params: list[tuple[np.ndarray, np.ndarray | None]]
    inputs: list[np.ndarray]
    acts: list[np.ndarray]
    outputs: np.ndarray

    @property
    def layers(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Alias of :attr:`params` (the weights as matrices)."""
        return self.params

    @property
    def num_samples(self) -> int:
        return self.inputs[0].shape[0]


def forward_cache_bytes(net: Sequential, n: int) -> int:
    """Bytes of :func:`forward_cache` for ``n`` samples: every layer's input, the unfolded
    inputs (im2col patches) and the outputs."""
    per = sum(math.prod(s) for s in net.layer_input_shapes) + math.prod(net.output_shape)
    per += sum(layer.positions * layer.fan_in for layer in net.parametric_layers)
    return 8 * n * per


def forward_cache(net: Sequential, theta: np.ndarray, X: np.ndarray) -> ForwardCache:
    """Run the forward pass keeping every layer input and unfolded input (validated inputs).

    Parametric layers compute ``z = unfold(a) W^T + b`` as one GEMM of ``(n R, in) x (in,
    out)``; the im2col patches are memory-guarded.
    """
    n = X.shape[0]
    patches = sum(
        layer.positions * layer.fan_in
        for layer in net.parametric_layers
        if isinstance(layer, Conv2d)
    )
    if patches:  # the im2col copies (a Linear's unfolded input is a view)
        require_memory(
            forward_cache_bytes(net, n),
            f"forward cache of {n} samples with im2col patches (n, H_out W_out, C_in kh kw) "
            f"of {patches} floats per sample",
            "fewer samples per call (chunk_size=) or smaller inputs",
        )
    params = [(np.asarray(W), None if b is None else np.asarray(b)) for W, b in net.matrices(theta)]
    inputs: list[np.ndarray] = []
    acts: list[np.ndarray] = []
    a = X
    l = 0
    for layer in net.layers:
        inputs.append(a)
        if isinstance(layer, ParametricLayer):
            W, b = params[l]
            (out, inp), R = layer.matrix_shape, layer.positions
            A = np.asarray(layer.unfold(a))
            acts.append(A)
            z = A.reshape(n * R, inp) @ W.T if b is None else A.reshape(n * R, inp) @ W.T + b
            a = np.asarray(layer.fold(z.reshape(n, R, out)))
            l += 1
        else:
            a = np.asarray(layer.apply(a))
    return ForwardCache(params, inputs, acts, a)


def backprop_seeds(net: Sequential, cache: ForwardCache, seeds: np.ndarray) -> list[np.ndarray]:
    """Carry output-space seeds ``E: (n, K, *output_shape)`` back to every parametric layer.

    Returns ``[B_0, ..., B_{L-1}]`` with ``B_l: (n, K, R_l, out_l)``: the seeds at layer
    ``l``'s outputs (pre-activations) in the unfolded layout, ``B_l[i, k] = E_ik^T d f /
    d z_l``. Parametric layers cost one GEMM ``(n K R, out) x (out, in)`` and a col2im
    (``Conv2d``); activations, ``Flatten`` and ``Mean`` are elementwise maps and reshapes.
    """
    n, K = seeds.shape[:2]
    Bs: list[np.ndarray] = [seeds] * net.num_layers  # every entry is overwritten below
    B = seeds
    l = net.num_layers - 1
    first = net.parametric_indices[0]
    for j in range(len(net.layers) - 1, first - 1, -1):
        layer = net.layers[j]
        if isinstance(layer, ParametricLayer):
            Bu = layer.unfold_seeds(B)
            Bs[l] = Bu
            if j > first:
                B = layer.input_seeds(
                    B.reshape((n * K,) + layer.out_shape), cache.params[l][0]
                ).reshape((n, K) + layer.in_shape)
            l -= 1
        else:
            B = layer.backward(B, cache.inputs[j], 0)
    return Bs


def _block_view(U: np.ndarray, sl: slice, shape: tuple[int, ...]) -> np.ndarray:
    view = U[..., sl].reshape(U.shape[:-1] + shape)
    if not np.may_share_memory(view, U):  # pragma: no cover - guarded invariant
        raise AssertionError("internal: expected a view into the factor array")
    return view


def layer_gradients(
    layer: ParametricLayer, a: np.ndarray, B: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Per-sample, per-seed weight gradients of one layer: ``(n, K, out, in)``.

    ``a: (n, R, in)`` the unfolded inputs, ``B: (n, K, R, out)`` the seeds; ``G[i, k] =
    B[i, k]^T a[i]``, the sum over the ``R`` positions sharing the weight (an outer product
    for ``R = 1``).
    """
    n, K, R, o = B.shape
    i = a.shape[2]
    if out is None:
        out = np.empty((n, K, o, i))
    if R == 1:
        np.multiply(B[:, :, 0, :, None], a[:, None, 0, None, :], out=out)
    else:  # one (K out, R) x (R, in) GEMM per sample, all seeds at once
        Bt = B.transpose(0, 1, 3, 2).reshape(n, K * o, R)
        out[...] = np.matmul(Bt, a).reshape(n, K, o, i)
    return out


def expand_gradients(net: Sequential, acts: list[np.ndarray], Bs: list[np.ndarray]) -> np.ndarray:
    """Materialise the per-sample, per-seed gradients ``U: (n, K, P)`` in flat order.

    ``acts[l]: (n, R_l, in_l)`` unfolded layer inputs, ``Bs[l]: (n, K, R_l, out_l)``
    backpropagated seeds: the ``W_l`` block is ``Bs[l][i, k]^T acts[l][i]`` and the ``b_l``
    block ``Bs[l][i, k].sum(axis=0)``.
    """
    n, K = Bs[-1].shape[:2]
    U = np.empty((n, K, net.num_params))
    for layer, (ws, bs), a, B in zip(net.parametric_layers, net.layer_slices, acts, Bs):
        layer_gradients(layer, a, B, out=_block_view(U, ws, layer.matrix_shape))
        if layer.bias:
            U[:, :, bs] = B[:, :, 0] if B.shape[2] == 1 else B.sum(axis=2)
    return U


def _validated(net: Sequential, theta: ArrayLike, X: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    check_net(net)
    return net.check_theta(theta), net.check_inputs(X)


@deprecated_keywords(method="backend")
def per_sample_scores(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    backend: str | ScoreBackend = "backprop",
) -> np.ndarray:
    """Per-sample scores ``S: (N, P)``, ``S[n] = grad_theta log p_theta(y_n | x_n)``.

    Parameters
    ----------
    net : Sequential (or MLP)
    theta : ndarray, shape (P,)
    X : ndarray, shape ``(N, *input_shape)``
    y : ndarray, targets of the likelihood (``(N,)`` labels or ``(N, C)``; with positional
        outputs ``(N, *pos)`` or ``(N, *pos, C)``)
    backend : {"backprop", "autograd"}
        The differentiation backend: batched backpropagation of the output-space score
        ``g_n = d log p / d f`` (default), or the generic ``autograd.jacobian`` of the
        per-sample log-likelihoods (formerly ``method=``, deprecated).

    Notes
    -----
    ``S[n] = J_n^T g_n``; the ``W_l`` block is ``B_l[n]^T a_l[n]``, a sum over the positions
    sharing the weight; with positional outputs the sample's score sums its positions' scores.
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
        return jacobian(lambda th: net.output_log_prob(net.apply(th, X), y))(theta)
    cache = forward_cache(net, theta, X)
    seeds = net.output_score(cache.outputs, y)[:, None]
    Bs = backprop_seeds(net, cache, seeds)
    return expand_gradients(net, cache.acts, Bs)[:, 0, :]


@deprecated_keywords(method="backend")
def output_jacobians(
    net: Sequential, theta: ArrayLike, X: ArrayLike, backend: str | ScoreBackend = "backprop"
) -> np.ndarray:
    """Output Jacobians ``J: (N, *output_shape, P)``, ``J[n, c] = grad_theta f_c(x_n)``.

    ``(N, C, P)`` for outputs ``(N, C)``. ``backend="backprop"`` backpropagates the unit seeds
    of every output of every sample at once; ``backend="autograd"`` uses ``autograd.jacobian``
    of :meth:`Sequential.forward` (formerly ``method=``, deprecated).
    """
    theta, X = _validated(net, theta, X)
    backend = as_option(backend, ScoreBackend, "backend")
    N, Q, P = X.shape[0], math.prod(net.output_shape), net.num_params
    require_memory(
        8 * N * Q * P,
        f"output Jacobians (N, *output_shape, P) = ({N}, {Q}, {P}) float64",
        "jacobian_vector_product / vector_jacobian_product (matrix-free), or "
        "fewer samples per call",
    )
    if backend == "autograd":
        return jacobian(lambda th: net.apply(th, X))(theta)
    cache = forward_cache(net, theta, X)
    seeds = np.broadcast_to(np.eye(Q).reshape((Q,) + net.output_shape), (N, Q) + net.output_shape)
    U = expand_gradients(net, cache.acts, backprop_seeds(net, cache, seeds))
    return U.reshape((N,) + net.output_shape + (P,))


def jvp_cached(net: Sequential, cache: ForwardCache, V: np.ndarray) -> np.ndarray:
    """Forward-mode products ``J_n V``: ``V: (P, m) -> (n, *output_shape, m)`` on a cached
    forward pass (one GEMM per parametric layer for the tangent of its input, one for its
    weights)."""
    m = V.shape[1]
    n = cache.num_samples
    da: np.ndarray | None = None  # tangent (m, n, *shape) of the current activation
    l = 0
    for j, layer in enumerate(net.layers):
        if isinstance(layer, ParametricLayer):
            W, _ = cache.params[l]
            (out, inp), R = layer.matrix_shape, layer.positions
            ws, bs = net.layer_slices[l]
            dW = V[ws].T.reshape(m, out, inp)
            A = cache.acts[l].reshape(n * R, inp)
            dz = np.matmul(A[None], dW.transpose(0, 2, 1))  # (m, n R, out)
            if layer.bias:
                dz = dz + V[bs].T[:, None, :]
            if da is not None:
                cols = np.asarray(layer.unfold(da.reshape((m * n,) + layer.in_shape)))
                dz += (cols.reshape(m * n * R, inp) @ W.T).reshape(m, n * R, out)
            da = np.asarray(layer.fold(dz.reshape(m * n, R, out))).reshape((m, n) + layer.out_shape)
            l += 1
        elif da is not None:
            da = layer.tangent(da, cache.inputs[j])
    if da is None:  # pragma: no cover - a Sequential has a parametric layer
        raise AssertionError("internal: no parametric layer")
    return np.moveaxis(da, 0, -1)


def vjp_cached(net: Sequential, cache: ForwardCache, U: np.ndarray) -> np.ndarray:
    """Reverse-mode products ``sum_n J_n^T U_n``: ``U: (n, *output_shape, m) -> (P, m)``."""
    n, m = U.shape[0], U.shape[-1]
    out = np.empty((net.num_params, m))
    delta = np.moveaxis(U, -1, 0)  # (m, n, *output_shape)
    l = net.num_layers - 1
    first = net.parametric_indices[0]
    for j in range(len(net.layers) - 1, first - 1, -1):
        layer = net.layers[j]
        if isinstance(layer, ParametricLayer):
            (out_l, in_l), R = layer.matrix_shape, layer.positions
            ws, bs = net.layer_slices[l]
            d2 = layer.unfold_seeds(delta).reshape(m, n * R, out_l)
            A = cache.acts[l].reshape(n * R, in_l)
            gW = np.matmul(np.ascontiguousarray(d2.transpose(0, 2, 1)), A[None])  # (m, out, in)
            out[ws] = gW.reshape(m, out_l * in_l).T
            if layer.bias:
                out[bs] = d2.sum(axis=1).T
            if j > first:
                delta = layer.input_seeds(
                    delta.reshape((m * n,) + layer.out_shape), cache.params[l][0]
                ).reshape((m, n) + layer.in_shape)
            l -= 1
        else:
            delta = layer.backward(delta, cache.inputs[j], 1)
    return out


def _as_tangents(net: Sequential, V: ArrayLike, name: str) -> np.ndarray:
    V = as_float_array(V, name)
    if V.ndim not in (1, 2) or V.shape[0] != net.num_params:
        raise ValueError(
            f"{name}: expected shape ({net.num_params},) or ({net.num_params}, m), "
            f"received shape {V.shape}"
        )
    return V


def jacobian_vector_product(
    net: Sequential, theta: ArrayLike, X: ArrayLike, v: ArrayLike
) -> np.ndarray:
    """``J_n v`` for every sample: ``v: (P,) -> (N, *output_shape)`` (or ``(P, m) -> (N,
    *output_shape, m)``).

    Forward-mode differentiation through the cached forward pass; never forms ``J``.
    """
    theta, X = _validated(net, theta, X)
    v = _as_tangents(net, v, "v")
    out = jvp_cached(net, forward_cache(net, theta, X), v.reshape(net.num_params, -1))
    return out[..., 0] if v.ndim == 1 else out


def vector_jacobian_product(
    net: Sequential, theta: ArrayLike, X: ArrayLike, u: ArrayLike
) -> np.ndarray:
    """``sum_n J_n^T u_n``: ``u: (N, *output_shape) -> (P,)`` (or ``(N, *output_shape, m) ->
    (P, m)``)."""
    theta, X = _validated(net, theta, X)
    u = as_float_array(u, "u")
    N = X.shape[0]
    want = (N,) + net.output_shape
    k = len(want)
    if u.shape[:k] != want or u.ndim not in (k, k + 1):
        shown = ", ".join(map(str, want))
        raise ValueError(f"u: expected shape ({shown}) or ({shown}, m), received shape {u.shape}")
    out = vjp_cached(net, forward_cache(net, theta, X), u.reshape(want + (-1,)))
    return out[:, 0] if u.ndim == k else out
