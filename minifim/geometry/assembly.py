"""Dense assembly of curvature matrices from per-layer factors, at the cost of one SYRK.

Every dense curvature in minifim is a sum of layer-pair blocks with Kronecker structure per
sample. For the dense layers ``l`` (rows) and ``m`` (columns), with inputs ``a_l: (n, in_l)``,
``a_m: (n, in_m)`` and an output-space coupling ``G: (n, out_l, out_m)``,

``M[W_l[k, p], W_m[i, j]] = sum_n a_l[n, p] G[n, k, i] a_m[n, j]``

(bias rows drop ``a_l``, bias columns drop ``a_m``). The Fisher and the GGN have
``G = B_l^T B_m`` (the backpropagated seeds); the Hessian adds a second term
``a_l[n, p] delta_m[n, i] A[n, j, k]`` (:mod:`minifim.geometry.hessian`).

:func:`assemble_layer_pairs` computes the blocks by panels of the row layer's output units
``k``: one 2-D GEMM ``(G^T)[panel] (a_l a_m^T)`` of ``(kp out_m, n) x (n, in_l in_m)`` per panel
(and for the Hessian one more, ``A^T (delta a_l)``), whose output is copied into its rows of
``M`` (``1/n`` of the GEMM's work). No ``(P, P)`` temporary: the working set is one panel per
thread, ``<= min(64 MiB, budget / 4)`` each, and the input products ``a_l a_m^T`` of at most
``threads + 2`` pairs; the Fisher's coupling ``G = B_l^T B_m`` is never formed whole
(:class:`SeedCoupling`: each panel computes its rows). The panels of all pairs write disjoint
parts of ``M``, so they run as one pool of as many Python threads as the BLAS is allowed
(:mod:`minifim._parallel`), each panel's GEMMs on one BLAS thread, with no barrier between
pairs and the next pair's operands built by a prefetch task while the other threads multiply:
one core's copies into ``M`` overlap with the other's GEMM, no BLAS thread spins against
NumPy, and the result is the same bits at every thread count (the panels are fixed by the
shapes, never by the thread count). Each layer pair is computed once (the upper block
triangle) and a diagonal block only from its panel's first column on, so the multiply-adds
are those of one SYRK of the ``(n, P)`` factor, ``~ n P^2 / 2``. The lower triangle is
mirrored once at the end, or, with ``upper=True`` (``triangle="upper"`` of
:func:`minifim.curvature_matrix`), never written: ``M`` starts as zeros (its pages faulted in
up front, :func:`faulted_zeros`), the few entries a diagonal panel computes below the
diagonal are reset to zero, and the result is what one SYRK writes, one triangle.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.linalg import blas

from .._parallel import map_pinned
from .._validation import check_net
from ..core.scores import expand_gradients, layer_gradients
from ..memory import memory_budget

if TYPE_CHECKING:
    from ..core.model import Sequential

__all__ = [
    "LayerPair",
    "SeedCoupling",
    "add_layer_pair",
    "assemble_layer_pairs",
    "add_block",
    "dense_from_factors",
    "faulted_zeros",
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
#: Panels per layer pair at least (when it has as many row units): the pool's threads share
#: even a narrow block. A constant, not the thread count: the panels, hence the GEMMs and the
#: bits of the result, are the same at every thread count.
_MIN_PANELS = 4


class SeedCoupling:
    """The Fisher / GGN coupling ``G[n] = scale B_l[n]^T B_m[n]: (out_l, out_m)`` of a layer
    pair, never formed whole: a panel takes its rows, so a pair's working set is its input
    products alone.

    Parameters
    ----------
    B_l : ndarray, shape (n, K, out_l)
    B_m : ndarray, shape (n, K, out_m)
    scale : float
    """

    def __init__(self, B_l: np.ndarray, B_m: np.ndarray, scale: float = 1.0) -> None:
        self.B_l, self.B_m, self.scale = B_l, B_m, scale

    def rows(self, k0: int, k1: int) -> np.ndarray:
        """``G[:, k0:k1, :]: (n, k1 - k0, out_m)``, a new array."""
        G = np.matmul(self.B_l[:, :, k0:k1].transpose(0, 2, 1), self.B_m)
        if self.scale != 1.0:
            G *= self.scale
        return G

    def total(self) -> np.ndarray:
        """``sum_n G[n]: (out_l, out_m)``, one GEMM over the ``n K`` seeds."""
        n, K, o_l = self.B_l.shape
        B_l, B_m = self.B_l.reshape(n * K, o_l), self.B_m.reshape(n * K, self.B_m.shape[2])
        return self.scale * (B_l.T @ B_m)


class _ArrayCoupling:
    """A coupling given as the array ``G: (n, out_l, out_m)`` (the Hessian's)."""

    def __init__(self, G: np.ndarray) -> None:
        self.G = np.asarray(G)

    def rows(self, k0: int, k1: int) -> np.ndarray:
        return self.G[:, k0:k1, :]

    def total(self) -> np.ndarray:
        return self.G.sum(axis=0)


#: A layer pair's operands ``(a_row, a_col, G, extra)`` (see :func:`add_layer_pair`); ``G``
#: an array ``(n, out_row, out_col)`` or a :class:`SeedCoupling`.
Operands = tuple[
    np.ndarray, np.ndarray, "np.ndarray | SeedCoupling", "tuple[np.ndarray, np.ndarray] | None"
]


@dataclass(frozen=True)
class LayerPair:
    """One layer-pair block of a dense curvature, its operands built when a panel needs them.

    Attributes
    ----------
    shape_row, shape_col : ``(out, in)`` of the row and column layers
    row, col : offsets of the two layers' ``(W, b)`` parameters in ``M``
    n : number of samples of the operands
    operands : callable returning ``(a_row, a_col, G, extra)``
        ``a_row: (n, in_row)``, ``a_col: (n, in_col)``, ``G: (n, out_row, out_col)`` (or a
        :class:`SeedCoupling`, whose rows each panel computes) and
        ``extra``, ``None`` or ``(delta: (n, out_col), A: (n, in_col, out_row))`` (see
        :func:`add_layer_pair`). Called by the first of the pair's panels that runs; the
        operands are dropped when its last panel is done.
    diagonal : bool
        The row and column layer are the same and ``G[n]`` is symmetric: only the upper
        triangle (by panels) is written.
    bias_row, bias_col : bool
        Whether the row / column layer has a bias block (``bias=False`` layers have none).
    """

    shape_row: tuple[int, int]
    shape_col: tuple[int, int]
    row: int
    col: int
    n: int
    operands: Callable[[], Operands]
    diagonal: bool = False
    bias_row: bool = True
    bias_col: bool = True

    def panels(self) -> list[tuple[int, int]]:
        """The panels ``(k0, k1)`` of row units: each one's ``Z`` array and product within
        ``min(64 MiB, budget / 4)`` bytes, a diagonal block's at most
        :data:`_DIAGONAL_PANEL_UNITS` wide, and at least :data:`_MIN_PANELS` panels when the
        block has as many row units."""
        (o_r, i_r), (o_c, i_c) = self.shape_row, self.shape_col
        panel = min(_PANEL_BYTES, memory_budget() // 4)
        kp = max(1, panel // (8 * (2 * o_c * i_r * i_c + o_c * self.n)))
        if self.diagonal:
            # a diagonal panel also computes the part of its own kp x kp unit square below
            # the diagonal (about kp / (2 o_c) of its work): narrow panels keep that waste to
            # a few percent while each GEMM keeps >= kp (o_c - k0) rows
            kp = min(kp, _DIAGONAL_PANEL_UNITS)
        kp = min(kp, max(1, -(-o_r // _MIN_PANELS)))
        return [(k0, min(o_r, k0 + kp)) for k0 in range(0, o_r, kp)]

    def panel_bytes(self, k0: int, k1: int) -> int:
        """Bytes of the panel's main product ``(k1 - k0, out_col - i0, in_row, in_col)``."""
        (_, i_r), (o_c, i_c) = self.shape_row, self.shape_col
        return 8 * (k1 - k0) * (o_c - (k0 if self.diagonal else 0)) * i_r * i_c


class _PairData:
    """A pair's operands and the products every panel reads: built once, under a lock, by its
    prefetch task or by the first panel that runs, and dropped after the pair's last panel."""

    def __init__(self, pair: LayerPair, panels: int) -> None:
        self.pair, self._left, self._lock = pair, panels, threading.Lock()
        self._value: tuple[Any, ...] | None = None
        self._finished = False

    def acquire(self) -> tuple[Any, ...]:
        """The pair's data (built now if no task has built it; empty after the last panel)."""
        with self._lock:
            if self._value is None and not self._finished:
                self._value = self._build()
            return () if self._value is None else self._value

    def _build(self) -> tuple[Any, ...]:
        a_row, a_col, G, extra = self.pair.operands()
        n = a_row.shape[0]
        # the pair's input products once: (n, i_r i_c)
        Aio = (a_row[:, :, None] * a_col[:, None, :]).reshape(n, -1)
        coupling = G if isinstance(G, SeedCoupling) else _ArrayCoupling(G)
        value: tuple[Any, ...] = (a_row, a_col, coupling, Aio)
        if extra is not None:
            delta, A = extra
            Dl = (delta[:, :, None] * a_row[:, None, :]).reshape(n, -1)  # (n, (i, l))
            value += (delta, A, Dl)
        return value

    def release(self) -> None:
        """One panel done; after the last, the data is dropped."""
        with self._lock:
            self._left -= 1
            if self._left == 0:
                self._value, self._finished = None, True


def _write_panel(
    M: np.ndarray,
    pair: LayerPair,
    data: tuple[Any, ...],
    k0: int,
    k1: int,
    buf: np.ndarray,
    assign: bool,
    upper: bool = False,
) -> None:
    """Rows ``k0:k1`` (row units) of one layer-pair block into ``M`` (see :func:`add_layer_pair`).

    ``buf`` is the calling thread's panel buffer (a fresh array per panel would fault its
    pages in). ``G`` is never transposed as a whole: a panel of its row units is the ``(n, p
    o_c)`` matrix ``G[:, k0:k1]`` (a strided view or the panel's rows of a
    :class:`SeedCoupling`, for a diagonal block's upper part a gather of columns), and every
    GEMM takes it as the transposed operand (BLAS reads it in place).
    ``upper``: a diagonal block's entries below the diagonal that the panel computes (in its
    own unit square, and the bias square) are set to zero after they are written.
    """
    (o_r, i_r), (o_c, i_c) = pair.shape_row, pair.shape_col
    wr, br = pair.row, pair.row + o_r * i_r
    wc, bc = pair.col, pair.col + o_c * i_c
    a_row, a_col, coupling, Aio = data[:4]
    n, p_ = a_row.shape[0], k1 - k0
    diagonal = pair.diagonal

    def put(view: np.ndarray, value: np.ndarray) -> None:
        if assign:
            view[...] = value
        else:
            view += value

    i0 = k0 if diagonal else 0  # first column unit of the panel (upper triangle)
    oc = o_c - i0
    Grows = coupling.rows(k0, k1)  # (n, p, o_c)
    Gfull = Grows.reshape(n, p_ * o_c)  # rows n, columns (k, i)
    Gp = Gfull if i0 == 0 else Grows[:, :, i0:].reshape(n, p_ * oc)
    # W rows x W cols: (p oc, n) x (n, i_r i_c) -> (p, oc, i_r, i_c) -> (p, i_r, oc, i_c)
    R2 = buf[: p_ * oc * i_r * i_c].reshape(p_ * oc, i_r * i_c)
    np.matmul(Gp.T, Aio, out=R2)
    R = R2.reshape(p_, oc, i_r, i_c).transpose(0, 2, 1, 3)
    if len(data) > 4:
        delta, A, Dl = data[4:]
        # the panel's coupling as rows n, columns (k, j): one gather per panel (A's elements
        # once over all panels), read by the GEMM as its transposed operand
        Ap = A[:, :, k0:k1].transpose(0, 2, 1).reshape(n, p_ * i_c)
        # sum_n a_r[l] delta[i] A[j, k]: (p i_c, n) x (n, (i, l)) -> (p, j, i, l)
        E = (Ap.T @ Dl[:, i0 * i_r :]).reshape(p_, i_c, oc, i_r)
        R = R + E.transpose(0, 3, 2, 1)
    rows = M[wr + k0 * i_r : wr + k1 * i_r]
    put(rows[:, wc + i0 * i_c : bc].reshape(p_, i_r, oc, i_c), R)
    # W rows x b cols: sum_n G[k, i] a_r[l] -> (p, o_c, i_r) -> (p, i_r, o_c)
    if pair.bias_col:
        RB = (Gfull.T @ a_row).reshape(p_, o_c, i_r)
        put(rows[:, bc : bc + o_c].reshape(p_, i_r, o_c), RB.transpose(0, 2, 1))
    if pair.bias_row and not diagonal:
        # b rows x W cols: sum_n G[k, i] a_c[j] (+ delta[i] A[j, k]) -> (p, o_c, i_c)
        BW = (Gfull.T @ a_col).reshape(p_, o_c, i_c)
        if len(data) > 4:
            BE = (Ap.T @ delta).reshape(p_, i_c, o_c)
            BW = BW + BE.transpose(0, 2, 1)
        put(M[br + k0 : br + k1, wc:bc].reshape(p_, o_c, i_c), BW)
        if pair.bias_col:
            put(M[br + k0 : br + k1, bc : bc + o_c], Grows.sum(axis=0))
    if diagonal and pair.bias_row and k0 == 0:
        put(M[br : br + o_r, bc : bc + o_c], coupling.total())  # b rows x b cols (one panel)
        if upper:
            _zero_strict_lower(M[br : br + o_r, bc : bc + o_c])
    if diagonal and upper:
        s0, s1 = wr + k0 * i_r, wr + k1 * i_r
        _zero_strict_lower(M[s0:s1, s0:s1])


def _zero_strict_lower(S: np.ndarray) -> None:
    """Set the strict lower triangle of the square view ``S`` to zero, in place."""
    S[np.tril_indices(S.shape[0], -1)] = 0.0


def assemble_layer_pairs(
    M: np.ndarray, pairs: Sequence[LayerPair], *, assign: bool = False, upper: bool = False
) -> None:
    """Add (or with ``assign=True`` write) the blocks ``pairs`` into ``M`` in place.

    ``upper``: the diagonal blocks' entries below the diagonal stay zero (see
    :func:`_write_panel`); with pairs of the upper block triangle only, ``M`` then holds the
    curvature's upper triangle and, where it was zero, zeros below.

    The panels of all pairs run as one pool (:func:`minifim._parallel.map_pinned`), in the
    order of ``pairs`` and of their rows, with no barrier between pairs. The next pair's
    operands are built by a prefetch task queued after the current pair's first panel (on a
    pool thread, overlapping the other threads' GEMMs, so that no thread waits for them) and
    dropped after its last panel: at most ``threads + 2`` pairs' operands are alive at once.
    Pass the costly pairs first: the pool's tail is then the small panels. Each panel writes
    its own part of ``M``; the result is the same bits at every thread count.
    """
    if not pairs:
        return
    panels = [pair.panels() for pair in pairs]
    datas = [_PairData(pair, len(p)) for pair, p in zip(pairs, panels)]
    # (data, None) prefetches a pair's operands; (data, (k0, k1)) is a panel
    tasks: list[tuple[_PairData, tuple[int, int] | None]] = [(datas[0], None)]
    for j, (data, rows) in enumerate(zip(datas, panels)):
        tasks.append((data, rows[0]))
        if j + 1 < len(datas):
            tasks.append((datas[j + 1], None))
        tasks += [(data, r) for r in rows[1:]]
    size = max(pair.panel_bytes(*r) for pair, p in zip(pairs, panels) for r in p) // 8
    local = threading.local()

    def run(task: tuple[_PairData, tuple[int, int] | None]) -> None:
        data, rows = task
        if rows is None:
            data.acquire()
            return
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.empty(size)
        try:
            _write_panel(M, data.pair, data.acquire(), *rows, buf, assign, upper)
        finally:
            data.release()

    map_pinned(run, tasks)


def add_layer_pair(
    M: np.ndarray,
    shape_row: tuple[int, int],
    shape_col: tuple[int, int],
    row: int,
    col: int,
    a_row: np.ndarray,
    a_col: np.ndarray,
    G: np.ndarray | SeedCoupling,
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
    G : ndarray, shape (n, out_row, out_col), or a :class:`SeedCoupling`
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
    pair = LayerPair(
        shape_row, shape_col, row, col, a_row.shape[0], lambda: (a_row, a_col, G, extra),
        diagonal=diagonal, bias_row=bias_row, bias_col=bias_col,
    )  # fmt: skip
    assemble_layer_pairs(M, [pair], assign=assign)


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
    # the coupling as in dense_from_factors (rows per panel), so the entries are the same sums
    G = SeedCoupling(Bs[l_], Bs[m_])
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


def faulted_zeros(P: int) -> np.ndarray:
    """A ``(P, P)`` array of zeros with every page faulted in up front, by row panels of ~8 MiB
    on the pool (:func:`minifim._parallel.map_pinned`).

    A fresh array's pages are mapped at their first write. Faulting them in here, one sweep on
    both cores before the assembly, was measured to cost less, and vary less between runs,
    than taking the same faults inside the panels' copies while the other thread multiplies
    (``P = 8,970``: the one-triangle true Fisher's best of six 1.41 s -> 1.16 s, its slowest
    2.58 s -> 1.41 s).
    """
    M = np.empty((P, P))
    rows = max(1, 2**23 // (8 * max(P, 1)))
    map_pinned(lambda i: M[i : i + rows].fill(0.0), range(0, P, rows))
    return M


def syrk_into(
    M: np.ndarray | None, U: np.ndarray, P: int, alpha: float = 1.0, *, upper: bool = False
) -> np.ndarray:
    """``M += alpha U^T U`` into the lower (``upper=True``: upper) triangle of the C-ordered
    ``M`` (allocated when ``None``: :func:`faulted_zeros`, so the other triangle is zero)."""
    beta = 1.0
    if M is None:
        M, beta = faulted_zeros(P), 0.0
    # M.T is M's memory in Fortran order: its upper triangle is M's lower triangle
    blas.dsyrk(alpha, U.T, beta=beta, c=M.T, trans=0, lower=int(upper), overwrite_c=1)
    return M


def _fisher_operands(
    a_l: np.ndarray, a_m: np.ndarray, B_l: np.ndarray, B_m: np.ndarray, scale: float
) -> Operands:
    """A Fisher / GGN pair's operands: ``G = scale B_l^T B_m: (n, o_l, o_m)`` per sample,
    as a :class:`SeedCoupling` (each panel computes its rows)."""
    return a_l, a_m, SeedCoupling(B_l, B_m, scale), None


def _pair_cost(pair: LayerPair) -> int:
    """Multiply-adds of a pair's main GEMMs (half for a diagonal block), for the ordering."""
    (o_r, i_r), (o_c, i_c) = pair.shape_row, pair.shape_col
    cost = o_r * o_c * i_r * i_c * pair.n
    return cost // 2 if pair.diagonal else cost


def dense_from_factors(
    net: Sequential,
    factors: Iterable[tuple[list[np.ndarray], list[np.ndarray]]],
    P: int,
    scale: float = 1.0,
    *,
    upper: bool = False,
) -> np.ndarray:
    """``scale`` times the sum over chunks of ``U^T U`` for the factor chunks ``(acts, Bs)``.

    ``upper=False``: the full symmetric matrix; ``True``: its upper triangle with the
    diagonal, the strict lower triangle exactly zero (no mirror: the writes of one SYRK).

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
            M = syrk_into(M, U[:, 0, :] if K == 1 else U.reshape(n * K, P), P, scale, upper=upper)
            lower_filled = True
            continue
        a2, B2 = squeeze_positions(acts, Bs)
        first = M is None
        if M is None:
            M = faulted_zeros(P)
        pairs = [
            LayerPair(
                net.shapes[l],
                net.shapes[m],
                offsets[l],
                offsets[m],
                n,
                functools.partial(_fisher_operands, a2[l], a2[m], B2[l], B2[m], scale),
                diagonal=l == m,
                bias_row=layers[l].bias,
                bias_col=layers[m].bias,
            )  # fmt: skip
            for l in range(net.num_layers)
            for m in range(l, net.num_layers)
        ]
        # the costly pairs first (the pool's tail is then the small panels)
        pairs.sort(key=lambda p: -_pair_cost(p))
        assemble_layer_pairs(M, pairs, assign=first, upper=upper)
    if M is None:  # no samples cannot happen (N >= 1 is validated)
        raise AssertionError("internal: no chunks")
    if upper:
        return M
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
