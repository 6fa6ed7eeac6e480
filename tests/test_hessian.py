"""The structured Hessian (second-order backprop) and its batched Hessian-vector products.

Three routes: ``autograd.hessian`` of the forward pass (reverse over reverse), central finite
differences of the backprop gradient, and autograd's Hessian-vector products; plus the
identity ``H = GGN`` for networks linear in ``theta``.
"""

from __future__ import annotations

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import minifim
from minifim.geometry.hessian import (
    activation_second_derivative,
    ggn_vector_products,
    homogeneous_inputs,
    mlp_forward,
)

from .cases import CASES, assert_close, make_case
from .tolerances import EPS, check, check_elementwise, curvature_rtol, product_rtol


def _autograd_hessian(case, reduction="mean"):
    return minifim.hessian(
        case.net, case.theta, case.X, case.y, reduction=reduction, backend="autograd"
    )


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_structured_hessian_equals_autograd(case, reduction):
    """Every case: second-order backprop against ``autograd.hessian`` (two products of at
    most ``P + N C`` terms each route: the GGN and the residual term, c = 2)."""
    H = minifim.hessian(case.net, case.theta, case.X, case.y, reduction=reduction)
    ref = _autograd_hessian(case, reduction)
    assert_close(H, ref, min(1e-12, curvature_rtol(case, 2.0)), case.name)
    np.testing.assert_array_equal(H, H.T)  # the upper triangle is mirrored exactly


def test_structured_hessian_chunks_and_deeper_nets():
    """Chunks of samples accumulate to the one-pass result; a 4-layer net (three hidden
    layers: couplings of every layer with every earlier one) matches autograd."""
    case = make_case((3, 4, 5, 3, 3), "tanh", "categorical", N=7, seed=7)
    H1 = minifim.hessian(case.net, case.theta, case.X, case.y)
    H3 = minifim.hessian(case.net, case.theta, case.X, case.y, chunk_size=3)
    assert_close(H3, H1, curvature_rtol(case))
    assert_close(H1, _autograd_hessian(case), curvature_rtol(case, 2.0))


def test_structured_hessian_custom_activation():
    """A user callable: ``phi''`` by autograd (elementwise_grad twice) against the closed
    form of sin, and the Hessian against autograd."""
    net = minifim.MLP([3, 4, 2], activation=anp.sin)
    d2 = activation_second_derivative(net.activation)
    z = np.linspace(-2.0, 2.0, 9)
    assert_close(d2(z), -np.sin(z), 4 * EPS)
    rng = np.random.default_rng(3)
    theta, X = net.init(rng), rng.standard_normal((5, 3))
    y = net.likelihood.sample(net.forward(theta, X), rng)
    H = minifim.hessian(net, theta, X, y)
    assert_close(H, minifim.hessian(net, theta, X, y, backend="autograd"), 1e-12)


@pytest.mark.filterwarnings("ignore:Output seems independent of input")
@pytest.mark.parametrize("name", ["tanh", "sigmoid", "softplus", "relu", "identity"])
def test_activation_second_derivatives_closed_form(name):
    """The closed forms against autograd's second derivative of ``phi``."""
    act = minifim.MLP([1, 1], activation=name).activation
    z = np.linspace(-3.0, 3.0, 13) + 0.01  # off relu's kink
    ref = autograd.elementwise_grad(autograd.elementwise_grad(act.phi))(z)
    assert_close(activation_second_derivative(act)(z) + 1.0, ref + 1.0, 8 * EPS)


@pytest.mark.parametrize("case", CASES[::3], ids=[c.name for c in CASES[::3]])
def test_structured_hessian_finite_differences(case):
    """Columns of H against central differences of the backprop gradient.

    The tolerance is derived, not tuned: the central difference ``D(h)`` has truncation
    error ``h^2 g'''/6``, estimated by Richardson from ``|D(2h) - D(h)| / 3`` (the next term
    is ``O(h^4)``), plus the rounding of the two gradients, ``<= 2 rtol_g max|g| / (2h)``
    with ``rtol_g`` the product bound of a gradient (``P + N C`` terms). Bound on the
    difference: twice their sum (the Richardson estimate is itself a difference of two
    rounded quantities).
    """
    net, th, X, y = case.net, case.theta, case.X, case.y
    h = EPS ** (1 / 3)

    def g(t):
        return minifim.gradient(net, t, X, y)

    def D(step):
        E = np.eye(case.P) * step
        return np.stack([(g(th + e) - g(th - e)) / (2 * step) for e in E], axis=1)

    D1, D2 = D(h), D(2 * h)
    H = minifim.hessian(net, th, X, y)
    rtol_g = product_rtol(case.P + case.N * net.sizes[-1])
    gmax = max(float(np.max(np.abs(g(th)))), float(np.max(np.abs(H))) * h)
    bound = 2.0 * (float(np.max(np.abs(D2 - D1))) / 3.0 + 2 * rtol_g * gmax / (2 * h) + EPS)
    check(float(np.max(np.abs(H - D1))), bound, case.name)


def test_hessian_of_linear_model_equals_ggn():
    """Softmax regression is linear in theta: no residual term, H = GGN (= true Fisher)."""
    case = make_case((3, 4), "identity", "categorical", N=7, seed=104)
    H = minifim.hessian(case.net, case.theta, case.X, case.y)
    assert_close(H, minifim.ggn(case.net, case.theta, case.X), curvature_rtol(case))


