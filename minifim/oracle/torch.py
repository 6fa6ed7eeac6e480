"""Bridge to PyTorch: convert models both ways and compute the reference quantities in torch.

Optional: needs the ``crosscheck`` extra (``torch==2.13.0``, the CPU build, then
``curvlinops-for-pytorch``; ``make crosscheck``); ``torch`` is imported lazily, on the first call,
so ``import minifim`` never needs it.

Contract:

- :func:`to_torch` builds a float64 ``torch.nn.Sequential`` with one module per layer of a
  :class:`~minifim.Sequential` (or :class:`~minifim.MLP`): ``Linear -> nn.Linear``, ``Conv2d ->
  nn.Conv2d`` (zero padding, ``groups=1``), ``Flatten -> nn.Flatten``, ``Mean -> Mean`` (this
  module's own ``torch.nn.Module``, see below) and the activations. Its ``state_dict()`` keys are
  those of ``net.to_state_dict`` (``"0.weight"``, ``"0.bias"``, ``"3.weight"``, ...: the index of
  the layer in the list) and its weights are copies of ``theta``'s blocks, bit for bit;
  :func:`from_torch` is the exact inverse: ``from_torch(to_torch(net, theta), net) == theta``.
  The likelihood is not part of a ``torch`` module; it stays with the minifim network.
- :func:`sequential_from_torch` converts a ``torch.nn.Sequential`` built from the same module
  types (and :class:`Mean`) into ``(net, theta)``; the input shape is an argument (a convolution
  does not know its image size). :func:`mlp_from_torch` keeps converting ``Linear, act, Linear,
  ...`` into an :class:`~minifim.MLP`.
- ``Mean(axis)`` (``minifim.oracle.torch.Mean``, created on first use because it subclasses
  ``torch.nn.Module``) is ``x.mean(dim=axis)`` with the axis counted on the batch tensor, like
  :class:`minifim.layers.Mean`: the reduce setting (average pooling over positions) has no
  ``torch.nn`` module of its own.
- Activations map to ``nn.Tanh``, ``nn.ReLU``, ``nn.Sigmoid``, ``nn.Softplus`` (``beta=1``;
  built with ``threshold=40``, beyond which ``log(1 + e^z) = z`` in float64, where torch's default
  threshold 20 would differ from ``log(1 + e^z)`` by up to 2e-9) and ``nn.Identity``.
- :func:`torch_quantities` computes per-sample scores, output Jacobians, the true and empirical
  Fisher, the GGN at the labels, the Hessian and the gradient with ``torch.func`` (``vmap``,
  ``grad``, ``jacrev``, ``hessian``) on the flat parameter vector in minifim's order: an
  independent second route for every array of a fixture (means over samples, a sample's
  log-likelihood summed over its output positions, like minifim).
- :func:`curvlinops_quantities` computes the GGN, the Hessian, the empirical Fisher and K-FAC
  (``KFACLinearOperator``, both ``kfac_approx``) with curvlinops, converted to minifim's scale; the
  conversions, and the one place where curvlinops defines a quantity differently (the empirical
  Fisher of a positional output), are stated in its docstring.

Loss conventions of PyTorch against minifim's likelihoods (the bridge's ``log p`` is written
with the torch losses below, so their conventions are the ones checked):

- ``"heteroscedastic"`` is ``torch.nn.GaussianNLLLoss(full=True)`` per element with
  ``input = mu``, ``var = exp(log sigma^2)`` and no clamp, summed over the ``C`` targets:
  minifim's ``-log p`` (written out in the bridge, since the functional's data-dependent
  check of ``var`` does not run under ``torch.func.vmap``; the test compares the two).
  PyTorch's defaults differ: ``full=False`` drops ``log(2 pi) / 2`` per element (a
  constant: scores and curvatures agree, the loss does not), ``eps=1e-6`` clamps the
  variance from below (values only: gradients pass through the clamp), so log-variances
  below ``log(1e-6) = -13.8`` give a different loss, and ``reduction="mean"`` averages over
  all ``N C`` elements, not over the ``N`` samples (a factor ``C`` on every mean quantity).
- ``"poisson"`` with ``link="log"`` is ``torch.nn.PoissonNLLLoss(log_input=True, full=False)``
  plus ``log y!`` (``lgamma(y + 1)``), which PyTorch omits (``full=False``) or replaces by
  Stirling's approximation ``y log y - y + log(2 pi y) / 2`` for ``y > 1`` only
  (``full=True``; an approximation, poor for small ``y``); it does not depend on ``f``, so
  only the loss differs. ``link="softplus"`` is ``PoissonNLLLoss(log_input=False, eps=0)`` at
  ``input = log(1 + e^f)`` computed by ``logaddexp`` (PyTorch's default ``eps=1e-8`` adds to
  the rate inside the log: ``r - y log(r + 1e-8)``, visible for rates near 1e-8; and
  ``torch.nn.functional.softplus`` switches to the identity above ``f = 20``, an error of
  ``log1p(e^-20) ~ 2e-9`` in the rate).
- Both are non-canonical, so the GGN key is ``J^T H_f(y) J`` with ``H_f(y)`` the
  ``torch.func.hessian`` of the per-sample loss in the outputs, not the Fisher. The
  non-canonical likelihoods are bridged for outputs ``(N, 2C)`` / ``(N, C)`` without positions.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import ArrayLike

from .._validation import check_choice, check_net
from ..core.model import MLP, Sequential

if TYPE_CHECKING:
    from ..core.likelihoods import Gaussian, HeteroscedasticGaussian, Likelihood, Poisson

__all__ = [
    "to_torch",
    "from_torch",
    "mlp_from_torch",
    "sequential_from_torch",
    "layer_configs_from_torch",
    "torch_quantities",
    "curvlinops_quantities",
    "fixture_to_torch",
    "mean_module",
    "require_torch",
    "QUANTITIES",
    "CURVLINOPS_QUANTITIES",
]

SOFTPLUS_THRESHOLD = 40.0
_ACTIVATIONS = ("tanh", "relu", "sigmoid", "softplus", "identity")
_ACTIVATION_TYPES = {
    "Tanh": "tanh",
    "ReLU": "relu",
    "Sigmoid": "sigmoid",
    "Softplus": "softplus",
    "Identity": "identity",
}


def require_torch() -> Any:
    """Import and return ``torch``, or raise ``ImportError`` saying how to install it."""
    try:
        import torch
    except ImportError as err:  # pragma: no cover - exercised only without torch
        raise ImportError(
            "minifim.oracle.torch needs PyTorch: pip install 'minifim[crosscheck]' "
            "(torch==2.13.0, CPU) or `make crosscheck`"
        ) from err
    return torch


# --- the Mean module ---------------------------------------------------------------------------
_MEAN_CLASS: Any = None


def _mean_class() -> Any:
    """``Mean``, a ``torch.nn.Module`` subclass, created once torch is imported."""
    global _MEAN_CLASS
    if _MEAN_CLASS is None:
        torch = require_torch()

        class Mean(torch.nn.Module):  # type: ignore[name-defined]
            """``x.mean(dim=axis)``: the average over one weight-sharing axis, the axis counted
            on the batch tensor (``Mean(1)`` averages the positions of ``(N, R, H)``); the
            torch counterpart of :class:`minifim.layers.Mean`."""

            def __init__(self, axis: int) -> None:
                super().__init__()
                if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
                    raise ValueError(
                        f"axis: expected a non-zero int (axis 0 is the samples), received {axis!r}"
                    )
                self.axis = axis

            def forward(self, x: Any) -> Any:
                return x.mean(dim=self.axis)

            def extra_repr(self) -> str:
                return f"axis={self.axis}"

        Mean.__module__ = __name__
        Mean.__qualname__ = "Mean"
        _MEAN_CLASS = Mean
    return _MEAN_CLASS


def mean_module(axis: int) -> Any:
    """A ``Mean(axis)`` torch module (see the module docstring)."""
    return _mean_class()(axis)


def __getattr__(name: str) -> Any:
    """``minifim.oracle.torch.Mean``: the torch module class, created on first access."""
    if name == "Mean":
        return _mean_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- minifim -> torch ----------------------------------------------------------------------------
def _layer_configs(net: Sequential) -> list[dict[str, Any]]:
    """The network's layers as ``config()`` dicts (``{"type": "Linear", ...}``)."""
    configs = []
    for i, layer in enumerate(net.layers):
        try:
            configs.append(layer.config())
        except ValueError as err:
            raise ValueError(
                f"net.layers[{i}]: expected one of {list(_ACTIVATIONS)} to build a torch "
                f"module, received a custom activation ({err})"
            ) from None
    return configs


