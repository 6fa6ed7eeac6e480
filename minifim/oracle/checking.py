"""Checking a candidate against a fixture: a whole file (:func:`check`) or one array
(:func:`assert_matches`), through the same per-key route
resolve (:mod:`~minifim.oracle.keys`) -> convert -> compare
(:mod:`~minifim.oracle.comparison`) -> likely causes (:mod:`~minifim.oracle.causes`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import check_choice, check_nonnegative
from ..geometry.kronecker import KFACFactors
from ..memory import require_memory
from .causes import likely_causes
from .comparison import (
    DEFAULT_RTOL,
    Comparison,
    candidate_array,
    compare,
    dtype_note,
    join_notes,
)
from .diagnosis import DIAGNOSED_KEYS, diagnose, kfac_band
from .fixtures import Fixture, FixtureLike, load_fixture
from .keys import LOSSES, convert, resolve_conventions, resolve_key
from .layouts import LAYOUTS

__all__ = ["CheckResult", "check", "assert_matches", "compare_key", "compare_kfac_whole"]


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
    loss: str = "nll"

    @property
    def passed(self) -> bool:
        """All compared arrays pass, at least one was compared, no key is unmatched, and
        every diagnosis found the true Fisher."""
        return (
            (bool(self.comparisons) or bool(self.diagnoses))
            and not self.unmatched
            and all(c.passed for c in self.comparisons)
            and all(d.ok for d in self.diagnoses)
        )

    def to_dict(self) -> dict:
        return {
            "fixture": self.fixture,
            "candidate": self.candidate,
            "passed": self.passed,
            "rtol": self.rtol,
            "atol": self.atol,
            "layout": self.layout,
            "reduction": self.reduction,
            "loss": self.loss,
            "criterion": "|c - r| <= atol + rtol |r| entrywise; atol = rtol * max|r| "
            "per array unless given",
            "comparisons": [c.to_dict() for c in self.comparisons],
            "unmatched": self.unmatched,
            "diagnoses": [d.to_dict() for d in self.diagnoses],
        }

    def to_json(self) -> str:
        return json.dumps(_jsonable(self.to_dict()), indent=1, allow_nan=False)

    def table(self) -> str:
        """A plain-text table: one row per array, then the causes of the failures."""
        atol = "rtol * max|r| per array" if self.atol is None else f"{self.atol:g}"
        lines = [
            f"fixture   {self.fixture}",
            f"candidate {self.candidate}",
            f"criterion |c - r| <= atol + rtol |r| entrywise, rtol = {self.rtol:g}, "
            f"atol = {atol}; layout {self.layout}, reduction {self.reduction}, loss {self.loss}",
            "",
        ]
        headers = ["array", "shape", "max abs err", "max rel err", "worst entry", "result"]
        rows = []
        for c in self.comparisons:
            name = c.name if c.candidate_name == c.name else f"{c.candidate_name} -> {c.name}"
            if c.max_abs_err is None:
                rows.append(
                    [name, f"{c.candidate_shape} vs {c.shape}", "-", "-", "-", "FAIL (shape)"]
                )
                continue
            rows.append(
                [
                    name,
                    "x".join(map(str, c.shape)) or "()",
                    f"{c.max_abs_err:.2e}",
                    f"{c.max_rel_err:.2e}",
                    c.worst_label if c.max_abs_err else "-",
                    "pass" if c.passed else "FAIL",
                ]
            )
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
            for c in details:
                lines.append(("FAIL " if not c.passed else "note ") + c.message())
                if c.fix:
                    lines.append("     would pass with: " + _flags(c.fix))
            lines += [
                f"FAIL {k!r}: no array of that name or alias in the fixture; name it "
                "with --map CANDIDATE=FIXTURE (python: mapping=) or leave it out with "
                "--keys"
                for k in self.unmatched
            ]
        for d in self.diagnoses:
            lines.append("")
            lines.append(d.report())
        n_fail = (
            sum(not c.passed for c in self.comparisons)
            + len(self.unmatched)
            + sum(not d.ok for d in self.diagnoses)
        )
        lines.append("")
        lines.append(
            "PASSED"
            if self.passed
            else (f"FAILED: {n_fail} problem(s)" if n_fail else "FAILED: nothing compared")
        )
        return "\n".join(lines)


def _flags(fix: Mapping[str, str]) -> str:
    """``--loss mse-mean --layout in-out``: the command-line options of a fix."""
    return " ".join(f"--{k} {v}" for k, v in fix.items())


def _jsonable(obj: Any) -> Any:
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


def compare_key(
    fixture: Fixture,
    key: str,
    array: Any,
    candidate_name: str,
    what: str,
    *,
    layout: str,
    reduction: str,
    rtol: float,
    atol: float | None,
    loss: str = "nll",
) -> Comparison:
    """Compare one candidate array with fixture array ``key``: convert, compare, explain.

    The candidate (``what`` names it in errors) is read as float64, brought to the fixture's
    conventions by :func:`~minifim.oracle.keys.convert` when its shape is the reference's or
    its transpose, compared entry by entry (:func:`~minifim.oracle.comparison.compare`), and
    on a finite failure given its :func:`~minifim.oracle.causes.likely_causes`. The note
    says how a non-float64 candidate was read and when a sum-reduced one was compared as
    given. On a failure, ``fix`` names the options (``loss``, ``reduction``, ``layout``)
    under which the candidate passes, if any. Shared by :func:`check` (every key of a
    file) and :func:`assert_matches`.
    """
    arr, dtype = candidate_array(array, what)
    raw = arr
    note = ""
    convertible = arr.shape in (fixture[key].shape, fixture[key].shape[::-1])
    if convertible:
        arr, note = convert(fixture, key, arr, layout, reduction, loss)
    comp = compare(
        fixture[key],
        arr,
        name=key,
        rtol=rtol,
        atol=atol,
        fixture=fixture,
        candidate_name=candidate_name,
        param_axes=fixture.array_info(key).get("param_axes", []),
    )
    comp.note = join_notes(dtype_note(dtype, comp.rtol), note)
    if not comp.passed and comp.max_abs_err != math.inf:
        comp.causes = likely_causes(fixture, key, arr, layout=layout)
        if convertible:
            comp.fix = _convention_fix(
                fixture, key, raw, (layout, reduction, loss), rtol=rtol, atol=atol
            )
    return comp


def _convention_fix(
    fixture: Fixture,
    key: str,
    arr: np.ndarray,
    stated: tuple[str, str, str],
    *,
    rtol: float,
    atol: float | None,
) -> dict[str, str]:
    """The fewest option changes (``loss``, ``reduction``, ``layout``) under which ``arr``
    passes, or ``{}``: every convention valid for the fixture's likelihood is tried."""
    layout, reduction, loss = stated
    options = []
    for other_layout in map(str, LAYOUTS):
        for other_loss in map(str, LOSSES):
            for red in ("mean", "sum") if other_loss == "nll" else (None,):
                try:
                    other_loss, other_red = resolve_conventions(fixture, other_loss, red)
                except ValueError:
                    continue
                triple = (other_layout, other_red, other_loss)
                if triple == (layout, reduction, loss):
                    continue
                change = {}
                if other_loss != loss:
                    change["loss"] = other_loss
                if other_loss == "nll" and other_red != reduction:
                    change["reduction"] = other_red
                if other_layout != layout:
                    change["layout"] = other_layout
                options.append((change, triple))
    for change, (lay, red, los) in sorted(options, key=lambda t: len(t[0])):
        conv, note = convert(fixture, key, arr, lay, red, los)
        if not note and compare(fixture[key], conv, name=key, rtol=rtol, atol=atol).passed:
            return change
    return {}


