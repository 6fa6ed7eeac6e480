"""K-FAC expand and reduce on weight-shared layers (``Linear`` on positions, ``Conv2d``).

Independent routes:

- the definitions (Eschenhagen et al. 2023) by brute force: a hand forward written here (its
  own convolution from the definition, its own im2col, ``Linear`` as ``x W^T + b``) with a
  position-wise perturbation ``delta`` added to the layer's outputs, whose autograd Jacobian
  gives ``J_nqr = d f_nq / d z_nr`` per output position ``q`` and layer position ``r``; the
  factors are then loop-free einsums of ``J``, the output-space Fisher ``Lambda_nq`` (or the
  sample score) and the unfolded inputs ``a_nr``: expand ``A = 1/(N R) sum_nr a~ a~^T``,
  ``G = c sum_nqr J^T Lambda J``; reduce ``A = 1/N sum_n a^ a^^T`` (position mean),
  ``G = c sum_nq J^^T Lambda J^`` with ``J^ = sum_r J`` (position sum);
- the exactness cases against two routes to the exact layer blocks (the brute-force block
  ``c sum_nq (sum_r J a^T)^T Lambda (sum_s J a^T)`` and :func:`minifim.curvature_matrix`):
  expand in the expand setting and reduce in the reduce setting of deep linear networks with
  a Gaussian likelihood, reduce for one sample in the reduce setting with any likelihood; and
  the other flavour not exact there (so the tests can fail);
- ``R = 1`` (a plain MLP): expand, reduce and the default are the same factors bit for bit;
- layers without a bias (``bias=False``): the layout, dense matrix, products and solves.
"""

import functools

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import jacobian
from hypothesis import given
from hypothesis import strategies as st

import minifim
from minifim import kfac
from minifim import layers as L

from .cases import SEQUENTIAL_CASES
from .tolerances import (
    check,
    check_close,
    check_elementwise,
    damped_cond,
    identity_tol,
    product_atol,
    product_rtol,
    solve_rtol,
)


# --- small cases ------------------------------------------------------------------------------
class WSCase:
    """A seeded ``Sequential`` with inputs and labels (``name`` for the test ids)."""

    def __init__(self, name, layers, likelihood, input_shape, N, seed, sigma=1.0):
        self.name = name
        self.net = minifim.Sequential(
            layers, likelihood=likelihood, input_shape=input_shape, sigma=sigma
        )
        rng = np.random.default_rng(seed)
        self.theta = self.net.init(rng)
        self.X = rng.standard_normal((N,) + tuple(input_shape))
        self.N, self.P = N, self.net.num_params
        F = self.net.forward(self.theta, self.X)
        self.y = self.net.sample_targets(F, rng) if likelihood != "gaussian" else None
        if likelihood == "gaussian":
            self.y = F + rng.standard_normal(F.shape)

    def __repr__(self):
        return self.name


#: The shared Sequential cases of tests/cases.py (CNN, sequence, reduce), by name.
SHARED = {c.name: c for c in SEQUENTIAL_CASES}


@functools.cache
def ws_case(name):
    if name in SHARED:
        return SHARED[name]
    specs = {
        # Linear on 4 positions with an output per position (the expand setting)
        "seq-expand": (
            [L.Linear(3, 4), L.Tanh(), L.Linear(4, 3)],
            "categorical",
            (4, 3),
            3,
        ),
        # Linear on 4 positions, then the position mean (the reduce setting); no bias on the
        # first layer
        "seq-reduce": (
            [L.Linear(3, 4, bias=False), L.Tanh(), L.Mean(1), L.Linear(4, 3)],
            "categorical",
            (4, 3),
            3,
        ),
        # strided padded conv, dilated conv without bias, flatten, linear
        "cnn": (
            [
                L.Conv2d(2, 3, 3, stride=2, padding=1),
                L.Tanh(),
                L.Conv2d(3, 2, 2, dilation=2, bias=False),
                L.Flatten(),
                L.Linear(8, 3),
            ],
            "categorical",
            (2, 7, 7),
            3,
        ),
        # conv with rectangular kernel and stride, Gaussian positional output via flatten
        "cnn-gaussian": (
            [L.Conv2d(1, 2, (2, 3), stride=(2, 1), padding=(1, 0)), L.Softplus(), L.Flatten()],
            "gaussian",
            (1, 4, 5),
            3,
        ),
    }
    if name in specs:
        layers, lik, shape, N = specs[name]
        return WSCase(name, layers, lik, shape, N, seed=sum(map(ord, name)))
    layers, shape, N, lik = EXACT_SPECS[name]
    return WSCase(name, layers, lik, shape, N, seed=len(name), sigma=0.7)


