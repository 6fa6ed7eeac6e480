"""The probabilistic model: a network of layers plus its likelihood, ``p_theta(y | x)``.

Conventions (stated once, used everywhere; see :doc:`/conventions` and :doc:`/model`):

- :class:`Sequential` chains the layers of :mod:`minifim.layers` on a batch ``X: (N,
  *input_shape)``; the outputs ``f: (N, *output_shape)`` have the classes (logits for
  categorical/Bernoulli, means for Gaussian) on their LAST axis, ``C = output_shape[-1]``;
  leading output axes are positions (``(N, R, C)``: the *expand* setting, labels ``(N, R)``
  categorical or ``(N, R, C)``), and one sample's log-likelihood is the SUM over its
  positions;
- the ``L`` parametric layers (:class:`~minifim.layers.Linear`, :class:`~minifim.layers.Conv2d`)
  hold the parameters: one flat float64 vector ``theta: (P,)`` ordered ``W0, b0, W1, b1, ...``,
  each ``W`` in PyTorch layout (``(out, in)``; ``Conv2d``: ``(out, in, kh, kw)``) flattened
  row-major (C order), then its bias (absent for ``bias=False``); ``shapes[l] = (out_l, in_l)``
  is the weight as a matrix on the unfolded input (``Conv2d``: ``(out, in kh kw)``);
- :class:`MLP` is the ``Sequential`` of ``Linear`` and activation layers ``[D, H1, ..., C]``
  (``z_l = a_l W_l^T + b_l``, ``a_{l+1} = phi(z_l)``, the last layer linear);
- the forward pass is written with ``autograd.numpy`` so the generic autograd route
  differentiates the same code.

Invariant: ``net.flatten(net.unflatten(theta)) == theta`` and
``net.from_state_dict(net.to_state_dict(theta)) == theta`` bit for bit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import autograd.numpy as anp
import numpy as np
from numpy.typing import ArrayLike

from .._validation import (
    NetworkBase,
    as_float_array,
    as_generator,
    check_int,
    describe,
    is_box,
)
from ..memory import require_memory
from ..options import InitScheme, deprecated_keywords
from .activations import ACTIVATIONS, Activation, get_activation
from .layers import Layer, Linear, ParametricLayer, activation_layer, layer_from_config
from .likelihoods import Likelihood, get_likelihood

if TYPE_CHECKING:
    from .likelihoods import Gaussian

__all__ = ["Sequential", "MLP"]


def _shape_str(shape: Sequence[int]) -> str:
    return "(N" + "".join(f", {s}" for s in shape) + ")"


class Sequential(NetworkBase):
    """A chain of layers with a likelihood: the model ``p_theta(y | x)``.

    Parameters
    ----------
    layers : sequence of minifim.layers objects (or their ``config()`` dicts)
        Applied in order; each network holds its own copies. At least one parametric layer.
    likelihood : str or Likelihood
        ``"categorical"`` (softmax over the last output axis), ``"bernoulli"``,
        ``"gaussian"``, ``"heteroscedastic"`` (a Gaussian with learned variances: ``2C``
        outputs for ``C`` targets, the means then the log-variances) or ``"poisson"``
        (counts).
    input_shape : tuple of int, optional
        One sample's input shape (without ``N``): ``(D,)``, ``(R, D)``, ``(C_in, H, W)``.
        Inferred as ``(in_features,)`` when the first layer is a ``Linear``.
    sigma : float
        Standard deviation of the Gaussian likelihood (ignored otherwise).
    link : {"log", "softplus"}, optional
        The Poisson rate ``r = e^f`` (default) or ``r = log(1 + e^f)``; only for
        ``likelihood="poisson"``.
    parameterization : {"logvar", "natural"}, optional
        The heteroscedastic outputs ``(mu, log sigma^2)`` (default) or the natural
        parameters ``(mu / sigma^2, log(1 / sigma^2))``; only for
        ``likelihood="heteroscedastic"``.

    Attributes
    ----------
    layers : list of Layer
    num_layers : int
        ``L``, the number of parametric layers.
    shapes : list of (int, int)
        ``shapes[l] = (out_l, in_l)``, parametric layer ``l``'s weight as a matrix.
    layer_slices : list of (slice, slice)
        Per parametric layer, the slices of ``theta`` holding ``W_l`` and ``b_l`` (an empty slice
        for ``bias=False``).
    parametric_indices : list of int
        Index in ``layers`` of every parametric layer (the ``nn.Sequential`` key prefixes).
    input_shape, output_shape : tuple of int
        Without the sample axis; ``output_dim = output_shape[-1]`` is ``C``.
    positions : int
        ``R = prod(output_shape[:-1])``, the loss terms of one sample (1 without positions).

    Examples
    --------
    >>> from minifim.layers import Conv2d, Flatten, Linear, ReLU
    >>> net = Sequential([Conv2d(1, 2, 3, stride=2, padding=1), ReLU(), Flatten(),
    ...                   Linear(2 * 3 * 3, 4)], input_shape=(1, 6, 6))
    >>> net.shapes, net.output_shape, net.num_params
    ([(2, 9), (4, 18)], (4,), 96)
    """

    def __init__(
        self,
        layers: Sequence[Layer | Mapping[str, Any]],
        likelihood: str | Likelihood = "categorical",
        input_shape: Sequence[int] | int | None = None,
        sigma: float = 1.0,
        *,
        link: str | None = None,
        parameterization: str | None = None,
    ) -> None:
        if isinstance(layers, (str, bytes, Mapping)) or not isinstance(layers, Sequence):
            raise TypeError(
                f"layers: expected a list of minifim.layers objects, received "
                f"{type(layers).__name__}"
            )
        built = [layer_from_config(layer) for layer in layers]
        if not any(layer.parametric for layer in built):
            raise ValueError(
                "layers: expected at least one parametric layer (Linear or Conv2d), received "
                f"{built!r}"
            )
        self.likelihood: Likelihood = get_likelihood(
            likelihood, sigma, link=link, parameterization=parameterization
        )
        self._build(built, self._resolve_input_shape(built, input_shape))

    @staticmethod
    def _resolve_input_shape(layers: list[Layer], input_shape: Any) -> tuple[int, ...]:
        if input_shape is None:
            if isinstance(layers[0], Linear):
                return (layers[0].in_features,)
            raise ValueError(
                f"input_shape: expected one sample's input shape (without N) for a network "
                f"starting with {layers[0]!r}, received None"
            )
        if isinstance(input_shape, (int, np.integer)) and not isinstance(input_shape, bool):
            input_shape = (input_shape,)
        if isinstance(input_shape, (str, bytes)) or not isinstance(
            input_shape, Sequence | np.ndarray
        ):
            raise TypeError(
                f"input_shape: expected a tuple of ints such as (1, 8, 8), received "
                f"{type(input_shape).__name__}"
            )
        shape = tuple(check_int(s, f"input_shape[{i}]", 1) for i, s in enumerate(input_shape))
        if not shape:
            raise ValueError("input_shape: expected at least one axis, received ()")
        return shape

    def _build(self, layers: list[Layer], input_shape: tuple[int, ...]) -> None:
        self.layers = layers
        self.input_shape = input_shape
        shape = input_shape
        self.layer_input_shapes: list[tuple[int, ...]] = []
        for j, layer in enumerate(layers):
            self.layer_input_shapes.append(shape)
            try:
                shape = layer.build(shape)
            except ValueError as err:
                raise ValueError(f"{err} [layers[{j}] of input_shape {input_shape}]") from None
        self.output_shape: tuple[int, ...] = shape
        self.parametric_indices = [j for j, layer in enumerate(layers) if layer.parametric]
        self.parametric_layers: list[ParametricLayer] = [
            cast("ParametricLayer", layers[j]) for j in self.parametric_indices
        ]
        self.shapes = [layer.matrix_shape for layer in self.parametric_layers]
        if self.likelihood.name == "heteroscedastic" and self.output_shape[-1] % 2:
            what = "sizes" if hasattr(self, "sizes") else "layers"
            raise ValueError(
                f"{what}: the heteroscedastic likelihood needs an even output width 2C (C "
                f"means, then C log-variances), received {self.output_shape[-1]} outputs"
            )
        slices, offset = [], 0
        for layer in self.parametric_layers:
            out, inp = layer.matrix_shape
            w = slice(offset, offset + out * inp)
            b = slice(w.stop, w.stop + (out if layer.bias else 0))
            slices.append((w, b))
            offset = b.stop
        self.layer_slices = slices
        self.num_params = offset

    # --- structure -----------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """``L``, the number of parametric layers."""
        return len(self.shapes)

    @property
    def output_dim(self) -> int:
        """``C``, the last axis of the outputs."""
        return self.output_shape[-1]

    @property
    def positions(self) -> int:
        """``R``: the loss terms (output positions) of one sample, 1 for outputs ``(N, C)``."""
        return math.prod(self.output_shape[:-1])

    @property
    def has_positions(self) -> bool:
        """Whether the outputs carry position axes, ``(N, *pos, C)`` with ``pos`` non-empty."""
        return len(self.output_shape) > 1

    @property
    def weight_sharing(self) -> bool:
        """Whether some parametric layer shares its weight over more than one position."""
        return any(layer.positions > 1 for layer in self.parametric_layers)

    @property
    def target_dim(self) -> int:
        """Width of the targets' last axis: ``C``, or ``C / 2`` for the heteroscedastic
        likelihood (``2C`` outputs per ``C`` targets)."""
        return (
            self.output_dim // 2 if self.likelihood.name == "heteroscedastic" else self.output_dim
        )

    def layer_param_slices(self) -> list[slice]:
        """Per parametric layer, the slice of ``theta`` holding ``(W_l, b_l)`` together."""
        return [slice(w.start, b.stop) for w, b in self.layer_slices]

    def param_names(self) -> list[str]:
        """Names of the flat blocks in order: ``["W0", "b0", "W1", ...]`` (no ``b`` for
        ``bias=False``)."""
        return [
            f"{k}{l}"
            for l, layer in enumerate(self.parametric_layers)
            for k in (("W", "b") if layer.bias else ("W",))
        ]

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description; ``Sequential(**config)`` rebuilds the model."""
        lik = self.likelihood.config()
        cfg = {
            "layers": [layer.config() for layer in self.layers],
            "likelihood": lik["likelihood"],
            "input_shape": list(self.input_shape),
            "sigma": float(lik.get("sigma", 1.0)),
        }
        return _likelihood_options(cfg, lik)

    def _sigma_repr(self) -> str:
        gaussian = self.likelihood.name == "gaussian"
        extra = f", sigma={cast('Gaussian', self.likelihood).sigma!r}" if gaussian else ""
        lik = self.likelihood.config()
        for key in ("link", "parameterization"):
            if key in lik:
                extra += f", {key}={lik[key]!r}"
        return extra

    def __repr__(self) -> str:
        return (
            f"Sequential({self.layers!r}, likelihood={self.likelihood.name!r}, "
            f"input_shape={self.input_shape}{self._sigma_repr()})"
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
            ``"pytorch"``: ``W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (the default of
            ``torch.nn.Linear`` and ``Conv2d``, ``fan_in = in`` or ``in kh kw``);
            ``"normal"``: ``W ~ N(0, 1/fan_in)``, ``b = 0`` (LeCun normal). Layers are drawn in
            order, each weight then its bias.
        """
        rng = as_generator(rng, "rng")
        if scheme not in InitScheme.values():
            raise ValueError(f"scheme: expected 'pytorch' or 'normal', received {scheme!r}")
        theta = np.empty(self.num_params)
        for (out, inp), (ws, bs) in zip(self.shapes, self.layer_slices):
            bound = 1.0 / np.sqrt(inp)
            nb = bs.stop - bs.start
            if scheme == "pytorch":
                theta[ws] = rng.uniform(-bound, bound, out * inp)
                if nb:
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
        """Validate ``X: (N, *input_shape)`` finite float64 (``N >= 1``)."""
        arr = as_float_array(X, name, finite=False)
        want = _shape_str(self.input_shape)
        if arr.ndim != 1 + len(self.input_shape) or arr.shape[1:] != self.input_shape:
            hint = " (use X[None] for one sample)" if arr.shape == self.input_shape else ""
            raise ValueError(
                f"{name}: expected shape {want} for input_shape {self.input_shape}, received "
                f"shape {arr.shape}{hint}"
            )
        if arr.shape[0] == 0:
            raise ValueError(
                f"{name}: expected at least one sample (shape {want} with N >= 1), "
                f"received shape {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: expected finite values, received NaN/Inf")
        return arr

    def target_shape(self, N: int) -> tuple[int, ...]:
        """Shape of the targets of ``N`` samples: ``(N, *pos)`` categorical labels, else
        ``(N, *pos, C)``."""
        pos = self.output_shape[:-1]
        if self.likelihood.name == "categorical":
            return (N,) + pos
        return (N,) + pos + (self.target_dim,)

    def check_targets(self, y: ArrayLike, N: int, name: str = "y") -> np.ndarray:
        """Validate targets for ``N`` samples against the likelihood (see its docstring).

        With positional outputs ``(N, *pos, C)`` the targets are ``(N, *pos)`` class labels
        (categorical) or ``(N, *pos, C)``; each position is checked like one sample.
        """
        if not self.has_positions:
            return self.likelihood.check_targets(y, N, self.output_dim, name)
        want = self.target_shape(N)
        if y is None or isinstance(y, (str, bytes)):
            raise TypeError(f"{name}: expected targets of shape {want}, received {describe(y)}")
        shape = np.shape(y)
        if tuple(shape) != want:
            raise ValueError(
                f"{name}: expected shape {want} for outputs {_shape_str(self.output_shape)} "
                f"(one target per position), received shape {tuple(shape)}"
            )
        NR = N * self.positions
        flat_shape = (NR,) if self.likelihood.name == "categorical" else (NR, self.target_dim)
        flat = y if is_box(y) else np.asarray(y)
        checked = self.likelihood.check_targets(
            anp.reshape(flat, flat_shape), NR, self.output_dim, name
        )
        return checked if is_box(checked) else np.reshape(checked, want)

    # --- positions: the likelihood of one sample sums its positions' terms -------------------
    def flat_outputs(self, F: Any) -> Any:
        """Outputs ``(N, *pos, C) -> (N R, C)``: one row per loss term (identity without
        positions)."""
        if not self.has_positions:
            return F
        return anp.reshape(F, (-1, self.output_dim))

    def flat_targets(self, y: Any, leading: int = 0) -> Any:
        """Targets ``(*lead, N, *pos[, C]) -> (*lead, N R[, C])`` matching :meth:`flat_outputs`;
        ``leading`` axes (Monte-Carlo samples) are kept."""
        if not self.has_positions:
            return y
        lead = np.shape(y)[:leading]
        tail = () if self.likelihood.name == "categorical" else (self.target_dim,)
        return anp.reshape(y, lead + (-1,) + tail)

    def spread_positions(self, E: np.ndarray) -> np.ndarray:
        """Per-term seeds ``(N R, K0, C) -> (N, R K0, *pos, C)``, zero off their own position.

        Seed ``(r, k)`` of a sample is ``E[n R + r, k]`` at position ``r`` and zero at every
        other position, so ``sum_k u_k u_k^T`` over the ``R K0`` seeds is the sum of the
        per-position curvatures: no cross-position terms (exact for the true Fisher, where they
        have expectation zero, and for the GGN, whose output Hessian is block diagonal).
        Identity without positions.
        """
        if not self.has_positions:
            return E
        R, C = self.positions, self.output_dim
        NR, K0 = E.shape[:2]
        N = NR // R
        require_memory(
            8 * N * R * K0 * R * C,
            f"per-position output seeds (N, R K, R, C) = ({N}, {R * K0}, {R}, {C})",
            "fisher='empirical' or 'mc' (one seed per sample and label), or fewer samples",
        )
        out = np.zeros((N, R, K0, R, C))
        idx = np.arange(R)
        out[:, idx, :, idx, :] = E.reshape(N, R, K0, C).transpose(1, 0, 2, 3)
        return out.reshape((N, R * K0) + self.output_shape)

    def output_log_prob(self, F: Any, y: Any) -> Any:
        """``log p(y_n | f_n)``, shape ``(N,)``: the sum over the sample's positions.

        ``F: (N, *output_shape)`` (may be an autograd box) and validated targets ``y``.
        """
        lp = self.likelihood._log_prob(self.flat_outputs(F), self.flat_targets(y))
        if not self.has_positions:
            return lp
        return anp.sum(anp.reshape(lp, (-1, self.positions)), axis=1)

    def output_score(self, F: np.ndarray, y: Any) -> np.ndarray:
        """Output-space score ``d log p(y_n | f_n) / d f_n``, shape ``(N, *output_shape)``."""
        g = self.likelihood._grad_log_prob(self.flat_outputs(F), self.flat_targets(y))
        return g if not self.has_positions else g.reshape(np.shape(F))

    def sample_targets(
        self, F: np.ndarray, rng: np.random.Generator | int, n_samples: int | None = None
    ) -> np.ndarray:
        """Targets drawn from ``p(y | f)`` for outputs ``F: (N, *output_shape)``, every position
        independently; a leading axis of ``n_samples`` when given."""
        ys = self.likelihood.sample(self.flat_outputs(F), rng, n_samples)
        if not self.has_positions:
            return ys
        lead = () if n_samples is None else (ys.shape[0],)
        return ys.reshape(lead + self.target_shape(np.shape(F)[0]))

    def most_likely_targets(self, F: np.ndarray) -> np.ndarray:
        """The mode of ``p(y | f)`` per position, in the shape of the targets."""
        ys = self.likelihood.most_likely(self.flat_outputs(F))
        return ys if not self.has_positions else ys.reshape(self.target_shape(np.shape(F)[0]))

    def mean_outputs(self, F: np.ndarray) -> np.ndarray:
        """``E[y | f]: (N, *output_shape)`` per position."""
        m = self.likelihood.mean(self.flat_outputs(F))
        return m if not self.has_positions else m.reshape(np.shape(F)[:-1] + m.shape[-1:])

    # --- parameters as arrays ------------------------------------------------------------
    def unflatten(self, theta: Any) -> list[tuple[Any, Any]]:
        """``theta: (P,) -> [(W0, b0), ...]`` per parametric layer (views; autograd-compatible).

        ``W_l`` has the PyTorch layout (``(out, in)``; ``Conv2d``: ``(out, in, kh, kw)``); ``b_l:
        (out,)``, or shape ``(0,)`` for ``bias=False``. ``theta`` is validated like everywhere
        else (:meth:`check_theta`); an autograd box gets the shape check only.
        """
        return self._unflatten(self._check_theta_or_box(theta))

    def _unflatten(self, theta: Any) -> list[tuple[Any, Any]]:
        return [
            (anp.reshape(theta[ws], layer.weight_shape), theta[bs])
            for layer, (ws, bs) in zip(self.parametric_layers, self.layer_slices)
        ]

    def matrices(self, theta: Any) -> list[tuple[Any, Any]]:
        """``[(W_l: (out_l, in_l), b_l: (out_l,) or None)]``: the weights as the matrices acting
        on the unfolded inputs (validated ``theta`` or a box; no copy)."""
        return [
            (anp.reshape(theta[ws], shape), theta[bs] if bs.stop > bs.start else None)
            for shape, (ws, bs) in zip(self.shapes, self.layer_slices)
        ]

    def flatten(self, layers: Sequence[Sequence[Any]]) -> np.ndarray:
        """``[(W0, b0), ...] -> theta: (P,)``; shapes are checked, never broadcast.

        ``b_l`` may be ``None`` (or shape ``(0,)``) for a layer without bias.
        """
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
        for l, (layer, pair) in enumerate(zip(self.parametric_layers, layers)):
            if len(pair) != 2:
                raise ValueError(f"layers[{l}]: expected a (W, b) pair, received {len(pair)} items")
            W = as_float_array(pair[0], f"layers[{l}][0] (W{l})", shape=layer.weight_shape)
            out = layer.matrix_shape[0]
            if layer.bias:
                b = as_float_array(pair[1], f"layers[{l}][1] (b{l})", shape=(out,))
            else:
                b = (
                    np.zeros(0)
                    if pair[1] is None
                    else as_float_array(pair[1], f"layers[{l}][1] (b{l}, bias=False)", shape=(0,))
                )
            parts += [W.ravel(), b]
        return np.concatenate(parts)

    # --- forward -------------------------------------------------------------------------
    def forward(self, theta: Any, X: Any) -> Any:
        """Network outputs ``f: (N, *output_shape)`` for ``theta: (P,)`` and ``X: (N,
        *input_shape)``.

        Written with ``autograd.numpy``; inputs are validated unless they are autograd boxes.
        """
        theta = self._check_theta_or_box(theta)
        if not is_box(X):
            X = self.check_inputs(X)
        return self.apply(theta, X)

    def apply(self, theta: Any, X: Any) -> Any:
        """Network outputs WITHOUT validation: the forward pass for callers that have validated
        ``theta: (P,)`` and ``X`` already (or differentiate through it).

        :meth:`forward` is the validated entry point. ``theta`` and ``X`` may be autograd
        boxes; wrong shapes fail with NumPy's errors, not with minifim's messages.
        """
        a = X
        params = iter(self.matrices(theta))
        for layer in self.layers:
            if isinstance(layer, ParametricLayer):
                W, b = next(params)
                a = layer.apply_params(W, b, a)
            else:
                a = layer.apply(a)
        return a

    def log_prob(self, theta: Any, X: ArrayLike, y: ArrayLike) -> Any:
        """``log p_theta(y_n | x_n)``, shape ``(N,)`` (summed over the positions of a sample)."""
        theta = self._check_theta_or_box(theta)
        X = self.check_inputs(X)
        y = self.check_targets(y, X.shape[0])
        return self.output_log_prob(self.apply(theta, X), y)

    def predict(self, theta: ArrayLike, X: ArrayLike) -> np.ndarray:
        """``E[y | x]: (N, *output_shape)``: class or Bernoulli probabilities, or Gaussian means."""
        F = self.forward(theta, X)
        if not self.has_positions:
            return self.likelihood._mean(F)
        return self.likelihood._mean(self.flat_outputs(F)).reshape(np.shape(F))

    # --- interchange with other backends ---------------------------------------------------
    def to_state_dict(
        self, theta: ArrayLike, keys: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """PyTorch-style state dict of float64 arrays, weights in PyTorch layout.

        ``keys`` are the module prefixes per parametric layer; by default those of
        ``torch.nn.Sequential`` built from :attr:`layers`: the layer's index, ``"0"``, ``"3"``,
        ... (``MLP``: ``"0"``, ``"2"``, ``"4"``). No ``bias`` entry for ``bias=False``.
        """
        theta = self.check_theta(theta)
        keys = self._sequential_keys(keys)
        out = {}
        for k, layer, (W, b) in zip(keys, self.parametric_layers, self._unflatten(theta)):
            out[f"{k}.weight"] = np.array(W)
            if layer.bias:
                out[f"{k}.bias"] = np.array(b)
        return out

    def _sequential_keys(self, keys: Sequence[str] | None) -> list[str]:
        if keys is None:
            return [str(j) for j in self.parametric_indices]
        keys = list(keys)
        if len(keys) != self.num_layers:
            raise ValueError(
                f"keys: expected {self.num_layers} layer prefixes, received {len(keys)}"
            )
        return keys

    def sequential_keys(self) -> list[str]:
        """The default ``nn.Sequential`` prefixes of the parametric layers (their indices)."""
        return self._sequential_keys(None)

    def from_state_dict(
        self, state_dict: Mapping[str, Any], keys: Sequence[str] | None = None
    ) -> np.ndarray:
        """``theta: (P,)`` from a PyTorch-style state dict (arrays or tensors).

        Without ``keys``, the layers are the ``*.weight`` entries in the dict's order, each with
        its ``*.bias`` (required exactly for the layers with ``bias=True``). Shapes must match
        exactly (PyTorch layout).
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
        for l, (k, layer) in enumerate(zip(keys, self.parametric_layers)):
            suffixes = ("weight", "bias") if layer.bias else ("weight",)
            for suffix in suffixes:
                if f"{k}.{suffix}" not in state_dict:
                    raise ValueError(f"state_dict: missing entry '{k}.{suffix}' for layer {l}")
            if not layer.bias and f"{k}.bias" in state_dict:
                raise ValueError(
                    f"state_dict: entry '{k}.bias' for layer {l}, which has bias=False"
                )
            b = _to_numpy(state_dict[f"{k}.bias"]) if layer.bias else None
            layers.append((_to_numpy(state_dict[f"{k}.weight"]), b))
        try:
            return self.flatten(layers)
        except ValueError as err:
            raise ValueError(
                f"state_dict: {err} (weights must be in PyTorch layout (out, in) or "
                "(out, in, kh, kw))"
            ) from None

    def _require_dense_only(self, what: str) -> None:
        conv = [layer for layer in self.parametric_layers if not isinstance(layer, Linear)]
        if conv:
            raise ValueError(
                f"net: {what} describes Dense layers only; {conv[0]!r} has no flax equivalent "
                "with the same layout (flax convolutions are NHWC)"
            )

    def to_flax(self, theta: ArrayLike) -> dict[str, Any]:
        """JAX/flax-style parameters ``{"params": {"Dense_l": {"kernel": (in, out), "bias"}}}``.

        For networks whose parametric layers are all ``Linear`` (flax's ``Dense``).
        """
        self._require_dense_only("to_flax")
        theta = self.check_theta(theta)
        out: dict[str, Any] = {}
        for l, (layer, (W, b)) in enumerate(zip(self.parametric_layers, self._unflatten(theta))):
            entry = {"kernel": np.array(W).T.copy()}
            if layer.bias:
                entry["bias"] = np.array(b)
            out[f"Dense_{l}"] = entry
        return {"params": out}

    def from_flax(self, params: Mapping[str, Any]) -> np.ndarray:
        """``theta: (P,)`` from flax-style ``{"Dense_l": {"kernel": (in, out), "bias"}}``.

        A top-level ``"params"`` collection is accepted. Layers are ordered by the number at
        the end of their names (``Dense_10`` after ``Dense_9``), else by the dict's order.
        """
        self._require_dense_only("from_flax")
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
        for n, layer in zip(names, self.parametric_layers):
            entry = params[n]
            need = ("kernel", "bias") if layer.bias else ("kernel",)
            if not isinstance(entry, Mapping) or any(k not in entry for k in need):
                raise ValueError(
                    f"params[{n!r}]: expected a mapping with {' and '.join(map(repr, need))}"
                )
            kernel = _to_numpy(entry["kernel"])
            b = _to_numpy(entry["bias"]) if layer.bias else None
            layers.append((kernel.T if kernel.ndim == 2 else kernel, b))
        try:
            return self.flatten(layers)
        except ValueError as err:
            raise ValueError(f"params: {err} (flax kernels are (in, out))") from None


class MLP(Sequential):
    """A multilayer perceptron with a likelihood: the :class:`Sequential` of ``Linear`` and
    activation layers ``[Linear(D, H1), phi, Linear(H1, H2), phi, ..., Linear(H_{L-1}, C)]``.

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
    link, parameterization : str, optional
        The Poisson link and the heteroscedastic parameterisation (see :class:`Sequential`).

    Examples
    --------
    >>> net = MLP([4, 8, 3])
    >>> theta = net.init(0)
    >>> theta.shape == (net.num_params,) == (4 * 8 + 8 + 8 * 3 + 3,)
    True
    >>> [type(layer).__name__ for layer in net.layers]
    ['Linear', 'Tanh', 'Linear']
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
        self.likelihood = get_likelihood(
            likelihood, sigma, link=link, parameterization=parameterization
        )
        layers: list[Layer] = []
        for l in range(len(sizes) - 1):
            if l:
                layers.append(activation_layer(self.activation))
            layers.append(Linear(sizes[l], sizes[l + 1]))
        self._build(layers, (sizes[0],))

    @property
    def input_dim(self) -> int:
        """``D``."""
        return self.sizes[0]

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
        return _likelihood_options(cfg, lik)

    def sequential_config(self) -> dict[str, Any]:
        """The :meth:`Sequential.config` of the same network (``Sequential(**...)`` rebuilds
        it as a plain ``Sequential``)."""
        return Sequential.config(self)

    def __repr__(self) -> str:
        return (
            f"MLP({list(self.sizes)}, activation={self.activation.name!r}, "
            f"likelihood={self.likelihood.name!r}{self._sigma_repr()})"
        )

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
                f"{self.input_dim})), received shape {arr.shape} (input_shape "
                f"({self.input_dim},))"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: expected finite values, received NaN/Inf")
        return arr


def _likelihood_options(cfg: dict[str, Any], lik: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with the likelihood's ``link`` / ``parameterization`` when it has them (the
    canonical likelihoods' configs are unchanged)."""
    for key in ("link", "parameterization"):
        if key in lik:
            cfg[key] = lik[key]
    return cfg


def _to_numpy(x: Any) -> np.ndarray:
    """Array or tensor (``.detach().cpu().numpy()``) to an ndarray, keeping its dtype."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
