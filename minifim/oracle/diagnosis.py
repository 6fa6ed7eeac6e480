"""Which Fisher variant a candidate is: the distance to each mistaken variant computed exactly
on the fixture, and for Monte-Carlo candidates with ``k`` samples per input a test of the
error against its exact mean and variance (:func:`minifim.geometry.moments.mc_error_moments`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_choice, check_int
from ..geometry.curvature import curvature_matrix, fisher_diagonal, square_of_mean_gradient
from ..geometry.moments import mc_error_moments
from .comparison import MAX_LISTED, candidate_array, dtype_note, relative_distance
from .fixtures import FixtureLike, load_fixture, param_label
from .layouts import LAYOUTS, REDUCTIONS, from_minifim_layout, layout_permutation, to_minifim_layout

__all__ = ["MATCH_TOL", "Diagnosis", "fisher_variants", "diagnose"]

MATCH_TOL = 1e-6


def _finite_or_str(value: Any) -> Any:
    """``value``, or its string for a non-finite float (JSON has no inf/nan)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


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
        return {
            "name": self.name,
            "kind": self.kind,
            "verdict": self.verdict,
            "closest": self.closest,
            "ok": self.ok,
            "scale": self.scale,
            "distances": [
                {"variant": v, "description": d, "relative_distance": _finite_or_str(x)}
                for v, d, x in self.distances
            ],
            "monte_carlo": self.monte_carlo,
            "note": self.note,
        }

    def report(self) -> str:
        lines = [f"diagnosis of {self.name!r} ({self.kind} Fisher candidate): {self.verdict}"]
        if self.note:
            lines.append(f"  note: {self.note}")
        if not self.distances:
            return "\n".join(lines)
        lines.append(
            "  relative distance |c - V| / |V| to each variant computed exactly by minifim:"
        )
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
                    + ("within the band" if mc["within_band"] else "OUTSIDE the band")
                )
            if self.distances[0][2] > MATCH_TOL and not isinstance(mc["k_eff"], str):
                lines.append(
                    f"  error equivalent to k_eff = {mc['k_eff']:.3g} Monte-Carlo "
                    "samples per input (if it were an unbiased Monte-Carlo estimate)"
                )
        return "\n".join(lines)


def fisher_variants(
    fixture: FixtureLike, *, diagonal: bool = False
) -> list[tuple[str, str, np.ndarray]]:
    """The Fisher and its common mistaken variants, computed exactly on the fixture.

    Returns ``[(name, description, matrix), ...]`` with dense ``(P, P)`` matrices, or their
    diagonals ``(P,)`` with ``diagonal=True``. Variants equal to an earlier one (e.g. the
    Gaussian's ``sigma`` variants when ``sigma = 1``) are dropped.
    """
    fx = load_fixture(fixture)
    net, theta, X, y, N = fx.net, fx.theta, fx.X, fx.y, fx.N
    sigma = float(fx.manifest["model"].get("sigma", 1.0))

    def mat(kind: str) -> np.ndarray:
        if diagonal:
            return fisher_diagonal(net, theta, X, y if kind == "empirical" else None, kind)
        return curvature_matrix(net, theta, X, y if kind == "empirical" else None, kind)

    F = mat("true")
    EF = mat("empirical")
    H = fx["hessian"]
    out = [
        ("true", "true Fisher, mean over samples (the reference)", F),
        ("empirical", "empirical Fisher: scores at the data labels", EF),
        (
            "square-of-mean-gradient",
            ("g^2" if diagonal else "g g^T") + " with g the "
            "batch-mean gradient (squared after averaging)",
            square_of_mean_gradient(net, theta, X, y, diagonal=diagonal),
        ),
        ("argmax", "labels by argmax of the prediction (not sampled/enumerated)", mat("argmax")),
        ("true-sum", f"true Fisher summed over the N = {N} samples (factor N)", N * F),
        ("empirical-sum", "empirical Fisher summed over samples", N * EF),
        (
            "square-of-sum-gradient",
            ("G^2" if diagonal else "G G^T") + " with G the batch-sum gradient",
            N * N * square_of_mean_gradient(net, theta, X, y, diagonal=diagonal),
        ),
        (
            "true-in-out-layout",
            "true Fisher with weights flattened as (in, out) (transposed layout)",
            from_minifim_layout(net, F, [0] if diagonal else [0, 1], "in-out"),
        ),
        (
            "true-jax-layout",
            "true Fisher in JAX ravel_pytree order (bias first, kernel (in, out))",
            from_minifim_layout(net, F, [0] if diagonal else [0, 1], "jax"),
        ),
        ("hessian", "Hessian of the mean NLL", np.diag(H).copy() if diagonal else H),
    ]
    if net.likelihood.name == "gaussian":
        out += [
            ("unit-sigma", f"J^T J: sigma ignored (sigma = {sigma:g})", sigma**2 * F),
            ("mse-ggn", "Hessian / GGN of the MSE |y - f|^2: 2 J^T J", 2 * sigma**2 * F),
            (
                "mse-squared-gradients",
                "squared gradients of the MSE |y - f|^2: 4 sigma^2 J^T J",
                4 * sigma**4 * F,
            ),
        ]
    kept: list[tuple[str, str, np.ndarray]] = []
    for name, desc, M in out:
        if any(M.shape == K.shape and np.array_equal(M, K) for _, _, K in kept) or (
            name != "true" and relative_distance(M, F) < 1e-14
        ):
            continue
        kept.append((name, desc, M))
    return kept