EXACT_SPECS = {
    # deep linear on positions, Gaussian output per position: the expand setting
    "linear-expand": ([L.Linear(3, 4), L.Linear(4, 2)], (5, 3), 4, "gaussian"),
    # one conv feeding a Gaussian output through Flatten: each seed reaches one position
    "conv-expand": (
        [L.Conv2d(2, 2, 3, stride=2, padding=1), L.Flatten()],
        (2, 5, 5),
        3,
        "gaussian",
    ),
    # deep linear with the position mean: the reduce setting
    "linear-reduce": (
        [L.Linear(3, 4), L.Mean(1), L.Linear(4, 2, bias=False)],
        (5, 3),
        4,
        "gaussian",
    ),
    "conv-reduce": (
        [L.Conv2d(2, 3, 2, stride=2, padding=1), L.Flatten(2), L.Mean(2), L.Linear(3, 2)],
        (2, 4, 4),
        3,
        "gaussian",
    ),
    # one sample in the reduce setting: exact for any likelihood and layers after the Mean
    "reduce-one-sample": (
        [L.Conv2d(1, 2, 2, dilation=2), L.Flatten(2), L.Mean(2), L.Tanh(), L.Linear(2, 3)],
        (1, 4, 4),
        1,
        "categorical",
    ),
}


CASE_NAMES = ("seq-expand", "seq-reduce", "cnn", "cnn-gaussian")


# --- the hand forward ---------------------------------------------------------------------
def reference_patches(x, layer):
    """im2col from the definition: ``(N, H_out W_out, C kh kw)`` with column ``(c, i, j)`` the
    zero-padded input ``x[n, c, h s_h + i d_h - p_h, w s_w + j d_w - p_w]``."""
    N, C, H, W = np.shape(x)
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    (ph, pw), (dh, dw) = layer.padding, layer.dilation
    zh = anp.zeros((N, C, ph, W))
    x = anp.concatenate([zh, x, zh], axis=2)
    zw = anp.zeros((N, C, H + 2 * ph, pw))
    x = anp.concatenate([zw, x, zw], axis=3)
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = []  # (c, i, j) order: stacked over (i, j), then moved behind c
    for i in range(kh):
        for j in range(kw):
            h0, w0 = i * dh, j * dw
            cols.append(x[:, :, h0 : h0 + sh * (Ho - 1) + 1 : sh, w0 : w0 + sw * (Wo - 1) + 1 : sw])
    P = anp.stack(cols, axis=2)  # (N, C, kh kw, Ho, Wo)
    P = anp.transpose(P, (0, 3, 4, 1, 2))  # (N, Ho, Wo, C, kh kw)
    return anp.reshape(P, (N, Ho * Wo, C * kh * kw)), (Ho, Wo)


def hand_forward(case, theta, delta=None, at=None):
    """The network's outputs, with ``delta: (N, R, out)`` added to the pre-activations of
    parametric layer ``at``; also returns the unfolded inputs ``a_l: (N, R_l, in_l)``."""
    net = case.net
    x, acts, l = case.X, [], 0
    params = net.unflatten(theta)
    for layer in net.layers:
        if not layer.parametric:
            x = layer.apply(x)
            continue
        W, b = params[l]
        W = anp.reshape(W, net.shapes[l])
        n = np.shape(x)[0]
        if isinstance(layer, L.Conv2d):
            a, (Ho, Wo) = reference_patches(x, layer)
        else:
            a = anp.reshape(x, (n, -1, np.shape(x)[-1]))
        z = anp.einsum("nri,oi->nro", a, W)
        if layer.bias:
            z = z + b
        if l == at:
            z = z + delta
        if isinstance(layer, L.Conv2d):
            x = anp.reshape(anp.transpose(z, (0, 2, 1)), (n, W.shape[0], Ho, Wo))
        else:
            x = anp.reshape(z, np.shape(x)[:-1] + (W.shape[0],))
        acts.append(a)
        l += 1
    return x, acts


