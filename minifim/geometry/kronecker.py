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

from dataclasses import dataclass

import numpy as np

from .._validation import as_float_array, check_choice, check_int, check_net, check_nonnegative
from ..memory import format_bytes, memory_budget, require_memory
from .curvature import FISHER_KINDS, _scale, curvature_factors

__all__ = ["KFACFactors", "kfac"]

BIAS_CONVENTIONS = ("folded", "separate")


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

    def _layer_offsets(self):
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
        routes = (f"use the factors .A / .G themselves ({format_bytes(factor_bytes)}), "
                  ".matvec(v) or .solve(v, damping) (per layer through the factors, O(P) "
                  "memory), or .diagonal() (P floats)")
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

        def put(rows, cols, a_rows, a_cols):
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
        put(slice(0, w), slice(0, w), slice(0, i), slice(0, i))        # (W, W): G kron A_ww
        put(slice(0, w), slice(w, None), slice(0, i), slice(i, i + 1))  # (W, b): G kron A_w1
        put(slice(w, None), slice(0, w), slice(i, i + 1), slice(0, i))  # (b, W): G kron A_1w
        out[w:, w:] = G * A[i, i]                                        # (b, b): G A_11
        return out

    def layer_block(self, l: int) -> np.ndarray:
        """Dense block of layer ``l`` over ``(W_l, b_l)`` in flat order, ``(P_l, P_l)``.

        Memory-guarded: ``8 P_l^2`` bytes (the block is written in place, no temporary).
        """
        l = check_int(l, "l", 0)
        if l >= len(self.shapes):
            raise ValueError(f"l: expected a layer index in [0, {len(self.shapes)}), "
                             f"received {l}")
        s = self._block_sizes()[l]
        require_memory(8 * s * s, f"dense K-FAC block of layer {l} (P_l, P_l) = ({s}, {s}) "
                       "float64", self._cheaper(8 * s * s))
        return self._fill_block(l, np.empty((s, s)))

    def blocks(self) -> list[np.ndarray]:
        """Dense per-layer blocks ``[(P_0, P_0), ...]`` in flat order.

        Memory-guarded: ``8 sum_l P_l^2`` bytes.
        """
        sizes = self._block_sizes()
        need = 8 * sum(s * s for s in sizes)
        require_memory(need, f"dense K-FAC blocks of sizes {sizes} float64",
                       self._cheaper(need))
        return [self._fill_block(l, np.empty((s, s))) for l, s in enumerate(sizes)]

    def to_dense(self) -> np.ndarray:
        """The block-diagonal ``(P, P)`` matrix the factors imply (memory-guarded, ``8 P^2``)."""
        P = self.num_params
        require_memory(8 * P * P, f"dense K-FAC matrix (P, P) = ({P}, {P}) float64",
                       self._cheaper(8 * P * P))
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
    def _apply(self, v, on_matrix, on_bias):
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

    def matvec(self, v) -> np.ndarray:
        """``M v`` per layer as ``G V A`` (``(G kron A) vec(V) = vec(G V A^T)``), ``(P,)``."""
        return self._apply(v, lambda l, V: self.G[l] @ V @ self.A[l],
                           lambda l, b: self.G[l] @ b)

    def solve(self, v, damping: float, method: str = "eigen", pi_correction: bool = True
              ) -> np.ndarray:
        """Damped inverse products per layer, ``(P,)``.

        ``method="eigen"``: ``(G kron A + damping I)^{-1} v`` exactly, through the
        eigendecompositions ``G = Q_G g Q_G^T``, ``A = Q_A a Q_A^T``:
        ``Q_G [(Q_G^T V Q_A) / (g a^T + damping)] Q_A^T``. ``method="factored"``: factored
        Tikhonov damping ``((G + sqrt(damping)/pi I) kron (A + pi sqrt(damping) I))^{-1} v``
        with ``pi = sqrt((tr A / dim A) / (tr G / dim G))`` (``pi = 1`` without the
        correction). A separate bias block is solved with ``G + damping I``.
        """
        damping = check_nonnegative(damping, "damping")
        check_choice(method, "method", ("eigen", "factored"))
        if damping == 0 and any(_singular(F) for F in self.G + self.A):
            raise ValueError("damping: the K-FAC factors are singular (numerically) and "
                             "damping = 0; use damping > 0")
        if method == "eigen":
            eig = [(np.linalg.eigh(G), np.linalg.eigh(A)) for G, A in zip(self.G, self.A)]
            for l, ((g, _), (a, _)) in enumerate(eig):
                denom = np.outer(g, a) + damping
                _check_conditioned(denom, damping, f"G_{l} kron A_{l} + damping I")
                if self.bias == "separate":
                    _check_conditioned(g + damping, damping, f"G_{l} + damping I (bias)")

            def on_matrix(l, V):
                (g, QG), (a, QA) = eig[l]
                return QG @ ((QG.T @ V @ QA) / (np.outer(g, a) + damping)) @ QA.T

            def on_bias(l, b):
                (g, QG), _ = eig[l]
                return QG @ ((QG.T @ b) / (g + damping))

            return self._apply(v, on_matrix, on_bias)
        sq = np.sqrt(damping)

        def pi(l):
            G, A = self.G[l], self.A[l]
            tg, ta = np.trace(G) / G.shape[0], np.trace(A) / A.shape[0]
            return np.sqrt(ta / tg) if pi_correction and tg > 0 and ta > 0 else 1.0

        for l, (G, A) in enumerate(zip(self.G, self.A)):
            p = pi(l)
            _check_conditioned(np.linalg.eigvalsh(G) + sq / p, damping,
                               f"G_{l} + sqrt(damping) / pi I")
            _check_conditioned(np.linalg.eigvalsh(A) + p * sq, damping,
                               f"A_{l} + pi sqrt(damping) I")
            if self.bias == "separate":
                _check_conditioned(np.linalg.eigvalsh(G) + damping, damping,
                                   f"G_{l} + damping I (bias)")

        def on_matrix_f(l, V):
            G, A, p = self.G[l], self.A[l], pi(l)
            left = np.linalg.solve(G + sq / p * np.eye(G.shape[0]), V)
            return np.linalg.solve(A + p * sq * np.eye(A.shape[0]), left.T).T

        def on_bias_f(l, b):
            G = self.G[l]
            return np.linalg.solve(G + damping * np.eye(G.shape[0]), b)

        return self._apply(v, on_matrix_f, on_bias_f)


