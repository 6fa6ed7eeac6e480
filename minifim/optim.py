"""Optimisers with explicit state, and the training loop :func:`train`.

Calling convention (stated once, kept by every optimiser here)
-------------------------------------------------------------
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
- Randomness (``ngd(curvature="mc")``) is drawn from ``numpy.random.default_rng([seed, step])``:
  a replay of ``update`` from a stored state gives the same result.
- Learning rates are a float or a schedule ``step -> float``.

Objective
---------
Every optimiser minimises, on a batch ``B`` of a training set of ``N = n_total`` samples,

    ``objective(theta) = 1/|B| sum_{n in B} -log p_theta(y_n | x_n) + penalty(theta) / N``

i.e. the mean negative log-likelihood of :func:`minifim.loss` plus the penalty divided by the
size of the whole training set: a penalty object lives on the scale of the SUMMED negative
log-likelihood (the EWC convention: ``N * objective = sum NLL + penalty`` on the full batch).
A penalty is any object with ``penalty(theta) -> float`` and ``grad(theta) -> (P,)``.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ._validation import (
    as_float_array,
    as_generator,
    check_int,
    check_nonnegative,
    check_positive,
)
from .objective import loss_and_gradient

__all__ = [
    "Optimizer",
    "Batch",
    "objective",
    "objective_and_gradient",
    "sgd",
    "momentum",
    "adam",
    "train",
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
    net : MLP
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


def _check_penalty(penalty) -> None:
    if penalty is None:
        return
    for name in ("penalty", "grad"):
        if not callable(getattr(penalty, name, None)):
            raise TypeError(f"penalty: expected an object with methods penalty(theta) -> float "
                            f"and grad(theta) -> (P,), received {type(penalty).__name__} "
                            f"without a callable .{name}")


def objective_and_gradient(batch: Batch, theta) -> tuple[float, np.ndarray]:
    """``(objective, gradient: (P,))`` on ``batch`` (see the module docstring).

    Notes
    -----
    ``objective = mean_B NLL + penalty(theta) / N``; ``gradient = mean_B grad NLL +
    penalty.grad(theta) / N``.
    """
    value, g = loss_and_gradient(batch.net, theta, batch.X, batch.y)
    if batch.penalty is not None:
        value = value + batch.scale * float(batch.penalty.penalty(theta))
        pg = as_float_array(batch.penalty.grad(theta), "penalty.grad(theta)",
                            shape=(batch.net.num_params,))
        g = g + batch.scale * pg
    return value, g


def objective(batch: Batch, theta) -> float:
    """The objective on ``batch`` (see the module docstring), a float."""
    return objective_and_gradient(batch, theta)[0]


# --- learning rates and state helpers --------------------------------------------------------
def _schedule(lr, name: str = "lr") -> Callable[[int], float]:
    """A float or a callable ``step -> float`` as a callable."""
    if callable(lr):
        return lr
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"{name}: expected a positive number or a schedule step -> float, "
                        f"received {type(lr).__name__} {lr!r}")
    value = check_positive(lr, name)
    return lambda step: value


def _init_params(theta) -> np.ndarray:
    theta = as_float_array(theta, "theta", ndim=1)
    return theta.copy()


def _get_params(state: State) -> np.ndarray:
    if not isinstance(state, dict) or "theta" not in state:
        raise TypeError(f"state: expected an optimiser state dict with a 'theta' entry, "
                        f"received {type(state).__name__}")
    return state["theta"]


def _check_grad(grad, state: State) -> np.ndarray:
    return as_float_array(grad, "grad", shape=state["theta"].shape)


# --- first-order baselines -----------------------------------------------------------------
def sgd(lr=0.1) -> Optimizer:
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

    def init(theta):
        return {"theta": _init_params(theta)}

    def update(step, grad, state, batch=None):
        g = _check_grad(grad, state)
        return {"theta": state["theta"] - lr(step) * g}

    return Optimizer(init, update, _get_params)


def momentum(lr=0.1, mass: float = 0.9) -> Optimizer:
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

    def init(theta):
        theta = _init_params(theta)
        return {"theta": theta, "velocity": np.zeros_like(theta)}

    def update(step, grad, state, batch=None):
        g = _check_grad(grad, state)
        v = mass * state["velocity"] + g
        return {"theta": state["theta"] - lr(step) * v, "velocity": v}

    return Optimizer(init, update, _get_params)


def adam(lr=1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
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

    def init(theta):
        theta = _init_params(theta)
        return {"theta": theta, "m": np.zeros_like(theta), "v": np.zeros_like(theta)}

    def update(step, grad, state, batch=None):
        g = _check_grad(grad, state)
        t = check_int(step, "step", 0) + 1
        m = b1 * state["m"] + (1 - b1) * g
        v = b2 * state["v"] + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        return {"theta": state["theta"] - lr(step) * m_hat / (np.sqrt(v_hat) + eps),
                "m": m, "v": v}

    return Optimizer(init, update, _get_params)


# --- the training loop -----------------------------------------------------------------------
def _batches(N: int, batch_size: int | None, rng):
    """Infinite iterator of index arrays: the full batch, or epochs of shuffled minibatches."""
    if batch_size is None:
        full = np.arange(N)
        while True:
            yield full
    per_epoch = N // batch_size
    while True:
        perm = rng.permutation(N)
        for k in range(per_epoch):
            yield perm[k * batch_size:(k + 1) * batch_size]


def _take(y, idx):
    return y[idx]


def train(net, theta, X, y, optimizer, steps: int, batch_size: int | None = None, rng=None,
          penalty=None, callback=None, progress: bool = True
          ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run ``steps`` updates of ``optimizer`` on the objective; return ``(theta, history)``.

    Parameters
    ----------
    net : MLP
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
        Show a tqdm progress bar (``False`` silences it).

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
    from tqdm.auto import tqdm

    if not isinstance(optimizer, tuple) or len(optimizer) != 3 or not all(
            callable(f) for f in optimizer):
        raise TypeError(f"optimizer: expected an (init, update, get_params) triple such as "
                        f"minifim.optim.sgd(0.1), received {type(optimizer).__name__}")
    init, update, get_params = optimizer
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    N = X.shape[0]
    y = net.check_targets(y, N)
    steps = check_int(steps, "steps", 0)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1)
        if batch_size > N:
            raise ValueError(f"batch_size: expected at most N = {N} samples, received "
                             f"{batch_size}")
        if rng is None:
            raise TypeError("rng: minibatches are shuffled; pass a numpy.random.Generator or "
                            "a seed with batch_size, received None")
        rng = as_generator(rng)
    _check_penalty(penalty)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable or None, received "
                        f"{type(callback).__name__}")

    state = init(theta)
    keys = ("loss", "grad_norm", "step_norm", "time", "batch_size")
    hist: dict[str, list] = {k: [] for k in keys}
    batches = _batches(N, batch_size, rng)
    bar = tqdm(range(steps), desc="train", disable=not progress, leave=False)
    for step in bar:
        idx = next(batches)
        batch = Batch(net, X[idx], _take(y, idx), penalty, N)
        start = time.perf_counter()
        old = get_params(state)
        with np.errstate(over="ignore", invalid="ignore"):  # checked below, with the step
            value, g = objective_and_gradient(batch, old)
            if not (np.isfinite(value) and np.all(np.isfinite(g))):
                raise FloatingPointError(f"train: the objective or its gradient is not finite "
                                         f"at step {step} (objective = {value!r}); lower the "
                                         "learning rate or raise the damping")
            state = update(step, g, state, batch)
        new = get_params(state)
        if not np.all(np.isfinite(new)):
            raise FloatingPointError(f"train: the update of step {step} gave non-finite "
                                     "parameters; lower the learning rate or raise the damping")
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
    history = {k: np.asarray(v, dtype=np.int64 if k == "batch_size" else np.float64)
               for k, v in hist.items()}
    return np.array(get_params(state), copy=True), history
