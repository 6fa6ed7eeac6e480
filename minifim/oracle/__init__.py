"""Checking another library's arrays against a fixture, and diagnosing the usual mistakes.

Contract:

- **Tolerance.** An array passes when every entry satisfies
  ``|c - r| <= atol + rtol |r|`` (``numpy.allclose`` semantics, ``r`` the reference). The
  default ``atol=None`` means ``rtol * max|r|`` of that array: errors below ``rtol`` times the
  array's largest entry are forgiven, so entries that are exactly zero in the reference (or
  tiny eigenvalues of a rank-deficient Fisher) do not fail on rounding. The *worst entry* is
  the one with the largest ratio ``|c - r| / (atol + rtol |r|)``; the *max relative error* is
  ``max |c - r| / |r|`` over the entries where ``r != 0``.
- **Conventions of the candidate.** ``layout`` says how the candidate orders parameters:
  ``"pytorch"`` (minifim's: ``W0, b0, W1, b1, ...`` with ``W: (out, in)`` row-major),
  ``"in-out"`` (``W`` stored as ``(in, out)``, i.e. ``x @ W`` code such as HIPS autograd
  examples, ``W0, b0, ...``), ``"jax"`` (``jax.flatten_util.ravel_pytree`` of flax
  parameters: layers in sorted-name order, ``bias`` before ``kernel: (in, out)``).
  ``reduction="sum"`` divides the candidate by ``N ** reduction_power`` (from the manifest)
  before comparing. The conversion is a permutation and a scale: exact, never an
  approximation.
- **Causes.** A failure message names the worst entry (``W0[2, 1]``-style parameter labels)
  and, when the candidate matches a transformed reference to ``cause_tol`` (relative
  Frobenius distance), the likely cause: transposed layout, another parameter order, sum vs
  mean (factor ``N``), a factor 2 (the MSE convention of the Gaussian), a missing ``sigma``,
  the empirical instead of the true Fisher, the square of the batch-mean gradient, argmax
  labels, a sign.
- **Diagnosis** (:func:`diagnose`) compares a candidate Fisher (dense ``(P, P)`` or diagonal
  ``(P,)``) with each mistaken variant computed exactly on the fixture's model, parameters
  and data, and for Monte-Carlo candidates with ``k`` samples per input tests the error
  against the exact mean and variance of the Monte-Carlo error (:func:`mc_error_moments`,
  by enumeration of the output distribution).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.linalg

from .._validation import as_float_array, check_choice, check_int, check_net, check_nonnegative
from ..core.scores import backprop_seeds, expand_gradients, forward_cache
from ..geometry.curvature import (
    curvature_matrix,
    fisher_diagonal,
    square_of_mean_gradient,
)
from ..memory import require_memory
from .fixtures import Fixture, load_fixture, param_label

__all__ = [
    "LAYOUTS",
    "ALIASES",
    "Comparison",
    "CheckResult",
    "Diagnosis",
    "layout_permutation",
    "to_minifim_layout",
    "from_minifim_layout",
    "compare",
    "check",
    "assert_matches",
    "likely_causes",
    "diagnose",
    "fisher_variants",
    "mc_error_moments",
    "output_outcomes",
]

LAYOUTS = ("pytorch", "in-out", "jax")
REDUCTIONS = ("mean", "sum")
DEFAULT_RTOL = 1e-7
CAUSE_TOL = 1e-4
MATCH_TOL = 1e-6
MAX_OUTCOMES = 4096
#: How many NaN/Inf entries a failure message lists by name.
MAX_LISTED = 5

#: Common names of the fixture's arrays in other code (lower-cased candidate key -> fixture key).
ALIASES: dict[str, str] = {
    "f": "true_fisher", "fisher": "true_fisher", "fim": "true_fisher",
    "ef": "empirical_fisher", "emp_fisher": "empirical_fisher",
    "empirical": "empirical_fisher",
    "gauss_newton": "ggn", "gn": "ggn",
    "h": "hessian", "hess": "hessian",
    "g": "gradient", "grad": "gradient", "grads_mean": "gradient",
    "s": "scores", "per_sample_grads": "scores", "per_sample_scores": "scores",
    "grads": "scores", "per_sample_gradients": "scores",
    "j": "jacobians", "jac": "jacobians", "jacobian": "jacobians",
    "output_jacobians": "jacobians",
    "eigvals": "fisher_eigenvalues", "eigenvalues": "fisher_eigenvalues",
    "fisher_eigvals": "fisher_eigenvalues",
    "diag": "fisher_diagonal", "fisher_diag": "fisher_diagonal", "diag_f": "fisher_diagonal",
    "diag_fisher": "fisher_diagonal",
    "empirical_diag": "empirical_fisher_diagonal", "diag_ef": "empirical_fisher_diagonal",
    "params": "theta", "flat_params": "theta", "parameters": "theta",
    "logits": "outputs", "f_x": "outputs",
    "ngd": "ngd_step", "natural_gradient": "ngd_step", "nat_grad": "ngd_step",
    "nll": "loss",
    "lambda": "output_fisher",
}


# --- layouts ---------------------------------------------------------------------------------
def layout_permutation(net, layout: str) -> np.ndarray:
    """``perm: (P,)`` with ``candidate[k] = theta[perm[k]]`` for a candidate in ``layout``.

    ``"pytorch"``: the identity. ``"in-out"``: per layer ``W.T.ravel()`` then ``b``.
    ``"jax"``: ``ravel_pytree`` order of flax parameters ``{"Dense_l": {"bias", "kernel"}}``:
    layers sorted by name as strings (``Dense_10`` before ``Dense_2``), bias then kernel
    ``(in, out)`` row-major.
    """
    check_net(net)
    check_choice(layout, "layout", LAYOUTS)
    if layout == "pytorch":
        return np.arange(net.num_params)
    blocks = []
    for (out, inp), (ws, bs) in zip(net.shapes, net.layer_slices):
        kernel = ws.start + np.arange(out * inp).reshape(out, inp).T.ravel()
        bias = np.arange(bs.start, bs.stop)
        blocks.append((kernel, bias))
    if layout == "in-out":
        return np.concatenate([np.concatenate(kb) for kb in blocks])
    order = sorted(range(net.num_layers), key=lambda l: f"Dense_{l}")
    return np.concatenate([np.concatenate((blocks[l][1], blocks[l][0])) for l in order])


def _permute_axes(arr: np.ndarray, axes, index: np.ndarray) -> np.ndarray:
    for ax in axes:
        arr = np.take(arr, index, axis=ax)
    return arr


def _check_layout_args(net, arr, param_axes) -> tuple[np.ndarray, list[int]]:
    """``arr`` as float64 and ``param_axes`` as distinct non-negative axes of length ``P``."""
    check_net(net)
    arr = as_float_array(arr, "arr", finite=False)
    if isinstance(param_axes, (str, bytes)) or not isinstance(param_axes,
                                                              Sequence | np.ndarray):
        raise TypeError(f"param_axes: expected a sequence of integers (the axes of arr indexed "
                        f"by flat parameters), received {type(param_axes).__name__} "
                        f"{param_axes!r}")
    axes: list[int] = []
    for ax in param_axes:
        if isinstance(ax, (bool, np.bool_)) or not isinstance(ax, numbers.Integral):
            raise TypeError(f"param_axes: expected a sequence of integers, received "
                            f"{list(param_axes)!r}")
        ax = int(ax)
        if not -arr.ndim <= ax < arr.ndim:
            raise ValueError(f"param_axes: axis {ax} is out of range for arr of shape "
                             f"{arr.shape}")
        ax %= arr.ndim
        if ax in axes:
            raise ValueError(f"param_axes: axis {ax} is listed twice in {list(param_axes)!r}")
        if arr.shape[ax] != net.num_params:
            raise ValueError(f"param_axes: axis {ax} of arr has length {arr.shape[ax]}, "
                             f"expected P = {net.num_params} (arr has shape {arr.shape})")
        axes.append(ax)
    return arr, axes


def to_minifim_layout(net, arr, param_axes: Sequence[int], layout: str) -> np.ndarray:
    """Reorder the parameter axes ``param_axes`` of ``arr`` from ``layout`` to minifim's.

    Parameters
    ----------
    net : MLP
    arr : array_like, real
        Returned as float64.
    param_axes : sequence of int
        Distinct axes of ``arr`` (negative counts from the end), each of length ``P``.
    layout : {"pytorch", "in-out", "jax"}

    Returns
    -------
    ndarray, the shape of ``arr``
    """
    arr, axes = _check_layout_args(net, arr, param_axes)
    perm = layout_permutation(net, layout)
    return _permute_axes(arr, axes, np.argsort(perm))


def from_minifim_layout(net, arr, param_axes: Sequence[int], layout: str) -> np.ndarray:
    """Reorder the parameter axes ``param_axes`` of ``arr`` from minifim's order to ``layout``.

    Inverse of :func:`to_minifim_layout` (same arguments); e.g.
    ``from_minifim_layout(net, F, [0, 1], "jax")`` is the true Fisher as a JAX code computing
    it on ``ravel_pytree`` parameters holds it.
    """
    arr, axes = _check_layout_args(net, arr, param_axes)
    return _permute_axes(arr, axes, layout_permutation(net, layout))


# --- comparing one array ---------------------------------------------------------------------
@dataclass
class Comparison:
    """Outcome of comparing one candidate array with one reference array.

    ``worst_index`` is the entry with the largest ``|c - r| / (atol + rtol |r|)``;
    ``worst_label`` names it (parameter labels on parameter axes). ``causes`` are the
    recognised explanations of a failure, best first.
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["candidate_shape"] = list(self.candidate_shape)
        d["worst_index"] = None if self.worst_index is None else list(self.worst_index)
        return d

    def message(self) -> str:
        """A one-paragraph human explanation (used by :func:`assert_matches`)."""
        head = f"{self.name!r}" + (f" (candidate {self.candidate_name!r})"
                                   if self.candidate_name != self.name else "")
        if self.max_abs_err is None:
            text = (f"{head}: shape mismatch, expected {self.shape}, received "
                    f"{self.candidate_shape}.")
        elif self.num_nonfinite:
            text = f"{head} does not match: " + "; ".join(self.nonfinite) + "."
        else:
            status = "matches" if self.passed else "does not match"
            text = (f"{head} {status} at rtol={self.rtol:g}, atol={self.atol:.3g} "
                    f"(|c - r| <= atol + rtol |r|): max abs err {self.max_abs_err:.3g}, max "
                    f"rel err {self.max_rel_err:.3g}, relative Frobenius error "
                    f"{self.norm_rel_err:.3g}; worst entry {self.worst_label}: expected "
                    f"{self.reference_value!r}, got {self.candidate_value!r}.")
        if self.causes:
            text += " Likely cause: " + self.causes[0]
            if len(self.causes) > 1:
                text += " (also consistent: " + "; ".join(self.causes[1:3]) + ")"
            text += "."
        if self.note:
            text += " Note: " + self.note
        return text