def _torch_module(torch: Any, config: dict[str, Any], index: int) -> Any:
    nn = torch.nn
    kind = config["type"]
    f64 = torch.float64
    if kind == "Linear":
        return nn.Linear(config["in_features"], config["out_features"], config["bias"], dtype=f64)
    if kind == "Conv2d":
        return nn.Conv2d(
            config["in_channels"],
            config["out_channels"],
            tuple(config["kernel_size"]),
            stride=tuple(config["stride"]),
            padding=tuple(config["padding"]),
            dilation=tuple(config["dilation"]),
            bias=config["bias"],
            dtype=f64,
        )
    if kind == "Flatten":
        return nn.Flatten(config.get("start_dim", 1), config.get("end_dim", -1))
    if kind == "Mean":
        return mean_module(config["axis"])
    if kind == "Softplus":
        return nn.Softplus(beta=1.0, threshold=SOFTPLUS_THRESHOLD)
    if kind in _ACTIVATION_TYPES:
        return getattr(nn, kind)()
    if kind == "Elementwise" and config.get("activation") in _ACTIVATIONS:
        name = {v: k for k, v in _ACTIVATION_TYPES.items()}[config["activation"]]
        return _torch_module(torch, {"type": name}, index)
    raise ValueError(
        f"net.layers[{index}]: no torch module for layer {config!r}; expected Linear, Conv2d, "
        f"Flatten, Mean or one of {list(_ACTIVATION_TYPES)}"
    )