_KFAC_FACTOR = re.compile(r"^((?:kfac/[^/]+|mc/kfac)/[^/]+)/([AG])(\d+)$")


def compare_kfac_whole(
    fixture: Fixture,
    comparisons: Sequence[Comparison],
    converted: Mapping[str, np.ndarray],
    *,
    rtol: float,
    atol: float | None,
) -> None:
    """Compare K-FAC factor pairs whole: a failing ``(A_l, G_l)`` pair passes when
    ``G_c kron A_c`` matches the reference's ``G kron A`` (the only thing K-FAC defines), with
    ``scale_split = s`` for the candidate's split ``A * s``, ``G / s``. In place.

    ``converted`` holds the candidate arrays in the fixture's conventions, by fixture key.
    """
    by_key = {c.name: c for c in comparisons}
    for key, comp in by_key.items():
        m = _KFAC_FACTOR.match(key)
        if m is None or m.group(2) != "A":
            continue
        g_key = f"{m.group(1)}/G{m.group(3)}"
        g_comp = by_key.get(g_key)
        if g_comp is None or (comp.passed and g_comp.passed):
            continue
        A, G = fixture[key], fixture[g_key]
        Ac, Gc = converted.get(key), converted.get(g_key)
        if Ac is None or Gc is None or Ac.shape != A.shape or Gc.shape != G.shape:
            continue
        if not (np.all(np.isfinite(Ac)) and np.all(np.isfinite(Gc))):
            continue
        aa = float(np.vdot(A, A))
        s = float(np.vdot(Ac, A)) / aa if aa > 0 else 0.0
        if not s > 0:
            continue
        require_memory(
            3 * 8 * A.size * G.size,
            f"the Kronecker products G kron A of layer {m.group(3)} ({key})",
            "compare the factors one by one (--keys)",
        )
        whole = compare(np.kron(G, A), np.kron(Gc, Ac), name=key, rtol=rtol, atol=atol)
        if not whole.passed:
            continue
        note = (
            f"compared whole ({key!r} with {g_key!r}): G kron A matches; the candidate splits the "
            f"scale as A * s, G / s with s = {s:.6g} (K-FAC defines only the product)"
        )
        for c in (comp, g_comp):
            c.passed = True
            c.scale_split = s
            c.causes = []
            c.fix = {}
            c.note = join_notes(c.note, note)


