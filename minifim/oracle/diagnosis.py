"""Which variant a candidate is, as a structured explanation: variant x factors x layout.

:func:`diagnose` fits the candidate, in each parameter layout, to every reference variant
computed exactly on the fixture (the true and empirical Fisher, the GGN, the Hessian, argmax
labels, the square of the mean gradient over mini-batches of every size ``B``, the stored
Monte-Carlo Fisher, the per-sample scores) by the closed-form scalar
``alpha = <c, V> / <V, V>``, and factorises ``alpha`` over the symbols ``N``, ``N-1``, ``C``,
``2`` and ``sigma`` (:mod:`~minifim.oracle.explanation`). An explanation is named only when
``sign * prod(symbol ** exp) * V`` reproduces the candidate entry by entry within the match
criterion ``|c - r| <= rtol (max|r| + |r|)`` (the comparison's own, at ``rtol =
DEFAULT_RTOL``, raised to ``n eps`` for a low-precision candidate, ``n = P + N max(C, 2)``
the inner dimension of a curvature's products: two correctly rounded routes differ by at
most that, see ``tests/tolerances.py``). Every explanation that reproduces the candidate is
listed; the simplest is the main one.

For a Monte-Carlo candidate with ``k`` samples per input the error ``|c / f - F|^2`` is
tested against its exact mean and variance (:func:`minifim.geometry.moments.mc_error_moments`)
for every factor value ``f``: the factor search is done under the band too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import check_int
from ..geometry.curvature import curvature_matrix, fisher_diagonal, square_of_mean_gradient
from ..geometry.moments import mc_error_moments, mc_kfac_error_moments, output_outcomes
from ..options import Layout, as_option
from .comparison import DEFAULT_RTOL, MAX_LISTED, candidate_array, dtype_note, relative_distance
from .explanation import FactorTable, explanation_key, factor_value, format_factors
from .fixtures import Fixture, FixtureLike, load_fixture, param_label
from .keys import (
    LOSSES,
    convention_factors,
    fixture_symbols,
    resolve_conventions,
)
from .layouts import LAYOUTS, from_minifim_layout, layout_permutation, to_minifim_layout

__all__ = [
    "MATCH_TOL",
    "DIAGNOSED_KEYS",
    "Diagnosis",
    "fisher_variants",
    "minibatch_square_of_mean_gradient",
    "alternative_bound",
    "diagnose",
    "kfac_band",
    "scale_statistic_sd",
]

#: Default ``rtol`` of the match criterion ``|c - r| <= rtol (max|r| + |r|)`` (the
#: comparison's default, :data:`~minifim.oracle.comparison.DEFAULT_RTOL`).
MATCH_TOL = DEFAULT_RTOL

#: Fixture keys :func:`diagnose` explains, with the reference variant each one names.
DIAGNOSED_KEYS: dict[str, str] = {
    "true_fisher": "true",
    "empirical_fisher": "empirical",
    "ggn": "ggn",
    "hessian": "hessian",
    "fisher_diagonal": "true",
    "empirical_fisher_diagonal": "empirical",
    "scores": "scores",
}


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
    kind : {"dense", "diagonal", "scores"}
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
    key : str
        The fixture quantity the candidate was compared with (:data:`DIAGNOSED_KEYS`).
    explanation : dict
        ``variant``, ``factors`` (``{symbol: exp}``), ``sign``, ``batch_size``, ``layout``,
        ``alternatives`` (every other explanation that reproduces the candidate, same form),
        ``relative_distance``; for a sampled candidate also ``k``, ``z`` and ``consistent``.
        ``variant`` is ``None`` when nothing reproduces the candidate.
    fix : dict
        The options (``loss``, ``reduction``, ``layout``) under which the candidate would be
        the reference exactly, when a convention mismatch explains it (``{}`` otherwise).
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
    key: str = "true_fisher"
    explanation: dict | None = None
    fix: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The report (:meth:`report`)."""
        return self.report()

    def __str__(self) -> str:
        return self.report()

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "key": self.key,
            "explanation": self.explanation,
            "fix": self.fix,
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
        what = "per-sample scores" if self.kind == "scores" else f"{self.kind} {self.key}"
        lines = [f"diagnosis of {self.name!r} ({what} candidate): {self.verdict}"]
        if self.note:
            lines.append(f"  note: {self.note}")
        ex = self.explanation or {}
        alts = ex.get("alternatives") or []
        if alts:
            shown = ", ".join(_short(a) for a in alts[:4])
            more = f" and {len(alts) - 4} more" if len(alts) > 4 else ""
            lines.append(f"  equally good explanations ({len(alts)}): {shown}{more}")
        if self.fix:
            flags = " ".join(f"--{k} {v}" for k, v in self.fix.items())
            lines.append(f"  would pass with: {flags}")
        if not self.distances:
            return "\n".join(lines)
        lines.append(
            "  relative distance |c - V| / |V| to each variant computed exactly by minifim:"
        )
        width = max(len(v) for v, _, _ in self.distances)
        for v, desc, x in self.distances:
            lines.append(f"    {v:<{width}}  {x:9.3e}  {desc}")
        if self.scale is not None:
            lines.append(f"  best scalar fit: candidate ~ {self.scale:.6g} x {self.key}")
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
    Gaussian's ``sigma`` variants when ``sigma = 1``) are dropped. These are the rows of the
    distance table of a :class:`Diagnosis` (combined names such as ``"true-sum"``); the
    structured explanation (:attr:`Diagnosis.explanation`) always splits them into a variant
    and factors (``"true"`` with ``{"N": 1}``).
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


