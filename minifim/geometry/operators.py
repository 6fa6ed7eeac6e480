"""Matrix-free curvature-vector products as ``scipy.sparse.linalg.LinearOperator``.

``fisher_operator(...) @ v`` computes ``M v = c sum_n J_n^T (E_n^T E_n) J_n v`` with the
output-space seeds ``E_n`` of :mod:`minifim.geometry.curvature`
(true, empirical, Monte-Carlo, argmax
Fisher or GGN): one forward-mode pass ``J v`` (``(N, C)``), a ``C x C`` product per sample,
one reverse-mode pass. Cost ``O(N P)`` per vector, memory ``O(N sum_l width_l + P)``; ``P x P``
is never formed, so scipy's ``eigsh``, ``cg``, ``minres`` work on networks of any size.
``hessian_operator`` gives exact Hessian-vector products (batched forward-over-reverse
through the layers; autograd reverse-over-reverse as the independent route).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from autograd import grad
from numpy.typing import ArrayLike
from scipy.sparse.linalg import LinearOperator

from .._parallel import map_pinned
from .._validation import check_net
from ..core.conventions import prepare_inputs, reduction_scale
from ..core.scores import forward_cache, jvp_cached, vjp_cached
from ..memory import require_memory
from ..options import FisherKind, ScoreBackend, as_option
from .curvature import curvature_is_psd, output_seeds
from .hessian import (
    ggn_vector_products,
    hessian_vector_products,
    homogeneous_inputs,
    mlp_forward,
    output_loss_derivatives,
    supports_structured,
)

if TYPE_CHECKING:
    from ..core.model import Sequential

__all__ = ["fisher_operator", "ggn_operator", "hessian_operator"]

#: Columns per batched pass of the structured products of :func:`fisher_operator` and
#: :func:`hessian_operator` (measured: blocks of 10-25 columns beat both one column at a time
#: and 100 at once on MLP 64-64-64-10).
_HVP_BLOCK = 16


def _column_blocks(
    product: Callable[[np.ndarray, dict[str, np.ndarray] | None], np.ndarray],
    V: np.ndarray,
    block: int = _HVP_BLOCK,
) -> np.ndarray:
    """``product`` on fixed blocks of ``block`` columns of ``V: (P, m)``, in parallel.

    Blocks are independent (no reduction across them), so with more than one block they run
    on a pool of as many Python threads as the BLAS is currently allowed, each block's BLAS
    calls pinned to one thread (numpy and BLAS release the GIL): the two cores of a small
    machine work on different blocks instead of splitting thin GEMMs. The blocks are fixed by
    ``m`` alone and every block runs on one BLAS thread, so the result is bit-for-bit the same
    at any thread count. ``product(V_block, work)`` gets a per-thread ``work`` dict to reuse
    its buffers in (``None`` for a single block: the caller's own).
    """
    m = V.shape[1]
    if m <= block:
        return product(V, None)
    out = np.empty((V.shape[0], m))
    local = threading.local()

    def run(j: int) -> None:
        if not hasattr(local, "work"):
            local.work = {}
        out[:, j : j + block] = product(V[:, j : j + block], local.work)

    map_pinned(run, range(0, m, block))
    return out


def _require_operator_memory(net: Sequential, N: int, fisher: str, n_samples: int) -> None:
    """Guard the largest array a :func:`fisher_operator` builds: the stored
    ``E^T E: (N, C, C)`` (or the seeds ``E: (N, K, C)`` when ``K > C``); with positional
    outputs ``C`` counts every output, ``R C``."""
    C = math.prod(net.output_shape)
    R = net.positions
    K = R * net.output_dim if fisher in ("true", "ggn") else (n_samples if fisher == "mc" else 1)
    require_memory(
        8 * N * C * max(C, K),
        f"{fisher!r} operator: output-space Fisher E^T E (N, C, C) = ({N}, {C}, {C}) "
        f"and seeds (N, K, C) = ({N}, {K}, {C}) float64",
        "the sum of fisher_operator over chunks of X (products are additive over "
        "samples: op(X) v = sum_chunks n_chunk / N op(X_chunk) v), or kfac / "
        "fisher_diagonal (chunked over samples)",
    )


def fisher_operator(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    fisher: str | FisherKind = "true",
    *,
    n_samples: int = 1,
    rng: np.random.Generator | int | None = None,
    reduction: str = "mean",
) -> LinearOperator:
    """Symmetric ``(P, P)`` LinearOperator of the curvature ``fisher``, never formed.

    Parameters
    ----------
    net : Sequential (or MLP)
    theta : ndarray, shape (P,)
    X : ndarray, shape ``(N, *input_shape)``
    y : targets, needed for ``fisher="empirical"`` and for the GGN of a non-canonical
        likelihood (heteroscedastic, Poisson ``link="softplus"``)
    fisher : {"true", "empirical", "mc", "argmax", "ggn"}
    n_samples, rng : Monte-Carlo labels (``fisher="mc"``), drawn once at construction
    reduction : {"mean", "sum"}

    Returns
    -------
    scipy.sparse.linalg.LinearOperator, shape (P, P), float64
        ``op @ v: (P,) -> (P,)`` and ``op @ V: (P, m) -> (P, m)``. Symmetric; indefinite
        for the GGN of the heteroscedastic Gaussian (the output-space matrix is
        ``P^T P - M^T M`` of :meth:`minifim.Likelihood.hessian_factors`), so use ``minres``
        or ``gmres`` rather than ``cg`` there.

    Examples
    --------
    >>> import numpy as np, minifim
    >>> net = minifim.MLP([3, 4, 2]); theta = net.init(0); X = np.ones((5, 3))
    >>> op = minifim.fisher_operator(net, theta, X)
    >>> v = np.arange(net.num_params, dtype=float)
    >>> bool(np.allclose(op @ v, minifim.true_fisher(net, theta, X) @ v))
    True
    """
    fisher = as_option(fisher, FisherKind, "fisher")
    theta, X, y, y_samples = prepare_inputs(net, theta, X, y, fisher, n_samples, rng)
    N, P = X.shape[0], net.num_params
    scale = reduction_scale(reduction, N)
    _require_operator_memory(net, N, fisher, n_samples)
    cache = forward_cache(net, theta, X)
    E = output_seeds(net, cache.outputs, fisher, y, y_samples, sign=1)  # (N, K, *output_shape)
    E = E.reshape(E.shape[:2] + (-1,))  # (N, K, Q), Q = prod(output_shape)
    M_out = np.einsum("nkc,nkd->ncd", E, E)  # (N, Q, Q)
    if not curvature_is_psd(net, fisher):  # signed GGN: H = P^T P - M^T M (output space)
        E = output_seeds(net, cache.outputs, fisher, y, y_samples, sign=-1)
        E = E.reshape(E.shape[:2] + (M_out.shape[1],))
        M_out -= np.einsum("nkc,nkd->ncd", E, E)
    del E
    Q = M_out.shape[1]
    if supports_structured(net):  # a chain of dense layers: the (n, m, width) layout
        M_out *= scale
        mlp_cache = mlp_forward(net, theta, X)
        acts_h = homogeneous_inputs(mlp_cache)
        kept: dict[str, np.ndarray] = {}  # one block's work arrays, kept between calls

        def block_product(Vb: np.ndarray, work: dict[str, np.ndarray] | None) -> np.ndarray:
            buffers = kept if work is None else work
            return ggn_vector_products(net, mlp_cache, M_out, Vb, acts_h, buffers)

        def matmat(V: ArrayLike) -> np.ndarray:
            V = np.asarray(V, dtype=np.float64).reshape(P, -1)
            return _column_blocks(block_product, V)

    else:

        def matmat(V: ArrayLike) -> np.ndarray:
            V = np.asarray(V, dtype=np.float64).reshape(P, -1)
            JV = jvp_cached(net, cache, V)  # (N, *output_shape, m)
            MJV = np.matmul(M_out, JV.reshape(N, Q, -1))
            return scale * vjp_cached(net, cache, MJV.reshape(JV.shape))

    return LinearOperator(
        (P, P),
        matvec=lambda v: matmat(v)[:, 0],
        matmat=matmat,
        rmatvec=lambda v: matmat(v)[:, 0],
        rmatmat=matmat,
        dtype=np.float64,
    )


def ggn_operator(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    *,
    reduction: str = "mean",
) -> LinearOperator:
    """GGN-vector products ``c sum_n J_n^T H_f(y_n) J_n v`` (see :func:`fisher_operator`).

    ``y`` is required when the likelihood's link is not canonical (and ignored otherwise).
    """
    return fisher_operator(net, theta, X, y, "ggn", reduction=reduction)


def hessian_operator(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    *,
    reduction: str = "mean",
    backend: str | ScoreBackend = "backprop",
) -> LinearOperator:
    """Hessian-vector products of the NLL ``c sum_n -log p(y_n | x_n)``, ``(P, P)`` operator.

    ``backend="backprop"`` (default): forward-over-reverse through the cached forward pass,
    a block ``V: (P, m)`` in one batched pass (:func:`minifim.geometry.hessian.
    hessian_vector_products`, ``O(m N P)``, about twice a GGN-vector product); networks other
    than an :class:`MLP` use autograd. ``backend="autograd"``: ``H v = grad_theta (grad_theta
    L . v)``, reverse-over-reverse through autograd, one product per column (the independent
    route).
    """
    check_net(net)
    backend = as_option(backend, ScoreBackend, "backend")
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    y = net.check_targets(y, X.shape[0])
    scale = reduction_scale(reduction, X.shape[0])
    P = net.num_params

    if backend == "backprop" and supports_structured(net):
        N, C = X.shape[0], net.output_dim
        require_memory(
            8 * N * C * (C + 1),
            f"Hessian operator: output-space Hessian (N, C, C) = ({N}, {C}, {C}) float64",
            "the sum of hessian_operator over chunks of X (products are additive over samples)",
        )
        cache = mlp_forward(net, theta, X)
        g, H_out = output_loss_derivatives(net, cache.outputs, y, scale)

        def matmat(V: ArrayLike) -> np.ndarray:
            V = np.asarray(V, dtype=np.float64).reshape(P, -1)
            # blocks of _HVP_BLOCK columns: the (N, m, width) tangents stay cache-sized
            return _column_blocks(
                lambda Vb, _work: hessian_vector_products(net, cache, g, H_out, Vb), V
            )

    else:

        def nll(th: Any) -> Any:
            return -scale * np.sum(net.output_log_prob(net.apply(th, X), y))

        hvp = grad(lambda th, v: np.dot(grad(nll)(th), v))

        def matmat(V: ArrayLike) -> np.ndarray:
            V = np.asarray(V, dtype=np.float64).reshape(P, -1)
            return np.stack([hvp(theta, V[:, j]) for j in range(V.shape[1])], axis=1)

    return LinearOperator(
        (P, P),
        matvec=lambda v: matmat(v)[:, 0],
        matmat=matmat,
        rmatvec=lambda v: matmat(v)[:, 0],
        rmatmat=matmat,
        dtype=np.float64,
    )
