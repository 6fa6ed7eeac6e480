"""Memory guard: dense requests over the budget raise MemoryBudgetError naming the bytes and a
cheaper route; the budget's precedence (context, setter, environment, default) and parsing."""

import threading

import numpy as np
import pytest

import minifim
from minifim import MemoryBudgetError, format_bytes, memory_budget, memory_limit
from minifim.memory import physical_memory, require_memory, set_memory_budget

from .cases import get_case


@pytest.fixture(autouse=True)
def _clean_budget(monkeypatch):
    monkeypatch.delenv("MINIFIM_MEMORY_BUDGET", raising=False)
    set_memory_budget(None)
    yield
    set_memory_budget(None)


CASE = get_case("categorical-tanh-3x4x3")  # P = 31, N = 5, C = 3
P, N, C = CASE.P, CASE.N, 3
DENSE = 8 * P * P


def _guarded_calls():
    net, th, X, y = CASE.net, CASE.theta, CASE.X, CASE.y
    return [
        ("true_fisher", lambda: minifim.true_fisher(net, th, X), DENSE, "fisher_diagonal"),
        ("empirical_fisher", lambda: minifim.empirical_fisher(net, th, X, y), DENSE, "kfac"),
        ("mc_fisher", lambda: minifim.mc_fisher(net, th, X, 1, 0), DENSE, "fisher_operator"),
        ("ggn", lambda: minifim.ggn(net, th, X), DENSE, "block_diagonal"),
        ("hessian", lambda: minifim.hessian(net, th, X, y), DENSE, "fisher_diagonal"),
        (
            "curvature_matrix",
            lambda: minifim.curvature_matrix(net, th, X, fisher="argmax"),
            DENSE,
            "gram",
        ),
        (
            "square_of_mean_gradient",
            lambda: minifim.square_of_mean_gradient(net, th, X, y),
            DENSE,
            "fisher_diagonal",
        ),
        ("kfac.to_dense", lambda: minifim.kfac(net, th, X).to_dense(), DENSE, "blocks()"),
        (
            "output_jacobians",
            lambda: minifim.output_jacobians(net, th, X),
            8 * N * C * P,
            "jacobian_vector_product",
        ),
        (
            "per_sample_scores",
            lambda: minifim.per_sample_scores(net, th, X, y),
            8 * N * P,
            "fisher_diagonal",
        ),
    ]


@pytest.mark.parametrize(
    "name,call,needed,route", _guarded_calls(), ids=[c[0] for c in _guarded_calls()]
)
def test_guard_raises_with_bytes_and_cheaper_route(name, call, needed, route):
    with memory_limit(needed - 1):
        with pytest.raises(MemoryBudgetError) as info:
            call()
    msg = str(info.value)
    assert f"needs {format_bytes(needed)}" in msg, msg
    assert f"budget of {format_bytes(needed - 1)}" in msg
    assert route in msg and "Cheaper route" in msg
    assert "set_memory_budget" in msg and "MINIFIM_MEMORY_BUDGET" in msg
    with memory_limit(needed):  # exactly the budget is allowed
        call()


def test_cheaper_routes_work_under_the_budget():
    net, th, X = CASE.net, CASE.theta, CASE.X
    F = minifim.true_fisher(net, th, X)
    v = np.ones(P)
    with memory_limit(DENSE - 1):
        np.testing.assert_allclose(minifim.fisher_diagonal(net, th, X), np.diag(F), rtol=1e-13)
        np.testing.assert_allclose(minifim.fisher_operator(net, th, X) @ v, F @ v, rtol=1e-12)
        minifim.kfac(net, th, X).matvec(v)
        blocks = minifim.block_diagonal(net, th, X)
    assert len(blocks) == 2


def test_is_a_memory_error():
    assert issubclass(MemoryBudgetError, MemoryError)
    with memory_limit(10):
        with pytest.raises(MemoryError):
            require_memory(11, "thing", "other")


def test_precedence_and_restoration(monkeypatch):
    default = memory_budget()
    assert default == int(0.5 * physical_memory())
    monkeypatch.setenv("MINIFIM_MEMORY_BUDGET", "3M")
    assert memory_budget() == 3 * 2**20
    set_memory_budget(12345)
    assert memory_budget() == 12345
    with memory_limit(100) as b:
        assert b == 100 and memory_budget() == 100
        with memory_limit(7):
            assert memory_budget() == 7
        assert memory_budget() == 100
    assert memory_budget() == 12345
    set_memory_budget(None)
    assert memory_budget() == 3 * 2**20
    monkeypatch.delenv("MINIFIM_MEMORY_BUDGET")
    assert memory_budget() == default
    # the context is restored after an exception
    with pytest.raises(MemoryBudgetError):
        with memory_limit(1):
            require_memory(2, "x", "y")
    assert memory_budget() == default


