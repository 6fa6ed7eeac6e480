"""Memory guard: dense requests over the budget raise MemoryBudgetError naming the bytes and a
cheaper route; the budget's precedence (context, setter, environment, default) and parsing."""

import threading

import numpy as np
import pytest
from cases import get_case

import minifim
from minifim import MemoryBudgetError, format_bytes, memory_budget, memory_limit
from minifim.memory import physical_memory, require_memory, set_memory_budget


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
        ("curvature_matrix", lambda: minifim.curvature_matrix(net, th, X, fisher="argmax"),
         DENSE, "gram"),
        ("square_of_mean_gradient", lambda: minifim.square_of_mean_gradient(net, th, X, y),
         DENSE, "fisher_diagonal"),
        ("kfac.to_dense", lambda: minifim.kfac(net, th, X).to_dense(), DENSE, "blocks()"),
        ("output_jacobians", lambda: minifim.output_jacobians(net, th, X), 8 * N * C * P,
         "jacobian_vector_product"),
        ("per_sample_scores", lambda: minifim.per_sample_scores(net, th, X, y), 8 * N * P,
         "fisher_diagonal"),
    ]


@pytest.mark.parametrize("name,call,needed,route", _guarded_calls(),
                         ids=[c[0] for c in _guarded_calls()])
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


@pytest.mark.parametrize("text,value", [("4G", 4 * 2**30), ("512M", 512 * 2**20),
                                        ("1.5k", 1536), ("1000", 1000), ("2GiB", 2 * 2**30),
                                        ("3 GB", 3 * 2**30), (" 7t ", 7 * 2**40),
                                        ("10b", 10)])
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
