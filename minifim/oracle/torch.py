"""Bridge to PyTorch: convert models both ways and compute the reference quantities in torch.

Optional: needs the ``crosscheck`` extra (``pip install torch==2.13.0``, the CPU build);
``torch`` is imported lazily, on the first call, so ``import minifim`` never needs it.

Contract:

- :func:`to_torch` builds ``torch.nn.Sequential(Linear, act, Linear, act, ..., Linear)`` in
  float64 whose ``state_dict()`` keys are those of :meth:`MLP.to_state_dict` (``"0.weight"``,
  ``"0.bias"``, ``"2.weight"``, ...) and whose weights are copies of ``theta``'s blocks, bit for
  bit; :func:`from_torch` is its exact inverse: ``from_torch(to_torch(net, theta)) == theta``.
  The likelihood is not part of a ``torch`` module; it stays with the :class:`~minifim.MLP`.
- Activations map to ``nn.Tanh``, ``nn.ReLU``, ``nn.Sigmoid``, ``nn.Softplus`` (``beta=1``;
  built with ``threshold=40``, beyond which ``log(1 + e^z) = z`` in float64, where torch's default
  threshold 20 would differ from ``log(1 + e^z)`` by up to 2e-9) and ``nn.Identity``.
- :func:`torch_quantities` computes per-sample scores, output Jacobians, the true and empirical
  Fisher, the GGN at the labels, the Hessian and the gradient with ``torch.func`` (``vmap``,
  ``grad``, ``jacrev``, ``hessian``) on the flat parameter vector in minifim's order: an
  independent second route for every array of a fixture (means over samples, like minifim).

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
  ``torch.func.hessian`` of the per-sample loss in the outputs, not the Fisher.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import ArrayLike

from ..core.model import MLP

if TYPE_CHECKING:
    from ..core.likelihoods import Gaussian, HeteroscedasticGaussian, Likelihood, Poisson

__all__ = [
    "to_torch",
    "from_torch",
    "mlp_from_torch",
    "torch_quantities",
    "fixture_to_torch",
    "require_torch",
]

SOFTPLUS_THRESHOLD = 40.0
_ACTIVATIONS = ("tanh", "relu", "sigmoid", "softplus", "identity")


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


def _activation_module(name: str) -> Any:
    torch = require_torch()
    nn = torch.nn
    if name == "tanh":
        return nn.Tanh()
    if name == "relu":
        return nn.ReLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "softplus":
        return nn.Softplus(beta=1.0, threshold=SOFTPLUS_THRESHOLD)
    if name == "identity":
        return nn.Identity()
    raise ValueError(
        f"net.activation: expected one of {list(_ACTIVATIONS)} to build a torch "
        f"module, received a custom activation {name!r}"
    )


def to_torch(net: MLP, theta: ArrayLike) -> Any:
    """``torch.nn.Sequential`` (float64) computing ``net.forward(theta, .)``.

    Parameters
    ----------
    net : MLP
        With a named activation.
    theta : ndarray, shape (P,)

    Returns
    -------
    torch.nn.Sequential
        ``Linear(D, H1), act, Linear(H1, H2), act, ..., Linear(H_{L-1}, C)`` in float64; an
        identity activation is kept as ``nn.Identity`` so the state-dict keys are always
        ``"0"``, ``"2"``, ``"4"``, ...
    """
    torch = require_torch()
    if not isinstance(net, MLP):
        raise TypeError(f"net: expected a minifim.MLP, received {type(net).__name__}")
    theta = net.check_theta(theta)
    name = net.activation.name
    if name not in _ACTIVATIONS:
        _activation_module(name)  # raises the clear error
    modules = []
    for l, (W, b) in enumerate(net.unflatten(theta)):
        out, inp = W.shape
        lin = torch.nn.Linear(inp, out, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.array(W, dtype=np.float64)))
            lin.bias.copy_(torch.from_numpy(np.array(b, dtype=np.float64)))
        modules.append(lin)
        if l < net.num_layers - 1:
            modules.append(_activation_module(name))
    return torch.nn.Sequential(*modules)


def _layers_and_activation(module: Any) -> tuple[list[Any], str]:
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
                    f"module[{i}]: Linear without bias; minifim's MLP has a bias in every layer"
                )
            linears.append(child)
            pending = None
        elif type(child) in kinds:
            if not linears or pending is not None:
                raise ValueError(
                    f"module[{i}]: expected Linear, activation, Linear, ...; "
                    f"found {type(child).__name__} out of place"
                )
            if isinstance(child, nn.Softplus) and child.beta != 1:
                raise ValueError(
                    f"module[{i}]: Softplus with beta={child.beta}; minifim's softplus has beta = 1"
                )
            pending = kinds[type(child)]
        elif isinstance(child, (nn.Softmax, nn.LogSoftmax)):
            raise ValueError(
                f"module[{i}]: {type(child).__name__} belongs to the likelihood, "
                "not the network: drop it (minifim's outputs are logits) and "
                "pass likelihood='categorical'"
            )
        else:
            raise ValueError(
                f"module[{i}]: unsupported module {type(child).__name__}; "
                f"expected Linear or one of {sorted(set(kinds.values()))}"
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
            "one activation for every hidden layer"
        )
    return linears, (acts.pop() if acts else "identity")


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


def from_torch(module: Any, net: MLP | None = None) -> np.ndarray:
    """Flat ``theta: (P,)`` (float64, minifim order) from a ``torch.nn.Sequential``.

    Parameters
    ----------
    module : torch.nn.Sequential
        ``Linear, act, Linear, ...`` as built by :func:`to_torch` (or by hand).
    net : MLP, optional
        When given, its sizes and activation must match the module.

    Returns
    -------
    theta : ndarray, shape (P,)
        Bit-exact copies of float64 weights (float32 weights are widened exactly).
    """
    linears, act = _layers_and_activation(module)
    layers = [
        (
            lin.weight.detach().cpu().numpy().astype(np.float64),
            lin.bias.detach().cpu().numpy().astype(np.float64),
        )
        for lin in linears
    ]
    if net is None:
        sizes = [linears[0].in_features] + [lin.out_features for lin in linears]
        net = MLP(sizes, activation=act)
    elif not isinstance(net, MLP):
        raise TypeError(f"net: expected a minifim.MLP or None, received {type(net).__name__}")
    else:
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
    return net.flatten(layers)


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


def _log_prob(torch: Any, net: MLP, f: Any, y: Any) -> Any:
    """``log p(y | f)`` per sample in torch, ``(N,)``."""
    lik = net.likelihood
    if lik.name == "categorical":
        return torch.log_softmax(f, dim=-1).gather(-1, y[..., None])[..., 0]
    if lik.name == "bernoulli":
        return (y * f - torch.logaddexp(torch.zeros_like(f), f)).sum(-1)
    F = torch.nn.functional
    if lik.name == "heteroscedastic":
        C = f.shape[-1] // 2
        f1, f2 = f[..., :C], f[..., C:]
        natural = cast("HeteroscedasticGaussian", lik).natural
        mu, var = (f1 * torch.exp(-f2), torch.exp(-f2)) if natural else (f1, torch.exp(f2))
        # GaussianNLLLoss(full=True, eps -> 0) per element, written out: the functional
        # checks var >= 0 by data-dependent control flow, which torch.func.vmap refuses
        nll = 0.5 * (torch.log(var) + (mu - y) ** 2 / var) + 0.5 * math.log(2 * math.pi)
        return -nll.sum(-1)
    if lik.name == "poisson":
        if cast("Poisson", lik).link == "log":
            nll = F.poisson_nll_loss(f, y, log_input=True, full=False, reduction="none")
        else:
            rate = torch.logaddexp(torch.zeros_like(f), f)
            nll = F.poisson_nll_loss(rate, y, log_input=False, eps=0.0, reduction="none")
        return -(nll + torch.lgamma(y + 1.0)).sum(-1)
    sigma = cast("Gaussian", lik).sigma
    C = f.shape[-1]
    return -0.5 * ((y - f) ** 2).sum(-1) / sigma**2 - 0.5 * C * math.log(2 * math.pi * sigma**2)


def _output_fisher(torch: Any, net: MLP, f: Any) -> Any:
    """``Lambda: (N, C, C)`` in torch."""
    lik = net.likelihood
    C = f.shape[-1]
    if lik.name == "categorical":
        p = torch.softmax(f, dim=-1)
        return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
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
    return eye.expand(f.shape[0], C, C) / cast("Gaussian", lik).sigma ** 2


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


def torch_quantities(
    net: MLP, theta: ArrayLike, X: ArrayLike, y: ArrayLike, quantities: Iterable[str] = QUANTITIES
) -> dict[str, np.ndarray]:
    """Reference quantities computed with ``torch.func`` on :func:`to_torch`'s module.

    Parameters
    ----------
    net : MLP
    theta : ndarray, shape (P,)
    X : ndarray, shape (N, D)
    y : targets of the likelihood
    quantities : subset of ``QUANTITIES``

    Returns
    -------
    dict of str -> ndarray (float64)
        ``outputs: (N, C)``; ``scores: (N, P)`` = ``vmap(grad(log p))``; ``jacobians:
        (N, C, P)`` = ``vmap(jacrev(f))``; ``output_fisher: (N, C, C)`` from
        ``softmax``/``sigmoid``; ``true_fisher = 1/N sum_n J_n^T Lambda_n J_n``;
        ``empirical_fisher = S^T S / N``; ``ggn = 1/N sum_n J_n^T H_n J_n`` with ``H_n`` the
        ``torch.func.hessian`` of the per-sample loss in the outputs at the labels;
        ``hessian`` = ``torch.func.hessian`` of the mean NLL; ``gradient`` =
        ``torch.func.grad`` of it; ``loss``.

    Notes
    -----
    The module is called through ``torch.func.functional_call`` with the flat parameter
    vector split into views in minifim's order, so every derivative is with respect to the
    same ``theta: (P,)``.
    """
    torch = require_torch()
    from torch.func import functional_call, grad, hessian, jacrev, vmap

    bad = [q for q in quantities if q not in QUANTITIES]
    if bad:
        raise ValueError(f"quantities: unknown {bad}; expected a subset of {list(QUANTITIES)}")
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    N = X.shape[0]
    y = net.check_targets(y, N)
    module = to_torch(net, theta)
    names = [k for k, _ in module.named_parameters()]
    shapes = [tuple(p.shape) for _, p in module.named_parameters()]
    sizes = [math.prod(s) for s in shapes]

    def params(th: Any) -> dict[str, Any]:
        return {n: t.reshape(s) for n, t, s in zip(names, torch.split(th, sizes), shapes)}

    def forward(th: Any, x: Any) -> Any:
        return functional_call(module, params(th), (x,))

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
        out["true_fisher"] = (torch.einsum("ncp,ncd,ndq->pq", J, Lam, J) / N).detach().numpy()
    if "empirical_fisher" in want:
        out["empirical_fisher"] = (S.T @ S / N).detach().numpy()
    if "ggn" in want:
        if J is None:
            J = vmap(jacrev(lambda t, x: forward(t, x[None])[0]), in_dims=(None, 0))(th, Xt)

        def nll_out(fo: Any, yy: Any) -> Any:  # -log p(y | f) of one sample, in the outputs
            return -_log_prob(torch, net, fo[None], yy[None])[0]

        H = vmap(hessian(nll_out))(f, yt)  # (N, C, C): torch's own H_f(y)
        out["ggn"] = (torch.einsum("ncp,ncd,ndq->pq", J, H, J) / N).detach().numpy()
    if "hessian" in want:
        out["hessian"] = hessian(nll_mean)(th).detach().numpy()
    if "gradient" in want:
        out["gradient"] = grad(nll_mean)(th).detach().numpy()
    if "loss" in want:
        out["loss"] = np.asarray(float(nll_mean(th)))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items() if k in want}
