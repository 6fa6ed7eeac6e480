"""Versioned reference fixtures: every exact quantity of one model, in one ``.npz`` file.

A fixture is the ground truth another library is tested against. Contract:

- **Format.** One uncompressed ``.npz`` of float64 arrays, loaded with ``allow_pickle=False``,
  plus a JSON manifest stored inside it as a ``uint8`` array of UTF-8 bytes under the key
  ``"manifest"``. The manifest states the schema version, the minifim version, the model
  (``MLP.config()``: sizes, activation, likelihood, sigma), the parameter order and layout,
  the reduction convention, the seeds, the command that made the file, and for every array
  its shape, its parameter axes, how it scales under ``reduction="sum"`` and what it is.
- **Conventions.** Flat parameters ``theta: (P,)`` in the order ``W0, b0, W1, b1, ...`` with
  each ``W`` in PyTorch layout ``(out, in)`` flattened row-major; the same weights are stored
  per layer under the keys of ``torch.nn.Sequential(Linear, act, Linear, ...).state_dict()``
  (``"state_dict/0.weight"``, ...). Every curvature, the gradient and the loss are **means**
  over the ``N`` samples (``reduction="mean"``); ``reduction_power`` in the manifest says how a
  quantity scales to the sum (``N ** power``). Categorical labels are stored as float64 with
  integer values.
- **Contents** (see :data:`ARRAY_DOCS`): ``theta``, the state dict, ``X``, ``y``, outputs,
  loss, gradient of the mean NLL, per-sample scores ``(N, P)``, output Jacobians
  ``(N, C, P)``, output-space Fisher ``Lambda: (N, C, C)``, the true Fisher, empirical Fisher,
  GGN and Hessian ``(P, P)``, the true and empirical Fisher diagonals, the eigenvalues of the
  true Fisher (descending), the NGD direction ``(F + lambda I)^{-1} g`` for the stated
  ``lambda``, and K-FAC factors for both Fisher kinds (true = exact expectation, "type-2";
  empirical) and both bias conventions (folded, separate). Optionally a trajectory: per-step
  arrays ``trajectory/...`` with the step as their first axis (``K + 1`` rows for ``K`` steps,
  row 0 the initial point).
- **Deterministic.** Everything is computed in float64 from a seeded ``numpy`` generator and
  written with fixed zip metadata and a fixed key order: the same command gives a
  byte-identical file on the same platform, BLAS build and BLAS thread count (across thread
  counts, LAPACK's eigenvalues and the Cholesky solve of the largest preset differ by
  roundoff, ~1e-16 and ~1e-13 relative).
- **Checked on load.** A newer schema, a missing array, an unexpected array, a wrong dtype or
  shape, or a non-finite value is a clear ``ValueError`` naming the file and the array.
"""

from __future__ import annotations

import copy
import functools
import inspect
import io
import json
import math
import numbers
import os
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg
from numpy.lib import format as npformat

from .._io import atomic_savez
from .._validation import as_generator, check_choice, check_int, check_net, check_positive
from .._version import __version__
from ..core.model import MLP
from ..core.objective import loss_and_gradient
from ..core.scores import output_jacobians, per_sample_scores
from ..geometry.curvature import (
    empirical_fisher,
    fisher_diagonal,
    ggn,
    hessian,
    true_fisher,
)
from ..geometry.kronecker import KFACFactors, kfac
from ..memory import format_bytes, memory_budget
from ..methods import optim

__all__ = [
    "SCHEMA_VERSION",
    "PRESETS",
    "TRAJECTORY_OPTIMISERS",
    "Fixture",
    "make_fixture",
    "build_fixture",
    "load_fixture",
    "save_fixture",
    "preset_names",
    "param_label",
]

SCHEMA_VERSION = 1
FORMAT = "minifim-fixture"
MANIFEST_KEY = "manifest"
FISHERS = ("true", "empirical")
BIASES = ("folded", "separate")

# --- presets ---------------------------------------------------------------------------------
#: Built-in fixture specifications (see :func:`make_fixture` for the keys). Together they cover
#: every likelihood and activation, a deep narrow net, a wide rank-deficient net (``N C < P``)
#: and saturated nets whose outputs reach magnitude 50.
PRESETS: dict[str, dict] = {
    "categorical-tanh": dict(
        sizes=[4, 8, 3], activation="tanh", likelihood="categorical", num_samples=8, seed=0,
        description="softmax classifier, one tanh hidden layer"),
    "categorical-relu": dict(
        sizes=[4, 8, 3], activation="relu", likelihood="categorical", num_samples=8, seed=1,
        description="softmax classifier, one relu hidden layer"),
    "bernoulli-sigmoid": dict(
        sizes=[4, 8, 3], activation="sigmoid", likelihood="bernoulli", num_samples=8, seed=2,
        description="three independent sigmoid outputs (multi-label), sigmoid hidden layer"),
    "gaussian-softplus": dict(
        sizes=[3, 8, 2], activation="softplus", likelihood="gaussian", sigma=0.3,
        num_samples=8, seed=3,
        description="regression with sigma = 0.3, softplus hidden layer"),
    "linear-regression": dict(
        sizes=[5, 2], activation="identity", likelihood="gaussian", sigma=1.0,
        num_samples=10, seed=4,
        description="linear-Gaussian regression (F = X~^T X~ / N kron I; K-FAC is exact)"),
    "logistic-regression": dict(
        sizes=[4, 1], activation="identity", likelihood="bernoulli", num_samples=10, seed=5,
        description="logistic regression (F = X~^T diag(p (1 - p)) X~ / N)"),
    "deep-narrow": dict(
        sizes=[3, 4, 4, 4, 4, 4, 3], activation="tanh", likelihood="categorical",
        num_samples=8, seed=6,
        description="six layers of width 4: long backpropagation paths"),
    "wide-rank-deficient": dict(
        sizes=[5, 32, 4], activation="tanh", likelihood="categorical", num_samples=4, seed=7,
        description="P = 324 parameters, N C = 16 < P: rank(F) <= N (C - 1) = 12"),
    "saturated-categorical": dict(
        sizes=[4, 8, 3], activation="relu", likelihood="categorical", num_samples=8, seed=8,
        logit_scale=50.0, labels="uniform",
        description="logits of magnitude up to 50 and uniformly random labels: p is nearly "
                    "one-hot, the true Fisher tiny, the empirical Fisher large"),
    "saturated-bernoulli": dict(
        sizes=[4, 6, 2], activation="softplus", likelihood="bernoulli", num_samples=8, seed=9,
        logit_scale=50.0, labels="uniform",
        description="logits of magnitude up to 50 with random labels (softplus stability)"),
}

