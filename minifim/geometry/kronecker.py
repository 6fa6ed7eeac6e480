"""Kronecker-factored approximate curvature (K-FAC; Martens & Grosse 2015).

Per layer ``l`` the curvature block over ``(W_l, b_l)`` is approximated by a Kronecker product

    ``M_l ~ G_l kron A_l``,  ``A_l = 1/N sum_n a~_n a~_n^T``,  ``G_l = c sum_n sum_k b_nk b_nk^T``

with ``a~`` the layer input, ``b_nk`` the seed ``k`` of sample ``n`` carried back to the layer's
pre-activations (the seeds of :mod:`minifim.geometry.curvature`: the exact expectation over
the model's labels for ``fisher="true"``, i.e. curvlinops' ``"type-2"``; the data labels for
``"empirical"``; sampled labels for ``"mc"``), and ``c = 1/N`` (``reduction="mean"``) or ``1``
(``"sum"``): the reduction is carried by ``G``, ``A`` is always a mean. With ``W: (out, in)``
flattened row-major the weight block is ``G kron A``.

Two bias conventions (both common in the wild):

- ``bias="folded"`` (Martens & Grosse): ``a~ = [a, 1]`` (homogeneous coordinates); one Kronecker
  product covers ``[W | b]``, including the weight-bias cross terms;
- ``bias="separate"`` (curvlinops' ``KFACLinearOperator`` default): ``a~ = a``; the weight block
  is ``G kron A``, the bias block is ``G``, the cross terms are zero.

K-FAC is exact where ``G_n`` or ``A_n`` does not vary over samples: a single sample, or a single
linear layer with a Gaussian likelihood (``G_n = I / sigma^2``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from .._linalg import check_conditioned, is_numerically_singular
from .._validation import as_float_array, check_int, check_net, check_nonnegative
from ..core.conventions import reduction_scale
from ..memory import format_bytes, memory_budget, require_memory
from ..options import Bias, FisherKind, KFACDamping, as_option, deprecated_keywords
from .curvature import curvature_factors

if TYPE_CHECKING:
    from ..core.model import MLP

__all__ = ["KFACFactors", "KFACInverse", "kfac"]

BIAS_CONVENTIONS: tuple[Bias, ...] = tuple(Bias)  # the former constant, kept importable


@dataclass(frozen=True)
class KFACFactors:
    """Kronecker factors per layer.

    Attributes
    ----------
    A : tuple of ndarray, ``A[l]: (in_l + 1, in_l + 1)`` (folded) or ``(in_l, in_l)``
    G : tuple of ndarray, ``G[l]: (out_l, out_l)``
    bias : {"folded", "separate"}
    shapes : tuple of ``(out_l, in_l)``
    """

    A: tuple
    G: tuple
    bias: str
    shapes: tuple

    @property
    def num_params(self) -> int:
        return sum(o * i + o for o, i in self.shapes)

    def _layer_offsets(self) -> Iterator[tuple[int, int, int]]:
        off = 0
        for o, i in self.shapes:
            yield off, off + o * i, off + o * i + o
            off += o * i + o

    # --- dense views (memory-guarded) --------------------------------------------------------
    def _block_sizes(self) -> list[int]:
        return [o * i + o for o, i in self.shapes]

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
        o, i = self.shapes[l]
        G, A = self.G[l], self.A[l]
        w = o * i

        def put(rows: Any, cols: Any, a_rows: Any, a_cols: Any) -> None:
            # out[rows, cols] viewed as (o, i_r, o, i_c) <- G[a, b] * A[rows_in, cols_in]
            sub = out[rows, cols]
            view = np.reshape(sub, (o, sub.shape[0] // o, o, sub.shape[1] // o), copy=False)
            np.multiply(G[:, None, :, None], A[a_rows, a_cols][None, :, None, :], out=view)

        if self.bias == "separate":
            put(slice(0, w), slice(0, w), slice(None), slice(None))
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
        for l, (start, _, stop) in enumerate(self._layer_offsets()):
            self._fill_block(l, M[start:stop, start:stop])
        return M

    def diagonal(self) -> np.ndarray:
        """``diag`` of the implied matrix, ``(P,)``."""
        out = []
        for l, (_, i) in enumerate(self.shapes):
            dG, dA = np.diag(self.G[l]), np.diag(self.A[l])
            if self.bias == "separate":
                out += [np.outer(dG, dA).ravel(), dG]
            else:
                full = np.outer(dG, dA)
                out += [full[:, :i].ravel(), full[:, i]]
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
        for l, (w0, b0, stop) in enumerate(self._layer_offsets()):
            o, i = self.shapes[l]
            V, vb = v[w0:b0].reshape(o, i), v[b0:stop]
            if self.bias == "separate":
                out[w0:b0] = on_matrix(l, V).ravel()
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
            return KFACInverse(KFACDamping.EIGEN, self.bias, self.shapes, tuple(layers), damping)
        sq = np.sqrt(damping)
        layers = []
        for l, (G, A) in enumerate(zip(self.G, self.A)):
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
            if self.bias == "separate":
                check_conditioned(wG + damping, damping, f"G_{l} + damping I (bias)")
                layer["Gbinv"] = np.linalg.inv(G + damping * np.eye(G.shape[0]))
            layers.append(layer)
        return KFACInverse(KFACDamping.FACTORED, self.bias, self.shapes, tuple(layers), damping)


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
    """

    damping_type: str  # a KFACDamping value
    bias: str
    shapes: tuple
    layers: tuple
    damping: float

    def check(self, damping: float) -> None:
        """``"eigen"``: refuse (``ValueError`` naming ``damping``) a damped layer system
        ``G_l kron A_l + damping I`` (or a separate bias ``G_l + damping I``) with condition
        number ``>= 1 / (n eps)``. ``"factored"`` is checked when made."""
        if self.damping_type != "eigen":
            return
        for l, layer in enumerate(self.layers):
            check_conditioned(
                np.outer(layer["eG"], layer["eA"]) + damping,
                damping,
                f"K-FAC G_{l} kron A_{l} + damping I",
            )
            if self.bias == "separate":
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
        P = sum(o * i + o for o, i in self.shapes)
        v = as_float_array(v, "v", shape=(P,))
        out = np.empty_like(v)
        off = 0
        for (o, i), layer in zip(self.shapes, self.layers):
            w0, b0, stop = off, off + o * i, off + o * i + o
            off = stop
            V, vb = v[w0:b0].reshape(o, i), v[b0:stop]
            if self.bias == "folded":
                V = np.concatenate([V, vb[:, None]], axis=1)
            if self.damping_type == "eigen":
                QG, eG, QA, eA = layer["QG"], layer["eG"], layer["QA"], layer["eA"]
                D = QG @ ((QG.T @ V @ QA) / (np.outer(eG, eA) + damping)) @ QA.T
                db = None if self.bias == "folded" else QG @ ((QG.T @ vb) / (eG + damping))
            else:
                D = layer["Ginv"] @ V @ layer["Ainv"]
                db = None if self.bias == "folded" else layer["Gbinv"] @ vb
            if self.bias == "folded":
                D, db = D[:, :i], D[:, i]
            out[w0:b0] = D.ravel()
            out[b0:stop] = db
        return out