def to_torch(net: Sequential, theta: ArrayLike) -> Any:
    """``torch.nn.Sequential`` (float64) computing ``net.forward(theta, .)``.

    Parameters
    ----------
    net : Sequential or MLP
        With named activations.
    theta : ndarray, shape (P,)

    Returns
    -------
    torch.nn.Sequential
        One module per layer of ``net`` (an MLP: ``Linear(D, H1), act, Linear(H1, H2), act,
        ..., Linear(H_{L-1}, C)``, an identity activation kept as ``nn.Identity`` so the
        state-dict keys are always ``"0"``, ``"2"``, ``"4"``, ...), weights copied bit for bit
        from ``net.to_state_dict(theta)``.
    """
    check_net(net)
    torch = require_torch()
    theta = net.check_theta(theta)
    configs = _layer_configs(net)
    module = torch.nn.Sequential(*(_torch_module(torch, c, i) for i, c in enumerate(configs)))
    state = net.to_state_dict(theta)
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in state.items()}
    module.load_state_dict(tensors, strict=True)
    return module


# --- torch -> minifim ----------------------------------------------------------------------------
def _layers_and_activation(module: Any) -> tuple[list[Any], str]:
    """``Linear, act, Linear, ...`` -> the Linear modules and the one hidden activation (the
    MLP route, :func:`mlp_from_torch`)."""
    torch = require_torch()
    nn = torch.nn
    if not isinstance(module, nn.Sequential):
        raise TypeError(
            f"module: expected a torch.nn.Sequential of Linear layers and "
            f"activations, received {type(module).__name__}"
        )
    linears: list[Any] = []
    acts: set[str] = set()
    pending: str | None = None  # pending: the activation after the last Linear
    kinds = {
        nn.Tanh: "tanh",
        nn.ReLU: "relu",
        nn.Sigmoid: "sigmoid",
        nn.Softplus: "softplus",
        nn.Identity: "identity",
    }
    children = list(module)
    for i, child in enumerate(children):
        if isinstance(child, nn.Linear):
            if linears:
                acts.add(pending or "identity")  # two Linear layers in a row: identity
            if child.bias is None:
                raise ValueError(
                    f"module[{i}]: Linear without bias; minifim's MLP has a bias in every "
                    "layer (sequential_from_torch converts it to a Sequential)"
                )
            linears.append(child)
            pending = None
        elif type(child) in kinds:
            if not linears or pending is not None:
                raise ValueError(
                    f"module[{i}]: expected Linear, activation, Linear, ...; "
                    f"found {type(child).__name__} out of place"
                )
            _check_softplus(child, i)
            pending = kinds[type(child)]
        elif isinstance(child, (nn.Softmax, nn.LogSoftmax)):
            raise ValueError(_softmax_message(child, i))
        else:
            raise ValueError(
                f"module[{i}]: unsupported module {type(child).__name__} for an MLP; "
                f"expected Linear or one of {sorted(set(kinds.values()))} "
                "(sequential_from_torch converts Conv2d, Flatten and Mean too)"
            )
    if not linears:
        raise ValueError("module: no Linear layer found")
    if pending is not None:
        raise ValueError(
            "module: ends with an activation; minifim's last layer is linear "
            "(the likelihood applies softmax/sigmoid)"
        )
    if len(acts) > 1:
        raise ValueError(
            f"module: mixed hidden activations {sorted(acts)}; minifim's MLP uses "
            "one activation for every hidden layer (sequential_from_torch allows any)"
        )
    return linears, (acts.pop() if acts else "identity")


def _softmax_message(child: Any, i: int) -> str:
    return (
        f"module[{i}]: {type(child).__name__} belongs to the likelihood, "
        "not the network: drop it (minifim's outputs are logits) and "
        "pass likelihood='categorical'"
    )


def _check_softplus(child: Any, i: int) -> None:
    torch = require_torch()
    if isinstance(child, torch.nn.Softplus) and child.beta != 1:
        raise ValueError(
            f"module[{i}]: Softplus with beta={child.beta}; minifim's softplus has beta = 1"
        )


def _pair_attr(value: Any, what: str, i: int) -> list[int]:
    if isinstance(value, str):
        if value == "valid":
            return [0, 0]
        raise ValueError(
            f"module[{i}]: Conv2d {what}={value!r}; give explicit integers (minifim's Conv2d "
            "pads with zeros by a stated amount)"
        )
    pair = (value, value) if isinstance(value, int) else tuple(value)
    return [int(v) for v in pair]


