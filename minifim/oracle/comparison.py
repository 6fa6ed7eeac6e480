"""Comparing one candidate array with one reference array, entry by entry.

An array passes when every entry satisfies ``|c - r| <= atol + rtol |r|`` (``numpy.allclose``
semantics, ``r`` the reference). The default ``atol=None`` means ``rtol * max|r|`` of that
array. The *worst entry* is the one with the largest ratio ``|c - r| / (atol + rtol |r|)``; the
*max relative error* is ``max |c - r| / |r|`` over the entries where ``r != 0``. Non-finite
entries fail by name (NaN/Inf in the candidate, the reference, or both but different).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._validation import as_float_array, check_nonnegative
from .fixtures import Fixture, param_label

__all__ = [
    "DEFAULT_RTOL",
    "MAX_LISTED",
    "Comparison",
    "compare",
    "candidate_array",
    "dtype_note",
    "join_notes",
    "relative_distance",
]

DEFAULT_RTOL = 1e-7
#: How many NaN/Inf entries a failure message lists by name.
MAX_LISTED = 5


@dataclass
class Comparison:
    """Outcome of comparing one candidate array with one reference array.

    ``worst_index`` is the entry with the largest ``|c - r| / (atol + rtol |r|)``;
    ``worst_label`` names it (parameter labels on parameter axes). ``causes`` are the
    recognised explanations of a failure, best first. ``num_failed`` of the ``num_entries``
    entries fail the criterion; ``error_symmetric`` says, for a square array indexed by
    parameters on both axes, whether ``c - r`` is symmetric (to the tolerance: ``False`` means
    the candidate is not symmetric, e.g. a transposed block or an unsymmetrised Hessian);
    ``fix`` names the options (``loss``, ``reduction``, ``layout``) under which the candidate
    passes, when a convention mismatch explains the failure. ``scale_split`` is the ``s``
    of a K-FAC factor pair compared whole: ``A * s`` and ``G / s`` give the reference's
    ``G kron A`` (K-FAC defines only the product).
    """

    name: str
    candidate_name: str
    shape: tuple
    candidate_shape: tuple
    passed: bool
    rtol: float
    atol: float | None
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    norm_rel_err: float | None = None
    worst_index: tuple | None = None
    worst_label: str = ""
    reference_value: float | None = None
    candidate_value: float | None = None
    causes: list = field(default_factory=list)
    note: str = ""
    num_nonfinite: int = 0
    nonfinite: list = field(default_factory=list)
    num_failed: int = 0
    num_entries: int = 0
    error_symmetric: bool | None = None
    fix: dict = field(default_factory=dict)
    scale_split: float | None = None
    failed_by_parameter: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["candidate_shape"] = list(self.candidate_shape)
        d["worst_index"] = None if self.worst_index is None else list(self.worst_index)
        return d

    def message(self) -> str:
        """A one-paragraph human explanation (used by :func:`assert_matches`)."""
        head = f"{self.name!r}" + (
            f" (candidate {self.candidate_name!r})" if self.candidate_name != self.name else ""
        )
        if self.max_abs_err is None:
            text = (
                f"{head}: shape mismatch, expected {self.shape}, received {self.candidate_shape}."
            )
        elif self.scale_split is not None:
            text = (
                f"{head} matches as one factor of a K-FAC pair compared whole (G kron A "
                f"at rtol={self.rtol:g}); alone it is {self.norm_rel_err:.3g} away in relative "
                f"Frobenius norm, the scale split s = {self.scale_split:.6g}."
            )
        elif self.num_nonfinite:
            text = f"{head} does not match: " + "; ".join(self.nonfinite) + "."
        else:
            status = "matches" if self.passed else "does not match"
            count = (
                f"{self.num_failed} of {self.num_entries} entries fail"
                if self.num_failed
                else "every entry passes"
            )
            if self.failed_by_parameter and self.num_failed:
                blocks = list(self.failed_by_parameter.items())
                count += " (by parameter: " + ", ".join(f"{b} {n}" for b, n in blocks[:4])
                count += ", ...)" if len(blocks) > 4 else ")"
            if self.error_symmetric is not None and self.num_failed:
                count += (
                    ", the error is symmetric"
                    if self.error_symmetric
                    else ", the error is NOT symmetric (the candidate is not a symmetric matrix)"
                )
            text = (
                f"{head} {status} at rtol={self.rtol:g}, atol={self.atol:.3g} "
                f"(|c - r| <= atol + rtol |r|): {count}; max abs err {self.max_abs_err:.3g}, "
                f"max rel err {self.max_rel_err:.3g}, relative Frobenius error "
                f"{self.norm_rel_err:.3g}; worst entry {self.worst_label}: expected "
                f"{self.reference_value!r}, got {self.candidate_value!r}."
            )
        if self.fix:
            text += " It passes with " + ", ".join(f"{k}={v!r}" for k, v in self.fix.items()) + "."
        if self.causes:
            text += " Likely cause: " + self.causes[0]
            if len(self.causes) > 1:
                text += " (also consistent: " + "; ".join(self.causes[1:3]) + ")"
            text += "."
        if self.note:
            text += " Note: " + self.note
        return text


def _entry_label(fixture: Fixture | None, name: str, index: tuple, param_axes: Any) -> str:
    if fixture is None:
        return f"{name}[{', '.join(str(int(i)) for i in index)}]"
    net = fixture.net
    parts = []
    for ax, i in enumerate(index):
        if ax in param_axes:
            parts.append(param_label(net, int(i)))
        elif name in ("scores", "jacobians", "X", "y", "outputs", "output_fisher") and ax == 0:
            parts.append(f"sample {int(i)}")
        elif name.startswith("trajectory/") and ax == 0:
            parts.append(f"step {int(i)}")
        else:
            parts.append(str(int(i)))
    return f"{name}[{', '.join(parts)}]"


def _stats(
    ref: np.ndarray, cand: np.ndarray, rtol: float, atol: float | None
) -> tuple[bool, float, float, float, float, tuple[int, ...]]:
    diff = np.abs(cand - ref)
    mag = np.abs(ref)
    scale = float(mag.max()) if mag.size else 0.0
    atol_eff = rtol * scale if atol is None else atol
    allowed = atol_eff + rtol * mag
    passed = bool(np.all(diff <= allowed))
    if diff.size == 0:
        return passed, atol_eff, 0.0, 0.0, 0.0, ()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(
            allowed > 0, diff / np.where(allowed > 0, allowed, 1.0), np.where(diff > 0, np.inf, 0.0)
        )
        rel = np.where(mag > 0, diff / np.where(mag > 0, mag, 1.0), 0.0)
    worst = np.unravel_index(int(np.argmax(ratio if np.any(ratio > 0) else diff)), ref.shape)
    ref_norm = float(np.linalg.norm(ref))
    norm_rel = (
        float(np.linalg.norm(cand - ref)) / ref_norm
        if ref_norm > 0
        else float(np.linalg.norm(cand))
    )
    return (
        passed,
        atol_eff,
        float(diff.max()),
        float(rel.max()),
        norm_rel,
        tuple(int(i) for i in worst),
    )


def _failed_by_parameter(fixture: Fixture, failing: np.ndarray, axis: int) -> dict[str, int]:
    """Failing entries counted by the parameter block (``W0``, ``b0``, ...) of ``axis``,
    largest first."""
    per_index = failing.reshape(failing.shape[: axis + 1] + (-1,)).sum(axis=-1)
    per_index = per_index.reshape(-1, failing.shape[axis]).sum(axis=0)  # (P,)
    counts: dict[str, int] = {}
    for l, (ws, bs) in enumerate(fixture.net.layer_slices):
        for name, sl in ((f"W{l}", ws), (f"b{l}", bs)):
            n = int(per_index[sl].sum())
            if n:
                counts[name] = n
    return dict(sorted(counts.items(), key=lambda t: -t[1]))


def candidate_array(array: Any, name: str) -> tuple[np.ndarray, np.dtype]:
    """A candidate as float64 (a ``torch.Tensor`` is accepted) and its original dtype.

    Complex, object, string and ragged input is refused (``TypeError``/``ValueError``
    naming ``name``): a complex Fisher cast to real would pass on its real part alone.
    """
    if hasattr(array, "detach") and hasattr(array, "cpu"):
        array = array.detach().cpu().numpy()
    dtype = getattr(array, "dtype", None)
    arr = as_float_array(array, name, finite=False)
    return arr, np.dtype(dtype) if dtype is not None else np.asarray(array).dtype


def dtype_note(dtype: np.dtype, rtol: float) -> str:
    """What comparing a candidate of ``dtype`` in float64 means ("" for float64)."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return ""
    if np.issubdtype(dtype, np.floating):
        eps = float(np.finfo(dtype).eps)
        note = (
            f"{dtype.name} candidate compared in float64, each entry exactly as stored; "
            f"{dtype.name} rounds every entry by up to {eps / 2:.1e} relative (eps = "
            f"{eps:.1e}) and its arithmetic errors grow like cond * eps"
        )
        if dtype.itemsize < 8 and rtol < 10 * eps:
            note += (
                f", so it cannot meet rtol = {rtol:g} on ill-conditioned quantities "
                "(solves, inverses, eigenvalues, the NGD step); compute in float64 or "
                f"compare at rtol >= {10 * eps:.0e}"
            )
        return note
    if dtype == np.bool_:
        return "bool candidate compared in float64 (True = 1, False = 0)"
    return f"{dtype.name} candidate compared in float64 (exact for |values| <= 2^53)"


