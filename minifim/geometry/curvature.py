"""The exact curvature family: true, empirical and Monte-Carlo Fisher, GGN, Hessian.

Every curvature except the Hessian is ``M = c * sum_n sum_k u_nk u_nk^T`` with
``u_nk = J_n^T e_nk`` and output-space seeds ``E_n: (K, C)`` chosen by ``fisher``:

============  =====================================================  =========================
``fisher``    seeds ``E_n``                                           matrix
============  =====================================================  =========================
"true"        ``R_n``, ``R_n^T R_n = Lambda_n`` (enumerated classes)  ``E_{y~p}[s s^T]`` (exact)
"empirical"   ``g_n(y_n)`` at the data labels                         ``s_n s_n^T``
"mc"          ``g_n(y_nj) / sqrt(S)``, ``y_nj ~ p_theta(y | x_n)``     Monte-Carlo Fisher
"argmax"      ``g_n(argmax_y p)`` (a common mistake, for diagnosis)    "argmax" Fisher
"ggn"         ``H_n^{1/2}`` of the Hessian of ``-log p`` w.r.t. ``f``   ``J^T H J``
============  =====================================================  =========================

The GGN of a likelihood whose link is not canonical (the heteroscedastic Gaussian, Poisson with
``link="softplus"``) depends on the labels: ``G(y) = c sum_n J_n^T H_f(y_n) J_n`` needs ``y``
(a ``TypeError`` naming ``y`` without it), differs from the true Fisher, and satisfies
``E_{y ~ p_theta}[G(y)] = F`` (since ``E_y[H_f(y)] = Lambda``). When ``H_f(y)`` is indefinite
(the heteroscedastic Gaussian: ``det = -(y - mu)^2 / (2 sigma^4)`` per output) there is no
real square root: the seeds are the signed factorisation ``H = P^T P - M^T M`` of
:meth:`minifim.Likelihood.hessian_factors` and the matrix is the difference of two
factored sums, assembled by the same BLAS routes (``sign=+1`` and ``sign=-1`` of
:func:`curvature_factors`; twice the forward passes, no per-seed signs inside the assembly).
Consumers that need ``M = U^T U`` (K-FAC, the Gram and Woodbury routes, unit
sensitivities) refuse such a curvature with a ``ValueError`` (:func:`curvature_is_psd`).

``S = n_samples`` is the number of Monte-Carlo labels per input (``j = 1..S``), the meaning of
``n_samples`` everywhere in minifim. Reduction: ``c = 1/N`` (``reduction="mean"``, the default
everywhere) or ``c = 1`` (``reduction="sum"``). See :doc:`/conventions`.

Dense assembly of a plain dense network (an MLP) never multiplies out the ``(N K, P)`` factor.
With ``B_l: (N, K, 1, out_l)`` the seeds carried back to layer ``l`` and ``a_l: (N, 1, in_l)``
its inputs, the ``(W_l, W_m)`` block is ``c sum_n (B_l^T B_m)_n kron (a_l a_m^T)_n``: one GEMM
of ``(out_l out_m, N) x (N, in_l in_m)``, so the true Fisher costs ``N P^2`` multiply-adds like
the empirical one, not ``N C P^2``; only the upper block triangle is computed. Samples are
processed in chunks, so memory is ``O(P^2 + chunk * (C P + max_l,m in_l in_m))``.

Weight sharing (a ``Conv2d``, or a ``Linear`` on positions: ``R_l > 1``) breaks the per-sample
Kronecker structure: the gradient ``sum_r B_l[n, k, r]^T a_l[n, r]`` sums over the positions.
The exact dense matrix is then ``c U^T U`` accumulated by one SYRK per chunk of the ``(n K, P)``
factor (``N K P^2`` flops, the factor ``sum_l N K R_l out_l in_l``), the diagonal the squares
of the per-seed gradients, and a layer block ``U_l^T U_l``. With positional outputs
``(N, R, C)`` the true-Fisher and GGN seeds are per position and class (``K = R C``,
:meth:`~minifim.Sequential.spread_positions`): the cross-position terms, whose expectation is
zero, vanish exactly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from autograd import grad
from autograd import hessian as _autograd_hessian
from numpy.typing import ArrayLike

from .._parallel import blas_threads
from .._validation import check_int, check_net
from ..core.conventions import prepare_inputs, reduction_scale
from ..core.scores import backprop_seeds, forward_cache, forward_cache_bytes, layer_gradients
from ..memory import memory_budget, require_memory
from ..options import FisherKind, ScoreBackend, Triangle, as_option
from .assembly import add_block, dense_from_factors, layer_factor
from .hessian import structured_hessian, supports_structured

if TYPE_CHECKING:
    from ..core.model import Sequential

#: One chunk of a curvature's factor: the unfolded layer inputs ``acts[l]: (n, R_l, in_l)`` and
#: the backpropagated seeds ``Bs[l]: (n, K, R_l, out_l)``.
FactorChunk = tuple[list[np.ndarray], list[np.ndarray]]

__all__ = [
    "FISHER_KINDS",
    "true_fisher",
    "empirical_fisher",
    "mc_fisher",
    "ggn",
    "hessian",
    "curvature_matrix",
    "fisher_diagonal",
    "block_diagonal",
    "output_seeds",
    "curvature_factors",
    "curvature_is_psd",
    "square_of_mean_gradient",
]

FISHER_KINDS: tuple[FisherKind, ...] = tuple(FisherKind)  # public alias of the vocabulary
# Working memory per chunk of samples (256 MiB): every chunk beyond the first of a dense
# assembly is a read-modify-write pass over the (P, P) result, so chunks are large.
_CHUNK_BYTES = 2**28
# The structured Hessian adds every chunk into the whole (P, P) upper triangle (a read-modify-
# write pass of 4 P^2 bytes per chunk beyond the first), so it takes larger chunks (256 MiB).
_HESSIAN_CHUNK_BYTES = 2**28

_CHEAPER = (
    "fisher_diagonal (exact diagonal), kfac (Kronecker factors), block_diagonal "
    "(per-layer blocks), fisher_operator (matrix-free products), or "
    "fisher_spectrum(method='gram') for the eigenvalues"
)


# --- seeds: which curvature ------------------------------------------------------------------
def curvature_is_psd(net: Sequential, fisher: str) -> bool:
    """Whether the curvature ``fisher`` of ``net`` is positive semi-definite for every label.

    False for ``"hessian"`` and for ``"ggn"`` when the likelihood's loss Hessian ``H_f(y)`` can
    be indefinite (:attr:`minifim.Likelihood.hessian_psd`, the heteroscedastic Gaussian);
    true for every Fisher.
    """
    check_net(net)
    if fisher == "hessian":
        return False
    return not (fisher == "ggn" and not net.likelihood.hessian_psd)


def _indefinite_error(net: Sequential, fisher: str, what: str) -> ValueError:
    return ValueError(
        f"fisher: the '{fisher}' curvature of the {net.likelihood.describe()} likelihood is "
        "indefinite (J^T H_f(y) J with a loss Hessian H_f(y) that has negative eigenvalues "
        f"at most labels), but {what} needs a positive semi-definite M = U^T U; use "
        "fisher='true' (its expectation over the model's labels, exact), or a dense / "
        "diagonal / block / matrix-free route that takes the signed curvature"
    )


def output_seeds(
    net: Sequential,
    F: np.ndarray,
    fisher: str,
    y: ArrayLike | None = None,
    y_samples: np.ndarray | None = None,
    *,
    sign: int | None = None,
) -> np.ndarray:
    """Output-space seeds ``E: (N, K, *output_shape)`` of the curvature ``fisher`` (see the
    module table); ``(N, K, C)`` for outputs ``(N, C)``.

    ``F: (N, *output_shape)`` are the outputs; ``y`` the data targets (``"empirical"``, and
    ``"ggn"`` of a non-canonical likelihood); ``y_samples`` the ``S = n_samples`` sampled
    targets with a leading axis (``"mc"``). With positional outputs ``(N, R, C)`` the
    ``"true"`` and ``"ggn"`` seeds are per position and class (``K = R C``, each zero off its
    own position: :meth:`~minifim.Sequential.spread_positions`), so the cross-position terms,
    whose expectation is zero, vanish exactly; the ``"empirical"``, ``"mc"`` and ``"argmax"``
    seeds are the output score of the whole sample (``K = 1`` per label draw), the sum of its
    positions' scores.

    ``sign``: ``None`` (default) the seeds of a PSD curvature, refused (``ValueError``) when
    :func:`curvature_is_psd` is false; ``+1`` / ``-1`` the positive / negative part
    ``P`` / ``M`` of the signed factorisation ``E^T E = P^T P - M^T M`` (for a PSD curvature,
    ``+1`` gives the seeds and ``-1`` an empty ``(N, 0, *output_shape)``).
    """
    check_net(net)
    lik = net.likelihood
    if sign is None:
        if not curvature_is_psd(net, fisher):
            raise _indefinite_error(net, fisher, "this route")
        sign = 1
    elif sign not in (1, -1):
        raise ValueError(f"sign: expected None, 1 or -1, received {sign!r}")
    if sign == -1 and curvature_is_psd(net, fisher):
        return np.zeros((np.shape(F)[0], 0) + tuple(np.shape(F)[1:]))
    F2 = net.flat_outputs(F)
    if fisher == "ggn":
        labels = None if lik.canonical else net.flat_targets(cast("ArrayLike", y))
        P, M = lik.hessian_factors(F2, labels)
        return net.spread_positions(P if sign == 1 else M)
    if fisher == "true":
        return net.spread_positions(lik.fisher_factor(F2))

    def score(labels: Any) -> np.ndarray:
        g = lik.grad_log_prob(F2, labels)
        return g if not net.has_positions else g.reshape(np.shape(F))

    if fisher == "empirical":
        # None reaches check_targets, which names y in its TypeError
        return score(net.flat_targets(cast("ArrayLike", y)))[:, None]
    if fisher == "argmax":
        return score(lik.most_likely(F2))[:, None]
    if fisher == "mc":
        if y_samples is None:
            raise ValueError(
                "y_samples: expected the sampled targets (S, N, ...) for fisher='mc', received None"
            )
        k = y_samples.shape[0]
        g = np.stack([score(net.flat_targets(ys)) for ys in y_samples], axis=1)
        return g / np.sqrt(k)
    raise ValueError(f"fisher: expected one of {list(FISHER_KINDS)}, received {fisher!r}")


def _sample_bytes(net: Sequential, K: int, fisher: str) -> int:
    """Upper estimate of the working bytes per sample of a chunk of curvature factors.

    The forward cache (every layer's input and the unfolded inputs, im2col patches included)
    and the backpropagated seeds (``K`` times every layer's input and output, unfolded), the
    output-space arrays of the likelihood (``true``/``ggn``: ``Lambda``, its factor ``R`` and
    the batched ``eigh`` of ``H``, a few ``(C, C)`` per loss term, and the per-position seeds
    ``(R C, R, C)``; otherwise the ``K`` seeds), and the consumers' per-sample products (the
    ``(K, P)`` gradient rows of a SYRK dense assembly, or the Kronecker pair products ``in_l
    in_m + out_l out_m`` of a block).
    """
    C = net.output_dim
    if not (net.weight_sharing or net.has_positions):  # the plain dense network
        widths = sum(o + i for o, i in net.shapes)
        out_space = 5 * C * C if fisher in ("true", "ggn") else 3 * K * C
        if K == 1:
            work = net.num_params
        else:
            # the pool of the assembly holds at most threads + 2 pairs' operands at once;
            # counted for the machine's cores, not the current BLAS limit, so that the chunks
            # (hence the bits of the result) do not depend on the thread count
            pairs = net.num_layers * (net.num_layers + 1) // 2
            live = min(max(os.cpu_count() or 1, blas_threads()) + 2, pairs)
            # each pair's input products a_l a_m^T; the coupling G is formed per panel
            pair_in = max(i * j for _, i in net.shapes for _, j in net.shapes)
            work = live * pair_in
        return 8 * ((2 + 2 * K) * widths + out_space + work)
    R = net.positions
    cache = forward_cache_bytes(net, 1) // 8
    unfolded = sum(layer.positions * sum(layer.matrix_shape) for layer in net.parametric_layers)
    widths = sum(math.prod(s) for s in net.layer_input_shapes) + unfolded
    out_space = (5 * R * C * C + K * R * C) if fisher in ("true", "ggn") else 3 * K * R * C
    work = K * net.num_params  # the (K, P) gradient rows of the SYRK assembly
    return 8 * (cache + (1 + 2 * K) * widths + out_space + work)


def _chunk_size(
    net: Sequential, K: int, chunk_size: int | None, fisher: str = "true", N: int | None = None
) -> int:
    """Samples per chunk: ``chunk_size`` if given, else from the working-memory target
    ``min(256 MiB, budget / 2)`` (the ``N`` samples then split into chunks of equal size);
    memory-guarded either way (one chunk's working set)."""
    per_sample = _sample_bytes(net, K, fisher)
    what = (
        f"working set of the {fisher!r} curvature factors with K = {K} seed(s) per sample "
        f"and C = {net.output_dim} outputs"
    )
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", 1)
        n = chunk_size if N is None else min(chunk_size, N)
        require_memory(
            n * per_sample,
            f"{what}, chunk of {n} samples",
            "a smaller chunk_size, or chunk_size=None (sized from the budget)",
        )
        return chunk_size
    require_memory(
        per_sample,
        f"{what}, one sample",
        "fisher='mc' with few n_samples or fisher='empirical' (one (C,) seed per "
        "sample and label instead of (C, C) output-space arrays)"
        if fisher in ("true", "ggn")
        else "fewer n_samples or a smaller network",
    )
    step = max(1, min(_CHUNK_BYTES, memory_budget() // 2) // per_sample)
    if N is not None and N > step:
        step = -(-N // -(-N // step))  # chunks of equal size (no small last chunk)
    return step


def _num_seeds(net: Sequential, fisher: str, n_samples: int) -> int:
    if fisher in ("true", "ggn"):
        return net.positions * net.output_dim
    return n_samples if fisher == "mc" else 1


def curvature_factors(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    fisher: str | FisherKind = "true",
    n_samples: int = 1,
    rng: np.random.Generator | int | None = None,
    chunk_size: int | None = None,
    *,
    sign: int | None = None,
) -> Iterator[FactorChunk]:
    """Yield ``(acts, Bs)`` per chunk of samples: the factor of the curvature ``fisher``.

    ``acts[l]: (n, R_l, in_l)`` the unfolded inputs of parametric layer ``l`` (``R_l = 1`` for a
    plain dense layer; the im2col patches of a ``Conv2d``; the positions of a ``Linear`` on
    ``(N, R, D)``) and ``Bs[l]: (n, K, R_l, out_l)`` the backpropagated seeds of a chunk of
    ``n`` samples. The gradient of seed ``k`` of sample ``i`` has ``W_l`` block
    ``Bs[l][i, k].T @ acts[l][i]`` and ``b_l`` block ``Bs[l][i, k].sum(axis=0)``; the (sum-reduced)
    curvature is the sum over chunks, samples and seeds of its outer products. Inputs are
    validated when called (a generator is returned), not at the first iteration.

    ``sign`` (see :func:`output_seeds`): ``None`` refuses an indefinite curvature (the GGN of
    the heteroscedastic Gaussian) with a ``ValueError``; ``+1`` / ``-1`` yield the factors of
    its positive / negative part, whose difference is the curvature.
    """
    fisher = as_option(fisher, FisherKind, "fisher")
    if sign is None and not curvature_is_psd(net, fisher):
        raise _indefinite_error(net, fisher, "a factor U (K-FAC, Gram, Woodbury, sensitivities)")
    theta, X, y, y_samples = prepare_inputs(net, theta, X, y, fisher, n_samples, rng)
    step = _chunk_size(net, _num_seeds(net, fisher, n_samples), chunk_size, fisher, X.shape[0])
    # inputs are validated (and Monte-Carlo labels drawn) now, not at the first iteration
    return _iter_factors(net, theta, X, y, y_samples, fisher, step, sign)


def _iter_factors(
    net: Sequential,
    theta: np.ndarray,
    X: np.ndarray,
    y: np.ndarray | None,
    y_samples: np.ndarray | None,
    fisher: str,
    step: int,
    sign: int | None = None,
) -> Iterator[FactorChunk]:
    N = X.shape[0]
    for start in range(0, N, step):
        sl = slice(start, min(N, start + step))
        cache = forward_cache(net, theta, X[sl])
        seeds = output_seeds(
            net,
            cache.outputs,
            fisher,
            None if y is None else y[sl],
            None if y_samples is None else y_samples[:, sl],
            sign=sign,
        )
        yield cache.acts, backprop_seeds(net, cache, seeds)


# --- dense assembly: minifim.geometry.assembly ----------------------------------------
def _require_dense(net: Sequential, what: str, copies: int = 1) -> None:
    P = net.num_params
    extra = "" if copies == 1 else f" x {copies} (its positive and negative parts)"
    require_memory(copies * 8 * P * P, f"dense {what} (P, P) = ({P}, {P}) float64{extra}", _CHEAPER)


def curvature_matrix(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    fisher: str | FisherKind = "true",
    *,
    n_samples: int = 1,
    rng: np.random.Generator | int | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
    triangle: str | Triangle = "both",
) -> np.ndarray:
    """Dense curvature ``(P, P)`` of kind ``fisher`` (see the module table).

    Parameters
    ----------
    net : Sequential (or MLP)
    theta : ndarray, shape (P,)
    X : ndarray, shape ``(N, *input_shape)``
    y : targets, needed for ``fisher="empirical"``
    fisher : {"true", "empirical", "mc", "argmax", "ggn"}
    n_samples, rng : Monte-Carlo labels per input and their generator (``fisher="mc"``)
    reduction : {"mean", "sum"}
    chunk_size : samples per chunk (default: from a 256 MiB working-memory target)
    triangle : {"both", "upper"}
        ``"both"`` (default): the symmetric matrix. ``"upper"``: its upper triangle with the
        diagonal, the strict lower triangle exactly zero, for a LAPACK consumer that reads
        one triangle (``scipy.linalg.eigh(M, lower=False)``, ``cho_factor(M, lower=False)``):
        no mirror of the second triangle (what one SYRK of the factor writes). See
        :class:`minifim.options.Triangle`.

    Returns
    -------
    M : ndarray, shape (P, P), symmetric (or its upper triangle); positive semi-definite
        unless :func:`curvature_is_psd` is false (the GGN of the heteroscedastic Gaussian,
        assembled as the difference of its positive and negative parts).
    """
    check_net(net)
    fisher = as_option(fisher, FisherKind, "fisher")
    upper = as_option(triangle, Triangle, "triangle") is Triangle.UPPER
    X = net.check_inputs(X)
    scale = reduction_scale(reduction, X.shape[0])
    psd = curvature_is_psd(net, fisher)
    _require_dense(net, f"{fisher} curvature", 1 if psd else 2)
    args = (net, theta, X, y, fisher, n_samples, rng, chunk_size)
    P = net.num_params
    M = dense_from_factors(net, curvature_factors(*args, sign=1), P, scale, upper=upper)
    if not psd:
        M -= dense_from_factors(net, curvature_factors(*args, sign=-1), P, scale, upper=upper)
    return M


def true_fisher(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    *,
    reduction: str = "mean",
    chunk_size: int | None = None,
    triangle: str | Triangle = "both",
) -> np.ndarray:
    """The true Fisher ``F = c sum_n E_{y ~ p_theta(y|x_n)}[s s^T] = c sum_n J_n^T Lambda_n J_n``.

    Exact: enumeration of the classes (categorical), of both outcomes per output (Bernoulli),
    closed form ``J^T J / sigma^2`` (Gaussian). Never sampled. ``c = 1/N`` by default
    (see :doc:`/conventions`).

    Parameters
    ----------
    net : Sequential (or MLP)
    theta : ndarray, shape (P,)
    X : ndarray, shape ``(N, *input_shape)``
    reduction, chunk_size, triangle : see :func:`curvature_matrix` (``triangle="upper"``:
        the upper triangle only, at the cost of one SYRK)

    Returns
    -------
    F : ndarray, shape (P, P)

    Examples
    --------
    >>> import numpy as np, minifim
    >>> net = minifim.MLP([3, 5, 4])
    >>> F = minifim.true_fisher(net, net.init(0), np.ones((2, 3)))
    >>> F.shape, bool(np.allclose(F, F.T))  # P = 3*5 + 5 + 5*4 + 4
    ((44, 44), True)
    """
    return curvature_matrix(
        net, theta, X, None, "true", reduction=reduction, chunk_size=chunk_size,
        triangle=triangle,
    )  # fmt: skip


def empirical_fisher(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    *,
    reduction: str = "mean",
    chunk_size: int | None = None,
    triangle: str | Triangle = "both",
) -> np.ndarray:
    """The empirical Fisher ``EF = c sum_n s_n s_n^T = c S^T S`` at the data labels ``y``.

    Returns ``(P, P)``; ``c = 1/N`` by default. Not the Fisher: see Kunstner et al. (2019).
    ``reduction``, ``chunk_size``, ``triangle``: see :func:`curvature_matrix`.
    """
    return curvature_matrix(
        net, theta, X, y, "empirical", reduction=reduction, chunk_size=chunk_size,
        triangle=triangle,
    )  # fmt: skip


def mc_fisher(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    n_samples: int = 1,
    rng: np.random.Generator | int | None = None,
    *,
    reduction: str = "mean",
    chunk_size: int | None = None,
    triangle: str | Triangle = "both",
) -> np.ndarray:
    """Monte-Carlo Fisher ``c sum_n 1/S sum_j s(y_nj) s(y_nj)^T``, ``y_nj ~ p_theta(y | x_n)``.

    ``rng`` (Generator or seed) is required; ``S = n_samples`` labels per input. Unbiased for
    :func:`true_fisher`; returns ``(P, P)``. ``reduction``, ``chunk_size``, ``triangle``: see
    :func:`curvature_matrix`.
    """
    check_net(net)
    if rng is None:
        raise TypeError(
            "rng: mc_fisher samples labels; pass a numpy.random.Generator or a seed, received None"
        )
    return curvature_matrix(
        net,
        theta,
        X,
        None,
        "mc",
        n_samples=n_samples,
        rng=rng,
        reduction=reduction,
        chunk_size=chunk_size,
        triangle=triangle,
    )


def ggn(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    *,
    reduction: str = "mean",
    chunk_size: int | None = None,
    triangle: str | Triangle = "both",
) -> np.ndarray:
    """Generalised Gauss-Newton ``G = c sum_n J_n^T H_f(y_n) J_n``, shape ``(P, P)``.

    ``H_f(y)`` is the Hessian of ``-log p(y | f)`` with respect to the outputs
    (:meth:`minifim.Likelihood.hessian_outputs`), factored by a batched eigendecomposition
    (a route independent of the closed-form Fisher factor) or, for the heteroscedastic
    Gaussian, by its exact signed ``L D L^T`` factorisation.

    Canonical links (categorical, Bernoulli, Gaussian, Poisson ``link="log"``): ``H_f`` does
    not depend on ``y`` (optional, validated when given) and ``G`` equals the true Fisher.
    Otherwise ``y`` is required (``TypeError`` naming ``y``), ``G(y)`` differs from the true
    Fisher and ``E_{y ~ p_theta}[G(y)] = F``. For the heteroscedastic Gaussian ``G(y)`` is
    indefinite (:func:`curvature_is_psd`); Poisson with ``link="softplus"`` keeps it PSD.
    ``reduction``, ``chunk_size``, ``triangle``: see :func:`curvature_matrix`.

    Examples
    --------
    >>> import numpy as np, minifim
    >>> net = minifim.MLP([1, 4, 2], likelihood="heteroscedastic")
    >>> theta, X = net.init(0), np.linspace(-1, 1, 6)[:, None]
    >>> y = np.sin(3 * X)  # targets (N, C) = (6, 1) for 2C = 2 outputs
    >>> G, F = minifim.ggn(net, theta, X, y), minifim.true_fisher(net, theta, X)
    >>> bool(np.linalg.eigvalsh(G)[0] < -0.1), bool(np.linalg.eigvalsh(F)[0] > -1e-12)
    (True, True)
    """
    check_net(net)
    X_checked = net.check_inputs(X)
    if net.likelihood.canonical:
        if y is not None:
            net.check_targets(y, X_checked.shape[0])
        y = None
    elif y is None:
        raise TypeError(
            f"y: the GGN of the {net.likelihood.describe()} likelihood (non-canonical link) "
            "depends on the labels, J^T H_f(y) J; pass the targets y (its expectation over "
            "the model's labels is true_fisher), received None"
        )
    return curvature_matrix(
        net, theta, X, y, "ggn", reduction=reduction, chunk_size=chunk_size, triangle=triangle
    )


def hessian(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    *,
    reduction: str = "mean",
    backend: str | ScoreBackend = "backprop",
    chunk_size: int | None = None,
) -> np.ndarray:
    """Hessian of the negative log-likelihood ``c sum_n -log p_theta(y_n | x_n)``, ``(P, P)``.

    Parameters
    ----------
    net : MLP
    theta : ndarray, shape (P,)
    X : ndarray, shape (N, D)
    y : targets of the likelihood
    reduction : {"mean", "sum"}
        ``c = 1/N`` (default) or ``c = 1``.
    backend : {"backprop", "autograd"}
        ``"backprop"`` (default): second-order backpropagation through the layers
        (:mod:`minifim.geometry.hessian`: the GGN plus the residual terms of the hidden
        layers' curvature, assembled by batched GEMMs at ``~2 N P^2`` multiply-adds);
        networks other than an :class:`MLP` use autograd. ``"autograd"``:
        ``autograd.hessian`` of the forward pass (reverse over reverse, one backward pass per
        parameter), the independent route the tests compare against.
    chunk_size : samples per batched pass of the backprop route (default: from a 256 MiB
        working-memory target).

    Returns
    -------
    H : ndarray, shape (P, P), symmetric (exactly so on the backprop route).
    """
    check_net(net)
    backend = as_option(backend, ScoreBackend, "backend")
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    y = net.check_targets(y, X.shape[0])
    scale = reduction_scale(reduction, X.shape[0])
    _require_dense(net, "Hessian")
    if backend == "backprop" and supports_structured(net):
        chunk = _hessian_chunk(net, X.shape[0], chunk_size)
        return structured_hessian(net, theta, X, y, scale, chunk)

    def nll(th: Any) -> Any:
        return -scale * np.sum(net.output_log_prob(net.apply(th, X), y))

    return np.asarray(_autograd_hessian(nll)(theta))


def _hessian_chunk(net: Sequential, N: int, chunk_size: int | None) -> int:
    """Samples per pass of the structured Hessian, memory-guarded: per sample the
    backpropagated Hessians ``Q_l`` of every layer, the Jacobian, coupling and ``G`` of the
    layer pair being assembled (``3 max out_m out_m'``, one pair at a time) and the
    forward/backward vectors (the assembly's panel is a fixed 16 MiB on top)."""
    widths = sum(o + i for o, i in net.shapes)
    squares = sum(o * o for o, _ in net.shapes)
    pair = max(om * op for om, _ in net.shapes for op, _ in net.shapes)
    per_sample = 8 * (4 * widths + squares + 3 * pair)
    if chunk_size is not None:
        n = min(check_int(chunk_size, "chunk_size", 1), N)
    else:
        n = max(1, min(N, min(_HESSIAN_CHUNK_BYTES, memory_budget() // 2) // per_sample))
    require_memory(
        n * per_sample,
        f"working set of the structured Hessian, chunk of {n} samples",
        "a smaller chunk_size",
    )
    return n


def square_of_mean_gradient(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    *,
    reduction: str = "mean",
    diagonal: bool = False,
) -> np.ndarray:
    """The common mistake ``g g^T`` with ``g = c sum_n s_n`` (NOT a Fisher; for diagnosis).

    Returns ``(P, P)``, or ``g**2: (P,)`` with ``diagonal=True``. It is what one gets by
    squaring the gradient of a batch-mean loss instead of averaging per-sample squares.
    """
    check_net(net)
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    y = net.check_targets(y, X.shape[0])
    scale = reduction_scale(reduction, X.shape[0])
    g = grad(lambda th: scale * np.sum(net.output_log_prob(net.apply(th, X), y)))(theta)
    if diagonal:
        return g * g
    _require_dense(net, "square of the mean gradient")
    return np.outer(g, g)


# --- structured approximations -------------------------------------------------------------
def fisher_diagonal(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    fisher: str | FisherKind = "true",
    *,
    n_samples: int = 1,
    rng: np.random.Generator | int | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> np.ndarray:
    """The exact diagonal of the curvature ``fisher`` without forming it, shape ``(P,)``.

    Notes
    -----
    ``diag(M)[W_l[i, j]] = c sum_n (sum_k B_l[n, k, i]^2) a_l[n, j]^2``: one GEMM per layer
    without weight sharing; with it (``R_l > 1``) ``c sum_{n, k} (sum_r B_l[n, k, r, i]
    a_l[n, r, j])^2``, the squares of the per-sample, per-seed gradients (formed per chunk).
    """
    check_net(net)
    fisher = as_option(fisher, FisherKind, "fisher")
    X = net.check_inputs(X)
    scale = reduction_scale(reduction, X.shape[0])
    d = np.zeros(net.num_params)
    signs = (1,) if curvature_is_psd(net, fisher) else (1, -1)
    for sign in signs:  # an indefinite GGN: diag(P part) - diag(M part)
        factors = curvature_factors(net, theta, X, y, fisher, n_samples, rng, chunk_size, sign=sign)
        for acts, Bs in factors:
            for layer, (ws, bs), a, B in zip(net.parametric_layers, net.layer_slices, acts, Bs):
                if B.shape[2] == 1:
                    a1, B1 = a[:, 0], B[:, :, 0]
                    B2 = sign * np.einsum("nko,nko->no", B1, B1)
                    d[ws] += (B2.T @ (a1 * a1)).ravel()
                    if layer.bias:
                        d[bs] += B2.sum(axis=0)
                    continue
                G = layer_gradients(layer, a, B)
                d[ws] += sign * np.einsum("nkoi,nkoi->oi", G, G).ravel()
                if layer.bias:
                    Bb = B.sum(axis=2)
                    d[bs] += sign * np.einsum("nko,nko->o", Bb, Bb)
    return d * scale


def block_diagonal(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    fisher: str | FisherKind = "true",
    *,
    n_samples: int = 1,
    rng: np.random.Generator | int | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> list[np.ndarray]:
    """The exact per-layer diagonal blocks of the curvature ``fisher``.

    Returns ``[M_0, ..., M_{L-1}]``, ``M_l: (P_l, P_l)`` over layer ``l``'s parameters
    ``(W_l, b_l)`` in flat order, equal to ``M[s, s]`` for ``s = net.layer_param_slices()[l]``.
    """
    check_net(net)
    fisher = as_option(fisher, FisherKind, "fisher")
    X = net.check_inputs(X)
    scale = reduction_scale(reduction, X.shape[0])
    sizes = [layer.num_params for layer in net.parametric_layers]
    require_memory(
        8 * sum(s * s for s in sizes),
        f"per-layer blocks of sizes {sizes}",
        "fisher_diagonal or kfac",
    )
    blocks = [np.zeros((s, s)) for s in sizes]
    args = (net, theta, X, y, fisher, n_samples, rng, chunk_size)
    for acts, Bs in curvature_factors(*args, sign=1):
        for l in range(net.num_layers):
            _add_layer_block(blocks[l], net, l, acts, Bs)
    if not curvature_is_psd(net, fisher):  # an indefinite GGN: minus the negative part
        negative = [np.zeros((s, s)) for s in sizes]
        for acts, Bs in curvature_factors(*args, sign=-1):
            for l in range(net.num_layers):
                _add_layer_block(negative[l], net, l, acts, Bs)
        for b, m in zip(blocks, negative):
            b -= m
    for b in blocks:
        b *= scale
    return blocks


def _add_layer_block(
    block: np.ndarray, net: Sequential, l: int, acts: list[np.ndarray], Bs: list[np.ndarray]
) -> None:
    """Add layer ``l``'s diagonal block of one chunk of factors into ``block``."""
    if acts[l].shape[1] == 1:
        add_block(block, net, l, l, acts, Bs, 0, 0)
    else:  # one seed, or weight sharing: the (n K, P_l) rows of the layer
        U = layer_factor(net, l, acts[l], Bs[l])
        block += U.T @ U
