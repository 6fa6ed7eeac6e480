"""Optimisers with explicit state, and the training loop :func:`train`.

Calling convention (stated once, kept by every optimiser here)
--------------------------------------------------------------
In the style of JAX's ``example_libraries.optimizers``, every optimiser constructor returns an
:class:`Optimizer` triple ``(init, update, get_params)``::

    state = init(theta)                       # theta: (P,)
    state = update(step, grad, state, batch)  # step: int from 0; grad: (P,); batch: Batch
    theta = get_params(state)                 # (P,)

- ``grad`` is the gradient of the objective at ``get_params(state)`` on ``batch`` (see below),
  computed once by the caller (:func:`train` needs it anyway for its history).
- ``batch`` is a :class:`Batch` ``(net, X, y, penalty, n_total)``. First-order optimisers
  (:func:`sgd`, :func:`momentum`, :func:`adam`) ignore it; curvature optimisers
  (:func:`ngd`, :func:`gauss_newton`, :func:`kfac`) build their curvature from it at the current
  parameters. One signature for both kinds is the reason for this design: JAX's
  ``update(i, g, state)`` cannot give NGD or K-FAC the model and the data, and an
  ``update(step, state, batch)`` that recomputes the gradient inside would run a second
  backward pass per step and let the optimiser's gradient drift from the one the loop records.
- The state is a plain ``dict`` of ``str -> numpy.ndarray`` (scalars as 0-d arrays): no hidden
  mutation, ``update`` returns a new dict, and each state can be stored (``numpy.savez``) and
  compared step by step with another library's. ``state["theta"]`` holds the parameters.
- Invariant (tested): ``get_params(init(theta)) == theta`` bit for bit (a copy, not a view).
- Randomness (``ngd(fisher="mc")``, ``kfac(fisher="mc")``) is drawn from
  ``numpy.random.default_rng([rng, step])`` (``rng=`` an int seed, or a Generator giving it by
  one draw): a replay of ``update`` from a stored state gives the same result.
- Learning rates are a float or a schedule ``step -> float``.
- Curvature optimisers use the MEAN curvature of the NLL on the step's batch (the convention
  of :mod:`minifim.geometry.curvature`), so ``lr = 1`` with no damping is a full Gauss-Newton step.

Objective
---------
Every optimiser minimises, on a batch ``B`` of a training set of ``N = n_total`` samples,

    ``objective(theta) = 1/|B| sum_{n in B} -log p_theta(y_n | x_n) + penalty(theta) / N``

i.e. the mean negative log-likelihood of :func:`minifim.loss` plus the penalty divided by the
size of the whole training set: a penalty object lives on the scale of the SUMMED negative
log-likelihood (the EWC convention: ``N * objective = sum NLL + penalty`` on the full batch).
A penalty is any object with ``penalty(theta) -> float`` and ``grad(theta) -> (P,)`` (and
optionally ``penalty_and_grad(theta)``, both in one pass, which is then used instead).

How the penalty enters each optimiser: always through ``grad`` (the gradient of the whole
objective). A penalty that also has ``hessian_matvec(v) -> (P,)`` (its Hessian times ``v``,
e.g. :class:`minifim.EWC`) adds ``Hessian / N`` to the curvature of :func:`ngd` and
:func:`gauss_newton` (dense or conjugate-gradient route; not for the diagonal, block or K-FAC
curvatures) and to the quadratic model of :func:`kfac`'s damping adaptation; it is never
folded into K-FAC's Kronecker factors.
"""

from __future__ import annotations

import numbers
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize

from .._validation import (
    as_float_array,
    as_generator,
    check_int,
    check_net,
    check_nonnegative,
    check_positive,
)
from ..core.objective import loss_and_gradient
from ..geometry.kronecker import KFACFactors, KFACInverse
from ..geometry.kronecker import kfac as _kfac_factors
from ..geometry.operators import fisher_operator
from ..options import (
    Bias,
    Curvature,
    FisherKind,
    KFACDamping,
    SolveMethod,
    Structure,
    as_option,
    deprecated_keywords,
)
from ._legacy import split_curvature
from .ngd import FISHERS, natural_gradient

__all__ = [
    "Optimizer",
    "Batch",
    "objective",
    "objective_and_gradient",
    "sgd",
    "momentum",
    "adam",
    "ngd",
    "gauss_newton",
    "kfac",
    "train",
    "GaussianPrior",
    "fit_map",
]

State = dict[str, np.ndarray]


class Optimizer(NamedTuple):
    """An ``(init, update, get_params)`` triple (see the module docstring)."""

    init: Callable[[np.ndarray], State]
    update: Callable[[int, np.ndarray, State, Any], State]
    get_params: Callable[[State], np.ndarray]


