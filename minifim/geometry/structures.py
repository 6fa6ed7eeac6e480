"""Curvature structures: dense, diagonal, block-diagonal and Kronecker-factored matrices.

One curvature ``M: (P, P)`` (a Fisher, GGN, Hessian, or a posterior precision's data part) is
used through one of four structures, each a :class:`scipy.sparse.linalg.LinearOperator`
(float64, symmetric, ``shape == (P, P)``) with the same methods:

==================  ========================================================================
structure           representation and what is exact
==================  ========================================================================
:class:`Dense`      ``M`` itself, ``(P, P)``
:class:`Diagonal`   ``diag(d)``, ``d: (P,)``
:class:`BlockDiagonal`  ``blockdiag(B_0, B_1, ...)`` over consecutive parameter blocks
:class:`KFAC`       ``sum_k c_k (G_{k,l} kron A_{k,l})`` per layer ``l`` (one or more
                    :class:`~minifim.KFACFactors` terms with coefficients ``c_k >= 0``)
==================  ========================================================================

Methods, all exact for the structure's own matrix:

- ``to_dense()``, ``diagonal()``, ``trace()``; products ``M @ v`` (``matvec``/``matmat``);
- ``eigh()`` in the structure's own form (``Dense``: ``(w, Q)``; ``Diagonal``: the entries;
  ``BlockDiagonal``: ``[(w_l, Q_l)]``; ``KFAC``: per layer the factors' eigendecompositions
  :class:`KroneckerEigh`, eigenvalues ``kron(g, a)``);
- ``solve(v, damping)`` ``= (M + damping I)^{-1} v`` for ``v: (P,)`` or ``(P, k)``, refusing
  (``ValueError`` naming ``damping``) a system without a correct digit;
- ``logdet(damping)`` ``= log det(M + damping I)``;
- ``inverse(damping)``, ``inv_sqrt(damping)``: the matrix functions ``(M + damping I)^{-1}``
  and the unique symmetric ``(M + damping I)^{-1/2}`` as operators (:class:`SpectralFunction`),
  and ``sample(rng, damping, n)``: draws of ``N(0, (M + damping I)^{-1})`` through that
  symmetric root (so one seed gives the same draws on every BLAS up to roundoff: the root does
  not depend on the signs of the eigenvectors or the basis inside repeated eigenvalues);
- scaling ``s * M`` (``s >= 0``) and addition ``M1 + M2`` of two operators of the same structure
  and layout, which stays that structure (a sum of K-FAC terms stays a list of Kronecker terms;
  other mixtures fall back to SciPy's generic sum operator).

The spectral methods (``logdet``, ``inverse``, ``inv_sqrt``, ``sample``, the eigen coordinates
``to_eigenbasis``/``from_eigenbasis``) use ``M = Q diag(w) Q^T`` with ``Q`` orthogonal (dense, the
identity, per block, or per layer ``U kron V``). Curvatures are positive semi-definite
(``psd=True``, the default), so the eigenvalues :meth:`Structure.eigenvalues` are clipped at 0
(rounding negatives of a PSD matrix); a ``Dense``/``BlockDiagonal``/``Diagonal`` with
``psd=False`` (a Hessian) keeps them. A sum of several K-FAC terms is not a Kronecker product
per layer: its ``eigh`` refuses, and its spectral methods and ``solve`` go exactly through the
dense layer blocks (:meth:`KFAC.to_block`, memory-guarded).

Every dense allocation goes through :func:`minifim.memory.require_memory` and names the
cheaper route. :func:`curvature` builds the structure of a curvature kind for a network.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .._linalg import check_conditioned, damped_solve, diagonal_solve
from .._validation import as_float_array, as_generator, check_int, check_nonnegative, describe
from ..memory import require_memory
from ..options import Bias, KFACApprox, as_option
from ..options import Structure as StructureOption
from .curvature import block_diagonal, curvature_is_psd, curvature_matrix, fisher_diagonal
from .kronecker import KFACFactors, KFACLayer, kfac

__all__ = [
    "Structure",
    "Dense",
    "Diagonal",
    "BlockDiagonal",
    "KFAC",
    "KroneckerEigh",
    "SpectralFunction",
    "curvature",
    "STRUCTURES",
    "STRUCTURE_CLASSES",
    "check_representation",
]

STRUCTURES: tuple[str, ...] = StructureOption.values()


def _frozen(a: np.ndarray, copy: bool) -> np.ndarray:
    """A read-only copy of ``a`` (``copy=True``) or a read-only view of it (``copy=False``: no
    allocation; the caller promises not to modify ``a`` afterwards)."""
    out = np.array(a, copy=True) if copy else a.view()
    out.flags.writeable = False
    return out


def _scalar(s: Any, name: str = "scale") -> float | None:
    """``float(s)`` for a real scalar, ``None`` otherwise (then the operator route is used)."""
    if isinstance(s, numbers.Real) or (
        isinstance(s, np.ndarray) and s.ndim == 0 and np.isrealobj(s)
    ):
        value = float(s)
        if not np.isfinite(value):
            raise ValueError(f"{name}: expected a finite scalar, received {s!r}")
        return value
    return None


def _as_rhs(v: Any, P: int) -> tuple[np.ndarray, bool]:
    """``v: (P,)`` or ``(P, k)`` as a ``(P, k)`` float64 array, and whether it was 1-D."""
    v = as_float_array(v, "v")
    if v.ndim not in (1, 2) or v.shape[0] != P:
        raise ValueError(f"v: expected shape ({P},) or ({P}, k), received shape {v.shape}")
    return v.reshape(P, -1), v.ndim == 1


def _dense_guard(P: int, what: str, cheaper: str, copies: int = 1) -> None:
    require_memory(
        8 * copies * P * P,
        f"{what} ({P}, {P}) float64" + (f" x {copies}" if copies > 1 else ""),
        cheaper,
    )


# --- the common interface ----------------------------------------------------------------------
def _validated_array(
    data: Any, name: str, ndim: int, what: str, word: str
) -> tuple[np.ndarray, int]:
    """A real array of ``ndim`` dimensions (square when 2-D) wrapped by structure ``word``."""
    if isinstance(data, KFACFactors):
        raise TypeError(
            f"{name}: expected {what} for structure={word!r}, received {describe(data)}"
        )
    M = as_float_array(data, name)
    if M.ndim != ndim or (ndim == 2 and M.shape[0] != M.shape[1]):
        raise ValueError(
            f"{name}: expected {what} for structure={word!r}, received shape {M.shape}"
        )
    return M, M.shape[0]


class Structure(LinearOperator):
    """A symmetric curvature ``M: (P, P)`` in one structure (abstract base; module docstring).

    Subclasses implement the products, ``to_dense``, ``diagonal``, ``eigh``, the eigen
    coordinates and ``solve``; the spectral functions, ``logdet``, ``sample``, scaling and
    addition are shared.
    """

    name: str = ""  #: the ``structure=`` word
    psd: bool = True

    def __init__(self, P: int):
        super().__init__(dtype=np.dtype(np.float64), shape=(P, P))

    @classmethod
    def validate_data(cls, data: Any, name: str = "M") -> tuple[Any, int]:
        """Validate a representation this class wraps; return ``(data, P)``.

        ``name`` is the argument named in the error (e.g. ``"tasks[0].curvature"``).
        """
        raise NotImplementedError  # pragma: no cover - every concrete class overrides it

    # --- LinearOperator protocol (symmetric) ---
    def _matvec(self, v: np.ndarray) -> np.ndarray:
        return self._matmat(np.asarray(v, dtype=np.float64).reshape(-1, 1)).ravel()

    def _rmatvec(self, v: np.ndarray) -> np.ndarray:
        return self._matvec(v)

    def _rmatmat(self, V: np.ndarray) -> np.ndarray:
        return self._matmat(V)

    def _adjoint(self) -> Structure:
        return self

    def _transpose(self) -> Structure:
        return self

    def _matmat(self, V: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def num_params(self) -> int:
        """``P``."""
        return int(self.shape[0])

    @property
    def data(self) -> Any:  # pragma: no cover - abstract
        """The representation the structure wraps (``STRUCTURE_CLASSES[name](data)``)."""
        raise NotImplementedError

    # --- the representation (subclasses) ---
    def to_dense(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def diagonal(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def trace(self) -> float:
        """``tr M = sum diag(M)``."""
        return float(np.sum(self.diagonal()))

    def eigh(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _raw_eigenvalues(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def eigenvalues(self) -> np.ndarray:
        """The eigenvalues ``w: (P,)`` in eigen-coordinate order (clipped at 0 if ``psd``).

        ``Dense``: ascending; ``Diagonal``: the entries; ``BlockDiagonal``: block by block,
        ascending within each; ``KFAC``: layer by layer ``kron(g_l, a_l)`` (then, with a
        separate bias, ``g_l``).
        """
        w = self._raw_eigenvalues()
        return np.clip(w, 0.0, None) if self.psd else np.array(w, copy=True)

    def to_eigenbasis(self, V: Any) -> np.ndarray:
        """``Q^T V`` for ``V: (P, m)`` (the coordinates in which ``M`` is ``diag(w)``)."""
        return self._to_eig(_as_rhs(V, self.num_params)[0])

    def from_eigenbasis(self, Z: Any) -> np.ndarray:
        """``Q Z`` for ``Z: (P, m)``; the inverse of :meth:`to_eigenbasis`."""
        return self._from_eig(_as_rhs(Z, self.num_params)[0])

    def _to_eig(self, V: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _from_eig(self, Z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _spectral_diagonal(self, s: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _spectral_dense(self, s: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def solve(self, v: Any, damping: float = 0.0) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- shared spectral functions ---
    def _damped_eigenvalues(self, damping: float) -> np.ndarray:
        damping = check_nonnegative(damping, "damping")
        w = self.eigenvalues() + damping
        check_conditioned(w, damping, f"{type(self).__name__} curvature + damping I")
        return w

    def logdet(self, damping: float = 0.0) -> float:
        """``log det(M + damping I) = sum_i log(w_i + damping)`` (eigen route).

        Raises ``ValueError`` (naming ``damping``) when ``M + damping I`` is not positive
        definite to working precision.
        """
        return float(np.sum(np.log(self._damped_eigenvalues(damping))))

    def spectral(self, s: Any) -> SpectralFunction:
        """The matrix ``Q diag(s) Q^T`` for eigen-coordinate values ``s: (P,)``, as an operator."""
        s = as_float_array(s, "s", shape=(self.num_params,))
        return SpectralFunction(self, s)

    def inverse(self, damping: float) -> SpectralFunction:
        """``(M + damping I)^{-1} = Q diag(1 / (w + damping)) Q^T`` as an operator."""
        return SpectralFunction(self, 1.0 / self._damped_eigenvalues(damping))

    def inv_sqrt(self, damping: float) -> SpectralFunction:
        """The unique symmetric ``(M + damping I)^{-1/2} = Q diag((w + damping)^{-1/2}) Q^T``."""
        return SpectralFunction(self, 1.0 / np.sqrt(self._damped_eigenvalues(damping)))

    def sample(self, rng: Any, damping: float, n: int = 1) -> np.ndarray:
        """``n`` draws of ``N(0, (M + damping I)^{-1})``, shape ``(n, P)``.

        ``x = (M + damping I)^{-1/2} z`` with ``z = rng.standard_normal((n, P))`` and the
        symmetric root :meth:`inv_sqrt`: a unique matrix function, so the draws from one seed
        change with the BLAS (kernel, thread count) only through roundoff.
        """
        n = check_int(n, "n", 1)
        rng = as_generator(rng)
        root = self.inv_sqrt(damping)
        z = rng.standard_normal((n, self.num_params))
        return root.matmat(z.T).T

    # --- algebra ---
    def _scaled(self, s: float) -> Structure:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sum(self, other: Structure) -> Structure | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_scale(self, s: float) -> float:
        if self.psd and s < 0:
            raise ValueError(
                f"scale: expected a non-negative scalar for a positive "
                f"semi-definite {type(self).__name__} (psd=True), received {s!r}"
            )
        return s

    def __mul__(self, x: Any) -> Any:
        s = _scalar(x)
        return self._scaled(self._check_scale(s)) if s is not None else super().__mul__(x)

    def __rmul__(self, x: Any) -> Any:
        s = _scalar(x)
        return self._scaled(self._check_scale(s)) if s is not None else super().__rmul__(x)

    def __truediv__(self, x: Any) -> Any:
        s = _scalar(x)
        if s is None or s == 0:
            raise ValueError(f"divisor: expected a non-zero real scalar, received {x!r}")
        return self._scaled(self._check_scale(1.0 / s))

    def __add__(self, other: Any) -> Any:
        if type(other) is type(self) and other.shape == self.shape:
            total = self._sum(other)
            if total is not None:
                return total
        return super().__add__(other)

    def __radd__(self, other: Any) -> Any:
        if isinstance(other, numbers.Number) and other == 0:  # sum([M1, M2, ...])
            return self
        return NotImplemented

    def _dense_cheaper(self) -> str:
        return ".matvec / .solve / .diagonal() (never dense)"


class SpectralFunction(LinearOperator):
    """``Q diag(s) Q^T`` for a structure's eigenvectors ``Q`` (see :meth:`Structure.spectral`)."""

    def __init__(self, base: Structure, s: np.ndarray):
        super().__init__(dtype=np.dtype(np.float64), shape=base.shape)
        self.base, self.values = base, s

    def _matmat(self, V: np.ndarray) -> np.ndarray:
        V = np.asarray(V, dtype=np.float64)
        return self.base._from_eig(self.base._to_eig(V) * self.values[:, None])

    def _matvec(self, v: np.ndarray) -> np.ndarray:
        return self._matmat(np.asarray(v, dtype=np.float64).reshape(-1, 1)).ravel()

    def _rmatvec(self, v: np.ndarray) -> np.ndarray:
        return self._matvec(v)

    def _adjoint(self) -> SpectralFunction:
        return self

    def diagonal(self) -> np.ndarray:
        """``diag(Q diag(s) Q^T)``, shape ``(P,)``, without forming the matrix."""
        return self.base._spectral_diagonal(self.values)

    def to_dense(self) -> np.ndarray:
        """``Q diag(s) Q^T`` dense ``(P, P)`` (memory-guarded)."""
        P = self.shape[0]
        _dense_guard(
            P, "dense spectral function of a curvature", ".matvec(v) / .diagonal() (never dense)"
        )
        return self.base._spectral_dense(self.values)