SPEC_DEFAULTS = dict(sizes=None, activation="tanh", likelihood="categorical", sigma=1.0,
                     num_samples=8, seed=0, init="pytorch", input_scale=1.0, labels="model",
                     logit_scale=None, damping=1e-3, description="", theta=None, X=None,
                     y=None)
LABELS = ("model", "uniform")

# --- array documentation: (description, parameter axes, reduction power) -------------------
ARRAY_DOCS: dict[str, tuple[str, list[int], int | None]] = {
    "theta": ("flat parameters W0, b0, W1, b1, ... with W (out, in) row-major", [0], 0),
    "X": ("inputs (N, D)", [], 0),
    "outputs": ("network outputs f(x_n) (logits or means), (N, C)", [], 0),
    "loss": ("mean negative log-likelihood 1/N sum_n -log p(y_n | x_n), a 0-d array", [], 1),
    "gradient": ("gradient of the mean negative log-likelihood, (P,)", [0], 1),
    "scores": ("per-sample scores s_n = grad_theta log p(y_n | x_n) at the data labels, "
               "(N, P)", [1], 0),
    "jacobians": ("output Jacobians J_n = d f(x_n) / d theta, (N, C, P)", [2], 0),
    "output_fisher": ("output-space Fisher Lambda_n = E_{y ~ p}[g g^T], g = d log p / d f, "
                      "(N, C, C)", [], 0),
    "true_fisher": ("true Fisher 1/N sum_n E_{y ~ p_theta(y | x_n)}[s s^T] (exact, labels "
                    "from the model), (P, P)", [0, 1], 1),
    "empirical_fisher": ("empirical Fisher 1/N sum_n s_n s_n^T at the data labels, (P, P)",
                         [0, 1], 1),
    "ggn": ("generalised Gauss-Newton 1/N sum_n J_n^T H_n J_n, H_n the Hessian of -log p "
            "w.r.t. f, (P, P)", [0, 1], 1),
    "hessian": ("Hessian of the mean negative log-likelihood (autograd, symmetrised), (P, P)",
                [0, 1], 1),
    "fisher_diagonal": ("diagonal of the true Fisher, (P,)", [0], 1),
    "empirical_fisher_diagonal": ("diagonal of the empirical Fisher, (P,)", [0], 1),
    "fisher_eigenvalues": ("eigenvalues of the true Fisher, descending (scipy.linalg.eigvalsh)"
                           ", (P,)", [], 1),
    "ngd_step": ("natural-gradient direction (F + lambda I)^{-1} g with F the true Fisher, g "
                 "the gradient and lambda = manifest 'damping' (Cholesky solve); the update "
                 "is theta - lr * ngd_step. Not a pure rescaling under reduction='sum'",
                 [0], None),
}


def _kfac_doc(fisher: str, bias: str, factor: str, l: int) -> tuple[str, list[int], int]:
    if factor == "A":
        what = ("mean of a~ a~^T over the inputs a of layer {l}"
                + (" with a trailing 1 (homogeneous, bias folded)" if bias == "folded"
                   else " (no bias column: separate bias block G)"))
        return what.format(l=l), [], 0
    labels = ("expectation over the model's labels (exact, curvlinops 'type-2')"
              if fisher == "true" else "at the data labels")
    return (f"b b^T averaged over samples, {labels}; b = d log p / d z_{l} at the "
            f"pre-activations of layer {l}; the weight block is G kron A"), [], 1


def kfac_key(fisher: str, bias: str, factor: str, l: int) -> str:
    """Name of a K-FAC factor array, e.g. ``kfac_key("true", "folded", "A", 0)``."""
    return f"kfac/{fisher}/{bias}/{factor}{l}"


def state_dict_keys(net: MLP) -> list[str]:
    """The fixture's state-dict array names, ``["state_dict/0.weight", ...]``."""
    check_net(net)
    return [f"state_dict/{k}" for k in net.to_state_dict(np.zeros(net.num_params))]


def preset_names() -> list[str]:
    """Names of the built-in presets."""
    return list(PRESETS)


def param_label(net: MLP, index: int) -> str:
    """Human name of flat parameter ``index``: ``"W1[2, 0]"`` or ``"b0[3]"``."""
    check_net(net)
    index = check_int(index, "index", 0)
    for l, ((_, inp), (ws, bs)) in enumerate(zip(net.shapes, net.layer_slices)):
        if ws.start <= index < ws.stop:
            i, j = divmod(index - ws.start, inp)
            return f"W{l}[{i}, {j}]"
        if bs.start <= index < bs.stop:
            return f"b{l}[{index - bs.start}]"
    raise ValueError(f"index: expected a flat parameter index in [0, {net.num_params}), "
                     f"received {index}")


# --- the fixture object ------------------------------------------------------------------------
@dataclass(frozen=True)
class Fixture:
    """A loaded (or freshly made) fixture: the manifest and the arrays.

    Attributes
    ----------
    manifest : dict
        The JSON manifest (see the module docstring).
    arrays : dict of str -> ndarray
        Every float64 array, by name (``fixture["true_fisher"]`` is the same).
    path : str or None
        The file it was loaded from.
    """

    manifest: dict
    arrays: dict
    path: str | None = field(default=None, compare=False)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            raise KeyError(f"{key!r}: no such array in fixture {self.name!r}; available: "
                           f"{', '.join(self.arrays)}")
        return self.arrays[key]

    def __contains__(self, key) -> bool:
        return key in self.arrays

    def keys(self) -> list[str]:
        """Array names in file order."""
        return list(self.arrays)

    @property
    def name(self) -> str:
        return self.manifest.get("name", "")

    @functools.cached_property
    def net(self) -> MLP:
        """The model ``MLP(**manifest["model"])``."""
        return MLP(**self.manifest["model"])

    @property
    def theta(self) -> np.ndarray:
        return self.arrays["theta"]

    @property
    def X(self) -> np.ndarray:
        return self.arrays["X"]

    @property
    def y(self) -> np.ndarray:
        """Targets in the likelihood's canonical dtype (int64 labels for categorical)."""
        return self.net.check_targets(self.arrays["y"], self.N)

    @property
    def N(self) -> int:
        return int(self.arrays["X"].shape[0])

    @property
    def P(self) -> int:
        return int(self.arrays["theta"].shape[0])

    @property
    def damping(self) -> float:
        """``lambda`` of the stored NGD direction."""
        return float(self.manifest["damping"])

    def state_dict(self) -> dict[str, np.ndarray]:
        """The weights as a PyTorch-style state dict ``{"0.weight": (out, in), ...}``."""
        prefix = "state_dict/"
        return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}

    def kfac(self, fisher: str = "true", bias: str = "folded") -> KFACFactors:
        """The stored K-FAC factors as a :class:`minifim.KFACFactors`."""
        check_choice(fisher, "fisher", FISHERS)
        check_choice(bias, "bias", BIASES)
        net = self.net
        L = net.num_layers
        return KFACFactors(tuple(self[kfac_key(fisher, bias, "A", l)] for l in range(L)),
                           tuple(self[kfac_key(fisher, bias, "G", l)] for l in range(L)),
                           bias, tuple(net.shapes))

    def array_info(self, key: str) -> dict:
        """The manifest entry of array ``key`` (shape, param_axes, reduction_power, ...)."""
        self[key]
        return self.manifest["arrays"][key]

    def param_label(self, index: int) -> str:
        """``"W0[2, 1]"``-style name of flat parameter ``index``."""
        return param_label(self.net, index)

    def trajectory(self) -> dict[str, np.ndarray]:
        """Per-step arrays ``{"theta": (K + 1, P), ...}`` (empty without a trajectory)."""
        prefix = "trajectory/"
        return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}

    def save(self, path) -> Path:
        """Write the fixture to ``path`` (see :func:`save_fixture`)."""
        return save_fixture(self, path)

    def __repr__(self) -> str:
        return (f"Fixture({self.name!r}, {self.net!r}, N={self.N}, P={self.P}, "
                f"{len(self.arrays)} arrays)")


