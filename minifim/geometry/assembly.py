"""Dense assembly of curvature matrices from per-layer factors, at the cost of one SYRK.

Every dense curvature in minifim is a sum of layer-pair blocks with Kronecker structure per
sample. For the dense layers ``l`` (rows) and ``m`` (columns), with inputs ``a_l: (n, in_l)``,
``a_m: (n, in_m)`` and an output-space coupling ``G: (n, out_l, out_m)``,

``M[W_l[k, p], W_m[i, j]] = sum_n a_l[n, p] G[n, k, i] a_m[n, j]``

(bias rows drop ``a_l``, bias columns drop ``a_m``). The Fisher and the GGN have
``G = B_l^T B_m`` (the backpropagated seeds); the Hessian adds a second term
``a_l[n, p] delta_m[n, i] A[n, j, k]`` (:mod:`minifim.geometry.hessian`).

:func:`add_layer_pair` computes a block by panels of the row layer's output units ``k``: one
2-D GEMM ``(G^T)[panel] (a_l a_m^T)`` of ``(kp out_m, n) x (n, in_l in_m)`` per panel (and
for the Hessian one more, ``A^T (delta a_l)``), whose output is copied into its rows of ``M``
(``1/n`` of the GEMM's work). No ``(P, P)`` temporary: the working set is one panel per
thread, ``<= min(64 MiB, budget / 4)`` each; few large GEMM calls. The panels (and the row
panels of the final mirror) write disjoint parts of ``M``, so they run as a pool of as many
Python threads as the BLAS is allowed, each panel's GEMMs on one BLAS thread
(:mod:`minifim._parallel`): one core's copies into ``M`` overlap with the other's GEMM, no BLAS
thread spins against NumPy, and the result is the same bits at every thread count. Each
layer pair is computed once (the upper block triangle) and a diagonal block only from its
panel's first column on, so the multiply-adds are those of one SYRK of the ``(n, P)`` factor,
``~ n P^2 / 2``; the lower triangle is mirrored once at the end.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from scipy.linalg import blas

from .._parallel import map_pinned
from .._validation import check_net
from ..core.scores import expand_gradients, layer_gradients
from ..memory import memory_budget

if TYPE_CHECKING:
    from ..core.model import Sequential

__all__ = [
    "add_layer_pair",
    "add_block",
    "dense_from_factors",
    "layer_factor",
    "squeeze_positions",
    "syrk_into",
    "mirror_lower_to_upper",
    "mirror_upper_to_lower",
]

#: Working bytes of one panel of :func:`add_layer_pair` (the ``Z`` array and its product).
_PANEL_BYTES = 2**26
#: Row units per panel of a diagonal block (see :func:`add_layer_pair`).
_DIAGONAL_PANEL_UNITS = 4


def add_layer_pair(
    M: np.ndarray,
    shape_row: tuple[int, int],
    shape_col: tuple[int, int],
    row: int,
    col: int,
    a_row: np.ndarray,
    a_col: np.ndarray,
    G: np.ndarray,
    *,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    diagonal: bool = False,
    assign: bool = False,
    bias_row: bool = True,
    bias_col: bool = True,
) -> None:
    """Add (or with ``assign=True`` write) one layer-pair block into ``M`` in place.

    Parameters
    ----------
    M : ndarray, shape (P, P), C-contiguous
    shape_row, shape_col : ``(out, in)`` of the row and column layers
    row, col : offsets of the two layers' ``(W, b)`` parameters in ``M``
    a_row : ndarray, shape (n, in_row)
    a_col : ndarray, shape (n, in_col)
    G : ndarray, shape (n, out_row, out_col)
        ``M[W_r[k, p], W_c[i, j]] += sum_n a_row[n, p] G[n, k, i] a_col[n, j]``.
    extra : ``(delta: (n, out_col), A: (n, in_col, out_row))``, optional
        Adds ``sum_n a_row[n, p] delta[n, i] A[n, j, k]`` to the ``(W_r or b_r, W_c)`` entries
        (the Hessian's coupling of a layer's weights with an earlier layer).
    diagonal : bool
        The row and column layer are the same and ``G[n]`` is symmetric: only the upper
        triangle (by panels) is written; :func:`mirror_upper_to_lower` completes it.
    assign : bool
        Overwrite instead of accumulating (the first chunk of samples).
    bias_row, bias_col : bool
        Whether the row / column layer has a bias block (``bias=False`` layers have none).
    """
    (o_r, i_r), (o_c, i_c) = shape_row, shape_col
    n = a_row.shape[0]
    wr, br = row, row + o_r * i_r
    wc, bc = col, col + o_c * i_c
    # the pair's input products once: (n, i_r i_c). G is never transposed as a whole: a panel
    # of its row units is the (n, p o_c) matrix G[:, k0:k1] (a strided view, or for a
    # diagonal block's upper part a gather of rows), and every GEMM takes it as the
    # transposed operand (BLAS reads it in place).
    Aio = (a_row[:, :, None] * a_col[:, None, :]).reshape(n, i_r * i_c)
    G = np.asarray(G)
    if extra is not None:
        delta, A = extra
        Dl = (delta[:, :, None] * a_row[:, None, :]).reshape(n, o_c * i_r)  # (n, (i, l))
    panel = min(_PANEL_BYTES, memory_budget() // 4)
    kp = max(1, panel // (8 * (2 * o_c * i_r * i_c + o_c * n)))
    if diagonal:
        # a diagonal panel also computes the part of its own kp x kp unit square below the
        # diagonal (about kp / (2 o_c) of its work): narrow panels keep that waste to a few
        # percent while each GEMM keeps >= kp (o_c - k0) rows
        kp = min(kp, _DIAGONAL_PANEL_UNITS)

    def put(view: np.ndarray, value: np.ndarray) -> None:
        if assign:
            view[...] = value
        else:
            view += value

    local = threading.local()

    def panel_rows(k0: int) -> None:
        k1 = min(o_r, k0 + kp)
        p_ = k1 - k0
        i0 = k0 if diagonal else 0  # first column unit of the panel (upper triangle)
        oc = o_c - i0
        Gfull = G[:, k0:k1, :].reshape(n, p_ * o_c)  # a view: rows n, columns (k, i)
        Gp = Gfull if i0 == 0 else G[:, k0:k1, i0:].reshape(n, p_ * oc)
        # W rows x W cols: (p oc, n) x (n, i_r i_c) -> (p, oc, i_r, i_c) -> (p, i_r, oc, i_c),
        # into this thread's panel buffer (a fresh array per panel would fault its pages in)
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.empty(kp * o_c * i_r * i_c)
        R2 = buf[: p_ * oc * i_r * i_c].reshape(p_ * oc, i_r * i_c)
        np.matmul(Gp.T, Aio, out=R2)
        R = R2.reshape(p_, oc, i_r, i_c).transpose(0, 2, 1, 3)
        if extra is not None:
            # the panel's coupling as rows n, columns (k, j): one gather per panel (A's
            # elements once over all panels), read by the GEMM as its transposed operand
            Ap = A[:, :, k0:k1].transpose(0, 2, 1).reshape(n, p_ * i_c)
            # sum_n a_r[l] delta[i] A[j, k]: (p i_c, n) x (n, (i, l)) -> (p, j, i, l)
            E = (Ap.T @ Dl[:, i0 * i_r :]).reshape(p_, i_c, oc, i_r)
            R = R + E.transpose(0, 3, 2, 1)
        rows = M[wr + k0 * i_r : wr + k1 * i_r]
        put(rows[:, wc + i0 * i_c : bc].reshape(p_, i_r, oc, i_c), R)
        # W rows x b cols: sum_n G[k, i] a_r[l] -> (p, o_c, i_r) -> (p, i_r, o_c)
        if bias_col:
            RB = (Gfull.T @ a_row).reshape(p_, o_c, i_r)
            put(rows[:, bc : bc + o_c].reshape(p_, i_r, o_c), RB.transpose(0, 2, 1))
        if bias_row and not diagonal:
            # b rows x W cols: sum_n G[k, i] a_c[j] (+ delta[i] A[j, k]) -> (p, o_c, i_c)
            BW = (Gfull.T @ a_col).reshape(p_, o_c, i_c)
            if extra is not None:
                BE = (Ap.T @ delta).reshape(p_, i_c, o_c)
                BW = BW + BE.transpose(0, 2, 1)
            put(M[br + k0 : br + k1, wc:bc].reshape(p_, o_c, i_c), BW)
            if bias_col:
                put(M[br + k0 : br + k1, bc : bc + o_c], G[:, k0:k1, :].sum(axis=0))

    # the panels write disjoint rows of M: they run on the BLAS's threads as a pool, each
    # panel's GEMMs on one thread (its copies into M overlap with the other panels' GEMMs)
    map_pinned(panel_rows, range(0, o_r, kp))
    if diagonal and bias_row:
        put(M[br : br + o_r, bc : bc + o_c], G.sum(axis=0))


def squeeze_positions(
    acts: list[np.ndarray], Bs: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Accept weight-shared factor chunks with one position per layer.

    ``acts[l]: (n, R_l, in_l)`` and ``Bs[l]: (n, K, R_l, out_l)`` with every ``R_l = 1`` become
    ``(n, in_l)`` and ``(n, K, out_l)``; 2-D/3-D chunks pass through. ``R_l > 1`` (a layer
    applied at several positions) is not a per-sample Kronecker product: the caller assembles
    it from the expanded ``(n K, P)`` factor.
    """
    out_a, out_b = [], []
    for a, B in zip(acts, Bs):
        if (a.ndim == 3 and a.shape[1] != 1) or (B.ndim == 4 and B.shape[2] != 1):
            raise ValueError(
                f"acts: expected one position per layer (R = 1) for the Kronecker "
                f"assembly, received acts {a.shape} and seeds {B.shape}"
            )
        out_a.append(a[:, 0] if a.ndim == 3 else a)
        out_b.append(B[:, :, 0] if B.ndim == 4 else B)
    return out_a, out_b


