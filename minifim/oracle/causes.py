"""Likely causes of a mismatch: the reference transformed by each known mistake.

Each hypothesis transforms the reference (transpose, another parameter order, a known factor
such as ``N`` or the MSE's 2, a mistaken variant computed on the fixture such as the
empirical Fisher or argmax labels) and is reported when the candidate matches it to
``cause_tol`` in relative Frobenius distance.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg

from ..geometry.curvature import curvature_matrix, fisher_diagonal, square_of_mean_gradient
from .comparison import relative_distance
from .fixtures import Fixture
from .layouts import LAYOUTS, from_minifim_layout

__all__ = ["CAUSE_TOL", "likely_causes"]

CAUSE_TOL = 1e-4


def _known_factors(fixture: Fixture, key: str) -> list[tuple[float, str]]:
    N = fixture.N
    info = fixture.manifest["arrays"].get(key, {})
    power = info.get("reduction_power")
    lik = fixture.manifest["model"]["likelihood"]
    sigma = float(fixture.manifest["model"].get("sigma", 1.0))
    out = []
    if power:
        out.append(
            (
                float(N) ** power,
                f"sum instead of mean over the N = {N} samples "
                f"(factor N{'' if power == 1 else f'^{power}'})",
            )
        )
        out.append((float(N) ** -power, f"divided by N = {N} once too often (mean of a mean)"))
    out.append(
        (
            -1.0,
            "sign flipped (gradient of the log-likelihood instead of the negative "
            "log-likelihood, or a descent step stored as an ascent step)",
        )
    )
    if lik == "gaussian":
        mse = (
            "the MSE |y - f|^2 used where minifim's Gaussian NLL is |y - f|^2 / (2 sigma^2) "
            f"(sigma = {sigma:g})"
        )
        out += [
            (2.0, f"factor 2: {mse}"),
            (4.0, f"factor 4: squared gradients of {mse}"),
            (0.5, "factor 1/2: the Gaussian NLL's 1/2 applied twice"),
        ]
        if sigma != 1.0:
            out += [
                (
                    sigma**2,
                    f"sigma ignored: the Fisher for sigma = 1 instead of sigma = "
                    f"{sigma:g} (factor sigma^2)",
                ),
                (2 * sigma**2, "the Hessian of the MSE |y - f|^2 (factor 2 sigma^2)"),
                (4 * sigma**4, "squared gradients of the MSE (factor 4 sigma^4)"),
                (sigma**-2, f"1/sigma^2 applied twice (sigma = {sigma:g})"),
            ]
    else:
        out += [
            (2.0, "factor 2 (a loss with an extra factor 2, e.g. the MSE convention)"),
            (0.5, "factor 1/2"),
        ]
    return out


_ALTERNATIVES = {
    "true_fisher": [
        (
            "empirical_fisher",
            "the empirical Fisher (data labels) instead of the true Fisher (labels from the model)",
        ),
        ("hessian", "the Hessian of the NLL instead of the Fisher"),
    ],
    "empirical_fisher": [("true_fisher", "the true Fisher instead of the empirical Fisher")],
    "ggn": [
        ("empirical_fisher", "the empirical Fisher instead of the GGN"),
        ("hessian", "the Hessian instead of the GGN"),
    ],
    "hessian": [
        (
            "ggn",
            "the GGN / Fisher instead of the Hessian (second-order term of the network dropped)",
        )
    ],
    "fisher_diagonal": [
        (
            "empirical_fisher_diagonal",
            "the empirical Fisher's diagonal (data labels) instead of the true Fisher's",
        )
    ],
    "empirical_fisher_diagonal": [
        ("fisher_diagonal", "the true Fisher's diagonal instead of the empirical one")
    ],
}


def _computed_alternatives(fixture: Fixture, key: str) -> list[tuple[np.ndarray, str]]:
    """Mistaken variants of ``key`` computed on the fixture (Fisher-like arrays only)."""
    net, theta, X, y = fixture.net, fixture.theta, fixture.X, fixture.y
    out = []
    if key in ("true_fisher", "fisher_diagonal"):
        diag = key == "fisher_diagonal"
        out.append(
            (
                square_of_mean_gradient(net, theta, X, y, diagonal=diag),
                "the square of the batch-mean gradient (g g^T, diagonal g^2) instead of "
                "the mean of per-sample squared scores",
            )
        )
        arg = (
            fisher_diagonal(net, theta, X, None, "argmax")
            if diag
            else curvature_matrix(net, theta, X, None, "argmax")
        )
        out.append(
            (
                arg,
                "labels taken by argmax of the prediction instead of sampled or "
                "enumerated from the model",
            )
        )
    lik = net.likelihood
    if key == "ggn" and not lik.canonical:
        out.append(
            (
                fixture["true_fisher"],
                f"the true Fisher (the expected loss Hessian) instead of the GGN at the data "
                f"labels: equal only for canonical links, not for {lik.describe()}",
            )
        )
        if not lik.hessian_psd:
            out.append(
                (
                    _positive_part_ggn(fixture),
                    "the GGN with each label's loss Hessian H_f(y) clipped to its positive "
                    "part (a PSD square root of the indefinite H_f(y)) instead of the signed GGN",
                )
            )
    if key == "true_fisher" and not lik.canonical:
        out.append(
            (
                fixture["ggn"],
                f"the GGN at the data labels instead of the true Fisher (they differ for the "
                f"non-canonical {lik.describe()})",
            )
        )
    if key == "fisher_eigenvalues":
        out.append(
            (
                scipy.linalg.eigvalsh(fixture["empirical_fisher"])[::-1],
                "eigenvalues of the empirical Fisher instead of the true Fisher",
            )
        )
        out.append(
            (
                scipy.linalg.eigvalsh(fixture["true_fisher"]),
                "eigenvalues in ascending order (the fixture stores them descending)",
            )
        )
    if key == "ngd_step":
        P = fixture.P
        lam = fixture.damping
        out.append(
            (
                scipy.linalg.solve(
                    fixture["empirical_fisher"] + lam * np.eye(P),
                    fixture["gradient"],
                    assume_a="pos",
                ),
                "the empirical Fisher used in the natural-gradient step",
            )
        )
        out.append(
            (
                scipy.linalg.solve(
                    fixture.N * fixture["true_fisher"] + lam * np.eye(P),
                    fixture["gradient"],
                    assume_a="pos",
                ),
                "the sum-reduced Fisher N F with the mean gradient",
            )
        )
    if key.startswith("kfac/"):
        _, fisher, bias, fac = key.split("/")
        other = "empirical" if fisher == "true" else "true"
        alt = f"kfac/{other}/{bias}/{fac}"
        if alt in fixture.arrays:
            out.append(
                (
                    fixture[alt],
                    f"the K-FAC factor of the {other} Fisher instead of the {fisher} one",
                )
            )
    return out


def _positive_part_ggn(fixture: Fixture) -> np.ndarray:
    """``1/N sum_n J_n^T P_n^T P_n J_n`` with ``P_n`` the positive part of ``H_f(y_n)``."""
    from ..core.scores import output_jacobians

    net, theta, X, y = fixture.net, fixture.theta, fixture.X, fixture.y
    J = output_jacobians(net, theta, X)
    P, _ = net.likelihood.hessian_factors(net.forward(theta, X), y)
    U = np.einsum("nkc,ncp->nkp", P, J).reshape(-1, net.num_params)
    return U.T @ U / X.shape[0]


def likely_causes(
    fixture: Fixture,
    key: str,
    candidate: Any,
    *,
    layout: str = "pytorch",
    cause_tol: float = CAUSE_TOL,
) -> list[str]:
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
            d = relative_distance(cand.T, ref)
            if d <= cause_tol:
                found.append(
                    (
                        d,
                        "transposed layout: the candidate is stored as (in, out) "
                        "(JAX/flax kernel or x @ W code); minifim and PyTorch use "
                        "(out, in)",
                    )
                )
        if cand.size == ref.size and not found:
            found.append(
                (
                    math.inf,
                    f"same number of entries in another shape {cand.shape}: "
                    f"reshape to {ref.shape} (check row- vs column-major)",
                )
            )
        return [c for _, c in sorted(found, key=lambda t: t[0])]
    if cand.ndim == 2 and cand.shape[0] == cand.shape[1] and info.get("role") == "weight":
        d = relative_distance(cand.T, ref)
        if d <= cause_tol:
            found.append(
                (
                    d,
                    "transposed layout: the weight is stored as (in, out); minifim "
                    "and PyTorch use (out, in)",
                )
            )
    axes = list(info.get("param_axes", []))
    if axes:
        net = fixture.net
        given = from_minifim_layout(net, cand, axes, layout)  # the candidate as it was passed
        for other in LAYOUTS:
            if other == layout:
                continue
            d = relative_distance(given, from_minifim_layout(net, ref, axes, other))
            if d > cause_tol:
                continue
            if other == "pytorch":
                what = (
                    f"the candidate is in minifim's PyTorch order (W (out, in), then b); "
                    f"drop layout={layout!r}"
                )
            elif other == "in-out":
                what = (
                    "transposed weight layout: the weights are flattened as (in, out) "
                    "(x @ W code); minifim and PyTorch flatten (out, in); pass "
                    "layout='in-out'"
                )
            else:
                what = (
                    "a different parameter order: the candidate is in JAX ravel_pytree "
                    "order (bias before kernel (in, out), layers sorted by name); pass "
                    "layout='jax'"
                )
            found.append((d, what))
    for factor, what in _known_factors(fixture, key):
        d = relative_distance(cand, factor * ref)
        if d <= cause_tol:
            found.append((d, f"{what} [candidate = {factor:.6g} x reference]"))
    for alt_key, what in _ALTERNATIVES.get(key, []):
        d = relative_distance(cand, fixture[alt_key])
        if d <= cause_tol:
            found.append((d, what))
    if not found:
        for alt, what in _computed_alternatives(fixture, key):
            if alt.shape == cand.shape:
                d = relative_distance(cand, alt)
                if d <= cause_tol:
                    found.append((d, what))
    if not found:
        rr = float(np.vdot(ref, ref))
        if rr > 0:
            alpha = float(np.vdot(cand, ref)) / rr
            d = relative_distance(cand, alpha * ref)
            if d <= cause_tol and abs(alpha - 1) > 10 * cause_tol:
                found.append(
                    (d, f"a missing or extra scale factor: candidate = {alpha:.6g} x reference")
                )
    return [c for _, c in sorted(found, key=lambda t: t[0])]