def layer_configs_from_torch(module: Any) -> list[dict[str, Any]]:
    """``config()`` dicts of minifim layers equivalent to the children of ``module``.

    Supported: ``nn.Linear``, ``nn.Conv2d`` (``groups=1``, ``padding_mode="zeros"``, integer or
    ``"valid"`` padding), ``nn.Flatten``, :class:`Mean`, ``nn.Tanh``, ``nn.ReLU``, ``nn.Sigmoid``,
    ``nn.Softplus`` (``beta=1``), ``nn.Identity``. Anything else is a ``ValueError`` naming the
    index of the module.
    """
    torch = require_torch()
    nn = torch.nn
    if not isinstance(module, nn.Sequential):
        raise TypeError(
            f"module: expected a torch.nn.Sequential of Linear/Conv2d/Flatten/Mean layers and "
            f"activations, received {type(module).__name__}"
        )
    Mean = _mean_class()
    configs: list[dict[str, Any]] = []
    for i, child in enumerate(module):
        if isinstance(child, nn.Linear):
            configs.append(
                {
                    "type": "Linear",
                    "in_features": child.in_features,
                    "out_features": child.out_features,
                    "bias": child.bias is not None,
                }
            )
        elif isinstance(child, nn.Conv2d):
            if child.groups != 1:
                raise ValueError(
                    f"module[{i}]: Conv2d with groups={child.groups}; minifim's Conv2d has "
                    "groups = 1"
                )
            if child.padding_mode != "zeros":
                raise ValueError(
                    f"module[{i}]: Conv2d with padding_mode={child.padding_mode!r}; minifim "
                    "pads with zeros"
                )
            configs.append(
                {
                    "type": "Conv2d",
                    "in_channels": child.in_channels,
                    "out_channels": child.out_channels,
                    "kernel_size": list(child.kernel_size),
                    "stride": _pair_attr(child.stride, "stride", i),
                    "padding": _pair_attr(child.padding, "padding", i),
                    "dilation": _pair_attr(child.dilation, "dilation", i),
                    "bias": child.bias is not None,
                }
            )
        elif isinstance(child, nn.Flatten):
            configs.append(
                {"type": "Flatten", "start_dim": child.start_dim, "end_dim": child.end_dim}
            )
        elif isinstance(child, Mean):
            configs.append({"type": "Mean", "axis": child.axis})
        elif type(child).__name__ in _ACTIVATION_TYPES and type(child).__module__.startswith(
            "torch.nn"
        ):
            _check_softplus(child, i)
            configs.append({"type": type(child).__name__})
        elif isinstance(child, (nn.Softmax, nn.LogSoftmax)):
            raise ValueError(_softmax_message(child, i))
        else:
            raise ValueError(
                f"module[{i}]: unsupported module {type(child).__name__}; expected Linear, "
                f"Conv2d, Flatten, minifim.oracle.torch.Mean or one of "
                f"{sorted(_ACTIVATION_TYPES)}"
            )
    if not any(c["type"] in ("Linear", "Conv2d") for c in configs):
        raise ValueError("module: no Linear or Conv2d layer found")
    return configs


def sequential_from_torch(
    module: Any,
    input_shape: Sequence[int] | None = None,
    likelihood: str | Likelihood = "categorical",
    sigma: float = 1.0,
) -> tuple[Any, np.ndarray]:
    """``(net, theta)``: a :class:`minifim.Sequential` equivalent to a ``torch.nn.Sequential``.

    Parameters
    ----------
    module : torch.nn.Sequential
        Of the modules listed in :func:`layer_configs_from_torch`.
    input_shape : sequence of int, optional
        The input shape without the sample axis, e.g. ``(1, 8, 8)`` or ``(R, D)``; default
        ``(in_features,)`` when the first module is a ``Linear`` (required otherwise).
    likelihood, sigma : the likelihood (not part of the module).

    Returns
    -------
    net : Sequential
    theta : ndarray, shape (P,)
        Bit-exact copies of the float64 weights (float32 weights are widened exactly).
    """
    configs = layer_configs_from_torch(module)
    if input_shape is None:
        if configs[0]["type"] != "Linear":
            raise ValueError(
                f"input_shape: required for a module starting with {configs[0]['type']} "
                "(e.g. (C, H, W) for a convolution)"
            )
        input_shape = (configs[0]["in_features"],)
    try:
        net = Sequential(configs, likelihood=likelihood, input_shape=input_shape, sigma=sigma)
    except (TypeError, ValueError) as err:
        raise type(err)(f"module: {err}") from None
    return net, net.from_state_dict(module.state_dict())


def mlp_from_torch(
    module: Any,
    likelihood: str | Likelihood = "categorical",
    sigma: float = 1.0,
    *,
    link: str | None = None,
    parameterization: str | None = None,
) -> tuple[MLP, np.ndarray]:
    """``(net, theta)`` from a ``torch.nn.Sequential`` of ``Linear`` layers and activations.

    The likelihood (not part of the module) is given here, with its ``link`` (Poisson) or
    ``parameterization`` (heteroscedastic) as for :class:`~minifim.MLP`. ``theta`` is exact:
    the float64 weights are copied, never recomputed.
    """
    linears, act = _layers_and_activation(module)
    sizes = [linears[0].in_features] + [lin.out_features for lin in linears]
    for l, (a, b) in enumerate(zip(linears, linears[1:])):
        if a.out_features != b.in_features:
            raise ValueError(
                f"module: layer {l} has {a.out_features} outputs but layer "
                f"{l + 1} expects {b.in_features} inputs"
            )
    net = MLP(
        sizes,
        activation=act,
        likelihood=likelihood,
        sigma=sigma,
        link=link,
        parameterization=parameterization,
    )
    return net, from_torch(module, net)