class Batch(NamedTuple):
    """What a curvature optimiser needs besides the gradient.

    Attributes
    ----------
    net : Sequential (or MLP)
    X : ndarray, shape (B, D)
        The batch's inputs.
    y : targets of the batch (``(B,)`` labels or ``(B, C)``)
    penalty : object or None
        ``penalty(theta) -> float`` and ``grad(theta) -> (P,)``, on the summed-NLL scale.
    n_total : int
        ``N``, the size of the whole training set; the penalty enters the objective as
        ``penalty / N``.
    """

    net: Any
    X: np.ndarray
    y: Any
    penalty: Any = None
    n_total: int | None = None

    @property
    def scale(self) -> float:
        """``1 / N``, the factor of the penalty in the objective."""
        n = self.X.shape[0] if self.n_total is None else self.n_total
        return 1.0 / n


def _check_penalty(penalty: Any) -> None:
    if penalty is None:
        return
    for name in ("penalty", "grad"):
        if not callable(getattr(penalty, name, None)):
            raise TypeError(
                f"penalty: expected an object with methods penalty(theta) -> float "
                f"and grad(theta) -> (P,), received {type(penalty).__name__} "
                f"without a callable .{name}"
            )


def objective_and_gradient(batch: Batch, theta: ArrayLike) -> tuple[float, np.ndarray]:
    """``(objective, gradient: (P,))`` on ``batch`` (see the module docstring).

    Notes
    -----
    ``objective = mean_B NLL + penalty(theta) / N``; ``gradient = mean_B grad NLL +
    penalty.grad(theta) / N``. A penalty with ``penalty_and_grad(theta)`` (such as
    :class:`minifim.EWC`) is evaluated in one pass, value and gradient together.
    """
    value, g = loss_and_gradient(batch.net, theta, batch.X, batch.y)
    pen = batch.penalty
    if pen is not None:
        both = getattr(pen, "penalty_and_grad", None)
        if callable(both):  # one pass (e.g. minifim.EWC): the products Lambda d once
            pv, pg = both(theta)
        else:
            pv, pg = pen.penalty(theta), pen.grad(theta)
        value = value + batch.scale * float(pv)
        pg = as_float_array(pg, "penalty.grad(theta)", shape=(batch.net.num_params,))
        g = g + batch.scale * pg
    return value, g


def objective(batch: Batch, theta: ArrayLike) -> float:
    """The objective on ``batch`` (see the module docstring), a float."""
    return objective_and_gradient(batch, theta)[0]


# --- learning rates and state helpers --------------------------------------------------------
def _schedule(lr: Any, name: str = "lr") -> Callable[[int], float]:
    """A float or a callable ``step -> float`` as a callable."""
    if callable(lr):
        return lr
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(
            f"{name}: expected a positive number or a schedule step -> float, "
            f"received {type(lr).__name__} {lr!r}"
        )
    value = check_positive(lr, name)
    return lambda step: value


def _init_params(theta: ArrayLike) -> np.ndarray:
    theta = as_float_array(theta, "theta", ndim=1)
    return theta.copy()


def _get_params(state: State) -> np.ndarray:
    if not isinstance(state, dict) or "theta" not in state:
        raise TypeError(
            f"state: expected an optimiser state dict with a 'theta' entry, "
            f"received {type(state).__name__}"
        )
    return state["theta"]


def _check_grad(grad: ArrayLike, state: State) -> np.ndarray:
    return as_float_array(grad, "grad", shape=state["theta"].shape)


# --- first-order baselines -----------------------------------------------------------------
def sgd(lr: Any = 0.1) -> Optimizer:
    """Plain gradient descent ``theta <- theta - lr * g``.

    Parameters
    ----------
    lr : float or callable ``step -> float``

    Returns
    -------
    Optimizer
        State ``{"theta": (P,)}``.
    """
    lr = _schedule(lr)

    def init(theta: ArrayLike) -> State:
        return {"theta": _init_params(theta)}

    def update(step: int, grad: ArrayLike, state: State, batch: Any = None) -> State:
        g = _check_grad(grad, state)
        return {"theta": state["theta"] - lr(step) * g}

    return Optimizer(init, update, _get_params)


def momentum(lr: Any = 0.1, mass: float = 0.9) -> Optimizer:
    """Heavy-ball momentum (JAX's convention): ``v <- mass v + g``, ``theta <- theta - lr v``.

    Returns
    -------
    Optimizer
        State ``{"theta": (P,), "velocity": (P,)}`` with ``velocity = 0`` at ``init``.
    """
    lr = _schedule(lr)
    mass = check_nonnegative(mass, "mass")
    if mass >= 1:
        raise ValueError(f"mass: expected a number in [0, 1), received {mass!r}")

    def init(theta: ArrayLike) -> State:
        theta = _init_params(theta)
        return {"theta": theta, "velocity": np.zeros_like(theta)}

    def update(step: int, grad: ArrayLike, state: State, batch: Any = None) -> State:
        g = _check_grad(grad, state)
        v = mass * state["velocity"] + g
        return {"theta": state["theta"] - lr(step) * v, "velocity": v}

    return Optimizer(init, update, _get_params)


