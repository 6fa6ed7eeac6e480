"""The factor ``U`` of a curvature held per layer: its Gram matrix and its products.

Every curvature kind of :mod:`minifim.geometry.curvature` except the Hessian is ``M = c U^T U``
with ``U: (N K, P)`` the stacked per-seed gradients (``K`` seeds per sample, ``c = 1/N`` for a
mean or ``1`` for a sum). Row ``(n, k)`` of ``U`` has, per parametric layer ``l``, the ``W_l``
block ``B_l[n, k]^T a_l[n]`` and the ``b_l`` block ``B_l[n, k].sum(axis=0)``, with ``a_l: (N,
R_l, in_l)`` the unfolded layer inputs and ``B_l: (N, K, R_l, out_l)`` the seeds backpropagated
to its outputs (:func:`minifim.geometry.curvature.curvature_factors`; ``R_l = 1`` for a plain
dense layer, the positions sharing the weight otherwise). :class:`SeedFactors` keeps these
per-layer factors and never forms ``U`` or any ``(P, P)`` matrix:

- the Gram matrix (:meth:`SeedFactors.gram`)
  ``G = c U U^T: (N K, N K)``; for ``R_l = 1``, ``G[(n, k), (m, k')] = c sum_l (B_l[n, k] .
  B_l[m, k']) (a_l[n] . a_l[m] + 1)`` (the ``+ 1`` is the bias), ``O((N K)^2 sum_l out_l + N^2
  sum_l in_l)`` work; a weight-sharing layer (``R_l > 1``) adds ``U_l U_l^T`` of its ``(N K,
  P_l)`` gradient rows, ``O(N K R_l out_l in_l + (N K)^2 P_l)`` work;
- the products ``U v`` (:meth:`SeedFactors.matvec`) and ``U^T w``
  (:meth:`SeedFactors.rmatvec`), per layer, ``O(N K sum_l R_l out_l in_l)`` work per vector.

They carry the push-through identities of the Gram routes: ``M`` and ``G`` share their non-zero
eigenvalues, with eigenvectors ``v = U^T w sqrt(c / mu)`` (:mod:`minifim.geometry.spectrum`),
and ``(c U^T U + lambda I)^{-1} g = (g - U^T (c U U^T + lambda I)^{-1} c U g) / lambda``
(:mod:`minifim.methods.ngd`, route ``"woodbury"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .curvature import curvature_factors

__all__ = ["SeedFactors", "seed_factors"]

_BLOCK_BYTES = 2**27  # working memory of the blocked products U^T W


def _shared_gradients(a: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``G[n, k] = B[n, k]^T a[n]: (N, K, out, in)`` for ``a: (N, R, in)``, ``B: (N, K, R,
    out)``: one ``(K out, R) x (R, in)`` GEMM per sample."""
    N, K, R, o = B.shape
    return np.matmul(B.transpose(0, 1, 3, 2).reshape(N, K * o, R), a).reshape(N, K, o, -1)


