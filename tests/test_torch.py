"""Cross-checks against PyTorch (skipped when torch is missing): the module bridge is bit-exact
both ways (MLPs and Sequential models with Conv2d, Flatten, Mean); per-sample scores, output
Jacobians, the true and empirical Fisher, the Hessian and the gradient computed with
``torch.func`` agree with minifim to 1e-12 relative on every shared case and every fixture
preset; and curvlinops' GGN, Hessian, empirical Fisher and ``KFACLinearOperator`` (both
``kfac_approx``, both bias conventions, ``type-2`` and empirical) agree with minifim on the
weight-sharing presets, the one difference of definition (curvlinops' empirical Fisher of a
positional output counts positions as data points) accounted for exactly."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .cases import SEQUENTIAL_CASES, assert_close

torch = pytest.importorskip("torch")

from minifim.fixtures import PRESETS, make_fixture  # noqa: E402

import minifim  # noqa: E402
from minifim.oracle import torch as mt  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)  # raised inside torch.func

RTOL = 1e-12
KEYS = (
    "scores",
    "jacobians",
    "true_fisher",
    "empirical_fisher",
    "hessian",
    "gradient",
    "outputs",
    "loss",
)


# --- the bridge -------------------------------------------------------------------------------------
def test_to_torch_and_back_is_bit_exact(case):
    net, theta = case.net, case.theta
    module = mt.to_torch(net, theta)
    assert all(p.dtype == torch.float64 for p in module.parameters())
    assert np.array_equal(mt.from_torch(module), theta)
    assert np.array_equal(mt.from_torch(module, net), theta)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    ref = net.to_state_dict(theta)
    assert list(sd) == list(ref)
    for k in ref:
        assert np.array_equal(sd[k], ref[k]), k
    assert np.array_equal(net.from_state_dict(module.state_dict()), theta)
    net2, theta2 = mt.mlp_from_torch(
        module, net.likelihood.name, getattr(net.likelihood, "sigma", 1.0)
    )
    assert net2.sizes == net.sizes and np.array_equal(theta2, theta)
    if net.num_layers > 1:
        assert net2.activation.name == net.activation.name
    with torch.no_grad():
        out = module(torch.from_numpy(case.X)).numpy()
    assert_close(out, net.forward(theta, case.X), 1e-14)


def test_float32_modules_are_widened_exactly():
    lin = torch.nn.Linear(3, 2)  # float32
    module = torch.nn.Sequential(lin)
    theta = mt.from_torch(module)
    assert theta.dtype == np.float64
    assert np.array_equal(theta[:6], lin.weight.detach().numpy().astype(np.float64).ravel())


def test_softplus_matches_beyond_torch_default_threshold():
    net = minifim.MLP([1, 2, 1], "softplus", "gaussian")
    theta = np.array([30.0, 35.0, 0.0, 0.0, 1.0, -1.0, 0.0])
    X = np.array([[1.0]])
    with torch.no_grad():
        out = mt.to_torch(net, theta)(torch.from_numpy(X)).numpy()
    assert_close(out, net.forward(theta, X), 1e-15)


def test_bridge_errors():
    nn = torch.nn
    net = minifim.MLP([3, 4, 2])
    with pytest.raises(TypeError, match="Sequential"):
        mt.from_torch(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="without bias"):
        mt.mlp_from_torch(nn.Sequential(nn.Linear(3, 2, bias=False)))
    with pytest.raises(ValueError, match="mixed hidden activations"):
        mt.mlp_from_torch(
            nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        )
    for bad in (nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=-1)),):
        for convert in (mt.from_torch, mt.mlp_from_torch):
            with pytest.raises(ValueError, match="belongs to the likelihood"):
                convert(bad)
    with pytest.raises(ValueError, match="ends with an activation"):
        mt.mlp_from_torch(nn.Sequential(nn.Linear(3, 4), nn.Tanh()))
    with pytest.raises(ValueError, match="beta"):
        mt.from_torch(nn.Sequential(nn.Linear(3, 4), nn.Softplus(beta=2.0), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="unsupported module Dropout"):
        mt.from_torch(nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="out of place"):
        mt.mlp_from_torch(nn.Sequential(nn.Tanh(), nn.Linear(3, 4)))
    with pytest.raises(ValueError, match="no Linear"):
        mt.from_torch(nn.Sequential())
    with pytest.raises(ValueError, match="do not match|does not match"):
        mt.from_torch(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)), net)
    with pytest.raises(ValueError, match="hidden activation"):
        mt.from_torch(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), net)
    with pytest.raises(ValueError, match="expects 5 inputs"):
        mt.mlp_from_torch(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(5, 2)))
    with pytest.raises(TypeError, match="net: expected a minifim.MLP"):
        mt.to_torch("net", np.zeros(3))
    with pytest.raises(ValueError, match="theta"):
        mt.to_torch(net, np.zeros(3))
    custom = minifim.MLP([2, 3, 2], activation=lambda z: z * z)
    with pytest.raises(ValueError, match="custom"):
        mt.to_torch(custom, custom.init(0))
    with pytest.raises(ValueError, match="quantities"):
        mt.torch_quantities(net, net.init(0), np.ones((1, 3)), [0], ["nope"])


def test_identity_nets_round_trip_through_sequential_without_activation():
    nn = torch.nn
    module = nn.Sequential(
        nn.Linear(3, 4, dtype=torch.float64), nn.Linear(4, 2, dtype=torch.float64)
    )
    net, theta = mt.mlp_from_torch(module, "gaussian", 0.5)
    assert net.activation.name == "identity" and net.likelihood.sigma == 0.5
    X = np.random.default_rng(0).standard_normal((4, 3))
    with torch.no_grad():
        out = module(torch.from_numpy(X)).numpy()
    assert_close(out, net.forward(theta, X), 1e-14)


# --- torch.func cross-checks -------------------------------------------------------------------------
def _minifim_quantities(net, theta, X, y):
    return {
        "scores": minifim.per_sample_scores(net, theta, X, y),
        "jacobians": minifim.output_jacobians(net, theta, X),
        "true_fisher": minifim.true_fisher(net, theta, X),
        "empirical_fisher": minifim.empirical_fisher(net, theta, X, y),
        "hessian": minifim.hessian(net, theta, X, y),
        "gradient": minifim.gradient(net, theta, X, y),
        "outputs": net.forward(theta, X),
        "loss": np.asarray(minifim.loss(net, theta, X, y)),
    }


def test_torch_func_agrees_on_every_case(case):
    ref = mt.torch_quantities(case.net, case.theta, case.X, case.y)
    ours = _minifim_quantities(case.net, case.theta, case.X, case.y)
    for key in KEYS:
        assert_close(ours[key], ref[key], RTOL, what=key)


@pytest.mark.parametrize("name", list(PRESETS))
def test_torch_func_agrees_on_every_preset(name):
    fx = make_fixture(name)
    ref = mt.torch_quantities(fx.net, fx.theta, fx.X, fx.y)
    for key in KEYS:
        assert_close(fx[key], ref[key], RTOL, what=key)
    # the fixture's Fisher diagonal and eigenvalues against the torch Fisher
    assert_close(fx["fisher_diagonal"], np.diag(ref["true_fisher"]), RTOL)
    eig = np.linalg.eigvalsh(ref["true_fisher"])[::-1]
    assert_close(fx["fisher_eigenvalues"], eig, 1e-11)


def test_torch_output_fisher_matches_away_from_saturation():
    fx = make_fixture("bernoulli-sigmoid")
    ref = mt.torch_quantities(fx.net, fx.theta, fx.X, fx.y, ["output_fisher"])
    assert_close(fx["output_fisher"], ref["output_fisher"], 1e-14)


# --- using a fixture from torch code ------------------------------------------------------------------
def test_fixture_to_torch_and_assert_matches_with_tensors():
    from torch.func import functional_call, grad, vmap

    fx = make_fixture("categorical-relu")
    module, X, y = mt.fixture_to_torch(fx)
    assert y.dtype == torch.int64 and X.dtype == torch.float64
    params = {k: v.detach() for k, v in module.named_parameters()}

    def log_p(p, x, t):
        logits = functional_call(module, p, (x[None],))[0]
        return torch.log_softmax(logits, -1).gather(0, t[None])[0]

    per_sample = vmap(grad(log_p), in_dims=(None, 0, 0))(params, X, y)
    S = torch.cat([per_sample[k].reshape(len(X), -1) for k in params], dim=1)
    F_emp = S.T @ S / len(X)
    minifim.assert_matches(fx, "empirical_fisher", F_emp, rtol=1e-12)
    minifim.assert_matches(fx, "scores", S, rtol=1e-12)
    with pytest.raises(AssertionError, match="sum instead of mean"):
        minifim.assert_matches(fx, "empirical_fisher", S.T @ S)


# --- Sequential models: Conv2d, Flatten, Mean, positions ----------------------------------------------
LAYERED = ["cnn-digits", "sequence-expand", "sequence-reduce"]
_FIXTURES = {}


def _fixture(name):
    if name not in _FIXTURES:
        _FIXTURES[name] = make_fixture(name)
    return _FIXTURES[name]


@pytest.mark.parametrize("name", LAYERED)
def test_sequential_round_trip_is_bit_exact(name):
    fx = _fixture(name)
    net, theta = fx.net, fx.theta
    module = mt.to_torch(net, theta)
    assert len(module) == len(net.layers)
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    assert list(sd) == list(fx.state_dict())
    for k, v in fx.state_dict().items():
        assert np.array_equal(sd[k], v), k
    assert np.array_equal(mt.from_torch(module, net), theta)
    net2, theta2 = mt.sequential_from_torch(
        module, net.input_shape, net.likelihood.name, getattr(net.likelihood, "sigma", 1.0)
    )
    assert net2.config() == net.config() and np.array_equal(theta2, theta)
    with torch.no_grad():
        out = module(torch.from_numpy(fx.X.copy())).numpy()
    assert out.shape == fx["outputs"].shape
    assert_close(out, fx["outputs"], 1e-14)


def test_sequential_from_a_hand_built_module():
    """Every supported module type and option: stride, padding, dilation, bias=False, a Flatten
    of some axes only, the bridge's Mean, float32 weights (widened exactly)."""
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), bias=False),
        nn.Softplus(),
        nn.Conv2d(3, 2, 2, padding="valid"),
        nn.Flatten(2, 3),  # (N, 2, H W): positions H W, features on the last axis after Linear
        mt.Mean(2),
        nn.Sigmoid(),
        nn.Linear(2, 3),
    )
    net, theta = mt.sequential_from_torch(module, (2, 7, 6), "gaussian", 0.5)
    assert [type(layer).__name__ for layer in net.layers] == [
        "Conv2d",
        "Softplus",
        "Conv2d",
        "Flatten",
        "Mean",
        "Sigmoid",
        "Linear",
    ]
    assert net.layers[0].bias is False and net.layers[0].dilation == (1, 2)
    assert theta.dtype == np.float64 and theta.shape == (net.num_params,)
    assert np.array_equal(
        theta[: 3 * 2 * 3 * 2], module[0].weight.detach().double().numpy().ravel()
    )
    X = np.random.default_rng(0).standard_normal((3, 2, 7, 6))
    with torch.no_grad():
        ref = module.double()(torch.from_numpy(X)).numpy()
    assert_close(net.forward(theta, X), ref, 1e-13)
    back = mt.to_torch(net, theta)
    assert isinstance(back[4], mt.Mean) and back[4].axis == 2
    assert np.array_equal(mt.from_torch(back, net), theta)