def from_torch(module: Any, net: Any = None) -> np.ndarray:
    """Flat ``theta: (P,)`` (float64, minifim order) from a ``torch.nn.Sequential``.

    Parameters
    ----------
    module : torch.nn.Sequential
        As built by :func:`to_torch` (or by hand).
    net : Sequential or MLP, optional
        When given, its layers must match the module's. Without it, a module of
        ``Linear, act, Linear, ...`` is read as an :class:`~minifim.MLP`; any other as
        :func:`sequential_from_torch` reads it (a convolution then needs its ``net``).

    Returns
    -------
    theta : ndarray, shape (P,)
        Bit-exact copies of float64 weights (float32 weights are widened exactly).
    """
    if net is None:
        try:
            linears, act = _layers_and_activation(module)
        except ValueError as mlp_err:
            try:
                return sequential_from_torch(module)[1]
            except ValueError:
                raise mlp_err from None
        sizes = [linears[0].in_features] + [lin.out_features for lin in linears]
        net = MLP(sizes, activation=act)
        return net.from_state_dict(module.state_dict())
    check_net(net)
    if isinstance(net, MLP):  # Linear, act, ...: two Linear in a row is an identity activation
        linears, act = _layers_and_activation(module)
        sizes = [linears[0].in_features] + [lin.out_features for lin in linears]
        if tuple(sizes) != net.sizes:
            raise ValueError(
                f"module: layer sizes {sizes} do not match net.sizes {list(net.sizes)}"
            )
        if net.num_layers > 1 and act != net.activation.name:
            raise ValueError(
                f"module: hidden activation {act!r} does not match the net's "
                f"{net.activation.name!r}"
            )
    else:
        _check_same_layers(layer_configs_from_torch(module), _layer_configs(net), net)
    return net.from_state_dict(module.state_dict())


def _canonical(config: dict[str, Any]) -> dict[str, Any]:
    """A layer config with named activations as their layer type (for comparisons)."""
    if config.get("type") == "Elementwise" and config.get("activation") in _ACTIVATIONS:
        return {"type": {v: k for k, v in _ACTIVATION_TYPES.items()}[config["activation"]]}
    return dict(config)


def _check_same_layers(got: list[dict], want: list[dict], net: Any) -> None:
    got_c, want_c = [_canonical(c) for c in got], [_canonical(c) for c in want]
    if len(got_c) != len(want_c):
        raise ValueError(
            f"module: {len(got_c)} modules, but the net has {len(want_c)} layers ({net!r})"
        )
    for i, (g, w) in enumerate(zip(got_c, want_c)):
        if g != w:
            what = (
                "hidden activation"
                if g["type"] in _ACTIVATION_TYPES and w["type"] in _ACTIVATION_TYPES
                else "layer"
            )
            raise ValueError(
                f"module[{i}]: {what} {g} does not match the net's {w} (layer sizes and types "
                "must match the net)"
            )


def fixture_to_torch(fixture: Any) -> tuple[Any, Any, Any]:
    """``(module, X, y)`` as torch objects (float64; int64 labels for categorical).

    ``module`` is :func:`to_torch` of the fixture's model and parameters, so
    ``module.state_dict()`` equals the fixture's ``state_dict/...`` arrays.
    """
    from .fixtures import load_fixture

    torch = require_torch()
    fx = load_fixture(fixture)
    net = fx.net
    return (
        to_torch(net, fx.theta),
        torch.from_numpy(fx.X.copy()),
        torch.from_numpy(np.array(fx.y)),
    )


# --- torch.func reference quantities -------------------------------------------------------------
def _log_prob(torch: Any, net: Any, f: Any, y: Any) -> Any:
    """``log p(y | f)`` per sample in torch, ``(N,)``: summed over the output positions."""
    lik = net.likelihood
    if lik.name == "categorical":
        terms = torch.log_softmax(f, dim=-1).gather(-1, y[..., None])[..., 0]
    elif lik.name == "bernoulli":
        terms = y * f - torch.logaddexp(torch.zeros_like(f), f)
    elif lik.name == "heteroscedastic":
        C = f.shape[-1] // 2
        f1, f2 = f[..., :C], f[..., C:]
        natural = cast("HeteroscedasticGaussian", lik).natural
        mu, var = (f1 * torch.exp(-f2), torch.exp(-f2)) if natural else (f1, torch.exp(f2))
        # GaussianNLLLoss(full=True, eps -> 0) per element, written out: the functional
        # checks var >= 0 by data-dependent control flow, which torch.func.vmap refuses
        terms = -(0.5 * (torch.log(var) + (mu - y) ** 2 / var) + 0.5 * math.log(2 * math.pi))
    elif lik.name == "poisson":
        F = torch.nn.functional
        if cast("Poisson", lik).link == "log":
            nll = F.poisson_nll_loss(f, y, log_input=True, full=False, reduction="none")
        else:
            rate = torch.logaddexp(torch.zeros_like(f), f)
            nll = F.poisson_nll_loss(rate, y, log_input=False, eps=0.0, reduction="none")
        terms = -(nll + torch.lgamma(y + 1.0))
    else:
        sigma = cast("Gaussian", lik).sigma
        terms = -0.5 * (y - f) ** 2 / sigma**2 - 0.5 * math.log(2 * math.pi * sigma**2)
    return terms.reshape(terms.shape[0], -1).sum(-1)


