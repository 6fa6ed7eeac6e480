"""Data sets: shapes, determinism from a seed or Generator, split/permutation correctness."""

import numpy as np
import pytest

import minifim
from minifim import data


def test_load_digits():
    pytest.importorskip("sklearn")
    X, y = data.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    Xr, yr = data.load_digits(scale=False)
    np.testing.assert_array_equal(Xr, 16 * X)
    np.testing.assert_array_equal(yr, y)


def test_train_test_split():
    X = np.arange(40, dtype=float).reshape(20, 2)
    y = np.arange(20)
    Xtr, ytr, Xte, yte = data.train_test_split(X, y, test_fraction=0.25, rng=3)
    assert Xtr.shape == (15, 2) and Xte.shape == (5, 2)
    # rows stay paired with their labels, the split is a partition
    np.testing.assert_array_equal(Xtr[:, 0], 2 * ytr)
    np.testing.assert_array_equal(Xte[:, 0], 2 * yte)
    assert sorted(np.concatenate([ytr, yte]).tolist()) == list(range(20))
    again = data.train_test_split(X, y, test_fraction=0.25, rng=np.random.default_rng(3))
    for a, b in zip(again, (Xtr, ytr, Xte, yte)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(data.train_test_split(X, y, 0.25, rng=4)[3], yte)
    with pytest.raises(ValueError, match="y: expected 20 rows to match X, received 19"):
        data.train_test_split(X, y[:-1])
    for frac in (0.0, 1.0, -0.2, 1.5, "0.3", True, np.nan):
        with pytest.raises(ValueError, match=r"test_fraction: expected a number in \(0, 1\)"):
            data.train_test_split(X, y, test_fraction=frac)
    with pytest.raises(TypeError, match="rng"):
        data.train_test_split(X, y, rng=None)


def test_permuted_tasks():
    X = np.random.default_rng(0).standard_normal((6, 10))
    perms = data.permuted_tasks(X, 4, rng=1)
    assert len(perms) == 4
    np.testing.assert_array_equal(perms[0], np.arange(10))
    for p in perms:
        assert sorted(p.tolist()) == list(range(10))
    assert len({tuple(p) for p in perms}) == 4
    for a, b in zip(perms, data.permuted_tasks(X, 4, rng=np.random.default_rng(1))):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="n_tasks: expected an integer >= 1"):
        data.permuted_tasks(X, 0)
    with pytest.raises(ValueError, match="X: expected a 2-D array"):
        data.permuted_tasks(X[0], 2)


def test_split_tasks():
    y = np.array([0, 3, 1, 2, 3, 0, 4])
    idx = data.split_tasks(y, [(0, 1), (2, 3), (4,)])
    assert [i.tolist() for i in idx] == [[0, 2, 5], [1, 3, 4], [6]]


def test_two_moons():
    X, y = data.two_moons(101, noise=0.0, rng=2)
    assert X.shape == (101, 2) and y.shape == (101,) and y.dtype == np.int64
    assert (y == 0).sum() == 50 and (y == 1).sum() == 51
    # without noise every point lies on its half circle
    r0 = np.hypot(X[y == 0, 0], X[y == 0, 1])
    r1 = np.hypot(X[y == 1, 0] - 1.0, X[y == 1, 1] - 0.5)
    np.testing.assert_allclose(r0, 1.0, rtol=1e-14)
    np.testing.assert_allclose(r1, 1.0, rtol=1e-14)
    assert np.all(X[y == 0, 1] >= 0) and np.all(X[y == 1, 1] <= 0.5)
    a, b = data.two_moons(30, rng=5), data.two_moons(30, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="n: expected an integer >= 2"):
        data.two_moons(1)
    with pytest.raises(ValueError, match="noise: expected a non-negative number"):
        data.two_moons(10, noise=-0.1)


def test_linear_regression_data():
    X, y, w, b = data.linear_regression_data(50, 3, sigma=0.0, rng=1)
    assert X.shape == (50, 3) and y.shape == (50, 1) and w.shape == (3,)
    np.testing.assert_allclose(y[:, 0], X @ w + b, rtol=0, atol=1e-14)
    X2, y2, w2, b2 = data.linear_regression_data(50, 3, sigma=0.0, rng=1, w=[1.0, 2.0, 3.0])
    np.testing.assert_allclose(y2[:, 0], X2 @ np.array([1.0, 2.0, 3.0]) + b2, atol=1e-14)
    # residuals have standard deviation sigma (chi-square bound: 5 standard errors)
    X, y, w, b = data.linear_regression_data(4000, 2, sigma=0.5, rng=2)
    r = y[:, 0] - X @ w - b
    assert abs(r.var() / 0.25 - 1) < 5 * np.sqrt(2 / 4000)
    with pytest.raises(ValueError, match=r"w: expected shape \(3,\)"):
        data.linear_regression_data(5, 3, w=[1.0, 2.0])
    with pytest.raises(ValueError, match="sigma: expected a non-negative number"):
        data.linear_regression_data(5, 3, sigma=-1.0)
    with pytest.raises(ValueError, match="d: expected an integer >= 1"):
        data.linear_regression_data(5, 0)


