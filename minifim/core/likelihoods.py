"""Output distributions ``p(y | f)`` of the network outputs ``f: (N, C)``.

Each likelihood gives, for outputs ``F: (N, C)``:

- ``log_prob(F, y) -> (N,)``, written with ``autograd.numpy`` so the generic route can
  differentiate it;
- ``grad_log_prob(F, y) -> (N, C)``: the output-space score ``d log p(y | f) / d f``;
- ``fisher_outputs(F) -> Lambda: (N, C, C)``: ``E_{y ~ p(y|f)}[g g^T]`` with ``g`` the
  output-space score;
- ``fisher_factor(F) -> R: (N, K, C)`` with ``R^T R = Lambda`` (``K = C`` here), whose rows
  are the enumerated, probability-weighted output scores (the exact expectation as a factor);
- ``hessian_outputs(F) -> (N, C, C)``: the Hessian of ``-log p`` with respect to ``f``. The
  three likelihoods have canonical links, so it equals ``Lambda`` and does not depend on ``y``;
- ``sample(F, rng, n_samples=None)``: labels drawn from the model;
- ``mean(F)``: ``E[y | f]`` (class probabilities, Bernoulli probabilities, Gaussian means);
- ``outcomes(F) -> (w, Y)``: the label distribution as weighted outcomes, so that
  ``E_{y ~ p(y | f_n)}[h(y)] = sum_o w[n, o] h(Y[n, o])`` (exact for every ``h`` for the
  categorical and Bernoulli labels, a Gauss-Hermite rule for the Gaussian).

Targets: ``categorical`` integer labels ``y: (N,)`` in ``[0, C)``; ``bernoulli`` 0/1 labels
``y: (N, C)`` (``C`` independent binary outputs); ``gaussian`` real targets ``y: (N, C)``.
Everything is stable for logits of magnitude 1e3 (log-sum-exp, softplus; no overflow, no NaN).

Validation: every public method checks ``F`` (:meth:`Likelihood.check_outputs`: 2-D, real,
finite) and ``y`` (:meth:`Likelihood.check_targets` against ``F``'s ``(N, C)``) once, and
refuses, never broadcasts: label ``-1`` or ``C``, non-integer or ``(N, 1)`` categorical labels,
non-0/1 Bernoulli labels and ``(N,)`` targets for ``C = 1`` outputs raise ``ValueError``. Outputs
that are ``autograd`` boxes (the ``backend="autograd"`` routes differentiate :meth:`log_prob`)
get the shape checks only. Subclasses implement the private ``_log_prob``,
``_grad_log_prob``, ``_fisher_factor``, ``_hessian_outputs``, ``_sample``, ``_mean`` and
``_most_likely`` (optionally ``_fisher_outputs``) on validated inputs; minifim's own callers
that have validated already use them directly.
"""

from __future__ import annotations

import math
from typing import Any

import autograd.numpy as anp
import numpy as np
from autograd.scipy.special import logsumexp
from numpy.typing import ArrayLike

from .._validation import as_float_array, as_generator, check_int, check_positive, is_box
from ..memory import require_memory

__all__ = ["Likelihood", "Categorical", "Bernoulli", "Gaussian", "get_likelihood", "LIKELIHOODS"]