def _output_fisher(torch: Any, net: Any, f: Any) -> Any:
    """``Lambda: (N, *positions, C, C)`` in torch (one ``C x C`` block per output position)."""
    lik = net.likelihood
    C = f.shape[-1]
    if lik.name == "categorical":
        p = torch.softmax(f, dim=-1)
        return torch.diag_embed(p) - p[..., :, None] * p[..., None, :]
    if lik.name == "bernoulli":
        s = torch.sigmoid(f)
        return torch.diag_embed(s * (1 - s))
    if lik.name == "heteroscedastic":
        K = C // 2
        f1, f2 = f[:, :K], f[:, K:]
        Lam = torch.zeros(f.shape[0], C, C, dtype=f.dtype)
        i, j = torch.arange(K), torch.arange(K) + K
        if cast("HeteroscedasticGaussian", lik).natural:
            var = torch.exp(-f2)
            mu = f1 * var
            Lam[:, i, i], Lam[:, i, j], Lam[:, j, i] = var, -mu, -mu
            Lam[:, j, j] = 0.5 + mu * mu / var
        else:
            Lam[:, i, i], Lam[:, j, j] = torch.exp(-f2), torch.full_like(f2, 0.5)
        return Lam
    if lik.name == "poisson":
        if cast("Poisson", lik).link == "log":
            return torch.diag_embed(torch.exp(f))
        s = torch.sigmoid(f)
        return torch.diag_embed(s * s / torch.logaddexp(torch.zeros_like(f), f))
    eye = torch.eye(C, dtype=f.dtype)
    return eye.expand(*f.shape, C) / cast("Gaussian", lik).sigma ** 2


QUANTITIES = (
    "outputs",
    "scores",
    "jacobians",
    "output_fisher",
    "true_fisher",
    "empirical_fisher",
    "ggn",
    "hessian",
    "gradient",
    "loss",
)


def _functional(torch: Any, net: Any, theta: np.ndarray) -> tuple[Any, Any]:
    """``(module, forward(th, x))`` with ``th`` the flat parameters in minifim's order."""
    from torch.func import functional_call

    module = to_torch(net, theta)
    names = [k for k, _ in module.named_parameters()]
    shapes = [tuple(p.shape) for _, p in module.named_parameters()]
    sizes = [math.prod(s) for s in shapes]

    def forward(th: Any, x: Any) -> Any:
        params = {n: t.reshape(s) for n, t, s in zip(names, torch.split(th, sizes), shapes)}
        return functional_call(module, params, (x,))

    return module, forward


def torch_quantities(
    net: Any, theta: ArrayLike, X: ArrayLike, y: ArrayLike, quantities: Iterable[str] = QUANTITIES
) -> dict[str, np.ndarray]:
    """Reference quantities computed with ``torch.func`` on :func:`to_torch`'s module.

    Parameters
    ----------
    net : Sequential or MLP
    theta : ndarray, shape (P,)
    X : ndarray, shape ``(N, *input_shape)``
    y : targets of the likelihood
    quantities : subset of ``QUANTITIES``

    Returns
    -------
    dict of str -> ndarray (float64)
        ``outputs: (N, *output_shape)``; ``scores: (N, P)`` = ``vmap(grad(log p))`` with a
        sample's ``log p`` summed over its output positions; ``jacobians: (N, *output_shape,
        P)`` = ``vmap(jacrev(f))``; ``output_fisher: (N, *positions, C, C)`` from
        ``softmax``/``sigmoid``; ``true_fisher = 1/N sum_{n, r} J_{nr}^T Lambda_{nr} J_{nr}``
        (positions are independent given the input); ``empirical_fisher = S^T S / N``;
        ``ggn = 1/N sum_n J_n^T H_n J_n`` with ``H_n`` the ``torch.func.hessian`` of the
        per-sample loss in the outputs at the labels (outputs without positions);
        ``hessian`` = ``torch.func.hessian`` of the mean NLL; ``gradient`` =
        ``torch.func.grad`` of it; ``loss``.

    Notes
    -----
    The module is called through ``torch.func.functional_call`` with the flat parameter
    vector split into views in minifim's order, so every derivative is with respect to the
    same ``theta: (P,)``.
    """
    check_net(net)
    torch = require_torch()
    from torch.func import grad, hessian, jacrev, vmap

    bad = [q for q in quantities if q not in QUANTITIES]
    if bad:
        raise ValueError(f"quantities: unknown {bad}; expected a subset of {list(QUANTITIES)}")
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    N = X.shape[0]
    y = net.check_targets(y, N)
    _, forward = _functional(torch, net, theta)

    th = torch.from_numpy(theta.copy())
    Xt = torch.from_numpy(X.copy())
    yt = torch.from_numpy(np.array(y))

    def nll_mean(t: Any) -> Any:
        return -_log_prob(torch, net, forward(t, Xt), yt).mean()

    def log_p_one(t: Any, x: Any, yy: Any) -> Any:
        return _log_prob(torch, net, forward(t, x[None]), yy[None])[0]

    out: dict[str, np.ndarray] = {}
    want = set(quantities)
    with torch.no_grad():
        f = forward(th, Xt)
    if "outputs" in want:
        out["outputs"] = f.numpy().copy()
    S: Any = None
    J: Any = None
    Lam: Any = None
    if want & {"scores", "empirical_fisher"}:
        S = vmap(grad(log_p_one), in_dims=(None, 0, 0))(th, Xt, yt)
        out["scores"] = S.detach().numpy().copy()
    if want & {"jacobians", "true_fisher"}:
        J = vmap(jacrev(lambda t, x: forward(t, x[None])[0]), in_dims=(None, 0))(th, Xt)
        out["jacobians"] = J.detach().numpy().copy()
    if want & {"output_fisher", "true_fisher"}:
        Lam = _output_fisher(torch, net, f)
        out["output_fisher"] = Lam.numpy().copy()
    if "true_fisher" in want:
        C, P = f.shape[-1], th.shape[0]
        Jr = J.reshape(N, -1, C, P)
        Lr = Lam.reshape(N, -1, C, C)
        out["true_fisher"] = (torch.einsum("nkcp,nkcd,nkdq->pq", Jr, Lr, Jr) / N).detach().numpy()
    if "empirical_fisher" in want:
        out["empirical_fisher"] = (S.T @ S / N).detach().numpy()
    if "ggn" in want:
        if J is None:
            J = vmap(jacrev(lambda t, x: forward(t, x[None])[0]), in_dims=(None, 0))(th, Xt)

        def nll_out(fo: Any, yy: Any) -> Any:  # -log p(y | f) of one sample, in the outputs
            return -_log_prob(torch, net, fo[None], yy[None])[0]

        Jf = J.reshape(N, -1, th.shape[0])  # (N, Q, P), Q = prod(output_shape)
        Q = Jf.shape[1]
        H = vmap(hessian(nll_out))(f, yt).reshape(N, Q, Q)  # torch's own H_f(y)
        out["ggn"] = (torch.einsum("ncp,ncd,ndq->pq", Jf, H, Jf) / N).detach().numpy()
    if "hessian" in want:
        out["hessian"] = hessian(nll_mean)(th).detach().numpy()
    if "gradient" in want:
        out["gradient"] = grad(nll_mean)(th).detach().numpy()
    if "loss" in want:
        out["loss"] = np.asarray(float(nll_mean(th)))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items() if k in want}


