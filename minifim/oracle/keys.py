"""Which fixture array a candidate key names, and bringing a candidate to the fixture's
conventions (layout and reduction).

A candidate key is resolved by an explicit mapping, then exactly, then as a state-dict key
(``"0.weight"`` -> ``"state_dict/0.weight"``), then through :data:`ALIASES` (lower-cased).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .fixtures import Fixture
from .layouts import to_minifim_layout

__all__ = ["ALIASES", "resolve_key", "convert"]

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
    fixture: Fixture, key: str, arr: np.ndarray, layout: str, reduction: str
) -> tuple[np.ndarray, str]:
    """Bring a candidate array for fixture array ``key`` into minifim's conventions.

    Returns ``(array, note)``: the array with its parameter axes permuted from ``layout`` to
    minifim's (a weight matrix is transposed) and, for ``reduction="sum"``, divided by
    ``N ** reduction_power``; the note says when the array is not a pure rescaling of its
    sum-reduced value (compared as given).
    """
    info = fixture.array_info(key)
    note = ""
    if layout != "pytorch":
        if info.get("role") == "weight" and arr.ndim == 2:
            arr = arr.T
        axes = [ax for ax in info["param_axes"] if ax < arr.ndim and arr.shape[ax] == fixture.P]
        arr = to_minifim_layout(fixture.net, arr, axes, layout)
    if reduction == "sum":
        power = info.get("reduction_power")
        if power is None:
            note = f"{key!r} is not a pure rescaling of the sum-reduced quantity; compared as given"
        elif power:
            arr = arr / float(fixture.N) ** power
    return arr, note