# --- specs -------------------------------------------------------------------------------------
MAX_NAME_LENGTH = 200


def check_file_name(name, argname: str = "name") -> str:
    """Check that ``name`` can name a file ``NAME.npz`` inside a folder and nothing else.

    Refused: a non-string, the empty string, ``"."``, ``".."``, a path separator (``/``,
    ``\\``; so no absolute path and no ``../x``), a control character, more than
    :data:`MAX_NAME_LENGTH` characters.
    """
    if not isinstance(name, str):
        raise TypeError(f"{argname}: expected a string, received {type(name).__name__} "
                        f"{name!r}")
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if (not name or name in (".", "..") or len(name) > MAX_NAME_LENGTH
            or any(c in seps or ord(c) < 32 or ord(c) == 127 for c in name)):
        raise ValueError(f"{argname}: expected a file name (1 to {MAX_NAME_LENGTH} "
                         "characters, no path separator or control character, not '.' or "
                         f"'..'), received {name!r}")
    return name


def resolve_spec(spec) -> tuple[str, dict]:
    """``(name, full spec)`` from a preset name, or a dict (optionally ``{"preset": ...}``).

    Unknown keys, wrong types and impossible values raise ``ValueError``/``TypeError``.
    """
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"preset: expected one of {list(PRESETS)}, received {spec!r}")
        name, given = spec, dict(PRESETS[spec])
    elif isinstance(spec, Mapping):
        given = dict(spec)
        base = given.pop("preset", None)
        name = given.pop("name", None)
        if name is not None:
            check_file_name(name, "spec['name']")
        if base is not None:
            if base not in PRESETS:
                raise ValueError(f"spec['preset']: expected one of {list(PRESETS)}, received "
                                 f"{base!r}")
            given = {**PRESETS[base], **given}
            name = name or base
        name = name or "custom"
    else:
        raise TypeError(f"spec: expected a preset name or a dict, received "
                        f"{type(spec).__name__}")
    unknown = sorted(set(given) - set(SPEC_DEFAULTS))
    if unknown:
        raise ValueError(f"spec: unknown key(s) {unknown}; allowed keys: "
                         f"{sorted(SPEC_DEFAULTS) + ['name', 'preset']}")
    full = {**SPEC_DEFAULTS, **given}
    if full["sizes"] is None:
        raise ValueError("spec['sizes']: required, e.g. [4, 8, 3] (layer widths D, ..., C)")
    full["num_samples"] = check_int(full["num_samples"], "spec['num_samples']", 1)
    full["seed"] = check_int(full["seed"], "spec['seed']", 0)
    check_choice(full["init"], "spec['init']", ("pytorch", "normal"))
    check_choice(full["labels"], "spec['labels']", LABELS)
    full["input_scale"] = check_positive(full["input_scale"], "spec['input_scale']")
    full["damping"] = check_positive(full["damping"], "spec['damping']")
    full["sigma"] = check_positive(full["sigma"], "spec['sigma']")
    if full["logit_scale"] is not None:
        full["logit_scale"] = check_positive(full["logit_scale"], "spec['logit_scale']")
    if not isinstance(full["description"], str):
        raise TypeError("spec['description']: expected a string")
    return name, full


def _data_from_spec(spec: dict):
    """``(net, theta, X, y)`` from a resolved spec: one seeded stream, in that order."""
    try:
        net = MLP(spec["sizes"], activation=spec["activation"], likelihood=spec["likelihood"],
                  sigma=spec["sigma"])
    except (TypeError, ValueError) as err:
        raise type(err)(f"spec: {err}") from None
    net.config()  # a named activation, else the fixture could not be reloaded
    rng = as_generator(spec["seed"], "spec['seed']")
    N = spec["num_samples"]
    theta = net.init(rng, scheme=spec["init"])
    X = spec["input_scale"] * rng.standard_normal((N, net.input_dim))
    if spec["theta"] is not None:
        theta = net.check_theta(spec["theta"], "spec['theta']")
    if spec["X"] is not None:
        X = net.check_inputs(spec["X"], "spec['X']")
        N = X.shape[0]
    if spec["logit_scale"] is not None:
        f = net.forward(theta, X)
        theta = theta.copy()
        ws, bs = net.layer_slices[-1]
        theta[ws.start:bs.stop] *= spec["logit_scale"] / np.max(np.abs(f))
    if spec["y"] is not None:
        y = net.check_targets(spec["y"], N, "spec['y']")
    elif spec["labels"] == "model":
        y = net.likelihood.sample(net.forward(theta, X), rng)
    else:
        C = net.output_dim
        lik = net.likelihood.name
        if lik == "categorical":
            y = rng.integers(0, C, N)
        elif lik == "bernoulli":
            y = rng.integers(0, 2, (N, C)).astype(np.float64)
        else:
            y = rng.standard_normal((N, C))
    return net, theta, X, net.check_targets(y, N)


# --- building -----------------------------------------------------------------------------------
def _jsonable(spec: dict) -> dict:
    out = {}
    for k, v in spec.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        out[k] = v
    return out