# --- curvlinops reference quantities -------------------------------------------------------------
CURVLINOPS_QUANTITIES = ("ggn", "hessian", "empirical_fisher", "kfac_true", "kfac_empirical")


def _curvlinops_setup(torch: Any, net: Any, theta: np.ndarray) -> tuple[Any, Any, float, float]:
    """``(model, loss_func, curvature scale, empirical scale)``: the torch model (with the class
    axis moved to 1 for a positional categorical output), the summed loss, and the factors that
    turn its curvature and its gradient outer products into those of minifim's summed NLL."""
    module = to_torch(net, theta)
    lik = net.likelihood.name
    if lik == "categorical":
        loss = torch.nn.CrossEntropyLoss(reduction="sum")
        if net.has_positions:  # CrossEntropyLoss wants the classes on axis 1
            module = torch.nn.Sequential(*module, _move_class_axis(torch))
        return module, loss, 1.0, 1.0
    if lik == "bernoulli":
        return module, torch.nn.BCEWithLogitsLoss(reduction="sum"), 1.0, 1.0
    # MSELoss(sum) = sum (f - y)^2 = 2 sigma^2 NLL + const: Hessians scale by 2 sigma^2,
    # gradient outer products by (2 sigma^2)^2
    s2 = 2.0 * cast("Gaussian", net.likelihood).sigma ** 2
    return module, torch.nn.MSELoss(reduction="sum"), 1.0 / s2, 1.0 / s2**2


def _move_class_axis(torch: Any) -> Any:
    class MoveClassAxis(torch.nn.Module):
        """``(N, *positions, C) -> (N, C, *positions)`` for ``CrossEntropyLoss``."""

        def forward(self, x: Any) -> Any:
            return torch.movedim(x, -1, 1)

    return MoveClassAxis()