def join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def relative_distance(a: np.ndarray, b: np.ndarray) -> float:
    nb = float(np.linalg.norm(b))
    d = float(np.linalg.norm(a - b))
    return d / nb if nb > 0 else (0.0 if d == 0 else math.inf)


def _nonfinite_report(
    ref: np.ndarray,
    cand: np.ndarray,
    bad: np.ndarray,
    fixture: Fixture | None,
    name: str,
    param_axes: Any,
) -> list[str]:
    """Sentences naming the first :data:`MAX_LISTED` NaN/Inf mismatches, by group."""
    fin_c, fin_r = np.isfinite(cand), np.isfinite(ref)
    groups = [
        (
            bad & ~fin_c & fin_r,
            "the candidate has {n} NaN/Inf entr{ies} where the reference is finite",
        ),
        (
            bad & fin_c & ~fin_r,
            "the reference has {n} NaN/Inf entr{ies} where the candidate is finite",
        ),
        (bad & ~fin_c & ~fin_r, "{n} entr{ies} NaN/Inf in both arrays but different"),
    ]
    out, listed = [], 0
    for mask, text in groups:
        idx = np.argwhere(mask)
        n = len(idx)
        if not n:
            continue
        shown = idx[: max(MAX_LISTED - listed, 1)]
        listed += len(shown)
        items = [
            f"{_entry_label(fixture, name, tuple(i), param_axes)} = "
            f"{float(cand[tuple(i)])!r} (expected {float(ref[tuple(i)])!r})"
            for i in shown
        ]
        more = f", ... ({n - len(shown)} more)" if n > len(shown) else ""
        out.append(text.format(n=n, ies="y" if n == 1 else "ies") + ": " + ", ".join(items) + more)
    return out


