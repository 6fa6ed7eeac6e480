"""The exact Hessian of the NLL from the network's structure: second-order backpropagation.

For a chain of dense layers ``z_l = a_l W_l^T + b_l``, ``a_{l+1} = phi(z_l)`` and the per-sample
loss ``ell = -log p(y | f)``, ``f = z_{L-1}``, the Hessian with respect to ``theta`` is the GGN
plus residual terms from the curvature of the hidden layers (Dangel, Harmeling & Hennig 2020,
"Modular block-diagonal curvature approximations for feedforward architectures"). Per sample,
with

- ``delta_l = d ell / d z_l: (out_l,)`` (the backpropagated gradient),
- ``Q_l = d^2 ell / d z_l^2: (out_l, out_l)``, the backpropagated Hessian:
  ``Q_{L-1} = H_out = d^2 ell / d f^2`` (at the data label), and
  ``Q_{l-1} = D_{l-1} W_l^T Q_l W_l D_{l-1} + diag(phi''(z_{l-1}) * (delta_l W_l))`` with
  ``D_{l-1} = diag(phi'(z_{l-1}))``,
- ``T_{m'm} = d z_{m'} / d z_m: (out_{m'}, out_m)`` and ``A_{m'm} = d a_{m'} / d z_m:
  (in_{m'}, out_m)`` for ``m < m'`` (``T_{m'm} = W_{m'} A_{m'm}``),

the ``(layer m, layer m')`` block (``m <= m'``) of the Hessian is

``H[W_m[k, l], W_{m'}[i, j]] = sum_n a_m[l] G[k, i] a_{m'}[j] + a_m[l] delta_{m'}[i] A_{m'm}[j, k]``

with ``G = T_{m'm}^T Q_{m'}`` (``G = Q_m`` on the diagonal, where the second term is absent);
the bias rows drop the ``a_m[l]`` factor and the bias columns the ``a_{m'}[j]`` factor and the
second term. The first term is the Kronecker-structured block the Fisher has; the second is the
coupling of a layer's weights with every earlier layer through its input. Both are assembled
together by :func:`minifim.geometry.assembly.add_layer_pair`: one batched GEMM per panel of
output units, no loop over parameters or samples, ``~2 N P^2`` multiply-adds.

Hessian-vector products use forward-over-reverse differentiation of the same backpropagation,
for a block of ``m`` vectors in one batched pass (``O(m N P)``).

This route applies to :class:`minifim.MLP` (chains of dense layers with an elementwise
activation); any other network falls back to ``autograd`` (:func:`supports_structured`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
from autograd import elementwise_grad
from scipy.linalg import blas

from .._validation import check_net
from ..core.activations import ACTIVATIONS, Activation
from .assembly import add_layer_pair, mirror_upper_to_lower

if TYPE_CHECKING:
    from ..core.model import MLP

__all__ = [
    "MLPPass",
    "mlp_forward",
    "supports_structured",
    "activation_second_derivative",
    "output_loss_derivatives",
    "structured_hessian",
    "hessian_vector_products",
    "ggn_vector_products",
    "homogeneous_inputs",
]


@dataclass
class MLPPass:
    """Forward pass of an :class:`~minifim.MLP` on ``n`` samples, kept for second order.

    ``layers[l] = (W_l: (out_l, in_l), b_l: (out_l,))``, ``acts[l]: (n, in_l)`` the input of
    dense layer ``l`` (``acts[0] = X``), ``pres[l]: (n, out_l)`` its pre-activation
    (``pres[-1]`` the outputs ``f``).
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


def mlp_forward(net: MLP, theta: np.ndarray, X: np.ndarray) -> MLPPass:
    """``z_l = a_l W_l^T + b_l``, ``a_{l+1} = phi(z_l)``, keeping inputs and pre-activations
    (validated ``theta: (P,)``, ``X: (n, D)``)."""
    check_net(net)
    layers = [(np.asarray(W), np.asarray(b)) for W, b in net.unflatten(theta)]
    acts: list[np.ndarray] = []
    pres: list[np.ndarray] = []
    a = X
    for l, (W, b) in enumerate(layers):
        acts.append(a)
        z = a @ W.T + b
        pres.append(z)
        if l < len(layers) - 1:
            a = np.asarray(net.activation.phi(z))
    return MLPPass(layers, acts, pres)