def _entry_label(fixture: Fixture | None, name: str, index: tuple, param_axes) -> str:
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


def _stats(ref: np.ndarray, cand: np.ndarray, rtol: float, atol: float | None):
    diff = np.abs(cand - ref)
    mag = np.abs(ref)
    scale = float(mag.max()) if mag.size else 0.0
    atol_eff = rtol * scale if atol is None else atol
    allowed = atol_eff + rtol * mag
    passed = bool(np.all(diff <= allowed))
    if diff.size == 0:
        return passed, atol_eff, 0.0, 0.0, 0.0, ()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(allowed > 0, diff / np.where(allowed > 0, allowed, 1.0),
                         np.where(diff > 0, np.inf, 0.0))
        rel = np.where(mag > 0, diff / np.where(mag > 0, mag, 1.0), 0.0)
    worst = np.unravel_index(int(np.argmax(ratio if np.any(ratio > 0) else diff)), ref.shape)
    ref_norm = float(np.linalg.norm(ref))
    norm_rel = float(np.linalg.norm(cand - ref)) / ref_norm if ref_norm > 0 else float(
        np.linalg.norm(cand))
    return passed, atol_eff, float(diff.max()), float(rel.max()), norm_rel, tuple(
        int(i) for i in worst)


def _candidate_array(array, name: str) -> tuple[np.ndarray, np.dtype]:
    """A candidate as float64 (a ``torch.Tensor`` is accepted) and its original dtype.

    Complex, object, string and ragged input is refused (``TypeError``/``ValueError``
    naming ``name``): a complex Fisher cast to real would pass on its real part alone.
    """
    if hasattr(array, "detach") and hasattr(array, "cpu"):
        array = array.detach().cpu().numpy()
    dtype = getattr(array, "dtype", None)
    arr = as_float_array(array, name, finite=False)
    return arr, np.dtype(dtype) if dtype is not None else np.asarray(array).dtype


