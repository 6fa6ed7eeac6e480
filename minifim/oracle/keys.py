"""Which fixture array a candidate key names, and bringing a candidate to the fixture's
conventions (layout, reduction and loss convention).

A candidate key is resolved by an explicit mapping, then exactly, then as a state-dict key
(``"0.weight"`` -> ``"state_dict/0.weight"``), then through :data:`ALIASES` (lower-cased).

**Loss conventions** (:class:`~minifim.options.LossConvention`). A library whose loss is
``L = r * sum_n l_n`` with the per-sample loss ``l_n = s * (-log p(y_n | x_n)) + const``
(``r = 1/N`` for ``"-mean"``, 1 for ``"-sum"``) holds every array of the fixture scaled by a
power of ``s`` and of the reduction:

==============================  ==================================  ======================
convention                      ``s`` (per-sample loss factor)       reduction
==============================  ==================================  ======================
``nll``                         1                                   ``reduction=`` (mean)
``mse-mean`` (``MSELoss``)      ``2 sigma^2 / C``                    mean over ``N C``
``mse-sum``                     ``2 sigma^2``                        sum
``ce-mean`` / ``ce-sum``        1                                   mean / sum
``bce-mean`` / ``bce-sum``      ``1 / C`` / 1                        mean over ``N C`` / sum
==============================  ==================================  ======================

A curvature of the loss (Hessian, GGN, the true and Monte-Carlo Fisher as curvlinops and
PyTorch K-FAC code define them, so that ``E[MC] = GGN``; their diagonals, eigenvalues, the
K-FAC ``G`` of these) and the gradient scale with ``s``; the empirical Fisher (squared
per-sample loss gradients: its diagonal and K-FAC ``G`` too) with ``s^2``; the per-sample
scores become per-sample loss gradients ``-s * scores`` (the gradient of one sample's loss
term, as a batch of one: ``torch.func.vmap(grad(...))``); the loss is computed from the
stored outputs and targets. Then the reduction multiplies by ``N ** reduction_power``.
Parameters, data, outputs, Jacobians, the output Fisher and the ``A`` factors do not change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..options import LossConvention, Reduction, as_option
from .explanation import factor_value, symbol_values
from .fixtures import Fixture
from .layouts import to_minifim_layout

__all__ = [
    "ALIASES",
    "LOSSES",
    "LOSS_FACTORS",
    "resolve_key",
    "resolve_conventions",
    "loss_power",
    "convention_factors",
    "fixture_symbols",
    "convert",
]

#: The loss conventions, as a public constant.
LOSSES: tuple[LossConvention, ...] = tuple(LossConvention)

#: The per-sample loss factor ``s`` of each convention as a factorisation over the symbols.
LOSS_FACTORS: dict[str, dict[str, int]] = {
    "nll": {},
    "mse-mean": {"2": 1, "sigma": 2, "C": -1},
    "mse-sum": {"2": 1, "sigma": 2},
    "ce-mean": {},
    "ce-sum": {},
    "bce-mean": {"C": -1},
    "bce-sum": {},
}
_LOSS_LIKELIHOOD = {"mse": "gaussian", "ce": "categorical", "bce": "bernoulli"}

#: Common names of the fixture's arrays in other code (lower-cased candidate key -> fixture key).
ALIASES: dict[str, str] = {
    "f": "true_fisher",
    "fisher": "true_fisher",
    "fim": "true_fisher",
    "ef": "empirical_fisher",
    "emp_fisher": "empirical_fisher",
    "empirical": "empirical_fisher",
    "gauss_newton": "ggn",
    "gn": "ggn",
    "h": "hessian",
    "hess": "hessian",
    "g": "gradient",
    "grad": "gradient",
    "grads_mean": "gradient",
    "s": "scores",
    "per_sample_grads": "scores",
    "per_sample_scores": "scores",
    "grads": "scores",
    "per_sample_gradients": "scores",
    "j": "jacobians",
    "jac": "jacobians",
    "jacobian": "jacobians",
    "output_jacobians": "jacobians",
    "eigvals": "fisher_eigenvalues",
    "eigenvalues": "fisher_eigenvalues",
    "fisher_eigvals": "fisher_eigenvalues",
    "diag": "fisher_diagonal",
    "fisher_diag": "fisher_diagonal",
    "diag_f": "fisher_diagonal",
    "diag_fisher": "fisher_diagonal",
    "empirical_diag": "empirical_fisher_diagonal",
    "diag_ef": "empirical_fisher_diagonal",
    "params": "theta",
    "flat_params": "theta",
    "parameters": "theta",
    "logits": "outputs",
    "f_x": "outputs",
    "ngd": "ngd_step",
    "natural_gradient": "ngd_step",
    "nat_grad": "ngd_step",
    "nll": "loss",
    "lambda": "output_fisher",
}


def resolve_key(
    fixture: Fixture, cand_key: str, mapping: Mapping[str, str] | None = None
) -> str | None:
    """The fixture array named by candidate key ``cand_key``, or ``None``.

    Tried in order: ``mapping[cand_key]`` (candidate key -> fixture key), ``cand_key`` itself,
    the state-dict key ``"state_dict/" + cand_key``, then :data:`ALIASES` of the lower-cased
    key (``"F"`` -> ``"true_fisher"``).
    """
    mapping = mapping or {}
    if cand_key in mapping:
        return mapping[cand_key]
    if cand_key in fixture.arrays:
        return cand_key
    if f"state_dict/{cand_key}" in fixture.arrays:
        return f"state_dict/{cand_key}"
    return ALIASES.get(cand_key.lower())


def convert(
    fixture: Fixture,
    key: str,
    arr: np.ndarray,
    layout: str,
    reduction: str,
    loss: str = "nll",
) -> tuple[np.ndarray, str]:
    """Bring a candidate array for fixture array ``key`` into minifim's conventions.

    Returns ``(array, note)``: the array with its parameter axes permuted from ``layout`` to
    minifim's (a weight matrix is transposed), then divided by ``sign * prod(symbol ** exp)``
    of :func:`convention_factors` (for ``loss="nll"``: ``N ** reduction_power`` under
    ``reduction="sum"``; the loss is converted exactly, constant included). Comparing the
    result with ``fixture[key]`` at a relative tolerance is comparing the candidate with the
    reference converted to its conventions (an absolute tolerance is in minifim's units). The
    note says when the array is not a pure rescaling (compared as given).
    """
    info = fixture.array_info(key)
    note = ""
    if layout != "pytorch":
        if info.get("role") == "weight" and arr.ndim == 2:
            arr = arr.T
        axes = [ax for ax in info["param_axes"] if ax < arr.ndim and arr.shape[ax] == fixture.P]
        arr = to_minifim_layout(fixture.net, arr, axes, layout)
    if key == "loss" and loss != "nll":
        return _converted_loss(fixture, arr, loss), note
    conv = convention_factors(fixture, key, loss, reduction)
    if conv is None:
        what = "sum-reduced quantity" if loss == "nll" else f"quantity under loss={loss!r}"
        note = f"{key!r} is not a pure rescaling of the {what}; compared as given"
    else:
        sign, factors = conv
        if factors or sign != 1:
            arr = arr / (sign * factor_value(factors, fixture_symbols(fixture)))
    return arr, note


def resolve_conventions(fixture: Fixture, loss: str, reduction: str | None) -> tuple[str, str]:
    """``(loss, reduction)`` checked against each other and the fixture's likelihood.

    ``"-mean"``/``"-sum"`` conventions fix the reduction (``reduction=None`` takes it; a
    contradicting ``reduction`` is a ``ValueError``); ``"nll"`` takes ``reduction`` (default
    ``"mean"``). ``mse-*`` need a Gaussian likelihood, ``ce-*`` a categorical, ``bce-*`` a
    Bernoulli one.
    """
    loss = as_option(loss, LossConvention, "loss").value
    if reduction is not None:
        reduction = as_option(reduction, Reduction, "reduction").value
    if loss == "nll":
        return loss, reduction or "mean"
    family, implied = loss.rsplit("-", 1)
    if reduction is not None and reduction != implied:
        raise ValueError(
            f"loss: {loss!r} sums with reduction {implied!r}, but reduction={reduction!r} "
            f"was given; drop the reduction or use loss='{family}-{reduction}'"
        )
    lik = fixture.net.likelihood.name
    if _LOSS_LIKELIHOOD[family] != lik:
        fitting = [c for c in LOSSES if c == "nll" or _LOSS_LIKELIHOOD[c.split("-")[0]] == lik]
        raise ValueError(
            f"loss: {loss!r} is a loss of a {_LOSS_LIKELIHOOD[family]} likelihood; the "
            f"fixture's likelihood is {lik!r}: expected one of {[str(c) for c in fitting]}"
        )
    return loss, implied


def loss_power(key: str) -> int | None:
    """How array ``key`` scales with the per-sample loss factor ``s``: ``s ** power``.

    1 for the curvatures of the loss, their diagonals and eigenvalues, the gradient, the
    scores (with a sign flip, see :func:`convention_factors`) and the K-FAC ``G`` of a true
    or Monte-Carlo Fisher; 2 for the empirical Fisher, its diagonal and its K-FAC ``G``; 0
    for what the loss does not change; ``None`` for the loss itself (not a rescaling) and the
    NGD step (``(s F + lambda I)^{-1} s g`` is not a pure rescaling).
    """
    if key in ("loss", "ngd_step", "trajectory/loss"):
        return None
    if key in ("empirical_fisher", "empirical_fisher_diagonal"):
        return 2
    if key.startswith(("kfac/", "kfac_dense/", "mc/kfac/")):
        parts = key.split("/")
        if parts[-1].startswith("A"):
            return 0
        kind = parts[1] if key.startswith(("kfac/", "kfac_dense/")) else "mc"
        return 2 if kind == "empirical" else 1
    if key in (
        "true_fisher",
        "ggn",
        "hessian",
        "fisher_diagonal",
        "fisher_eigenvalues",
        "gradient",
        "scores",
        "mc/fisher",
        "mc/fisher_diagonal",
    ) or key.startswith("trajectory/gradient"):
        return 1
    return 0


def fixture_symbols(fixture: Fixture, n_samples: int | None = None) -> dict[str, float]:
    """The fixture's symbol values ``N``, ``N-1``, ``C``, ``2`` and ``sigma`` (when the
    likelihood has one), and ``k = n_samples`` for a sampled candidate, those equal to 1
    left out (:func:`~.explanation.symbol_values`)."""
    lik = fixture.net.likelihood
    sigma = float(fixture.manifest["model"].get("sigma", 1.0)) if lik.name == "gaussian" else None
    return symbol_values(fixture.N, fixture.net.output_dim, sigma, n_samples)


def convention_factors(
    fixture: Fixture, key: str, loss: str, reduction: str
) -> tuple[int, dict[str, int]] | None:
    """``(sign, factors)`` with ``candidate = sign * prod(symbol ** exp) * fixture[key]`` for
    a correct candidate in the convention ``(loss, reduction)``; ``None`` when the array is
    not a pure rescaling (the loss, the NGD step, a trajectory state entry under ``"sum"``).

    Symbols whose value is 1 in the fixture are dropped (:func:`fixture_symbols`).
    """
    power = loss_power(key)
    info = fixture.array_info(key)
    red_power = info.get("reduction_power")
    factors: dict[str, int] = {}
    if power is None:
        if loss == "nll" and (reduction == "mean" or red_power is not None):
            factors = {"N": int(red_power)} if reduction == "sum" and red_power else {}
            return 1, _drop_unit(fixture, factors)
        return None
    for s, e in LOSS_FACTORS[loss].items():
        factors[s] = factors.get(s, 0) + power * e
    if reduction == "sum":
        if red_power is None:
            return None
        if red_power:
            factors["N"] = factors.get("N", 0) + int(red_power)
    sign = -1 if key == "scores" and loss != "nll" else 1
    return sign, _drop_unit(fixture, factors)


def _drop_unit(fixture: Fixture, factors: Mapping[str, int]) -> dict[str, int]:
    values = fixture_symbols(fixture)
    return {s: e for s, e in factors.items() if e and s in values}


def _converted_loss(fixture: Fixture, arr: np.ndarray, loss: str) -> np.ndarray:
    """A candidate ``loss`` in convention ``loss`` as minifim's mean NLL."""
    N, C = fixture.N, fixture.net.output_dim
    if loss == "nll":
        return arr
    family, reduction = loss.rsplit("-", 1)
    arr = arr / N if reduction == "sum" else arr
    if family == "bce" and reduction == "mean":
        arr = arr * C
    if family == "mse":
        sigma = float(fixture.manifest["model"].get("sigma", 1.0))
        per_sample = arr * C if reduction == "mean" else arr  # sum over outputs, mean over N
        arr = per_sample / (2 * sigma**2) + 0.5 * C * math.log(2 * math.pi * sigma**2)
    return arr