def flat_outputs(F):
    """``(N, Q, C)``: the outputs per output position (``Q = 1`` without positions), the
    classes on the last axis."""
    return np.reshape(F, (np.shape(F)[0], -1, np.shape(F)[-1]))


@functools.cache
def reference(name):
    return reference_of(ws_case(name))


def reference_of(case):
    """``(acts, Js, Lam, g)``: unfolded inputs ``a_l: (N, R_l, in_l)``, Jacobians
    ``J_l: (N, Q, C, R_l, out_l)``, ``Lambda: (N, Q, C, C)`` (the Hessian of ``-log p`` in the
    outputs, the output-space Fisher of these canonical-link likelihoods) and the output scores
    ``g: (N, Q, C)`` at the data labels."""
    net, theta, N = case.net, case.theta, case.N
    F, acts = hand_forward(case, theta)
    # the hand forward is the network (up to the roundings of differently ordered sums)
    F_net = net.forward(theta, case.X)
    scaled_check(F, F_net, product_rtol(case.P), "hand forward")
    Js = []
    for l, (o, _) in enumerate(net.shapes):
        R = acts[l].shape[1]
        jac = jacobian(lambda d, l=l: hand_forward(case, theta, d, l)[0])(np.zeros((N, R, o)))
        jac = jac.reshape(N, -1, N, R, o)[np.arange(N), :, np.arange(N)]  # (N, out, R, o)
        Q_C = flat_outputs(F).shape[1:]
        Js.append(jac.reshape((N,) + Q_C + (R, o)))
    Fq = flat_outputs(F)
    Q, C = Fq.shape[1:]
    lik = net.likelihood
    Lam = lik.hessian_outputs(Fq.reshape(N * Q, C)).reshape(N, Q, C, C)
    yq = np.reshape(case.y, (N * Q,) if net.likelihood.name == "categorical" else (N * Q, C))
    g = lik.grad_log_prob(Fq.reshape(N * Q, C), yq).reshape(N, Q, C)
    return acts, Js, Lam, g


def homogeneous(a, layer, bias):
    if bias == "folded" and layer.bias:
        return np.concatenate([a, np.ones(a.shape[:-1] + (1,))], axis=-1)
    return a


def definition(name, fisher, approx, bias, reduction="mean"):
    """The K-FAC factors from their definitions (module docstring), by brute force (``name``
    a case name, or a case): ``(As, Gs, G_scales)``.

    ``G_scales[l]`` is ``max`` of the same sum over absolute values (``|J|^T |Lambda| |J|``,
    or ``|b| |b|^T`` with ``|b| = |J|^T |g|``), the scale the rounding errors of the seeds
    are relative to: with two classes ``Lambda`` is rank one and ``b = J^T r`` can cancel, so
    ``max |G|`` alone may be far smaller."""
    case = ws_case(name) if isinstance(name, str) else name
    acts, Js, Lam, g = reference(name) if isinstance(name, str) else reference_of(case)
    N = case.N
    c = 1.0 / N if reduction == "mean" else 1.0
    As, Gs, scales = [], [], []
    for layer, a, J in zip(case.net.parametric_layers, acts, Js):
        a = homogeneous(a, layer, bias)
        R = a.shape[1]
        if approx == "reduce":
            a, J, R = a.mean(axis=1, keepdims=True), J.sum(axis=3, keepdims=True), 1
        As.append(np.einsum("nri,nrj->ij", a, a) / (N * R))
        if fisher == "empirical":
            b = np.einsum("nqc,nqcro->nro", g, J)  # the sample score carried to position r
            Gs.append(c * np.einsum("nro,nrp->op", b, b))
            bm = np.einsum("nqc,nqcro->nro", np.abs(g), np.abs(J))
            scales.append(c * np.einsum("nro,nrp->op", bm, bm).max())
        else:
            Gs.append(c * np.einsum("nqcro,nqcd,nqdrp->op", J, Lam, J))
            aJ = np.abs(J)
            scales.append(c * np.einsum("nqcro,nqcd,nqdrp->op", aJ, np.abs(Lam), aJ).max())
    return As, Gs, scales


