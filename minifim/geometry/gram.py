"""The factor ``U`` of a curvature held per layer: its Gram matrix and its products.

Every curvature kind of :mod:`minifim.geometry.curvature` except the Hessian is ``M = c U^T U``
with ``U: (N K, P)`` the stacked per-seed gradients (``K`` seeds per sample, ``c = 1/N`` for a
mean or ``1`` for a sum). Row ``(n, k)`` of ``U`` has, per layer ``l``, the ``W_l`` block
``B_l[n, k] outer a_l[n]`` and the ``b_l`` block ``B_l[n, k]``, with ``a_l: (N, in_l)`` the layer
inputs and ``B_l: (N, K, out_l)`` the seeds backpropagated to its pre-activations
(:func:`minifim.geometry.curvature.curvature_factors`). :class:`SeedFactors` keeps these
per-layer factors and never forms ``U`` or any ``(P, P)`` matrix:

- the Gram matrix (:meth:`SeedFactors.gram`)
  ``G = c U U^T: (N K, N K)``, ``G[(n, k), (m, k')] = c sum_l (B_l[n, k] . B_l[m, k'])
  (a_l[n] . a_l[m] + 1)`` (the ``+ 1`` is the bias), ``O((N K)^2 sum_l out_l + N^2 sum_l in_l)``
  work;
- the products ``U v`` (:meth:`SeedFactors.matvec`) and ``U^T w``
  (:meth:`SeedFactors.rmatvec`), per layer, ``O(N K sum_l out_l in_l)`` work per vector.

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


@dataclass(frozen=True)
class SeedFactors:
    """The factor ``U: (N K, P)`` of ``M = c U^T U``, held as per-layer factors.

    Attributes
    ----------
    acts : tuple of ndarray, ``acts[l]: (N, in_l)``
        Layer inputs.
    Bs : tuple of ndarray, ``Bs[l]: (N, K, out_l)``
        Seeds backpropagated to the pre-activations of layer ``l``.
    layer_slices : tuple of ``(slice, slice)``
        Per layer, the flat positions of ``W_l`` (row-major ``(out_l, in_l)``) and ``b_l``
        (``MLP.layer_slices``).
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

    def gram(self, scale: float = 1.0) -> np.ndarray:
        """``G = scale U U^T``, shape ``(N K, N K)``, rows in ``(n, k)`` order (``k`` fastest).

        Memory: the result and one ``(N K, N K)`` product temporary.
        """
        N, K = self.num_samples, self.num_seeds
        rows = N * K
        G = np.zeros((rows, rows))
        for a, B in zip(self.acts, self.Bs):
            Bf = B.reshape(rows, -1)
            BB = Bf @ Bf.T  # (NK, NK): seed inner products at the pre-activations
            A = a @ a.T
            A += 1.0  # (N, N): input inner products, + 1 for the bias
            BB.reshape(N, K, N, K)[...] *= A[:, None, :, None]
            G += BB
        G *= scale
        return G

    def matvec(self, v: ArrayLike) -> np.ndarray:
        """``U v``: ``v: (P,)`` to ``(N K,)``, or ``v: (P, m)`` to ``(N K, m)``.

        Per layer ``(U v)[(n, k)] += B_l[n, k] . (V_W a_l[n] + v_b)`` with ``V_W: (out_l, in_l)``
        and ``v_b: (out_l,)`` the layer's blocks of ``v``.
        """
        v = np.asarray(v, dtype=np.float64)
        V = v[:, None] if v.ndim == 1 else v
        m = V.shape[1]
        N, K = self.num_samples, self.num_seeds
        out = np.zeros((N, K, m))
        for (ws, bs), a, B in zip(self.layer_slices, self.acts, self.Bs):
            o, i = B.shape[2], a.shape[1]
            Z = np.einsum("ni,oim->nom", a, V[ws].reshape(o, i, m)) + V[bs][None]  # (N, o, m)
            out += np.matmul(B, Z)  # (N, K, o) @ (N, o, m)
        out = out.reshape(N * K, m)
        return out[:, 0] if v.ndim == 1 else out

    def rmatvec(self, w: ArrayLike) -> np.ndarray:
        """``U^T w``: ``w: (N K,)`` to ``(P,)``, or ``w: (N K, m)`` to ``(P, m)``.

        Per layer the ``W_l`` block is ``sum_(n, k) w[(n, k)] B_l[n, k] outer a_l[n]`` and the
        ``b_l`` block ``sum_(n, k) w[(n, k)] B_l[n, k]``; columns are processed in blocks of
        at most ``2^27`` bytes of ``(N, out_l)`` temporaries.
        """
        w = np.asarray(w, dtype=np.float64)
        W = w[:, None] if w.ndim == 1 else w
        N, K = self.num_samples, self.num_seeds
        m = W.shape[1]
        out = np.empty((self.num_params, m))
        widest = max(B.shape[2] for B in self.Bs)
        step = max(1, _BLOCK_BYTES // (8 * N * widest))
        for start in range(0, m, step):
            cols = slice(start, min(m, start + step))
            Wr = W[:, cols].reshape(N, K, -1)  # (N, K, mb)
            for (ws, bs), a, B in zip(self.layer_slices, self.acts, self.Bs):
                o, i = B.shape[2], a.shape[1]
                BW = np.matmul(B.transpose(0, 2, 1), Wr)  # (N, o, mb)
                gW = np.tensordot(BW, a, axes=([0], [0]))  # (o, mb, i)
                out[ws, cols] = gW.transpose(0, 2, 1).reshape(o * i, -1)
                out[bs, cols] = BW.sum(axis=0)
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
    net : MLP
    theta : ndarray, shape (P,)
    X : ndarray, shape (N, D)
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
        ``acts[l]: (N, in_l)``, ``Bs[l]: (N, K, out_l)``. Memory ``8 N K sum_l (out_l + in_l)``
        bytes (guarded by the caller, which knows its cheaper route).
    """
    chunks = list(curvature_factors(net, theta, X, y, fisher, n_samples, rng, chunk_size))
    L = net.num_layers
    if len(chunks) == 1:
        acts, Bs = (tuple(x) for x in chunks[0])
    else:
        acts = tuple(np.concatenate([c[0][l] for c in chunks]) for l in range(L))
        Bs = tuple(np.concatenate([c[1][l] for c in chunks]) for l in range(L))
    return SeedFactors(acts, Bs, tuple(net.layer_slices), int(net.num_params))