def test_sequential_bridge_errors():
    nn = torch.nn
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="input_shape: required"):
        mt.sequential_from_torch(conv)
    with pytest.raises(ValueError, match="input_shape"):
        mt.sequential_from_torch(conv, (1, 5, 5))  # 3 x 3 outputs, not 2 x 2
    with pytest.raises(ValueError, match="groups"):
        mt.sequential_from_torch(nn.Sequential(nn.Conv2d(2, 2, 1, groups=2)), (2, 3, 3))
    with pytest.raises(ValueError, match="padding_mode"):
        mt.sequential_from_torch(
            nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")), (1, 4, 4)
        )
    with pytest.raises(ValueError, match="padding='same'"):
        mt.sequential_from_torch(nn.Sequential(nn.Conv2d(1, 1, 3, padding="same")), (1, 4, 4))
    with pytest.raises(ValueError, match="unsupported module MaxPool2d"):
        mt.sequential_from_torch(nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2)), (1, 6, 6))
    with pytest.raises(ValueError, match="axis"):
        mt.Mean(0)
    net = _fixture("cnn-digits").net
    other = mt.to_torch(net, net.init(0))
    other[2] = nn.Conv2d(3, 4, 2, dilation=1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"module\[2\].*does not match"):
        mt.from_torch(other, net)