def _dtype_note(dtype: np.dtype, rtol: float) -> str:
    """What comparing a candidate of ``dtype`` in float64 means ("" for float64)."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return ""
    if np.issubdtype(dtype, np.floating):
        eps = float(np.finfo(dtype).eps)
        note = (f"{dtype.name} candidate compared in float64, each entry exactly as stored; "
                f"{dtype.name} rounds every entry by up to {eps / 2:.1e} relative (eps = "
                f"{eps:.1e}) and its arithmetic errors grow like cond * eps")
        if dtype.itemsize < 8 and rtol < 10 * eps:
            note += (f", so it cannot meet rtol = {rtol:g} on ill-conditioned quantities "
                     "(solves, inverses, eigenvalues, the NGD step); compute in float64 or "
                     f"compare at rtol >= {10 * eps:.0e}")
        return note
    if dtype == np.bool_:
        return "bool candidate compared in float64 (True = 1, False = 0)"
    return f"{dtype.name} candidate compared in float64 (exact for |values| <= 2^53)"


def _join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _nonfinite_report(ref, cand, bad, fixture, name, param_axes) -> list[str]:
    """Sentences naming the first :data:`MAX_LISTED` NaN/Inf mismatches, by group."""
    fin_c, fin_r = np.isfinite(cand), np.isfinite(ref)
    groups = [(bad & ~fin_c & fin_r, "the candidate has {n} NaN/Inf entr{ies} where the "
                                     "reference is finite"),
              (bad & fin_c & ~fin_r, "the reference has {n} NaN/Inf entr{ies} where the "
                                     "candidate is finite"),
              (bad & ~fin_c & ~fin_r, "{n} entr{ies} NaN/Inf in both arrays but different")]
    out, listed = [], 0
    for mask, text in groups:
        idx = np.argwhere(mask)
        n = len(idx)
        if not n:
            continue
        shown = idx[:max(MAX_LISTED - listed, 1)]
        listed += len(shown)
        items = [f"{_entry_label(fixture, name, tuple(i), param_axes)} = "
                 f"{float(cand[tuple(i)])!r} (expected {float(ref[tuple(i)])!r})"
                 for i in shown]
        more = f", ... ({n - len(shown)} more)" if n > len(shown) else ""
        out.append(text.format(n=n, ies="y" if n == 1 else "ies") + ": " + ", ".join(items)
                   + more)
    return out


def compare(reference, candidate, *, name: str = "array", rtol: float = DEFAULT_RTOL,
            atol: float | None = None, fixture: Fixture | None = None,
            candidate_name: str | None = None, param_axes: Sequence[int] = ()) -> Comparison:
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
    cand, dtype = _candidate_array(candidate, f"candidate {candidate_name or name!r}")
    cname = candidate_name or name
    note = _dtype_note(dtype, rtol)
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
        atol_eff = atol if atol is not None else rtol * float(
            finite_ref.max() if finite_ref.size else 0.0)
        return Comparison(name, cname, ref.shape, cand.shape, False, rtol, atol_eff,
                          max_abs_err=math.inf, max_rel_err=math.inf, norm_rel_err=math.inf,
                          worst_index=first,
                          worst_label=_entry_label(fixture, name, first, param_axes),
                          reference_value=float(ref[first]),
                          candidate_value=float(cand[first]), note=note,
                          num_nonfinite=int(np.count_nonzero(bad)),
                          nonfinite=_nonfinite_report(ref, cand, bad, fixture, name,
                                                      param_axes))
    passed, atol_eff, abs_err, rel_err, norm_rel, worst = _stats(ref, cand, rtol, atol)
    return Comparison(name, cname, ref.shape, cand.shape, passed, rtol, atol_eff,
                      max_abs_err=abs_err, max_rel_err=rel_err, norm_rel_err=norm_rel,
                      worst_index=worst,
                      worst_label=_entry_label(fixture, name, worst, param_axes),
                      reference_value=float(ref[worst]) if ref.size else None,
                      candidate_value=float(cand[worst]) if cand.size else None, note=note)


# --- converting a candidate to the fixture's convention ---------------------------------------
def _convert(fixture: Fixture, key: str, arr: np.ndarray, layout: str, reduction: str
             ) -> tuple[np.ndarray, str]:
    """Bring a candidate array for fixture array ``key`` into minifim's conventions."""
    info = fixture.array_info(key)
    note = ""
    if layout != "pytorch":
        if info.get("role") == "weight" and arr.ndim == 2:
            arr = arr.T
        axes = [ax for ax in info["param_axes"] if ax < arr.ndim
                and arr.shape[ax] == fixture.P]
        arr = to_minifim_layout(fixture.net, arr, axes, layout)
    if reduction == "sum":
        power = info.get("reduction_power")
        if power is None:
            note = (f"{key!r} is not a pure rescaling of the sum-reduced quantity; compared "
                    "as given")
        elif power:
            arr = arr / float(fixture.N) ** power
    return arr, note


def _resolve_key(fixture: Fixture, cand_key: str, mapping: Mapping[str, str]) -> str | None:
    if cand_key in mapping:
        return mapping[cand_key]
    if cand_key in fixture.arrays:
        return cand_key
    if f"state_dict/{cand_key}" in fixture.arrays:
        return f"state_dict/{cand_key}"
    return ALIASES.get(cand_key.lower())


# --- likely causes -------------------------------------------------------------------------------
def _rel_dist(a: np.ndarray, b: np.ndarray) -> float:
    nb = float(np.linalg.norm(b))
    d = float(np.linalg.norm(a - b))
    return d / nb if nb > 0 else (0.0 if d == 0 else math.inf)


def _known_factors(fixture: Fixture, key: str) -> list[tuple[float, str]]:
    N = fixture.N
    info = fixture.manifest["arrays"].get(key, {})
    power = info.get("reduction_power")
    lik = fixture.manifest["model"]["likelihood"]
    sigma = float(fixture.manifest["model"].get("sigma", 1.0))
    out = []
    if power:
        out.append((float(N) ** power, f"sum instead of mean over the N = {N} samples "
                                       f"(factor N{'' if power == 1 else f'^{power}'})"))
        out.append((float(N) ** -power, f"divided by N = {N} once too often (mean of a mean)"))
    out.append((-1.0, "sign flipped (gradient of the log-likelihood instead of the negative "
                      "log-likelihood, or a descent step stored as an ascent step)"))
    if lik == "gaussian":
        mse = ("the MSE |y - f|^2 used where minifim's Gaussian NLL is |y - f|^2 / (2 sigma^2) "
               f"(sigma = {sigma:g})")
        out += [(2.0, f"factor 2: {mse}"), (4.0, f"factor 4: squared gradients of {mse}"),
                (0.5, "factor 1/2: the Gaussian NLL's 1/2 applied twice")]
        if sigma != 1.0:
            out += [(sigma**2, f"sigma ignored: the Fisher for sigma = 1 instead of sigma = "
                               f"{sigma:g} (factor sigma^2)"),
                    (2 * sigma**2, "the Hessian of the MSE |y - f|^2 (factor 2 sigma^2)"),
                    (4 * sigma**4, "squared gradients of the MSE (factor 4 sigma^4)"),
                    (sigma**-2, f"1/sigma^2 applied twice (sigma = {sigma:g})")]
    else:
        out += [(2.0, "factor 2 (a loss with an extra factor 2, e.g. the MSE convention)"),
                (0.5, "factor 1/2")]
    return out


_ALTERNATIVES = {
    "true_fisher": [("empirical_fisher", "the empirical Fisher (data labels) instead of the "
                                         "true Fisher (labels from the model)"),
                    ("hessian", "the Hessian of the NLL instead of the Fisher")],
    "empirical_fisher": [("true_fisher", "the true Fisher instead of the empirical Fisher")],
    "ggn": [("empirical_fisher", "the empirical Fisher instead of the GGN"),
            ("hessian", "the Hessian instead of the GGN")],
    "hessian": [("ggn", "the GGN / Fisher instead of the Hessian (second-order term of the "
                        "network dropped)")],
    "fisher_diagonal": [("empirical_fisher_diagonal", "the empirical Fisher's diagonal "
                                                      "(data labels) instead of the true "
                                                      "Fisher's")],
    "empirical_fisher_diagonal": [("fisher_diagonal", "the true Fisher's diagonal instead "
                                                      "of the empirical one")],
}