class Likelihood:
    """Base class; see the module docstring for the contract of each method.

    The public methods validate and dispatch to the private implementations of a subclass.
    """

    name: str = ""

    # --- validation ------------------------------------------------------------------------
    def check_outputs(self, F: Any, name: str = "F") -> Any:
        """Validate network outputs ``F: (N, C)``: real, finite, 2-D; return them as float64.

        An ``autograd`` box (outputs being differentiated) is returned as it is after the shape
        check; its values are not inspected.
        """
        if is_box(F):
            if np.ndim(F) != 2:
                raise ValueError(
                    f"{name}: expected a 2-D array of shape (N, C), received shape {np.shape(F)}"
                )
            return F
        arr = as_float_array(F, name, finite=False)
        if arr.ndim != 2:
            hint = " (use F[None, :] for one sample)" if arr.ndim == 1 else ""
            raise ValueError(
                f"{name}: expected a 2-D array of shape (N, C), received shape {arr.shape}{hint}"
            )
        if not np.all(np.isfinite(arr)):
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(
                f"{name}: expected finite values, received {bad} NaN/Inf "
                f"entr{'y' if bad == 1 else 'ies'}"
            )
        return arr

    def check_targets(self, y: ArrayLike, N: int, C: int, name: str = "y") -> np.ndarray:
        """Validate targets for ``N`` samples and ``C`` outputs; return them in canonical dtype."""
        raise NotImplementedError

    def _checked(self, F: Any, y: Any) -> tuple[Any, ...]:
        F = self.check_outputs(F)
        N, C = np.shape(F)
        return F, self.check_targets(y, N, C)

    # --- public methods: validate once, then the private implementation ---------------------
    def log_prob(self, F: Any, y: ArrayLike) -> Any:
        """``log p(y_n | f_n)``, shape ``(N,)``; ``F: (N, C)`` may be an autograd box."""
        return self._log_prob(*self._checked(F, y))

    def grad_log_prob(self, F: Any, y: ArrayLike) -> np.ndarray:
        """Output-space score ``d log p(y_n | f_n) / d f_n``, shape ``(N, C)``."""
        return self._grad_log_prob(*self._checked(F, y))

    def _require_output_square(self, F: Any, what: str) -> None:
        """Memory guard for the ``(N, C, C)`` float64 output-space array a method returns."""
        N, C = np.shape(F)
        require_memory(
            8 * N * C * C,
            f"{self.name} {what} (N, C, C) = ({N}, {C}, {C})",
            "call it on chunks of the rows of F, or use the matrix-free "
            "minifim.fisher_operator / ggn_operator on chunks of X",
        )

    def fisher_outputs(self, F: Any) -> np.ndarray:
        """``Lambda_n = E_y[g g^T]``, shape ``(N, C, C)`` (memory-guarded)."""
        F = self.check_outputs(F)
        self._require_output_square(F, "output-space Fisher Lambda")
        return self._fisher_outputs(F)

    def fisher_factor(self, F: Any) -> np.ndarray:
        """``R_n`` with ``R_n^T R_n = Lambda_n``, shape ``(N, K, C)`` (memory-guarded)."""
        F = self.check_outputs(F)
        self._require_output_square(F, "output-space Fisher factor R")
        return self._fisher_factor(F)

    def hessian_outputs(self, F: Any) -> np.ndarray:
        """Hessian of ``-log p(y | f)`` with respect to ``f``, shape ``(N, C, C)``.

        The likelihoods here have canonical links: it does not depend on ``y``, which is
        therefore not an argument.
        """
        F = self.check_outputs(F)
        self._require_output_square(F, "output-space Hessian")
        return self._hessian_outputs(F)

    def sample(
        self, F: Any, rng: np.random.Generator | int, n_samples: int | None = None
    ) -> np.ndarray:
        """Targets drawn from ``p(y | f)``; a leading axis of ``n_samples`` when given.

        ``rng`` is a ``numpy.random.Generator`` or an integer seed (``None`` is refused).
        """
        F = self.check_outputs(F)
        rng = as_generator(rng)
        k = None if n_samples is None else check_int(n_samples, "n_samples", 1)
        return self._sample(F, rng, k)

    def mean(self, F: Any) -> np.ndarray:
        """``E[y | f]``, shape ``(N, C)``."""
        return self._mean(self.check_outputs(F))

    def most_likely(self, F: Any) -> np.ndarray:
        """The mode of ``p(y | f)``: argmax labels, rounded probabilities, or the means."""
        return self._most_likely(self.check_outputs(F))

    def num_outcomes(self, C: int) -> int:
        """How many outcomes :meth:`outcomes` enumerates per sample for ``C`` outputs."""
        return self._num_outcomes(check_int(C, "C", 1))

    def outcomes(self, F: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """The label distribution of every sample as weighted outcomes: ``(w, Y)``.

        Parameters
        ----------
        F : ndarray, shape (N, C)

        Returns
        -------
        w : ndarray, shape (N, O)
            Probabilities (weights) of the outcomes, summing to 1 per sample.
        Y : ndarray, shape (N, O) or (N, O, C)
            The outcomes: ``Y[:, o]`` is a target array for ``F`` (categorical: class
            indices ``(N, O)``, int64; Bernoulli and Gaussian: ``(N, O, C)`` float64).

        Notes
        -----
        ``E_{y ~ p(y | f_n)}[h(y)] = sum_o w[n, o] h(Y[n, o])``. Categorical: the ``O = C``
        classes with ``w = softmax(f)``; Bernoulli: the ``O = 2^C`` joint 0/1 label vectors
        with ``w = prod_c p_c^y_c (1 - p_c)^(1 - y_c)``; both exact for every ``h``. Gaussian
        (not enumerable): the tensor 5-point Gauss-Hermite rule, ``O = 5^C`` nodes
        ``y = f + sigma x``, exact for polynomials of degree <= 9 in each output, hence for the
        score (affine in ``y``), the Fisher (quadratic) and the fourth moments of the score
        used by :func:`minifim.geometry.moments.mc_error_moments`. With ``g_o = d log p(Y_o |
        f) / d f``: ``sum_o w_o g_o = 0`` and ``sum_o w_o g_o g_o^T = Lambda`` (the output
        Fisher). The result takes ``N O C`` floats (memory-guarded): :meth:`num_outcomes`
        says ``O`` beforehand.
        """
        F = self.check_outputs(F)
        N, C = F.shape
        O = self._num_outcomes(C)
        require_memory(
            8 * N * O * (C + 1),
            f"{self.name} outcomes (N, O, C) = ({N}, {O}, {C})",
            "fewer outputs (the outcomes grow like 2^C or 5^C) or chunks of the rows of F",
        )
        return self._outcomes(F)

    # --- implementations (validated inputs; subclasses override) -----------------------------
    def _log_prob(self, F: Any, y: Any) -> Any:
        raise NotImplementedError

    def _grad_log_prob(self, F: Any, y: Any) -> Any:
        raise NotImplementedError

    def _fisher_outputs(self, F: Any) -> np.ndarray:
        R = self._fisher_factor(F)
        return np.einsum("nkc,nkd->ncd", R, R)

    def _fisher_factor(self, F: Any) -> Any:
        raise NotImplementedError

    def _hessian_outputs(self, F: Any) -> Any:
        raise NotImplementedError

    def _sample(self, F: Any, rng: Any, n_samples: Any) -> Any:
        """``n_samples`` is ``None`` (no leading axis) or a validated int >= 1."""
        raise NotImplementedError

    def _mean(self, F: Any) -> Any:
        raise NotImplementedError

    def _most_likely(self, F: Any) -> Any:
        raise NotImplementedError

    def _num_outcomes(self, C: int) -> int:
        raise NotImplementedError

    def _outcomes(self, F: Any) -> Any:
        raise NotImplementedError

    # --- description --------------------------------------------------------------------------
    def config(self) -> dict:
        """JSON-serialisable description (``get_likelihood(**config)`` rebuilds it)."""
        return {"likelihood": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.config().items())))


