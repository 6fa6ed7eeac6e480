"""The dense assembly (minifim.geometry.assembly): one triangle or both, the panels' pool, the
seed coupling formed per panel.

Independent routes: the enumerated Fisher (autograd scores for every label), explicit per-sample
products ``einsum`` for the coupling, and the full symmetric matrix for ``triangle="upper"``
(the same panels, so the same entries; the SYRK route writes its other triangle by another
kernel, hence the product bound there).
"""

import numpy as np
import pytest

import minifim
import minifim.geometry.assembly as assembly
from minifim.geometry.assembly import SeedCoupling

from .cases import CASES, CNN_CASES, enumerated_fisher, get_case, make_case, make_sequential_case
from .tolerances import EPS, check_elementwise, product_atol, product_rtol

L = minifim.layers

#: Plain dense networks (the Kronecker route) and weight sharing (the SYRK route).
NO_BIAS = make_sequential_case(
    "nobias", [L.Linear(3, 4, bias=False), L.Tanh(), L.Linear(4, 3)], (3,), "categorical", N=5,
    seed=301,
)  # fmt: skip
HETEROSCEDASTIC = make_case((2, 4, 2), "tanh", "heteroscedastic", N=5, seed=302)
UPPER_CASES = [get_case("categorical-tanh-2x3x4x2"), CASES[0], NO_BIAS, HETEROSCEDASTIC] + list(
    CNN_CASES
)

KINDS = [("true", {}), ("empirical", {}), ("mc", {"n_samples": 3, "rng": 7}), ("ggn", {})]


def _bound(case, scale):
    """``c n EPS scale``, ``n = P + N K`` the length of the sums of one entry (``K`` seeds per
    sample, at least the 3 Monte-Carlo labels here; see :func:`tests.tolerances.curvature_rtol`):
    two evaluations of one curvature by differently shaped products. ``scale`` bounds
    ``|U|^T |U|`` entrywise: the largest diagonal entry of each PSD part."""
    net = case.net
    n = case.P + case.N * max(net.positions * net.output_dim, 3)
    return product_rtol(n, c=2.0) * max(scale, 1e-300)


def _scale(case, kind, kw):
    """The largest diagonal entries of the curvature's PSD parts, summed (the positive and
    negative parts of an indefinite GGN cancel in the matrix, not in its rounding)."""
    from minifim.geometry.assembly import dense_from_factors
    from minifim.geometry.curvature import curvature_factors, curvature_is_psd

    total = 0.0
    for sign in (1,) if curvature_is_psd(case.net, kind) else (1, -1):
        factors = curvature_factors(case.net, case.theta, case.X, case.y, kind, sign=sign, **kw)
        part = dense_from_factors(case.net, factors, case.P, 1.0 / case.N)
        total += float(np.max(np.diag(part), initial=0.0))
    return total