def _computed_alternatives(fixture: Fixture, key: str) -> list[tuple[np.ndarray, str]]:
    """Mistaken variants of ``key`` computed on the fixture (Fisher-like arrays only)."""
    net, theta, X, y = fixture.net, fixture.theta, fixture.X, fixture.y
    out = []
    if key in ("true_fisher", "fisher_diagonal"):
        diag = key == "fisher_diagonal"
        out.append((square_of_mean_gradient(net, theta, X, y, diagonal=diag),
                    "the square of the batch-mean gradient (g g^T, diagonal g^2) instead of "
                    "the mean of per-sample squared scores"))
        arg = (fisher_diagonal(net, theta, X, None, "argmax") if diag
               else curvature_matrix(net, theta, X, None, "argmax"))
        out.append((arg, "labels taken by argmax of the prediction instead of sampled or "
                         "enumerated from the model"))
    if key == "fisher_eigenvalues":
        out.append((scipy.linalg.eigvalsh(fixture["empirical_fisher"])[::-1],
                    "eigenvalues of the empirical Fisher instead of the true Fisher"))
        out.append((scipy.linalg.eigvalsh(fixture["true_fisher"]),
                    "eigenvalues in ascending order (the fixture stores them descending)"))
    if key == "ngd_step":
        P = fixture.P
        lam = fixture.damping
        out.append((scipy.linalg.solve(fixture["empirical_fisher"] + lam * np.eye(P),
                                       fixture["gradient"], assume_a="pos"),
                    "the empirical Fisher used in the natural-gradient step"))
        out.append((scipy.linalg.solve(fixture.N * fixture["true_fisher"] + lam * np.eye(P),
                                       fixture["gradient"], assume_a="pos"),
                    "the sum-reduced Fisher N F with the mean gradient"))
    if key.startswith("kfac/"):
        _, fisher, bias, fac = key.split("/")
        other = "empirical" if fisher == "true" else "true"
        alt = f"kfac/{other}/{bias}/{fac}"
        if alt in fixture.arrays:
            out.append((fixture[alt], f"the K-FAC factor of the {other} Fisher instead of "
                                      f"the {fisher} one"))
    return out


def likely_causes(fixture: Fixture, key: str, candidate, *, layout: str = "pytorch",
                  cause_tol: float = CAUSE_TOL) -> list[str]:
    """Recognised explanations of why ``candidate`` differs from ``fixture[key]``, best first.

    Each hypothesis transforms the reference (transpose, another parameter order, a known
    factor, a mistaken variant computed on the fixture) and is reported when the candidate
    matches it to ``cause_tol`` (relative Frobenius distance). If nothing matches, a best
    scalar fit ``candidate ~ alpha * reference`` is reported when it explains the candidate.
    """
    ref = fixture[key]
    cand = np.asarray(candidate, dtype=np.float64)
    info = fixture.array_info(key)
    found: list[tuple[float, str]] = []
    if cand.shape != ref.shape:
        if cand.ndim == 2 and cand.shape == ref.shape[::-1]:
            d = _rel_dist(cand.T, ref)
            if d <= cause_tol:
                found.append((d, "transposed layout: the candidate is stored as (in, out) "
                                 "(JAX/flax kernel or x @ W code); minifim and PyTorch use "
                                 "(out, in)"))
        if cand.size == ref.size and not found:
            found.append((math.inf, f"same number of entries in another shape {cand.shape}: "
                                    f"reshape to {ref.shape} (check row- vs column-major)"))
        return [c for _, c in sorted(found, key=lambda t: t[0])]
    if cand.ndim == 2 and cand.shape[0] == cand.shape[1] and info.get("role") == "weight":
        d = _rel_dist(cand.T, ref)
        if d <= cause_tol:
            found.append((d, "transposed layout: the weight is stored as (in, out); minifim "
                             "and PyTorch use (out, in)"))
    axes = list(info.get("param_axes", []))
    if axes:
        net = fixture.net
        given = from_minifim_layout(net, cand, axes, layout)  # the candidate as it was passed
        for other in LAYOUTS:
            if other == layout:
                continue
            d = _rel_dist(given, from_minifim_layout(net, ref, axes, other))
            if d > cause_tol:
                continue
            if other == "pytorch":
                what = (f"the candidate is in minifim's PyTorch order (W (out, in), then b); "
                        f"drop layout={layout!r}")
            elif other == "in-out":
                what = ("transposed weight layout: the weights are flattened as (in, out) "
                        "(x @ W code); minifim and PyTorch flatten (out, in); pass "
                        "layout='in-out'")
            else:
                what = ("a different parameter order: the candidate is in JAX ravel_pytree "
                        "order (bias before kernel (in, out), layers sorted by name); pass "
                        "layout='jax'")
            found.append((d, what))
    for factor, what in _known_factors(fixture, key):
        d = _rel_dist(cand, factor * ref)
        if d <= cause_tol:
            found.append((d, f"{what} [candidate = {factor:.6g} x reference]"))
    for alt_key, what in _ALTERNATIVES.get(key, []):
        d = _rel_dist(cand, fixture[alt_key])
        if d <= cause_tol:
            found.append((d, what))
    if not found:
        for alt, what in _computed_alternatives(fixture, key):
            if alt.shape == cand.shape:
                d = _rel_dist(cand, alt)
                if d <= cause_tol:
                    found.append((d, what))
    if not found:
        rr = float(np.vdot(ref, ref))
        if rr > 0:
            alpha = float(np.vdot(cand, ref)) / rr
            d = _rel_dist(cand, alpha * ref)
            if d <= cause_tol and abs(alpha - 1) > 10 * cause_tol:
                found.append((d, f"a missing or extra scale factor: candidate = {alpha:.6g} "
                                 "x reference"))
    return [c for _, c in sorted(found, key=lambda t: t[0])]