def check_G(actual, expected, scale, rtol, what):
    """``max |actual - expected| <= rtol * scale`` (``scale`` from :func:`definition`)."""
    return check(float(np.abs(actual - expected).max()) / scale, rtol, what)


def exact_blocks(name, bias="folded"):
    """The exact layer blocks of the true Fisher over ``[W_l, b_l]`` (flat order), brute force:
    ``1/N sum_nq U_nq^T Lambda_nq U_nq`` with ``U_nq = sum_r J_nqr a~_nr^T`` per class row."""
    case = ws_case(name)
    acts, Js, Lam, _ = reference(name)
    blocks = []
    for layer, a, J in zip(case.net.parametric_layers, acts, Js):
        o, i = J.shape[-1], a.shape[-1]
        a1 = homogeneous(a, layer, "folded")
        U = np.einsum("nqcro,nri->nqcoi", J, a1)  # d f_nqc / d [W | b]
        U = np.concatenate(
            [U[..., :i].reshape(U.shape[:3] + (o * i,)), U[..., i:].reshape(U.shape[:3] + (-1,))],
            axis=-1,
        )
        blocks.append(np.einsum("nqcp,nqcd,nqds->ps", U, Lam, U) / case.N)
    return blocks


def tol(case):
    """Entries of ``A``/``G`` sum ``N R`` (``N K R``) rows, each a forward or backward product of
    at most ``P`` terms: :func:`product_rtol` of ``P + N K R_max`` (``K = Q C`` seeds)."""
    net = case.net
    R = max(layer.positions for layer in net.parametric_layers)
    K = int(np.prod(net.output_shape))
    return product_rtol(case.P + case.N * K * R)


def scaled_check(actual, expected, rtol, what):
    scale = max(float(np.abs(expected).max()), 1e-300)
    return check_close(actual / scale, expected / scale, rtol, what)


# --- factors against their definitions ------------------------------------------------------
@pytest.mark.parametrize("bias", ["folded", "separate"])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
@pytest.mark.parametrize("fisher", ["true", "ggn", "empirical"])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_factors_equal_their_definitions(name, fisher, approx, bias):
    case = ws_case(name)
    K = kfac(case.net, case.theta, case.X, case.y, fisher, kfac_approx=approx, bias=bias)
    As, Gs, Gsc = definition(name, fisher, approx, bias)
    assert K.kfac_approx == approx and K.bias == bias
    assert K.has_bias == tuple(layer.bias for layer in case.net.parametric_layers)
    for l, (A, G) in enumerate(zip(As, Gs)):
        assert K.A[l].shape == A.shape and K.G[l].shape == G.shape, l
        scaled_check(K.A[l], A, tol(case), f"A{l}")
        check_G(K.G[l], G, Gsc[l], tol(case), f"G{l}")


@pytest.mark.parametrize("approx", ["expand", "reduce"])
@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_cases_equal_their_definitions(name, approx):
    """The same brute force on the suite's CNN, sequence (categorical, Bernoulli, Gaussian
    outputs per position) and reduce cases, true Fisher, folded and separate bias."""
    case = ws_case(name)
    for bias in ("folded", "separate"):
        K = kfac(case.net, case.theta, case.X, kfac_approx=approx, bias=bias)
        As, Gs, Gsc = definition(name, "true", approx, bias)
        for l, (A, G) in enumerate(zip(As, Gs)):
            scaled_check(K.A[l], A, tol(case), f"A{l} {bias}")
            check_G(K.G[l], G, Gsc[l], tol(case), f"G{l} {bias}")