def build_fixture(net: MLP, theta, X, y, *, damping: float = 1e-3, name: str = "custom",
                  spec: dict | None = None, command: str | None = None,
                  trajectory: str | None = None) -> Fixture:
    """Compute every reference quantity of ``(net, theta, X, y)`` and return the fixture.

    Parameters
    ----------
    net : MLP
        With a named activation (the manifest must rebuild it).
    theta : ndarray, shape (P,)
    X : ndarray, shape (N, D)
    y : targets of the likelihood
    damping : float
        ``lambda > 0`` of the stored NGD direction ``(F + lambda I)^{-1} g``.
    name, spec, command : recorded in the manifest.
    trajectory : str or None
        ``"OPTIMISER:steps=K[,key=value...]"``: also record ``K`` full-batch steps of a
        :mod:`minifim.optim` optimiser (see :func:`trajectory_arrays`).

    Returns
    -------
    Fixture
    """
    check_net(net)
    config = net.config()
    check_file_name(name, "name")
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    N = X.shape[0]
    y = net.check_targets(y, N)
    damping = check_positive(damping, "damping")
    P, L = net.num_params, net.num_layers

    arrays: dict[str, np.ndarray] = {"theta": theta.copy()}
    for key, value in net.to_state_dict(theta).items():
        arrays[f"state_dict/{key}"] = value
    arrays["X"] = X.copy()
    arrays["y"] = np.asarray(y, dtype=np.float64)
    f = net.forward(theta, X)
    arrays["outputs"] = np.asarray(f, dtype=np.float64)
    value, g = loss_and_gradient(net, theta, X, y)
    arrays["loss"] = np.asarray(value, dtype=np.float64)
    arrays["gradient"] = g
    arrays["scores"] = per_sample_scores(net, theta, X, y)
    arrays["jacobians"] = output_jacobians(net, theta, X)
    arrays["output_fisher"] = net.likelihood.fisher_outputs(f)
    F = true_fisher(net, theta, X)
    arrays["true_fisher"] = F
    arrays["empirical_fisher"] = empirical_fisher(net, theta, X, y)
    arrays["ggn"] = ggn(net, theta, X)
    H = hessian(net, theta, X, y)
    arrays["hessian"] = 0.5 * (H + H.T)  # reverse-over-reverse is symmetric to roundoff only
    arrays["fisher_diagonal"] = fisher_diagonal(net, theta, X)
    arrays["empirical_fisher_diagonal"] = fisher_diagonal(net, theta, X, y, "empirical")
    arrays["fisher_eigenvalues"] = scipy.linalg.eigvalsh(F)[::-1].copy()
    chol = scipy.linalg.cho_factor(F + damping * np.eye(P), lower=True)
    arrays["ngd_step"] = scipy.linalg.cho_solve(chol, g)
    for fisher in FISHERS:
        for bias in BIASES:
            fac = kfac(net, theta, X, y if fisher == "empirical" else None, fisher, bias=bias)
            for l in range(L):
                arrays[kfac_key(fisher, bias, "A", l)] = fac.A[l]
                arrays[kfac_key(fisher, bias, "G", l)] = fac.G[l]

    traj_meta = None
    if trajectory is not None:
        traj_meta, traj_arrays = trajectory_arrays(net, theta, X, y, trajectory)
        arrays.update(traj_arrays)

    docs = {}
    for key, arr in arrays.items():
        info = _describe_array(key, net)
        if key.startswith("trajectory/state/") and arr.shape[1:] == (P,):
            info["param_axes"] = [1]  # a per-step vector in parameter space
        docs[key] = {"shape": list(arr.shape), **info}
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "minifim_version": __version__,
        "name": name,
        "description": (spec or {}).get("description", ""),
        "model": config,
        "num_samples": N,
        "num_params": P,
        "parameter_order": net.param_names(),
        "parameter_layout": {
            "flat": "theta = concat(W0.ravel(), b0, W1.ravel(), b1, ...), C (row-major) order",
            "weights": "W_l has shape (out_l, in_l) (PyTorch nn.Linear layout); z = a W^T + b",
            "blocks": [{"name": n, "shape": list(s), "start": sl.start, "stop": sl.stop}
                       for l, (shape, (ws, bs)) in enumerate(zip(net.shapes, net.layer_slices))
                       for n, s, sl in ((f"W{l}", shape, ws), (f"b{l}", shape[:1], bs))],
            "state_dict": "keys of torch.nn.Sequential(Linear, act, Linear, ...): "
                          "'0.weight', '0.bias', '2.weight', ...",
        },
        "reduction": "mean",
        "reduction_note": "curvatures, gradient and loss are means over the N samples; the "
                          "sum-reduced value is N ** reduction_power times the stored one",
        "labels_dtype": "float64",
        "damping": damping,
        "kfac": "A = mean of a~ a~^T (reduction-free), G carries the reduction; 'true' is the "
                "exact expectation over the model's labels (curvlinops 'type-2'), "
                "'empirical' uses the data labels; 'folded' appends a 1 to a (bias in A), "
                "'separate' has a separate bias block G",
        "seeds": _seed_note(spec),
        "spec": _jsonable(spec) if spec is not None else None,
        "command": command,
        "trajectory": traj_meta,
        "arrays": docs,
    }
    for key, arr in arrays.items():
        arrays[key] = np.array(arr, dtype=np.float64, order="C")
    json.dumps(manifest)  # fail early if anything is not serialisable
    return Fixture(manifest, arrays)


def _seed_note(spec) -> dict | None:
    if spec is None:
        return None
    return {"seed": spec["seed"],
            "streams": "numpy.random.default_rng(seed) draws, in order: theta (MLP.init with "
                       "spec 'init'), X (standard normal times input_scale), y (from the "
                       "model for labels='model', uniform otherwise); explicit theta/X/y in "
                       "the spec replace the drawn ones"}


def _describe_array(key: str, net: MLP) -> dict:
    if key == "y":
        lik = net.likelihood.name
        desc = {"categorical": "class indices (N,) stored as float64 integers",
                "bernoulli": "0/1 labels (N, C)",
                "gaussian": "real targets (N, C)"}[lik]
        return {"description": f"targets: {desc}", "param_axes": [], "reduction_power": 0}
    if key in ARRAY_DOCS:
        desc, axes, power = ARRAY_DOCS[key]
    elif key.startswith("state_dict/"):
        kind = "weight" if key.endswith(".weight") else "bias"
        desc = f"layer {key.split('/')[1].split('.')[0]} {kind} in PyTorch layout" + (
            " (out, in)" if kind == "weight" else " (out,)")
        return {"description": desc, "param_axes": [], "reduction_power": 0, "role": kind}
    elif key.startswith("kfac/"):
        _, fisher, bias, fac = key.split("/")
        desc, axes, power = _kfac_doc(fisher, bias, fac[0], int(fac[1:]))
    elif key.startswith("trajectory/"):
        desc, axes, power = _TRAJECTORY_DOCS.get(
            key[len("trajectory/"):],
            ("optimiser state entry, one row per step (row 0 after init); may hold NaN "
             "where the optimiser marks a value as not yet defined", [], None))
    else:  # pragma: no cover - every key made here is documented
        raise AssertionError(f"internal: undocumented fixture array {key!r}")
    return {"description": desc, "param_axes": axes, "reduction_power": power}