def test_context_is_thread_local():
    seen = {}

    def worker():
        seen["budget"] = memory_budget()

    with memory_limit(64):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert memory_budget() == 64
    assert seen["budget"] != 64


@pytest.mark.parametrize(
    "text,value",
    [
        ("4G", 4 * 2**30),
        ("512M", 512 * 2**20),
        ("1.5k", 1536),
        ("1000", 1000),
        ("2GiB", 2 * 2**30),
        ("3 GB", 3 * 2**30),
        (" 7t ", 7 * 2**40),
        ("10b", 10),
    ],
)
def test_environment_parsing(monkeypatch, text, value):
    monkeypatch.setenv("MINIFIM_MEMORY_BUDGET", text)
    assert memory_budget() == value


@pytest.mark.parametrize("text", ["abc", "-5", "0", "inf", "nan", "G", "1e400", "0.5"])
def test_environment_parsing_errors(monkeypatch, text):
    monkeypatch.setenv("MINIFIM_MEMORY_BUDGET", text)
    with pytest.raises(ValueError, match="MINIFIM_MEMORY_BUDGET: expected a positive size"):
        memory_budget()


@pytest.mark.parametrize("bad", [0, -1, 0.5, "1G", True, None, float("nan"), float("inf")])
def test_setter_and_context_bad_values(bad):
    if bad is not None:
        with pytest.raises(ValueError, match="nbytes: expected a positive number of bytes"):
            set_memory_budget(bad)
    with pytest.raises(ValueError, match="nbytes: expected a positive number of bytes"):
        with memory_limit(bad):
            pass


def test_format_bytes():
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1024) == "1.00 KiB"
    assert format_bytes(3 * 2**30) == "3.00 GiB"
    assert format_bytes(1.5 * 2**20) == "1.50 MiB"
    assert format_bytes(2**50) == "1024.00 TiB"


def test_numpy_integers_accepted():
    set_memory_budget(np.int64(4096))
    assert memory_budget() == 4096
    with memory_limit(np.float64(2048.0)):
        assert memory_budget() == 2048


# --- every dense allocation is guarded: measured peak vs budget (issue 12, item 7) -------------
# A wide output layer makes the output-space arrays (N, C, C) and the K-FAC blocks the large
# objects: N C^2 = 4.9 MiB and the last layer's block (C (H + 1))^2 = 9.4 MiB exceed the budget,
# while the factors, diagonals and products are small. Each route must either stay within the
# budget (measured by tracemalloc, which sees every NumPy allocation) or refuse up front with a
# MemoryBudgetError naming a cheaper route, before allocating more than the budget.
_WIDE_N, _WIDE_C = 160, 64
_WIDE_BUDGET = 2 * 2**20


def _wide_case():
    rng = np.random.default_rng(3)
    net = minifim.MLP([4, 16, _WIDE_C])
    theta = net.init(0)
    X = rng.standard_normal((_WIDE_N, 4))
    y = rng.integers(0, _WIDE_C, _WIDE_N)
    return net, theta, X, y


def _wide_routes():
    net, th, X, y = _wide_case()
    P = net.num_params
    fac = minifim.kfac(net, th, X)
    la = minifim.Laplace(net, th, X, y, structure="diag")
    return {
        "kfac": lambda: minifim.kfac(net, th, X),
        "kfac_ggn": lambda: minifim.kfac(net, th, X, fisher="ggn"),
        "kfac_chunked": lambda: minifim.kfac(net, th, X, chunk_size=_WIDE_N),
        "kfac.blocks": fac.blocks,
        "kfac.layer_block": lambda: fac.layer_block(1),
        "kfac.to_dense": fac.to_dense,
        "kfac.solve": lambda: fac.solve(np.ones(P), 1e-3),
        "fisher_diagonal": lambda: minifim.fisher_diagonal(net, th, X),
        "block_diagonal": lambda: minifim.block_diagonal(net, th, X),
        "fisher_operator": lambda: minifim.fisher_operator(net, th, X) @ np.ones(P),
        "ngd_cg": lambda: minifim.natural_gradient(net, th, X, y, 1.0, method="cg", tol=1e-6),
        "ngd_woodbury": lambda: minifim.natural_gradient(net, th, X, y, 1.0, method="woodbury"),
        "ngd_kfac": lambda: minifim.natural_gradient(net, th, X, y, 1e-1, structure="kfac"),
        "ngd_diag": lambda: minifim.natural_gradient(net, th, X, y, 1e-1, structure="diag"),
        "spectrum_lanczos": lambda: minifim.fisher_spectrum(net, th, X, method="lanczos", k=2),
        "laplace_kfac": lambda: minifim.Laplace(net, th, X, y, structure="kfac"),
        "laplace_functional": lambda: la.functional_posterior(X),
        "laplace_variance": lambda: la.functional_variance(X),
        "laplace_probit": lambda: la.predictive(X),
        "laplace_link_mc": lambda: la.predictive(X, link_approx="mc", n_draws=64, rng=0),
        "laplace_mc": lambda: la.predictive(X, pred_type="nn", n_draws=64, rng=0),
        "merge_block": lambda: minifim.fisher_merge(
            net, [th, th], data=[(X, y), (X, y)], structure="block", damping=1.0
        ),
        "merge_diag": lambda: minifim.fisher_merge(
            net, [th, th], data=[(X, y), (X, y)], damping=1.0
        ),
        "prune_obd": lambda: minifim.prune(net, th, X, y, 0.5, "obd"),
    }