class Categorical(Likelihood):
    """Softmax over ``C`` classes: ``log p(y | f) = f_y - logsumexp(f)``.

    Notes
    -----
    ``g = e_y - p``; ``Lambda = diag(p) - p p^T``; ``R[c] = sqrt(p_c) (e_c - p)``, the
    enumeration over the ``C`` classes. ``rank(Lambda) = C - 1``.
    """

    name = "categorical"

    def check_targets(self, y: ArrayLike, N: int, C: int, name: str = "y") -> Any:
        if isinstance(y, (str, bytes)) or y is None:
            raise TypeError(
                f"{name}: expected integer class labels of shape ({N},), received "
                f"{type(y).__name__}"
            )
        arr = np.asarray(y)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
        ):
            raise TypeError(f"{name}: expected integer class labels, received dtype {arr.dtype}")
        if arr.shape != (N,):
            hint = (
                " (categorical labels are class indices, not one-hot rows)" if arr.ndim == 2 else ""
            )
            raise ValueError(f"{name}: expected shape ({N},), received shape {arr.shape}{hint}")
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}: expected finite integer labels, received NaN/Inf")
            if not np.all(arr == np.round(arr)):
                raise ValueError(
                    f"{name}: expected integer class labels, received non-integer "
                    f"values such as {arr[arr != np.round(arr)][0]!r}"
                )
        arr = arr.astype(np.int64, copy=False)
        if arr.size and (arr.min() < 0 or arr.max() >= C):
            raise ValueError(
                f"{name}: expected labels in [0, {C}), received values in "
                f"[{arr.min()}, {arr.max()}]"
            )
        return arr

    @staticmethod
    def log_softmax(F: Any) -> Any:
        """``log p: (N, C)``, stable by log-sum-exp."""
        return F - logsumexp(F, axis=1, keepdims=True)

    def _log_prob(self, F: Any, y: Any) -> Any:
        logp = self.log_softmax(F)
        return logp[np.arange(logp.shape[0]), y]

    def _mean(self, F: Any) -> np.ndarray:
        return np.exp(self.log_softmax(np.asarray(F)))

    def _grad_log_prob(self, F: Any, y: Any) -> Any:
        g = -self._mean(F)
        g[np.arange(g.shape[0]), y] += 1.0
        return g

    def _num_outcomes(self, C: int) -> Any:
        return C

    def _outcomes(self, F: Any) -> tuple[Any, ...]:
        N, C = F.shape
        return self._mean(F), np.broadcast_to(np.arange(C), (N, C)).copy()

    @staticmethod
    def _one_minus(p: np.ndarray) -> Any:
        """``1 - p_c`` without cancellation: for the argmax class (the only one that can
        exceed 1/2) it is the sum of the other probabilities (saturated logits: ``p_max``
        rounds to 1 while ``1 - p_max`` is ~1e-22, not 0)."""
        q = 1.0 - p
        rows, top = np.arange(p.shape[0]), np.argmax(p, axis=1)
        others = p.copy()
        others[rows, top] = 0.0
        q[rows, top] = others.sum(axis=1)
        return q

    def _fisher_outputs(self, F: Any) -> Any:
        p = self._mean(F)
        Lam = -p[:, :, None] * p[:, None, :]
        idx = np.arange(p.shape[1])
        Lam[:, idx, idx] = p * self._one_minus(p)
        return Lam

    def _fisher_factor(self, F: Any) -> Any:
        F = np.asarray(F)
        logp = self.log_softmax(F)
        p = np.exp(logp)
        sqrt_p = np.exp(0.5 * logp)
        R = -sqrt_p[:, :, None] * p[:, None, :]
        idx = np.arange(F.shape[1])
        R[:, idx, idx] = sqrt_p * self._one_minus(p)
        return R

    def _hessian_outputs(self, F: Any) -> Any:
        return self._fisher_outputs(F)

    def _sample(self, F: Any, rng: Any, n_samples: Any = None) -> Any:
        p = self._mean(F)
        k = 1 if n_samples is None else n_samples
        u = rng.random((k, p.shape[0]))
        cdf = np.cumsum(p, axis=1)
        labels = np.minimum((cdf[None, :, :] < u[:, :, None]).sum(axis=2), p.shape[1] - 1)
        return labels[0] if n_samples is None else labels

    def _most_likely(self, F: Any) -> np.ndarray:
        return np.argmax(np.asarray(F), axis=1)