def diagnose(
    fixture: FixtureLike,
    candidate: Any,
    *,
    n_samples: int | None = None,
    layout: str = "pytorch",
    reduction: str = "mean",
    match_tol: float = MATCH_TOL,
    z_band: float = 3.0,
    name: str = "candidate",
) -> Diagnosis:
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
    c, dtype = candidate_array(candidate, f"candidate ({name})")
    note = dtype_note(dtype, math.inf)
    P = fx.P
    if c.shape == (P, P):
        diagonal, axes = False, [0, 1]
    elif c.shape == (P,):
        diagonal, axes = True, [0]
    else:
        raise ValueError(
            f"candidate ({name}): expected a dense Fisher of shape ({P}, {P}) or "
            f"a diagonal of shape ({P},), received shape {c.shape}"
        )
    if n_samples is not None:
        n_samples = check_int(n_samples, "n_samples", 1)
    kind = "diagonal" if diagonal else "dense"
    bad = np.argwhere(~np.isfinite(c))
    if len(bad):  # a failure naming the entries (in the candidate's own layout)
        items = []
        perm = layout_permutation(fx.net, layout)  # candidate[k] is parameter perm[k]
        for index in bad[:MAX_LISTED]:
            labels = [param_label(fx.net, int(perm[i])) for i in index]
            items.append(
                f"{labels[0] if diagonal else '(' + ', '.join(labels) + ')'} = "
                f"{float(c[tuple(index)])!r}"
            )
        more = f", ... ({len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
        verdict = (
            f"the candidate holds {len(bad)} NaN/Inf entr"
            f"{'y' if len(bad) == 1 else 'ies'} ({', '.join(items)}{more}): not a "
            "Fisher; no variant was compared"
        )
        return Diagnosis(name, kind, [], verdict, "", False, None, None, note)
    c = to_minifim_layout(fx.net, c, axes, layout)
    if reduction == "sum":
        c = c / fx.N
    variants = fisher_variants(fx, diagonal=diagonal)
    distances = sorted(
        ((v, d, relative_distance(c, M)) for v, d, M in variants), key=lambda t: t[2]
    )
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
    mc: dict[str, Any] | None = None
    if e1 is not None:
        mc = {
            "k": n_samples,
            "k_eff": (e1 / observed) if observed > 0 else math.inf,
            "observed": observed,
        }
    mc_ok, mc_text = False, ""
    if n_samples is not None and e1 is not None:
        assert mc is not None  # set with e1
        mean, var = mc_error_moments(net, theta, X, n_samples, diagonal=diagonal)
        std = math.sqrt(var)
        z = (observed - mean) / std if std > 0 else (0.0 if observed == mean else math.inf)
        mc.update(
            {
                "expected": mean,
                "std": std,
                "z": z,
                "z_band": z_band,
                "within_band": bool(z <= z_band),
            }
        )
        mc_ok = z <= z_band
        if not mc_ok:
            N, k = fx.N, n_samples
            fits = []
            for factor, what in (
                (k, f"summed over the k = {k} samples instead of averaged"),
                (N, f"summed over the N = {N} inputs instead of averaged"),
                (N * k, "summed over inputs and samples"),
            ):
                D = float(np.sum((c / factor - F) ** 2))
                zf = (D - mean) / std if std > 0 else math.inf
                if factor > 1 and zf <= z_band:
                    fits.append((abs(zf), factor, what, D, zf))
            if fits:  # the rescaling that fits best (ambiguous when k is close to N)
                _, factor, what, D, zf = min(fits)
                mc["rescaled"] = {"factor": factor, "observed": D, "z": zf}
                mc_text = (
                    f"a Monte-Carlo Fisher {what} (candidate / {factor} is within "
                    f"the sampling band, z = {zf:.2f})"
                )
        mc["z"] = _finite_or_str(mc["z"])
    if mc is not None:
        mc["k_eff"] = _finite_or_str(mc["k_eff"])

    desc = dict((v, d) for v, d, _ in distances)
    if best <= match_tol:
        ok = closest == "true"
        verdict = (
            f"the candidate is the {'exact ' if ok else ''}{closest!r} variant: "
            f"{desc[closest]} (relative distance {best:.2e})"
        )
        if not ok:
            true_dist = dict((v, x) for v, _, x in distances)["true"]
            verdict += f"; the true Fisher is at {true_dist:.3g}"
    elif mc_ok and mc is not None:
        ok = True
        verdict = (
            f"consistent with a Monte-Carlo estimate of the true Fisher with k = "
            f"{n_samples} samples per input (|c - F|^2 = {observed:.3e}, z = "
            f"{mc['z']:.2f} <= {z_band:g}); no exact variant matches"
        )
    elif mc_text:
        ok = False
        verdict = f"the candidate looks like {mc_text}"
    else:
        ok = False
        verdict = (
            f"no variant matches (closest: {closest!r}, {desc[closest]}, at relative "
            f"distance {best:.3g})"
        )
        if n_samples is not None and mc is not None and "z" in mc:
            verdict += (
                f"; as a Monte-Carlo estimate with k = {n_samples} its error is "
                f"{observed / mc['expected']:.3g} x the expected one (z = "
                f"{mc['z'] if isinstance(mc['z'], str) else round(mc['z'], 2)}): "
                "not explained by sampling"
            )
        elif n_samples is not None and mc_skipped:
            verdict += f"; the Monte-Carlo band was not computed ({mc_skipped})"
    return Diagnosis(name, kind, distances, verdict, closest, ok, mc, scale, note)