_VARIANT_TEXT = {
    "true": "the true Fisher",
    "empirical": "the empirical Fisher (data labels)",
    "ggn": "the GGN",
    "hessian": "the Hessian of the NLL",
    "argmax": "the Fisher at argmax labels",
    "square-of-mean-gradient": "the square of the mean gradient",
    "mc": "a Monte-Carlo Fisher",
    "scores": "the per-sample scores grad log p",
}
#: Preference among variants that reproduce a candidate equally simply (after the key's own).
_VARIANT_ORDER = ("true", "ggn", "empirical", "square-of-mean-gradient", "argmax", "mc")


def alternative_bound(factors: dict) -> int:
    """Largest total ``|exp|`` of a listed alternative to a main explanation ``factors``:
    ``max(t + 3, 2 t)`` for its total ``t``.

    Every factorisation of the same value reproduces the candidate equally well, but one
    padded with a product equal to 1 (``2^3 / N`` for the true Fisher itself when ``N = 8``)
    tells no story. Three more exponents, or twice the main's, keep the coincidences that do:
    with ``C = 2``, ``sigma^2`` (sigma ignored) and ``2 sigma^2 / C`` (``MSELoss(mean)``);
    for squared gradients ``sigma^4`` and ``4 sigma^4 / C^2``; ``N`` and ``2^3`` when
    ``N = 8``; with ``sigma^2 = 1/2``, the true Fisher and the MSE's ``2 sigma^2`` GGN.
    """
    t = sum(abs(e) for e in factors.values())
    return max(t + 3, 2 * t)


def _short(ex: dict) -> str:
    """One explanation in a few words: ``"true x N (layout jax)"``."""
    text = str(ex["variant"])
    if ex.get("batch_size") is not None:
        text += f"[B={ex['batch_size']}]"
    if ex["sign"] == -1:
        text = "-" + text
    if ex["factors"]:
        text += " x " + format_factors(ex["factors"])
    if ex["layout"] != "pytorch":
        text += f" (layout {ex['layout']})"
    return text


def minibatch_square_of_mean_gradient(
    scores: np.ndarray, batch_size: int, *, diagonal: bool = False
) -> np.ndarray:
    """``1/B sum_b g_b g_b^T`` over consecutive mini-batches of ``batch_size`` samples.

    ``g_b`` is the batch-mean score (the last batch possibly shorter: ``B = ceil(N /
    batch_size)`` batches), what EWC code computes by squaring the gradient of each
    mini-batch's mean loss: the empirical Fisher for ``batch_size = 1``, ``g g^T`` for
    ``batch_size = N``. ``scores: (N, P)``; returns ``(P, P)``, or ``(P,)`` with
    ``diagonal=True``. Independent route: :func:`minifim.ewc.task_curvature` with
    ``fisher="square_of_mean_gradient"`` and ``batch_size``.
    """
    N = scores.shape[0]
    batch_size = check_int(batch_size, "batch_size", 1)
    starts = np.arange(0, N, batch_size)
    nb = len(starts)
    counts = np.minimum(starts + batch_size, N) - starts
    batch = np.repeat(np.arange(nb), counts)
    avg = np.zeros((nb, N))
    avg[batch, np.arange(N)] = 1.0 / counts[batch]
    G = avg @ scores  # (nb, P) batch-mean scores
    if diagonal:
        return np.einsum("bp,bp->p", G, G) / nb
    return (G.T @ G) / nb


def _kfac_factor_key(key: str) -> tuple[str, str, int] | None:
    """``(bias, "A"|"G", layer)`` of a K-FAC factor key (``kfac/<fisher>/<bias>/G0``,
    ``mc/kfac/<bias>/A1``), else ``None``."""
    parts = key.split("/")
    if len(parts) == 4 and parts[0] in ("kfac", "mc") and parts[-1][:1] in ("A", "G"):
        tail = parts[-1][1:]
        if tail.isdigit() and (parts[0] == "kfac" or parts[1] == "kfac"):
            return parts[2], parts[-1][0], int(tail)
    return None


def _reference_of(key: str) -> str:
    """The variant a fixture key names (:data:`DIAGNOSED_KEYS`, or a K-FAC factor's kind)."""
    if key in DIAGNOSED_KEYS:
        return DIAGNOSED_KEYS[key]
    if key.startswith("mc/"):
        return "mc"
    return key.split("/")[1]


def _infer_key(fx: Fixture, shape: tuple[int, ...]) -> str:
    P, N = fx.P, fx.N
    if shape == (P, P):
        return "true_fisher"
    if shape == (P,):
        return "fisher_diagonal"
    if shape == (N, P):
        return "scores"
    raise ValueError(
        f"candidate: expected a dense Fisher of shape ({P}, {P}), a diagonal of shape ({P},) "
        f"or per-sample scores of shape ({N}, {P}), received shape {shape}"
    )