@pytest.mark.parametrize("case", UPPER_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("kind,kw", KINDS, ids=[k for k, _ in KINDS])
@pytest.mark.parametrize("chunk", [None, 2])
def test_upper_triangle_is_the_full_matrix_upper_part(case, kind, kw, chunk):
    """``triangle="upper"`` holds the full matrix's upper triangle with the diagonal and exact
    zeros below, for every curvature kind, in one chunk and accumulated over chunks."""
    net, theta, X, y = case.net, case.theta, case.X, case.y
    args = dict(y=y, fisher=kind, chunk_size=chunk, **kw)
    full = minifim.curvature_matrix(net, theta, X, **args)
    upper = minifim.curvature_matrix(net, theta, X, triangle="upper", **args)
    assert upper.shape == full.shape and upper.dtype == np.float64
    assert np.all(np.tril(upper, -1) == 0.0)
    bound = _bound(case, _scale(case, kind, kw))
    check_elementwise(upper, np.triu(full), bound, f"{kind} upper vs full")
    np.testing.assert_array_equal(full, full.T)


@pytest.mark.parametrize(
    "case", [CASES[0], get_case("categorical-tanh-2x3x4x2")], ids=lambda c: c.name
)
def test_upper_triangle_agrees_with_the_enumerated_fisher(case):
    """Against an independent route: ``1/N sum_n sum_y p(y|x_n) s s^T`` from autograd scores."""
    ref = enumerated_fisher(case.net, case.theta, case.X)
    upper = minifim.true_fisher(case.net, case.theta, case.X, triangle="upper")
    check_elementwise(upper, np.triu(ref), _bound(case, np.diag(ref).max()), "vs enumerated")


def test_upper_triangle_feeds_lapack_one_triangle():
    """What the option is for: ``eigh(lower=False)`` and Cholesky read the upper triangle, and
    give the full matrix's results (eigenvalues within ``c n EPS ||F||``)."""
    import scipy.linalg as sla

    case = get_case("categorical-tanh-2x3x4x2")
    full = minifim.true_fisher(case.net, case.theta, case.X)
    upper = minifim.true_fisher(case.net, case.theta, case.X, triangle="upper")
    w_full = np.linalg.eigvalsh(full)
    w_upper = sla.eigh(upper, lower=False, eigvals_only=True)
    n = case.P
    check_elementwise(w_upper, w_full, 4 * n * EPS * np.abs(w_full).max(), "eigh upper")
    A = upper + 0.1 * np.eye(n)
    R = sla.cholesky(A, lower=False)
    check_elementwise(R.T @ R, full + 0.1 * np.eye(n), 4 * n * EPS * np.abs(A).max(), "chol")


def test_bad_triangle_names_the_argument():
    case = CASES[0]
    with pytest.raises(ValueError, match=r"^triangle: expected one of \['both', 'upper'\]"):
        minifim.true_fisher(case.net, case.theta, case.X, triangle="lower")
    with pytest.raises(TypeError, match="triangle"):
        minifim.curvature_matrix(case.net, case.theta, case.X, triangle=1)


def test_seed_coupling_rows_and_total_are_the_per_sample_products(rng):
    """``SeedCoupling`` against the explicit ``einsum`` of ``scale B_l[n]^T B_m[n]``."""
    n, K, o_l, o_m, scale = 7, 3, 5, 4, 0.25
    B_l, B_m = rng.standard_normal((n, K, o_l)), rng.standard_normal((n, K, o_m))
    G = scale * np.einsum("nkc,nki->nci", B_l, B_m)
    coupling = SeedCoupling(B_l, B_m, scale)
    bound = scale * product_atol(np.abs(B_l).transpose(0, 2, 1), np.abs(B_m), c=2.0)
    for k0, k1 in [(0, 5), (1, 3), (4, 5)]:
        check_elementwise(coupling.rows(k0, k1), G[:, k0:k1], bound[:, k0:k1], "rows")
    total_bound = scale * n * K * EPS * np.einsum("nkc,nki->ci", np.abs(B_l), np.abs(B_m))
    check_elementwise(coupling.total(), G.sum(axis=0), 2 * total_bound, "total")


def test_pairs_in_any_order_give_the_same_matrix(monkeypatch):
    """The pool's order (costly pairs first) changes no entry: each entry is written by one
    panel, the same GEMMs whatever the order."""
    case = get_case("categorical-tanh-2x3x4x2")
    monkeypatch.setattr(assembly, "_PANEL_BYTES", 2**12)  # several panels per pair
    ref = minifim.true_fisher(case.net, case.theta, case.X)
    original = assembly.assemble_layer_pairs

    def reversed_pairs(M, pairs, **kw):
        return original(M, list(reversed(pairs)), **kw)

    monkeypatch.setattr(assembly, "assemble_layer_pairs", reversed_pairs)
    np.testing.assert_array_equal(minifim.true_fisher(case.net, case.theta, case.X), ref)


def test_the_pool_holds_at_most_threads_plus_two_pairs(monkeypatch):
    """The memory estimate of a chunk counts ``threads + 2`` pairs' input products: at no time
    are more pairs' operands alive (counted at every build and release)."""
    import threading

    from threadpoolctl import threadpool_limits

    monkeypatch.setattr(assembly, "_PANEL_BYTES", 2**12)
    live, peak, lock = [0], [0], threading.Lock()
    build, release = assembly._PairData._build, assembly._PairData.release

    def counting_build(self):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        return build(self)

    def counting_release(self):
        left = self._left
        release(self)
        if left == 1:
            with lock:
                live[0] -= 1

    monkeypatch.setattr(assembly._PairData, "_build", counting_build)
    monkeypatch.setattr(assembly._PairData, "release", counting_release)
    case = make_case((6, 7, 6, 5, 3), "tanh", "categorical", N=9, seed=5)  # 10 layer pairs
    for threads in (1, 2):
        live[0] = peak[0] = 0
        with threadpool_limits(limits=threads, user_api="blas"):
            minifim.true_fisher(case.net, case.theta, case.X)
        assert live[0] == 0
        assert 1 <= peak[0] <= threads + 2, (threads, peak[0])


def test_default_chunks_do_not_depend_on_the_thread_count():
    """The chunk size from the memory budget counts the pool's live pairs for the machine's
    cores, not the current BLAS limit: the same chunks, the same bits, at 1 and 2 threads."""
    from threadpoolctl import threadpool_limits

    from minifim.geometry.curvature import _chunk_size

    case = make_case((20, 30, 30, 10), "tanh", "categorical", N=7, seed=6)
    sizes = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            sizes.append(_chunk_size(case.net, 10, None, "true", 380))
    assert sizes[0] == sizes[1]