# --- checking a whole candidate file ------------------------------------------------------------
@dataclass
class CheckResult:
    """Every comparison of a candidate file against a fixture, plus the unmatched keys."""

    fixture: str
    candidate: str
    rtol: float
    atol: float | None
    layout: str
    reduction: str
    comparisons: list
    unmatched: list
    diagnoses: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """All compared arrays pass, at least one was compared, no key is unmatched, and
        every diagnosis found the true Fisher."""
        return (bool(self.comparisons) or bool(self.diagnoses)) and not self.unmatched and all(
            c.passed for c in self.comparisons) and all(d.ok for d in self.diagnoses)

    def to_dict(self) -> dict:
        return {"fixture": self.fixture, "candidate": self.candidate, "passed": self.passed,
                "rtol": self.rtol, "atol": self.atol, "layout": self.layout,
                "reduction": self.reduction,
                "criterion": "|c - r| <= atol + rtol |r| entrywise; atol = rtol * max|r| "
                             "per array unless given",
                "comparisons": [c.to_dict() for c in self.comparisons],
                "unmatched": self.unmatched,
                "diagnoses": [d.to_dict() for d in self.diagnoses]}

    def to_json(self) -> str:
        return json.dumps(_jsonable(self.to_dict()), indent=1, allow_nan=False)

    def table(self) -> str:
        """A plain-text table: one row per array, then the causes of the failures."""
        atol = "rtol * max|r| per array" if self.atol is None else f"{self.atol:g}"
        lines = [f"fixture   {self.fixture}", f"candidate {self.candidate}",
                 f"criterion |c - r| <= atol + rtol |r| entrywise, rtol = {self.rtol:g}, "
                 f"atol = {atol}; layout {self.layout}, reduction {self.reduction}", ""]
        headers = ["array", "shape", "max abs err", "max rel err", "worst entry", "result"]
        rows = []
        for c in self.comparisons:
            name = c.name if c.candidate_name == c.name else f"{c.candidate_name} -> {c.name}"
            if c.max_abs_err is None:
                rows.append([name, f"{c.candidate_shape} vs {c.shape}", "-", "-", "-",
                             "FAIL (shape)"])
                continue
            rows.append([name, "x".join(map(str, c.shape)) or "()", f"{c.max_abs_err:.2e}",
                         f"{c.max_rel_err:.2e}", c.worst_label if c.max_abs_err else "-",
                         "pass" if c.passed else "FAIL"])
        for key in self.unmatched:
            rows.append([key, "-", "-", "-", "-", "FAIL (unmatched)"])
        if rows:
            widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(6)]
            fmt = "  ".join(f"{{:<{w}}}" for w in widths)
            lines.append(fmt.format(*headers))
            lines.append(fmt.format(*("-" * w for w in widths)))
            lines += [fmt.format(*map(str, r)) for r in rows]
        details = [c for c in self.comparisons if not c.passed or c.note]
        if details or self.unmatched:
            lines.append("")
            lines += [("FAIL " if not c.passed else "note ") + c.message() for c in details]
            lines += [f"FAIL {k!r}: no array of that name or alias in the fixture; name it "
                      "with --map CANDIDATE=FIXTURE (python: mapping=) or leave it out with "
                      "--keys" for k in self.unmatched]
        for d in self.diagnoses:
            lines.append("")
            lines.append(d.report())
        n_fail = sum(not c.passed for c in self.comparisons) + len(self.unmatched) + sum(
            not d.ok for d in self.diagnoses)
        lines.append("")
        lines.append("PASSED" if self.passed else
                     (f"FAILED: {n_fail} problem(s)" if n_fail else "FAILED: nothing compared"))
        return "\n".join(lines)