def _reference_variants(
    fx: Fixture, key: str, n_samples: int | None
) -> list[tuple[str, int | None, np.ndarray]]:
    """``(variant, batch_size, V)`` in minifim's layout for a candidate of fixture key ``key``.

    Read from the fixture's arrays where stored (the candidate is compared with those), the
    argmax Fisher and the mini-batched squares of the mean gradient computed on the fixture.
    """
    if key == "scores":
        return [("scores", None, fx["scores"])]
    factor = _kfac_factor_key(key)
    if factor is not None:  # the same factor of each stored K-FAC kind
        bias, which, layer = factor
        kinds = [(f, f"kfac/{f}/{bias}/{which}{layer}") for f in ("true", "empirical")]
        kinds.append(("mc", f"mc/kfac/{bias}/{which}{layer}"))
        found: list[tuple[str, int | None, np.ndarray]] = [
            (f, None, fx[k]) for f, k in kinds if k in fx.arrays
        ]
        return found[:1] if which == "A" else found  # A does not depend on the labels
    diagonal = key in ("fisher_diagonal", "empirical_fisher_diagonal")
    net, theta, X = fx.net, fx.theta, fx.X

    def take(M: np.ndarray) -> np.ndarray:
        return np.diag(M).copy() if diagonal else M

    out: list[tuple[str, int | None, np.ndarray]] = [
        ("true", None, fx["fisher_diagonal"] if diagonal else fx["true_fisher"]),
        ("ggn", None, take(fx["ggn"])),
        ("empirical", None, fx["empirical_fisher" + ("_diagonal" if diagonal else "")]),
        ("hessian", None, take(fx["hessian"])),
    ]
    arg = (
        fisher_diagonal(net, theta, X, None, "argmax")
        if diagonal
        else curvature_matrix(net, theta, X, None, "argmax")
    )
    out.append(("argmax", None, arg))
    mc_key = "mc/fisher_diagonal" if diagonal else "mc/fisher"
    if mc_key in fx.arrays:
        out.append(("mc", None, fx[mc_key]))
    S = fx["scores"]
    for B in range(2, fx.N + 1):
        M = minibatch_square_of_mean_gradient(S, B, diagonal=diagonal)
        out.append(("square-of-mean-gradient", B, M))
    return out


def _match_rtol(fx: Fixture, dtype: np.dtype, rtol: float) -> float:
    """``rtol`` raised to ``n eps(dtype)`` for a low-precision candidate (``n = P + N max(C,
    2)``, the inner dimension of a curvature's products: its rounding in that precision)."""
    if np.issubdtype(dtype, np.floating) and np.dtype(dtype).itemsize < 8:
        n = fx.P + fx.N * max(fx.net.output_dim, 2)
        return max(rtol, n * float(np.finfo(dtype).eps))
    return rtol


def _exact_fits(
    given: dict[str, np.ndarray],
    variants: list[tuple[str, int | None, np.ndarray]],
    table: FactorTable,
    rtol: float,
) -> list[dict]:
    """Every ``(variant, batch, layout, sign, factors)`` with ``sign * f * V`` matching the
    candidate entrywise: ``|c - f V| <= |f| rtol (max|V| + |V|)``."""
    found = []
    stats = []  # per variant: <V, V>, the allowed deviation per entry and its norm
    for _, _, V in variants:
        vv = float(np.vdot(V, V))
        allowed = rtol * (float(np.max(np.abs(V))) + np.abs(V)) if vv > 0 else V
        a_norm = math.sqrt(float(np.vdot(allowed, allowed))) if vv > 0 else 0.0
        stats.append((vv, allowed, a_norm))
    for layout, c in given.items():
        cc = float(np.vdot(c, c))
        for (variant, batch, V), (vv, allowed, a_norm) in zip(variants, stats):
            if V.shape != c.shape or vv == 0.0:
                continue
            cv = float(np.vdot(c, V))
            alpha = cv / vv
            if alpha == 0.0 or not math.isfinite(alpha):
                continue
            # |c - alpha V|^2 = |c|^2 - alpha <c, V> (alpha V is the projection of c)
            resid = math.sqrt(max(cc - alpha * cv, 0.0))
            if resid > 1.01 * abs(alpha) * a_norm + 1e-7 * math.sqrt(cc):
                continue  # no scalar multiple of V can match
            width = 1.01 * a_norm / math.sqrt(vv) + 1e-15
            log_a = math.log(abs(alpha))
            sign = 1 if alpha > 0 else -1
            for factors in table.near(log_a - 2 * width, log_a + 2 * width):
                f = sign * table.value_of(factors)
                diff = np.abs(c - f * V)
                if np.all(diff <= abs(f) * allowed):
                    d = math.sqrt(float(np.vdot(diff, diff))) / (abs(f) * math.sqrt(vv))
                    found.append(
                        {
                            "variant": variant,
                            "factors": factors,
                            "sign": sign,
                            "batch_size": batch,
                            "layout": layout,
                            "relative_distance": d,
                        }
                    )
    return found


def scale_statistic_sd(fixture: FixtureLike, n_samples: int, *, diagonal: bool = False) -> float:
    """Exact standard deviation of ``alpha = <F_mc, F> / <F, F>`` for a ``k``-sample
    Monte-Carlo Fisher (``E alpha = 1``).

    ``<F_mc, F> = 1/(N k) sum_{n,j} q(y_nj)`` with ``q(y) = s(y)^T F s(y)`` (diagonal:
    ``s^2 . diag F``), independent over ``(n, j)``, so ``Var alpha = sum_n Var_n q /
    (N^2 k |F|^4)`` with ``Var_n q`` a finite sum over the outcomes of
    :func:`~minifim.geometry.moments.output_outcomes`. The projection on ``F`` is the most
    powerful statistic against a scale error, which the squared error ``|F_mc - F|^2`` barely
    sees at small ``N k``.
    """
    fx = load_fixture(fixture)
    k = check_int(n_samples, "n_samples", 1)
    w, U = output_outcomes(fx.net, fx.theta, fx.X)
    if diagonal:
        F = fx["fisher_diagonal"]
        q = np.einsum("nop,p->no", U * U, F)
    else:
        F = fx["true_fisher"]
        q = np.einsum("nop,pr,nor->no", U, F, U)
    mean = np.einsum("no,no->n", w, q)
    var = np.einsum("no,no->n", w, q * q) - mean**2
    ff = float(np.vdot(F, F))
    N = fx.N
    return math.sqrt(max(float(var.sum()), 0.0) / (N * N * k)) / ff if ff > 0 else math.inf


