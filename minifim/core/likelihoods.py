"""Output distributions ``p(y | f)`` of the network outputs ``f: (N, C)``.

Each likelihood gives, for outputs ``F: (N, C)``:

- ``log_prob(F, y) -> (N,)``, written with ``autograd.numpy`` so the generic route can
  differentiate it;
- ``grad_log_prob(F, y) -> (N, C)``: the output-space score ``d log p(y | f) / d f``;
- ``fisher_outputs(F) -> Lambda: (N, C, C)``: ``E_{y ~ p(y|f)}[g g^T]`` with ``g`` the
  output-space score;
- ``fisher_factor(F) -> R: (N, K, C)`` with ``R^T R = Lambda`` (``K = C`` here), whose rows
  are the enumerated, probability-weighted output scores (the exact expectation as a factor);
- ``hessian_outputs(F, y=None) -> (N, C, C)``: the Hessian ``H_f(y)`` of ``-log p`` with
  respect to ``f``. For the canonical links (categorical, Bernoulli, Gaussian, Poisson with
  ``link="log"``) it equals ``Lambda`` and does not depend on ``y``; for the heteroscedastic
  Gaussian and the softplus Poisson it depends on ``y`` (required) and only its expectation
  over the labels is ``Lambda``; ``hessian_factors(F, y)`` gives the signed factorisation
  ``H = P^T P - M^T M`` (``M`` empty when ``H`` is PSD);
- ``sample(F, rng, n_samples=None)``: labels drawn from the model;
- ``mean(F)``: ``E[y | f]`` (class probabilities, Bernoulli probabilities, Gaussian means);
- ``outcomes(F) -> (w, Y)``: the label distribution as weighted outcomes, so that
  ``E_{y ~ p(y | f_n)}[h(y)] = sum_o w[n, o] h(Y[n, o])`` (exact for every ``h`` for the
  categorical and Bernoulli labels, a Gauss-Hermite rule for the Gaussian).

Targets: ``categorical`` integer labels ``y: (N,)`` in ``[0, C)``; ``bernoulli`` 0/1 labels
``y: (N, C)`` (``C`` independent binary outputs); ``gaussian`` real targets ``y: (N, C)``;
``heteroscedastic`` real targets ``y: (N, C)`` for ``2C`` outputs (means, then log-variances or
natural parameters); ``poisson`` non-negative integer counts ``y: (N, C)``.
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

__all__ = [
    "Likelihood",
    "Categorical",
    "Bernoulli",
    "Gaussian",
    "HeteroscedasticGaussian",
    "Poisson",
    "get_likelihood",
    "LIKELIHOODS",
]


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

    #: The link is canonical: the loss Hessian ``H_f`` does not depend on ``y`` and equals
    #: ``Lambda`` (Fisher = GGN = expected Hessian).
    canonical: bool = True
    #: ``H_f(y)`` is positive semi-definite for every label (false: the GGN can be indefinite).
    hessian_psd: bool = True

    def describe(self) -> str:
        """A short name with the options that matter (``"poisson(link='softplus')"``)."""
        return self.name

    def _hessian_targets(self, F: Any, y: Any) -> Any:
        """Validated ``y`` for :meth:`hessian_outputs`: required unless the link is canonical."""
        if y is None:
            if not self.canonical:
                raise TypeError(
                    f"y: the {self.describe()} likelihood has a non-canonical link, so the "
                    "loss Hessian in the outputs depends on the labels; pass the targets y "
                    "(received None)"
                )
            return None
        N, C = np.shape(F)
        return self.check_targets(y, N, C)

    def hessian_outputs(self, F: Any, y: ArrayLike | None = None) -> np.ndarray:
        """Hessian ``H_f(y)`` of ``-log p(y | f)`` with respect to ``f``, shape ``(N, C, C)``.

        For the canonical links (categorical, Bernoulli, Gaussian, Poisson with
        ``link="log"``) it does not depend on ``y`` (optional, validated when given) and
        equals :meth:`fisher_outputs`. Otherwise ``y: (N, ...)`` is required (``TypeError``
        naming ``y`` without it) and ``E_{y ~ p(y | f)}[H_f(y)] = Lambda``.
        """
        F = self.check_outputs(F)
        y = self._hessian_targets(F, y)
        self._require_output_square(F, "output-space Hessian")
        return self._hessian_outputs(F, y)

    def hessian_factors(self, F: Any, y: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A signed factorisation ``H_f(y) = P^T P - M^T M`` of the loss Hessian.

        Parameters
        ----------
        F : ndarray, shape (N, C)
        y : targets, required unless the link is canonical (see :meth:`hessian_outputs`)

        Returns
        -------
        P : ndarray, shape (N, Kp, C)
            Rows of the positive part.
        M : ndarray, shape (N, Km, C)
            Rows of the negative part; ``Km = 0`` when :attr:`hessian_psd` (a PSD Hessian).

        Notes
        -----
        The GGN ``J^T H J = (P J)^T (P J) - (M J)^T (M J)`` is then two sums of outer products
        of backpropagated seeds, assembled by the same BLAS routes as a Fisher. Default: the
        batched eigendecomposition ``H = Q diag(w) Q^T``, ``P = sqrt(w_+) Q^T``,
        ``M = sqrt(w_-) Q^T``; the heteroscedastic Gaussian uses its exact 2 x 2 ``L D L^T``
        per output instead.
        """
        F = self.check_outputs(F)
        y = self._hessian_targets(F, y)
        self._require_output_square(F, "output-space Hessian factors")
        return self._hessian_factors(F, y)

    def _hessian_factors(self, F: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        w, Q = np.linalg.eigh(self._hessian_outputs(F, y))
        Qt = Q.transpose(0, 2, 1)
        P = np.sqrt(np.clip(w, 0.0, None))[:, :, None] * Qt
        if self.hessian_psd:
            return P, np.zeros((P.shape[0], 0, P.shape[2]))
        return P, np.sqrt(np.clip(-w, 0.0, None))[:, :, None] * Qt

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

    def _hessian_outputs(self, F: Any, y: Any = None) -> Any:
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

    def _hessian_outputs(self, F: Any, y: Any = None) -> Any:
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

    def _hessian_outputs(self, F: Any, y: Any = None) -> Any:
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

    def _hessian_outputs(self, F: Any, y: Any = None) -> Any:
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


def _real_targets(y: Any, N: int, C: int, name: str, what: str) -> Any:
    """``y: (N, C)`` real (an autograd box is checked for its shape only)."""
    arr = y if is_box(y) else as_float_array(y, name)
    if np.shape(arr) != (N, C):
        hint = " (use y[:, None] for a single output)" if np.shape(arr) == (N,) else ""
        raise ValueError(
            f"{name}: expected {what} of shape ({N}, {C}), received shape {np.shape(arr)}{hint}"
        )
    return arr


def _gauss_hermite_outcomes(
    mu: np.ndarray, sd: np.ndarray, points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss-Hermite outcomes ``y = mu + sd x`` of independent normals, ``(w, Y)``.

    ``mu, sd: (N, C)``; returns ``w: (N, points^C)`` and ``Y: (N, points^C, C)``.
    """
    from numpy.polynomial.hermite_e import hermegauss

    N, C = mu.shape
    x, wx = hermegauss(points)  # nodes and weights for exp(-x^2 / 2)
    wx = wx / wx.sum()
    grids = np.meshgrid(*([x] * C), indexing="ij")
    nodes = np.stack([g.ravel() for g in grids], axis=1)  # (O, C)
    wgrid = np.prod(np.meshgrid(*([wx] * C), indexing="ij"), axis=0).ravel()
    O = nodes.shape[0]
    return np.broadcast_to(wgrid, (N, O)).copy(), mu[:, None, :] + sd[:, None, :] * nodes[None]


class HeteroscedasticGaussian(Likelihood):
    """Gaussian with a learned variance per output: ``2C`` outputs for ``C`` targets.

    Parameters
    ----------
    parameterization : {"logvar", "natural"}
        The coordinates of the outputs ``f = (f_1, f_2)``, blocked: ``F[:, :C]`` then
        ``F[:, C:]`` (not interleaved).

        ``"logvar"`` (default): ``f_1 = mu``, ``f_2 = s = log sigma^2``;
        ``"natural"`` (Immer et al. 2023, with their exponential head): ``f_1 = eta_1 =
        mu / sigma^2`` and ``eta_2 = -exp(f_2) / 2 = -1 / (2 sigma^2)``, i.e. the precision
        is ``lambda = exp(f_2)`` and ``mu = f_1 / lambda`` (their code's default head uses a
        softplus instead of the exponential; the exponential keeps every quantity a closed
        form).

    Notes
    -----
    Targets ``y: (N, C)`` real. Per output (the ``C`` outputs are independent), with
    ``r = y - mu``:

    ``logvar``: ``-log p = s / 2 + r^2 e^{-s} / 2 + log(2 pi) / 2``; score
    ``g = (r e^{-s}, (r^2 e^{-s} - 1) / 2)``; ``Lambda = diag(e^{-s}, 1/2)``;
    ``H_f(y) = [[e^{-s}, r e^{-s}], [r e^{-s}, r^2 e^{-s} / 2]]`` with determinant
    ``-r^2 / (2 sigma^4)``: indefinite for every label but the mean, and
    ``E_y[H_f(y)] = Lambda``.

    ``natural``: ``log p = f_1 y - lambda y^2 / 2 - f_1^2 / (2 lambda) + f_2 / 2 - log(2 pi) / 2``;
    ``g = (y - mu, (1 - lambda y^2 + lambda mu^2) / 2)``;
    ``Lambda = [[sigma^2, -mu], [-mu, 1/2 + lambda mu^2]]``;
    ``H_f(y) = [[sigma^2, -mu], [-mu, lambda (y^2 + mu^2) / 2]]`` with determinant
    ``(y^2 - mu^2) / 2``: indefinite when ``|y| < |mu|``.

    Signed factorisation (:meth:`hessian_factors`): the exact ``L D L^T`` of each 2 x 2 block,
    ``H = a u u^T + d e_2 e_2^T`` with ``u = (1, b / a)`` and ``d = c - b^2 / a``
    (``logvar``: ``d = -r^2 e^{-s} / 2 < 0``; ``natural``: ``d = lambda (y^2 - mu^2) / 2``).
    Log-variances of +-30 give finite results (every exponential is of ``+-s`` or ``+-s/2``).
    """

    name = "heteroscedastic"
    canonical = False
    hessian_psd = False

    def __init__(self, parameterization: str = "logvar") -> None:
        from ..options import Parameterization, as_option

        self.parameterization = as_option(
            parameterization, Parameterization, "parameterization"
        ).value

    def config(self) -> dict[str, Any]:
        return {"likelihood": self.name, "parameterization": self.parameterization}

    def describe(self) -> str:
        return f"heteroscedastic(parameterization={self.parameterization!r})"

    def __repr__(self) -> str:
        return f"HeteroscedasticGaussian(parameterization={self.parameterization!r})"

    @property
    def natural(self) -> bool:
        return self.parameterization == "natural"

    # --- shapes --------------------------------------------------------------------------------
    def check_outputs(self, F: Any, name: str = "F") -> Any:
        F = super().check_outputs(F, name)
        width = np.shape(F)[1]
        if width % 2:
            raise ValueError(
                f"{name}: the heteroscedastic likelihood needs 2C outputs (C means, then C "
                f"{'natural precisions' if self.natural else 'log-variances'}), received an "
                f"odd width {width}"
            )
        return F

    def check_targets(self, y: Any, N: int, C: int, name: str = "y") -> Any:
        if C % 2:
            raise ValueError(
                f"{name}: the heteroscedastic likelihood needs 2C outputs for C targets, "
                f"received an odd output width {C}"
            )
        return _real_targets(
            y, N, C // 2, name, f"real targets (C = {C // 2} for 2C = {C} outputs)"
        )

    @staticmethod
    def _split(F: Any) -> tuple[Any, Any]:
        C = F.shape[1] // 2
        return F[:, :C], F[:, C:]

    def mean_and_log_variance(self, F: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, log sigma^2)``, each ``(N, C)``, from the outputs ``F: (N, 2C)``."""
        f1, f2 = self._split(self.check_outputs(F))
        return self._mu(f1, f2), (-f2 if self.natural else np.array(f2, dtype=np.float64))

    def _mu(self, f1: Any, f2: Any) -> Any:
        return f1 * anp.exp(-f2) if self.natural else f1

    # --- implementations ---------------------------------------------------------------------
    def _log_prob(self, F: Any, y: Any) -> Any:
        f1, f2 = self._split(F)
        C = f1.shape[1]
        if self.natural:
            lp = f1 * y - 0.5 * anp.exp(f2) * y * y - 0.5 * f1 * f1 * anp.exp(-f2) + 0.5 * f2
        else:
            z = (y - f1) * anp.exp(-0.5 * f2)
            lp = -0.5 * z * z - 0.5 * f2
        return anp.sum(lp, axis=1) - 0.5 * C * math.log(2.0 * math.pi)

    def _grad_log_prob(self, F: Any, y: Any) -> Any:
        f1, f2 = self._split(np.asarray(F))
        if self.natural:
            lam = np.exp(f2)
            mu = f1 / lam
            return np.concatenate([y - mu, 0.5 * (1.0 - lam * (y * y - mu * mu))], axis=1)
        z = (y - f1) * np.exp(-0.5 * f2)
        return np.concatenate([z * np.exp(-0.5 * f2), 0.5 * (z * z - 1.0)], axis=1)

    @staticmethod
    def _blocks(A: np.ndarray, B: np.ndarray, D: np.ndarray) -> np.ndarray:
        """``(N, 2C, 2C)`` from per-output 2 x 2 blocks ``[[A, B], [B, D]]``, each ``(N, C)``."""
        N, C = A.shape
        M = np.zeros((N, 2 * C, 2 * C))
        i, j = np.arange(C), np.arange(C) + C
        M[:, i, i], M[:, i, j], M[:, j, i], M[:, j, j] = A, B, B, D
        return M

    def _fisher_outputs(self, F: Any) -> Any:
        f1, f2 = self._split(np.asarray(F))
        if self.natural:
            var = np.exp(-f2)
            mu = f1 * var
            return self._blocks(var, -mu, 0.5 + mu * f1)  # lambda mu^2 = mu f1
        return self._blocks(np.exp(-f2), np.zeros_like(f1), np.full_like(f1, 0.5))

    def _fisher_factor(self, F: Any) -> Any:
        # upper-triangular R per block with R^T R = Lambda (rows: the mean, the variance)
        f1, f2 = self._split(np.asarray(F))
        N, C = f1.shape
        R = np.zeros((N, 2 * C, 2 * C))
        i, j = np.arange(C), np.arange(C) + C
        if self.natural:
            sd = np.exp(-0.5 * f2)
            R[:, i, i], R[:, i, j] = sd, -f1 * sd  # (sigma, -mu / sigma)
        else:
            R[:, i, i] = np.exp(-0.5 * f2)
        R[:, j, j] = math.sqrt(0.5)
        return R

    def _hessian_outputs(self, F: Any, y: Any = None) -> Any:
        f1, f2 = self._split(np.asarray(F))
        if self.natural:
            var = np.exp(-f2)
            mu = f1 * var
            return self._blocks(var, -mu, 0.5 * np.exp(f2) * y * y + 0.5 * mu * f1)
        e = np.exp(-0.5 * f2)
        z = (y - f1) * e  # r / sigma
        return self._blocks(e * e, z * e, 0.5 * z * z)

    def _hessian_factors(self, F: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        f1, f2 = self._split(np.asarray(F))
        N, C = f1.shape
        i, j = np.arange(C), np.arange(C) + C
        P = np.zeros((N, 2 * C, 2 * C))
        M = np.zeros((N, C, 2 * C))
        if self.natural:
            # a = sigma^2, b = -mu: sqrt(a) u = (sigma, -mu / sigma); d = lambda (y^2 - mu^2) / 2
            sd = np.exp(-0.5 * f2)
            P[:, i, i], P[:, i, j] = sd, -f1 * sd
            mu = f1 * sd * sd
            d = 0.5 * np.exp(f2) * (y - mu) * (y + mu)
            P[:, j, j] = np.sqrt(np.clip(d, 0.0, None))
            M[:, i, j] = np.sqrt(np.clip(-d, 0.0, None))
        else:
            # a = e^{-s}, b = r e^{-s}: sqrt(a) u = e^{-s/2} (1, r); d = -r^2 e^{-s} / 2
            e = np.exp(-0.5 * f2)
            z = (y - f1) * e
            P[:, i, i], P[:, i, j] = e, z
            M[:, i, j] = np.abs(z) * math.sqrt(0.5)
        return P, M

    #: Gauss-Hermite points per output of :meth:`outcomes` (exact to degree 2 * 5 - 1 = 9).
    QUADRATURE_POINTS = 5

    def _num_outcomes(self, C: int) -> Any:
        """``C`` is the output width ``2C`` of the network."""
        return self.QUADRATURE_POINTS ** (C // 2)

    def _mean_sd(self, F: Any) -> tuple[np.ndarray, np.ndarray]:
        f1, f2 = self._split(np.asarray(F))
        sd = np.exp(-0.5 * f2) if self.natural else np.exp(0.5 * f2)
        return np.asarray(self._mu(f1, f2), dtype=np.float64), sd

    def _outcomes(self, F: Any) -> tuple[Any, ...]:
        mu, sd = self._mean_sd(F)
        return _gauss_hermite_outcomes(mu, sd, self.QUADRATURE_POINTS)

    def _sample(self, F: Any, rng: Any, n_samples: Any = None) -> Any:
        mu, sd = self._mean_sd(F)
        k = 1 if n_samples is None else n_samples
        y = mu[None] + sd[None] * rng.standard_normal((k,) + mu.shape)
        return y[0] if n_samples is None else y

    def _mean(self, F: Any) -> np.ndarray:
        return self._mean_sd(F)[0].copy()

    def _most_likely(self, F: Any) -> np.ndarray:
        return self._mean(F)

    def variance(self, F: Any) -> np.ndarray:
        """``Var[y | f] = sigma^2``, shape ``(N, C)``."""
        return self._mean_sd(self.check_outputs(F))[1] ** 2


#: ``f`` below which ``softplus(f) = e^f (1 - e^f / 2 + ...)`` is evaluated by its series.
_SOFTPLUS_SERIES = -20.0


def _log_softplus(F: Any) -> Any:
    """``log(log(1 + e^f))`` exactly for every ``f`` (autograd-compatible).

    For ``f < -20``: ``f + log1p(-x/2 + x^2/3 - x^3/4)`` with ``x = e^f`` (truncation below
    ``x^4 / 5 < 1e-35``), where ``log(1 + e^f)`` would underflow to 0 below ``f = -745``.
    """
    lo = anp.minimum(F, _SOFTPLUS_SERIES)
    hi = anp.maximum(F, _SOFTPLUS_SERIES)
    x = anp.exp(lo)
    series = lo + anp.log1p(x * (-0.5 + x * (1.0 / 3.0 - 0.25 * x)))
    return anp.where(F < _SOFTPLUS_SERIES, series, anp.log(anp.logaddexp(0.0, hi)))


def _log_sigmoid(F: Any) -> Any:
    return -np.logaddexp(0.0, -F)


def _log_x_minus_log1p(F: np.ndarray) -> np.ndarray:
    """``log(e^f - log(1 + e^f))`` for every ``f`` without cancellation or overflow.

    ``x = e^f <= 1/4``: the series ``x - log1p(x) = x^2 sum_{k>=2} (-x)^{k-2} / k`` (32 terms,
    truncation ``< 4^-30``); ``1/4 < x <= 1``: directly (the difference loses at most a factor
    8 to cancellation); ``f > 0``: ``f + log1p(-log(1 + e^f) e^{-f})``.
    """
    F = np.asarray(F, dtype=np.float64)
    out = np.empty_like(F)
    small = F <= math.log(0.25)
    mid = (~small) & (F <= 0.0)
    big = F > 0.0
    x = np.exp(F[small])
    acc = np.zeros_like(x)
    for k in range(33, 1, -1):  # Horner: sum_{k>=2} (-x)^{k-2} / k
        acc = 1.0 / k - x * acc
    out[small] = 2.0 * F[small] + np.log(acc)
    xm = np.exp(F[mid])
    out[mid] = np.log(xm - np.log1p(xm))
    fb = F[big]
    out[big] = fb + np.log1p(-np.logaddexp(0.0, fb) * np.exp(-fb))
    return out


class Poisson(Likelihood):
    """Poisson counts with rate ``r(f)``: ``log p(y | f) = y log r - r - log y!``.

    Parameters
    ----------
    link : {"log", "softplus"}
        ``"log"`` (canonical, default): ``r = e^f``; ``"softplus"``: ``r = log(1 + e^f)``,
        evaluated exactly for every ``f`` (``log r`` by its series below ``f = -20``; not
        switched to the identity for large ``f``, as PyTorch's ``softplus(beta=1,
        threshold=20)`` does).

    Notes
    -----
    Targets ``y: (N, C)``: non-negative integer counts (integer or integer-valued float
    arrays; ``log y!`` by ``gammaln``, finite for counts up to 1e6 and beyond). With
    ``r' = dr/df``: score ``g = r' (y / r - 1)``; ``Lambda = r'^2 / r`` (diagonal);
    ``H_f(y) = r'' - y (log r)''``.

    ``log``: ``g = y - e^f``, ``Lambda = H = e^f`` (Fisher = GGN = expected Hessian).
    ``softplus``: ``r' = sigmoid(f)``, ``r'' = sigmoid(f) sigmoid(-f)``,
    ``Lambda = sigmoid(f)^2 / r`` (``~ e^f`` as ``f -> -inf``, ``~ 1/f`` for large ``f``),
    ``H_f(y) = r'' + y kappa`` with ``kappa = -(log r)'' = r'' (e^f - r) / r^2 >= 0``
    (softplus is log-concave): positive semi-definite but label-dependent, and
    ``E_y[H] = r'' + r kappa = Lambda``. Every quantity is evaluated in logs
    (``kappa`` through :func:`_log_x_minus_log1p`), finite for rates from 1e-300 to 1e300.
    """

    name = "poisson"

    def __init__(self, link: str = "log") -> None:
        from ..options import Link, as_option

        self.link = as_option(link, Link, "link").value
        self.canonical = self.link == "log"

    def config(self) -> dict[str, Any]:
        return {"likelihood": self.name, "link": self.link}

    def describe(self) -> str:
        return f"poisson(link={self.link!r})"

    def __repr__(self) -> str:
        return f"Poisson(link={self.link!r})"

    def check_targets(self, y: ArrayLike, N: int, C: int, name: str = "y") -> Any:
        if isinstance(y, (str, bytes)) or y is None:
            raise TypeError(
                f"{name}: expected non-negative integer counts of shape ({N}, {C}), received "
                f"{type(y).__name__}"
            )
        raw = np.asarray(y)
        if raw.dtype == object or not (
            np.issubdtype(raw.dtype, np.integer)
            or np.issubdtype(raw.dtype, np.floating)
            or raw.dtype == np.bool_
        ):
            raise TypeError(f"{name}: expected integer counts, received dtype {raw.dtype}")
        arr = raw.astype(np.float64)
        if arr.shape != (N, C):
            hint = " (use y[:, None] for a single output)" if arr.shape == (N,) else ""
            raise ValueError(
                f"{name}: expected counts of shape ({N}, {C}), received shape {arr.shape}{hint}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: expected finite counts, received NaN/Inf")
        if np.any(arr < 0):
            raise ValueError(
                f"{name}: expected non-negative Poisson counts, received a value "
                f"{float(arr[arr < 0][0])!r}"
            )
        if not np.all(arr == np.floor(arr)):
            raise ValueError(
                f"{name}: expected integer Poisson counts, received a non-integer value "
                f"{float(arr[arr != np.floor(arr)][0])!r}"
            )
        return arr

    # --- the rate and its derivatives (validated float outputs) -------------------------------
    def log_rate(self, F: Any) -> Any:
        """``log r(f)``, shape ``(N, C)`` (autograd-compatible)."""
        return F if self.link == "log" else _log_softplus(F)

    def _rate(self, F: Any) -> np.ndarray:
        F = np.asarray(F)
        return np.exp(F) if self.link == "log" else np.logaddexp(0.0, F)

    def _log_prob(self, F: Any, y: Any) -> Any:
        from scipy.special import gammaln

        rate = anp.exp(F) if self.link == "log" else anp.logaddexp(0.0, F)
        return anp.sum(y * self.log_rate(F) - rate - gammaln(y + 1.0), axis=1)

    def _grad_log_prob(self, F: Any, y: Any) -> Any:
        F = np.asarray(F)
        if self.link == "log":
            return y - np.exp(F)
        # r' (y / r - 1) = y exp(log r' - log r) - r'
        log_s = _log_sigmoid(F)
        return y * np.exp(log_s - _log_softplus(F)) - np.exp(log_s)

    def _lambda_diag(self, F: Any) -> np.ndarray:
        F = np.asarray(F)
        if self.link == "log":
            return np.exp(F)
        return np.exp(2.0 * _log_sigmoid(F) - _log_softplus(F))

    def _diag(self, d: np.ndarray) -> np.ndarray:
        M = np.zeros(d.shape + (d.shape[1],))
        idx = np.arange(d.shape[1])
        M[:, idx, idx] = d
        return M

    def _fisher_outputs(self, F: Any) -> Any:
        return self._diag(self._lambda_diag(F))

    def _fisher_factor(self, F: Any) -> Any:
        F = np.asarray(F)
        if self.link == "log":
            return self._diag(np.exp(0.5 * F))
        return self._diag(np.exp(_log_sigmoid(F) - 0.5 * _log_softplus(F)))

    def _hessian_diag(self, F: Any, y: Any) -> np.ndarray:
        F = np.asarray(F)
        if self.link == "log":
            return np.exp(F)
        log_r2 = _log_sigmoid(F) + _log_sigmoid(-F)  # log r''
        log_kappa = log_r2 + _log_x_minus_log1p(F) - 2.0 * _log_softplus(F)
        return np.exp(log_r2) + y * np.exp(log_kappa)

    def _hessian_outputs(self, F: Any, y: Any = None) -> Any:
        return self._diag(self._hessian_diag(F, y))

    def _hessian_factors(self, F: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.link == "log":  # canonical: the generic eigendecomposition route
            return super()._hessian_factors(F, y)
        P = self._diag(np.sqrt(self._hessian_diag(F, y)))
        return P, np.zeros((P.shape[0], 0, P.shape[2]))

    def _num_outcomes(self, C: int) -> Any:
        raise ValueError(
            f"{self.describe()}: the counts have unbounded support, so there is no finite "
            "outcome enumeration; use the closed forms (fisher_outputs) or Monte-Carlo labels"
        )

    def _sample(self, F: Any, rng: Any, n_samples: Any = None) -> Any:
        r = self._rate(F)
        k = 1 if n_samples is None else n_samples
        y = rng.poisson(np.broadcast_to(r, (k,) + r.shape)).astype(np.float64)
        return y[0] if n_samples is None else y

    def _mean(self, F: Any) -> np.ndarray:
        return self._rate(F)

    def _most_likely(self, F: Any) -> np.ndarray:
        """The mode ``floor(r)`` (for an integer rate ``r - 1`` is a mode too)."""
        return np.floor(self._rate(F))


LIKELIHOODS = {
    "categorical": Categorical,
    "bernoulli": Bernoulli,
    "gaussian": Gaussian,
    "heteroscedastic": HeteroscedasticGaussian,
    "poisson": Poisson,
}


def get_likelihood(
    likelihood: Any = "categorical",
    sigma: float = 1.0,
    *,
    link: str | None = None,
    parameterization: str | None = None,
) -> Likelihood:
    """Resolve a likelihood name or instance.

    Parameters
    ----------
    likelihood : {"categorical", "bernoulli", "gaussian", "heteroscedastic", "poisson"} or
        Likelihood
    sigma : float
        The Gaussian standard deviation; ignored by the other names and by an instance (which
        carries its own), so one call can serve every likelihood.
    link : {"log", "softplus"}, optional
        The Poisson rate's inverse link (default ``"log"``); refused for other likelihoods.
    parameterization : {"logvar", "natural"}, optional
        The heteroscedastic Gaussian's output coordinates (default ``"logvar"``); refused for
        other likelihoods.
    """
    if isinstance(likelihood, Likelihood):
        for key, value, attr in (
            ("link", link, "link"),
            ("parameterization", parameterization, "parameterization"),
        ):
            if value is not None and getattr(likelihood, attr, None) != value:
                raise ValueError(
                    f"{key}: {likelihood!r} carries its own {key}; received {key}={value!r}"
                )
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
    if link is not None and likelihood != "poisson":
        raise ValueError(
            f"link: only the poisson likelihood has a link option, received link={link!r} "
            f"for likelihood={likelihood!r}"
        )
    if parameterization is not None and likelihood != "heteroscedastic":
        raise ValueError(
            f"parameterization: only the heteroscedastic likelihood has a parameterization "
            f"option, received parameterization={parameterization!r} for "
            f"likelihood={likelihood!r}"
        )
    if likelihood == "gaussian":
        return Gaussian(sigma)
    if likelihood == "poisson":
        return Poisson("log" if link is None else link)
    if likelihood == "heteroscedastic":
        return HeteroscedasticGaussian("logvar" if parameterization is None else parameterization)
    return LIKELIHOODS[likelihood]()
