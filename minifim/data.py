"""Data sets for tests and experiments; every random step takes a Generator or a seed.

Real data: scikit-learn's bundled ``load_digits`` (8 x 8 images, 10 classes, 1,797 samples;
shipped inside the package, no download), available with the ``experiments`` extra.
Synthetic data: linear-Gaussian regression, two moons, and data drawn from a teacher network.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from ._validation import (
    as_float_array,
    as_generator,
    check_int,
    check_net,
    check_nonnegative,
    describe,
)

if TYPE_CHECKING:
    from .core.model import Sequential

__all__ = [
    "load_digits",
    "train_test_split",
    "permuted_tasks",
    "split_tasks",
    "two_moons",
    "linear_regression_data",
    "teacher_data",
    "one_hot",
]


def load_digits(scale: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: ``X: (1797, 64)`` float64 (in [0, 1] when ``scale``),
    ``y: (1797,)`` int64 labels in [0, 10)."""
    if not isinstance(scale, (bool, np.bool_)):
        raise TypeError(f"scale: expected a bool, received {type(scale).__name__} {scale!r}")
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as err:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "load_digits needs scikit-learn: pip install 'minifim[experiments]'"
        ) from err
    data = _load()
    X = data.data.astype(np.float64)
    return (X / 16.0 if scale else X), data.target.astype(np.int64)


def _numeric(x: Any, name: str) -> np.ndarray:
    """``x`` as an array of real numbers, dtype kept (a split or an index computes nothing)."""
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{name}: expected a real numeric array, received {type(x).__name__}")
    arr = np.asarray(x)
    if (
        arr.dtype == object
        or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_)
        or np.iscomplexobj(arr)
    ):
        raise TypeError(f"{name}: expected a real numeric array, received {describe(arr)}")
    return arr


def train_test_split(
    X: ArrayLike, y: ArrayLike, test_fraction: float = 0.25, rng: np.random.Generator | int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle and split: ``(X_train, y_train, X_test, y_test)``.

    Parameters
    ----------
    X : array, shape (N, ...), N >= 2
        Any real array whose first axis indexes the samples (dtype kept).
    y : array, shape (N, ...)
    test_fraction : float in (0, 1)
        ``round(test_fraction N)`` samples go to the test set; both parts must be non-empty.
    rng : numpy.random.Generator or int
    """
    rng = as_generator(rng)
    X = _numeric(X, "X")
    y = _numeric(y, "y")
    if X.ndim == 0 or X.shape[0] < 2:
        raise ValueError(
            f"X: expected an array of N >= 2 samples (first axis), received shape {X.shape}"
        )
    if y.ndim == 0 or y.shape[0] != X.shape[0]:
        got = "a scalar" if y.ndim == 0 else y.shape[0]
        raise ValueError(f"y: expected {X.shape[0]} rows to match X, received {got}")
    if (
        isinstance(test_fraction, (bool, np.bool_))
        or not isinstance(test_fraction, numbers.Real)
        or not 0.0 < test_fraction < 1.0
    ):
        raise ValueError(f"test_fraction: expected a number in (0, 1), received {test_fraction}")
    N = X.shape[0]
    n_test = int(round(test_fraction * N))
    if n_test in (0, N):
        part = "test" if n_test == 0 else "training"
        raise ValueError(
            f"test_fraction: {test_fraction} of N = {N} samples gives an empty "
            f"{part} set; expected a fraction leaving both parts non-empty"
        )
    idx = rng.permutation(N)
    test, train = idx[:n_test], idx[n_test:]
    return X[train], y[train], X[test], y[test]


def permuted_tasks(
    X: ArrayLike, n_tasks: int, rng: np.random.Generator | int = 0
) -> list[np.ndarray]:
    """Permuted-input tasks: ``X[:, perm_t]`` for ``n_tasks`` fixed permutations of the
    features (the first is the identity). Returns the permutations ``(D,)`` per task."""
    rng = as_generator(rng)
    n_tasks = check_int(n_tasks, "n_tasks", 1)
    D = as_float_array(X, "X", ndim=2).shape[1]
    return [np.arange(D)] + [rng.permutation(D) for _ in range(n_tasks - 1)]


def split_tasks(y: ArrayLike, groups: Sequence[Sequence[int]] | np.ndarray) -> list[np.ndarray]:
    """Indices of the samples whose label is in each group, e.g. ``[(0, 1), (2, 3), ...]``.

    Parameters
    ----------
    y : array of int, shape (N,)
        Class labels.
    groups : sequence of sequences of int
        The labels of each task; every group must select at least one sample.

    Returns
    -------
    list of ndarray of int
        Per group, the increasing indices ``n`` with ``y[n]`` in the group.
    """
    y = _numeric(y, "y")
    if y.ndim != 1:
        raise ValueError(f"y: expected integer labels of shape (N,), received shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise TypeError(f"y: expected integer labels, received dtype {y.dtype}")
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence | np.ndarray):
        raise TypeError(
            f"groups: expected a sequence of label groups such as [(0, 1), (2, 3)], "
            f"received {type(groups).__name__}"
        )
    out = []
    for i, g in enumerate(groups):
        if isinstance(g, (str, bytes)) or not isinstance(g, Sequence | np.ndarray):
            raise TypeError(
                f"groups[{i}]: expected a sequence of labels such as (0, 1), "
                f"received {type(g).__name__} {g!r}"
            )
        labels = tuple(check_int(c, f"groups[{i}][{j}]") for j, c in enumerate(g))
        if not labels:
            raise ValueError(f"groups[{i}]: expected at least one label, received an empty group")
        idx = np.flatnonzero(np.isin(y, labels))
        if idx.size == 0:
            raise ValueError(f"groups[{i}]: no sample has a label in {labels}")
        out.append(idx)
    return out


def two_moons(
    n: int, noise: float = 0.1, rng: np.random.Generator | int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles: ``X: (n, 2)``, labels ``y: (n,)`` in {0, 1}."""
    rng = as_generator(rng)
    n = check_int(n, "n", 2)
    noise = check_nonnegative(noise, "noise")
    n0 = n // 2
    t0 = rng.uniform(0, np.pi, n0)
    t1 = rng.uniform(0, np.pi, n - n0)
    X0 = np.stack([np.cos(t0), np.sin(t0)], axis=1)
    X1 = np.stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
    X = np.concatenate([X0, X1]) + noise * rng.standard_normal((n, 2))
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n - n0, np.int64)])
    perm = rng.permutation(n)
    return X[perm], y[perm]