def _band_fits(
    given: dict[str, np.ndarray],
    F: np.ndarray,
    moments: tuple[float, float, float],
    table: FactorTable,
    z_band: float,
) -> list[dict]:
    """Every ``("mc", layout, factors)`` with ``c / (sign f)`` within the ``k``-sample band:
    ``z = (|c / (sign f) - F|^2 - E D) / sd D <= z_band`` and ``|alpha / f - 1| <= z_band
    sd alpha`` (the scale statistic). ``sign`` is the one that makes ``c / sign`` a
    positive semi-definite estimate possible (the sign of its trace)."""
    mean, std, sd_alpha = moments
    found = []
    ff = float(np.vdot(F, F))
    fvals = np.exp(table.logs)
    for layout, c in given.items():
        cc, cf = float(np.vdot(c, c)), float(np.vdot(c, F))
        trace = float(np.sum(c)) if c.ndim == 1 else float(np.trace(c))
        sign = 1 if trace >= 0 else -1
        D = cc / fvals**2 - 2 * sign * cf / fvals + ff
        z = (D - mean) / std if std > 0 else np.where(D <= mean, 0.0, np.inf)
        zs = (sign * cf / ff / fvals - 1.0) / sd_alpha if sd_alpha > 0 else np.zeros_like(D)
        rows = np.flatnonzero((z <= z_band) & (np.abs(zs) <= z_band))
        if not len(rows):
            continue
        totals = np.abs(table.exponents[rows]).sum(axis=1)
        # only explanations that can be listed: within the bound of the simplest one
        rows = rows[totals <= alternative_bound({"_": int(totals.min())})]
        for r in rows:
            factors = {s: int(e) for s, e in zip(table.symbols, table.exponents[r]) if e}
            found.append(
                {
                    "variant": "mc",
                    "factors": factors,
                    "sign": sign,
                    "batch_size": None,
                    "layout": layout,
                    "z": float(z[r]),
                    "z_scale": float(zs[r]),
                }
            )
    return found


def _rank(ex: dict, ref: str, layout: str) -> tuple:
    order = (ref,) + tuple(v for v in _VARIANT_ORDER if v != ref)
    v = ex["variant"]
    return (
        explanation_key(ex["factors"]),
        0 if ex["layout"] == layout else 1 + LAYOUTS.index(ex["layout"]),
        order.index(v) if v in order else len(order),
        ex["sign"] != 1,
        ex["batch_size"] or 0,
    )


def _public(ex: dict, sampled: bool) -> dict:
    out = {k: ex[k] for k in ("variant", "factors", "sign", "batch_size", "layout")}
    if sampled and "z" in ex:
        out["z"] = ex["z"]
        out["z_scale"] = ex.get("z_scale")
    return out


def _find_fix(
    fx: Fixture, key: str, ex: dict, ref: str, loss: str, reduction: str, layout: str
) -> dict:
    """The options under which ``ex`` (relative to the stated conventions) is the reference
    itself: ``{"loss": ...}``, ``{"reduction": ...}`` and/or ``{"layout": ...}``."""
    if ex["variant"] != ref or ex["batch_size"] is not None or "k" in ex["factors"]:
        return {}
    stated = convention_factors(fx, key, loss, reduction)
    if stated is None:
        return {}
    values = fixture_symbols(fx)
    total = (
        stated[0]
        * ex["sign"]
        * factor_value(stated[1], values)
        * factor_value(ex["factors"], values)
    )
    lik = fx.net.likelihood.name
    options = []
    for other in LOSSES:
        for red in ("mean", "sum") if other == "nll" else (None,):
            try:
                other_loss, other_red = resolve_conventions(fx, other, red)
            except ValueError:
                continue
            conv = convention_factors(fx, key, other_loss, other_red)
            if conv is None:
                continue
            value = conv[0] * factor_value(conv[1], values)
            if abs(value - total) <= 1e-12 * abs(total):
                change = {}
                if other_loss != loss:
                    change["loss"] = other_loss
                if other_loss == "nll" and other_red != reduction:
                    change["reduction"] = other_red
                options.append(change)
    del lik
    if not options:
        return {}
    fix = min(options, key=lambda c: (len(c), "loss" in c))
    if ex["layout"] != layout:
        fix = {**fix, "layout": ex["layout"]}
    return fix


