"""``minifim._parallel``: pieces on a thread pool with the BLAS pinned, and the routes built on
it giving the same bits at every thread count."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import minifim
from minifim._parallel import blas_threads, map_pinned

from .cases import make_case


def test_map_pinned_keeps_order_pins_the_blas_and_raises():
    seen = []

    def piece(i):
        seen.append(blas_threads())
        return i * i

    with threadpool_limits(limits=2, user_api="blas"):
        assert blas_threads() == 2
        assert map_pinned(piece, range(7)) == [i * i for i in range(7)]
        assert blas_threads() == 2  # restored after the pool
    assert set(seen) == {1}  # every piece ran with one BLAS thread
    assert map_pinned(piece, [], threads=3) == []

    def fails(i):
        if i == 3:
            raise ValueError("piece 3")
        return i

    with pytest.raises(ValueError, match="piece 3"):
        map_pinned(fails, range(5), threads=2)


@pytest.mark.parametrize("quantity", ["true_fisher", "hessian"])
def test_dense_assembly_is_the_same_bits_at_any_thread_count(quantity, monkeypatch):
    """Panels of :func:`minifim.geometry.assembly.add_layer_pair` (several per layer pair,
    forced by a small panel budget) and the mirror run as a pool: 1 and 2 threads agree bit
    for bit, and the result is exactly symmetric."""
    import minifim.geometry.assembly as assembly

    monkeypatch.setattr(assembly, "_PANEL_BYTES", 2**12)
    case = make_case((5, 7, 6, 3), "tanh", "categorical", N=11, seed=4)
    args = (case.net, case.theta, case.X) + ((case.y,) if quantity == "hessian" else ())
    f = getattr(minifim, quantity)
    with threadpool_limits(limits=1, user_api="blas"):
        one = f(*args)
    with threadpool_limits(limits=2, user_api="blas"):
        two = f(*args)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, one.T)