def adam(lr: Any = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma & Ba 2015) with bias correction.

    Notes
    -----
    With ``t = step + 1``: ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``,
    ``theta <- theta - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``.

    Returns
    -------
    Optimizer
        State ``{"theta", "m", "v"}``, each ``(P,)``, moments zero at ``init``.
    """
    lr = _schedule(lr)
    for value, name in ((b1, "b1"), (b2, "b2")):
        if check_nonnegative(value, name) >= 1:
            raise ValueError(f"{name}: expected a number in [0, 1), received {value!r}")
    eps = check_positive(eps, "eps")

    def init(theta: ArrayLike) -> State:
        theta = _init_params(theta)
        return {"theta": theta, "m": np.zeros_like(theta), "v": np.zeros_like(theta)}

    def update(step: int, grad: ArrayLike, state: State, batch: Any = None) -> State:
        g = _check_grad(grad, state)
        t = check_int(step, "step", 0) + 1
        m = b1 * state["m"] + (1 - b1) * g
        v = b2 * state["v"] + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        return {"theta": state["theta"] - lr(step) * m_hat / (np.sqrt(v_hat) + eps), "m": m, "v": v}

    return Optimizer(init, update, _get_params)


# --- curvature optimisers --------------------------------------------------------------------
def _penalty_hvp(batch: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """``v -> penalty Hessian v / N`` when the penalty exposes ``hessian_matvec``, else None."""
    pen = getattr(batch, "penalty", None)
    fn = getattr(pen, "hessian_matvec", None)
    if not callable(fn):
        return None
    scale = batch.scale
    return lambda v: scale * np.asarray(fn(v), dtype=np.float64)


def _base_seed(rng: Any) -> int:
    """The base seed of the per-step streams ``default_rng([seed, step])``: an int ``>= 0``,
    or one draw from a Generator."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(2**63))
    if isinstance(rng, bool) or not isinstance(rng, numbers.Integral):
        raise TypeError(
            f"rng: expected an int seed >= 0 or a numpy.random.Generator (the "
            f"per-step streams are default_rng([seed, step])), received "
            f"{type(rng).__name__} {rng!r}"
        )
    return check_int(rng, "rng", 0)


def _check_batch(batch: Any, who: str) -> Batch:
    if not isinstance(batch, Batch):
        raise TypeError(
            f"batch: {who} builds its curvature from the batch; expected a "
            f"minifim.optim.Batch(net, X, y, penalty, n_total), received "
            f"{type(batch).__name__}"
        )
    return batch


@split_curvature(position=2)
@deprecated_keywords(kfac_bias="bias", kfac_solve="damping_type", seed="rng")
def ngd(
    lr: Any = 1.0,
    damping: float = 1e-3,
    fisher: str = "true",
    method: str = "auto",
    *,
    structure: str = "full",
    n_samples: int = 1,
    rng: Any = 0,
    bias: str = "folded",
    damping_type: str = "eigen",
    tol: float = 1e-10,
    penalty_curvature: bool = True,
    max_kl: float | None = None,
) -> Optimizer:
    """Natural gradient descent ``theta <- theta - eta (M + damping I)^{-1} grad``.

    Parameters
    ----------
    lr : float or callable ``step -> float``
    damping : float >= 0
    fisher, method, structure, n_samples, bias, damping_type, tol
        As in :func:`minifim.natural_gradient`; ``M`` is the MEAN curvature of the NLL on the
        step's batch at the current parameters.
    rng : int or numpy.random.Generator
        Monte-Carlo labels (``fisher="mc"``) of step ``t`` come from
        ``default_rng([rng, t])`` (a replayable stream per step); a Generator gives the base
        seed by one draw at construction.
    penalty_curvature : bool
        When the batch's penalty has ``hessian_matvec(v)`` (e.g. :class:`minifim.EWC`), add
        its Hessian divided by ``N`` to ``M`` (routes ``"dense"``/``"cg"``; ``"auto"`` picks
        one of them). Ignored for ``structure`` ``"diag"``, ``"block"`` and ``"kfac"``.
    max_kl : float or None
        KL clipping (a trust region on the model's predictive distribution): the step size is
        ``eta = min(lr, sqrt(2 max_kl / (d^T M d)))``, so that the second-order KL estimate
        ``1/2 eta^2 d^T M d`` of the step is at most ``max_kl``. ``d^T M d = g^T d - damping
        |d|^2`` (exact for the solves here; for ``damping_type="factored"`` it is the factored
        matrix's). Like the undamped direction, ``eta`` is invariant to reparameterisation.
        ``None`` (default): ``eta = lr``.

    Returns
    -------
    Optimizer
        State ``{"theta": (P,), "direction": (P,), "step_size": ()}``: the last ``d`` and
        ``eta`` (zeros at ``init``); ``theta_new = theta - step_size * direction``.

    Notes
    -----
    ``grad`` (from the caller) is the gradient of the whole objective, penalty included: the
    penalty always enters the direction through the gradient, and through the curvature only
    as described under ``penalty_curvature``.

    Deprecated (until minifim 0.3.0, with a ``DeprecationWarning``): ``curvature=`` (now
    ``fisher=`` and ``structure=``), ``kfac_bias=`` (``bias=``), ``kfac_solve=``
    (``damping_type=``), ``seed=`` (``rng=``).
    """
    lr = _schedule(lr)
    damping = check_nonnegative(damping, "damping")
    fisher = as_option(fisher, Curvature, "fisher", [Curvature(k) for k in FISHERS]).value
    structure = as_option(structure, Structure, "structure").value
    method = as_option(method, SolveMethod, "method").value
    bias = as_option(bias, Bias, "bias").value
    damping_type = as_option(damping_type, KFACDamping, "damping_type").value
    n_samples = check_int(n_samples, "n_samples", 1)
    seed = _base_seed(rng)
    structured = structure != "full"
    max_kl = None if max_kl is None else check_positive(max_kl, "max_kl")

    def init(theta: ArrayLike) -> State:
        theta = _init_params(theta)
        return {"theta": theta, "direction": np.zeros_like(theta), "step_size": np.asarray(0.0)}

    def update(step: int, grad: ArrayLike, state: State, batch: Any) -> State:
        batch = _check_batch(batch, "ngd")
        g = _check_grad(grad, state)
        extra = None if (structured or not penalty_curvature) else _penalty_hvp(batch)
        step_rng = (
            np.random.default_rng([seed, check_int(step, "step", 0)]) if fisher == "mc" else None
        )
        d = natural_gradient(
            batch.net,
            state["theta"],
            batch.X,
            batch.y,
            damping,
            fisher,
            method,
            structure=structure,
            n_samples=n_samples,
            rng=step_rng,
            grad=g,
            bias=bias,
            damping_type=damping_type,
            tol=tol,
            extra_curvature=extra,
        )
        if not np.all(np.isfinite(d)):
            raise FloatingPointError(
                f"ngd: the direction of step {step} is not finite "
                f"(damping = {damping!r}, fisher={fisher!r}, "
                f"structure={structure!r}); increase damping"
            )
        eta = lr(step)
        if max_kl is not None:
            quad = float(g @ d - damping * (d @ d))  # d^T M d
            if quad > 0:
                eta = min(eta, float(np.sqrt(2.0 * max_kl / quad)))
        return {
            "theta": state["theta"] - eta * d,
            "direction": d,
            "step_size": np.asarray(eta, dtype=np.float64),
        }

    return Optimizer(init, update, _get_params)