@st.composite
def conv_geometries(draw):
    """A Conv2d (kernel, stride, padding, dilation, bias) and an input that it fits."""
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    span = [d[a] * (k[a] - 1) + 1 - 2 * p[a] for a in range(2)]
    H, W = (draw(st.integers(max(span[a], 1), max(span[a], 1) + 3)) for a in range(2))
    C_in, C_out = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    return C_in, C_out, k, s, p, d, draw(st.booleans()), (H, W)


@given(conv_geometries(), st.sampled_from(["expand", "reduce"]))
def test_conv_geometries_equal_their_definitions(geometry, approx):
    """Any kernel, stride, padding and dilation (with or without bias) before a nonlinearity, a
    flatten and a classifier: both flavours equal the brute force (folded bias)."""
    C_in, C_out, k, s, p, d, bias, (H, W) = geometry
    conv = L.Conv2d(C_in, C_out, k, stride=s, padding=p, dilation=d, bias=bias)
    net = minifim.Sequential([conv], likelihood="gaussian", input_shape=(C_in, H, W))
    flat = int(np.prod(net.output_shape))
    layers = [
        L.Conv2d(C_in, C_out, k, stride=s, padding=p, dilation=d, bias=bias),
        L.Tanh(),
        L.Flatten(),
        L.Linear(flat, 2),
    ]
    case = WSCase("conv-geometry", layers, "categorical", (C_in, H, W), 2, seed=7)
    K = kfac(case.net, case.theta, case.X, kfac_approx=approx)
    As, Gs, Gsc = definition(case, "true", approx, "folded")
    for l, (A, G) in enumerate(zip(As, Gs)):
        scaled_check(K.A[l], A, tol(case), f"A{l}")
        check_G(K.G[l], G, Gsc[l], tol(case), f"G{l}")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_the_flavours_differ_under_weight_sharing(name):
    """Guard against a vacuous comparison: with R > 1 the flavours' ``A`` differ; their ``G``
    differ where a seed reaches several positions of the layer (a ``Mean`` or a later layer
    mixing the positions) and are equal where each seed reaches one position (an output per
    position, or a conv feeding the output), since the position sum of the seeds then adds
    zeros only."""
    case = ws_case(name)
    Ke, Kr = (kfac(case.net, case.theta, case.X, kfac_approx=ap) for ap in ("expand", "reduce"))
    one_position = name in ("seq-expand", "cnn-gaussian")
    shared = [l for l, la in enumerate(case.net.parametric_layers) if la.positions > 1]
    assert shared
    for l in shared:
        assert np.abs(Ke.A[l] - Kr.A[l]).max() > 1e-3 * np.abs(Ke.A[l]).max()
        if one_position:
            scaled_check(Kr.G[l], Ke.G[l], tol(case), f"G{l}")
        else:
            assert np.abs(Ke.G[l] - Kr.G[l]).max() > 1e-3 * np.abs(Ke.G[l]).max()


def test_reduction_and_chunks():
    case = ws_case("cnn")
    args = (case.net, case.theta, case.X, case.y, "true")
    for approx in ("expand", "reduce"):
        K = kfac(*args, kfac_approx=approx)
        Ks = kfac(*args, kfac_approx=approx, reduction="sum")
        Kc = kfac(*args, kfac_approx=approx, chunk_size=2)
        for l in range(case.net.num_layers):
            np.testing.assert_array_equal(K.A[l], Ks.A[l])  # A is always a mean
            scaled_check(Ks.G[l], case.N * K.G[l], identity_tol(ulps=2), f"sum G{l}")
            scaled_check(Kc.A[l], K.A[l], tol(case), f"chunked A{l}")
            scaled_check(Kc.G[l], K.G[l], tol(case), f"chunked G{l}")