def _describe(ex: dict, fx: Fixture, key: str, k: int | None = None) -> str:
    """A sentence for an explanation: the variant, the factor with its symbols and value, the
    layout, the batch size."""
    values = fixture_symbols(fx, k)
    v = ex["variant"]
    text = _VARIANT_TEXT.get(v, str(v))
    factor = _kfac_factor_key(key)
    if factor is not None:
        text = f"the {v} K-FAC's {factor[1]}{factor[2]} ({factor[0]})"
    if v == "square-of-mean-gradient":
        B = ex["batch_size"]
        text = (
            "g g^T of the full-batch mean gradient"
            if B == fx.N
            else f"the square of the mean gradient over mini-batches of B = {B} samples, "
            f"averaged over the {-(-fx.N // B)} batches"
        )
    if ex["sign"] == -1:
        text = "minus " + text
    f = ex["factors"]
    if f:
        syms = ", ".join(f"{s} = {values[s]:g}" for s in f if s in values and s != "2")
        text += f" times {format_factors(f, values)}" + (
            f" ({syms})" if syms and len(f) > 1 else ""
        )
        named = _named_factor(f, key)
        if named:
            text += f": {named}"
    if ex["layout"] != "pytorch":
        text += f", in the {ex['layout']!r} parameter layout"
    return text


def _named_factor(f: dict, key: str) -> str:
    """The convention a factorisation is known as, if any."""
    sq = key in ("empirical_fisher", "empirical_fisher_diagonal")
    names = {
        (("N", 1),): "summed over the samples instead of averaged",
        (("k", 1),): "summed over the k Monte-Carlo samples instead of averaged",
        (("N", 1), ("k", 1)): "summed over the inputs and the Monte-Carlo samples",
        (("N", -1),): "divided by N once too often (a mean of a mean)",
        (("N", 1), ("N-1", -1)): "divided by N - 1 (Bessel's correction) instead of N",
        (("sigma", 2),): "sigma ignored (the Fisher for sigma = 1)",
        (("2", 1), ("sigma", 2)): "the MSE |y - f|^2 (summed over outputs) instead of the NLL",
        (("2", 1), ("sigma", 2), ("C", -1)): "MSELoss(reduction='mean'): 2 sigma^2 / C",
        (("C", -1),): "averaged over the C outputs (BCEWithLogitsLoss(reduction='mean'))",
        (("2", 2), ("sigma", 4)): "squared gradients of the MSE |y - f|^2",
        (("2", 2), ("sigma", 4), ("C", -2)): "squared gradients of MSELoss(reduction='mean')",
        (("2", 1),): "a factor 2 (the MSE's)",
        (("2", -1),): "a factor 1/2 applied twice",
    }
    items = tuple(sorted(f.items(), key=lambda t: ("N", "N-1", "2", "sigma", "C", "k").index(t[0])))
    text = names.get(items, "")
    if sq and not text:
        return ""
    return text


def _shape_checked(fx: Fixture, c: np.ndarray, key: str, name: str) -> None:
    want = fx[key].shape
    if c.shape != want:
        raise ValueError(
            f"candidate ({name}): expected the shape {want} of fixture array {key!r}, "
            f"received shape {c.shape}"
        )


def _nonfinite_diagnosis(
    fx: Fixture, c: np.ndarray, key: str, kind: str, layout: str, name: str, note: str
) -> Diagnosis | None:
    """A failure naming the NaN/Inf entries (in the candidate's own layout), or ``None``."""
    bad = np.argwhere(~np.isfinite(c))
    if not len(bad):
        return None
    perm = layout_permutation(fx.net, layout)  # candidate[k] is parameter perm[k]
    items = []
    for index in bad[:MAX_LISTED]:
        if key == "scores":
            label = f"(sample {int(index[0])}, {param_label(fx.net, int(perm[index[1]]))})"
        else:
            labels = [param_label(fx.net, int(perm[i])) for i in index]
            label = labels[0] if c.ndim == 1 else "(" + ", ".join(labels) + ")"
        items.append(f"{label} = {float(c[tuple(index)])!r}")
    more = f", ... ({len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
    verdict = (
        f"the candidate holds {len(bad)} NaN/Inf entr"
        f"{'y' if len(bad) == 1 else 'ies'} ({', '.join(items)}{more}): not a "
        f"{'score array' if key == 'scores' else 'Fisher'}; no variant was compared"
    )
    return Diagnosis(name, kind, [], verdict, "", False, None, None, note, key, None)