@pytest.mark.parametrize("name", LAYERED)
def test_torch_func_agrees_on_the_weight_sharing_presets(name):
    """Scores (a sample's log-likelihood summed over positions), Jacobians ``(N, *out, P)``, the
    true Fisher with one output block per position, the empirical Fisher, Hessian, gradient."""
    fx = _fixture(name)
    ref = mt.torch_quantities(fx.net, fx.theta, fx.X, fx.y, list(KEYS) + ["output_fisher"])
    for key in KEYS + ("output_fisher",):
        assert fx[key].shape == ref[key].shape, key
        assert_close(fx[key], ref[key], RTOL, what=key)


# --- curvlinops ---------------------------------------------------------------------------------------
def _per_position_scores(fx):
    """``(N, R, P)``: the score of each position's own loss term in the expand preset. Its dense
    layers act on every position separately, so position ``r``'s term is an MLP's on row
    ``(n, r)`` with the same parameters."""
    net = fx.net
    N, R, D = fx.X.shape
    mlp = minifim.MLP([D, 5, net.output_dim], "tanh", "categorical")
    S = minifim.per_sample_scores(mlp, fx.theta, fx.X.reshape(N * R, D), fx.y.reshape(N * R))
    return S.reshape(N, R, -1)


@pytest.mark.parametrize("name", LAYERED)
def test_curvlinops_ggn_hessian_and_empirical_fisher(name):
    pytest.importorskip("curvlinops")
    fx = _fixture(name)
    ref = mt.curvlinops_quantities(
        fx.net, fx.theta, fx.X, fx.y, ["ggn", "hessian", "empirical_fisher"]
    )
    assert_close(ref["ggn"], fx["ggn"], RTOL, what="ggn")
    assert_close(ref["hessian"], fx["hessian"], 1e-11, what="hessian")
    if not fx.net.has_positions:
        assert_close(ref["empirical_fisher"], fx["empirical_fisher"], RTOL, what="EF")
        return
    # curvlinops: positions are data points, sum_{n,r} g_nr g_nr^T / N; minifim: a sample is
    # the whole sequence, sum_n s_n s_n^T / N with s_n = sum_r g_nr. Both from the per-position
    # scores, which sum to the fixture's scores:
    G = _per_position_scores(fx)
    N = fx.N
    assert_close(G.sum(axis=1), fx["scores"], 1e-13, what="sum of position scores")
    per_term = np.einsum("nrp,nrq->pq", G, G) / N
    assert_close(ref["empirical_fisher"], per_term, RTOL, what="curvlinops EF")
    cross = fx["empirical_fisher"] - per_term  # sum over r != r' of g_nr g_nr'^T / N
    assert_close(cross, (np.einsum("np,nq->pq", G.sum(1), G.sum(1)) - N * per_term) / N, 1e-12)
    assert np.linalg.norm(cross) > 0.1 * np.linalg.norm(fx["empirical_fisher"])  # a real gap