def gauss_newton(
    lr: Any = 1.0,
    damping: float = 0.0,
    method: str = "auto",
    *,
    tol: float = 1e-10,
    penalty_curvature: bool = True,
) -> Optimizer:
    """(Damped) Gauss-Newton: ``theta <- theta - lr (G + damping I)^{-1} grad``.

    ``G`` is the generalised Gauss-Newton matrix of the mean NLL on the batch (equal to the
    true Fisher for the canonical links here). Undamped by default: a singular ``G`` (e.g.
    ``N C < P``) raises ``ValueError`` naming the damping. With ``lr = 1`` and no damping,
    one step solves a linear least-squares problem exactly. Same state and penalty handling
    as :func:`ngd` (``fisher="ggn"``).
    """
    return ngd(lr, damping, "ggn", method, tol=tol, penalty_curvature=penalty_curvature)


_DAMPING_RANGE = (1e-12, 1e12)


def _kfac_checked(compute: Callable[[], Any]) -> Any:
    """``compute()``, with the optimiser's advice appended to a refused damped system."""
    try:
        return compute()
    except ValueError as err:
        raise ValueError(f"{err} (optim.kfac: raise damping, or adapt_damping=True)") from None


@deprecated_keywords(solve="damping_type", seed="rng")
def kfac(
    net: Any,
    lr: Any = 0.1,
    damping: float = 1e-3,
    decay: float = 0.95,
    inverse_period: int = 20,
    *,
    fisher: str = "true",
    bias: str = "folded",
    damping_type: str = "factored",
    n_samples: int = 1,
    rng: Any = 0,
    adapt_damping: bool = False,
    lm_period: int = 5,
    lm_omega: float | None = None,
) -> Optimizer:
    """K-FAC (Martens & Grosse 2015) with explicit state.

    Parameters
    ----------
    net : Sequential (or MLP)
        The model; it sizes the Kronecker factors in the state (so that ``init`` returns every
        entry with its final shape, and a run can be stored step by step).
    lr : float or callable ``step -> float``
        Step size (fixed or scheduled; Martens & Grosse's automatic rescaling and momentum
        are not implemented).
    damping : float > 0
        Initial Tikhonov damping ``lambda``.
    decay : float in [0, 1)
        Running averages ``A <- eps_t A + (1 - eps_t) A_batch`` (same for ``G``) with
        ``eps_t = min(1 - 1/(t + 1), decay)`` at step ``t = 0, 1, ...``: the first step takes
        the batch factors, then a running mean until ``1 - 1/(t + 1)`` reaches ``decay``
        (Martens & Grosse, sec. 5, ``decay = 0.95``); ``decay = 0`` uses the batch factors.
    inverse_period : int >= 1
        The preconditioner (inverses or eigendecompositions of the averaged factors) is
        recomputed at steps ``t`` with ``t % inverse_period == 0`` (``T_3`` of the paper) and
        kept in the state in between.
    fisher : {"true", "empirical", "mc"}
        Factors of the exact Fisher (expectation over the model's labels), the empirical one,
        or the Monte-Carlo one with ``n_samples`` labels from ``default_rng([rng, t])``
        (the paper samples one label per input).
    bias : {"folded", "separate"}
        Bias in homogeneous coordinates of ``A`` (the paper) or a separate ``G`` block.
    damping_type : {"factored", "eigen"}
        ``"factored"`` (the paper): ``(G + sqrt(lambda)/pi I)^{-1} V (A + pi sqrt(lambda)
        I)^{-1}`` with ``pi = sqrt((tr A / dim A) / (tr G / dim G))``, a separate bias block
        solved with ``G + lambda I``; the inverses use the damping of the step they were
        computed at. ``"eigen"``: the exact ``(G kron A + lambda I)^{-1}`` through stored
        eigendecompositions, with the current damping. Both are
        :meth:`minifim.KFACFactors.inverse` of the averaged factors, stored in the state and
        applied by :meth:`minifim.geometry.kronecker.KFACInverse.apply`. (The default differs
        from :func:`minifim.natural_gradient`'s ``"eigen"``: ``"factored"`` is the paper's.)
    rng : int or numpy.random.Generator
        Base seed of the per-step Monte-Carlo streams ``default_rng([rng, t])``
        (``fisher="mc"``); a Generator gives it by one draw at construction.
    adapt_damping : bool
        Levenberg-Marquardt adaptation (the paper's sec. 6.5): at steps with
        ``t % lm_period == 0``, the reduction ratio ``rho = (h(theta + delta) - h(theta)) /
        (grad^T delta + 1/2 delta^T F delta)`` of the step ``delta`` on the step's batch, with
        ``h`` the objective and ``F`` the exact true Fisher of the batch (plus the penalty's
        Hessian / N when it has ``hessian_matvec``); ``rho > 3/4``: ``lambda <- omega lambda``;
        ``rho < 1/4``: ``lambda <- lambda / omega``; ``omega = (19/20)^lm_period`` unless
        ``lm_omega`` is given. The new damping applies from the next step (with
        ``damping_type="factored"``: from the next recomputation of the inverses). Clipped to
        ``[1e-12, 1e12]``.

    Returns
    -------
    Optimizer
        State (every entry a float64 array with a fixed shape): ``"theta": (P,)``,
        ``"direction": (P,)`` (last preconditioned gradient; the step is ``-lr direction``),
        ``"damping": ()`` (current lambda), ``"rho": ()`` (last reduction ratio, NaN when not
        computed), per layer ``l``: ``"A{l}"``, ``"G{l}"`` (running averages, zero at
        ``init``) and the preconditioner: ``"Ainv{l}"``, ``"Ginv{l}"``, ``"pi{l}"`` (and
        ``"Gbinv{l}"`` with a separate bias) for ``"factored"``; ``"QA{l}"``, ``"eA{l}"``,
        ``"QG{l}"``, ``"eG{l}"`` for ``"eigen"``.

    Notes
    -----
    Factors follow :mod:`minifim.geometry.kronecker` (``A`` mean of ``a~ a~^T``, ``G`` the mean
    over samples of the seed outer products, i.e. the mean-NLL curvature). The penalty enters the
    direction through ``grad`` only; its curvature is not added to the factors.

    Deprecated (until minifim 0.3.0, with a ``DeprecationWarning``): ``solve=`` (now
    ``damping_type=``), ``seed=`` (now ``rng=``).
    """
    lr = _schedule(lr)
    damping0 = check_positive(damping, "damping")
    decay = check_nonnegative(decay, "decay")
    if decay >= 1:
        raise ValueError(f"decay: expected a number in [0, 1), received {decay!r}")
    inverse_period = check_int(inverse_period, "inverse_period", 1)
    fisher = as_option(
        fisher, FisherKind, "fisher", (FisherKind.TRUE, FisherKind.EMPIRICAL, FisherKind.MC)
    ).value
    bias = as_option(bias, Bias, "bias").value
    solve = as_option(damping_type, KFACDamping, "damping_type").value
    n_samples = check_int(n_samples, "n_samples", 1)
    seed = _base_seed(rng)
    lm_period = check_int(lm_period, "lm_period", 1)
    omega = (19 / 20) ** lm_period if lm_omega is None else check_positive(lm_omega, "lm_omega")
    if not omega < 1:
        raise ValueError(f"lm_omega: expected a number in (0, 1), received {omega!r}")
    if not hasattr(net, "shapes") or not hasattr(net, "layer_slices"):
        raise TypeError(f"net: expected a minifim.MLP, received {type(net).__name__}")
    shapes = tuple(net.shapes)
    # layers without a bias (bias=False in a Sequential) have no homogeneous coordinate and no
    # separate bias block
    has_bias = tuple(bool(layer.bias) for layer in net.parametric_layers)
    extras = [1 if bias == "folded" and hb else 0 for hb in has_bias]
    layer_keys = [
        ("QA", "eA", "QG", "eG")
        if solve == "eigen"
        else ("Ainv", "Ginv", "pi") + (("Gbinv",) if bias == "separate" and hb else ())
        for hb in has_bias
    ]

    def init(theta: ArrayLike) -> State:
        theta = net.check_theta(_init_params(theta))
        state = {
            "theta": theta,
            "direction": np.zeros_like(theta),
            "damping": np.asarray(damping0),
            "rho": np.asarray(np.nan),
        }
        for l, (o, i) in enumerate(net.shapes):
            ia = i + extras[l]
            state[f"A{l}"] = np.zeros((ia, ia))
            state[f"G{l}"] = np.zeros((o, o))
            if solve == "eigen":
                state.update(
                    {
                        f"QA{l}": np.eye(ia),
                        f"eA{l}": np.zeros(ia),
                        f"QG{l}": np.eye(o),
                        f"eG{l}": np.zeros(o),
                    }
                )
            else:
                state.update(
                    {
                        f"Ainv{l}": np.zeros((ia, ia)),
                        f"Ginv{l}": np.zeros((o, o)),
                        f"pi{l}": np.asarray(1.0),
                    }
                )
                if "Gbinv" in layer_keys[l]:
                    state[f"Gbinv{l}"] = np.zeros((o, o))
        return state

    def update(step: int, grad: ArrayLike, state: State, batch: Any) -> State:
        batch = _check_batch(batch, "kfac")
        step = check_int(step, "step", 0)
        g = _check_grad(grad, state)
        theta = state["theta"]
        lam = float(state["damping"])
        rng = np.random.default_rng([seed, step]) if fisher == "mc" else None
        y_f = batch.y if fisher == "empirical" else None
        fac = _kfac_factors(
            batch.net, theta, batch.X, y_f, fisher, bias=bias, n_samples=n_samples, rng=rng
        )
        eps = min(1.0 - 1.0 / (step + 1), decay)
        new = dict(state)
        for l in range(net.num_layers):
            new[f"A{l}"] = eps * state[f"A{l}"] + (1 - eps) * fac.A[l]
            new[f"G{l}"] = eps * state[f"G{l}"] + (1 - eps) * fac.G[l]
        L = range(net.num_layers)
        if step % inverse_period == 0:
            averaged = KFACFactors(
                tuple(new[f"A{l}"] for l in L),
                tuple(new[f"G{l}"] for l in L),
                bias,
                shapes,
                has_bias=has_bias,
            )
            inverse = _kfac_checked(lambda: averaged.inverse(lam, solve))
            for l, layer in enumerate(inverse.layers):
                new.update({f"{k}{l}": v for k, v in layer.items()})
        # the stored preconditioner ("factored": made with the damping of its step)
        stored = KFACInverse(
            solve,
            bias,
            shapes,
            tuple({k: new[f"{k}{l}"] for k in layer_keys[l]} for l in L),
            lam,
            has_bias,
        )
        d = _kfac_checked(lambda: stored.apply(g))
        delta = -lr(step) * d
        new["theta"] = theta + delta
        new["direction"] = d
        new["rho"] = np.asarray(np.nan)
        if adapt_damping and step % lm_period == 0:
            h0 = objective(batch, theta)
            h1 = objective(batch, new["theta"])
            Fd = fisher_operator(batch.net, theta, batch.X) @ delta
            hvp = _penalty_hvp(batch)
            if hvp is not None:
                Fd = Fd + hvp(delta)
            model = float(g @ delta + 0.5 * delta @ Fd)
            rho = (h1 - h0) / model if model < 0 else -np.inf
            if rho > 0.75:
                lam *= omega
            elif rho < 0.25:
                lam /= omega
            new["rho"] = np.asarray(rho)
            new["damping"] = np.asarray(float(np.clip(lam, *_DAMPING_RANGE)))
        return new

    return Optimizer(init, update, _get_params)