def _softplus(F: Any) -> np.ndarray:
    return np.logaddexp(0.0, F)


class Bernoulli(Likelihood):
    """``C`` independent sigmoid outputs: ``log p(y | f) = sum_c y_c f_c - softplus(f_c)``.

    Notes
    -----
    ``g = y - sigmoid(f)``; ``Lambda = diag(p (1 - p))``; ``R = diag(sqrt(p (1 - p)))``, the
    exact enumeration of both outcomes of every output.
    """

    name = "bernoulli"

    def check_targets(self, y: ArrayLike, N: int, C: int, name: str = "y") -> Any:
        arr = as_float_array(y, name)
        if arr.shape != (N, C):
            hint = " (use y[:, None] for a single output)" if arr.shape == (N,) else ""
            raise ValueError(
                f"{name}: expected 0/1 labels of shape ({N}, {C}), received shape {arr.shape}{hint}"
            )
        if not np.all((arr == 0) | (arr == 1)):
            bad = arr[(arr != 0) & (arr != 1)][0]
            raise ValueError(
                f"{name}: expected Bernoulli labels in {{0, 1}}, received a value {bad!r}"
            )
        return arr

    def _log_prob(self, F: Any, y: Any) -> Any:
        return anp.sum(y * F - anp.logaddexp(0.0, F), axis=1)

    def _mean(self, F: Any) -> Any:
        F = np.asarray(F)
        return 0.5 * (np.tanh(0.5 * F) + 1.0)

    def _grad_log_prob(self, F: Any, y: Any) -> Any:
        return y - self._mean(F)

    def _num_outcomes(self, C: int) -> Any:
        return 2**C

    def _outcomes(self, F: Any) -> tuple[Any, ...]:
        N, C = F.shape
        O = 2**C
        bits = ((np.arange(O)[:, None] >> np.arange(C)[None, :]) & 1).astype(np.float64)
        logp1 = -np.logaddexp(0.0, -F)  # log sigmoid(f)
        logp0 = -np.logaddexp(0.0, F)  # log (1 - sigmoid(f))
        w = np.exp(logp1 @ bits.T + logp0 @ (1 - bits).T)  # (N, O)
        return w, np.broadcast_to(bits, (N, O, C)).copy()

    def _variance(self, F: Any) -> np.ndarray:
        F = np.asarray(F)
        return np.exp(-_softplus(F) - _softplus(-F))

    def _fisher_outputs(self, F: Any) -> Any:
        v = self._variance(F)
        Lam = np.zeros(v.shape + (v.shape[1],))
        idx = np.arange(v.shape[1])
        Lam[:, idx, idx] = v
        return Lam

    def _fisher_factor(self, F: Any) -> Any:
        F = np.asarray(F)
        s = np.exp(-0.5 * (_softplus(F) + _softplus(-F)))
        R = np.zeros(s.shape + (s.shape[1],))
        idx = np.arange(s.shape[1])
        R[:, idx, idx] = s
        return R

    def _hessian_outputs(self, F: Any) -> Any:
        return self._fisher_outputs(F)

    def _sample(self, F: Any, rng: Any, n_samples: Any = None) -> Any:
        p = self._mean(F)
        k = 1 if n_samples is None else n_samples
        y = (rng.random((k,) + p.shape) < p[None]).astype(np.float64)
        return y[0] if n_samples is None else y

    def _most_likely(self, F: Any) -> Any:
        return (np.asarray(F) > 0).astype(np.float64)