def _kfac_bands(
    fixture: Fixture,
    comparisons: Sequence[Comparison],
    converted: Mapping[str, np.ndarray],
    n_samples: int,
) -> None:
    """A candidate's complete true K-FAC (every layer's ``A`` and ``G``, or the dense
    ``kfac_dense/true/<bias>``) that fails exactly is tested as a ``k``-sample Monte-Carlo
    K-FAC (:func:`~minifim.oracle.diagnosis.kfac_band`): within the band its comparisons pass,
    with the band in the note. In place."""
    by_key = {c.name: c for c in comparisons}
    L = fixture.net.num_layers
    for bias in ("folded", "separate"):
        keys = [f"kfac/true/{bias}/{w}{l}" for l in range(L) for w in "AG"]
        dense_key = f"kfac_dense/true/{bias}"
        if all(k in converted for k in keys):
            cand: Any = KFACFactors(
                tuple(converted[f"kfac/true/{bias}/A{l}"] for l in range(L)),
                tuple(converted[f"kfac/true/{bias}/G{l}"] for l in range(L)),
                bias,
                tuple(fixture.net.shapes),
            )
        elif dense_key in converted:
            keys, cand = [dense_key], converted[dense_key]
        else:
            continue
        comps = [by_key[k] for k in keys]
        if all(c.passed for c in comps):
            continue
        try:
            band = kfac_band(fixture, cand, n_samples, bias=bias)
        except (ValueError, MemoryError) as err:  # weight sharing, too many outcomes, memory
            for c in comps:
                c.note = join_notes(c.note, f"the Monte-Carlo K-FAC band was not computed ({err})")
            continue
        z = band["z"] if isinstance(band["z"], str) else f"{band['z']:.2f}"
        what = (
            f"as a Monte-Carlo K-FAC with k = {n_samples} ({bias}): |K_c - K|^2 = "
            f"{band['observed']:.3e}, expected {band['expected']:.3e} +- {band['std']:.3e} "
            f"(z = {z}, band z <= {band['z_band']:g})"
        )
        for c in comps:
            if band["consistent"]:
                c.passed = True
                c.causes = []
                c.fix = {}
                c.note = join_notes(c.note, f"within the sampling band {what}")
            else:
                c.note = join_notes(c.note, f"OUTSIDE the sampling band {what}")