def _check_conditioned(eigenvalues: np.ndarray, damping: float, what: str) -> None:
    """Refuse a damped symmetric system whose eigenvalues ``eigenvalues`` (any shape) give a
    condition number ``max / min >= 1 / (n eps)`` (no correct digit: the dense route's
    ``dpocon`` criterion, exact here from the eigenvalues), or a non-positive one."""
    w = np.ravel(eigenvalues)
    lo, hi = float(w.min()), float(w.max())
    n = w.size
    if not (lo > 0 and lo > n * np.finfo(np.float64).eps * hi):
        cond = hi / lo if lo > 0 else float("inf")
        raise ValueError(f"damping: the K-FAC system {what} has condition number {cond:.3g} "
                         f">= 1 / (n eps) = {1 / (n * np.finfo(np.float64).eps):.3g} (eigenvalues "
                         f"in [{lo:.3g}, {hi:.3g}]) with damping = {damping!r}; increase damping "
                         "(the solve cannot be accurate)")


def _singular(M: np.ndarray) -> bool:
    """Numerically singular symmetric PSD factor: ``lambda_min <= dim * eps * lambda_max``."""
    w = np.linalg.eigvalsh(M)
    return bool(w[-1] <= 0 or w[0] <= M.shape[0] * np.finfo(np.float64).eps * w[-1])


def _homogeneous_to_flat(o: int, i: int) -> np.ndarray:
    """Homogeneous ``(o, i + 1)`` positions of the flat ``[W (o*i), b (o)]`` entries."""
    rows = np.arange(o)[:, None] * (i + 1)
    return np.concatenate([(rows + np.arange(i)[None, :]).ravel(), rows[:, 0] + i])


def kfac(net, theta, X, y=None, fisher: str = "true", *, bias: str = "folded",
         n_samples: int = 1, rng=None, reduction: str = "mean",
         chunk_size: int | None = None) -> KFACFactors:
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
    check_choice(fisher, "fisher", FISHER_KINDS)
    check_choice(bias, "bias", BIAS_CONVENTIONS)
    X = net.check_inputs(X)
    N = X.shape[0]
    scale = _scale(reduction, N)
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