@pytest.mark.parametrize("name", LAYERED)
@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_curvlinops_kfac_matches_both_flavours(name, approx):
    """``KFACLinearOperator(kfac_approx=...)``, type-2 and empirical, both bias conventions,
    against minifim's K-FAC (and the fixture's stored factors)."""
    pytest.importorskip("curvlinops")
    fx = _fixture(name)
    for bias in ("separate", "folded"):
        ref = mt.curvlinops_quantities(
            fx.net, fx.theta, fx.X, fx.y, ["kfac_true", "kfac_empirical"], approx, bias
        )
        for fisher, key in (("true", "kfac_true"), ("empirical", "kfac_empirical")):
            ours = fx.kfac(fisher, bias, approx).to_dense()
            if fisher == "true" and approx == "reduce" and fx.net.has_positions:
                if bias == "separate":
                    _explain_type2_reduce_gap(fx, ours, ref[key])
                continue
            assert_close(ours, ref[key], RTOL, what=f"{fisher} {bias} {approx}")


def _explain_type2_reduce_gap(fx, ours, theirs):
    """K-FAC-reduce of a positional output, ``type-2``: curvlinops backpropagates column ``c`` of
    the loss Hessian's square root ``S_r = diag(sqrt p_r) - p_r sqrt(p_r)^T`` (column ``c``:
    ``sqrt(p_rc) (e_c - p_r)``) of EVERY position at
    once, and reduce sums the layer's output gradients over positions, so its G holds the cross
    terms ``sum_c S_r[:, c] S_r'[:, c]^T = S_r S_r'^T`` (r != r'), which depend on the choice of
    square root. minifim takes the exact expectation over the labels, drawn per position and class:
    the cross terms are zero (E[g_r g_r'^T] = E[g_r] E[g_r']^T = 0). Shown exactly on the last
    layer's bias block, which is G itself."""
    net, N = fx.net, fx.N
    f = fx["outputs"]
    p = np.exp(f - np.logaddexp.reduce(f, axis=-1, keepdims=True))  # (N, R, C)
    sq = np.sqrt(p)
    S = np.einsum("nrc,cd->nrcd", sq, np.eye(p.shape[-1])) - p[..., :, None] * sq[..., None, :]
    lam = fx["output_fisher"]
    assert_close(np.einsum("nrcd,nred->nrce", S, S), lam, 1e-14, what="S S^T = Lambda")
    cols = S.sum(axis=1)  # (N, C, C): column c of every position's S, summed
    bs = net.layer_slices[-1][1]
    assert_close(theirs[bs, bs], np.einsum("nic,njc->ij", cols, cols) / N, RTOL, what="theirs")
    assert_close(ours[bs, bs], lam.sum(axis=(0, 1)) / N, RTOL, what="ours")
    gap = np.linalg.norm(theirs[bs, bs] - ours[bs, bs]) / np.linalg.norm(ours[bs, bs])
    assert gap > 0.1  # the cross terms are not small