def diagnose(
    fixture: FixtureLike,
    candidate: Any,
    *,
    key: str | None = None,
    n_samples: int | None = None,
    layout: str = "pytorch",
    reduction: str | None = None,
    loss: str = "nll",
    match_tol: float = MATCH_TOL,
    z_band: float = 3.0,
    name: str = "candidate",
) -> Diagnosis:
    """Say what ``candidate`` is: variant x factors x layout (x batch size), and how close.

    Parameters
    ----------
    fixture : Fixture or path
    candidate : ndarray
        A dense curvature ``(P, P)``, a diagonal ``(P,)`` or per-sample scores ``(N, P)``, in
        ``layout`` and the conventions ``loss``/``reduction`` (converted first).
    key : str, optional
        The fixture quantity the candidate stands for (:data:`DIAGNOSED_KEYS`:
        ``"true_fisher"``, ``"empirical_fisher"``, ``"ggn"``, ``"hessian"``,
        ``"fisher_diagonal"``, ``"empirical_fisher_diagonal"``, ``"scores"``, or a K-FAC
        factor such as ``"kfac/true/folded/G0"``, explained against the same factor of each
        stored kind); default from the shape (``true_fisher``, ``fisher_diagonal`` or
        ``scores``).
    n_samples : int or None
        ``k`` if the candidate is a Monte-Carlo Fisher with ``k`` sampled labels per input.
    layout : {"pytorch", "in-out", "jax"}
    reduction : {"mean", "sum"} or None
        ``None``: the one ``loss`` fixes (``"mean"`` for ``"nll"``).
    loss : {"nll", "mse-mean", "mse-sum", "ce-mean", "ce-sum", "bce-mean", "bce-sum"}
        The candidate library's loss convention (:mod:`~minifim.oracle.keys`).
    match_tol : float
        ``rtol`` of the match criterion ``|c - r| <= rtol (max|r| + |r|)`` entrywise (raised to
        ``n eps`` for a low-precision candidate).
    z_band : float
        Half-width of the sampling band in standard deviations of ``|F_mc - F|^2`` above its
        exact mean (Cantelli: a correct ``k``-sample estimate falls outside ``z = 3`` with
        probability at most 10%).

    Returns
    -------
    Diagnosis
        ``.explanation`` (the structured explanation), ``.ok``, ``.verdict``, ``.text``.

    Notes
    -----
    Every explanation is ``candidate = sign * prod(symbol ** exp) * V`` with ``V`` a variant
    in a layout: ``"true"``, ``"ggn"``, ``"empirical"``, ``"hessian"``, ``"argmax"``,
    ``"square-of-mean-gradient"`` (``batch_size`` ``B = 2 .. N``, ragged last batch
    included; ``B = N`` is ``g g^T``, ``B = 1`` the empirical Fisher), ``"mc"`` (the
    fixture's stored Monte-Carlo Fisher from its sampled labels, or under the band), and
    ``"scores"``. For a Monte-Carlo candidate the observed ``D = |c / f - F|^2`` is compared
    with the exact ``E D`` and ``sd D`` of :func:`mc_error_moments` for every factor value
    ``f``; a candidate within the band as given is never accused, and when the argmax Fisher
    itself lies within the band (saturated outputs: a sample is the argmax label with
    probability ~1) the two hypotheses are reported as indistinguishable. ``k_eff = E D(k=1)
    / D`` is the number of samples per input a correct estimate with this error would use.
    """
    fx = load_fixture(fixture)
    layout = as_option(layout, Layout, "layout").value
    loss, reduction = resolve_conventions(fx, loss, reduction)
    c, dtype = candidate_array(candidate, f"candidate ({name})")
    note = dtype_note(dtype, math.inf)
    if key is None:
        key = _infer_key(fx, c.shape)
    elif key not in DIAGNOSED_KEYS and not (_kfac_factor_key(key) and key in fx.arrays):
        raise ValueError(
            f"key: expected one of {list(DIAGNOSED_KEYS)} or a K-FAC factor of the fixture "
            f"('kfac/true/folded/G0', ...), received {key!r}"
        )
    _shape_checked(fx, c, key, name)
    if n_samples is not None:
        n_samples = check_int(n_samples, "n_samples", 1)
        if key not in ("true_fisher", "fisher_diagonal"):
            raise ValueError(
                f"n_samples: a Monte-Carlo candidate estimates the true Fisher (key "
                f"'true_fisher' or 'fisher_diagonal'), received key={key!r}"
            )
    is_factor = _kfac_factor_key(key) is not None
    kind = (
        "scores"
        if key == "scores"
        else "kfac factor"
        if is_factor
        else ("diagonal" if c.ndim == 1 else "dense")
    )
    failed = _nonfinite_diagnosis(fx, c, key, kind, layout, name, note)
    if failed is not None:
        return failed
    axes = [1] if key == "scores" else ([] if is_factor else list(range(c.ndim)))
    values = fixture_symbols(fx)
    conv = convention_factors(fx, key, loss, reduction)
    assert conv is not None  # every diagnosed key is a pure rescaling
    scale0 = conv[0] * factor_value(conv[1], values)
    given = {
        str(L): to_minifim_layout(fx.net, c, axes, L) / scale0
        for L in (LAYOUTS if axes else (layout,))
    }
    c0 = given[layout]
    ref = _reference_of(key)
    rtol = _match_rtol(fx, dtype, match_tol)
    table = FactorTable.build(fixture_symbols(fx, n_samples))
    variants = _reference_variants(fx, key, n_samples)
    fits = _exact_fits(given, variants, table, rtol)
    R = variants[0][2] if key != "scores" else fx["scores"]
    if is_factor:
        R = fx[key]
    elif key in ("empirical_fisher", "empirical_fisher_diagonal"):
        R = variants[2][2]
    elif key in ("ggn", "hessian"):
        R = variants[1 if key == "ggn" else 3][2]

    # the legacy distance table (Fisher-like keys)
    if key == "scores":
        distances = [("scores", "per-sample scores at the data labels", relative_distance(c0, R))]
    elif is_factor:
        distances = sorted(
            ((v, f"the {v} K-FAC's factor", relative_distance(c0, M)) for v, _, M in variants),
            key=lambda t: t[2],
        )
    else:
        table_rows = fisher_variants(fx, diagonal=(kind == "diagonal"))
        distances = sorted(
            ((v, d, relative_distance(c0, M)) for v, d, M in table_rows), key=lambda t: t[2]
        )
    closest = distances[0][0]
    rr = float(np.vdot(R, R))
    scale = float(np.vdot(c0, R)) / rr if rr > 0 else None

    # Monte-Carlo band
    sampled = n_samples is not None
    band: list[dict] = []
    mc: dict[str, Any] | None = None
    mc_skipped = ""
    e1 = None
    F = fx["fisher_diagonal"] if kind == "diagonal" else fx["true_fisher"]
    if key in ("true_fisher", "fisher_diagonal"):
        try:
            e1, _ = mc_error_moments(fx.net, fx.theta, fx.X, 1, diagonal=(kind == "diagonal"))
        except (ValueError, MemoryError) as err:  # too many outcomes, or over the budget
            mc_skipped = str(err)
    observed = float(np.sum((c0 - F) ** 2)) if c0.shape == F.shape else math.nan
    if e1 is not None:
        mc = {
            "k": n_samples,
            "k_eff": (e1 / observed) if observed > 0 else math.inf,
            "observed": observed,
        }
    z0 = zs0 = math.inf
    consistent0 = False
    mc_text = ""
    if sampled and e1 is not None:
        assert mc is not None and n_samples is not None
        mean, var = mc_error_moments(
            fx.net, fx.theta, fx.X, n_samples, diagonal=(kind == "diagonal")
        )
        std = math.sqrt(var)

        def zscore(D: float) -> float:
            return (D - mean) / std if std > 0 else (0.0 if D <= mean else math.inf)

        z0 = zscore(observed)
        sd_alpha = scale_statistic_sd(fx, n_samples, diagonal=(kind == "diagonal"))
        ff = float(np.vdot(F, F))
        zs0 = (float(np.vdot(c0, F)) / ff - 1.0) / sd_alpha if sd_alpha > 0 else 0.0
        consistent0 = z0 <= z_band and abs(zs0) <= z_band
        band = _band_fits(given, F, (mean, std, sd_alpha), table, z_band)
        arg = next(M for v, _, M in variants if v == "argmax")
        z_arg = zscore(float(np.sum((arg - F) ** 2)))
        mc.update(
            {
                "expected": mean,
                "std": std,
                "z": z0,
                "z_band": z_band,
                "scale": float(np.vdot(c0, F)) / ff if ff > 0 else None,
                "scale_std": sd_alpha,
                "z_scale": float(zs0),
                "within_band": bool(consistent0),
                "argmax_z": z_arg,
                "indistinguishable": bool(z_arg <= z_band),
            }
        )
        if not consistent0:
            N, k = fx.N, n_samples
            rescaled = []
            for factor, what in (
                (k, f"summed over the k = {k} samples instead of averaged"),
                (N, f"summed over the N = {N} inputs instead of averaged"),
                (N * k, "summed over inputs and samples"),
            ):
                D = float(np.sum((c0 / factor - F) ** 2))
                zf = zscore(D)
                if factor > 1 and zf <= z_band:
                    rescaled.append((abs(zf), factor, what, D, zf))
            if rescaled:  # the rescaling that fits best (ambiguous when k is close to N)
                _, factor, what, D, zf = min(rescaled)
                mc["rescaled"] = {"factor": factor, "observed": D, "z": zf}
                mc_text = (
                    f"a Monte-Carlo Fisher {what} (candidate / {factor} is within "
                    f"the sampling band, z = {zf:.2f})"
                )
        mc["z"] = _finite_or_str(mc["z"])
        mc["argmax_z"] = _finite_or_str(mc["argmax_z"])
    if mc is not None:
        mc["k_eff"] = _finite_or_str(mc["k_eff"])

    # choose the main explanation; list every other one
    seen: set = set()
    pool: list[tuple[int, dict]] = []
    for rank_group, exs in ((0, fits), (1, band)):
        for ex in exs:
            ident = (
                ex["variant"],
                tuple(sorted(ex["factors"].items())),
                ex["sign"],
                ex["batch_size"],
                ex["layout"],
            )
            if ident in seen:
                continue
            seen.add(ident)
            pool.append((rank_group, ex))
    pool.sort(key=lambda t: (t[0], _rank(t[1], ref, layout)))
    main: dict | None = None
    if sampled and consistent0:
        main = next(
            (
                ex
                for _, ex in pool
                if ex["variant"] == "mc"
                and not ex["factors"]
                and ex["sign"] == 1
                and ex["layout"] == layout
            ),
            None,
        )
        if main is None:  # pragma: no cover - the band's own row (f = 1) is in the pool
            main = {"variant": "mc", "factors": {}, "sign": 1, "batch_size": None}
            main["layout"] = layout
            pool.insert(0, (1, main))
        main["z"] = float(z0)
        main["z_scale"] = float(zs0)
    elif pool:
        main = pool[0][1]
    explanation: dict[str, Any]
    if main is None:
        explanation = {
            "variant": None,
            "factors": {},
            "sign": None,
            "batch_size": None,
            "layout": None,
            "alternatives": [],
            "relative_distance": None,
        }
    else:
        explanation = _public(main, False)
        bound = alternative_bound(main["factors"])
        pool = [
            (g, ex)
            for g, ex in pool
            if ex is main or sum(abs(e) for e in ex["factors"].values()) <= bound
        ]
        explanation["alternatives"] = [_public(ex, sampled) for _, ex in pool if ex is not main]
        explanation["relative_distance"] = main.get("relative_distance")
    if sampled:
        explanation["k"] = n_samples
        z_main = main["z"] if main is not None and "z" in main else z0
        explanation["z"] = _finite_or_str(float(z_main))
        zs_main = main.get("z_scale", zs0) if main is not None else zs0
        explanation["z_scale"] = _finite_or_str(float(zs_main))
        explanation["consistent"] = bool(
            main is not None and ("z" in main or (main["variant"] == "mc" and not main["factors"]))
        )

    def is_exact(ex: dict, variant: str) -> bool:
        return (
            ex["variant"] == variant
            and not ex["factors"]
            and ex["sign"] == 1
            and ex["layout"] == layout
            and ex["batch_size"] is None
            and "relative_distance" in ex
        )

    candidates = [ex for _, ex in pool]
    exact_ref = any(is_exact(ex, ref) for ex in candidates)
    exact_mc = sampled and any(is_exact(ex, "mc") for ex in candidates)
    ok = exact_ref or bool(consistent0) or exact_mc

    fix: dict = {}
    if not ok:
        for ex in candidates:
            fix = _find_fix(fx, key, ex, ref, loss, reduction, layout)
            if fix:
                break

    # the verdict
    n_alt = len(explanation["alternatives"])
    plural = "s" if n_alt != 1 else ""
    also = f"; {n_alt} other explanation{plural} fit equally well" if n_alt else ""
    if sampled and consistent0:
        assert mc is not None
        verdict = (
            f"consistent with a Monte-Carlo estimate of the true Fisher with k = {n_samples} "
            f"samples per input (|c - F|^2 = {observed:.3e}, z = {z0:.2f} <= {z_band:g}; "
            f"scale <c, F> / <F, F> = {mc['scale']:.4g}, z = {zs0:.2f}, |z| <= {z_band:g})"
        )
        if exact_mc:
            verdict += "; it is the fixture's Monte-Carlo Fisher from its stored labels"
        if mc.get("indistinguishable"):
            verdict += (
                "; here the Monte-Carlo and argmax hypotheses cannot be told apart: the "
                f"argmax Fisher itself lies within the k-sample band (z = {mc['argmax_z']:.2f})"
                if isinstance(mc["argmax_z"], float)
                else ""
            )
        verdict += also
    elif main is not None:
        d = main.get("relative_distance")
        how = f"relative distance {d:.2e}" if d is not None else f"z = {main['z']:.2f}"
        if ok:
            verdict = f"the candidate is the exact {main['variant']!r} variant: " + _describe(
                main, fx, key, n_samples
            )
        elif "z" in main:
            verdict = (
                "the candidate looks like "
                + _describe(main, fx, key, n_samples)
                + (f" (within the k = {n_samples} sampling band)")
            )
        else:
            verdict = f"the candidate is the {main['variant']!r} variant: " + _describe(
                main, fx, key, n_samples
            )
        verdict += f" ({how})"
        if not ok:
            verdict += (
                f"; expected {key!r} (a single K-FAC factor's scale is defined only with its "
                "partner: compare the pair whole with check)"
                if is_factor
                else f"; expected {_VARIANT_TEXT.get(ref, ref)}"
            )
            if fix:
                verdict += (
                    " (it is exactly that under "
                    + ", ".join(f"{k}={v!r}" for k, v in fix.items())
                    + ")"
                )
        verdict += also
    elif mc_text:
        verdict = f"the candidate looks like {mc_text}"
    else:
        desc = dict((v, d) for v, d, _ in distances)
        verdict = (
            f"no variant matches (closest: {closest!r}, {desc[closest]}, at relative "
            f"distance {distances[0][2]:.3g}); nothing is claimed"
        )
        if sampled and mc is not None and "expected" in mc:
            verdict += (
                f"; as a Monte-Carlo estimate with k = {n_samples} its error is "
                f"{observed / mc['expected']:.3g} x the expected one (z = "
                f"{mc['z'] if isinstance(mc['z'], str) else round(mc['z'], 2)}): "
                "not explained by sampling"
            )
        elif sampled and mc_skipped:
            verdict += f"; the Monte-Carlo band was not computed ({mc_skipped})"
    return Diagnosis(
        name, kind, distances, verdict, closest, ok, mc, scale, note, key, explanation, fix
    )