def test_mc_is_unbiased_for_true_over_draws():
    """The Monte-Carlo K-FAC's ``G`` averages to the true one (``A`` does not depend on the
    labels): with ``S`` draws the mean of ``G_mc`` is within a few standard errors."""
    case = ws_case("seq-expand")
    args = (case.net, case.theta, case.X)
    for approx in ("expand", "reduce"):
        Kt = kfac(*args, kfac_approx=approx)
        draws = [kfac(*args, "mc", kfac_approx=approx, n_samples=50, rng=s).G[1] for s in range(8)]
        D = np.stack(draws)
        se = D.std(axis=0, ddof=1) / np.sqrt(len(draws))
        assert np.all(np.abs(D.mean(axis=0) - Kt.G[1]) <= 6 * se + 1e-12)
        np.testing.assert_array_equal(kfac(*args, "mc", kfac_approx=approx, rng=0).A[0], Kt.A[0])


# --- exactness -----------------------------------------------------------------------------
def block_diag(M, net):
    out = np.zeros_like(M)
    for sl in net.layer_param_slices():
        out[sl, sl] = M[sl, sl]
    return out


@pytest.mark.parametrize(
    "name, approx",
    [
        ("linear-expand", "expand"),
        ("conv-expand", "expand"),
        ("linear-reduce", "reduce"),
        ("conv-reduce", "reduce"),
        ("reduce-one-sample", "reduce"),
    ],
)
def test_exact_in_its_setting(name, approx):
    """``G kron A`` (folded) is the exact layer block; the other flavour is not (the test
    could fail), on the weight-shared layer."""
    case = ws_case(name)
    blocks = exact_blocks(name)
    net = case.net
    F = minifim.curvature_matrix(net, case.theta, case.X, case.y, "true")
    K = kfac(net, case.theta, case.X, kfac_approx=approx)
    other = kfac(net, case.theta, case.X, kfac_approx="reduce" if approx == "expand" else "expand")
    rtol = tol(case)
    for l, sl in enumerate(net.layer_param_slices()):
        scaled_check(blocks[l], F[sl, sl], rtol, f"brute-force block {l} vs curvature_matrix")
        scaled_check(K.layer_block(l), blocks[l], rtol, f"{approx} block {l}")
        if net.parametric_layers[l].positions > 1:
            err = np.abs(other.layer_block(l) - blocks[l]).max()
            assert err > 1e-3 * np.abs(blocks[l]).max(), (l, err)
    scaled_check(K.to_dense(), block_diag(F, net), rtol, "to_dense")


def test_expand_not_exact_with_mixing_positions():
    """A second conv mixes the positions (a seed reaches several positions of the first
    layer): expand is no longer exact there, even for a deep linear Gaussian network."""
    net = minifim.Sequential(
        [L.Conv2d(1, 2, 2), L.Conv2d(2, 1, 2), L.Flatten()],
        likelihood="gaussian",
        input_shape=(1, 4, 4),
    )
    theta = net.init(3)
    X = np.random.default_rng(3).standard_normal((3, 1, 4, 4))
    F = minifim.curvature_matrix(net, theta, X)
    K = kfac(net, theta, X)
    sl = net.layer_param_slices()[0]
    assert np.abs(K.layer_block(0) - F[sl, sl]).max() > 1e-3 * np.abs(F[sl, sl]).max()


# --- R = 1: today's K-FAC --------------------------------------------------------------------
@pytest.mark.parametrize("bias", ["folded", "separate"])
@pytest.mark.parametrize("fisher", ["true", "empirical"])
def test_plain_mlp_flavours_are_bit_identical(fisher, bias):
    net = minifim.MLP([3, 4, 2], activation="tanh", likelihood="categorical")
    theta = net.init(0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3))
    y = rng.integers(0, 2, 5)
    K0 = kfac(net, theta, X, y, fisher, bias=bias)
    for approx in ("expand", "reduce"):
        K = kfac(net, theta, X, y, fisher, kfac_approx=approx, bias=bias)
        for l in range(net.num_layers):
            np.testing.assert_array_equal(K.A[l], K0.A[l])
            np.testing.assert_array_equal(K.G[l], K0.G[l])
    assert K0.kfac_approx == "expand"