def compare(
    reference: Any,
    candidate: Any,
    *,
    name: str = "array",
    rtol: float = DEFAULT_RTOL,
    atol: float | None = None,
    fixture: Fixture | None = None,
    candidate_name: str | None = None,
    param_axes: Sequence[int] = (),
) -> Comparison:
    """Compare ``candidate`` with ``reference`` entry by entry (see the module docstring).

    Parameters
    ----------
    reference, candidate : array_like of the same shape
    rtol : float
    atol : float or None
        ``None``: ``rtol * max|reference|``.
    fixture : Fixture, optional
        Used to label the worst entry with parameter names.
    param_axes : sequence of int
        Axes indexed by flat parameters (for the labels).

    Returns
    -------
    Comparison
    """
    rtol = check_nonnegative(rtol, "rtol")
    if atol is not None:
        atol = float(atol)
        if not (atol >= 0 and math.isfinite(atol)):
            raise ValueError(f"atol: expected a finite number >= 0 or None, received {atol!r}")
    ref = as_float_array(reference, "reference", finite=False)
    cand, dtype = candidate_array(candidate, f"candidate {candidate_name or name!r}")
    cname = candidate_name or name
    note = dtype_note(dtype, rtol)
    if cand.shape != ref.shape:
        return Comparison(name, cname, ref.shape, cand.shape, False, rtol, atol, note=note)
    # non-finite reference entries (an optimiser state's "undefined yet") must be matched
    # exactly; they are then left out of the statistics
    same = (np.isnan(ref) & np.isnan(cand)) | (np.isinf(ref) & (ref == cand))
    if np.any(same):
        ref, cand = np.where(same, 0.0, ref), np.where(same, 0.0, cand)
    bad = ~(np.isfinite(cand) & np.isfinite(ref))
    if np.any(bad):  # a failure that names the entries (no statistics over NaN)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        finite_ref = np.abs(ref[np.isfinite(ref)])
        atol_eff = (
            atol if atol is not None else rtol * float(finite_ref.max() if finite_ref.size else 0.0)
        )
        return Comparison(
            name,
            cname,
            ref.shape,
            cand.shape,
            False,
            rtol,
            atol_eff,
            max_abs_err=math.inf,
            max_rel_err=math.inf,
            norm_rel_err=math.inf,
            worst_index=first,
            worst_label=_entry_label(fixture, name, first, param_axes),
            reference_value=float(ref[first]),
            candidate_value=float(cand[first]),
            note=note,
            num_nonfinite=int(np.count_nonzero(bad)),
            nonfinite=_nonfinite_report(ref, cand, bad, fixture, name, param_axes),
        )
    passed, atol_eff, abs_err, rel_err, norm_rel, worst = _stats(ref, cand, rtol, atol)
    allowed = atol_eff + rtol * np.abs(ref)
    failing = np.abs(cand - ref) > allowed
    num_failed = int(np.count_nonzero(failing))
    by_parameter = (
        _failed_by_parameter(fixture, failing, int(tuple(param_axes)[0]))
        if num_failed and fixture is not None and len(tuple(param_axes))
        else {}
    )
    symmetric = None
    if ref.ndim == 2 and ref.shape[0] == ref.shape[1] and tuple(param_axes) == (0, 1):
        err = cand - ref
        symmetric = bool(np.all(np.abs(err - err.T) <= allowed + allowed.T))
    return Comparison(
        name,
        cname,
        ref.shape,
        cand.shape,
        passed,
        rtol,
        atol_eff,
        max_abs_err=abs_err,
        max_rel_err=rel_err,
        norm_rel_err=norm_rel,
        worst_index=worst,
        worst_label=_entry_label(fixture, name, worst, param_axes),
        reference_value=float(ref[worst]) if ref.size else None,
        candidate_value=float(cand[worst]) if cand.size else None,
        note=note,
        num_failed=num_failed,
        failed_by_parameter=by_parameter,
        num_entries=int(ref.size),
        error_symmetric=symmetric,
    )