def add_block(
    M: np.ndarray,
    net: Sequential,
    l: int,
    m: int,
    acts: list[np.ndarray],
    Bs: list[np.ndarray],
    rows: int,
    cols: int,
) -> None:
    """Add the complete (layer l, layer m) block ``sum_n (B_l^T B_m)_n kron (a~_l a~_m^T)_n``.

    ``acts[l]: (n, 1, in_l)`` (or ``(n, in_l)``), ``Bs[l]: (n, K, 1, out_l)`` (or ``(n, K,
    out_l)``): one position per layer, the Kronecker structure per sample; ``rows``/``cols``
    are the offsets of the two layers' ``(W, b)`` blocks inside ``M``. Both triangles are
    written; a diagonal block (``l == m``) by the same panels as :func:`dense_from_factors`
    (so its entries are the dense curvature's, sum for sum) and its upper triangle mirrored.
    Used for the per-layer blocks of :func:`minifim.block_diagonal`.
    """
    check_net(net)
    (a_l, a_m), (B_l, B_m) = squeeze_positions([acts[l], acts[m]], [Bs[l], Bs[m]])
    acts, Bs = [a_l, a_m], [B_l, B_m]
    l_, m_ = (0, 1) if l != m else (0, 0)
    G = np.matmul(Bs[l_].transpose(0, 2, 1), Bs[m_])  # (n, o_l, o_m)
    shape_l, shape_m = net.shapes[l], net.shapes[m]
    bias_l, bias_m = net.parametric_layers[l].bias, net.parametric_layers[m].bias
    if l != m:
        add_layer_pair(
            M, shape_l, shape_m, rows, cols, acts[l_], acts[m_], G,
            bias_row=bias_l, bias_col=bias_m,
        )  # fmt: skip
        return
    add_layer_pair(
        M, shape_l, shape_l, rows, cols, acts[l_], acts[l_], G,
        diagonal=True, bias_row=bias_l, bias_col=bias_l,
    )  # fmt: skip
    size = net.parametric_layers[l].num_params
    mirror_upper_to_lower(M[rows : rows + size, cols : cols + size])


