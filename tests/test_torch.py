"""Cross-checks against PyTorch (skipped when torch is missing): the module bridge is bit-exact,
and per-sample scores, output Jacobians, the true and empirical Fisher, the Hessian and the
gradient computed with ``torch.func`` agree with minifim to 1e-12 relative on every shared case
and every fixture preset."""

import numpy as np
import pytest

from .cases import assert_close

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
        mt.from_torch(nn.Sequential(nn.Linear(3, 2, bias=False)))
    with pytest.raises(ValueError, match="mixed hidden activations"):
        mt.from_torch(
            nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        )
    with pytest.raises(ValueError, match="belongs to the likelihood"):
        mt.from_torch(nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=-1)))
    with pytest.raises(ValueError, match="ends with an activation"):
        mt.from_torch(nn.Sequential(nn.Linear(3, 4), nn.Tanh()))
    with pytest.raises(ValueError, match="beta"):
        mt.from_torch(nn.Sequential(nn.Linear(3, 4), nn.Softplus(beta=2.0), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="unsupported module"):
        mt.from_torch(nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="out of place"):
        mt.from_torch(nn.Sequential(nn.Tanh(), nn.Linear(3, 4)))
    with pytest.raises(ValueError, match="no Linear"):
        mt.from_torch(nn.Sequential())
    with pytest.raises(ValueError, match="do not match net.sizes"):
        mt.from_torch(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)), net)
    with pytest.raises(ValueError, match="does not match the net's"):
        mt.from_torch(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), net)
    with pytest.raises(ValueError, match="expects 5 inputs"):
        mt.mlp_from_torch(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(5, 2)))
    with pytest.raises(TypeError, match="MLP"):
        mt.to_torch("net", np.zeros(3))
    with pytest.raises(ValueError, match="theta"):
        mt.to_torch(net, np.zeros(3))
    custom = minifim.MLP([2, 3, 2], activation=lambda z: z * z)
    with pytest.raises(ValueError, match="custom activation"):
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