@dataclass(frozen=True)
class SeedFactors:
    """The factor ``U: (N K, P)`` of ``M = c U^T U``, held as per-layer factors.

    Attributes
    ----------
    acts : tuple of ndarray, ``acts[l]: (N, R_l, in_l)``
        Unfolded layer inputs.
    Bs : tuple of ndarray, ``Bs[l]: (N, K, R_l, out_l)``
        Seeds backpropagated to the outputs of parametric layer ``l`` (unfolded).
    layer_slices : tuple of ``(slice, slice)``
        Per layer, the flat positions of ``W_l`` (row-major ``(out_l, in_l)``) and ``b_l``
        (``Sequential.layer_slices``; an empty ``b_l`` slice for ``bias=False``).
    num_params : int
        ``P``.
    """

    acts: tuple
    Bs: tuple
    layer_slices: tuple
    num_params: int

    @property
    def num_samples(self) -> int:
        """``N``."""
        return int(self.Bs[0].shape[0])

    @property
    def num_seeds(self) -> int:
        """``K``, seeds per sample."""
        return int(self.Bs[0].shape[1])

    @property
    def rows(self) -> int:
        """``N K``, the rows of ``U``."""
        return self.num_samples * self.num_seeds

    def _layer_rows(self, l: int) -> np.ndarray:
        """The ``(N K, P_l)`` gradient rows of layer ``l`` (weights, then the bias if any)."""
        bs, a, B = self.layer_slices[l][1], self.acts[l], self.Bs[l]
        N, K, R, o = B.shape
        i = a.shape[2]
        nb = bs.stop - bs.start
        U = np.empty((N, K, o * i + nb))
        U[:, :, : o * i] = _shared_gradients(a, B).reshape(N, K, o * i)
        if nb:
            U[:, :, o * i :] = B.sum(axis=2)
        return U.reshape(N * K, -1)

    def gram(self, scale: float = 1.0) -> np.ndarray:
        """``G = scale U U^T``, shape ``(N K, N K)``, rows in ``(n, k)`` order (``k`` fastest).

        Memory: the result and one ``(N K, N K)`` product temporary (plus the ``(N K, P_l)``
        rows of a weight-sharing layer).
        """
        N, K = self.num_samples, self.num_seeds
        rows = N * K
        G = np.zeros((rows, rows))
        for l, (a, B) in enumerate(zip(self.acts, self.Bs)):
            if a.shape[1] > 1:
                Ul = self._layer_rows(l)
                G += Ul @ Ul.T
                continue
            bs = self.layer_slices[l][1]
            Bf = B.reshape(rows, -1)
            BB = Bf @ Bf.T  # (NK, NK): seed inner products at the pre-activations
            a1 = a[:, 0]
            A = a1 @ a1.T
            if bs.stop > bs.start:
                A += 1.0  # (N, N): input inner products, + 1 for the bias
            BB.reshape(N, K, N, K)[...] *= A[:, None, :, None]
            G += BB
        G *= scale
        return G

    def matvec(self, v: ArrayLike) -> np.ndarray:
        """``U v``: ``v: (P,)`` to ``(N K,)``, or ``v: (P, m)`` to ``(N K, m)``.

        Per layer ``(U v)[(n, k)] += sum_r B_l[n, k, r] . (V_W a_l[n, r] + v_b)`` with ``V_W:
        (out_l, in_l)`` and ``v_b: (out_l,)`` the layer's blocks of ``v``.
        """
        v = np.asarray(v, dtype=np.float64)
        V = v[:, None] if v.ndim == 1 else v
        m = V.shape[1]
        N, K = self.num_samples, self.num_seeds
        out = np.zeros((N, K, m))
        for (ws, bs), a, B in zip(self.layer_slices, self.acts, self.Bs):
            R, o, i = B.shape[2], B.shape[3], a.shape[2]
            if R == 1:
                Z = np.einsum("ni,oim->nom", a[:, 0], V[ws].reshape(o, i, m))  # (N, o, m)
            else:
                Z = np.einsum("nri,oim->nrom", a, V[ws].reshape(o, i, m)).reshape(N, R * o, m)
            if bs.stop > bs.start:
                Z = (Z.reshape(N, R, o, m) + V[bs][None, None]).reshape(N, R * o, m)
            out += np.matmul(B.reshape(N, K, R * o), Z)  # (N, K, R o) @ (N, R o, m)
        out = out.reshape(N * K, m)
        return out[:, 0] if v.ndim == 1 else out

    def rmatvec(self, w: ArrayLike) -> np.ndarray:
        """``U^T w``: ``w: (N K,)`` to ``(P,)``, or ``w: (N K, m)`` to ``(P, m)``.

        Per layer the ``W_l`` block is ``sum_(n, k) w[(n, k)] B_l[n, k]^T a_l[n]`` and the
        ``b_l`` block ``sum_(n, k) w[(n, k)] B_l[n, k].sum(axis=0)``; columns are processed in
        blocks of at most ``2^27`` bytes of ``(N, R_l, out_l)`` temporaries.
        """
        w = np.asarray(w, dtype=np.float64)
        W = w[:, None] if w.ndim == 1 else w
        N, K = self.num_samples, self.num_seeds
        m = W.shape[1]
        out = np.empty((self.num_params, m))
        widest = max(B.shape[2] * B.shape[3] for B in self.Bs)
        step = max(1, _BLOCK_BYTES // (8 * N * widest))
        for start in range(0, m, step):
            cols = slice(start, min(m, start + step))
            Wr = W[:, cols].reshape(N, K, -1)  # (N, K, mb)
            for (ws, bs), a, B in zip(self.layer_slices, self.acts, self.Bs):
                R, o, i = B.shape[2], B.shape[3], a.shape[2]
                if R == 1:
                    BW = np.matmul(B[:, :, 0].transpose(0, 2, 1), Wr)  # (N, o, mb)
                    gW = np.tensordot(BW, a[:, 0], axes=([0], [0]))  # (o, mb, i)
                    bW = BW.sum(axis=0)
                else:
                    BW = np.matmul(B.reshape(N, K, R * o).transpose(0, 2, 1), Wr).reshape(
                        N, R, o, -1
                    )  # (N, R, o, mb)
                    gW = np.tensordot(BW, a, axes=([0, 1], [0, 1]))  # (o, mb, i)
                    bW = BW.sum(axis=(0, 1))
                out[ws, cols] = gW.transpose(0, 2, 1).reshape(o * i, -1)
                if bs.stop > bs.start:
                    out[bs, cols] = bW
        return out[:, 0] if w.ndim == 1 else out


def seed_factors(
    net: Any,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    fisher: str = "true",
    n_samples: int = 1,
    rng: Any = None,
    chunk_size: int | None = None,
) -> SeedFactors:
    """The per-layer factors of the curvature ``fisher`` for all ``N`` samples.

    Parameters
    ----------
    net : Sequential (or MLP)
    theta : ndarray, shape (P,)
    X : ndarray, shape ``(N, *input_shape)``
    y : targets, needed for ``fisher="empirical"``
    fisher : {"true", "empirical", "mc", "argmax", "ggn"}
        The kind (:mod:`minifim.geometry.curvature`).
    n_samples, rng : Monte-Carlo labels per input and their generator (``fisher="mc"``)
    chunk_size : int, optional
        Samples per chunk of :func:`minifim.geometry.curvature.curvature_factors`; the chunks
        are concatenated.

    Returns
    -------
    SeedFactors
        ``acts[l]: (N, R_l, in_l)``, ``Bs[l]: (N, K, R_l, out_l)``. Memory ``8 N sum_l R_l (K
        out_l + in_l)`` bytes (guarded by the caller, which knows its cheaper route).
    """
    chunks = list(curvature_factors(net, theta, X, y, fisher, n_samples, rng, chunk_size))
    L = net.num_layers
    if len(chunks) == 1:
        acts, Bs = (tuple(x) for x in chunks[0])
    else:
        acts = tuple(np.concatenate([c[0][l] for c in chunks]) for l in range(L))
        Bs = tuple(np.concatenate([c[1][l] for c in chunks]) for l in range(L))
    return SeedFactors(acts, Bs, tuple(net.layer_slices), int(net.num_params))