def _homogeneous_to_flat(o: int, i: int) -> np.ndarray:
    """Homogeneous ``(o, i + 1)`` positions of the flat ``[W (o*i), b (o)]`` entries."""
    rows = np.arange(o)[:, None] * (i + 1)
    return np.concatenate([(rows + np.arange(i)[None, :]).ravel(), rows[:, 0] + i])


def kfac(
    net: MLP,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    fisher: str | FisherKind = "true",
    *,
    bias: str | Bias = "folded",
    n_samples: int = 1,
    rng: np.random.Generator | int | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> KFACFactors:
    """K-FAC factors of the curvature ``fisher`` (see the module docstring for conventions).

    Parameters
    ----------
    net : MLP
    theta : ndarray, shape (P,)
    X : ndarray, shape (N, D)
    y : targets, needed for ``fisher="empirical"``
    fisher : {"true", "empirical", "mc", "argmax", "ggn"}
    bias : {"folded", "separate"}
    reduction : {"mean", "sum"}, carried by ``G``

    Returns
    -------
    KFACFactors
        ``A[l]: (in_l + 1, in_l + 1)`` (folded) or ``(in_l, in_l)``, ``G[l]: (out_l, out_l)``;
        ``.to_dense()`` gives the implied ``(P, P)`` matrix on request.
    """
    check_net(net)
    fisher = as_option(fisher, FisherKind, "fisher")
    bias = as_option(bias, Bias, "bias")
    X = net.check_inputs(X)
    N = X.shape[0]
    scale = reduction_scale(reduction, N)
    extra = 1 if bias == "folded" else 0
    A = [np.zeros((i + extra, i + extra)) for _, i in net.shapes]
    G = [np.zeros((o, o)) for o, _ in net.shapes]
    for acts, Bs in curvature_factors(net, theta, X, y, fisher, n_samples, rng, chunk_size):
        for l, (a, B) in enumerate(zip(acts, Bs)):
            if extra:
                a = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
            A[l] += a.T @ a
            Bf = B.reshape(-1, B.shape[-1])
            G[l] += Bf.T @ Bf
    A = tuple(a / N for a in A)
    G = tuple(g * scale for g in G)
    return KFACFactors(A, G, bias, tuple(net.shapes))