def _d2_tanh(z: np.ndarray) -> np.ndarray:
    t = np.tanh(z)
    return -2.0 * t * (1.0 - t * t)


def _d2_sigmoid(z: np.ndarray) -> np.ndarray:
    s = 0.5 * (np.tanh(0.5 * z) + 1.0)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _d2_softplus(z: np.ndarray) -> np.ndarray:
    s = 0.5 * (np.tanh(0.5 * z) + 1.0)
    return s * (1.0 - s)


def _d2_zero(z: np.ndarray) -> np.ndarray:
    return np.zeros_like(z)


#: Closed-form ``phi''`` of the named activations (relu: 0 away from the kink, as autograd).
_SECOND_DERIVATIVES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": _d2_tanh,
    "sigmoid": _d2_sigmoid,
    "softplus": _d2_softplus,
    "relu": _d2_zero,
    "identity": _d2_zero,
}


def activation_second_derivative(activation: Activation) -> Callable[[np.ndarray], np.ndarray]:
    """``phi''`` of an activation, elementwise ``(N, H) -> (N, H)``.

    Closed form for the named activations; ``autograd.elementwise_grad`` applied twice to
    ``phi`` for a user callable (which is written with ``autograd.numpy`` by contract).
    """
    if ACTIVATIONS.get(activation.name) is activation:
        return _SECOND_DERIVATIVES[activation.name]
    d2 = elementwise_grad(elementwise_grad(activation.phi))
    return lambda z: np.asarray(d2(z))


def supports_structured(model: Any) -> TypeGuard[MLP]:
    """Whether the structured Hessian applies: a :class:`minifim.MLP` (dense layers and an
    elementwise activation). Other networks use ``autograd.hessian``."""
    from ..core.model import MLP

    return isinstance(model, MLP)