def kfac_band(
    fixture: FixtureLike,
    candidate: Any,
    n_samples: int,
    *,
    bias: str = "folded",
    z_band: float = 3.0,
) -> dict:
    """Test a Monte-Carlo K-FAC against the exact sampling band of its dense error.

    Parameters
    ----------
    fixture : Fixture or path
    candidate : KFACFactors or ndarray (P, P)
        The candidate's factors (in minifim's conventions) or its dense matrix.
    n_samples : int
        ``k`` sampled labels per input.
    bias : {"folded", "separate"}
    z_band : float
        As in :func:`diagnose`.

    Returns
    -------
    dict
        ``k``, ``observed`` ``|K_c - K|^2`` against the exact K-FAC, ``expected`` and ``std``
        (:func:`minifim.geometry.moments.mc_kfac_error_moments`), ``z`` and ``consistent``
        (``z <= z_band``); the scale split between ``A`` and ``G`` does not enter (the dense
        matrix is compared).
    """
    fx = load_fixture(fixture)
    k = check_int(n_samples, "n_samples", 1)
    dense = candidate.to_dense() if hasattr(candidate, "to_dense") else np.asarray(candidate)
    K = fx.kfac("true", bias).to_dense()
    if dense.shape != K.shape:
        raise ValueError(
            f"candidate: expected a K-FAC of shape {K.shape}, received shape {dense.shape}"
        )
    mean, var = mc_kfac_error_moments(fx.net, fx.theta, fx.X, k, bias=bias)
    std = math.sqrt(var)
    observed = float(np.sum((dense - K) ** 2))
    z = (observed - mean) / std if std > 0 else (0.0 if observed <= mean else math.inf)
    return {
        "k": k,
        "bias": bias,
        "observed": observed,
        "expected": mean,
        "std": std,
        "z": _finite_or_str(z),
        "z_band": z_band,
        "consistent": bool(z <= z_band),
    }
