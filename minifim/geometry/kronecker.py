"""Kronecker-factored approximate curvature (K-FAC; Martens & Grosse 2015), with the expand and
reduce flavours for weight-shared layers (Eschenhagen et al. 2023; Grosse & Martens 2016 for
convolutions).

Every parametric layer ``l`` is an affine map shared over ``R_l`` positions:
``z_nr = W a_nr + b`` with ``a_nr`` the unfolded input of sample ``n`` at position ``r``
(``Linear`` on ``(N, *pos, D)``: the positions; ``Conv2d``: the im2col patches,
``R_l = H_out W_out``, ``in_l = C_in kh kw``; a plain MLP: ``R_l = 1``).
With ``b_nkr`` the seed ``k`` of sample ``n`` carried back to the layer's output at position
``r`` (the seeds of :mod:`minifim.geometry.curvature`: ``fisher="true"`` enumerates the classes
of every output position, the exact expectation over the model's labels, curvlinops'
``"type-2"`` up to the caveat below; ``"empirical"`` the data labels; ``"mc"`` sampled
labels), the per-sample gradient of seed ``k`` is ``sum_r b_nkr a~_nr^T`` and the curvature block
of the layer is ``c sum_n sum_k vec(sum_r b_nkr a~_nr^T) vec(...)^T``. K-FAC replaces it by
``G_l kron A_l`` (``W: (out, in)`` flattened row-major), ``c = 1/N`` (``reduction="mean"``) or
``1`` (``"sum"``): the reduction is carried by ``G``, ``A`` is always a mean.

``kfac_approx="expand"`` (every position is a sample of the layer; the choice for a loss term
per position, e.g. a sequence model's outputs, and Grosse & Martens' KFC for convolutions)::

    A_l = 1 / (N R_l) sum_n sum_r a~_nr a~_nr^T,   G_l = c sum_n sum_k sum_r b_nkr b_nkr^T

``kfac_approx="reduce"`` (the positions are aggregated first; the choice when the positions are
pooled before the loss, e.g. a ``Mean`` before a classifier)::

    A_l = 1 / N sum_n a^_n a^_n^T,  a^_n = 1 / R_l sum_r a~_nr   (the position mean)
    G_l = c sum_n sum_k b^_nk b^_nk^T,  b^_nk = sum_r b_nkr       (the position sum)

the factors of ``1 / R_l`` being those of the paper and of curvlinops' ``KFACLinearOperator``
(its ``A`` divides by the number of positions in expand and averages them in reduce; its ``G``
is unnormalised by positions in both). Either flavour is defined for every network (as in the
paper, which applies both in both settings); with ``R_l = 1`` both are the classic K-FAC of
Martens & Grosse, bit for bit.

Exactness (``G_l kron A_l`` equals the layer's block of the curvature):

- ``R_l = 1`` and a single sample (``N = 1``): ``sum_k b_k b_k^T kron a~ a~^T`` is the block;
- expand, whenever every seed reaches one position of the layer and the position-wise seed
  moment ``sum_k b_nkr b_nkr^T`` is one matrix ``M`` for all ``n, r``: then the block is
  ``c sum_nr a~ a~^T kron M``. This is the expand setting of the paper with a deep linear
  network and a Gaussian likelihood: ``Linear`` layers on positions with identity activations
  and an output per position (or a single ``Linear``/``Conv2d`` layer feeding a Gaussian
  output directly, e.g. through ``Flatten``);
- reduce, whenever ``b_nkr = b^_nk / R_l`` for all ``r`` (the layer is followed, linearly, by a
  ``Mean`` over its positions) and ``sum_k b^_nk b^_nk^T`` is one matrix for all ``n``: the
  per-seed gradient is then the rank-one ``b^_nk a^_n^T``. This is the reduce setting of the
  paper with a deep linear network and a Gaussian likelihood; in the reduce setting a single
  sample is exact for any likelihood and any layers after the ``Mean``.

Two bias conventions (both common in the wild):

- ``bias="folded"`` (Martens & Grosse): ``a~ = [a, 1]`` (homogeneous coordinates); one Kronecker
  product covers ``[W | b]``, including the weight-bias cross terms;
- ``bias="separate"`` (curvlinops' ``KFACLinearOperator`` default): ``a~ = a``; the weight block
  is ``G kron A``, the bias block is ``G``, the cross terms are zero.

A layer without a bias (``bias=False``) has ``a~ = a`` and only the weight block under either
convention (:attr:`KFACFactors.has_bias`).

Against curvlinops' ``KFACLinearOperator`` (same ``kfac_approx``, ``separate_weight_and_bias``
and Fisher type): with outputs with positions its ``"mean"`` loss averages over the ``N R``
loss terms where minifim's sample log-likelihood sums its ``R`` positions (minifim's ``G`` is
``R`` times curvlinops'; ``reduction="sum"`` agrees); and its ``"type-2"`` backpropagates one
column of a square root of the loss Hessian for all positions at once, so a layer position that
reaches several output positions collects cross terms between them that depend on the square
root chosen, where minifim's true Fisher seeds each position and class separately (the
expectation over the labels, in which those cross terms vanish). The two agree whenever each
layer position reaches one output position or the output has no positions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from .._linalg import check_conditioned, is_numerically_singular
from .._validation import as_float_array, check_int, check_net, check_nonnegative
from ..core.conventions import reduction_scale
from ..memory import format_bytes, memory_budget, require_memory
from ..options import Bias, FisherKind, KFACApprox, KFACDamping, as_option, deprecated_keywords
from .curvature import curvature_factors

if TYPE_CHECKING:
    from ..core.model import Sequential

__all__ = ["KFACFactors", "KFACInverse", "KFACLayer", "kfac"]

BIAS_CONVENTIONS: tuple[Bias, ...] = tuple(Bias)  # the former constant, kept importable


class KFACLayer(NamedTuple):
    """Where one layer sits in the flat parameter vector and how its factors act on it.

    ``theta[start:bias_start]`` is the weight ``(out_dim, in_dim)`` row-major,
    ``theta[bias_start:stop]`` the bias (empty without one); ``folded``: ``A`` acts on the
    homogeneous ``[a; 1]`` (a folded bias), so ``A: (in_dim + 1, in_dim + 1)``, else
    ``(in_dim, in_dim)``.
    """

    out_dim: int
    in_dim: int
    start: int
    bias_start: int
    stop: int
    folded: bool

    @property
    def has_bias(self) -> bool:
        return self.stop > self.bias_start

    @property
    def separate_bias(self) -> bool:
        """A bias block of its own (``bias="separate"`` and the layer has a bias)."""
        return self.has_bias and not self.folded


def _layout(shapes: tuple, bias: str, has_bias: tuple) -> tuple[KFACLayer, ...]:
    out, off = [], 0
    for (o, i), hb in zip(shapes, has_bias):
        w, nb = o * i, (o if hb else 0)
        out.append(KFACLayer(o, i, off, off + w, off + w + nb, bool(hb) and bias == "folded"))
        off += w + nb
    return tuple(out)


@dataclass(frozen=True)
class KFACFactors:
    """Kronecker factors per layer (:func:`kfac`).

    Attributes
    ----------
    A : tuple of ndarray, ``A[l]: (in_l + 1, in_l + 1)`` (folded bias) or ``(in_l, in_l)``
    G : tuple of ndarray, ``G[l]: (out_l, out_l)``
    bias : {"folded", "separate"}
    shapes : tuple of ``(out_l, in_l)`` (``Conv2d``: ``(C_out, C_in kh kw)``)
    kfac_approx : {"expand", "reduce"}
        The flavour the factors were made with (:class:`minifim.options.KFACApprox`; the
        default ``"expand"`` for factors built by hand).
    has_bias : tuple of bool
        Whether each layer has a bias. ``None`` (the default): inferred from ``A``'s size with
        ``bias="folded"`` (``in_l + 1``: a bias), every layer has one with ``"separate"``.
    """

    A: tuple
    G: tuple
    bias: str
    shapes: tuple
    kfac_approx: str = "expand"
    has_bias: Any = None
    layers: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shapes = tuple(tuple(int(d) for d in s) for s in self.shapes)
        bias = as_option(self.bias, Bias, "bias")
        approx = as_option(self.kfac_approx, KFACApprox, "kfac_approx")
        if len(self.A) != len(shapes) or len(self.G) != len(shapes):
            raise ValueError(
                f"A, G: expected one factor per layer ({len(shapes)} layers), received "
                f"{len(self.A)} and {len(self.G)}"
            )
        if self.has_bias is None:
            has_bias = tuple(
                bias != "folded" or np.shape(A)[0] == i + 1 for A, (_, i) in zip(self.A, shapes)
            )
        else:
            has_bias = tuple(bool(b) for b in self.has_bias)
            if len(has_bias) != len(shapes):
                raise ValueError(
                    f"has_bias: expected one flag per layer ({len(shapes)} layers), received "
                    f"{len(has_bias)}"
                )
        layers = _layout(shapes, bias, has_bias)
        for l, (A, G, lay) in enumerate(zip(self.A, self.G, layers)):
            dim = lay.in_dim + lay.folded
            if np.shape(A) != (dim, dim) or np.shape(G) != (lay.out_dim, lay.out_dim):
                raise ValueError(
                    f"A[{l}], G[{l}]: expected shapes {(dim, dim)} and "
                    f"{(lay.out_dim, lay.out_dim)} for layer shape {shapes[l]} with "
                    f"bias={bias.value!r} and has_bias={has_bias[l]}, received "
                    f"{np.shape(A)} and {np.shape(G)}"
                )
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "kfac_approx", approx)
        object.__setattr__(self, "has_bias", has_bias)
        object.__setattr__(self, "layers", layers)

    @property
    def num_params(self) -> int:
        return self.layers[-1].stop if self.layers else 0

    def _layer_offsets(self) -> Iterator[tuple[int, int, int]]:
        for lay in self.layers:
            yield lay.start, lay.bias_start, lay.stop

    # --- dense views (memory-guarded) --------------------------------------------------------
    def _block_sizes(self) -> list[int]:
        return [lay.stop - lay.start for lay in self.layers]

    def _cheaper(self, dense_bytes: int) -> str:
        """The routes genuinely cheaper than ``dense_bytes``: the factors themselves, products,
        solves, the diagonal, and ``blocks()`` only when the blocks are smaller and fit."""
        factor_bytes = 8 * sum(A.size + G.size for A, G in zip(self.A, self.G))
        routes = (
            f"use the factors .A / .G themselves ({format_bytes(factor_bytes)}), "
            ".matvec(v) or .solve(v, damping) (per layer through the factors, O(P) "
            "memory), or .diagonal() (P floats)"
        )
        blocks = 8 * sum(s * s for s in self._block_sizes())
        if blocks < dense_bytes and blocks <= memory_budget():
            routes += f"; .blocks() (per layer, {format_bytes(blocks)})"
        return routes

    def _fill_block(self, l: int, out: np.ndarray) -> np.ndarray:
        """Write the dense block of layer ``l`` (flat order) into ``out: (P_l, P_l)`` in place.

        Each entry is one product ``G_ab A_cd`` written straight into its flat position
        (``np.multiply`` with ``out=`` a 4-D view): no ``np.kron`` temporary, no permuted copy.
        """
        lay = self.layers[l]
        o, i = lay.out_dim, lay.in_dim
        G, A = self.G[l], self.A[l]
        w = o * i

        def put(rows: Any, cols: Any, a_rows: Any, a_cols: Any) -> None:
            # out[rows, cols] viewed as (o, i_r, o, i_c) <- G[a, b] * A[rows_in, cols_in]
            sub = out[rows, cols]
            view = np.reshape(sub, (o, sub.shape[0] // o, o, sub.shape[1] // o), copy=False)
            np.multiply(G[:, None, :, None], A[a_rows, a_cols][None, :, None, :], out=view)

        if not lay.folded:
            put(slice(0, w), slice(0, w), slice(None), slice(None))
            if lay.has_bias:
                out[:w, w:] = 0.0
                out[w:, :w] = 0.0
                out[w:, w:] = G
            return out
        put(slice(0, w), slice(0, w), slice(0, i), slice(0, i))  # (W, W): G kron A_ww
        put(slice(0, w), slice(w, None), slice(0, i), slice(i, i + 1))  # (W, b): G kron A_w1
        put(slice(w, None), slice(0, w), slice(i, i + 1), slice(0, i))  # (b, W): G kron A_1w
        out[w:, w:] = G * A[i, i]  # (b, b): G A_11
        return out

    def layer_block(self, l: int) -> np.ndarray:
        """Dense block of layer ``l`` over ``(W_l, b_l)`` in flat order, ``(P_l, P_l)``.

        Memory-guarded: ``8 P_l^2`` bytes (the block is written in place, no temporary).
        """
        l = check_int(l, "l", 0)
        if l >= len(self.shapes):
            raise ValueError(f"l: expected a layer index in [0, {len(self.shapes)}), received {l}")
        s = self._block_sizes()[l]
        require_memory(
            8 * s * s,
            f"dense K-FAC block of layer {l} (P_l, P_l) = ({s}, {s}) float64",
            self._cheaper(8 * s * s),
        )
        return self._fill_block(l, np.empty((s, s)))

    def blocks(self) -> list[np.ndarray]:
        """Dense per-layer blocks ``[(P_0, P_0), ...]`` in flat order.

        Memory-guarded: ``8 sum_l P_l^2`` bytes.
        """
        sizes = self._block_sizes()
        need = 8 * sum(s * s for s in sizes)
        require_memory(need, f"dense K-FAC blocks of sizes {sizes} float64", self._cheaper(need))
        return [self._fill_block(l, np.empty((s, s))) for l, s in enumerate(sizes)]

    def to_dense(self) -> np.ndarray:
        """The block-diagonal ``(P, P)`` matrix the factors imply (memory-guarded, ``8 P^2``)."""
        P = self.num_params
        require_memory(
            8 * P * P, f"dense K-FAC matrix (P, P) = ({P}, {P}) float64", self._cheaper(8 * P * P)
        )
        M = np.zeros((P, P))
        for l, lay in enumerate(self.layers):
            self._fill_block(l, M[lay.start : lay.stop, lay.start : lay.stop])
        return M

    def diagonal(self) -> np.ndarray:
        """``diag`` of the implied matrix, ``(P,)``."""
        out = []
        for l, lay in enumerate(self.layers):
            dG, dA = np.diag(self.G[l]), np.diag(self.A[l])
            full = np.outer(dG, dA)
            if not lay.folded:
                out.append(full.ravel())
                if lay.has_bias:
                    out.append(dG)
            else:
                out += [full[:, : lay.in_dim].ravel(), full[:, lay.in_dim]]
        return np.concatenate(out)

    # --- matrix-free products ---------------------------------------------------------------
    def _apply(
        self,
        v: ArrayLike,
        on_matrix: Callable[[int, np.ndarray], np.ndarray],
        on_bias: Callable[[int, np.ndarray], np.ndarray],
    ) -> np.ndarray:
        """Apply ``on_matrix(l, V~: (o, i~)) -> (o, i~)`` per layer (``on_bias(l, b)`` for a
        separate bias block) to ``v: (P,)``."""
        v = as_float_array(v, "v", shape=(self.num_params,))
        out = np.empty_like(v)
        for l, lay in enumerate(self.layers):
            w0, b0, stop, i = lay.start, lay.bias_start, lay.stop, lay.in_dim
            V, vb = v[w0:b0].reshape(lay.out_dim, i), v[b0:stop]
            if not lay.folded:
                out[w0:b0] = on_matrix(l, V).ravel()
                if lay.has_bias:
                    out[b0:stop] = on_bias(l, vb)
            else:
                R = on_matrix(l, np.concatenate([V, vb[:, None]], axis=1))
                out[w0:b0] = R[:, :i].ravel()
                out[b0:stop] = R[:, i]
        return out

    def matvec(self, v: ArrayLike) -> np.ndarray:
        """``M v`` per layer as ``G V A`` (``(G kron A) vec(V) = vec(G V A^T)``), ``(P,)``."""
        return self._apply(v, lambda l, V: self.G[l] @ V @ self.A[l], lambda l, b: self.G[l] @ b)

    @deprecated_keywords(method="damping_type")
    def solve(
        self,
        v: ArrayLike,
        damping: float,
        damping_type: str | KFACDamping = "eigen",
        pi_correction: bool = True,
    ) -> np.ndarray:
        """Damped inverse products per layer, ``(P,)``: ``self.inverse(...).apply(v)``.

        ``damping_type="eigen"``: ``(G kron A + damping I)^{-1} v`` exactly, through the
        eigendecompositions ``G = Q_G g Q_G^T``, ``A = Q_A a Q_A^T``:
        ``Q_G [(Q_G^T V Q_A) / (g a^T + damping)] Q_A^T``. ``damping_type="factored"``: factored
        Tikhonov damping ``((G + sqrt(damping)/pi I) kron (A + pi sqrt(damping) I))^{-1} v``
        with ``pi = sqrt((tr A / dim A) / (tr G / dim G))`` (``pi = 1`` without the
        correction). A separate bias block is solved with ``G + damping I``. See
        :meth:`inverse` (which keeps the per-layer inverse for repeated products). The keyword
        ``damping_type`` (:class:`minifim.options.KFACDamping`) was ``method=`` (deprecated).
        """
        return self.inverse(damping, damping_type, pi_correction).apply(v)

    @deprecated_keywords(method="damping_type")
    def inverse(
        self, damping: float, damping_type: str | KFACDamping = "eigen", pi_correction: bool = True
    ) -> KFACInverse:
        """The per-layer damped inverse of :meth:`solve`, for repeated products.

        ``damping_type="eigen"`` keeps the factors' eigendecompositions (the damping enters at
        :meth:`KFACInverse.apply`, which may use another one); ``"factored"`` keeps the
        inverses of the damped factors ``(G + sqrt(damping)/pi I)^{-1}``, ``(A + pi
        sqrt(damping) I)^{-1}`` (and ``(G + damping I)^{-1}`` for a separate bias). Every
        damped factor system is checked (:func:`minifim._linalg.check_conditioned`; the
        factored ones here, the eigen ones at each :meth:`KFACInverse.apply`): a system with
        condition number ``>= 1 / (n eps)`` raises ``ValueError`` naming ``damping``, as do
        numerically singular factors with ``damping = 0``.
        """
        damping = check_nonnegative(damping, "damping")
        damping_type = as_option(damping_type, KFACDamping, "damping_type")
        if damping == 0 and any(is_numerically_singular(F) for F in self.G + self.A):
            raise ValueError(
                "damping: the K-FAC factors are singular (numerically) and "
                "damping = 0; use damping > 0"
            )
        if damping_type == "eigen":
            layers = []
            for G, A in zip(self.G, self.A):
                (eG, QG), (eA, QA) = np.linalg.eigh(G), np.linalg.eigh(A)
                layers.append({"QA": QA, "eA": eA, "QG": QG, "eG": eG})
            return KFACInverse(
                KFACDamping.EIGEN, self.bias, self.shapes, tuple(layers), damping, self.has_bias
            )
        sq = np.sqrt(damping)
        layers = []
        for l, (G, A, lay) in enumerate(zip(self.G, self.A, self.layers)):
            tg, ta = np.trace(G) / G.shape[0], np.trace(A) / A.shape[0]
            p = float(np.sqrt(ta / tg)) if pi_correction and tg > 0 and ta > 0 else 1.0
            wG, wA = np.linalg.eigvalsh(G), np.linalg.eigvalsh(A)
            check_conditioned(wG + sq / p, damping, f"G_{l} + sqrt(damping) / pi I")
            check_conditioned(wA + p * sq, damping, f"A_{l} + pi sqrt(damping) I")
            layer = {
                "Ainv": np.linalg.inv(A + p * sq * np.eye(A.shape[0])),
                "Ginv": np.linalg.inv(G + sq / p * np.eye(G.shape[0])),
                "pi": np.asarray(p, dtype=np.float64),
            }
            if lay.separate_bias:
                check_conditioned(wG + damping, damping, f"G_{l} + damping I (bias)")
                layer["Gbinv"] = np.linalg.inv(G + damping * np.eye(G.shape[0]))
            layers.append(layer)
        return KFACInverse(
            KFACDamping.FACTORED, self.bias, self.shapes, tuple(layers), damping, self.has_bias
        )


@dataclass(frozen=True)
class KFACInverse:
    """The per-layer damped inverse of :class:`KFACFactors` (:meth:`KFACFactors.inverse`).

    Attributes
    ----------
    damping_type : {"eigen", "factored"}
        :class:`minifim.options.KFACDamping`.
    bias : {"folded", "separate"}
    shapes : tuple of ``(out_l, in_l)``
    layers : tuple of dict of ndarray
        Per layer, ``"eigen"``: ``"QG", "eG"`` (``G_l = Q_G diag(e_G) Q_G^T``) and ``"QA",
        "eA"``; ``"factored"``: ``"Ginv"`` ``(G_l + sqrt(damping)/pi I)^{-1}``, ``"Ainv"``
        ``(A_l + pi sqrt(damping) I)^{-1}``, ``"pi"`` (0-d) and, with a separate bias,
        ``"Gbinv"`` ``(G_l + damping I)^{-1}``.
    damping : float
        The damping the inverse was made with (the default of :meth:`apply`).
    has_bias : tuple of bool or None
        Whether each layer has a bias (``None``: every layer has one).
    """

    damping_type: str  # a KFACDamping value
    bias: str
    shapes: tuple
    layers: tuple
    damping: float
    has_bias: Any = None

    def _layout(self) -> tuple[KFACLayer, ...]:
        has_bias = (True,) * len(self.shapes) if self.has_bias is None else self.has_bias
        return _layout(tuple(self.shapes), self.bias, tuple(has_bias))

    def check(self, damping: float) -> None:
        """``"eigen"``: refuse (``ValueError`` naming ``damping``) a damped layer system
        ``G_l kron A_l + damping I`` (or a separate bias ``G_l + damping I``) with condition
        number ``>= 1 / (n eps)``. ``"factored"`` is checked when made."""
        if self.damping_type != "eigen":
            return
        for l, (layer, lay) in enumerate(zip(self.layers, self._layout())):
            check_conditioned(
                np.outer(layer["eG"], layer["eA"]) + damping,
                damping,
                f"K-FAC G_{l} kron A_{l} + damping I",
            )
            if lay.separate_bias:
                check_conditioned(layer["eG"] + damping, damping, f"K-FAC G_{l} + damping I (bias)")

    def apply(self, v: ArrayLike, damping: float | None = None) -> np.ndarray:
        """The damped inverse times ``v: (P,)``, shape ``(P,)``.

        ``damping`` (``"eigen"`` only; default :attr:`damping`): the eigendecompositions do
        not depend on it, so one inverse serves any damping; the damped system is checked at
        each call (:meth:`check`). ``"factored"`` applies the inverses made with
        :attr:`damping` (passing another one raises ``ValueError``).
        """
        if damping is None:
            damping = self.damping
        else:
            damping = check_nonnegative(damping, "damping")
            if self.damping_type == "factored" and damping != self.damping:
                raise ValueError(
                    f"damping: a factored K-FAC inverse applies the damping it "
                    f"was made with ({self.damping!r}), received {damping!r}; "
                    "make a new one with KFACFactors.inverse"
                )
        self.check(damping)
        layout = self._layout()
        P = layout[-1].stop if layout else 0
        v = as_float_array(v, "v", shape=(P,))
        out = np.empty_like(v)
        for lay, layer in zip(layout, self.layers):
            w0, b0, stop, i = lay.start, lay.bias_start, lay.stop, lay.in_dim
            V, vb = v[w0:b0].reshape(lay.out_dim, i), v[b0:stop]
            if lay.folded:
                V = np.concatenate([V, vb[:, None]], axis=1)
            if self.damping_type == "eigen":
                QG, eG, QA, eA = layer["QG"], layer["eG"], layer["QA"], layer["eA"]
                D = QG @ ((QG.T @ V @ QA) / (np.outer(eG, eA) + damping)) @ QA.T
                if lay.separate_bias:
                    out[b0:stop] = QG @ ((QG.T @ vb) / (eG + damping))
            else:
                D = layer["Ginv"] @ V @ layer["Ainv"]
                if lay.separate_bias:
                    out[b0:stop] = layer["Gbinv"] @ vb
            if lay.folded:
                out[b0:stop] = D[:, i]
                D = D[:, :i]
            out[w0:b0] = D.ravel()
        return out


def _homogeneous_to_flat(o: int, i: int) -> np.ndarray:
    """Homogeneous ``(o, i + 1)`` positions of the flat ``[W (o*i), b (o)]`` entries."""
    rows = np.arange(o)[:, None] * (i + 1)
    return np.concatenate([(rows + np.arange(i)[None, :]).ravel(), rows[:, 0] + i])


def _weight_sharing_format(
    a: np.ndarray, B: np.ndarray, approx: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """One chunk's inputs and seeds of a layer as the rows of its Gram products.

    ``a: (n, R, in)`` (or ``(n, in)``: ``R = 1``) and ``B: (n, K, R, out)`` (or ``(n, K, out)``)
    to ``(rows_a, in)``, ``(rows_b, out)`` and the number of positions ``R`` each row of
    ``a`` stands for: expand keeps every position (``n R`` and ``n K R`` rows), reduce takes the
    position mean of ``a`` and the position sum of ``B`` (``n`` and ``n K`` rows).
    """
    if a.ndim == 2:  # no position axis: R = 1
        return a, B.reshape(-1, B.shape[-1]), 1
    R = a.shape[1]
    if approx == "reduce" and R > 1:
        return a.mean(axis=1), B.sum(axis=2).reshape(-1, B.shape[-1]), 1
    return a.reshape(-1, a.shape[-1]), B.reshape(-1, B.shape[-1]), R


def kfac(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    fisher: str | FisherKind = "true",
    *,
    kfac_approx: str | KFACApprox = "expand",
    bias: str | Bias = "folded",
    n_samples: int = 1,
    rng: np.random.Generator | int | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> KFACFactors:
    """K-FAC factors of the curvature ``fisher`` (definitions in the module docstring).

    Parameters
    ----------
    net : Sequential or MLP
        Its parametric layers (``Linear``, on any number of positions, and ``Conv2d``) are
        the K-FAC blocks.
    theta : ndarray, shape (P,)
    X : ndarray, shape ``(N, *input_shape)``
    y : targets, needed for ``fisher="empirical"``
    fisher : {"true", "empirical", "mc", "argmax", "ggn"}
    kfac_approx : {"expand", "reduce"}
        :class:`minifim.options.KFACApprox`. ``"expand"``: ``A_l = 1/(N R_l) sum_nr a~ a~^T``,
        ``G_l = c sum_nkr b b^T``; ``"reduce"``: ``A_l = 1/N sum_n a^ a^^T`` with the position
        mean ``a^_n``, ``G_l = c sum_nk b^ b^^T`` with the position sum ``b^_nk``. Equal (bit
        for bit) on layers without weight sharing (``R_l = 1``).
    bias : {"folded", "separate"}
    n_samples, rng : Monte-Carlo labels per input and their generator (``fisher="mc"``)
    reduction : {"mean", "sum"}, carried by ``G``
    chunk_size : int or None
        Samples per chunk of the accumulation (default: sized from the memory budget).

    Returns
    -------
    KFACFactors
        ``A[l]: (in_l + 1, in_l + 1)`` (folded bias) or ``(in_l, in_l)``, ``G[l]: (out_l,
        out_l)``, ``kfac_approx`` and ``has_bias`` recorded; ``.to_dense()`` gives the implied
        ``(P, P)`` matrix on request.

    Notes
    -----
    Cost: per chunk of ``n`` samples one SYRK-shaped GEMM per factor, ``(n R_l, in_l)`` and
    ``(n K R_l, out_l)`` rows in expand, ``n`` and ``n K`` in reduce (after a mean and a sum over
    the positions). Memory: the factors, ``8 sum_l (in_l + 1)^2 + out_l^2`` bytes, and per chunk
    the homogeneous copy ``[a, 1]`` of a layer's rows (folded bias), both guarded.
    """
    check_net(net)
    fisher = as_option(fisher, FisherKind, "fisher")
    approx = as_option(kfac_approx, KFACApprox, "kfac_approx")
    bias = as_option(bias, Bias, "bias")
    X = net.check_inputs(X)
    N = X.shape[0]
    scale = reduction_scale(reduction, N)
    has_bias = tuple(bs.stop > bs.start for _, bs in net.layer_slices)
    layers = _layout(tuple(net.shapes), bias, has_bias)
    factor_bytes = 8 * sum((lay.in_dim + lay.folded) ** 2 + lay.out_dim**2 for lay in layers)
    require_memory(
        factor_bytes,
        f"K-FAC factors of the layer shapes {list(net.shapes)} float64",
        "the exact diagonal (minifim.fisher_diagonal, P floats) or a matrix-free fisher_operator",
    )
    A = [np.zeros((lay.in_dim + lay.folded,) * 2) for lay in layers]
    G = [np.zeros((lay.out_dim,) * 2) for lay in layers]
    positions = [1] * len(layers)
    for acts, Bs in curvature_factors(net, theta, X, y, fisher, n_samples, rng, chunk_size):
        for l, (a, B, lay) in enumerate(zip(acts, Bs, layers)):
            a, B, positions[l] = _weight_sharing_format(a, B, approx)
            if lay.folded:
                require_memory(
                    8 * a.shape[0] * (a.shape[1] + 1),
                    f"homogeneous inputs [a, 1] of layer {l}, ({a.shape[0]}, "
                    f"{a.shape[1] + 1}) float64",
                    "a smaller chunk_size, kfac_approx='reduce' (one row per sample) or "
                    "bias='separate' (no homogeneous copy)",
                )
                a = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
            A[l] += a.T @ a
            G[l] += B.T @ B
    A = [a / (N * R) for a, R in zip(A, positions)]
    G = [g * scale for g in G]
    return KFACFactors(tuple(A), tuple(G), bias, tuple(net.shapes), approx, has_bias)