def linear_regression_data(
    n: int,
    d: int,
    sigma: float = 1.0,
    rng: np.random.Generator | int = 0,
    w: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``y = X w + b + sigma eps``: returns ``(X: (n, d), y: (n, 1), w: (d,), b)``."""
    rng = as_generator(rng)
    n, d = check_int(n, "n", 1), check_int(d, "d", 1)
    sigma = check_nonnegative(sigma, "sigma")
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d) if w is None else as_float_array(w, "w", shape=(d,))
    b = float(rng.standard_normal())
    y = (X @ w + b + sigma * rng.standard_normal(n))[:, None]
    return X, y, w, b


def teacher_data(
    net: Sequential, theta: ArrayLike, n: int, rng: np.random.Generator | int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``X ~ N(0, I): (n, *input_shape)`` (``(n, D)`` for an MLP) and targets drawn
    from the teacher ``p_theta(y | x)`` (every output position independently)."""
    check_net(net)
    rng = as_generator(rng)
    X = rng.standard_normal((check_int(n, "n", 1),) + tuple(net.input_shape))
    y = net.sample_targets(net.forward(theta, X), rng)
    return X, y


def one_hot(y: ArrayLike, C: int) -> np.ndarray:
    """``(N,)`` integer labels to ``(N, C)`` one-hot rows."""
    C = check_int(C, "C", 1)
    y = np.asarray(y)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise ValueError(
            f"y: expected integer labels of shape (N,), received "
            f"{'dtype ' + str(y.dtype) if y.ndim == 1 else 'shape ' + str(y.shape)}"
        )
    if y.size and (y.min() < 0 or y.max() >= C):
        raise ValueError(
            f"y: expected labels in [0, {C}), received values in [{y.min()}, {y.max()}]"
        )
    out = np.zeros((y.shape[0], C))
    out[np.arange(y.shape[0]), y] = 1.0
    return out
