"""Matrix-free operators: products equal dense products for every curvature kind, scipy's
eigsh/cg run on them, and Hessian-vector products equal the dense Hessian."""

import numpy as np
import pytest
import scipy.sparse.linalg as sla
from scipy.sparse.linalg import LinearOperator

import minifim
from minifim.geometry.curvature import FISHER_KINDS

from .cases import assert_close, get_case, make_case
from .tolerances import cg_rtol, check_close, check_elementwise, damped_cond, eig_atol


@pytest.mark.parametrize("kind", FISHER_KINDS)
def test_products_equal_dense(case, kind):
    kw = dict(n_samples=2, rng=6)
    M = minifim.curvature_matrix(case.net, case.theta, case.X, case.y, kind, **kw)
    op = minifim.fisher_operator(case.net, case.theta, case.X, case.y, kind, **kw)
    assert isinstance(op, LinearOperator) and op.shape == (case.P, case.P)
    assert op.dtype == np.float64
    rng = np.random.default_rng(0)
    v, V = rng.standard_normal(case.P), rng.standard_normal((case.P, 4))
    scale = np.abs(M).max() * np.abs(V).max() * case.P
    for got, want in [
        (op @ v, M @ v),
        (op.matvec(v), M @ v),
        (op @ V, M @ V),
        (op.matmat(V), M @ V),
        (op.rmatvec(v), M @ v),
        (op.H @ V, M @ V),
    ]:
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-14 * max(scale, 1e-300)
    assert (op @ v[:, None]).shape == (case.P, 1)


def test_reduction_and_ggn_operator(case):
    net, theta, X = case.net, case.theta, case.X
    v = np.random.default_rng(1).standard_normal(case.P)
    mean = minifim.fisher_operator(net, theta, X) @ v
    assert_close(minifim.fisher_operator(net, theta, X, reduction="sum") @ v, case.N * mean, 1e-14)
    assert_close(minifim.ggn_operator(net, theta, X) @ v, minifim.ggn(net, theta, X) @ v, 1e-13)
    assert_close(minifim.ggn_operator(net, theta, X, reduction="sum") @ v, case.N * mean, 1e-13)


def test_hessian_operator_equals_hessian(case):
    net, theta, X, y = case.net, case.theta, case.X, case.y
    rng = np.random.default_rng(2)
    v, V = rng.standard_normal(case.P), rng.standard_normal((case.P, 3))
    for reduction in ("mean", "sum"):
        H = minifim.hessian(net, theta, X, y, reduction=reduction)
        op = minifim.hessian_operator(net, theta, X, y, reduction=reduction)
        assert op.shape == (case.P, case.P)
        assert_close(op @ v, H @ v, 1e-12, reduction)
        assert_close(op @ V, H @ V, 1e-12, reduction)


def test_mc_operator_uses_the_same_labels_as_mc_fisher():
    case = get_case("categorical-tanh-3x4x3")
    M = minifim.mc_fisher(case.net, case.theta, case.X, 3, rng=8)
    op = minifim.fisher_operator(case.net, case.theta, case.X, fisher="mc", n_samples=3, rng=8)
    assert_close(op @ np.eye(case.P), M, 1e-13)


@pytest.mark.parametrize(
    "name", ["categorical-tanh-2x3x4x2", "bernoulli-softplus-3x4x3", "gaussian-tanh-3x4x3"]
)
def test_scipy_eigsh_and_cg(name):
    case = get_case(name)
    F = minifim.true_fisher(case.net, case.theta, case.X)
    op = minifim.fisher_operator(case.net, case.theta, case.X)
    top = sla.eigsh(op, k=3, which="LA", tol=1e-13, return_eigenvectors=False, v0=np.ones(case.P))
    # ARPACK stops at ||r|| <= tol |theta|, a bound on the eigenvalue error (symmetric), plus
    # the Weyl bound of the dense reference
    ref = np.linalg.eigvalsh(F)
    check_elementwise(
        np.sort(top),
        ref[-3:],
        1e-13 * ref[-3:] + eig_atol(ref[-1], case.P),
        "Fisher operator top eigenvalues",
    )
    damping = 1e-2
    A = op + damping * sla.aslinearoperator(np.eye(case.P))
    b = np.random.default_rng(3).standard_normal(case.P)
    x, info = sla.cg(A, b, rtol=1e-13, maxiter=10 * case.P)
    assert info == 0
    check_close(
        x,
        np.linalg.solve(F + damping * np.eye(case.P), b),
        cg_rtol(damped_cond(F, damping), case.P, 1e-13),
        "cg",
    )
    H = minifim.hessian(case.net, case.theta, case.X, case.y)
    hop = minifim.hessian_operator(case.net, case.theta, case.X, case.y)
    w = sla.eigsh(hop, k=2, which="LA", tol=1e-13, return_eigenvectors=False, v0=np.ones(case.P))
    ref = np.linalg.eigvalsh(H)
    scale = np.abs(ref).max()
    check_elementwise(
        np.sort(w),
        ref[-2:],
        1e-13 * np.abs(ref[-2:]) + eig_atol(scale, case.P),
        "Hessian operator top eigenvalues",
    )