def check(
    fixture: FixtureLike,
    candidate: Mapping[str, np.ndarray],
    *,
    mapping: Mapping[str, str] | None = None,
    layout: str = "pytorch",
    reduction: str | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float | None = None,
    keys: Sequence[str] | None = None,
    diagnose_keys: Sequence[str] = (),
    mc_samples: int | None = None,
    candidate_label: str = "<arrays>",
    loss: str = "nll",
) -> CheckResult:
    """Compare every array of ``candidate`` with the fixture's array of the same meaning.

    Parameters
    ----------
    fixture : Fixture or path
    candidate : mapping of str -> ndarray
        E.g. ``numpy.load("candidate.npz")``. Keys are matched by ``mapping`` (candidate key
        -> fixture key), then exactly, then as a state-dict key (``"0.weight"``), then through
        :data:`ALIASES` (``"F"``, ``"grad"``, ...).
    layout : {"pytorch", "in-out", "jax"}
    reduction : {"mean", "sum"} or None
        ``None``: the one ``loss`` fixes (``"mean"`` for ``"nll"``).
    rtol, atol : tolerance (see the module docstring)
    keys : only these candidate keys (default: all)
    diagnose_keys : candidate keys to :func:`diagnose` (a curvature, a diagonal or the
        scores; the fixture key they resolve to is the quantity they are explained against)
    mc_samples : ``k`` of a Monte-Carlo candidate (for the diagnosis)
    loss : {"nll", "mse-mean", "mse-sum", "ce-mean", "ce-sum", "bce-mean", "bce-sum"}
        The candidate library's loss convention: every array is compared with the reference
        converted to it (:mod:`~minifim.oracle.keys`).

    Returns
    -------
    CheckResult
        ``.passed``, ``.table()``, ``.to_json()``.
    """
    fx = load_fixture(fixture)
    check_choice(layout, "layout", LAYOUTS)
    loss, reduction = resolve_conventions(fx, loss, reduction)
    rtol = check_nonnegative(rtol, "rtol")
    mapping = dict(mapping or {})
    for cand_key, target in mapping.items():
        if target not in fx.arrays:
            raise ValueError(
                f"mapping: {cand_key!r} -> {target!r}, but the fixture has no "
                f"array {target!r}; available: {', '.join(fx.keys())}"
            )
    if not isinstance(candidate, Mapping) and not hasattr(candidate, "files"):
        raise TypeError(
            f"candidate: expected a mapping of name -> array, received {type(candidate).__name__}"
        )
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
    comparisons: list[Comparison] = []
    unmatched: list[str] = []
    converted: dict[str, np.ndarray] = {}
    for cand_key in names:
        ref_key = resolve_key(fx, cand_key, mapping)
        if ref_key is None:
            if cand_key not in diagnose_keys:
                unmatched.append(cand_key)
            continue
        if _KFAC_FACTOR.match(ref_key) or ref_key.startswith("kfac_dense/"):
            arr, _ = candidate_array(candidate[cand_key], f"candidate[{cand_key!r}]")
            if arr.shape == fx[ref_key].shape:
                converted[ref_key] = convert(fx, ref_key, arr, layout, reduction, loss)[0]
        comparisons.append(
            compare_key(
                fx,
                ref_key,
                candidate[cand_key],
                cand_key,
                f"candidate[{cand_key!r}]",
                layout=layout,
                reduction=reduction,
                rtol=rtol,
                atol=atol,
                loss=loss,
            )
        )
    compare_kfac_whole(fx, comparisons, converted, rtol=rtol, atol=atol)
    if mc_samples is not None:
        _kfac_bands(fx, comparisons, converted, mc_samples)
    diagnoses = []
    for k in diagnose_keys:
        target = resolve_key(fx, k, mapping)
        diagnoses.append(
            diagnose(
                fx,
                candidate[k],
                key=target if target in DIAGNOSED_KEYS else None,
                # a Monte-Carlo estimate is of the true Fisher; other keys are exact
                n_samples=mc_samples
                if target in (None, "true_fisher", "fisher_diagonal")
                else None,
                layout=layout,
                reduction=reduction,
                loss=loss,
                name=k,
            )
        )
    for (
        d
    ) in diagnoses:  # the band accepts a sampled candidate: its exact comparison is not a failure
        ex = d.explanation or {}
        if d.ok and ex.get("consistent"):
            for c in comparisons:
                if c.candidate_name == d.name and not c.passed:
                    c.passed, c.causes, c.fix = True, [], {}
                    c.note = join_notes(
                        c.note,
                        f"a Monte-Carlo estimate with k = {ex['k']} labels per input within "
                        f"the exact sampling band (z = {float(ex['z']):.2f}); see its diagnosis",
                    )
    return CheckResult(
        fx.path or fx.name,
        candidate_label,
        rtol,
        atol,
        layout,
        reduction,
        comparisons,
        unmatched,
        diagnoses,
        loss,
    )


def assert_matches(
    fixture: FixtureLike,
    name: str,
    array: Any,
    rtol: float = DEFAULT_RTOL,
    atol: float | None = None,
    *,
    layout: str = "pytorch",
    reduction: str | None = None,
    loss: str = "nll",
) -> Comparison:
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
    reduction : {"mean", "sum"} or None (the one ``loss`` fixes; ``"mean"`` for ``"nll"``)
    loss : the candidate's loss convention (see :func:`check`)

    Returns
    -------
    Comparison
        When it passes.
    """
    fx = load_fixture(fixture)
    check_choice(layout, "layout", LAYOUTS)
    loss, reduction = resolve_conventions(fx, loss, reduction)
    if not isinstance(name, str):
        raise TypeError(f"name: expected a fixture array name, received {type(name).__name__}")
    key = resolve_key(fx, name)
    if key is None:
        raise KeyError(
            f"name: {name!r} is not an array of fixture {fx.name!r}; available: "
            f"{', '.join(fx.keys())}"
        )
    comp = compare_key(
        fx,
        key,
        array,
        name,
        f"array ({name})",
        layout=layout,
        reduction=reduction,
        rtol=rtol,
        atol=atol,
        loss=loss,
    )
    if not comp.passed:
        raise AssertionError(f"minifim fixture {fx.name!r}: " + comp.message())
    return comp