class Gaussian(Likelihood):
    """Isotropic Gaussian with fixed ``sigma``: ``log p(y | f) = -|y - f|^2 / (2 sigma^2) + const``.

    Notes
    -----
    ``g = (y - f) / sigma^2``; ``Lambda = I / sigma^2``; ``R = I / sigma``. The mean squared
    error ``|y - f|^2 / 2`` is ``-log p`` for ``sigma = 1`` up to a constant (note the 1/2).
    """

    name = "gaussian"

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma = check_positive(sigma, "sigma")

    def config(self) -> dict[str, Any]:
        return {"likelihood": self.name, "sigma": self.sigma}

    def __repr__(self) -> str:
        return f"Gaussian(sigma={self.sigma!r})"

    def check_targets(self, y: Any, N: int, C: int, name: str = "y") -> Any:
        arr = y if is_box(y) else as_float_array(y, name)  # targets may be differentiated
        if np.shape(arr) != (N, C):
            hint = " (use y[:, None] for a single output)" if np.shape(arr) == (N,) else ""
            raise ValueError(
                f"{name}: expected real targets of shape ({N}, {C}), received shape "
                f"{arr.shape}{hint}"
            )
        return arr

    def _log_prob(self, F: Any, y: Any) -> Any:
        C = F.shape[1]
        r = y - F
        return -0.5 * anp.sum(r * r, axis=1) / self.sigma**2 - 0.5 * C * math.log(
            2.0 * math.pi * self.sigma**2
        )

    def _mean(self, F: Any) -> np.ndarray:
        return np.array(F, dtype=np.float64, copy=True)

    def _grad_log_prob(self, F: Any, y: Any) -> Any:
        return (y - np.asarray(F)) / self.sigma**2

    def _fisher_outputs(self, F: Any) -> Any:
        N, C = np.shape(F)
        return np.broadcast_to(np.eye(C) / self.sigma**2, (N, C, C)).copy()

    def _fisher_factor(self, F: Any) -> Any:
        N, C = np.shape(F)
        return np.broadcast_to(np.eye(C) / self.sigma, (N, C, C)).copy()

    def _hessian_outputs(self, F: Any) -> Any:
        return self._fisher_outputs(F)

    #: Gauss-Hermite points per output of :meth:`outcomes` (exact to degree 2 * 5 - 1 = 9).
    QUADRATURE_POINTS = 5

    def _num_outcomes(self, C: int) -> Any:
        return self.QUADRATURE_POINTS**C

    def _outcomes(self, F: Any) -> tuple[Any, ...]:
        from numpy.polynomial.hermite_e import hermegauss

        N, C = F.shape
        x, wx = hermegauss(self.QUADRATURE_POINTS)  # nodes and weights for exp(-x^2 / 2)
        wx = wx / wx.sum()
        grids = np.meshgrid(*([x] * C), indexing="ij")
        nodes = np.stack([g.ravel() for g in grids], axis=1)  # (O, C)
        wgrid = np.prod(np.meshgrid(*([wx] * C), indexing="ij"), axis=0).ravel()
        O = nodes.shape[0]
        return (
            np.broadcast_to(wgrid, (N, O)).copy(),
            F[:, None, :] + self.sigma * nodes[None, :, :],
        )

    def _sample(self, F: Any, rng: Any, n_samples: Any = None) -> Any:
        k = 1 if n_samples is None else n_samples
        y = F[None] + self.sigma * rng.standard_normal((k,) + F.shape)
        return y[0] if n_samples is None else y

    def _most_likely(self, F: Any) -> np.ndarray:
        return np.array(F, dtype=np.float64, copy=True)


LIKELIHOODS = {"categorical": Categorical, "bernoulli": Bernoulli, "gaussian": Gaussian}


def get_likelihood(likelihood: Any = "categorical", sigma: float = 1.0) -> Likelihood:
    """Resolve a likelihood name (``categorical``, ``bernoulli``, ``gaussian``) or instance.

    ``sigma`` is the Gaussian standard deviation; it is ignored by the other names and by an
    instance (which carries its own), so one call can serve every likelihood.
    """
    if isinstance(likelihood, Likelihood):
        return likelihood
    if not isinstance(likelihood, str):
        raise TypeError(
            f"likelihood: expected one of {sorted(LIKELIHOODS)} or a Likelihood, "
            f"received {type(likelihood).__name__}"
        )
    if likelihood not in LIKELIHOODS:
        raise ValueError(
            f"likelihood: expected one of {sorted(LIKELIHOODS)}, received {likelihood!r}"
        )
    if likelihood == "gaussian":
        return Gaussian(sigma)
    return LIKELIHOODS[likelihood]()