# --- the training loop -----------------------------------------------------------------------
def _batches(N: int, batch_size: int | None, rng: Any) -> Iterator[np.ndarray]:
    """Infinite iterator of index arrays: the full batch, or epochs of shuffled minibatches."""
    if batch_size is None:
        full = np.arange(N)
        while True:
            yield full
    per_epoch = N // batch_size
    while True:
        perm = rng.permutation(N)
        for k in range(per_epoch):
            yield perm[k * batch_size : (k + 1) * batch_size]


def _take(y: Any, idx: np.ndarray) -> Any:
    return y[idx]


def train(
    net: Any,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    optimizer: Any,
    steps: int,
    batch_size: int | None = None,
    rng: Any = None,
    penalty: Any = None,
    callback: Any = None,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run ``steps`` updates of ``optimizer`` on the objective; return ``(theta, history)``.

    Parameters
    ----------
    net : Sequential (or MLP)
    theta : ndarray, shape (P,)
        Starting parameters (not modified).
    X : ndarray, shape (N, D)
    y : targets of the likelihood (``(N,)`` labels or ``(N, C)``)
    optimizer : Optimizer
        An ``(init, update, get_params)`` triple from this module.
    steps : int
        Number of updates.
    batch_size : int or None
        ``None``: full batch every step (deterministic). Otherwise minibatches of this size
        from a fresh permutation of the samples each epoch (``N // batch_size`` batches per
        epoch; the last ``N % batch_size`` samples of a permutation are skipped); needs ``rng``.
    rng : numpy.random.Generator or int
        Minibatch shuffling (required with ``batch_size``).
    penalty : object or None
        ``penalty(theta) -> float`` and ``grad(theta) -> (P,)`` on the scale of the SUMMED
        negative log-likelihood (e.g. :class:`minifim.EWC`).
    callback : callable or None
        ``callback(step, theta, state) -> bool | None`` after each update with the new
        parameters; returning ``True`` stops training early.
    progress : bool
        Show a tqdm progress bar when stderr is a terminal (``False`` silences it).

    Returns
    -------
    theta : ndarray, shape (P,)
        Final parameters.
    history : dict of ndarray, each of shape (steps_taken,)
        ``"loss"``: the objective on the step's batch at the parameters BEFORE the update
        (the value whose gradient the update used); ``"grad_norm"``: its gradient's Euclidean
        norm; ``"step_norm"``: ``|theta_new - theta_old|``; ``"time"``: wall-clock seconds of
        the step (gradient + update); ``"batch_size"``: samples in the step's batch.

    Notes
    -----
    The objective on a batch ``B`` is ``1/|B| sum_{n in B} -log p(y_n | x_n) + penalty(theta)
    / N`` with ``N = len(X)`` the size of the whole training set, so that on the full batch
    ``N * objective = sum_n -log p(y_n | x_n) + penalty(theta)``. A non-finite objective or
    gradient raises ``FloatingPointError`` naming the step (lower the learning rate or raise
    the damping).

    Examples
    --------
    >>> import numpy as np, minifim
    >>> net = minifim.MLP([2, 1], activation="identity", likelihood="gaussian")
    >>> X = np.random.default_rng(0).standard_normal((20, 2)); y = X @ [[1.0], [-2.0]]
    >>> theta, hist = minifim.train(net, net.init(0), X, y, minifim.optim.sgd(0.5), 200,
    ...                             progress=False)
    >>> bool(np.allclose(theta, [1.0, -2.0, 0.0], atol=1e-8))  # least squares: W0, b0
    True
    """
    check_net(net)
    from tqdm.auto import tqdm

    if (
        not isinstance(optimizer, tuple)
        or len(optimizer) != 3
        or not all(callable(f) for f in optimizer)
    ):
        raise TypeError(
            f"optimizer: expected an (init, update, get_params) triple such as "
            f"minifim.optim.sgd(0.1), received {type(optimizer).__name__}"
        )
    init, update, get_params = optimizer
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    N = X.shape[0]
    y = net.check_targets(y, N)
    steps = check_int(steps, "steps", 0)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1)
        if batch_size > N:
            raise ValueError(f"batch_size: expected at most N = {N} samples, received {batch_size}")
        if rng is None:
            raise TypeError(
                "rng: minibatches are shuffled; pass a numpy.random.Generator or "
                "a seed with batch_size, received None"
            )
        rng = as_generator(rng)
    _check_penalty(penalty)
    if callback is not None and not callable(callback):
        raise TypeError(
            f"callback: expected a callable or None, received {type(callback).__name__}"
        )

    state = init(theta)
    keys = ("loss", "grad_norm", "step_norm", "time", "batch_size")
    hist: dict[str, list] = {k: [] for k in keys}
    batches = _batches(N, batch_size, rng)
    bar = tqdm(range(steps), desc="train", disable=None if progress else True, leave=False)
    for step in bar:
        idx = next(batches)
        batch = Batch(net, X[idx], _take(y, idx), penalty, N)
        start = time.perf_counter()
        old = get_params(state)
        with np.errstate(over="ignore", invalid="ignore"):  # checked below, with the step
            value, g = objective_and_gradient(batch, old)
            if not (np.isfinite(value) and np.all(np.isfinite(g))):
                raise FloatingPointError(
                    f"train: the objective or its gradient is not finite "
                    f"at step {step} (objective = {value!r}); lower the "
                    "learning rate or raise the damping"
                )
            state = update(step, g, state, batch)
        new = get_params(state)
        if not np.all(np.isfinite(new)):
            raise FloatingPointError(
                f"train: the update of step {step} gave non-finite "
                "parameters; lower the learning rate or raise the damping"
            )
        elapsed = time.perf_counter() - start
        hist["loss"].append(value)
        hist["grad_norm"].append(float(np.linalg.norm(g)))
        hist["step_norm"].append(float(np.linalg.norm(new - old)))
        hist["time"].append(elapsed)
        hist["batch_size"].append(len(idx))
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{value:.4g}")
        if callback is not None and callback(step, new, state):
            break
    bar.close()
    history = {
        k: np.asarray(v, dtype=np.int64 if k == "batch_size" else np.float64)
        for k, v in hist.items()
    }
    return np.array(get_params(state), copy=True), history


# --- a Gaussian prior and full-batch MAP estimation ----------------------------------------------
class GaussianPrior:
    """The penalty ``alpha/2 |theta - mean|^2`` (weight decay), on the summed-NLL scale.

    ``-log N(theta; mean, alpha^{-1} I)`` up to a constant: with :func:`train` the objective is
    ``mean NLL + alpha/(2N) |theta - mean|^2``. ``hessian_matvec`` lets :func:`ngd` and
    :func:`gauss_newton` add its curvature ``alpha I / N``.

    Parameters
    ----------
    precision : float >= 0
        ``alpha``.
    mean : ndarray, shape (P,), optional
        Centre of the prior (default zero).
    """

    def __init__(self, precision: float, mean: ArrayLike | None = None):
        self.precision = check_nonnegative(precision, "precision")
        self.mean = None if mean is None else as_float_array(mean, "mean", ndim=1)

    def _delta(self, theta: ArrayLike) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        if self.mean is None:
            return theta
        if self.mean.shape != theta.shape:
            raise ValueError(
                f"theta: expected shape {self.mean.shape} to match the prior mean, "
                f"received shape {theta.shape}"
            )
        return theta - self.mean

    def penalty(self, theta: ArrayLike) -> float:
        """``alpha/2 |theta - mean|^2``."""
        d = self._delta(theta)
        return 0.5 * self.precision * float(d @ d)

    def grad(self, theta: ArrayLike) -> np.ndarray:
        """``alpha (theta - mean)``, shape ``(P,)``."""
        return self.precision * self._delta(theta)

    def hessian_matvec(self, v: ArrayLike) -> np.ndarray:
        """``alpha v``, shape ``(P,)``."""
        return self.precision * np.asarray(v, dtype=np.float64)

    def __repr__(self) -> str:
        return f"GaussianPrior(precision={self.precision!r})"


def fit_map(
    net: Any,
    theta0: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    prior_precision: float = 1.0,
    *,
    gtol: float = 1e-8,
    max_iter: int = 10000,
) -> tuple[np.ndarray, dict]:
    """MAP estimate by deterministic full-batch L-BFGS (scipy), for small problems.

    Minimises the objective of :func:`train` on the full batch with a
    :class:`GaussianPrior` penalty: ``1/N [sum_n -log p_theta(y_n | x_n) + alpha/2 |theta|^2]``
    (``alpha = prior_precision``; ``alpha = 0`` gives the maximum-likelihood estimate), with
    the exact gradient. Curvature-based methods (Laplace, OBD/OBS, Fisher merging) assume the
    gradient vanishes; use this to finish a :func:`train` run at a true minimum.

    Parameters
    ----------
    net : Sequential (or MLP)
    theta0 : ndarray, shape (P,)
        Starting point (not modified).
    X : ndarray, shape (N, D)
    y : targets of the likelihood
    prior_precision : float >= 0
    gtol : float > 0
        Stop when the largest gradient entry of the per-sample objective is below ``gtol``.
    max_iter : int

    Returns
    -------
    theta : ndarray, shape (P,)
    info : dict
        ``"objective"`` (the per-sample negative log joint, up to the prior's constant),
        ``"grad_norm"`` (Euclidean norm of its gradient), ``"iterations"``, ``"success"``,
        ``"message"``. A ``RuntimeWarning`` is issued when ``gtol`` is not reached.
    """
    check_net(net)
    theta0 = net.check_theta(theta0, "theta0")
    X = net.check_inputs(X)
    y = net.check_targets(y, X.shape[0])
    prior = GaussianPrior(check_nonnegative(prior_precision, "prior_precision"))
    gtol = check_positive(gtol, "gtol")
    max_iter = check_int(max_iter, "max_iter", 1)
    batch = Batch(net, X, y, prior, X.shape[0])

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        return objective_and_gradient(batch, theta)

    res = minimize(
        fun,
        theta0.copy(),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": gtol, "ftol": 0.0, "maxcor": 30},
    )
    value, g = fun(res.x)
    info = {
        "objective": float(value),
        "grad_norm": float(np.linalg.norm(g)),
        "iterations": int(res.nit),
        "success": bool(np.max(np.abs(g)) <= gtol),
        "message": str(res.message),
    }
    if not info["success"]:
        warnings.warn(
            f"fit_map: the gradient's largest entry {np.max(np.abs(g)):.3g} is above "
            f"gtol = {gtol:.3g} after {res.nit} iterations ({res.message})",
            RuntimeWarning,
            stacklevel=2,
        )
    return res.x, info