def test_bad_input():
    case = get_case("categorical-tanh-3x4x3")
    net, theta, X, y = case.net, case.theta, case.X, case.y
    for fn, args in [
        (minifim.fisher_operator, ()),
        (minifim.ggn_operator, ()),
        (minifim.hessian_operator, (y,)),
    ]:
        with pytest.raises(ValueError, match=r"theta: expected shape \(31,\)"):
            fn(net, theta[:-1], X, *args)
        with pytest.raises(ValueError, match="theta: expected finite"):
            fn(net, theta * np.inf, X, *args)
        with pytest.raises(ValueError, match="X: expected a 2-D array"):
            fn(net, theta, X[0], *args)
        with pytest.raises(ValueError, match="X: expected 3 input features"):
            fn(net, theta, X[:, 1:], *args)
        with pytest.raises(ValueError, match="X: expected finite"):
            fn(net, theta, X * np.nan, *args)
        with pytest.raises(ValueError, match=r"reduction: expected one of \['mean', 'sum'\]"):
            fn(net, theta, X, *args, reduction="avg")
    with pytest.raises(ValueError, match="fisher: expected one of"):
        minifim.fisher_operator(net, theta, X, fisher="hessian")
    with pytest.raises(ValueError, match="y: the empirical Fisher needs the data targets"):
        minifim.fisher_operator(net, theta, X, fisher="empirical")
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\)"):
        minifim.fisher_operator(net, theta, X, y + 3, fisher="empirical")
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        minifim.fisher_operator(net, theta, X, fisher="mc")
    with pytest.raises(ValueError, match="n_samples: expected an integer >= 1"):
        minifim.fisher_operator(net, theta, X, fisher="mc", n_samples=0, rng=0)
    with pytest.raises(ValueError, match="y: expected integer class labels"):
        minifim.hessian_operator(net, theta, X, y + 0.5)
    with pytest.raises(ValueError, match=r"y: expected shape \(5,\)"):
        minifim.hessian_operator(net, theta, X, y[:2])


@pytest.mark.parametrize("make", ["fisher", "hessian"])
def test_block_products_are_the_same_bits_at_any_thread_count(make, rng):
    """More columns than one block (``_HVP_BLOCK``): the blocks run on a thread pool, each on
    one BLAS thread, so the result does not depend on the thread count (bit for bit) and
    equals the blocks computed one at a time."""
    from threadpoolctl import threadpool_limits

    from minifim.geometry.operators import _HVP_BLOCK

    case = make_case((4, 6, 3), "tanh", "categorical", N=9, seed=3)
    if make == "fisher":
        op = minifim.fisher_operator(case.net, case.theta, case.X)
    else:
        op = minifim.hessian_operator(case.net, case.theta, case.X, case.y)
    V = rng.standard_normal((case.P, 2 * _HVP_BLOCK + 3))
    with threadpool_limits(limits=1, user_api="blas"):
        one = op @ V
    with threadpool_limits(limits=2, user_api="blas"):
        two = op @ V
    np.testing.assert_array_equal(one, two)
    with threadpool_limits(limits=1, user_api="blas"):
        for j in range(0, V.shape[1], _HVP_BLOCK):
            np.testing.assert_array_equal(one[:, j : j + _HVP_BLOCK], op @ V[:, j : j + _HVP_BLOCK])