def test_teacher_data():
    net = minifim.MLP([3, 4, 2])
    theta = net.init(0)
    X, y = data.teacher_data(net, theta, 200, rng=1)
    assert X.shape == (200, 3) and y.shape == (200,)
    net.check_targets(y, 200)
    X2, y2 = data.teacher_data(net, theta, 200, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    with pytest.raises(ValueError, match="theta: expected shape"):
        data.teacher_data(net, theta[:-1], 5)


def test_one_hot():
    np.testing.assert_array_equal(
        data.one_hot(np.array([2, 0, 1]), 3), [[0, 0, 1], [1, 0, 0], [0, 1, 0]]
    )
    assert data.one_hot(np.array([], dtype=int), 4).shape == (0, 4)
    with pytest.raises(
        ValueError,
        match=r"y: expected labels in \[0, 3\), received values in "
        r"\[-1, 0\]",
    ):
        data.one_hot(np.array([-1, 0]), 3)
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\)"):
        data.one_hot(np.array([3]), 3)
    with pytest.raises(ValueError, match="y: expected integer labels"):
        data.one_hot(np.array([0.5]), 3)
    with pytest.raises(ValueError, match="y: expected integer labels"):
        data.one_hot(np.zeros((2, 2), int), 3)
    with pytest.raises(ValueError, match="C: expected an integer >= 1"):
        data.one_hot(np.array([0]), 0)


# --- validation of the helpers (issue 12) --------------------------------------------------------
def test_train_test_split_refuses_bad_arrays_and_empty_parts():
    X = np.arange(40, dtype=float).reshape(20, 2)
    y = np.arange(20)
    images = np.arange(20 * 4).reshape(20, 2, 2)  # any (N, ...) array; its dtype is kept
    Xtr, _, Xte, _ = data.train_test_split(images, y, 0.25, rng=0)
    assert Xtr.shape == (15, 2, 2) and Xte.shape == (5, 2, 2) and Xtr.dtype == images.dtype
    for args, err, msg in [
        ((np.float64(3.0), y), ValueError, r"X: expected an array of N >= 2 samples"),
        (
            (X[:1], y[:1]),
            ValueError,
            r"X: expected an array of N >= 2 samples .*received shape "
            r"\(1, 2\)",
        ),
        ((np.array([["a", "b"]] * 20), y), TypeError, "X: expected a real numeric array"),
        ((X, np.array(["a"] * 20)), TypeError, "y: expected a real numeric array"),
        ((X, 3), ValueError, "y: expected 20 rows to match X, received a scalar"),
        ((None, y), TypeError, "X: expected a real numeric array"),
    ]:
        with pytest.raises(err, match=msg):
            data.train_test_split(*args)
    # 0.01 of 20 samples rounds to an empty test set; 0.99 to an empty training set
    with pytest.raises(
        ValueError,
        match=r"test_fraction: 0.01 of N = 20 samples gives an "
        r"empty test set",
    ):
        data.train_test_split(X, y, 0.01)
    with pytest.raises(
        ValueError,
        match=r"test_fraction: 0.99 of N = 20 samples gives an "
        r"empty training set",
    ):
        data.train_test_split(X, y, 0.99)


def test_split_tasks_refuses_bad_labels_and_groups():
    y = np.array([0, 3, 1, 2, 3, 0, 4])
    for args, err, msg in [
        (
            (y[:, None], [(0,)]),
            ValueError,
            r"y: expected integer labels of shape \(N,\), "
            r"received shape \(7, 1\)",
        ),
        ((y + 0.5, [(0,)]), TypeError, "y: expected integer labels"),
        ((y, (0, 1)), TypeError, r"groups\[0\]: expected a sequence of labels"),
        ((y, "01"), TypeError, "groups: expected a sequence of label groups"),
        ((y, [(0, 1), ()]), ValueError, r"groups\[1\]: expected at least one label"),
        ((y, [(0, 1), (7, 8)]), ValueError, r"groups\[1\]: no sample has a label in \(7, 8\)"),
        ((y, [(0, 1.5)]), TypeError, r"groups\[0\]\[1\]: expected an integer"),
    ]:
        with pytest.raises(err, match=msg):
            data.split_tasks(*args)
    assert [i.tolist() for i in data.split_tasks(list(y), [[4], (0, 9)])] == [[6], [0, 5]]


def test_teacher_data_and_load_digits_refuse_bad_arguments():
    with pytest.raises(TypeError, match="net: expected a minifim.MLP, received list"):
        data.teacher_data([3, 4, 2], np.zeros(26), 5)
    with pytest.raises(TypeError, match="scale: expected a bool, received str"):
        data.load_digits(scale="yes")