@pytest.mark.parametrize("case", CASES[::2], ids=[c.name for c in CASES[::2]])
def test_hessian_operator_block_products(case, rng):
    """A block of vectors in one forward-over-reverse pass against the dense Hessian and
    against autograd's products (one column at a time)."""
    V = rng.standard_normal((case.P, 3))
    op = minifim.hessian_operator(case.net, case.theta, case.X, case.y)
    H = minifim.hessian(case.net, case.theta, case.X, case.y)
    HV = op @ V
    # |H||V| scale: the product's inner dimension P plus each route's own accumulation
    scale = float(np.max(np.abs(H) @ np.abs(V)))
    n = 2 * (case.P + case.N * case.net.sizes[-1])
    check(float(np.max(np.abs(HV - H @ V))) / scale, product_rtol(n, 2.0), case.name)
    ag = minifim.hessian_operator(case.net, case.theta, case.X, case.y, backend="autograd")
    check(float(np.max(np.abs(HV - ag @ V))) / scale, product_rtol(n, 2.0), case.name)
    assert_close(op @ V[:, 0], HV[:, 0], product_rtol(n))


def test_hessian_vector_products_shapes():
    case = make_case((3, 4, 2), "tanh", "bernoulli", N=4, seed=5)
    op = minifim.hessian_operator(case.net, case.theta, case.X, case.y, reduction="sum")
    assert op.shape == (case.P, case.P)
    assert (op @ np.ones(case.P)).shape == (case.P,)


@pytest.mark.parametrize("case", CASES[::2], ids=[c.name for c in CASES[::2]])
def test_ggn_vector_products_against_output_jacobians(case, rng):
    """The (n, m, width) forward-then-reverse products ``sum_n J_n^T M_n J_n V`` against the
    explicit output Jacobians of :func:`minifim.output_jacobians` and a random symmetric
    (indefinite) ``M_n``; the same work dict reused across calls of two block widths."""
    J = minifim.output_jacobians(case.net, case.theta, case.X)  # (N, C, P)
    N, C, P = J.shape
    A = rng.standard_normal((N, C, C))
    M = A + A.transpose(0, 2, 1)
    cache = mlp_forward(case.net, case.theta, case.X)
    acts_h, work = homogeneous_inputs(cache), {}
    for m in (3, 1, 4):
        V = rng.standard_normal((P, m))
        got = ggn_vector_products(case.net, cache, M, V, acts_h, work)
        ref = np.einsum("ncp,ncd,ndm->pm", J, M, J @ V)
        # |J|^T |M| |J| |V|: three products, inner dimensions P, C, N C
        scale = np.einsum("ncp,ncd,ndm->pm", np.abs(J), np.abs(M), np.abs(J) @ np.abs(V))
        check_elementwise(got, ref, product_atol_scale(scale, 2 * (P + N * C + C)), case.name)
    assert ggn_vector_products(case.net, cache, M, V).shape == (P, 4)


def product_atol_scale(scale, n):
    """``c n EPS`` times the absolute-value product (the bound of :func:`product_rtol`)."""
    return product_rtol(n) * scale


def test_hessian_backend_validated():
    case = make_case((3, 4, 2), "tanh", "categorical", N=3, seed=1)
    with pytest.raises(ValueError, match="backend"):
        minifim.hessian(case.net, case.theta, case.X, case.y, backend="jax")
    with pytest.raises(ValueError, match="backend"):
        minifim.hessian_operator(case.net, case.theta, case.X, case.y, backend="jax")


def test_assembly_accepts_one_position_factor_chunks():
    """Chunks in the weight-shared layout with ``R = 1`` (acts ``(n, 1, in)``, seeds
    ``(n, K, 1, out)``) and the plain ``(n, in)``, ``(n, K, out)`` chunks assemble to the same
    matrix; ``R > 1`` is refused by name (the caller expands the factor)."""
    from minifim.geometry.assembly import dense_from_factors, squeeze_positions

    case = make_case((3, 4, 3), "tanh", "categorical", N=5, seed=2)
    chunks = list(minifim.curvature_factors(case.net, case.theta, case.X))
    ref = dense_from_factors(case.net, chunks, case.P)
    plain = [squeeze_positions(A, Bs) for A, Bs in chunks]
    assert plain[0][0][0].ndim == 2 and plain[0][1][0].ndim == 3
    np.testing.assert_array_equal(dense_from_factors(case.net, plain, case.P), ref)
    A, Bs = plain[0]
    with pytest.raises(ValueError, match="acts"):
        squeeze_positions([np.repeat(a[:, None], 2, 1) for a in A], [B[:, :, None] for B in Bs])


@pytest.mark.parametrize("likelihood", ["heteroscedastic", "poisson"])
def test_structured_hessian_non_canonical_likelihoods(likelihood):
    """Likelihoods whose output Hessian depends on the labels: the structured Hessian and its
    products use ``hessian_outputs(F, y)`` at the data labels (against autograd)."""
    net = minifim.MLP([3, 4, 4], likelihood=likelihood)
    rng = np.random.default_rng(0)
    theta, X = net.init(rng), rng.standard_normal((5, 3))
    y = net.likelihood.sample(net.forward(theta, X), rng)
    ref = minifim.hessian(net, theta, X, y, backend="autograd")
    n = net.num_params + 5 * 4
    assert_close(minifim.hessian(net, theta, X, y), ref, product_rtol(n, 2.0))
    V = rng.standard_normal((net.num_params, 2))
    HV = minifim.hessian_operator(net, theta, X, y) @ V
    assert_close(HV, ref @ V, product_rtol(2 * n, 2.0))