def test_linear_after_mean_has_one_position():
    """The ``Linear`` after a ``Mean`` has ``R = 1``: its factors agree across the flavours."""
    case = ws_case("seq-reduce")
    Ke, Kr = (kfac(case.net, case.theta, case.X, kfac_approx=ap) for ap in ("expand", "reduce"))
    np.testing.assert_array_equal(Ke.A[1], Kr.A[1])


# --- layers without a bias -----------------------------------------------------------------
@pytest.mark.parametrize("bias", ["folded", "separate"])
def test_bias_free_layers_layout_dense_and_solves(bias):
    case = ws_case("cnn")  # its second conv has no bias
    net = case.net
    K = kfac(net, case.theta, case.X, kfac_approx="reduce", bias=bias)
    assert K.num_params == net.num_params
    assert [lay.has_bias for lay in K.layers] == [True, False, True]
    assert K.A[1].shape == (net.shapes[1][1],) * 2  # no homogeneous coordinate
    M = K.to_dense()
    for l, (lay, sl) in enumerate(zip(K.layers, net.layer_param_slices())):
        assert (lay.start, lay.stop) == (sl.start, sl.stop)
        ref = np.kron(K.G[l], K.A[l])
        if lay.folded:
            o, i = lay.out_dim, lay.in_dim
            rows = np.arange(o)[:, None] * (i + 1)
            idx = np.concatenate([(rows + np.arange(i)).ravel(), rows[:, 0] + i])
            ref = ref[np.ix_(idx, idx)]
        elif lay.has_bias:
            w = lay.bias_start - lay.start
            full = np.zeros((w + lay.out_dim,) * 2)
            full[:w, :w], full[w:, w:] = ref, K.G[l]
            ref = full
        check_close(M[sl, sl], ref, identity_tol(ulps=1), f"block {l}")  # the same products
    assert np.count_nonzero(block_diag(M, net) - M) == 0
    v = np.random.default_rng(1).standard_normal(K.num_params)
    check_elementwise(K.matvec(v), M @ v, product_atol(M, v), "matvec")
    check_close(K.diagonal(), np.diag(M), identity_tol(ulps=1), "diagonal")
    for damping_type in ("eigen", "factored"):
        x = K.solve(v, 0.1, damping_type=damping_type)
        if damping_type == "eigen":
            ref = np.linalg.solve(M + 0.1 * np.eye(K.num_params), v)
            check_close(x, ref, solve_rtol(damped_cond(M, 0.1), K.num_params), "eigen solve")
        else:
            assert np.all(np.isfinite(x)) and x.shape == v.shape
    S = minifim.KFAC(K)
    w = np.sort(S.eigenvalues())
    check_elementwise(w, np.linalg.eigvalsh(M), 8 * K.num_params * 2.3e-16 * np.abs(w).max())
    x = S.solve(v, 0.1)
    check_close(x, np.linalg.solve(M + 0.1 * np.eye(K.num_params), v), 1e-10, "structure solve")
    Z = S.to_eigenbasis(v)
    check_close(S.from_eigenbasis(Z)[:, 0], v, 1e-12, "eigenbasis round trip")


# --- bad input ----------------------------------------------------------------------------------
def test_bad_input():
    case = ws_case("seq-expand")
    with pytest.raises(
        ValueError, match=r"kfac_approx: expected one of \['expand', 'reduce'\], received 'expnad'"
    ):
        kfac(case.net, case.theta, case.X, kfac_approx="expnad")
    K = kfac(case.net, case.theta, case.X)
    with pytest.raises(ValueError, match="has_bias: expected one flag per layer"):
        minifim.KFACFactors(K.A, K.G, "folded", K.shapes, "expand", (True,))
    with pytest.raises(ValueError, match=r"A\[0\], G\[0\]: expected shapes \(3, 3\)"):
        minifim.KFACFactors(K.A, K.G, "folded", K.shapes, "expand", (False, True))
    with pytest.raises(ValueError, match="kfac_approx: expected one of"):
        minifim.KFACFactors(K.A, K.G, "folded", K.shapes, "sideways")
    with pytest.raises(ValueError, match="A, G: expected one factor per layer"):
        minifim.KFACFactors(K.A[:1], K.G, "folded", K.shapes)