@pytest.mark.parametrize("name", list(_wide_routes()))
def test_routes_stay_within_the_budget_or_refuse(name):
    import tracemalloc

    call = _wide_routes()[name]
    tracemalloc.start()
    try:
        with memory_limit(_WIDE_BUDGET):
            try:
                call()
                refused = None
            except MemoryBudgetError as err:
                refused = str(err)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # refusals happen before the big allocation; what runs keeps its peak within the budget
    # (plus a few KiB of Python bookkeeping)
    assert peak <= _WIDE_BUDGET + 2**16, (name, format_bytes(peak), refused)
    if refused is not None:
        assert "Cheaper route" in refused


def test_kfac_refusals_name_a_cheaper_route_not_an_equal_one():
    net, th, X, _ = _wide_case()
    fac = minifim.kfac(net, th, X)
    one_layer = minifim.kfac(minifim.MLP([4, _WIDE_C]), minifim.MLP([4, _WIDE_C]).init(0), X)
    P1 = one_layer.num_params
    with memory_limit(8 * P1 * P1 - 1):
        with pytest.raises(MemoryBudgetError) as info:
            one_layer.to_dense()
    # one layer: blocks() is the dense matrix itself, so it is not offered
    msg = str(info.value)
    assert "blocks()" not in msg and ".matvec" in msg and ".solve" in msg
    assert ".diagonal()" in msg
    with memory_limit(8 * P1 * P1 - 1), pytest.raises(MemoryBudgetError, match="matvec"):
        one_layer.blocks()
    with memory_limit(_WIDE_BUDGET), pytest.raises(MemoryBudgetError) as info:
        fac.layer_block(1)
    o, i = fac.shapes[1]
    assert f"needs {format_bytes(8 * (o * i + o) ** 2)}" in str(info.value)
    # the cheaper routes named work under that budget and agree with the dense block
    v = np.random.default_rng(0).standard_normal(fac.num_params)
    dense = fac.to_dense()
    with memory_limit(_WIDE_BUDGET):
        np.testing.assert_array_equal(fac.diagonal(), np.diag(dense))
        mv = fac.matvec(v)
    scale = np.abs(dense) @ np.abs(v)
    assert np.all(np.abs(mv - dense @ v) <= 4 * fac.num_params * np.finfo(float).eps * scale)


def test_kfac_blocks_equal_the_dense_slices_without_a_kron_temporary():
    net, th, X, _ = _wide_case()
    for bias in ("folded", "separate"):
        fac = minifim.kfac(net, th, X[:20], bias=bias)
        dense = fac.to_dense()
        for l, sl in enumerate(net.layer_param_slices()):
            block = fac.layer_block(l)
            # the same products G_ab A_cd, only placed differently: bit-equal
            np.testing.assert_array_equal(block, dense[sl, sl])
            o, i = fac.shapes[l]
            if bias == "separate":
                np.testing.assert_array_equal(block[: o * i, : o * i], np.kron(fac.G[l], fac.A[l]))


@pytest.mark.parametrize("likelihood", ["categorical", "bernoulli", "gaussian"])
@pytest.mark.parametrize("method", ["fisher_outputs", "fisher_factor", "hessian_outputs"])
def test_public_output_space_arrays_are_guarded(likelihood, method):
    """``Likelihood.fisher_outputs``/``fisher_factor``/``hessian_outputs`` allocate (N, C, C)."""
    lik = minifim.get_likelihood(likelihood)
    N, C = 50, 40
    F = np.random.default_rng(0).standard_normal((N, C))
    needed = 8 * N * C * C
    with memory_limit(needed - 1):
        with pytest.raises(MemoryBudgetError, match=r"\(N, C, C\).*Cheaper route: .*chunks"):
            getattr(lik, method)(F)
    with memory_limit(needed):
        out = getattr(lik, method)(F)
    assert out.shape[0] == N and out.shape[-1] == C
