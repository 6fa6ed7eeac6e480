"""The probabilistic model: a fully connected network plus its likelihood, ``p_theta(y | x)``.

Conventions (stated once, used everywhere; see :doc:`/conventions`):

- layer sizes ``[D, H1, ..., C]``; ``L = len(sizes) - 1`` dense layers; the activation acts on
  every hidden layer, the last layer is linear and gives the outputs ``f: (N, C)`` (logits for
  categorical/Bernoulli, means for Gaussian);
- parameters are one flat float64 vector ``theta: (P,)`` ordered ``W0, b0, W1, b1, ...``, each
  ``W`` in PyTorch layout ``(out, in)`` flattened row-major (C order);
- the forward pass ``z_l = a_l W_l^T + b_l``, ``a_{l+1} = phi(z_l)``, ``a_0 = X``, is written
  with ``autograd.numpy`` so the generic autograd route differentiates the same code.

Invariant: ``net.flatten(net.unflatten(theta)) == theta`` and
``net.from_state_dict(net.to_state_dict(theta)) == theta`` bit for bit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import autograd.numpy as anp
import numpy as np
from numpy.typing import ArrayLike

from .._validation import NetworkBase, as_float_array, as_generator, check_int, is_box
from ..options import InitScheme, deprecated_keywords
from .activations import ACTIVATIONS, Activation, get_activation
from .likelihoods import Likelihood, get_likelihood

if TYPE_CHECKING:
    from .likelihoods import Gaussian

__all__ = ["MLP"]


class MLP(NetworkBase):
    """A multilayer perceptron with a likelihood: the model ``p_theta(y | x)``.

    Parameters
    ----------
    sizes : sequence of int, length >= 2
        Layer widths ``[D, H1, ..., C]``.
    activation : str or callable
        ``"tanh"``, ``"relu"``, ``"sigmoid"``, ``"softplus"``, ``"identity"``, or an
        elementwise callable written with ``autograd.numpy``; applied to hidden layers.
    likelihood : str or Likelihood
        ``"categorical"`` (softmax), ``"bernoulli"`` (sigmoid per output), ``"gaussian"``,
        ``"heteroscedastic"`` (a Gaussian with learned variances: ``C = sizes[-1] / 2``
        targets, the last layer's first half the means and second half the log-variances)
        or ``"poisson"`` (counts).
    sigma : float
        Standard deviation of the Gaussian likelihood (ignored otherwise).
    link : {"log", "softplus"}, optional
        The Poisson rate ``r = e^f`` (default) or ``r = log(1 + e^f)``; only for
        ``likelihood="poisson"``.
    parameterization : {"logvar", "natural"}, optional
        The heteroscedastic outputs ``(mu, log sigma^2)`` (default) or the natural
        parameters ``(mu / sigma^2, log(1 / sigma^2))``; only for
        ``likelihood="heteroscedastic"``.

    Examples
    --------
    >>> net = MLP([4, 8, 3])
    >>> theta = net.init(0)
    >>> theta.shape == (net.num_params,) == (4 * 8 + 8 + 8 * 3 + 3,)
    True
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | Activation | Callable[..., Any] = "tanh",
        likelihood: str | Likelihood = "categorical",
        sigma: float = 1.0,
        *,
        link: str | None = None,
        parameterization: str | None = None,
    ) -> None:
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence | np.ndarray):
            raise TypeError(
                f"sizes: expected a sequence of layer widths such as [4, 8, 3], "
                f"received {type(sizes).__name__}"
            )
        sizes = tuple(check_int(s, f"sizes[{i}]", 1) for i, s in enumerate(sizes))
        if len(sizes) < 2:
            raise ValueError(f"sizes: expected at least 2 widths [D, ..., C], received {sizes}")
        self.sizes = sizes
        self.activation: Activation = get_activation(activation)
        self.likelihood: Likelihood = get_likelihood(
            likelihood, sigma, link=link, parameterization=parameterization
        )
        if self.likelihood.name == "heteroscedastic" and sizes[-1] % 2:
            raise ValueError(
                f"sizes: the heteroscedastic likelihood needs an even output width 2C (C "
                f"means, then C log-variances), received sizes[-1] = {sizes[-1]}"
            )
        self.shapes = [(sizes[l + 1], sizes[l]) for l in range(len(sizes) - 1)]
        slices, offset = [], 0
        for out, inp in self.shapes:
            w = slice(offset, offset + out * inp)
            b = slice(w.stop, w.stop + out)
            slices.append((w, b))
            offset = b.stop
        self.layer_slices = slices
        self.num_params = offset

    # --- structure -----------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """``L``, the number of dense layers."""
        return len(self.shapes)

    @property
    def input_dim(self) -> int:
        """``D``."""
        return self.sizes[0]

    @property
    def output_dim(self) -> int:
        """``C``."""
        return self.sizes[-1]

    @property
    def target_dim(self) -> int:
        """Width of the targets ``y: (N, target_dim)``: ``C``, or ``C / 2`` for the
        heteroscedastic likelihood (``2C`` outputs per ``C`` targets)."""
        return (
            self.output_dim // 2 if self.likelihood.name == "heteroscedastic" else self.output_dim
        )

    def layer_param_slices(self) -> list[slice]:
        """Per layer, the slice of ``theta`` holding ``(W_l, b_l)`` together, shape ``(P_l,)``."""
        return [slice(w.start, b.stop) for w, b in self.layer_slices]

    def param_names(self) -> list[str]:
        """Names of the flat blocks in order: ``["W0", "b0", "W1", "b1", ...]``."""
        return [f"{k}{l}" for l in range(self.num_layers) for k in ("W", "b")]

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description; ``MLP(**config)`` rebuilds the model."""
        if ACTIVATIONS.get(self.activation.name) is not self.activation:
            raise ValueError(
                f"activation: a custom callable ({self.activation.name!r}) cannot "
                "be serialised; use a named activation"
            )
        cfg: dict[str, Any] = {"sizes": list(self.sizes), "activation": self.activation.name}
        lik = self.likelihood.config()
        cfg["likelihood"] = lik["likelihood"]
        cfg["sigma"] = float(lik.get("sigma", 1.0))
        for key in ("link", "parameterization"):
            if key in lik:
                cfg[key] = lik[key]
        return cfg

    def __repr__(self) -> str:
        gaussian = self.likelihood.name == "gaussian"
        extra = f", sigma={cast('Gaussian', self.likelihood).sigma!r}" if gaussian else ""
        for key in ("link", "parameterization"):
            if key in self.likelihood.config():
                extra += f", {key}={self.likelihood.config()[key]!r}"
        return (
            f"MLP({list(self.sizes)}, activation={self.activation.name!r}, "
            f"likelihood={self.likelihood.name!r}{extra})"
        )

    # --- parameters ----------------------------------------------------------------------
    @deprecated_keywords(seed_or_rng="rng")
    def init(
        self, rng: np.random.Generator | int, scheme: str | InitScheme = "pytorch"
    ) -> np.ndarray:
        """Random parameters ``theta: (P,)``.

        Parameters
        ----------
        rng : numpy.random.Generator or int
            The generator or its seed (formerly ``seed_or_rng=``, deprecated).
        scheme : {"pytorch", "normal"}
            ``"pytorch"``: ``W, b ~ U(-1/sqrt(in), 1/sqrt(in))`` (``torch.nn.Linear``'s
            default); ``"normal"``: ``W ~ N(0, 1/in)``, ``b = 0`` (LeCun normal).
        """
        rng = as_generator(rng, "rng")
        if scheme not in InitScheme.values():
            raise ValueError(f"scheme: expected 'pytorch' or 'normal', received {scheme!r}")
        theta = np.empty(self.num_params)
        for (out, inp), (ws, bs) in zip(self.shapes, self.layer_slices):
            bound = 1.0 / np.sqrt(inp)
            if scheme == "pytorch":
                theta[ws] = rng.uniform(-bound, bound, out * inp)
                theta[bs] = rng.uniform(-bound, bound, out)
            else:
                theta[ws] = rng.standard_normal(out * inp) * bound
                theta[bs] = 0.0
        return theta

    def check_theta(self, theta: ArrayLike, name: str = "theta") -> np.ndarray:
        """Validate ``theta: (P,)`` finite float64."""
        arr = as_float_array(theta, name, finite=False)
        if arr.shape != (self.num_params,):
            raise ValueError(
                f"{name}: expected shape ({self.num_params},) for {self!r}, "
                f"received shape {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: expected finite values, received NaN/Inf")
        return arr

    def _check_theta_or_box(self, theta: Any) -> Any:
        """:meth:`check_theta`, or only the shape of an autograd box (values not inspected)."""
        if not is_box(theta):
            return self.check_theta(theta)
        if np.shape(theta) != (self.num_params,):
            raise ValueError(
                f"theta: expected shape ({self.num_params},) for {self!r}, "
                f"received shape {np.shape(theta)}"
            )
        return theta

    def check_inputs(self, X: ArrayLike, name: str = "X") -> np.ndarray:
        """Validate ``X: (N, D)`` finite float64."""
        arr = as_float_array(X, name, finite=False)
        if arr.ndim != 2:
            hint = " (use X[None, :] for one sample)" if arr.ndim == 1 else ""
            raise ValueError(
                f"{name}: expected a 2-D array of shape (N, {self.input_dim}), "
                f"received shape {arr.shape}{hint}"
            )
        if arr.shape[0] == 0:
            raise ValueError(
                f"{name}: expected at least one sample (shape (N, "
                f"{self.input_dim}) with N >= 1), received shape {arr.shape}"
            )
        if arr.shape[1] != self.input_dim:
            raise ValueError(
                f"{name}: expected {self.input_dim} input features (shape (N, "
                f"{self.input_dim})), received shape {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: expected finite values, received NaN/Inf")
        return arr

    def check_targets(self, y: ArrayLike, N: int, name: str = "y") -> np.ndarray:
        """Validate targets for ``N`` samples against the likelihood (see its docstring)."""
        return self.likelihood.check_targets(y, N, self.output_dim, name)

    def unflatten(self, theta: Any) -> list[tuple[Any, Any]]:
        """``theta: (P,) -> [(W0: (H1, D), b0: (H1,)), ...]`` (views; autograd-compatible).

        ``theta`` is validated like everywhere else (:meth:`check_theta`: shape ``(P,)``
        exactly, real, finite); an autograd box gets the shape check only.
        """
        return self._unflatten(self._check_theta_or_box(theta))

    def _unflatten(self, theta: Any) -> list[tuple[Any, Any]]:
        return [
            (anp.reshape(theta[ws], shape), theta[bs])
            for shape, (ws, bs) in zip(self.shapes, self.layer_slices)
        ]

    def flatten(self, layers: Sequence[Sequence[ArrayLike]]) -> np.ndarray:
        """``[(W0, b0), ...] -> theta: (P,)``; shapes are checked, never broadcast."""
        if not isinstance(layers, Sequence):
            raise TypeError(
                f"layers: expected a list of {self.num_layers} (W, b) pairs, "
                f"received {type(layers).__name__}"
            )
        if len(layers) != self.num_layers:
            raise ValueError(
                f"layers: expected {self.num_layers} (W, b) pairs, received {len(layers)}"
            )
        parts = []
        for l, ((out, inp), pair) in enumerate(zip(self.shapes, layers)):
            if len(pair) != 2:
                raise ValueError(f"layers[{l}]: expected a (W, b) pair, received {len(pair)} items")
            W = as_float_array(pair[0], f"layers[{l}][0] (W{l})", shape=(out, inp))
            b = as_float_array(pair[1], f"layers[{l}][1] (b{l})", shape=(out,))
            parts += [W.ravel(), b]
        return np.concatenate(parts)

    # --- forward -------------------------------------------------------------------------
    def forward(self, theta: Any, X: Any) -> Any:
        """Network outputs ``f: (N, C)`` for ``theta: (P,)`` and ``X: (N, D)``.

        Written with ``autograd.numpy``; inputs are validated unless they are autograd boxes.
        """
        theta = self._check_theta_or_box(theta)
        if not is_box(X):
            X = self.check_inputs(X)
        return self.apply(theta, X)

    def apply(self, theta: Any, X: Any) -> Any:
        """Network outputs ``f: (N, C)`` WITHOUT validation: the forward pass for callers that
        have validated ``theta: (P,)`` and ``X: (N, D)`` already (or differentiate through it).

        :meth:`forward` is the validated entry point. ``theta`` and ``X`` may be autograd
        boxes; wrong shapes fail with NumPy's errors, not with minifim's messages.
        """
        a = X
        layers = self._unflatten(theta)
        for l, (W, b) in enumerate(layers):
            z = anp.dot(a, W.T) + b
            a = self.activation.phi(z) if l < self.num_layers - 1 else z
        return a

    def log_prob(self, theta: Any, X: ArrayLike, y: ArrayLike) -> Any:
        """``log p_theta(y_n | x_n)``, shape ``(N,)``."""
        theta = self._check_theta_or_box(theta)
        X = self.check_inputs(X)
        y = self.check_targets(y, X.shape[0])
        return self.likelihood._log_prob(self.apply(theta, X), y)

    def predict(self, theta: ArrayLike, X: ArrayLike) -> np.ndarray:
        """``E[y | x]: (N, C)``: class or Bernoulli probabilities, or Gaussian means."""
        return self.likelihood._mean(self.forward(theta, X))

    # --- interchange with other backends ---------------------------------------------------
    def to_state_dict(
        self, theta: ArrayLike, keys: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """PyTorch-style state dict of float64 arrays, ``W`` as ``(out, in)``.

        ``keys`` are the module prefixes per layer; by default those of
        ``torch.nn.Sequential(Linear, act, Linear, ...)``: ``"0"``, ``"2"``, ``"4"``, ...
        """
        theta = self.check_theta(theta)
        keys = self._sequential_keys(keys)
        out = {}
        for k, (W, b) in zip(keys, self._unflatten(theta)):
            out[f"{k}.weight"] = np.array(W)
            out[f"{k}.bias"] = np.array(b)
        return out

    def _sequential_keys(self, keys: Sequence[str] | None) -> list[str]:
        if keys is None:
            return [str(2 * l) for l in range(self.num_layers)]
        keys = list(keys)
        if len(keys) != self.num_layers:
            raise ValueError(
                f"keys: expected {self.num_layers} layer prefixes, received {len(keys)}"
            )
        return keys

    def from_state_dict(
        self, state_dict: Mapping[str, Any], keys: Sequence[str] | None = None
    ) -> np.ndarray:
        """``theta: (P,)`` from a PyTorch-style state dict (arrays or tensors).

        Without ``keys``, the layers are the ``*.weight`` entries in the dict's order, each with
        its ``*.bias``. Shapes must match exactly (``(out, in)`` weights).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict: expected a mapping of name -> array, received "
                f"{type(state_dict).__name__}"
            )
        if keys is None:
            keys = [k[: -len(".weight")] for k in state_dict if k.endswith(".weight")]
            if len(keys) != self.num_layers:
                raise ValueError(
                    f"state_dict: expected {self.num_layers} '*.weight' entries "
                    f"for {self!r}, received {len(keys)}: {keys}"
                )
        else:
            keys = self._sequential_keys(keys)
        layers = []
        for l, k in enumerate(keys):
            for suffix in ("weight", "bias"):
                if f"{k}.{suffix}" not in state_dict:
                    raise ValueError(f"state_dict: missing entry '{k}.{suffix}' for layer {l}")
            layers.append(
                (_to_numpy(state_dict[f"{k}.weight"]), _to_numpy(state_dict[f"{k}.bias"]))
            )
        try:
            return self.flatten(layers)
        except ValueError as err:
            raise ValueError(
                f"state_dict: {err} (weights must be in PyTorch layout (out, in))"
            ) from None

    def to_flax(self, theta: ArrayLike) -> dict[str, Any]:
        """JAX/flax-style parameters ``{"params": {"Dense_l": {"kernel": (in, out), "bias"}}}``."""
        theta = self.check_theta(theta)
        return {
            "params": {
                f"Dense_{l}": {"kernel": np.array(W).T.copy(), "bias": np.array(b)}
                for l, (W, b) in enumerate(self._unflatten(theta))
            }
        }

    def from_flax(self, params: Mapping[str, Any]) -> np.ndarray:
        """``theta: (P,)`` from flax-style ``{"Dense_l": {"kernel": (in, out), "bias"}}``.

        A top-level ``"params"`` collection is accepted. Layers are ordered by the number at
        the end of their names (``Dense_10`` after ``Dense_9``), else by the dict's order.
        """
        if not isinstance(params, Mapping):
            raise TypeError(f"params: expected a mapping, received {type(params).__name__}")
        if "params" in params and isinstance(params["params"], Mapping):
            params = params["params"]
        names = list(params)
        if all(re.search(r"(\d+)$", n) for n in names):
            # every name matched just above: re.search cannot return None here
            names.sort(key=lambda n: int(re.search(r"(\d+)$", n).group(1)))  # type: ignore[union-attr]
        if len(names) != self.num_layers:
            raise ValueError(
                f"params: expected {self.num_layers} dense layers for {self!r}, "
                f"received {len(names)}: {names}"
            )
        layers = []
        for n in names:
            entry = params[n]
            if not isinstance(entry, Mapping) or "kernel" not in entry or "bias" not in entry:
                raise ValueError(f"params[{n!r}]: expected a mapping with 'kernel' and 'bias'")
            kernel = _to_numpy(entry["kernel"])
            layers.append((kernel.T if kernel.ndim == 2 else kernel, _to_numpy(entry["bias"])))
        try:
            return self.flatten(layers)
        except ValueError as err:
            raise ValueError(f"params: {err} (flax kernels are (in, out))") from None


def _to_numpy(x: Any) -> np.ndarray:
    """Array or tensor (``.detach().cpu().numpy()``) to an ndarray, keeping its dtype."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