def curvlinops_quantities(
    net: Any,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    quantities: Iterable[str] = CURVLINOPS_QUANTITIES,
    kfac_approx: str = "expand",
    bias: str = "separate",
) -> dict[str, np.ndarray]:
    """Dense ``(P, P)`` curvatures from curvlinops, in minifim's convention.

    Parameters
    ----------
    net : Sequential or MLP
    theta : ndarray, shape (P,)
    X : ndarray, shape ``(N, *input_shape)``
    y : targets of the likelihood
    quantities : subset of ``CURVLINOPS_QUANTITIES``
        ``"ggn"`` (``GGNLinearOperator``), ``"hessian"`` (``HessianLinearOperator``),
        ``"empirical_fisher"`` (``EFLinearOperator``), ``"kfac_true"`` / ``"kfac_empirical"``
        (``KFACLinearOperator`` with ``fisher_type="type-2"`` / ``"empirical"``).
    kfac_approx : {"expand", "reduce"}
        curvlinops' ``kfac_approx``.
    bias : {"separate", "folded"}
        ``separate_weight_and_bias=True`` / ``False``.

    Returns
    -------
    dict of str -> ndarray, shape (P, P)
        Each operator multiplied onto the identity, in minifim's parameter order (curvlinops
        flattens ``module.parameters()`` row-major: the same order).

    Notes
    -----
    Conversions (every one exact): the loss is summed over all ``N R`` loss terms
    (``reduction="sum"``) and the result divided by ``N``: minifim's curvatures are means over
    samples of a sample's log-likelihood summed over its ``R`` positions. Categorical:
    ``CrossEntropyLoss`` with the class axis moved to axis 1 for a positional output.
    Bernoulli: ``BCEWithLogitsLoss``. Gaussian: ``MSELoss = sum (f - y)^2 = 2 sigma^2 NLL +
    const``, so Hessian-type quantities (GGN, Hessian, type-2 K-FAC) are divided by ``2
    sigma^2`` and gradient outer products (empirical Fisher, empirical K-FAC) by ``(2
    sigma^2)^2``.

    One difference of definition: curvlinops' empirical Fisher (``EFLinearOperator``, and
    ``KFACLinearOperator(fisher_type="empirical")``) treats every output *position* as a data
    point, ``sum_{n, r} g_{nr} g_{nr}^T``, where minifim (issue 14) treats a sample as the whole
    sequence, ``sum_n s_n s_n^T`` with ``s_n = sum_r g_{nr}``. The two agree when ``R = 1`` and
    differ by the cross-position terms ``sum_n sum_{r != r'} g_{nr} g_{nr'}^T`` otherwise (both
    have the true Fisher as their expectation over the model's labels; the empirical K-FAC
    agrees in both flavours).

    And one difference of computation, for K-FAC-reduce of a positional output with
    ``fisher_type="type-2"``: curvlinops backpropagates column ``c`` of the loss Hessian's
    square root ``S_r = diag(sqrt p_r) - p_r sqrt(p_r)^T`` of every position ``r`` at once, and
    reduce sums a layer's output gradients over positions, so its ``G`` holds the cross terms
    ``S_r S_r'^T`` (``r != r'``) carried back to the layer, which depend on the choice of
    square root. minifim's true-Fisher K-FAC is the exact expectation over the labels, drawn per
    position and class, where the cross terms vanish (``E[g_r g_r'^T] = E[g_r] E[g_r']^T = 0``):
    the limit of curvlinops' own ``fisher_type="mc"``, not its ``"type-2"``. K-FAC-expand does
    not sum over positions and agrees (no minifim layer mixes positions that stay separate in
    the output: ``Linear`` acts per position, a convolution's positions are flattened or
    averaged before the likelihood).
    """
    check_net(net)
    torch = require_torch()
    try:
        curvlinops = importlib.import_module("curvlinops")  # optional, untyped
    except ImportError as err:  # pragma: no cover - exercised only without curvlinops
        raise ImportError(
            "curvlinops_quantities needs curvlinops: pip install curvlinops-for-pytorch "
            "(after torch==2.13.0), or `make crosscheck`"
        ) from err
    quantities = list(quantities)
    bad = [q for q in quantities if q not in CURVLINOPS_QUANTITIES]
    if bad:
        raise ValueError(
            f"quantities: unknown {bad}; expected a subset of {list(CURVLINOPS_QUANTITIES)}"
        )
    check_choice(kfac_approx, "kfac_approx", ("expand", "reduce"))
    check_choice(bias, "bias", ("separate", "folded"))
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    N = X.shape[0]
    y = net.check_targets(y, N)
    model, loss, curv_scale, ef_scale = _curvlinops_setup(torch, net, theta)
    params = [p for p in model.parameters() if p.requires_grad]
    yt = torch.from_numpy(np.array(y))
    if net.likelihood.name == "bernoulli":
        yt = yt.to(torch.float64)
    data = [(torch.from_numpy(X.copy()), yt)]
    P = net.num_params
    eye = torch.eye(P, dtype=torch.float64)

    def dense(op: Any, scale: float) -> np.ndarray:
        return np.asarray((op @ eye).detach().numpy(), dtype=np.float64) * (scale / N)

    out: dict[str, np.ndarray] = {}
    for q in quantities:
        if q == "ggn":
            op = curvlinops.GGNLinearOperator(model, loss, params, data)
            out[q] = dense(op, curv_scale)
        elif q == "hessian":
            op = curvlinops.HessianLinearOperator(model, loss, params, data)
            out[q] = dense(op, curv_scale)
        elif q == "empirical_fisher":
            op = curvlinops.EFLinearOperator(model, loss, params, data)
            out[q] = dense(op, ef_scale)
        else:
            fisher = "type-2" if q == "kfac_true" else "empirical"
            op = curvlinops.KFACLinearOperator(
                model,
                loss,
                params,
                data,
                fisher_type=fisher,
                kfac_approx=kfac_approx,
                separate_weight_and_bias=bias == "separate",
            )
            out[q] = dense(op, curv_scale if fisher == "type-2" else ef_scale)
    return out