# --- Dense -----------------------------------------------------------------------------------
class Dense(Structure):
    """A dense symmetric curvature ``M: (P, P)``.

    Parameters
    ----------
    M : array_like, shape (P, P)
        Symmetric (only its lower triangle is read by :meth:`eigh`).
    psd : bool
        Positive semi-definite (a Fisher, GGN): eigenvalues clipped at 0, Cholesky solves;
        ``False`` (a Hessian): kept as computed, symmetric indefinite solves.
    copy : bool
        Copy ``M`` (default); ``False`` wraps it without copying (read-only view; the caller
        must not modify ``M`` afterwards).
    """

    name = "full"

    @classmethod
    def validate_data(cls, data: Any, name: str = "M") -> tuple[np.ndarray, int]:
        """``data``: a square 2-D array ``(P, P)``; return ``(data, P)``."""
        return _validated_array(data, name, 2, "a square 2-D array (P, P)", "full")

    def __init__(self, M: Any, psd: bool = True, *, copy: bool = True):
        M = as_float_array(M, "M", ndim=2)
        if M.shape[0] != M.shape[1]:
            raise ValueError(f"M: expected a square matrix (P, P), received shape {M.shape}")
        super().__init__(M.shape[0])
        self.matrix = _frozen(M, copy)
        self.psd = bool(psd)
        self._eig: tuple[np.ndarray, np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"Dense(P={self.num_params}, psd={self.psd})"

    @property
    def data(self) -> np.ndarray:
        """The representation: ``M: (P, P)`` (read-only)."""
        return self.matrix

    def _matmat(self, V: np.ndarray) -> np.ndarray:
        return self.matrix @ V

    def to_dense(self) -> np.ndarray:
        """A copy of ``M``, ``(P, P)`` (memory-guarded)."""
        _dense_guard(
            self.num_params, "dense copy of a Dense curvature", ".matrix (read-only, no copy)"
        )
        return np.array(self.matrix, copy=True)

    def diagonal(self) -> np.ndarray:
        return np.diag(self.matrix).copy()

    def eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """``(w, Q)`` with ``M = Q diag(w) Q^T``, ``w`` ascending (not clipped); cached.

        Memory-guarded (``Q: (P, P)``).
        """
        if self._eig is None:
            P = self.num_params
            _dense_guard(
                P,
                "eigenvectors of a Dense curvature",
                "Diagonal / KFAC / "
                "BlockDiagonal structures, or Dense.solve (Cholesky, no eigenvectors)",
            )
            w, Q = np.linalg.eigh(self.matrix)
            w.flags.writeable = Q.flags.writeable = False
            self._eig = (w, Q)
        return self._eig

    def _raw_eigenvalues(self) -> np.ndarray:
        return self.eigh()[0]

    def _to_eig(self, V: np.ndarray) -> np.ndarray:
        return self.eigh()[1].T @ V

    def _from_eig(self, Z: np.ndarray) -> np.ndarray:
        return self.eigh()[1] @ Z

    def _spectral_diagonal(self, s: np.ndarray) -> np.ndarray:
        Q = self.eigh()[1]
        return np.einsum("pk,pk,k->p", Q, Q, s)

    def _spectral_dense(self, s: np.ndarray) -> np.ndarray:
        Q = self.eigh()[1]
        return (Q * s) @ Q.T

    def solve(self, v: Any, damping: float = 0.0) -> np.ndarray:
        """``(M + damping I)^{-1} v`` by Cholesky (``LDL^T`` if not ``psd``), condition-checked.

        Memory: one ``(P, P)`` working copy (guarded).
        """
        V, flat = _as_rhs(v, self.num_params)
        _dense_guard(
            self.num_params,
            "Dense solve working copy",
            "Diagonal / KFAC / BlockDiagonal structures (solves per coordinate or per layer)",
        )
        X = damped_solve(
            self.matrix, V, damping, what="Dense curvature", symmetric_indefinite=not self.psd
        )
        return X[:, 0] if flat else X

    def _scaled(self, s: float) -> Dense:
        return Dense(s * self.matrix, psd=self.psd, copy=False)  # fresh: no copy

    def _sum(self, other: Structure) -> Dense:
        assert isinstance(other, Dense)
        return Dense(self.matrix + other.matrix, psd=self.psd and other.psd, copy=False)


# --- Diagonal --------------------------------------------------------------------------------
class Diagonal(Structure):
    """A diagonal curvature ``diag(d)``, ``d: (P,)`` (``Q = I``); ``psd``, ``copy`` as for
    :class:`Dense`."""

    name = "diag"

    @classmethod
    def validate_data(cls, data: Any, name: str = "M") -> tuple[np.ndarray, int]:
        """``data``: the diagonal, a 1-D array ``(P,)``; return ``(data, P)``."""
        return _validated_array(data, name, 1, "a 1-D array (the diagonal, shape (P,))", "diag")

    def __init__(self, d: Any, psd: bool = True, *, copy: bool = True):
        d = as_float_array(d, "d", ndim=1)
        super().__init__(d.shape[0])
        self.entries = _frozen(d, copy)
        self.psd = bool(psd)

    def __repr__(self) -> str:
        return f"Diagonal(P={self.num_params})"

    @property
    def data(self) -> np.ndarray:
        """The representation: the entries ``d: (P,)`` (read-only)."""
        return self.entries

    def _matmat(self, V: np.ndarray) -> np.ndarray:
        return self.entries[:, None] * V

    def to_dense(self) -> np.ndarray:
        """``diag(d)``, ``(P, P)`` (memory-guarded)."""
        _dense_guard(
            self.num_params, "dense Diagonal curvature", ".entries / .diagonal() (P floats)"
        )
        return np.diag(self.entries)

    def diagonal(self) -> np.ndarray:
        return self.entries.copy()

    def eigh(self) -> np.ndarray:
        """The entries ``d`` (the eigenvalues; the eigenvectors are the identity)."""
        return self.entries.copy()

    def _raw_eigenvalues(self) -> np.ndarray:
        return self.entries

    def _to_eig(self, V: np.ndarray) -> np.ndarray:
        return np.array(V, copy=True)

    def _from_eig(self, Z: np.ndarray) -> np.ndarray:
        return np.array(Z, copy=True)

    def _spectral_diagonal(self, s: np.ndarray) -> np.ndarray:
        return np.array(s, copy=True)

    def _spectral_dense(self, s: np.ndarray) -> np.ndarray:
        return np.diag(s)

    def solve(self, v: Any, damping: float = 0.0) -> np.ndarray:
        """``v / (d + damping)`` entrywise, condition-checked."""
        V, flat = _as_rhs(v, self.num_params)
        damping = check_nonnegative(damping, "damping")
        denom = self.entries + damping
        if self.psd:  # the diagonal system's criterion (refuses entries <= n eps max)
            diagonal_solve(
                self.entries, np.ones(self.num_params), damping, what="diagonal curvature"
            )
        else:
            check_conditioned(np.abs(denom), damping, "|diagonal curvature + damping I|")
        X = V / denom[:, None]
        return X[:, 0] if flat else X

    def _scaled(self, s: float) -> Diagonal:
        return Diagonal(s * self.entries, psd=self.psd, copy=False)

    def _sum(self, other: Structure) -> Diagonal:
        assert isinstance(other, Diagonal)
        return Diagonal(self.entries + other.entries, psd=self.psd and other.psd, copy=False)


# --- BlockDiagonal ---------------------------------------------------------------------------
class BlockDiagonal(Structure):
    """A block-diagonal curvature ``blockdiag(B_0, B_1, ...)`` over consecutive parameters.

    Parameters
    ----------
    blocks : sequence of array_like, ``blocks[l]: (P_l, P_l)`` symmetric
        E.g. the per-layer blocks over ``(W_l, b_l)`` of :func:`minifim.block_diagonal`.
    psd, copy : bool
        As for :class:`Dense`.
    """

    name = "block"

    @classmethod
    def validate_data(cls, data: Any, name: str = "M") -> tuple[list[np.ndarray], int]:
        """``data``: a list of square per-layer blocks; return ``(blocks, sum of sizes)``."""
        if not isinstance(data, (list, tuple)):
            raise TypeError(
                f"{name}: expected a list of square per-layer blocks for "
                f"structure='block', received {describe(data)}"
            )
        blocks = []
        for l, b in enumerate(data):
            if isinstance(b, KFACFactors):
                raise TypeError(f"{name}[{l}]: expected a square 2-D array, received KFACFactors")
            b = as_float_array(b, f"{name}[{l}]")
            if b.ndim != 2 or b.shape[0] != b.shape[1]:
                raise ValueError(
                    f"{name}[{l}]: expected a square 2-D array (P_l, P_l), received shape {b.shape}"
                )
            blocks.append(b)
        return blocks, sum(b.shape[0] for b in blocks)

    def __init__(self, blocks: Any, psd: bool = True, *, copy: bool = True):
        if isinstance(blocks, np.ndarray) or not isinstance(blocks, (list, tuple)):
            raise TypeError(
                f"blocks: expected a list of square 2-D arrays, received {type(blocks).__name__}"
            )
        out = []
        for l, b in enumerate(blocks):
            b = as_float_array(b, f"blocks[{l}]", ndim=2)
            if b.shape[0] != b.shape[1]:
                raise ValueError(
                    f"blocks[{l}]: expected a square 2-D array (P_l, P_l), received shape {b.shape}"
                )
            out.append(_frozen(b, copy))
        self.blocks: tuple[np.ndarray, ...] = tuple(out)
        self.sizes = tuple(b.shape[0] for b in out)
        self.offsets = tuple(int(o) for o in np.cumsum((0,) + self.sizes))
        super().__init__(self.offsets[-1])
        self.psd = bool(psd)
        self._eig: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __repr__(self) -> str:
        return f"BlockDiagonal(sizes={list(self.sizes)}, psd={self.psd})"

    @property
    def data(self) -> list[np.ndarray]:
        """The representation: the blocks ``[(P_l, P_l), ...]`` (read-only arrays)."""
        return list(self.blocks)

    def _slices(self) -> list[slice]:
        return [slice(a, b) for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def _per_block(self, V: np.ndarray, op: Callable[[int, np.ndarray], np.ndarray]) -> np.ndarray:
        out = np.empty_like(V, dtype=np.float64)
        for l, sl in enumerate(self._slices()):
            out[sl] = op(l, V[sl])
        return out

    def _matmat(self, V: np.ndarray) -> np.ndarray:
        return self._per_block(V, lambda l, X: self.blocks[l] @ X)

    def to_dense(self) -> np.ndarray:
        """``blockdiag(B_l)``, ``(P, P)`` (memory-guarded)."""
        _dense_guard(
            self.num_params,
            "dense BlockDiagonal curvature",
            ".blocks (per block) or .matvec / .solve",
        )
        M = np.zeros(self.shape)
        for b, sl in zip(self.blocks, self._slices()):
            M[sl, sl] = b
        return M

    def diagonal(self) -> np.ndarray:
        return np.concatenate([np.diag(b) for b in self.blocks]) if self.blocks else np.zeros(0)

    def eigh(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per block ``(w_l, Q_l)`` with ``B_l = Q_l diag(w_l) Q_l^T`` (not clipped); cached."""
        if self._eig is None:
            require_memory(
                8 * sum(s * s for s in self.sizes),
                f"eigenvectors of the blocks of sizes {list(self.sizes)} float64",
                "Diagonal / KFAC structures, or BlockDiagonal.solve (Cholesky per block)",
            )
            eig = []
            for b in self.blocks:
                w, Q = np.linalg.eigh(b)
                w.flags.writeable = Q.flags.writeable = False
                eig.append((w, Q))
            self._eig = eig
        return self._eig

    def _raw_eigenvalues(self) -> np.ndarray:
        return np.concatenate([w for w, _ in self.eigh()]) if self.blocks else np.zeros(0)

    def _to_eig(self, V: np.ndarray) -> np.ndarray:
        eig = self.eigh()
        return self._per_block(V, lambda l, X: eig[l][1].T @ X)

    def _from_eig(self, Z: np.ndarray) -> np.ndarray:
        eig = self.eigh()
        return self._per_block(Z, lambda l, X: eig[l][1] @ X)

    def _spectral_diagonal(self, s: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                np.einsum("pk,pk,k->p", Q, Q, s[sl])
                for (_, Q), sl in zip(self.eigh(), self._slices())
            ]
        )

    def _spectral_dense(self, s: np.ndarray) -> np.ndarray:
        M = np.zeros(self.shape)
        for (_, Q), sl in zip(self.eigh(), self._slices()):
            M[sl, sl] = (Q * s[sl]) @ Q.T
        return M

    def solve(self, v: Any, damping: float = 0.0) -> np.ndarray:
        """``(B_l + damping I)^{-1} v_l`` per block (Cholesky, condition-checked)."""
        V, flat = _as_rhs(v, self.num_params)
        X = self._per_block(
            V,
            lambda l, R: damped_solve(
                self.blocks[l],
                R,
                damping,
                what=f"block {l} of the curvature",
                symmetric_indefinite=not self.psd,
            ),
        )
        return X[:, 0] if flat else X

    def _scaled(self, s: float) -> BlockDiagonal:
        return BlockDiagonal([s * b for b in self.blocks], psd=self.psd, copy=False)

    def _sum(self, other: Structure) -> BlockDiagonal | None:
        assert isinstance(other, BlockDiagonal)
        if other.sizes != self.sizes:
            return None
        return BlockDiagonal(
            [a + b for a, b in zip(self.blocks, other.blocks)],
            psd=self.psd and other.psd,
            copy=False,
        )


# --- KFAC ------------------------------------------------------------------------------------
class KroneckerEigh(NamedTuple):
    """One layer of a K-FAC eigendecomposition: ``c G = U diag(g) U^T``, ``A = V diag(a) V^T``.

    The layer's eigenvalues are ``kron(g, a)`` (then ``g`` for a separate bias block), its
    eigenvectors ``U kron V`` in the homogeneous ``(out, in~)`` layout.
    """

    g: np.ndarray
    U: np.ndarray
    a: np.ndarray
    V: np.ndarray


class KFAC(Structure):
    """A K-FAC curvature: ``sum_k c_k G_{k,l} kron A_{k,l}`` per layer (block diagonal).

    Parameters
    ----------
    factors : KFACFactors or sequence of (float, KFACFactors)
        One set of factors (coefficient 1), or terms ``(c_k, F_k)`` with ``c_k >= 0`` sharing
        the layer shapes and the bias convention. A sum of Kronecker products is not a
        Kronecker product: the terms are kept as they are (products, ``diagonal`` and
        ``to_dense`` are exact sums), and the solves and spectral methods of a sum go exactly
        through the dense layer blocks :meth:`to_block` (memory-guarded).

    Notes
    -----
    With one term the eigendecomposition is per layer ``c G = U g U^T``, ``A = V a V^T``:
    eigenvectors ``U kron V``, eigenvalues ``g_i a_j`` (layer coordinates laid out as the
    homogeneous ``(out, in~)`` matrix, row-major; a separate bias block follows with ``g``).
    :meth:`solve` is :meth:`KFACFactors.solve` (``method="eigen"``) with the coefficient
    folded into the damping: ``(c G kron A + d I)^{-1} = c^{-1} (G kron A + d/c I)^{-1}``.
    """

    name = "kfac"
    psd = True

    @classmethod
    def validate_data(cls, data: Any, name: str = "M") -> tuple[KFACFactors, int]:
        """``data``: :class:`minifim.KFACFactors`; return ``(data, P)``."""
        if not isinstance(data, KFACFactors):
            raise TypeError(
                f"{name}: expected KFACFactors for structure='kfac', received {describe(data)}"
            )
        return data, data.num_params

    def __init__(self, factors: Any, *, copy: bool = True):
        # ``copy`` is accepted for a uniform constructor (``STRUCTURE_CLASSES[word](data,
        # copy=...)``); the factors are immutable, so they are never copied
        if isinstance(factors, KFACFactors):
            terms = [(1.0, factors)]
        elif isinstance(factors, (list, tuple)) and factors:
            terms = []
            for k, term in enumerate(factors):
                if not (
                    isinstance(term, (list, tuple))
                    and len(term) == 2
                    and isinstance(term[1], KFACFactors)
                ):
                    raise TypeError(
                        f"factors[{k}]: expected a (coefficient, KFACFactors) "
                        f"pair, received {type(term).__name__}"
                    )
                terms.append((check_nonnegative(term[0], f"factors[{k}] coefficient"), term[1]))
        else:
            raise TypeError(
                f"factors: expected KFACFactors or a non-empty list of "
                f"(coefficient, KFACFactors), received {type(factors).__name__}"
            )
        first = terms[0][1]
        for k, (_, F) in enumerate(terms[1:], 1):
            if F.layers != first.layers:
                raise ValueError(
                    f"factors[{k}]: expected layer shapes {tuple(first.shapes)}, "
                    f"bias={str(first.bias)!r} and has_bias={first.has_bias} like "
                    f"factors[0], received {tuple(F.shapes)}, bias={str(F.bias)!r} and "
                    f"has_bias={F.has_bias}"
                )
        self.terms: tuple[tuple[float, KFACFactors], ...] = tuple(terms)
        self.shapes, self.bias = tuple(first.shapes), first.bias
        self.layout: tuple[KFACLayer, ...] = first.layers
        super().__init__(first.num_params)
        self._eig: list[KroneckerEigh] | None = None
        self._block: BlockDiagonal | None = None

    def __repr__(self) -> str:
        approx = sorted({f.kfac_approx for _, f in self.terms})
        return (
            f"KFAC(shapes={list(self.shapes)}, bias={self.bias!r}, "
            f"kfac_approx={'/'.join(approx)!r}, terms={len(self.terms)})"
        )

    @property
    def data(self) -> KFACFactors:
        """The representation of a single term: :attr:`factors`."""
        return self.factors

    @property
    def factors(self) -> KFACFactors:
        """The single term's factors with the coefficient carried by ``G`` (one term only)."""
        if len(self.terms) != 1:
            raise ValueError(
                f"factors: a sum of {len(self.terms)} K-FAC terms has no single "
                "Kronecker factorisation; use .terms"
            )
        c, F = self.terms[0]
        if c == 1.0:
            return F
        return dataclasses.replace(F, G=tuple(c * G for G in F.G))

    def _matmat(self, V: np.ndarray) -> np.ndarray:
        out = np.zeros_like(V, dtype=np.float64)
        for j in range(V.shape[1]):
            for c, F in self.terms:
                out[:, j] += c * F.matvec(V[:, j])
        return out

    def to_dense(self) -> np.ndarray:
        """``sum_k c_k F_k.to_dense()``, block diagonal ``(P, P)`` (memory-guarded)."""
        c, F = self.terms[0]
        M = F.to_dense()
        M *= c
        for c, F in self.terms[1:]:
            _dense_guard(
                self.num_params,
                "second dense K-FAC term of a sum",
                "KFAC.to_block() (the dense layer blocks) or .matvec / .diagonal()",
            )
            M += c * F.to_dense()
        return M

    def diagonal(self) -> np.ndarray:
        out = np.zeros(self.num_params)
        for c, F in self.terms:
            out += c * F.diagonal()
        return out

    def to_block(self) -> BlockDiagonal:
        """The dense layer blocks ``sum_k c_k G_{k,l} kron A_{k,l}`` (exact; cached,
        memory-guarded ``8 sum_l P_l^2``)."""
        if self._block is None:
            sizes = [lay.stop - lay.start for lay in self.layout]
            require_memory(
                8 * sum(s * s for s in sizes),
                f"dense K-FAC layer blocks of sizes {sizes} float64",
                "a single K-FAC term (eigen-solves through the factors) or .matvec",
            )
            blocks = []
            for l in range(len(self.shapes)):
                B = sum(c * F.layer_block(l) for c, F in self.terms)
                blocks.append(B)
            self._block = BlockDiagonal(blocks, copy=False)
        return self._block

    def eigh(self) -> list[KroneckerEigh]:
        """Per layer the factors' eigendecompositions (one term only; cached).

        A sum of K-FAC terms has no Kronecker eigendecomposition: ``ValueError`` naming
        ``.to_block().eigh()`` (the dense layer blocks' eigendecompositions).
        """
        if len(self.terms) != 1:
            raise ValueError(
                f"eigh: a sum of {len(self.terms)} K-FAC terms is not a Kronecker "
                "product per layer, so its eigenvectors are not U kron V; use "
                ".to_block().eigh() (dense layer blocks, exact)"
            )
        if self._eig is None:
            c, F = self.terms[0]
            eig = []
            for G, A in zip(F.G, F.A):
                g, U = np.linalg.eigh(c * G)
                a, V = np.linalg.eigh(A)
                eig.append(KroneckerEigh(g, U, a, V))
            self._eig = eig
        return self._eig

    # eigen coordinates: one term through the factors, a sum through the dense layer blocks
    def _sum_route(self) -> BlockDiagonal | None:
        return self.to_block() if len(self.terms) != 1 else None

    def _layers(self) -> Iterator[tuple[KFACLayer, KroneckerEigh]]:
        """``(KFACLayer, KroneckerEigh)`` per layer."""
        yield from zip(self.layout, self.eigh())

    def _raw_eigenvalues(self) -> np.ndarray:
        block = self._sum_route()
        if block is not None:
            return block._raw_eigenvalues()
        ws = []
        for lay, e in self._layers():
            g, a = np.clip(e.g, 0.0, None), np.clip(e.a, 0.0, None)
            ws.append(np.outer(g, a).ravel())
            if lay.separate_bias:
                ws.append(g)
        return np.concatenate(ws)

    def _map(self, X: np.ndarray, forward: bool) -> np.ndarray:
        """``Q^T X`` (``forward``) or ``Q X`` for ``X: (P, m)``, per layer ``U kron V``."""
        out = np.empty_like(X, dtype=np.float64)
        m = X.shape[1]
        for lay, e in self._layers():
            o, i, off, w_end, stop = lay.out_dim, lay.in_dim, lay.start, lay.bias_start, lay.stop
            L, R = (e.U.T, e.V) if forward else (e.U, e.V.T)
            if not lay.folded:
                W = X[off:w_end].T.reshape(m, o, i)
                out[off:w_end] = (L @ W @ R).reshape(m, o * i).T
                if lay.has_bias:
                    out[w_end:stop] = L @ X[w_end:stop]
            elif forward:  # flat [W, b] -> homogeneous (o, i + 1) -> eigen coordinates
                T = np.concatenate(
                    [X[off:w_end].T.reshape(m, o, i), X[w_end:stop].T[:, :, None]], axis=2
                )
                out[off:stop] = (L @ T @ R).reshape(m, o * (i + 1)).T
            else:  # eigen coordinates -> homogeneous -> flat [W, b]
                T = L @ X[off:stop].T.reshape(m, o, i + 1) @ R
                out[off:w_end] = T[:, :, :i].reshape(m, o * i).T
                out[w_end:stop] = T[:, :, i].T
        return out

    def _to_eig(self, V: np.ndarray) -> np.ndarray:
        block = self._sum_route()
        return block._to_eig(V) if block is not None else self._map(V, True)

    def _from_eig(self, Z: np.ndarray) -> np.ndarray:
        block = self._sum_route()
        return block._from_eig(Z) if block is not None else self._map(Z, False)

    def _spectral_diagonal(self, s: np.ndarray) -> np.ndarray:
        block = self._sum_route()
        if block is not None:
            return block._spectral_diagonal(s)
        out = np.empty(self.num_params)
        for lay, e in self._layers():
            o, i, off, w_end, stop = lay.out_dim, lay.in_dim, lay.start, lay.bias_start, lay.stop
            U2, V2 = e.U * e.U, e.V * e.V
            if not lay.folded:
                out[off:w_end] = (U2 @ s[off:w_end].reshape(o, i) @ V2.T).ravel()
                if lay.has_bias:
                    out[w_end:stop] = U2 @ s[w_end:stop]
            else:
                T = U2 @ s[off:stop].reshape(o, i + 1) @ V2.T
                out[off:w_end] = T[:, :i].ravel()
                out[w_end:stop] = T[:, i]
        return out

    def _spectral_dense(self, s: np.ndarray) -> np.ndarray:
        block = self._sum_route()
        if block is not None:
            return block._spectral_dense(s)
        M = np.zeros(self.shape)
        for lay, _ in self._layers():
            off, stop = lay.start, lay.stop
            # the layer's flat-ordered eigenvectors Q_l = Q e_j over the layer's coordinates
            E = np.zeros((self.num_params, stop - off))
            E[off:stop] = np.eye(stop - off)
            Q = self._map(E, False)[off:stop]
            M[off:stop, off:stop] = (Q * s[off:stop]) @ Q.T
        return M

    def solve(self, v: Any, damping: float = 0.0) -> np.ndarray:
        """``(M + damping I)^{-1} v`` exactly.

        One term: :meth:`KFACFactors.solve` per column (eigen route through the factors, O(P)
        memory) with ``(c G kron A + d I)^{-1} = c^{-1} (G kron A + (d / c) I)^{-1}``. A sum of
        terms: per layer through the dense layer block (:meth:`to_block`, memory-guarded).
        """
        V, flat = _as_rhs(v, self.num_params)
        damping = check_nonnegative(damping, "damping")
        block = self._sum_route()
        if block is not None:
            X = block.solve(V, damping)
        else:
            c, F = self.terms[0]
            if c == 0:
                check_conditioned(np.full(1, damping), damping, "0 + damping I")
                X = V / damping
            else:
                X = np.column_stack([F.solve(V[:, j], damping / c) / c for j in range(V.shape[1])])
        return X[:, 0] if flat else X

    def _scaled(self, s: float) -> KFAC:
        return KFAC([(s * c, F) for c, F in self.terms])

    def _sum(self, other: Structure) -> KFAC | None:
        assert isinstance(other, KFAC)
        if other.layout != self.layout:
            return None
        return KFAC(list(self.terms) + list(other.terms))


# --- the registry and the factory -------------------------------------------------------------
#: The class of each ``structure=`` word; ``STRUCTURE_CLASSES[word](data)`` wraps a
#: representation (``(P, P)``, ``(P,)``, a list of blocks, :class:`KFACFactors`).
STRUCTURE_CLASSES: dict[str, type[Structure]] = {
    "full": Dense,
    "diag": Diagonal,
    "block": BlockDiagonal,
    "kfac": KFAC,
}


def check_representation(
    structure: str | StructureOption, data: Any, name: str = "M", num_params: int | None = None
) -> tuple[Any, int]:
    """Validate the representation of a ``structure=`` word; return ``(data, P)``.

    ``(P, P)`` for ``"full"``, ``(P,)`` for ``"diag"``, a list of square blocks for
    ``"block"``, :class:`minifim.KFACFactors` for ``"kfac"`` (``STRUCTURE_CLASSES[word]``
    validates it). ``num_params``: the size it must have (``None``: inferred).
    """
    word = as_option(structure, StructureOption, "structure").value
    data, size = STRUCTURE_CLASSES[word].validate_data(data, name)
    if num_params is not None and size != num_params:
        raise ValueError(f"{name}: expected a curvature of size P = {num_params}, received {size}")
    return data, size


_BUILDERS = {  # the arrays are fresh: wrapped without a copy
    "full": lambda net, theta, X, y, fisher, kfac_kw, kw: Dense(
        curvature_matrix(net, theta, X, y, fisher, **kw),
        psd=curvature_is_psd(net, fisher),
        copy=False,
    ),
    "diag": lambda net, theta, X, y, fisher, kfac_kw, kw: Diagonal(
        fisher_diagonal(net, theta, X, y, fisher, **kw),
        psd=curvature_is_psd(net, fisher),
        copy=False,
    ),
    "block": lambda net, theta, X, y, fisher, kfac_kw, kw: BlockDiagonal(
        block_diagonal(net, theta, X, y, fisher, **kw),
        psd=curvature_is_psd(net, fisher),
        copy=False,
    ),
    "kfac": lambda net, theta, X, y, fisher, kfac_kw, kw: KFAC(
        kfac(net, theta, X, y, fisher, **kfac_kw, **kw)
    ),
}


def curvature(
    net: Any,
    theta: Any,
    X: Any,
    y: Any = None,
    fisher: str = "true",
    structure: str = "full",
    *,
    reduction: str = "mean",
    bias: str = "folded",
    kfac_approx: str = "expand",
    n_samples: int = 1,
    rng: Any = None,
    chunk_size: int | None = None,
) -> Structure:
    """The curvature ``fisher`` of ``net`` at ``theta`` in the structure ``structure``.

    Parameters
    ----------
    net : MLP
    theta : ndarray, shape (P,)
    X : ndarray, shape (N, D)
    y : targets, needed by ``fisher="empirical"``
    fisher : {"true", "empirical", "mc", "argmax", "ggn"}
        The kind (:mod:`minifim.geometry.curvature`).
    structure : {"full", "diag", "block", "kfac"}
        :class:`Dense` (:func:`minifim.curvature_matrix`), :class:`Diagonal` (the exact
        diagonal, :func:`minifim.fisher_diagonal`), :class:`BlockDiagonal` (the exact
        per-layer blocks, :func:`minifim.block_diagonal`) or :class:`KFAC`
        (:func:`minifim.kfac`).
    reduction : {"mean", "sum"}
    bias : {"folded", "separate"}
        The K-FAC bias convention (``structure="kfac"``; validated and unused otherwise).
    kfac_approx : {"expand", "reduce"}
        The K-FAC flavour for weight-shared layers (Eschenhagen et al. 2023; see
        :func:`minifim.kfac`); the same for layers without positions (``structure="kfac"``;
        validated and unused otherwise).
    n_samples, rng : Monte-Carlo labels per input and their generator (``fisher="mc"``)
    chunk_size : int or None
        Samples per chunk of the assembly.

    Returns
    -------
    Structure
        ``Dense``, ``Diagonal``, ``BlockDiagonal`` or ``KFAC``, shape ``(P, P)``. The GGN of
        the heteroscedastic Gaussian is indefinite: ``full``, ``diag`` and ``block`` carry
        ``psd=False`` (eigenvalues not clipped, ``LDL^T`` solves); ``kfac`` refuses it
        (``ValueError``: a Kronecker factor ``G = E[B^T B]`` needs a PSD seed factor).

    Examples
    --------
    >>> import numpy as np, minifim
    >>> net = minifim.MLP([2, 3, 2])
    >>> theta = net.init(0); X = np.random.default_rng(0).standard_normal((4, 2))
    >>> F = minifim.curvature(net, theta, X, structure="kfac")
    >>> F.shape == (net.num_params, net.num_params)
    True
    """
    structure = as_option(structure, StructureOption, "structure").value
    kfac_kw = {
        "bias": as_option(bias, Bias, "bias").value,
        "kfac_approx": as_option(kfac_approx, KFACApprox, "kfac_approx").value,
    }
    kw = {"n_samples": n_samples, "rng": rng, "reduction": reduction, "chunk_size": chunk_size}
    return _BUILDERS[structure](net, theta, X, y, fisher, kfac_kw, kw)