# --- trajectories ---------------------------------------------------------------------------------
_TRAJECTORY_DOCS = {
    "theta": ("parameters theta_t, t = 0..K (row 0 the start), (K + 1, P)", [1], 0),
    "loss": ("mean negative log-likelihood at theta_t, (K + 1,)", [], 1),
    "gradient": ("gradient of the mean NLL at theta_t, (K + 1, P); row t is the gradient "
                 "that step t used", [1], 1),
}


#: The optimisers a trajectory can record: name -> constructor returning an
#: ``(init, update, get_params)`` triple (:class:`minifim.optim.Optimizer`).
TRAJECTORY_OPTIMISERS: dict = {
    "sgd": optim.sgd,
    "momentum": optim.momentum,
    "adam": optim.adam,
    "ngd": optim.ngd,
    "gauss_newton": optim.gauss_newton,
    "kfac": optim.kfac,
}


def parse_trajectory(text: str) -> tuple[str, int, dict]:
    """``"ngd:steps=5,lr=0.5,damping=1e-3"`` -> ``("ngd", 5, {"lr": 0.5, "damping": 0.001})``.

    Values are parsed as int, then float, else kept as strings (``true``/``false`` as bools).
    """
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"trajectory: expected 'OPTIMISER:steps=K[,key=value...]' such as "
                         f"'sgd:steps=5,lr=0.1', received {text!r}")
    name, _, rest = text.partition(":")
    name = name.strip()
    options: dict = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"trajectory: expected key=value pairs after the colon, received "
                             f"{item!r} in {text!r}")
        options[key.strip()] = _parse_value(raw.strip())
    if "steps" not in options:
        raise ValueError(f"trajectory: 'steps=K' is required, received {text!r}")
    steps = options.pop("steps")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"trajectory: steps must be an integer >= 1, received {steps!r}")
    return name, int(steps), options


def _parse_value(raw: str):
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def trajectory_arrays(net: MLP, theta, X, y, trajectory: str) -> tuple[dict, dict]:
    """Run ``K`` full-batch steps of a :mod:`minifim.optim` optimiser and record every step.

    ``trajectory`` is ``"OPTIMISER:steps=K[,key=value...]"``; the optimiser is
    ``TRAJECTORY_OPTIMISERS[OPTIMISER](**options)``, an ``(init, update, get_params)``
    triple. The steps are deterministic: the full batch each step, no penalty.

    Returns
    -------
    meta : dict
        The manifest entry (optimiser, steps, options, the arrays' step axis).
    arrays : dict
        ``trajectory/theta: (K + 1, P)``, ``trajectory/loss: (K + 1,)``,
        ``trajectory/gradient: (K + 1, P)`` and ``trajectory/state/<key>: (K + 1, ...)``
        for every entry of the optimiser state (row 0 the state after ``init``).
    """
    check_net(net)
    name, steps, options = parse_trajectory(trajectory)
    if name not in TRAJECTORY_OPTIMISERS:
        raise ValueError(f"trajectory: unknown optimiser {name!r}; expected one of "
                         f"{sorted(TRAJECTORY_OPTIMISERS)}")
    factory = TRAJECTORY_OPTIMISERS[name]
    if "net" in inspect.signature(factory).parameters:  # e.g. optim.kfac(net, ...)
        if "net" in options:
            raise ValueError("trajectory: 'net' is the fixture's model; do not pass it")
        options_call = {"net": net, **options}
    else:
        options_call = options
    try:
        opt = factory(**options_call)
    except TypeError as err:
        raise ValueError(f"trajectory: bad options {options} for minifim.optim.{name}: {err}"
                         ) from None
    if not isinstance(opt, optim.Optimizer):  # pragma: no cover - the registry's contract
        raise AssertionError(f"internal: minifim.optim.{name} did not return an Optimizer")
    init, update, get_params = opt
    batch = optim.Batch(net, X, y, None, X.shape[0])
    state = init(theta)
    rows: dict[str, list] = {"theta": [], "loss": [], "gradient": []}
    states: dict[str, list] = {}

    def record(state):
        th = np.array(get_params(state), dtype=np.float64)
        value, g = loss_and_gradient(net, th, X, y)
        rows["theta"].append(th)
        rows["loss"].append(value)
        rows["gradient"].append(g)
        for key, val in state.items():
            states.setdefault(key, []).append(np.asarray(val, dtype=np.float64))
        return g

    g = record(state)
    for step in range(steps):
        state = update(step, g, state, batch)
        g = record(state)
        if not np.all(np.isfinite(rows["theta"][-1])):
            raise FloatingPointError(f"trajectory: step {step} of {name} gave non-finite "
                                     "parameters; lower the learning rate")
    arrays = {f"trajectory/{k}": np.asarray(v, dtype=np.float64) for k, v in rows.items()}
    for key, val in states.items():
        if len({v.shape for v in val}) != 1:
            raise ValueError(f"trajectory: optimiser state entry {key!r} changes shape across "
                             "steps; cannot store it with a step axis")
        arrays[f"trajectory/state/{key}"] = np.stack(val)
    meta = {"optimiser": name, "steps": steps, "options": options, "step_axis": 0,
            "batch": "full batch every step, no penalty",
            "spec": trajectory, "state_keys": list(states)}
    return meta, arrays


def make_fixture(spec, *, trajectory: str | None = None,
                 command: str | None = None) -> Fixture:
    """Make the fixture of a preset name or a spec dict.

    Parameters
    ----------
    spec : str or dict
        A name in :data:`PRESETS`, or a dict with the keys ``sizes`` (required),
        ``activation``, ``likelihood``, ``sigma``, ``num_samples``, ``seed``, ``init``
        (``"pytorch"``/``"normal"``), ``input_scale``, ``labels`` (``"model"``: drawn from
        the model; ``"uniform"``), ``logit_scale`` (rescale the last layer so that the largest
        output magnitude equals it), ``damping`` (NGD ``lambda``), ``description``, and
        optionally explicit ``theta``, ``X``, ``y`` (lists) and ``preset`` (a base preset whose
        keys the dict overrides) and ``name``.
    trajectory : str or None
        ``"OPTIMISER:steps=K[,key=value...]"`` (see :func:`trajectory_arrays`).
    command : str or None
        Recorded in the manifest; defaults to the equivalent ``minifim fixture make`` call.

    Returns
    -------
    Fixture

    Examples
    --------
    >>> fx = make_fixture("logistic-regression")
    >>> fx["true_fisher"].shape, fx.manifest["reduction"]
    ((5, 5), 'mean')
    """
    name, full = resolve_spec(spec)
    net, theta, X, y = _data_from_spec(full)
    if command is None:
        command = f"minifim fixture make {name}" if isinstance(spec, str) else \
            "minifim.make_fixture(spec)"
        if trajectory is not None:
            command += f" --trajectory {trajectory}"
    return build_fixture(net, theta, X, y, damping=full["damping"], name=name, spec=full,
                         command=command, trajectory=trajectory)


