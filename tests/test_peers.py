"""``minifim.tools.peers``: every installed peer's route computes minifim's quantity.

Each peer is skipped when its package is absent (the ``make test`` venv has none of them).
On a small MLP every (peer, quantity) route must agree with minifim to rounding: every entry
is a sum over the ``N`` samples of products accumulated through the ``C`` outputs and the ``P``
parameters (the chain rule's inner products, the ``J^T Lambda J`` contraction), so two correct
float64 evaluations in different orders differ by at most ``~ (P + N C) eps`` of the largest
entry; ``c = 8`` covers the few products per term. A convention error (a sum for a mean, a
loss for a log-likelihood, a missing ``1/N``) is ``>= 1e-2`` here.
"""

from __future__ import annotations

import numpy as np
import pytest

import minifim
from minifim.tools import peers

EPS = float(np.finfo(np.float64).eps)
SIZES = [4, 5, 3]
N = 7
M = 3  # columns of V
MODULES = {
    "torch.func": "torch",
    "backpack": "backpack",
    "curvlinops": "curvlinops",
    "nngeometry": "nngeometry",
    "jax": "jax",
}
EXPECTED = {  # the quantities each peer computes naturally
    "torch.func": set(peers.QUANTITIES),
    "backpack": {"scores", "true_fisher"},
    "curvlinops": {"true_fisher", "hessian", "fisher_block", "hessian_block"},
    "nngeometry": {"true_fisher", "fisher_block"},
    "jax": set(peers.QUANTITIES),
}

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning"),
]


@pytest.fixture(scope="module")
def problem():
    net = minifim.MLP(SIZES)
    rng = np.random.default_rng(7)
    theta = net.init(0)
    X = rng.standard_normal((N, SIZES[0]))
    y = rng.integers(0, SIZES[-1], N)
    V = rng.standard_normal((net.num_params, M))
    return net, theta, X, y, V


@pytest.fixture(scope="module")
def reference(problem):
    net, theta, X, y, V = problem
    return {
        "scores": minifim.per_sample_scores(net, theta, X, y),
        "true_fisher": minifim.true_fisher(net, theta, X),
        "hessian": minifim.hessian(net, theta, X, y),
        "fisher_block": minifim.fisher_operator(net, theta, X) @ V,
        "hessian_block": minifim.hessian_operator(net, theta, X, y) @ V,
    }


def test_interface_constants():
    assert peers.PEERS == ("torch.func", "backpack", "curvlinops", "nngeometry", "jax")
    assert peers.QUANTITIES == (
        "scores",
        "true_fisher",
        "hessian",
        "fisher_block",
        "hessian_block",
    )


def test_available_is_names_to_versions():
    found = peers.available()
    assert isinstance(found, dict)
    assert set(found) <= set(peers.PEERS)
    assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in found.items())


def test_unknown_peer_is_a_value_error(problem):
    net, theta, X, y, V = problem
    with pytest.raises(ValueError, match="peers") as err:
        peers.peer_routes(net, theta, X, y, V, peers=["nope"])
    assert "nope" in str(err.value) and "torch.func" in str(err.value)


def test_non_categorical_net_is_a_value_error(problem):
    _, theta, X, _, _ = problem
    net = minifim.MLP(SIZES, likelihood="gaussian")
    with pytest.raises(ValueError, match="net"):
        peers.peer_routes(net, theta, X, np.zeros((N, SIZES[-1])))


@pytest.mark.parametrize("peer", peers.PEERS)
def test_routes_agree_with_minifim(peer, problem, reference):
    pytest.importorskip(MODULES[peer])
    net, theta, X, y, V = problem
    routes = peers.peer_routes(net, theta, X, y, V, peers=[peer])
    assert {p for p, _ in routes} == {peer}
    assert {q for _, q in routes} == EXPECTED[peer]
    P, C = net.num_params, SIZES[-1]
    bound = 8 * (P + N * C) * EPS  # relative to the largest entry; see the module docstring
    for (_, quantity), route in routes.items():
        ref = reference[quantity]
        for call in range(2):  # a route can be called again (the bench times it repeatedly)
            out = route()
            assert isinstance(out, np.ndarray) and out.dtype == np.float64, quantity
            assert out.shape == ref.shape, quantity
            err = np.max(np.abs(out - ref)) / np.max(np.abs(ref))
            assert err <= bound, f"{peer} {quantity} (call {call}): {err:.2e} > {bound:.2e}"


@pytest.mark.parametrize("peer", peers.PEERS)
def test_no_block_without_V(peer, problem):
    pytest.importorskip(MODULES[peer])
    net, theta, X, y, _ = problem
    routes = peers.peer_routes(net, theta, X, y, peers=peer)
    assert {q for _, q in routes} == EXPECTED[peer] - set(peers.BLOCK_QUANTITIES)


def test_jax_needs_an_mlp(problem):
    pytest.importorskip("jax")
    _, _, X, _, _ = problem
    net = minifim.Sequential(
        [
            {"type": "Linear", "in_features": 4, "out_features": 5},
            {"type": "Tanh"},
            {"type": "Linear", "in_features": 5, "out_features": 3},
        ],
        input_shape=(4,),
    )
    theta = net.init(0)
    y = np.arange(N) % 3
    with pytest.raises(ValueError, match="net"):
        peers.peer_routes(net, theta, X, y, peers=["jax"])
    assert all(p != "jax" for p, _ in peers.peer_routes(net, theta, X, y))


def test_output_positions_are_a_value_error():
    net = minifim.Sequential(
        [{"type": "Linear", "in_features": 4, "out_features": 3}], input_shape=(2, 4)
    )
    X = np.random.default_rng(0).standard_normal((N, 2, 4))
    y = np.zeros((N, 2), dtype=int)
    with pytest.raises(ValueError, match="net"):
        peers.peer_routes(net, net.init(0), X, y)