def layer_factor(net: Sequential, l: int, a: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The ``(n K, P_l)`` gradient rows of parametric layer ``l`` (weights, then bias).

    ``a: (n, R, in_l)`` unfolded inputs, ``B: (n, K, R, out_l)`` seeds.
    """
    layer = check_net(net).parametric_layers[l]
    n, K = B.shape[:2]
    o, i = layer.matrix_shape
    U = np.empty((n, K, layer.num_params))
    layer_gradients(layer, a, B, out=U[:, :, : o * i].reshape(n, K, o, i))
    if layer.bias:
        U[:, :, o * i :] = B.sum(axis=2)
    return U.reshape(n * K, -1)


def syrk_into(M: np.ndarray | None, U: np.ndarray, P: int, alpha: float = 1.0) -> np.ndarray:
    """``M += alpha U^T U`` into the LOWER triangle of ``M`` (allocated when ``None``)."""
    beta = 1.0
    if M is None:
        M, beta = np.empty((P, P)), 0.0
    # M.T is M's memory in Fortran order: its upper triangle is M's lower triangle
    blas.dsyrk(alpha, U.T, beta=beta, c=M.T, trans=0, lower=0, overwrite_c=1)
    return M


def dense_from_factors(
    net: Sequential,
    factors: Iterable[tuple[list[np.ndarray], list[np.ndarray]]],
    P: int,
    scale: float = 1.0,
) -> np.ndarray:
    """``scale`` times the sum over chunks of ``U^T U`` for the factor chunks ``(acts, Bs)``.

    The scale (the reduction's ``1/N``) enters the SYRK's ``alpha`` or the small output-space
    coupling ``G``, never a pass over the ``(P, P)`` result.

    One seed per sample, or weight sharing (some ``R_l > 1``, where the per-sample gradient
    ``sum_r B_r^T a_r`` is no Kronecker product): a SYRK on the ``(n K, P)`` factor
    accumulating in place into one triangle of ``M`` (``n K P^2`` flops per chunk, no ``(P,
    P)`` temporary). Several seeds of a network without weight sharing: the upper block
    triangle by :func:`add_layer_pair` with ``G = B_l^T B_m`` (``n P^2`` multiply-adds
    whatever ``K``). The other triangle is mirrored once at the end, so the peak memory is
    ``M`` plus one chunk's working set.
    """
    check_net(net)
    M: np.ndarray | None = None
    lower_filled = False
    offsets = [s.start for s in net.layer_param_slices()]
    layers = net.parametric_layers
    for acts, Bs in factors:
        n, K = Bs[0].shape[:2]
        if K == 1 or net.weight_sharing:
            U = expand_gradients(net, acts, Bs)
            M = syrk_into(M, U[:, 0, :] if K == 1 else U.reshape(n * K, P), P, scale)
            lower_filled = True
            continue
        a2, B2 = squeeze_positions(acts, Bs)
        first = M is None
        if M is None:
            M = np.empty((P, P))
        L = net.num_layers
        for l in range(L):
            for m in range(l, L):
                G = np.matmul(B2[l].transpose(0, 2, 1), B2[m])  # (n, o_l, o_m)
                if scale != 1.0:
                    G *= scale
                add_layer_pair(
                    M, net.shapes[l], net.shapes[m], offsets[l], offsets[m],
                    a2[l], a2[m], G, diagonal=l == m, assign=first,
                    bias_row=layers[l].bias, bias_col=layers[m].bias,
                )  # fmt: skip
    if M is None:  # no samples cannot happen (N >= 1 is validated)
        raise AssertionError("internal: no chunks")
    if lower_filled:
        mirror_lower_to_upper(M)
    else:
        mirror_upper_to_lower(M)
    return M


def _mirror_rows(M: np.ndarray, i0: int, i1: int, lower_to_upper: bool) -> None:
    """Rows ``i0:i1`` of one triangle copied onto the other: the panel's strip off the diagonal
    and its diagonal square."""
    D = M[i0:i1, i0:i1]
    if lower_to_upper:
        M[:i0, i0:i1] = M[i0:i1, :i0].T
        iu = np.triu_indices(i1 - i0, 1)
        D[iu] = D.T[iu]
    else:
        M[i0:i1, :i0] = M[:i0, i0:i1].T
        il = np.tril_indices(i1 - i0, -1)
        D[il] = D.T[il]


def _mirror(M: np.ndarray, panel: int, lower_to_upper: bool) -> None:
    P = M.shape[0]
    # each panel writes its own columns (lower to upper) or rows (upper to lower) of the other
    # triangle and reads only the source triangle: the panels run as a pool (the copy is
    # memory- and page-fault-bound, which two cores halve)
    map_pinned(
        lambda i0: _mirror_rows(M, i0, min(P, i0 + panel), lower_to_upper), range(0, P, panel)
    )


def mirror_lower_to_upper(M: np.ndarray, panel: int = 64) -> None:
    """Copy the strict lower triangle of the square ``M`` onto its upper one, in place."""
    _mirror(M, panel, True)


def mirror_upper_to_lower(M: np.ndarray, panel: int = 64) -> None:
    """Copy the strict upper triangle of the square ``M`` onto its lower one, in place."""
    _mirror(M, panel, False)