# --- BackPACK: a third implementation of per-sample gradients and the GGN diagonal ------------------
@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
def test_backpack_per_sample_gradients_and_ggn_diagonal_on_the_cnn():
    """BackPACK's ``BatchGrad`` (per-sample gradients of the summed loss, through its own
    unfold-based convolution derivatives) and ``DiagGGNExact`` (the exact GGN diagonal, from
    symmetric factorisations of the loss Hessian) against the fixture's scores and Fisher diagonal
    (GGN = Fisher for the softmax likelihood); BackPACK has no extension for the bridge's Mean,
    so the CNN preset is its case."""
    backpack = pytest.importorskip("backpack")
    from backpack.extensions import BatchGrad, DiagGGNExact

    fx = _fixture("cnn-digits")
    model = backpack.extend(mt.to_torch(fx.net, fx.theta))
    loss = backpack.extend(torch.nn.CrossEntropyLoss(reduction="sum"))
    value = loss(model(torch.from_numpy(fx.X.copy())), torch.from_numpy(np.array(fx.y)))
    with backpack.backpack(BatchGrad(), DiagGGNExact()):
        value.backward()
    params = list(model.parameters())
    S = torch.cat([p.grad_batch.reshape(fx.N, -1) for p in params], dim=1).numpy()
    diag = torch.cat([p.diag_ggn_exact.reshape(-1) for p in params]).numpy()
    assert_close(-S, fx["scores"], RTOL, what="per-sample gradients = -scores")
    assert_close(diag / fx.N, fx["fisher_diagonal"], RTOL, what="GGN diagonal / N")