def _jsonable(obj):
    """Plain JSON types; non-finite floats become the strings "inf", "-inf", "nan"."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def _finite_or_str(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def check(fixture, candidate: Mapping[str, np.ndarray], *, mapping: Mapping[str, str] | None
          = None, layout: str = "pytorch", reduction: str = "mean", rtol: float = DEFAULT_RTOL,
          atol: float | None = None, keys: Sequence[str] | None = None,
          diagnose_keys: Sequence[str] = (), mc_samples: int | None = None,
          candidate_label: str = "<arrays>") -> CheckResult:
    """Compare every array of ``candidate`` with the fixture's array of the same meaning.

    Parameters
    ----------
    fixture : Fixture or path
    candidate : mapping of str -> ndarray
        E.g. ``numpy.load("candidate.npz")``. Keys are matched by ``mapping`` (candidate key
        -> fixture key), then exactly, then as a state-dict key (``"0.weight"``), then through
        :data:`ALIASES` (``"F"``, ``"grad"``, ...).
    layout : {"pytorch", "in-out", "jax"}
    reduction : {"mean", "sum"}
    rtol, atol : tolerance (see the module docstring)
    keys : only these candidate keys (default: all)
    diagnose_keys : candidate keys holding a Fisher (dense or diagonal) to :func:`diagnose`
    mc_samples : ``k`` of a Monte-Carlo candidate (for the diagnosis)

    Returns
    -------
    CheckResult
        ``.passed``, ``.table()``, ``.to_json()``.
    """
    fx = load_fixture(fixture)
    check_choice(layout, "layout", LAYOUTS)
    check_choice(reduction, "reduction", REDUCTIONS)
    rtol = check_nonnegative(rtol, "rtol")
    mapping = dict(mapping or {})
    for cand_key, ref_key in mapping.items():
        if ref_key not in fx.arrays:
            raise ValueError(f"mapping: {cand_key!r} -> {ref_key!r}, but the fixture has no "
                             f"array {ref_key!r}; available: {', '.join(fx.keys())}")
    if not isinstance(candidate, Mapping) and not hasattr(candidate, "files"):
        raise TypeError(f"candidate: expected a mapping of name -> array, received "
                        f"{type(candidate).__name__}")
    names = list(candidate.files if hasattr(candidate, "files") else candidate)
    if keys is not None:
        missing = [k for k in keys if k not in names]
        if missing:
            raise ValueError(f"keys: {missing} not in the candidate; it holds {names}")
        names = list(keys)
    diagnose_keys = list(diagnose_keys)
    for k in diagnose_keys:
        if k not in names and k not in candidate:
            raise ValueError(f"diagnose: {k!r} is not in the candidate; it holds {names}")
    comparisons, unmatched = [], []
    for cand_key in names:
        ref_key = _resolve_key(fx, cand_key, mapping)
        if ref_key is None:
            if cand_key not in diagnose_keys:
                unmatched.append(cand_key)
            continue
        arr, dtype = _candidate_array(candidate[cand_key], f"candidate[{cand_key!r}]")
        converted, note = _convert(fx, ref_key, arr, layout, reduction) if arr.shape in (
            fx[ref_key].shape, fx[ref_key].shape[::-1]) else (arr, "")
        comp = compare(fx[ref_key], converted, name=ref_key, rtol=rtol, atol=atol, fixture=fx,
                       candidate_name=cand_key,
                       param_axes=fx.array_info(ref_key).get("param_axes", []))
        comp.note = _join_notes(_dtype_note(dtype, rtol), note)
        if not comp.passed and comp.max_abs_err != math.inf:
            comp.causes = likely_causes(fx, ref_key, converted, layout=layout)
        comparisons.append(comp)
    diagnoses = [diagnose(fx, candidate[k], n_samples=mc_samples, layout=layout,
                          reduction=reduction, name=k) for k in diagnose_keys]
    return CheckResult(fx.path or fx.name, candidate_label, rtol, atol, layout, reduction,
                       comparisons, unmatched, diagnoses)


def assert_matches(fixture, name: str, array, rtol: float = DEFAULT_RTOL,
                   atol: float | None = None, *, layout: str = "pytorch",
                   reduction: str = "mean") -> Comparison:
    """Assert that ``array`` equals the fixture's array ``name`` to the tolerance.

    For other projects' test suites: ``minifim.assert_matches("fixture.npz", "true_fisher",
    my_fisher)``. On failure, raises ``AssertionError`` naming the worst entry and the
    likely cause when it is recognisable (transposed layout, another parameter order, sum
    vs mean, empirical instead of true Fisher, the factor 2 of the MSE, argmax labels, the
    square of the batch-mean gradient).

    Parameters
    ----------
    fixture : Fixture or path
    name : str
        A fixture array name (``fixture.keys()``), an alias (``"F"``, ``"grad"``) or a
        state-dict key (``"0.weight"``).
    array : array_like
        The candidate (a ``torch.Tensor`` is accepted: ``.detach().cpu().numpy()``).
    rtol, atol : see the module docstring (``atol=None``: ``rtol * max|reference|``)
    layout : {"pytorch", "in-out", "jax"}
    reduction : {"mean", "sum"}

    Returns
    -------
    Comparison
        When it passes.
    """
    fx = load_fixture(fixture)
    check_choice(layout, "layout", LAYOUTS)
    check_choice(reduction, "reduction", REDUCTIONS)
    if not isinstance(name, str):
        raise TypeError(f"name: expected a fixture array name, received {type(name).__name__}")
    key = _resolve_key(fx, name, {})
    if key is None:
        raise KeyError(f"name: {name!r} is not an array of fixture {fx.name!r}; available: "
                       f"{', '.join(fx.keys())}")
    arr, dtype = _candidate_array(array, f"array ({name})")
    if arr.shape in (fx[key].shape, fx[key].shape[::-1]):
        arr, note = _convert(fx, key, arr, layout, reduction)
    else:
        note = ""
    comp = compare(fx[key], arr, name=key, rtol=rtol, atol=atol, fixture=fx,
                   candidate_name=name, param_axes=fx.array_info(key).get("param_axes", []))
    comp.note = _join_notes(_dtype_note(dtype, comp.rtol), note)
    if not comp.passed:
        if comp.max_abs_err != math.inf:
            comp.causes = likely_causes(fx, key, arr, layout=layout)
        raise AssertionError(f"minifim fixture {fx.name!r}: " + comp.message())
    return comp


# --- exact output-space outcomes and the Monte-Carlo error ---------------------------------------
def output_outcomes(net, theta, X) -> tuple[np.ndarray, np.ndarray]:
    """The output distribution of every input as weighted outcomes: ``(w, U)``.

    ``w: (N, O)`` are weights summing to 1 per input and ``U: (N, O, P)`` the scores
    ``grad_theta log p(y_o | x_n)`` of the outcomes, such that
    ``E_{y ~ p(y | x_n)}[h(s)] = sum_o w[n, o] h(U[n, o])`` exactly: for every ``h`` when the
    labels are discrete (categorical: the ``C`` classes; Bernoulli: the ``2^C`` label
    vectors), and for polynomials of degree <= 9 per output (5-point Gauss-Hermite rule per
    output, ``5^C`` nodes) for the Gaussian, enough for the fourth moments of the Fisher
    estimator used by :func:`mc_error_moments`.
    """
    check_net(net)
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    lik = net.likelihood
    N, C = X.shape[0], net.output_dim
    cache = forward_cache(net, theta, X)
    F = cache.outputs
    if lik.name == "categorical":
        O = C
        w = lik.mean(F)
        labels = np.eye(C)
        seeds = labels[None, :, :] - w[:, None, :]
    elif lik.name == "bernoulli":
        O = 2**C
        _check_outcomes(O, f"2^C = 2^{C} Bernoulli label vectors")
        Y = ((np.arange(O)[:, None] >> np.arange(C)[None, :]) & 1).astype(np.float64)
        logp1 = -np.logaddexp(0.0, -F)  # log sigmoid(f)
        logp0 = -np.logaddexp(0.0, F)
        w = np.exp(logp1 @ Y.T + logp0 @ (1 - Y).T)  # (N, O): prod_c p_c^y_c (1 - p_c)^(1-y_c)
        seeds = Y[None, :, :] - lik.mean(F)[:, None, :]
    else:
        from numpy.polynomial.hermite_e import hermegauss
        O = 5**C
        _check_outcomes(O, f"5^C = 5^{C} Gauss-Hermite nodes")
        x, wx = hermegauss(5)
        wx = wx / wx.sum()
        grids = np.meshgrid(*([x] * C), indexing="ij")
        nodes = np.stack([g.ravel() for g in grids], axis=1)  # (O, C)
        wgrid = np.prod(np.meshgrid(*([wx] * C), indexing="ij"), axis=0).ravel()
        w = np.broadcast_to(wgrid, (N, O)).copy()
        seeds = np.broadcast_to(nodes / lik.sigma, (N, O, C)).copy()
    require_memory(8 * N * O * net.num_params, f"outcome scores (N, O, P) = ({N}, {O}, "
                   f"{net.num_params}) float64", "fewer samples or a diagonal candidate")
    U = expand_gradients(net, cache.acts, backprop_seeds(net, cache, seeds))
    return w, U


def _check_outcomes(O: int, what: str) -> None:
    if O > MAX_OUTCOMES:
        raise ValueError(f"the output distribution has {what} = {O} outcomes, over the "
                         f"enumeration limit {MAX_OUTCOMES}; the exact Monte-Carlo band needs "
                         "fewer outputs")


def mc_error_moments(net, theta, X, n_samples: int, *, diagonal: bool = False
                     ) -> tuple[float, float]:
    """Exact mean and variance of ``D = |F_mc - F|_F^2`` for ``k = n_samples`` labels per input.

    ``F_mc = 1/N sum_n 1/k sum_j s(y_nj) s(y_nj)^T`` (or its diagonal) with independent
    ``y_nj ~ p_theta(y | x_n)``, ``F`` the true Fisher (or its diagonal).

    Notes
    -----
    With ``x_nj = phi(s(y_nj)) - E phi`` (``phi(s) = s s^T`` or ``s * s``), independent and
    zero-mean, ``F_mc - F = 1/(N k) sum_{n,j} x_nj``, so with ``e_n = E|x_n|^2``,
    ``f_n = E|x_n|^4`` and ``t_nm = E[(x_n . x'_m)^2]`` (independent copies):
    ``E D = sum_n e_n / (N^2 k)`` and
    ``Var D = [k sum f_n - k sum e_n^2 + 2 k^2 sum_{n,m} t_nm - 2 k sum_n t_nn] / (N k)^4``.
    Every moment is a finite sum over the outcomes of :func:`output_outcomes`, through the
    Gram matrix ``<phi(s_no), phi(s_mo')>`` = ``(s_no . s_mo')^2`` (dense) or
    ``(s_no^2) . (s_mo'^2)`` (diagonal).
    """
    check_net(net)
    k = check_int(n_samples, "n_samples", 1)
    w, U = output_outcomes(net, theta, X)
    N, O, P = U.shape
    require_memory(3 * 8 * (N * O) ** 2, f"the outcome Gram matrices (N O)^2 = ({N * O})^2 "
                   "float64, three of them", "fewer samples in the fixture (the band is exact "
                   "but needs all pairs of outcomes)")
    flat = U.reshape(N * O, P)
    if diagonal:
        Q = flat * flat
        K = Q @ Q.T
    else:
        K = (flat @ flat.T) ** 2
    K = K.reshape(N, O, N, O)
    # centre both arguments: Kc = K - E_o K - E_o' K + E_o E_o' K
    first = np.einsum("no,nomq->nmq", w, K)[:, None, :, :]    # E over the first outcome
    second = np.einsum("nomq,mq->nom", K, w)[:, :, :, None]   # E over the second outcome
    both = np.einsum("no,nomq,mq->nm", w, K, w)[:, None, :, None]
    Kc = K - first - second + both
    idx = np.arange(N)
    diag_blocks = Kc[idx, :, idx, :]                           # (N, O, O)
    self_sq = np.einsum("noo->no", diag_blocks)                # |x_no|^2
    e = np.einsum("no,no->n", w, self_sq)
    f = np.einsum("no,no->n", w, self_sq**2)
    t = np.einsum("no,nomq,mq->nm", w, Kc**2, w)
    Nk = float(N * k)
    mean = float(e.sum()) / (N * N * k)
    var = (k * f.sum() - k * np.sum(e * e) + 2 * k * k * t.sum() - 2 * k * np.trace(t)) / Nk**4
    return mean, float(max(var, 0.0))


# --- diagnosis ----------------------------------------------------------------------------------
@dataclass
class Diagnosis:
    """Which Fisher variant a candidate is, with the distances to every variant.

    Attributes
    ----------
    name : str
        The candidate's name.
    kind : {"dense", "diagonal"}
    distances : list of (variant, description, relative distance), closest first
        Relative Frobenius distance ``|c - V| / |V|``.
    verdict : str
        One sentence.
    closest : str
        The closest variant's name.
    ok : bool
        The candidate is the true Fisher (to ``match_tol``), or a Monte-Carlo estimate of it
        whose error is within the sampling band for its ``k``.
    monte_carlo : dict or None
        ``k``, the exact expected squared error and its standard deviation, the observed
        squared error, its z-score, ``k_eff`` and whether it is within the band.
    scale : float
        Best scalar fit ``alpha`` of ``c ~ alpha F``.
    note : str
        How the candidate was read (e.g. a float32 candidate compared in float64).
    """

    name: str
    kind: str
    distances: list
    verdict: str
    closest: str
    ok: bool
    monte_carlo: dict | None = None
    scale: float | None = None
    note: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "verdict": self.verdict,
                "closest": self.closest, "ok": self.ok, "scale": self.scale,
                "distances": [{"variant": v, "description": d, "relative_distance":
                               _finite_or_str(x)} for v, d, x in self.distances],
                "monte_carlo": self.monte_carlo, "note": self.note}

    def report(self) -> str:
        lines = [f"diagnosis of {self.name!r} ({self.kind} Fisher candidate): {self.verdict}"]
        if self.note:
            lines.append(f"  note: {self.note}")
        if not self.distances:
            return "\n".join(lines)
        lines.append("  relative distance |c - V| / |V| to each variant computed exactly by "
                     "minifim:")
        width = max(len(v) for v, _, _ in self.distances)
        for v, desc, x in self.distances:
            lines.append(f"    {v:<{width}}  {x:9.3e}  {desc}")
        if self.scale is not None:
            lines.append(f"  best scalar fit: candidate ~ {self.scale:.6g} x true Fisher")
        if self.monte_carlo:
            mc = self.monte_carlo
            if mc.get("k") is not None:
                lines.append(
                    f"  Monte-Carlo check (k = {mc['k']}): |c - F|^2 = {mc['observed']:.3e}; "
                    f"expected {mc['expected']:.3e} +- {mc['std']:.3e} for a k-sample "
                    f"estimate (z = {mc['z']:.2f}, band z <= {mc['z_band']:g}): "
                    + ("within the band" if mc["within_band"] else "OUTSIDE the band"))
            if self.distances[0][2] > MATCH_TOL and not isinstance(mc["k_eff"], str):
                lines.append(f"  error equivalent to k_eff = {mc['k_eff']:.3g} Monte-Carlo "
                             "samples per input (if it were an unbiased Monte-Carlo estimate)")
        return "\n".join(lines)


def fisher_variants(fixture, *, diagonal: bool = False) -> list[tuple[str, str, np.ndarray]]:
    """The Fisher and its common mistaken variants, computed exactly on the fixture.

    Returns ``[(name, description, matrix), ...]`` with dense ``(P, P)`` matrices, or their
    diagonals ``(P,)`` with ``diagonal=True``. Variants equal to an earlier one (e.g. the
    Gaussian's ``sigma`` variants when ``sigma = 1``) are dropped.
    """
    fx = load_fixture(fixture)
    net, theta, X, y, N = fx.net, fx.theta, fx.X, fx.y, fx.N
    sigma = float(fx.manifest["model"].get("sigma", 1.0))

    def mat(kind):
        if diagonal:
            return fisher_diagonal(net, theta, X, y if kind == "empirical" else None, kind)
        return curvature_matrix(net, theta, X, y if kind == "empirical" else None, kind)

    F = mat("true")
    EF = mat("empirical")
    H = fx["hessian"]
    out = [
        ("true", "true Fisher, mean over samples (the reference)", F),
        ("empirical", "empirical Fisher: scores at the data labels", EF),
        ("square-of-mean-gradient", ("g^2" if diagonal else "g g^T") + " with g the "
                                    "batch-mean gradient (squared after averaging)",
         square_of_mean_gradient(net, theta, X, y, diagonal=diagonal)),
        ("argmax", "labels by argmax of the prediction (not sampled/enumerated)",
         mat("argmax")),
        ("true-sum", f"true Fisher summed over the N = {N} samples (factor N)", N * F),
        ("empirical-sum", "empirical Fisher summed over samples", N * EF),
        ("square-of-sum-gradient", ("G^2" if diagonal else "G G^T") + " with G the "
                                   "batch-sum gradient",
         N * N * square_of_mean_gradient(net, theta, X, y, diagonal=diagonal)),
        ("true-in-out-layout", "true Fisher with weights flattened as (in, out) (transposed "
                               "layout)",
         from_minifim_layout(net, F, [0] if diagonal else [0, 1], "in-out")),
        ("true-jax-layout", "true Fisher in JAX ravel_pytree order (bias first, kernel "
                            "(in, out))",
         from_minifim_layout(net, F, [0] if diagonal else [0, 1], "jax")),
        ("hessian", "Hessian of the mean NLL", np.diag(H).copy() if diagonal else H),
    ]
    if net.likelihood.name == "gaussian":
        out += [("unit-sigma", f"J^T J: sigma ignored (sigma = {sigma:g})", sigma**2 * F),
                ("mse-ggn", "Hessian / GGN of the MSE |y - f|^2: 2 J^T J", 2 * sigma**2 * F),
                ("mse-squared-gradients", "squared gradients of the MSE |y - f|^2: "
                                          "4 sigma^2 J^T J", 4 * sigma**4 * F)]
    kept = []
    for name, desc, M in out:
        if any(M.shape == K.shape and np.array_equal(M, K) for _, _, K in kept) or (
                name != "true" and _rel_dist(M, F) < 1e-14):
            continue
        kept.append((name, desc, M))
    return kept


def diagnose(fixture, candidate, *, n_samples: int | None = None, layout: str = "pytorch",
             reduction: str = "mean", match_tol: float = MATCH_TOL, z_band: float = 3.0,
             name: str = "candidate") -> Diagnosis:
    """Say which Fisher variant ``candidate`` is, with the distance to each.

    Parameters
    ----------
    fixture : Fixture or path
    candidate : ndarray, shape (P, P) or (P,)
        A dense Fisher or its diagonal, in ``layout`` and ``reduction`` (converted first).
    n_samples : int or None
        ``k`` if the candidate is a Monte-Carlo Fisher with ``k`` sampled labels per input.
    match_tol : float
        A variant within this relative Frobenius distance is a match.
    z_band : float
        Half-width of the sampling band in standard deviations of ``|F_mc - F|^2`` above its
        exact mean (Cantelli: a correct ``k``-sample estimate falls outside ``z = 3`` with
        probability at most 10%).

    Returns
    -------
    Diagnosis

    Notes
    -----
    The variants are those of :func:`fisher_variants`. For a Monte-Carlo candidate, the
    observed ``D = |c - F|^2`` is compared with the exact ``E D`` and ``sd D`` of
    :func:`mc_error_moments`; the same test is applied to ``c / k``, ``c / N`` and
    ``c / (N k)`` to recognise an estimate summed instead of averaged. ``k_eff = E D(k=1) /
    D`` is the number of samples per input a correct estimate with this error would use.
    """
    fx = load_fixture(fixture)
    check_choice(layout, "layout", LAYOUTS)
    check_choice(reduction, "reduction", REDUCTIONS)
    c, dtype = _candidate_array(candidate, f"candidate ({name})")
    note = _dtype_note(dtype, math.inf)
    P = fx.P
    if c.shape == (P, P):
        diagonal, axes = False, [0, 1]
    elif c.shape == (P,):
        diagonal, axes = True, [0]
    else:
        raise ValueError(f"candidate ({name}): expected a dense Fisher of shape ({P}, {P}) or "
                         f"a diagonal of shape ({P},), received shape {c.shape}")
    if n_samples is not None:
        n_samples = check_int(n_samples, "n_samples", 1)
    kind = "diagonal" if diagonal else "dense"
    bad = np.argwhere(~np.isfinite(c))
    if len(bad):  # a failure naming the entries (in the candidate's own layout)
        items = []
        perm = layout_permutation(fx.net, layout)  # candidate[k] is parameter perm[k]
        for index in bad[:MAX_LISTED]:
            labels = [param_label(fx.net, int(perm[i])) for i in index]
            items.append(f"{labels[0] if diagonal else '(' + ', '.join(labels) + ')'} = "
                         f"{float(c[tuple(index)])!r}")
        more = f", ... ({len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
        verdict = (f"the candidate holds {len(bad)} NaN/Inf entr"
                   f"{'y' if len(bad) == 1 else 'ies'} ({', '.join(items)}{more}): not a "
                   "Fisher; no variant was compared")
        return Diagnosis(name, kind, [], verdict, "", False, None, None, note)
    c = to_minifim_layout(fx.net, c, axes, layout)
    if reduction == "sum":
        c = c / fx.N
    variants = fisher_variants(fx, diagonal=diagonal)
    distances = sorted(((v, d, _rel_dist(c, M)) for v, d, M in variants),
                       key=lambda t: t[2])
    F = variants[0][2]
    ff = float(np.vdot(F, F))
    scale = float(np.vdot(c, F)) / ff if ff > 0 else None
    closest, _, best = distances[0]

    net, theta, X = fx.net, fx.theta, fx.X
    mc_skipped = ""
    try:
        e1, _ = mc_error_moments(net, theta, X, 1, diagonal=diagonal)
    except (ValueError, MemoryError) as err:  # too many outcomes, or over the memory budget
        e1, mc_skipped = None, str(err)
    observed = float(np.sum((c - F) ** 2))
    mc = None
    if e1 is not None:
        mc = {"k": n_samples, "k_eff": (e1 / observed) if observed > 0 else math.inf,
              "observed": observed}
    mc_ok, mc_text = False, ""
    if n_samples is not None and e1 is not None:
        mean, var = mc_error_moments(net, theta, X, n_samples, diagonal=diagonal)
        std = math.sqrt(var)
        z = (observed - mean) / std if std > 0 else (0.0 if observed == mean else math.inf)
        mc.update({"expected": mean, "std": std, "z": z, "z_band": z_band,
                   "within_band": bool(z <= z_band)})
        mc_ok = z <= z_band
        if not mc_ok:
            N, k = fx.N, n_samples
            fits = []
            for factor, what in ((k, f"summed over the k = {k} samples instead of averaged"),
                                 (N, f"summed over the N = {N} inputs instead of averaged"),
                                 (N * k, "summed over inputs and samples")):
                D = float(np.sum((c / factor - F) ** 2))
                zf = (D - mean) / std if std > 0 else math.inf
                if factor > 1 and zf <= z_band:
                    fits.append((abs(zf), factor, what, D, zf))
            if fits:  # the rescaling that fits best (ambiguous when k is close to N)
                _, factor, what, D, zf = min(fits)
                mc["rescaled"] = {"factor": factor, "observed": D, "z": zf}
                mc_text = (f"a Monte-Carlo Fisher {what} (candidate / {factor} is within "
                           f"the sampling band, z = {zf:.2f})")
        mc["z"] = _finite_or_str(mc["z"])
    if mc is not None:
        mc["k_eff"] = _finite_or_str(mc["k_eff"])

    desc = dict((v, d) for v, d, _ in distances)
    if best <= match_tol:
        ok = closest == "true"
        verdict = (f"the candidate is the {'exact ' if ok else ''}{closest!r} variant: "
                   f"{desc[closest]} (relative distance {best:.2e})")
        if not ok:
            true_dist = dict((v, x) for v, _, x in distances)["true"]
            verdict += f"; the true Fisher is at {true_dist:.3g}"
    elif mc_ok:
        ok = True
        verdict = (f"consistent with a Monte-Carlo estimate of the true Fisher with k = "
                   f"{n_samples} samples per input (|c - F|^2 = {observed:.3e}, z = "
                   f"{mc['z']:.2f} <= {z_band:g}); no exact variant matches")
    elif mc_text:
        ok = False
        verdict = f"the candidate looks like {mc_text}"
    else:
        ok = False
        verdict = (f"no variant matches (closest: {closest!r}, {desc[closest]}, at relative "
                   f"distance {best:.3g})")
        if n_samples is not None and mc is not None and "z" in mc:
            verdict += (f"; as a Monte-Carlo estimate with k = {n_samples} its error is "
                        f"{observed / mc['expected']:.3g} x the expected one (z = "
                        f"{mc['z'] if isinstance(mc['z'], str) else round(mc['z'], 2)}): "
                        "not explained by sampling")
        elif n_samples is not None and mc_skipped:
            verdict += f"; the Monte-Carlo band was not computed ({mc_skipped})"
    return Diagnosis(name, kind, distances, verdict, closest, ok, mc, scale, note)