def output_loss_derivatives(
    net: MLP, F: np.ndarray, y: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """``g = c d ell / d f: (N, C)`` and ``H_out = c d^2 ell / d f^2: (N, C, C)`` at the labels.

    ``ell = -log p(y | f)``, ``c = scale``. A likelihood whose output Hessian depends on the
    targets takes them (``hessian_outputs(F, y)``); the canonical-link ones do not.
    """
    lik = check_net(net).likelihood
    g = -scale * np.asarray(lik.grad_log_prob(F, y))
    hess: Callable[..., Any] = lik.hessian_outputs
    takes_y = len(inspect.signature(hess).parameters) >= 2
    H = np.asarray(hess(F, y) if takes_y else hess(F))
    return g, scale * H


def _backward_quantities(
    net: MLP, cache: MLPPass, g: np.ndarray, H_out: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per layer ``delta_l: (n, out_l)``, ``Q_l: (n, out_l, out_l)`` and the activation
    derivatives ``phi'(z_l)``, ``phi''(z_l): (n, out_l)`` of the hidden layers."""
    L = net.num_layers
    d1 = [np.asarray(net.activation.dphi(z)) for z in cache.pres[:-1]]
    d2f = activation_second_derivative(net.activation)
    d2 = [d2f(z) for z in cache.pres[:-1]]
    deltas: list[np.ndarray] = [g] * L
    Qs: list[np.ndarray] = [H_out] * L
    delta, Q = g, H_out
    for l in range(L - 1, 0, -1):
        W = cache.layers[l][0]
        back = delta @ W  # d ell / d a_l: (n, in_l)
        WQW = np.matmul(np.matmul(W.T[None], Q), W[None])  # (n, in_l, in_l)
        Q = d1[l - 1][:, :, None] * WQW * d1[l - 1][:, None, :]
        idx = np.arange(Q.shape[1])
        Q[:, idx, idx] += d2[l - 1] * back
        delta = back * d1[l - 1]
        deltas[l - 1], Qs[l - 1] = delta, Q
    return deltas, Qs, d1, d2


def _assemble_chunk(
    M: np.ndarray, net: MLP, cache: MLPPass, g: np.ndarray, H_out: np.ndarray, first: bool
) -> None:
    """Add one chunk's Hessian into the upper block triangle of ``M`` (all layer pairs)."""
    L = net.num_layers
    deltas, Qs, d1, _ = _backward_quantities(net, cache, g, H_out)
    offsets = [s.start for s in net.layer_param_slices()]
    for mp in range(L):  # the later layer m'
        add_layer_pair(
            M, net.shapes[mp], net.shapes[mp], offsets[mp], offsets[mp],
            cache.acts[mp], cache.acts[mp], Qs[mp], diagonal=True, assign=first,
        )  # fmt: skip
        if mp == 0:
            continue
        # A_{m', m'-1} = diag(phi'(z_{m'-1})), then A_{m', m-1} = (A_{m', m} W_m) D_{m-1}
        A = np.zeros((g.shape[0],) + (net.shapes[mp][1],) * 2)
        idx = np.arange(A.shape[1])
        A[:, idx, idx] = d1[mp - 1]
        Wmp = cache.layers[mp][0]
        for m in range(mp - 1, -1, -1):
            T = np.matmul(Wmp[None], A)  # d z_{m'} / d z_m: (n, out_{m'}, out_m)
            G = np.matmul(T.transpose(0, 2, 1), Qs[mp])  # (n, out_m, out_{m'})
            add_layer_pair(
                M, net.shapes[m], net.shapes[mp], offsets[m], offsets[mp],
                cache.acts[m], cache.acts[mp], G, extra=(deltas[mp], A), assign=first,
            )  # fmt: skip
            if m > 0:
                A = np.matmul(A, cache.layers[m][0][None]) * d1[m - 1][:, None, :]


def structured_hessian(
    net: MLP, theta: np.ndarray, X: np.ndarray, y: np.ndarray, scale: float, chunk: int
) -> np.ndarray:
    """Dense Hessian ``(P, P)`` of ``c sum_n -log p(y_n | x_n)`` by second-order backprop.

    Inputs are validated by the caller (:func:`minifim.hessian`), which also guards the
    ``(P, P)`` memory; ``chunk`` samples are processed per batched pass.

    Returns
    -------
    H : ndarray, shape (P, P), exactly symmetric (the upper triangle mirrored).
    """
    P, N = check_net(net).num_params, X.shape[0]
    M = np.empty((P, P))
    for start in range(0, N, chunk):
        sl = slice(start, min(N, start + chunk))
        cache = mlp_forward(net, theta, X[sl])
        g, H_out = output_loss_derivatives(net, cache.outputs, y[sl], scale)
        _assemble_chunk(M, net, cache, g, H_out, first=start == 0)
    mirror_upper_to_lower(M)
    return M


def _split(net: MLP, V: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer the tangent blocks ``(dW: (m, out, in), db: (m, out))`` of ``V: (P, m)``."""
    m = V.shape[1]
    return [
        (V[ws].T.reshape(m, out, inp), V[bs].T)
        for (out, inp), (ws, bs) in zip(net.shapes, net.layer_slices)
    ]


def hessian_vector_products(
    net: MLP, cache: MLPPass, g: np.ndarray, H_out: np.ndarray, V: np.ndarray
) -> np.ndarray:
    """``H V: (P, m)`` for a block ``V: (P, m)`` by batched forward-over-reverse.

    ``g: (N, C)`` and ``H_out: (N, C, C)`` are the (scaled) output derivatives of the loss
    (:func:`output_loss_derivatives`) on the cached forward pass. The tangent of the gradient
    along each column of ``V``: forward tangents ``dz_l``, ``da_l = phi'(z_{l-1}) dz_{l-1}``,
    then the backward pass differentiated, ``d delta_{L-1} = H_out dz_{L-1}``,
    ``d delta_{l-1} = (d delta_l W_l + delta_l dW_l) * phi'(z_{l-1}) + (delta_l W_l) *
    phi''(z_{l-1}) * dz_{l-1}``; the ``W_l`` block of ``H v`` is
    ``sum_n d delta_l a_l^T + delta_l da_l^T`` and the ``b_l`` block ``sum_n d delta_l``.
    """
    check_net(net)
    m, L = V.shape[1], net.num_layers
    n = cache.num_samples
    tangents = _split(net, V)
    d1 = [np.asarray(net.activation.dphi(z)) for z in cache.pres[:-1]]
    d2f = activation_second_derivative(net.activation)
    # every tangent array is (n, m, width): each product below is one 2-D GEMM
    dzs: list[np.ndarray] = []
    das: list[np.ndarray | None] = [None]
    da = None
    for l, ((W, _), (dW, db)) in enumerate(zip(cache.layers, tangents)):
        o, i = W.shape
        dz = (cache.acts[l] @ dW.reshape(m * o, i).T).reshape(n, m, o) + db[None]
        if da is not None:
            dz += (da.reshape(n * m, i) @ W.T).reshape(n, m, o)
        dzs.append(dz)
        if l < L - 1:
            da = d1[l][:, None, :] * dz
            das.append(da)
    out = np.empty((net.num_params, m))
    delta = g
    ddelta = np.matmul(dzs[-1], H_out)  # (n, m, C); H_out is symmetric
    for l in range(L - 1, -1, -1):
        (o, i), (ws, bs) = net.shapes[l], net.layer_slices[l]
        gW = (ddelta.reshape(n, m * o).T @ cache.acts[l]).reshape(m, o, i)
        da_l = das[l]
        if da_l is not None:
            gW += (delta.T @ da_l.reshape(n, m * i)).reshape(o, m, i).transpose(1, 0, 2)
        out[ws] = gW.reshape(m, o * i).T
        out[bs] = ddelta.sum(axis=0).T
        if l > 0:
            W, dW = cache.layers[l][0], tangents[l][0]
            back = delta @ W
            dback = (ddelta.reshape(n * m, o) @ W).reshape(n, m, i)
            dback += (delta @ dW.transpose(1, 0, 2).reshape(o, m * i)).reshape(n, m, i)
            curv = (back * d2f(cache.pres[l - 1]))[:, None, :]
            ddelta = dback * d1[l - 1][:, None, :] + curv * dzs[l - 1]
            delta = back * d1[l - 1]
    return out


def homogeneous_inputs(cache: MLPPass) -> list[np.ndarray]:
    """``[a_l, 1]: (n, in_l + 1)`` per dense layer: the bias enters the GEMMs of
    :func:`ggn_vector_products` as one more input column (no separate pass for it)."""
    return [np.concatenate([a, np.ones((a.shape[0], 1))], axis=1) for a in cache.acts]


#: Bytes of one ``(n_chunk, m, width)`` work array of :func:`ggn_vector_products`: the samples
#: are taken in chunks whose tangent arrays stay in the last-level cache, so the elementwise
#: passes between the GEMMs (``phi'``, the output matrices) read cache, not memory.
GGN_PRODUCT_CHUNK_BYTES = 2**22


def _accumulate_gram_t(Ct: np.ndarray, D: np.ndarray, A: np.ndarray) -> None:
    """``Ct += A^T D`` in place by one GEMM with ``beta = 1``: ``Ct: (c, r)``, ``D: (n, r)``,
    ``A: (n, c)``, all C-contiguous. In BLAS's Fortran order ``Ct^T: (r, c) += D^T A`` with
    the long ``r`` as the GEMM's rows (measured 1.4x faster than ``r`` as its columns)."""
    blas.dgemm(1.0, D.T, A.T, beta=1.0, c=Ct.T, overwrite_c=1, trans_b=1)


def _accumulate_product(C: np.ndarray, A: np.ndarray, Bt: np.ndarray) -> None:
    """``C += A B`` in place by one GEMM with ``beta = 1``: ``C: (n, r)``, ``A: (n, c)``, and
    ``B = Bt^T`` given as the C-contiguous ``Bt: (r, c)``; in Fortran order ``C^T += B^T
    A^T`` with the long ``r`` as the GEMM's rows."""
    blas.dgemm(1.0, Bt.T, A.T, beta=1.0, c=C.T, overwrite_c=1, trans_a=1)


def ggn_vector_products(
    net: MLP,
    cache: MLPPass,
    M_out: np.ndarray,
    V: np.ndarray,
    acts_h: list[np.ndarray] | None = None,
    work: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """``sum_n J_n^T M_n J_n V: (P, m)`` for a block ``V: (P, m)``, forward then reverse.

    ``M_out: (n, C, C)`` symmetric per sample (the Fisher's ``Lambda_n`` or the GGN's output
    Hessian, with the reduction's scale folded in); ``acts_h``: :func:`homogeneous_inputs`
    of ``cache`` (made here when ``None``); ``work``: a dict the caller keeps between calls,
    holding the two work arrays every product writes into (a fresh array costs its page
    faults, about as much as the GEMM filling it). The samples are taken in chunks of
    :data:`GGN_PRODUCT_CHUNK_BYTES` per work array, every tangent array ``(n_chunk, m,
    width)``, so each product is one 2-D GEMM on cache-resident data. Forward, ``dz_l =
    [a_l, 1] [dW_l, db_l]^T`` (``(n, in + 1) x (in + 1, m out)``, the bias folded in) ``+
    da_l W_l^T`` (accumulated by the same array through a GEMM's ``beta``), ``da_{l+1} =
    phi'(z_l) dz_l`` in place; backward from ``delta = dz_{L-1} M``: ``[gW_l, gb_l] +=
    delta_l^T [a_l, 1]`` (``(m out, n) x (n, in + 1)``, accumulated over the chunks by
    ``beta = 1``) and ``delta_{l-1} = phi'(z_{l-1}) (delta_l W_l)``. ``~8 n m P`` flops.
    """
    check_net(net)
    m = V.shape[1]
    n = cache.num_samples
    if acts_h is None:
        acts_h = homogeneous_inputs(cache)
    width = max(max(o, i) for o, i in net.shapes)
    step = max(1, min(n, GGN_PRODUCT_CHUNK_BYTES // (8 * m * width)))
    size = step * m * width
    if work is None:
        work = {}
    if work.get("a") is None or work["a"].size < size:
        work["a"], work["b"] = np.empty(size), np.empty(size)
    # [dW | db] per vector: (m, o, i + 1) from the flat blocks (a copy of P_l m floats)
    dWh = []
    for (o, i), (ws, bs) in zip(net.shapes, net.layer_slices):
        t = np.empty((m, o, i + 1))
        t[:, :, :i] = V[ws].T.reshape(m, o, i)
        t[:, :, i] = V[bs].T
        dWh.append(t.reshape(m * o, i + 1))  # (m o, i + 1)
    # the gradients transposed, (i + 1, m o): their GEMMs then have the long m o as rows
    grads = [np.zeros((i + 1, m * o)) for o, i in net.shapes]
    for start in range(0, n, step):
        sl = slice(start, min(n, start + step))
        _ggn_chunk(net, cache, M_out, sl, m, acts_h, dWh, grads, [work["a"], work["b"]])
    out = np.empty((net.num_params, m))
    for (o, i), (ws, bs), g in zip(net.shapes, net.layer_slices, grads):
        g3 = g.reshape(i + 1, m, o)
        out[ws].reshape(o, i, m)[...] = g3[:i].transpose(2, 0, 1)
        out[bs] = g3[i].T
    return out


def _ggn_chunk(
    net: MLP,
    cache: MLPPass,
    M_out: np.ndarray,
    sl: slice,
    m: int,
    acts_h: list[np.ndarray],
    dWh: list[np.ndarray],
    grads: list[np.ndarray],
    bufs: list[np.ndarray],
) -> None:
    """One chunk of samples of :func:`ggn_vector_products`, its gradients added to ``grads``."""
    L = net.num_layers
    n = sl.stop - sl.start
    dz = np.empty(0)
    for l, (W, _) in enumerate(cache.layers):
        o, i = W.shape
        new = bufs[l % 2][: n * m * o].reshape(n, m, o)
        if l > 0:  # da_l W_l^T, then the weight tangents [a_l, 1] [dW_l, db_l]^T added to it
            np.matmul(dz.reshape(n * m, i), W.T, out=new.reshape(n * m, o))
            _accumulate_product(new.reshape(n, m * o), acts_h[l][sl], dWh[l])
        else:
            np.matmul(acts_h[l][sl], dWh[l].T, out=new.reshape(n, m * o))
        dz = new
        if l < L - 1:
            dz *= np.asarray(net.activation.dphi(cache.pres[l][sl]))[:, None, :]
    delta = np.matmul(dz, M_out[sl])  # (n, m, C); M_out is symmetric
    for l in range(L - 1, -1, -1):
        (o, i) = net.shapes[l]
        _accumulate_gram_t(grads[l], delta.reshape(n, m * o), acts_h[l][sl])
        if l > 0:
            back = bufs[l % 2 ^ 1][: n * m * i].reshape(n, m, i)
            if np.may_share_memory(back, delta):
                back = bufs[l % 2][: n * m * i].reshape(n, m, i)
            np.matmul(delta.reshape(n * m, o), cache.layers[l][0], out=back.reshape(n * m, i))
            back *= np.asarray(net.activation.dphi(cache.pres[l - 1][sl]))[:, None, :]
            delta = back