# --- saving and loading --------------------------------------------------------------------------
def save_fixture(fixture: Fixture, path) -> Path:
    """Write ``fixture`` to ``path`` atomically: an uncompressed ``.npz`` with the manifest.

    The bytes depend only on the fixture's content (fixed zip metadata and key order).
    """
    if not isinstance(fixture, Fixture):
        raise TypeError(f"fixture: expected a Fixture, received {type(fixture).__name__}")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path: expected a file name ending in .npz, received {str(path)!r}")
    text = json.dumps(fixture.manifest, indent=1, allow_nan=False)
    payload = {MANIFEST_KEY: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    for key, arr in fixture.arrays.items():
        if key == MANIFEST_KEY:
            raise ValueError(f"fixture: the array name {MANIFEST_KEY!r} is reserved")
        payload[key] = np.array(arr, dtype=np.float64, order="C")
    return atomic_savez(path, payload)


class FixtureError(ValueError):
    """A file is not a valid fixture (the message names the file and the problem)."""


def _fail(path, message: str):
    raise FixtureError(f"fixture {str(path)!r}: {message}")


def expected_shapes(net: MLP, N: int, trajectory: dict | None = None) -> dict[str, tuple]:
    """Shapes of the standard arrays for ``net`` and ``N`` samples (trajectory: its K).

    Computed from the sizes alone (nothing is allocated), so a manifest describing a huge
    model can be measured before anything is read.
    """
    check_net(net)
    P, C, D = net.num_params, net.output_dim, net.input_dim
    y_shape = (N,) if net.likelihood.name == "categorical" else (N, C)
    shapes = {"theta": (P,)}
    for prefix, (out, inp) in zip(net._sequential_keys(None), net.shapes):
        shapes[f"state_dict/{prefix}.weight"] = (out, inp)
        shapes[f"state_dict/{prefix}.bias"] = (out,)
    shapes.update({"X": (N, D), "y": y_shape, "outputs": (N, C), "loss": (),
                   "gradient": (P,), "scores": (N, P), "jacobians": (N, C, P),
                   "output_fisher": (N, C, C)})
    for k in ("true_fisher", "empirical_fisher", "ggn", "hessian"):
        shapes[k] = (P, P)
    for k in ("fisher_diagonal", "empirical_fisher_diagonal", "fisher_eigenvalues",
              "ngd_step"):
        shapes[k] = (P,)
    for fisher in FISHERS:
        for bias in BIASES:
            extra = 1 if bias == "folded" else 0
            for l, (out, inp) in enumerate(net.shapes):
                shapes[kfac_key(fisher, bias, "A", l)] = (inp + extra, inp + extra)
                shapes[kfac_key(fisher, bias, "G", l)] = (out, out)
    if trajectory is not None:
        K1 = int(trajectory["steps"]) + 1
        shapes.update({"trajectory/theta": (K1, P), "trajectory/loss": (K1,),
                       "trajectory/gradient": (K1, P)})
    return shapes


def load_fixture(path) -> Fixture:
    """Load and validate a fixture written by :func:`save_fixture` (no pickle).

    The file is untrusted input: the manifest is read first (at most
    :data:`MAX_MANIFEST_BYTES`) and checked entry by entry; it fixes the shape of every
    array, and their total size is checked against the memory budget
    (:func:`minifim.memory_budget`). Each zip member's declared size and ``.npy`` header are
    then checked against the manifest before its data is read, and the data is read through
    a reader bounded by that size, so a lying header or a zip bomb cannot make the loader
    allocate more than the manifest's arrays.

    Each call returns a new :class:`Fixture` (its own ``arrays`` dict and manifest) whose
    arrays are read-only views of arrays read once per file version: a caller can neither
    write into them nor, by assigning ``fx.arrays[key]``, change what the next caller loads.

    Raises
    ------
    FileNotFoundError
        No such file.
    FixtureError (a ValueError)
        Not a fixture (empty, truncated, not a zip archive, a member that is not a float64
        ``.npy``), a newer schema, a manifest entry of the wrong type or value, arrays over
        the memory budget, or a missing, unexpected, non-float64, misshapen, truncated,
        corrupt or non-finite array; the message names the file and the problem.
    """
    if isinstance(path, Fixture):
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path, received {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fixture {str(path)!r}: no such file")
    stat = path.stat()
    manifest, arrays = _load_cached(str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    views = {}
    for key, arr in arrays.items():
        views[key] = arr.view()  # a view of a read-only array cannot be made writeable
    return Fixture(copy.deepcopy(manifest), views, str(path))


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, inode: int, mtime_ns: int, size: int) -> tuple[dict, dict]:
    """Read and validate once per (path, inode, modification time, size): a test suite
    calling ``assert_matches("fixture.npz", ...)`` many times reads the file once. Returns
    the manifest and the read-only arrays; :func:`load_fixture` wraps them in a new
    :class:`Fixture` per call."""
    path = Path(path)
    archive = _open_zip(path, size, "fixture", _fail)
    with archive:
        members = _members(path, archive, _fail)
        if MANIFEST_KEY not in members:
            _fail(path, f"no {MANIFEST_KEY!r} entry: not a minifim fixture (make one with "
                        "`minifim fixture make`)")
        raw = _read_member(path, archive, members[MANIFEST_KEY], MANIFEST_KEY,
                           np.dtype(np.uint8), None, MAX_MANIFEST_BYTES, one_d=True)
        try:
            manifest = json.loads(raw.tobytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            _fail(path, f"the manifest is not valid UTF-8 JSON ({err})")
        shapes = _check_manifest(path, manifest)
        missing = [k for k in shapes if k not in members]
        if missing:
            _fail(path, f"missing array(s) {missing} listed in the manifest (truncated or "
                        "edited file?)")
        extra = [k for k in members if k not in shapes and k != MANIFEST_KEY]
        if extra:
            _fail(path, f"unexpected array(s) {extra} not described by the manifest")
        arrays = {}
        for key, shape in shapes.items():
            arr = _read_member(path, archive, members[key], key, np.dtype(np.float64), shape,
                               8 * math.prod(shape))
            if not key.startswith("trajectory/state/") and not np.all(np.isfinite(arr)):
                _fail(path, f"array {key!r} holds NaN/Inf")
            arr.flags.writeable = False
            arrays[key] = arr
    return manifest, arrays


def read_npz(path, max_member_bytes: int, what: str = "candidate") -> dict[str, np.ndarray]:
    """The named numeric arrays of an untrusted ``.npz`` (no pickle), read with bounds.

    Each member's declared size and ``.npy`` header are checked before its data is read:
    at most ``max_member_bytes`` per array and the memory budget in total. Errors are
    ``ValueError`` naming ``what`` and the file (``minifim check`` reads candidates so).
    """
    path = Path(path)

    def fail(p, message):
        raise ValueError(f"{what} {str(p)!r}: {message}")

    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r}: no such file")
    archive = _open_zip(path, path.stat().st_size, what, fail)
    with archive:
        members = _members(path, archive, fail)
        total = sum(info.file_size for info in members.values())
        if total > memory_budget():
            fail(path, f"its arrays declare {format_bytes(total)} in total, over the memory "
                       f"budget of {format_bytes(memory_budget())}")
        return {key: _read_member(path, archive, info, key, None, None, max_member_bytes,
                                  fail=fail) for key, info in members.items()}


def _open_zip(path: Path, size: int, what: str, fail) -> zipfile.ZipFile:
    """Open ``path`` as a zip archive (reads its central directory only)."""
    if size == 0:
        fail(path, f"is empty (0 bytes): not an .npz {what}")
    magic = b""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as err:
        if magic == b"\x93NUMPY":
            fail(path, f"is a single .npy array, not an .npz {what}")
        fail(path, f"cannot be read as an .npz file: not a zip archive, or truncated ({err})")


def _members(path, archive: zipfile.ZipFile, fail) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by array name, checked from the central directory only."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename
        if not name.endswith(".npy") or info.is_dir():
            fail(path, f"member {name!r} is not an .npy array: not a minifim fixture")
        if info.flag_bits & 0x1:
            fail(path, f"member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            fail(path, f"member {name!r} uses zip compression method {info.compress_type}; "
                       "fixtures are stored (or deflated)")
        key = name[:-len(".npy")]
        if key in members:
            fail(path, f"member {name!r} appears twice in the archive")
        members[key] = info
    return members


class _BoundedReader(io.RawIOBase):
    """A read-only stream that returns at most ``limit`` bytes of ``raw``."""

    def __init__(self, raw, limit: int):
        self.raw, self.left = raw, int(limit)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.left, _CHUNK)
        if n <= 0:
            return 0
        data = self.raw.read(n)
        view[:len(data)] = data
        self.left -= len(data)
        return len(data)


_CHUNK = 1 << 20
#: Largest ``.npy`` header read from a fixture (numpy's own bound).
MAX_NPY_HEADER = 10000
#: Largest manifest read from a fixture, in bytes (the presets' are ~30 KB; explicit
#: ``theta``, ``X``, ``y`` in a spec make it larger).
MAX_MANIFEST_BYTES = 16 * 2**20


def _read_member(path, archive, info: zipfile.ZipInfo, key: str, dtype: np.dtype | None,
                 shape: tuple | None, max_data: int, *, one_d: bool = False, fail=None
                 ) -> np.ndarray:
    """Read one ``.npy`` member without reading or allocating more than ``max_data`` bytes.

    ``dtype``: the required dtype (``None``: any numeric dtype). ``shape``: the required
    shape (``None``: any shape of at most ``max_data`` bytes, 1-D if ``one_d``). ``fail``
    raises the error (default: :class:`FixtureError` naming the fixture).
    """
    fail = fail or _fail
    name = info.filename
    # 8 bytes of magic and version, 4 of header length, the header, then the data
    limit = max_data + 12 + MAX_NPY_HEADER
    if info.file_size > limit:
        what = (f"the manifest's shape {shape}" if shape is not None
                else f"the limit of {format_bytes(max_data)} for {key!r}")
        fail(path, f"member {name!r} declares {info.file_size} bytes uncompressed, over "
                   f"the limit: expected at most {limit} for {what} (a zip bomb or a "
                   "damaged file)")
    try:
        with archive.open(info) as raw:
            reader = io.BufferedReader(_BoundedReader(raw, info.file_size), _CHUNK)
            try:
                version = npformat.read_magic(reader)
            except ValueError as err:
                fail(path, f"member {name!r} is not an .npy array ({err})")
            if version not in ((1, 0), (2, 0)):
                fail(path, f"member {name!r}: unsupported .npy format version {version}")
            read_header = (npformat.read_array_header_1_0 if version == (1, 0)
                           else npformat.read_array_header_2_0)
            try:
                got_shape, fortran, got_dtype = read_header(reader,
                                                            max_header_size=MAX_NPY_HEADER)
            except (ValueError, SyntaxError, RecursionError, MemoryError, UnicodeError) as err:
                fail(path, f"member {name!r} has an invalid .npy header ({err})")
            if got_dtype.hasobject:
                fail(path, f"array {key!r} has dtype {got_dtype} (Python objects): it cannot "
                           "be loaded without pickle; save numeric arrays only")
            if dtype is not None and got_dtype != dtype:
                fail(path, f"array {key!r} has dtype {got_dtype}; fixtures hold "
                           f"{'float64' if dtype == np.float64 else dtype} only")
            if got_dtype.kind not in "biufc" or got_dtype.fields is not None:
                fail(path, f"array {key!r} has dtype {got_dtype}: expected a numeric array")
            if shape is None:
                nbytes = math.prod(got_shape) * got_dtype.itemsize
                if (one_d and len(got_shape) != 1) or any(s < 0 for s in got_shape) or \
                        nbytes > max_data:
                    fail(path, f"member {name!r} has shape {got_shape} and dtype {got_dtype}: "
                               f"expected {'a 1-D array' if one_d else 'an array'} of at most "
                               f"{format_bytes(max_data)} (over the limit)")
            elif tuple(got_shape) != tuple(shape):
                fail(path, f"member {name!r} has shape {tuple(got_shape)}, expected "
                           f"{tuple(shape)} from the manifest")
            shape = tuple(got_shape)
            out = np.empty(shape[::-1] if fortran else shape, dtype=got_dtype)
            view = memoryview(out).cast("B") if out.size else memoryview(b"")
            filled = 0
            while filled < len(view):
                n = reader.readinto(view[filled:])
                if not n:
                    fail(path, f"array {key!r} is truncated: {filled} of {len(view)} data "
                               "bytes")
                filled += n
            if reader.read(1) or raw.read(1):
                fail(path, f"array {key!r} has trailing bytes after its {len(view)} data "
                           "bytes")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        fail(path, f"member {name!r} is corrupt or truncated ({err})")
    return out.T if fortran else out


_MANIFEST_REQUIRED = ("format", "schema_version", "minifim_version", "name", "model",
                      "num_samples", "num_params", "parameter_order", "reduction", "damping",
                      "arrays")
_MANIFEST_OPTIONAL = {"description": str, "parameter_layout": dict, "reduction_note": str,
                      "labels_dtype": str, "kfac": str, "seeds": (dict, type(None)),
                      "spec": (dict, type(None)), "command": (str, type(None)),
                      "trajectory": (dict, type(None))}
_ENTRY_KEYS = {"shape", "description", "param_axes", "reduction_power", "role"}
_TRAJECTORY_KEYS = {"optimiser": str, "steps": int, "options": dict, "step_axis": int,
                    "batch": str, "spec": str, "state_keys": list}


def _is_int(value, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_manifest(path, manifest) -> dict[str, tuple]:
    """Check every manifest entry's type and value; return the arrays' shapes (file order)."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        _fail(path, f"the manifest's 'format' is not {FORMAT!r}: not a minifim fixture")
    version = manifest.get("schema_version")
    if not _is_int(version, 1):
        _fail(path, f"invalid schema_version {version!r}")
    if version > SCHEMA_VERSION:
        _fail(path, f"written with fixture schema {version} by minifim "
                    f"{manifest.get('minifim_version', '?')}; this minifim ({__version__}) "
                    f"reads schema <= {SCHEMA_VERSION}. Upgrade minifim to read it")
    for key in _MANIFEST_REQUIRED:
        if key not in manifest:
            _fail(path, f"the manifest has no {key!r} entry")
    unknown = sorted(set(manifest) - set(_MANIFEST_REQUIRED) - set(_MANIFEST_OPTIONAL))
    if unknown:
        _fail(path, f"unknown manifest entr{'y' if len(unknown) == 1 else 'ies'} {unknown} "
                    f"for schema {version}")
    for key, kind in _MANIFEST_OPTIONAL.items():
        if key in manifest and not isinstance(manifest[key], kind):
            _fail(path, f"the manifest's {key!r} entry has type "
                        f"{type(manifest[key]).__name__}")
    for key in ("minifim_version", "name"):
        if not isinstance(manifest[key], str):
            _fail(path, f"the manifest's {key!r} entry: expected a string, received "
                        f"{manifest[key]!r}")
    if manifest["reduction"] != "mean":
        _fail(path, f"the manifest's 'reduction' is {manifest['reduction']!r}; fixtures store "
                    "means ('mean')")
    damping = manifest["damping"]
    if (isinstance(damping, bool) or not isinstance(damping, (int, float))
            or not (0 < damping < math.inf)):
        _fail(path, f"invalid damping {damping!r} in the manifest: expected a finite number "
                    "> 0")
    model = manifest["model"]
    if not isinstance(model, dict):
        _fail(path, f"the manifest's model {model!r} is invalid: expected a mapping")
    try:
        net = MLP(**model)
    except (TypeError, ValueError) as err:
        _fail(path, f"the manifest's model {model!r} is invalid ({err})")
    N = manifest["num_samples"]
    if not _is_int(N, 1):
        _fail(path, f"invalid num_samples {N!r} in the manifest")
    if manifest["num_params"] != net.num_params or isinstance(manifest["num_params"], bool):
        _fail(path, f"invalid num_params {manifest['num_params']!r} in the manifest: the "
                    f"model has P = {net.num_params}")
    if manifest["parameter_order"] != net.param_names():
        _fail(path, f"invalid parameter_order {manifest['parameter_order']!r} in the "
                    f"manifest: expected {net.param_names()}")
    traj = manifest.get("trajectory")
    if traj is not None:
        bad = [k for k, v in traj.items() if k not in _TRAJECTORY_KEYS
               or not isinstance(v, _TRAJECTORY_KEYS[k]) or isinstance(v, bool)]
        if (bad or not _is_int(traj.get("steps"), 1)
                or not all(isinstance(k, str) for k in traj.get("state_keys", []))):
            _fail(path, f"invalid trajectory entry {traj!r} in the manifest")
    listed = manifest["arrays"]
    if not isinstance(listed, dict) or not all(isinstance(v, dict) for v in listed.values()):
        _fail(path, "the manifest's 'arrays' entry is not a mapping of name -> description")
    standard = expected_shapes(net, N, traj)
    absent = [k for k in standard if k not in listed]
    if absent:
        _fail(path, f"missing required array(s) {absent}")
    state_keys = set(traj.get("state_keys", [])) if traj is not None else set()
    shapes = {}
    for key, entry in listed.items():
        shape = entry.get("shape")
        if not (isinstance(shape, list) and all(_is_int(s) for s in shape)):
            _fail(path, f"array {key!r}: invalid shape {shape!r} in the manifest (expected a "
                        "list of integers >= 0)")
        shape = tuple(shape)
        if key in standard:
            if shape != standard[key]:
                _fail(path, f"array {key!r} has shape {shape} in the manifest, expected "
                            f"{standard[key]} for {net!r} with N = {N}")
        elif key.startswith("trajectory/state/") and key[len("trajectory/state/"):] in \
                state_keys:
            if not shape or shape[0] != traj["steps"] + 1:
                _fail(path, f"array {key!r} has shape {shape} in the manifest, expected "
                            f"{traj['steps'] + 1} rows (one per step)")
        else:
            _fail(path, f"unexpected array {key!r} in the manifest: not an array of schema "
                        f"{version}")
        _check_entry(path, key, entry, shape, net)
        shapes[key] = shape
    total = 8 * sum(math.prod(s) for s in shapes.values())
    budget = memory_budget()
    if total > budget:
        _fail(path, f"the manifest describes {len(shapes)} float64 arrays of "
                    f"{format_bytes(total)} in total ({net!r}, N = {N}), over the memory "
                    f"budget of {format_bytes(budget)} (raise it with "
                    "minifim.set_memory_budget or minifim.memory_limit if the file is "
                    "trusted)")
    return shapes


def _check_entry(path, key: str, entry: dict, shape: tuple, net: MLP) -> None:
    """An array's manifest entry: known keys, a string description, and the parameter axes,
    reduction power and role that the schema gives this array."""
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        _fail(path, f"array {key!r}: unknown key(s) {unknown} in its manifest entry")
    if not isinstance(entry.get("description", ""), str):
        _fail(path, f"array {key!r}: the manifest's description is not a string")
    want = _describe_array(key, net) if not key.startswith("trajectory/state/") else {
        "param_axes": [1] if shape[1:] == (net.num_params,) else [], "reduction_power": None}
    for field_name in ("param_axes", "reduction_power", "role"):
        if field_name in entry or field_name in want:
            got = entry.get(field_name)
            if json.dumps(got) != json.dumps(want.get(field_name)):
                _fail(path, f"array {key!r}: {field_name} {got!r} in the manifest, expected "
                            f"{want.get(field_name)!r} (schema {SCHEMA_VERSION})")