# --- the shared Sequential cases: every likelihood, bias=False, positional Bernoulli/Gaussian ------
@pytest.mark.parametrize("scase", SEQUENTIAL_CASES, ids=[c.name for c in SEQUENTIAL_CASES])
def test_torch_and_curvlinops_agree_on_the_sequential_cases(scase):
    net, theta, X, y = scase.net, scase.theta, scase.X, scase.y
    module = mt.to_torch(net, theta)
    assert np.array_equal(mt.from_torch(module, net), theta)
    ref = mt.torch_quantities(net, theta, X, y)
    ours = _minifim_quantities(net, theta, X, y)
    for key in KEYS:
        assert_close(ours[key], ref[key], RTOL, what=key)
    pytest.importorskip("curvlinops")
    quantities = ["ggn", "hessian", "kfac_true", "kfac_empirical"]
    G = minifim.ggn(net, theta, X)
    for approx in ("expand", "reduce"):
        cl = mt.curvlinops_quantities(net, theta, X, y, quantities, approx, "separate")
        if approx == "expand":
            assert_close(cl["ggn"], G, RTOL, what="ggn")
            assert_close(cl["hessian"], ours["hessian"], 1e-11, what="hessian")
        for fisher in ("true", "empirical"):
            if fisher == "true" and approx == "reduce" and net.has_positions:
                continue  # curvlinops' type-2 reduce adds S_r S_r'^T (see above)
            K = minifim.kfac(
                net,
                theta,
                X,
                y if fisher == "empirical" else None,
                fisher,
                bias="separate",
                kfac_approx=approx,
            ).to_dense()
            assert_close(K, cl[f"kfac_{fisher}"], RTOL, what=f"kfac {fisher} {approx}")


# --- convolution geometry: minifim's im2col against torch's own convolution ---------------------------
@st.composite
def _conv_configs(draw):
    """A Conv2d whose dilated kernel fits the padded input, with its input shape."""
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    span = [d[i] * (k[i] - 1) + 1 for i in range(2)]
    hw = [draw(st.integers(max(1, span[i] - 2 * p[i]), span[i] + 4)) for i in range(2)]
    cin, cout = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    bias = draw(st.booleans())
    return cin, cout, k, s, p, d, bias, (cin, *hw)


@given(_conv_configs(), st.integers(0, 2**16))
def test_conv_forward_and_input_gradient_match_torch(config, seed):
    """Every stride / padding / dilation / kernel combination: minifim's forward (im2col) and
    its batched backprop (col2im, the scores) against torch's native conv2d and autograd."""
    cin, cout, k, s, p, d, bias, shape = config
    L = minifim.layers
    net = minifim.Sequential(
        [L.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, bias=bias), L.Flatten()],
        likelihood="gaussian",
        input_shape=shape,
    )
    rng = np.random.default_rng(seed)
    theta = net.init(rng)
    X = rng.standard_normal((2, *shape))
    module = mt.to_torch(net, theta)
    Xt = torch.from_numpy(X.copy())
    with torch.no_grad():
        ref = module(Xt).numpy()
    assert_close(net.forward(theta, X), ref, 1e-13, what="forward")
    y = rng.standard_normal(ref.shape)
    ours = minifim.per_sample_scores(net, theta, X, y)
    theirs = mt.torch_quantities(net, theta, X, y, ["scores"])["scores"]
    assert_close(ours, theirs, 1e-12, what="scores")
