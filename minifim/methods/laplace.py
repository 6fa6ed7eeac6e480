"""Laplace approximation of the posterior at a MAP estimate (MacKay 1992; Daxberger et al. 2021).

Model, prior and posterior
--------------------------
Likelihood ``p_theta(y | x)`` of the MLP; prior ``theta ~ N(0, alpha^{-1} I)`` with
``alpha = prior_precision``. Expanding the log joint to second order around a MAP ``theta*``
with the curvature of the summed negative log-likelihood replaced by ``N F`` (``F`` the MEAN true
Fisher, GGN or empirical Fisher at ``theta*`` over the ``N`` training samples; for the canonical
links here the true Fisher equals the GGN) gives

    ``q(theta) = N(theta*, A^{-1})``,   ``A = N F + alpha I``   (the posterior precision).

Curvature structures (``structure=``, the :mod:`minifim.geometry.structures` objects built by
:func:`minifim.curvature` with ``reduction="sum"``), each EXACT for its own stated precision:

- ``"full"``: ``A = N F + alpha I`` dense (:class:`~minifim.Dense`);
- ``"diag"``: ``A = N diag(F) + alpha I`` (:class:`~minifim.Diagonal`);
- ``"block"``: ``A = N blockdiag(F_ll) + alpha I``, the exact per-layer blocks
  (:class:`~minifim.BlockDiagonal`);
- ``"kfac"``: block diagonal over layers, ``A_l = N G_l kron A_l + alpha I`` with the K-FAC
  factors ``G_l, A_l`` of :func:`minifim.kfac` (:class:`~minifim.KFAC`; here ``A_l`` is the
  layer-input factor, not the precision), "eigen-damped": with ``G_l = U g U^T``,
  ``A_l = V a V^T`` the precision has eigenvectors ``U kron V`` and eigenvalues
  ``N g_i a_j + alpha``. This is the exact inverse of the damped Kronecker product; the other
  common choice, ``(sqrt(N) G_l + sqrt(alpha) I) kron (sqrt(N) A_l + sqrt(alpha) I)``, adds the
  cross terms ``sqrt(N alpha) (G_l kron I + I kron A_l)`` to the precision and is not used.
  With ``bias="separate"`` the bias block is ``N G_l + alpha I``.

All are written ``A = Q diag(w + alpha) Q^T`` with ``Q`` orthogonal (dense, the identity, per
block, or per-layer ``U kron V``: the structure's eigen coordinates) and ``w >= 0`` the
eigenvalues of the curvature part ``N F`` (rounding negatives of this PSD matrix are clipped to
0). ``log det A``, samples, covariance products, the functional variance and the evidence all
go through ``(w, Q)``; they are consistent with one another and ``alpha`` can change without
recomputing the curvature.

Conventions: ``theta: (P,)``; ``X: (N, D)``; the linearised outputs ``f*: (M, C)`` at ``M`` test
inputs with covariances ``(M, C, C)``; every random step takes a Generator or a seed.
:meth:`Laplace.optimize_prior_precision` and :meth:`Laplace.with_prior_precision` return NEW
objects (a Laplace object never changes after construction; laplace-torch's method of the
same name mutates in place).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple, cast

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq

from .._validation import (
    as_float_array,
    as_generator,
    check_choice,
    check_int,
    check_net,
    check_positive,
)
from ..core.likelihoods import Gaussian, HeteroscedasticGaussian
from ..core.model import MLP, Sequential
from ..core.objective import loss_and_gradient
from ..core.scores import output_jacobians
from ..geometry.curvature import curvature_is_psd
from ..geometry.kronecker import KFACFactors
from ..geometry.structures import KFAC
from ..geometry.structures import Structure as CurvatureStructure
from ..geometry.structures import curvature as structured_curvature
from ..memory import memory_budget, require_memory
from ..options import (
    DEPRECATION_SINCE,
    DEPRECATION_UNTIL,
    Bias,
    LinkApprox,
    PredType,
    Structure,
    as_option,
    deprecated_keywords,
)

__all__ = [
    "Laplace",
    "calibration",
    "Calibration",
    "LAPLACE_STRUCTURES",
    "CURVATURE_STRUCTURES",
    "LAPLACE_FISHERS",
    "heteroscedastic_glm_moments",
]

LAPLACE_STRUCTURES = Structure.values()
CURVATURE_STRUCTURES = LAPLACE_STRUCTURES  # the former name, kept importable
LAPLACE_FISHERS = ("true", "ggn", "empirical", "mc")
_CHUNK_BYTES = 2**26  # working memory per chunk of test inputs in the GLM predictive

_CHEAPER_COV = (
    "Laplace.posterior_variance() (the marginal variances, never dense), "
    ".sample(), .functional_posterior() / .predictive() (J A^-1 J^T without "
    "forming A^-1), or structure='kfac' / 'diag'"
)


# --- the Laplace approximation -------------------------------------------------------------
class Laplace:
    """Laplace approximation ``N(theta*, A^{-1})``, ``A = N F + alpha I`` (see module docstring).

    Parameters
    ----------
    net : Sequential (or MLP)
    theta_map : ndarray, shape (P,)
        The MAP estimate under the prior ``N(0, alpha^{-1} I)`` (e.g. from :func:`minifim.fit_map`).
    X : ndarray, shape (N, D)
        The training inputs.
    y : targets of the likelihood (``(N,)`` labels or ``(N, C)``)
        The training targets (used by the evidence and by ``fisher="empirical"``).
    prior_precision : float > 0
        ``alpha``.
    structure : {"full", "diag", "block", "kfac"}
        The structure of the curvature (module docstring); ``curvature=`` is its deprecated
        former name (``DeprecationWarning``).
    fisher : {"true", "ggn", "empirical", "mc"}
        Which curvature stands for the Hessian of the summed NLL (means over samples, scaled
        by ``N``). ``"true"`` and ``"ggn"`` are equal for the canonical links; for the
        heteroscedastic Gaussian the GGN at the labels is indefinite and refused
        (``ValueError``: the precision ``N G + alpha I`` need not be positive definite),
        ``"true"`` is its expectation over the labels; Poisson with ``link="softplus"``
        has a PSD GGN that differs from the Fisher.
    bias : {"folded", "separate"}
        K-FAC bias convention (``structure="kfac"`` only).
    n_samples, rng : Monte-Carlo labels per input and their generator (``fisher="mc"``).
    chunk_size : int or None
        Samples per chunk when assembling the curvature.

    Attributes
    ----------
    structure : str
        The ``structure=`` word.
    curvature : minifim.geometry.structures.Structure
        The curvature part ``N F`` as a structure object (``Dense``, ``Diagonal``,
        ``BlockDiagonal`` or ``KFAC``, from :func:`minifim.curvature` with ``reduction="sum"``).
    theta_map : ndarray, shape (P,), read-only
    prior_precision : float
    num_samples : int, ``N``
    log_likelihood : float, ``sum_n log p(y_n | x_n, theta*)``
    map_gradient_norm : float
        ``|grad (sum_n -log p + alpha/2 |theta|^2)|`` at ``theta_map``: 0 at an exact MAP.
    curvature_eigenvalues : ndarray, shape (P,)
        ``w``, eigenvalues of the curvature part ``N F`` of the chosen structure (K-FAC: the
        products ``N g_i a_j``, layer by layer, then separate-bias ``N g_i``; block: block by
        block).

    Examples
    --------
    >>> import numpy as np, minifim
    >>> net = minifim.MLP([2, 1], activation="identity", likelihood="gaussian")
    >>> X = np.random.default_rng(0).standard_normal((30, 2)); y = X @ [[1.0], [-1.0]]
    >>> theta, _ = minifim.fit_map(net, np.zeros(3), X, y, prior_precision=1.0)
    >>> la = minifim.Laplace(net, theta, X, y, prior_precision=1.0)
    >>> la.posterior_covariance().shape
    (3, 3)
    """

    @deprecated_keywords(curvature="structure")
    def __init__(
        self,
        net: Sequential,
        theta_map: ArrayLike,
        X: ArrayLike,
        y: ArrayLike,
        prior_precision: float = 1.0,
        structure: str | Structure = "full",
        fisher: str = "true",
        *,
        bias: str | Bias = "folded",
        n_samples: int = 1,
        rng: np.random.Generator | int | None = None,
        chunk_size: int | None = None,
    ) -> None:
        check_net(net)
        structure = as_option(structure, Structure, "structure").value
        check_choice(fisher, "fisher", LAPLACE_FISHERS)
        bias = as_option(bias, Bias, "bias").value
        theta = net.check_theta(theta_map, "theta_map")
        X = net.check_inputs(X)
        y = net.check_targets(y, X.shape[0])
        self._alpha = check_positive(prior_precision, "prior_precision")
        if not curvature_is_psd(net, fisher):
            raise ValueError(
                f"fisher: the 'ggn' curvature of the {net.likelihood.describe()} likelihood "
                "is indefinite at the labels (J^T H_f(y) J with an indefinite loss Hessian), "
                "so N G + alpha I is not a valid posterior precision; use fisher='true' (its "
                "expectation over the model's labels, exact) or 'mc'"
            )
        if fisher == "mc" and rng is None:
            raise TypeError(
                "rng: fisher='mc' samples labels; pass a numpy.random.Generator "
                "or a seed, received None"
            )
        P = net.num_params
        self.net, self.structure, self.fisher, self.bias = net, structure, fisher, bias
        self.num_samples, self.num_params = X.shape[0], P
        if structure == "full":
            require_memory(
                3 * 8 * P * P,
                f"full Laplace precision and its eigenvectors 3 x (P, P) = 3 x ({P}, {P}) float64",
                "structure='kfac' (Kronecker blocks) or structure='diag'",
            )
        self.curvature: CurvatureStructure = structured_curvature(
            net,
            theta,
            X,
            y,
            fisher,
            structure,
            reduction="sum",
            bias=bias,
            n_samples=n_samples,
            rng=rng,
            chunk_size=chunk_size,
        )
        self._w = self.curvature.eigenvalues()
        self._theta = theta.copy()
        self._theta.flags.writeable = False
        self._w.flags.writeable = False
        self.curvature_eigenvalues = self._w
        value, g = loss_and_gradient(net, theta, X, y, reduction="sum")
        self.log_likelihood = -value
        self._nll_grad = g

    # --- basic properties -----------------------------------------------------------------
    @property
    def theta_map(self) -> np.ndarray:
        return self._theta

    @property
    def prior_precision(self) -> float:
        return self._alpha

    @property
    def map_gradient_norm(self) -> float:
        """``|grad_theta (sum_n -log p(y_n | x_n, theta) + alpha/2 |theta|^2)|`` at
        ``theta_map``: zero at an exact MAP under this object's prior."""
        return float(np.linalg.norm(self._nll_grad + self._alpha * self._theta))

    @property
    def kfac_factors(self) -> KFACFactors:
        """The :class:`minifim.KFACFactors` with ``reduction="sum"`` (``G`` carries ``N``)."""
        if self.structure != "kfac":
            raise AttributeError(
                f"kfac_factors: only for structure='kfac', this Laplace has "
                f"structure={self.structure!r}"
            )
        assert isinstance(self.curvature, KFAC)
        return self.curvature.factors

    def __repr__(self) -> str:
        return (
            f"Laplace({self.net!r}, N={self.num_samples}, structure={self.structure!r}, "
            f"fisher={self.fisher!r}, prior_precision={self._alpha!r})"
        )

    def with_prior_precision(self, prior_precision: float) -> Laplace:
        """A new Laplace with another ``alpha``, sharing this one's curvature (no recomputation).

        The MAP is NOT refitted: ``theta_map`` stays the estimate under the original prior.
        """
        alpha = check_positive(prior_precision, "prior_precision")
        new = copy.copy(self)
        new._alpha = alpha
        return new

    def _alpha_or(self, prior_precision: float | None) -> float:
        if prior_precision is None:
            return self._alpha
        return check_positive(prior_precision, "prior_precision")

    # --- the posterior --------------------------------------------------------------------
    def precision_eigenvalues(self, prior_precision: float | None = None) -> np.ndarray:
        """Eigenvalues ``w + alpha`` of the posterior precision ``A``, shape ``(P,)``."""
        return self._w + self._alpha_or(prior_precision)

    def log_det_precision(self, prior_precision: float | None = None) -> float:
        """``log det A = sum_i log(w_i + alpha)``."""
        return float(np.sum(np.log(self.precision_eigenvalues(prior_precision))))

    def posterior_precision(self) -> np.ndarray:
        """Dense posterior precision ``A: (P, P)`` (memory-guarded).

        ``curvature.to_dense() + alpha I``: ``"full"``: ``N F + alpha I`` (the assembled
        curvature, not reconstructed from the eigenvectors); ``"diag"``: ``diag(N diag(F)) +
        alpha I``; ``"block"``: the per-layer blocks; ``"kfac"``: block diagonal ``N G_l kron
        A_l + alpha I`` (``KFACFactors.to_dense``).
        """
        P = self.num_params
        require_memory(
            8 * P * P,
            f"dense Laplace posterior precision (P, P) = ({P}, {P}) float64",
            "Laplace.precision_eigenvalues() or structure='kfac' / 'diag'",
        )
        M = self.curvature.to_dense()
        M[np.diag_indices(P)] += self._alpha
        return M

    def posterior_covariance(self) -> np.ndarray:
        """Dense posterior covariance ``A^{-1}: (P, P)`` (memory-guarded).

        Notes
        -----
        ``A^{-1} = Q diag(1 / (w + alpha)) Q^T`` through the stored eigendecomposition.
        """
        P = self.num_params
        require_memory(
            8 * P * P,
            f"dense Laplace posterior covariance (P, P) = ({P}, {P}) float64",
            _CHEAPER_COV,
        )
        return self.curvature.spectral(1.0 / self.precision_eigenvalues()).to_dense()

    def posterior_variance(self) -> np.ndarray:
        """Marginal posterior variances ``diag(A^{-1})``, shape ``(P,)``, never forming ``A^{-1}``.

        Notes
        -----
        ``diag(Q diag(s) Q^T) = (Q * Q) s`` with ``s = 1 / (w + alpha)`` (per layer
        ``(U * U) S (V * V)^T`` for K-FAC).
        """
        return self.curvature.spectral(1.0 / self.precision_eigenvalues()).diagonal()

    def covariance_matvec(self, v: ArrayLike) -> np.ndarray:
        """``A^{-1} v`` for ``v: (P,)`` or ``(P, m)``, without forming ``A^{-1}``."""
        v = as_float_array(v, "v")
        if v.ndim not in (1, 2) or v.shape[0] != self.num_params:
            raise ValueError(
                f"v: expected shape ({self.num_params},) or ({self.num_params}, "
                f"m), received shape {v.shape}"
            )
        V = v.reshape(self.num_params, -1)
        out = self.curvature.spectral(1.0 / self.precision_eigenvalues()).matmat(V)
        return out[:, 0] if v.ndim == 1 else out

    @deprecated_keywords(n="n_draws")
    def sample(self, n_draws: int, rng: np.random.Generator | int) -> np.ndarray:
        """``n_draws`` draws ``theta ~ N(theta*, A^{-1})``, shape ``(n_draws, P)``.

        Parameters
        ----------
        n_draws : int
            Posterior parameter draws (``n_samples`` means Monte-Carlo labels per input
            elsewhere in minifim; the keyword ``n=`` is deprecated).
        rng : numpy.random.Generator or int

        Notes
        -----
        ``theta = theta* + A^{-1/2} z`` with ``z ~ N(0, I_P)`` and the symmetric inverse
        square root ``A^{-1/2} = Q diag((w + alpha)^{-1/2}) Q^T``: exactly the covariance of
        :meth:`posterior_covariance` and the determinant of :meth:`log_det_precision`.
        ``A^{-1/2}`` is a unique matrix function of ``A`` (unlike ``Q diag(.) z``, which
        depends on the signs of the eigenvectors and on the basis chosen inside repeated
        eigenvalues), so the draws from one seed depend on the BLAS (kernel, thread count)
        only through roundoff: relative changes ``<= 1/2 cond(A)`` times that of ``A``.
        The draws are :meth:`minifim.geometry.structures.Structure.sample` of the curvature
        with ``damping = alpha``.

        Raises
        ------
        ValueError
            When ``A`` has no correct digit in working precision (``cond(A) >= 1 / (P eps)``,
            the structures' criterion, named ``damping`` there): increase ``prior_precision``.
        """
        n_draws = check_int(n_draws, "n_draws", 1)
        rng = as_generator(rng)
        return self._theta[None, :] + self.curvature.sample(rng, self._alpha, n_draws)

    # --- the evidence -----------------------------------------------------------------------
    def log_prior(self, prior_precision: float | None = None) -> float:
        """``log N(theta*; 0, alpha^{-1} I) = P/2 log(alpha / (2 pi)) - alpha/2 |theta*|^2``."""
        alpha = self._alpha_or(prior_precision)
        P = self.num_params
        return 0.5 * P * math.log(alpha / (2.0 * math.pi)) - 0.5 * alpha * float(
            self._theta @ self._theta
        )

    def log_marginal_likelihood(self, prior_precision: float | None = None) -> float:
        """Laplace approximation of the log evidence ``log p(D | alpha)``.

        Parameters
        ----------
        prior_precision : float or None
            Evaluate at another ``alpha`` with ``theta*`` and the curvature kept (post-hoc
            tuning, as laplace-torch); ``None`` uses this object's ``alpha``.

        Notes
        -----
        ``log p(D) ~ log p(D | theta*) + log p(theta*) + P/2 log(2 pi) - 1/2 log det A`` with

        - ``log p(D | theta*) = sum_n log p(y_n | x_n, theta*)`` (normalising constants kept);
        - ``log p(theta*) = P/2 log(alpha) - P/2 log(2 pi) - alpha/2 |theta*|^2``;
        - ``log det A = sum_i log(w_i + alpha)``.

        The ``2 pi`` terms cancel. Exact for linear-Gaussian regression at its exact MAP (it is
        Bayesian linear regression's marginal likelihood).
        """
        alpha = self._alpha_or(prior_precision)
        return (
            self.log_likelihood
            + self.log_prior(alpha)
            + 0.5 * self.num_params * math.log(2.0 * math.pi)
            - 0.5 * self.log_det_precision(alpha)
        )

    def optimize_prior_precision(self) -> Laplace:
        """A new Laplace at the ``alpha`` maximising :meth:`log_marginal_likelihood`.

        ``theta*`` and the curvature stay fixed (post-hoc tuning); ``self`` is not modified.

        Notes
        -----
        In ``t = log alpha`` the evidence has derivative
        ``1/2 [gamma(alpha) - alpha |theta*|^2]`` with ``gamma(alpha) = sum_i w_i / (w_i +
        alpha)`` (MacKay's effective number of parameters). ``gamma`` decreases and ``alpha
        |theta*|^2`` increases strictly, so the maximiser is the unique root of MacKay's
        condition ``alpha = gamma(alpha) / |theta*|^2``, found by bracketing (factors of 10)
        and Brent's method in ``t`` to machine precision. For linear-Gaussian regression refit
        at each ``alpha``, the derivative of the exact evidence equals this one (envelope
        theorem), so at the exact evidence maximiser's MAP this returns that maximiser.

        Raises
        ------
        ValueError
            When ``theta* = 0`` (the evidence grows without bound in ``alpha``) or the
            curvature is zero (it grows as ``alpha -> 0``).
        """
        w = self._w
        sq = float(self._theta @ self._theta)
        if sq == 0.0:
            raise ValueError(
                "theta_map: is exactly zero, so the evidence increases without "
                "bound in prior_precision; no finite maximiser exists"
            )
        if not np.any(w > 0):
            raise ValueError(
                "curvature: the curvature N F is zero, so the evidence increases "
                "as prior_precision -> 0; no finite maximiser exists"
            )

        def slope(t: float) -> float:  # 2 d(evidence)/d(log alpha)
            alpha = math.exp(t)
            return float(np.sum(w / (w + alpha))) - alpha * sq

        lo = hi = math.log(self._alpha)
        while slope(lo) <= 0:
            lo -= math.log(10.0)
        while slope(hi) >= 0:
            hi += math.log(10.0)
        t = brentq(slope, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
        return self.with_prior_precision(math.exp(t))

    # --- predictions ------------------------------------------------------------------------
    def _jacobian_chunks(
        self, X: np.ndarray, per_sample: int
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(slice, Z)`` over chunks of the test inputs, ``Z = diag((w + alpha)^{-1/2})
        Q^T J*^T: (P, m R, C)`` (``R`` output positions per input, 1 without positions; the
        slice counts the ``(input, position)`` rows); chunks sized so that the Jacobians,
        ``Z`` and the caller's ``per_sample`` bytes fit ``min(64 MiB, budget / 2)``
        (memory-guarded)."""
        M, C, P = X.shape[0], self.net.output_dim, self.num_params
        R = self.net.positions
        root = 1.0 / np.sqrt(self.precision_eigenvalues())
        sample = R * (8 * 3 * C * P + per_sample)  # J, Q^T J^T, its scaled copy, the caller's
        require_memory(
            sample,
            f"the linearised predictive of one test input: output "
            f"Jacobian (R C, P) = ({R * C}, {P}) and its eigen-coordinates, 3 x float64",
            "Laplace.predictive(pred_type='nn') (parameter draws, O(P) per draw)",
        )
        step = max(1, min(_CHUNK_BYTES, memory_budget() // 2) // sample)
        for start in range(0, M, step):
            sl = slice(start, min(M, start + step))
            J = output_jacobians(self.net, self._theta, X[sl])  # (m, *pos, C, P)
            Z = self.curvature.to_eigenbasis(J.reshape(-1, P).T)
            del J
            Z *= root[:, None]
            yield slice(sl.start * R, sl.stop * R), Z.reshape(P, -1, C)

    def functional_posterior(self, X: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Linearised (GLM) output distribution ``f* ~ N(f(x*, theta*), J* A^{-1} J*^T)``.

        Parameters
        ----------
        X : ndarray, shape (M, D)

        Returns
        -------
        mean : ndarray, shape (M, C)
            ``(M, *pos, C)`` for positional outputs.
        covariance : ndarray, shape (M, C, C)
            Memory-guarded (``8 M C^2`` bytes); :meth:`functional_variance` gives the
            diagonals only. ``(M, *pos, C, C)`` for positional outputs: the covariance of each
            position's outputs (the cross-position covariances are not formed).

        Notes
        -----
        With ``Z = Q^T J*^T`` (``J*`` from :func:`minifim.output_jacobians`, chunked over the
        test inputs), ``J* A^{-1} J*^T = Z^T diag(1 / (w + alpha)) Z``: symmetric PSD by
        construction.
        """
        X = self.net.check_inputs(X)
        M, C = X.shape[0] * self.net.positions, self.net.output_dim
        require_memory(
            8 * M * C * C,
            f"functional posterior covariances (M R, C, C) = ({M}, {C}, {C}) float64",
            "Laplace.functional_variance(X) (the (M, C) "
            "variances; what the probit predictive uses), or fewer test inputs "
            "per call",
        )
        mean = np.asarray(self.net.forward(self._theta, X))
        cov = np.empty((M, C, C))
        for sl, Z in self._jacobian_chunks(X, 8 * C * C):
            cov[sl] = np.einsum("pmc,pmd->mcd", Z, Z)
        return mean, cov.reshape(mean.shape + (C,))

    def functional_variance(self, X: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Mean and marginal variances of the linearised outputs, never forming ``(M, C, C)``.

        Returns
        -------
        mean : ndarray, shape (M, C)
        variance : ndarray, shape (M, C)
            ``diag(J*_m A^{-1} J*_m^T)``, the diagonals of :meth:`functional_posterior`'s
            covariances (``sum_p Z_pmc^2`` with ``Z`` as there).
        """
        X = self.net.check_inputs(X)
        mean = np.asarray(self.net.forward(self._theta, X))
        var = np.empty((mean.size // self.net.output_dim, self.net.output_dim))
        for sl, Z in self._jacobian_chunks(X, 0):
            var[sl] = np.einsum("pmc,pmc->mc", Z, Z)
        return mean, var.reshape(mean.shape)

    @deprecated_keywords(method="pred_type", n_samples="n_draws")
    def predictive(
        self,
        X: ArrayLike,
        pred_type: str | PredType = "glm",
        link_approx: str | LinkApprox = "probit",
        *,
        n_draws: int = 100,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Posterior predictive at test inputs ``X: (M, D)``.

        Parameters
        ----------
        X : ndarray, shape (M, D)
        pred_type : {"glm", "nn"}
            ``"glm"``: the linearised model's output distribution
            (:meth:`functional_posterior`) pushed through the likelihood; ``"nn"``: average
            over ``n_draws`` parameter draws :meth:`sample` of the NONLINEAR network
            (laplace-torch's names; ``"nn"`` was ``method="mc"``, and the keyword ``method=``
            and the value ``"mc"`` are deprecated).
        link_approx : {"probit", "mc"}
            Classification with ``pred_type="glm"``: the probit approximation or ``n_draws``
            draws of ``f*``. Ignored for regression (the GLM predictive is exactly Gaussian)
            and for ``pred_type="nn"``.
        n_draws : int
            Draws for the Monte-Carlo routes: parameter draws (``pred_type="nn"``) or output
            draws (``link_approx="mc"``); formerly ``n_samples=`` (deprecated), which means
            Monte-Carlo labels per input elsewhere in minifim.
        rng : numpy.random.Generator or int
            Required by the Monte-Carlo routes.

        Returns
        -------
        probs : ndarray, shape (M, C)
            Classification (categorical, Bernoulli): the predictive probabilities ``E[y | x, D]``.
        (mean, covariance) : ndarrays, shapes (M, C) and (M, C, C)
            Gaussian regression: the predictive of ``y``, ``covariance = Cov[f*] + sigma^2 I``.

        Notes
        -----
        Probit (MacKay 1992; Immer et al. 2021, as used by laplace-torch):
        categorical ``softmax(mu / sqrt(1 + pi/8 diag(Sigma)))``, Bernoulli
        ``sigmoid(mu_c / sqrt(1 + pi/8 Sigma_cc))`` per output.
        """
        if isinstance(pred_type, str) and str.__str__(pred_type) == "mc":
            warnings.warn(
                "Laplace.predictive: pred_type/method 'mc' is deprecated since "
                f"minifim {DEPRECATION_SINCE} and will be removed in "
                f"{DEPRECATION_UNTIL}; use pred_type='nn'",
                DeprecationWarning,
                stacklevel=3,
            )
            pred_type = PredType.NN
        pred_type = as_option(pred_type, PredType, "pred_type")
        link_approx = as_option(link_approx, LinkApprox, "link_approx")
        X = self.net.check_inputs(X)
        lik = self.net.likelihood
        regression = isinstance(lik, (Gaussian, HeteroscedasticGaussian))
        needs_rng = pred_type == "nn" or (link_approx == "mc" and not regression)
        if needs_rng:
            n_draws = check_int(n_draws, "n_draws", 1)
            if rng is None:
                raise TypeError(
                    f"rng: pred_type={pred_type.value!r}, "
                    f"link_approx={link_approx.value!r} samples; pass a "
                    "numpy.random.Generator or a seed, received None"
                )
        gen = as_generator(rng) if needs_rng else None
        if isinstance(lik, HeteroscedasticGaussian):
            if self.net.has_positions:
                raise ValueError(
                    "net: the heteroscedastic Laplace predictive is implemented for outputs "
                    "(N, 2C) without positions"
                )
            return self._heteroscedastic_predictive(X, pred_type, n_draws, gen)
        if self.net.has_positions:  # every (input, position) is one prediction of C outputs
            out = self._predictive_flat(X, pred_type, link_approx, n_draws, gen)
            shape = (X.shape[0],) + self.net.output_shape
            if isinstance(out, tuple):
                return out[0].reshape(shape), out[1].reshape(shape + (shape[-1],))
            return out.reshape(shape)
        return self._predictive_flat(X, pred_type, link_approx, n_draws, gen)

    def _predictive_flat(
        self, X: np.ndarray, pred_type: Any, link_approx: Any, n_draws: int, gen: Any
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """:meth:`predictive` with the outputs as ``(M R, C)`` rows (validated arguments)."""
        lik = self.net.likelihood
        regression = isinstance(lik, Gaussian)
        noise = lik.sigma**2 if isinstance(lik, Gaussian) else 0.0
        flat = self.net.flat_outputs
        M, C = X.shape[0] * self.net.positions, self.net.output_dim
        if pred_type == "nn":
            # the parameter draws in batches through one batched forward pass each; running
            # sums over the batches, never all (n_draws, M, C) at once
            require_memory(
                8 * M * C * (C + 3) if regression else 8 * 3 * M * C,
                f"Monte-Carlo predictive sums over (M, C) = ({M}, {C})"
                + (" and (M, C, C)" if regression else ""),
                "fewer test inputs per call",
            )
            assert gen is not None
            thetas = self.sample(n_draws, gen)
            fs = _forward_draws(self.net, thetas, X)  # batches (s, M, C)
            if regression:
                ref = np.asarray(flat(self.net.forward(self._theta, X)))  # shift: stable moments
                total, outer = np.zeros((M, C)), np.zeros((M, C, C))
                for f in fs:
                    d = f - ref[None]
                    total += d.sum(axis=0)
                    outer += np.einsum("smc,smd->mcd", d, d)
                dmean = total / n_draws
                cov = outer / n_draws - dmean[:, :, None] * dmean[:, None, :]
                return ref + dmean, cov + noise * np.eye(C)[None]
            total = np.zeros((M, C))
            for f in fs:
                total += lik.mean(f.reshape(-1, C)).reshape(f.shape).sum(axis=0)
            return total / n_draws
        if regression:
            mean, cov = self.functional_posterior(X)
            return flat(mean), cov.reshape(M, C, C) + noise * np.eye(C)[None]
        if link_approx == "probit":
            mean, var = self.functional_variance(X)
            return lik.mean(flat(mean / np.sqrt(1.0 + math.pi / 8.0 * var)))
        require_memory(
            8 * M * C * (4 * C + 3 * n_draws),
            f"GLM predictive with "
            f"link_approx='mc': covariances (M, C, C) = ({M}, {C}, {C}), their "
            f"factors and (n_draws, M, C) = ({n_draws}, {M}, {C}) draws",
            "link_approx='probit' (the (M, C) variances only), fewer n_draws "
            "or fewer test inputs per call",
        )
        mean, cov = self.functional_posterior(X)
        mean, cov = flat(mean), cov.reshape(M, C, C)
        w, Qc = np.linalg.eigh(cov)
        # the symmetric square root R = Q diag(sqrt w) Q^T (R^T R = cov): unique, so the draws
        # do not depend on the eigenvectors' signs (BLAS kernel / thread count)
        R = np.matmul(Qc * np.sqrt(np.clip(w, 0.0, None))[:, None, :], Qc.transpose(0, 2, 1))
        assert gen is not None
        z = gen.standard_normal((n_draws,) + mean.shape)
        fs = mean[None] + np.einsum("smk,mkc->smc", z, R)
        return np.mean([lik.mean(f) for f in fs], axis=0)

    def _heteroscedastic_predictive(
        self, X: np.ndarray, pred_type: PredType, n_draws: int, gen: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(E[y | x, D], Cov[y | x, D])``, ``(M, C)`` and ``(M, C, C)``, heteroscedastic.

        GLM: exact moments of ``y = mu(f) + sigma(f) eps`` under the Gaussian functional
        posterior ``f* ~ N(m, S)`` over the ``2C`` outputs (see
        :func:`heteroscedastic_glm_moments`). NN: the law of total covariance over parameter
        draws, ``Cov_draws[mu] + E_draws[diag sigma^2]``.
        """
        lik = cast("HeteroscedasticGaussian", self.net.likelihood)
        M, C = X.shape[0], self.net.output_dim // 2
        if pred_type == "glm":
            mean, cov = self.functional_posterior(X)
            return heteroscedastic_glm_moments(lik, mean, cov)
        require_memory(
            8 * M * C * (C + 3),
            f"Monte-Carlo predictive sums over (M, C) = ({M}, {C}) and (M, C, C)",
            "fewer test inputs per call",
        )
        ref = lik.mean(np.asarray(self.net.forward(self._theta, X)))  # shift: stable moments
        total, outer, noise = np.zeros((M, C)), np.zeros((M, C, C)), np.zeros((M, C))
        for t in self.sample(n_draws, gen):
            f = np.asarray(self.net.forward(t, X))
            d = lik.mean(f) - ref
            total += d
            outer += d[:, :, None] * d[:, None, :]
            noise += lik.variance(f)
        dmean = total / n_draws
        cov = outer / n_draws - dmean[:, :, None] * dmean[:, None, :]
        idx = np.arange(C)
        cov[:, idx, idx] += noise / n_draws
        return ref + dmean, cov


def heteroscedastic_glm_moments(
    likelihood: HeteroscedasticGaussian, mean: ArrayLike, cov: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Exact predictive moments of the heteroscedastic Gaussian under ``f ~ N(m, S)``.

    Parameters
    ----------
    likelihood : HeteroscedasticGaussian
    mean : ndarray, shape (M, 2C)
        ``m``, the mean of the outputs (means then log-variances, or natural parameters).
    cov : ndarray, shape (M, 2C, 2C)
        ``S``, their covariance.

    Returns
    -------
    mean_y : ndarray, shape (M, C)
    cov_y : ndarray, shape (M, C, C)
        ``E[y]`` and ``Cov[y] = Cov[mu(f)] + diag E[sigma^2(f)]``.

    Notes
    -----
    ``logvar`` (``mu = f_1``, ``sigma^2 = e^{f_2}``): ``E[y] = m_1``,
    ``Cov[y] = S_11 + diag(exp(m_2 + diag(S_22) / 2))``. ``natural`` (``mu = f_1 e^{-f_2}``,
    ``sigma^2 = e^{-f_2}``): with the exponential tilt
    ``E[g(f) e^{a^T f}] = e^{a^T m + a^T S a / 2} E_{N(m + S a, S)}[g]``,
    ``E[mu_c] = e^{-m_{2c} + S_{2c,2c}/2} (m_{1c} - S_{1c,2c})`` and
    ``E[mu_c mu_d] = e^{a^T m + a^T S a / 2} ((m + S a)_{1c} (m + S a)_{1d} + S_{1c,1d})``
    with ``a = -(e_{2c} + e_{2d})``. Exact, no sampling.
    """
    m = np.asarray(mean, dtype=np.float64)
    S = np.asarray(cov, dtype=np.float64)
    M, C2 = m.shape
    C = C2 // 2
    i1, i2 = np.arange(C), np.arange(C) + C
    S22 = S[:, i2, i2]  # (M, C)
    if likelihood.parameterization == "logvar":
        cov_y = S[:, :C, :C].copy()
        cov_y[:, i1, i1] += np.exp(m[:, C:] + 0.5 * S22)
        return m[:, :C].copy(), cov_y
    # natural: E[mu_c] by the tilt a = -e_{2c}
    Emu = np.exp(-m[:, C:] + 0.5 * S22) * (m[:, :C] - S[:, i1, i2])
    # E[mu_c mu_d], a = -(e_{2c} + e_{2d}): a^T m, a^T S a and (S a)_{1c}, (S a)_{1d}
    am = -(m[:, C:, None] + m[:, None, C:])  # (M, C, C)
    S2 = S[:, C:, C:]
    aSa = S22[:, :, None] + S22[:, None, :] + 2.0 * S2
    S12 = S[:, :C, C:]  # (M, C, C): S[1c, 2d]
    # (m + S a)_{1c} for the pair (c, d): m_1c - S[1c, 2c] - S[1c, 2d]
    tc = m[:, :C, None] - S[:, i1, i2][:, :, None] - S12
    td = m[:, None, :C] - S[:, i1, i2][:, None, :] - S12.transpose(0, 2, 1)
    Emumu = np.exp(am + 0.5 * aSa) * (tc * td + S[:, :C, :C])
    cov_y = Emumu - Emu[:, :, None] * Emu[:, None, :]
    cov_y[:, i1, i1] += np.exp(-m[:, C:] + 0.5 * S22)
    return Emu, cov_y


def _forward_draws(net: Sequential, thetas: np.ndarray, X: np.ndarray) -> Iterator[np.ndarray]:
    """Network outputs ``(s, M, C)`` for batches of ``s`` parameter draws ``thetas: (S, P)``.

    An :class:`~minifim.MLP` runs each batch as one batched forward pass (``z = a W^T + b``
    with a leading draw axis: batched GEMMs, no loop over draws); the batch size keeps the
    layer activations ``(s, M, width)`` within ``min(64 MiB, budget / 4)``. Other networks:
    one draw at a time.
    """
    S, M = thetas.shape[0], X.shape[0]
    if not isinstance(net, MLP):  # any Sequential: one draw at a time, (M R, C) rows
        for t in thetas:
            yield np.asarray(net.flat_outputs(net.forward(t, X)))[None]
        return
    width = max(max(o, i) for o, i in net.shapes)
    per_draw = 8 * 3 * M * width  # the layer input, pre-activation and output of one draw
    require_memory(
        per_draw,
        f"forward pass of one parameter draw on M = {M} inputs",
        "fewer test inputs per call",
    )
    step = max(1, min(2**26, memory_budget() // 4) // per_draw)
    phi = net.activation.phi
    for s0 in range(0, S, step):
        T = thetas[s0 : s0 + step]
        a = np.broadcast_to(X, (T.shape[0],) + X.shape)
        for l, ((o, i), (ws, bs)) in enumerate(zip(net.shapes, net.layer_slices)):
            W = T[:, ws].reshape(-1, o, i)
            z = np.matmul(a, W.transpose(0, 2, 1)) + T[:, None, bs]
            a = np.asarray(phi(z)) if l < net.num_layers - 1 else z
        yield a


# --- calibration ----------------------------------------------------------------------------
class Calibration(NamedTuple):
    """Expected calibration error and the reliability diagram's bins (see :func:`calibration`).

    Attributes
    ----------
    ece : float
    bin_edges : ndarray, shape (B + 1,)
    bin_confidence, bin_accuracy : ndarray, shape (B,), NaN for empty bins
    bin_count : ndarray of int, shape (B,)
    """

    ece: float
    bin_edges: np.ndarray
    bin_confidence: np.ndarray
    bin_accuracy: np.ndarray
    bin_count: np.ndarray


def calibration(probs: ArrayLike, y: ArrayLike, n_bins: int = 15) -> Calibration:
    """Expected calibration error (Guo et al. 2017) of class probabilities.

    Parameters
    ----------
    probs : ndarray, shape (N, C)
        Predicted class probabilities (rows sum to 1).
    y : ndarray of int, shape (N,)
        True labels in ``[0, C)``.
    n_bins : int
        ``B`` equal-width confidence bins ``((b - 1)/B, b/B]`` (the first also holds 0).

    Returns
    -------
    Calibration

    Notes
    -----
    Confidence ``c_n = max_k p_nk``, prediction ``argmax_k p_nk`` (first maximum);
    ``ECE = sum_b (n_b / N) |acc_b - conf_b|`` over the non-empty bins.
    """
    probs = as_float_array(probs, "probs", ndim=2)
    N, C = probs.shape
    if np.any(probs < 0) or np.any(np.abs(probs.sum(axis=1) - 1.0) > 1e-8):
        raise ValueError(
            "probs: expected non-negative rows summing to 1 (class "
            "probabilities), received rows outside the simplex"
        )
    y = np.asarray(y)
    if y.shape != (N,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"y: expected integer labels of shape ({N},), received shape "
            f"{y.shape} and dtype {y.dtype}"
        )
    if N and (y.min() < 0 or y.max() >= C):
        raise ValueError(f"y: expected labels in [0, {C}), received [{y.min()}, {y.max()}]")
    n_bins = check_int(n_bins, "n_bins", 1)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_conf = np.bincount(idx, conf, n_bins) / count
        bin_acc = np.bincount(idx, correct, n_bins) / count
    full = count > 0
    ece = float(np.sum(count[full] / N * np.abs(bin_acc[full] - bin_conf[full])))
    return Calibration(ece, edges, bin_conf, bin_acc, count)
