"""minifim.geometry.gram: the factor U of a curvature, its Gram matrix and its products.

Second routes: for the empirical Fisher ``U`` is the per-sample score matrix ``S: (N, P)``
(:func:`minifim.per_sample_scores`), so ``U v``, ``U^T w`` and ``U U^T`` are checked against
dense products with ``S``; for the other kinds ``c U^T U`` is the dense curvature
(:func:`minifim.curvature_matrix`) and the Gram matrix shares its non-zero eigenvalues.
"""

from __future__ import annotations

import numpy as np
import pytest

import minifim
from minifim.geometry.gram import SeedFactors, seed_factors

from .cases import CASES
from .tolerances import check, curvature_rtol, eig_atol, product_rtol

SMALL = [c for c in CASES if c.P <= 60][:6]


@pytest.mark.parametrize("case", SMALL, ids=lambda c: c.name)
def test_empirical_factor_is_the_score_matrix(case):
    net, th, X, y = case.net, case.theta, case.X, case.y
    S = minifim.per_sample_scores(net, th, X, y)
    F = seed_factors(net, th, X, y, "empirical")
    assert isinstance(F, SeedFactors)
    assert (F.num_samples, F.num_seeds, F.rows, F.num_params) == (case.N, 1, case.N, case.P)
    rng = np.random.default_rng(0)
    v, w = rng.standard_normal(case.P), rng.standard_normal(case.N)
    n = case.P + case.N
    scale = float(np.abs(S).max())
    check(
        float(np.abs(F.matvec(v) - S @ v).max() / (scale * np.abs(v).sum())), product_rtol(n), "U v"
    )
    check(
        float(np.abs(F.rmatvec(w) - S.T @ w).max() / (scale * np.abs(w).sum())),
        product_rtol(n),
        "U^T w",
    )
    G = F.gram(1.0 / case.N)
    check(float(np.abs(G - S @ S.T / case.N).max() / np.abs(G).max()), product_rtol(n), "c U U^T")
    V = rng.standard_normal((case.P, 3))
    assert F.matvec(V).shape == (case.N, 3) and F.rmatvec(F.matvec(V)).shape == (case.P, 3)
    col = F.matvec(V[:, 1])  # one column equals the batched product (to a product's rounding)
    check(
        float(np.abs(F.matvec(V)[:, 1] - col).max() / (scale * np.abs(V[:, 1]).sum())),
        product_rtol(n),
        "batched U V",
    )


@pytest.mark.parametrize("case", SMALL, ids=lambda c: c.name)
@pytest.mark.parametrize("fisher", ["true", "ggn", "mc"])
def test_products_and_gram_reproduce_the_dense_curvature(case, fisher):
    net, th, X = case.net, case.theta, case.X
    kw = {"n_samples": 2, "rng": 3} if fisher == "mc" else {}
    M = minifim.curvature_matrix(
        net,
        th,
        X,
        None,
        fisher,
        **{k: (np.random.default_rng(3) if k == "rng" else v) for k, v in kw.items()},
    )
    if fisher == "mc":
        kw["rng"] = np.random.default_rng(3)
    F = seed_factors(net, th, X, None, fisher, **kw)
    c = 1.0 / case.N
    E = np.eye(case.P)
    dense = c * F.rmatvec(F.matvec(E))  # c U^T U column by column
    tol = curvature_rtol(case)
    check(float(np.abs(dense - M).max() / np.abs(M).max()), tol, "c U^T U = M")
    mu = np.sort(np.linalg.eigvalsh(F.gram(c)))[::-1]
    lam = np.sort(np.linalg.eigvalsh(M))[::-1]
    r = min(F.rows, case.P)
    norm = float(lam[0])
    check(
        float(np.abs(mu[:r] - lam[:r]).max()),
        eig_atol(norm, case.P + F.rows) + tol * norm,
        "Gram and M share their spectrum",
    )


def test_chunked_factors_equal_one_chunk():
    """Chunks run the same recursion on fewer rows: only the GEMM blocking differs (the
    kernel may block a 2-row product differently from an N-row one), so each of the layer
    products differs by at most ``n EPS |A||B|`` (Higham Thm 3.5), carried through activations
    with ``|phi'| <= 1``: scale-relative ``product_rtol(sum of the widths)``. A wrong chunk
    slice or a lost sample is an O(1) error."""
    case = SMALL[0]
    a = seed_factors(case.net, case.theta, case.X, None, "true")
    b = seed_factors(case.net, case.theta, case.X, None, "true", chunk_size=2)
    bound = product_rtol(sum(case.net.sizes))
    for x, z in zip(a.Bs + a.acts, b.Bs + b.acts):
        assert x.shape == z.shape
        check(float(np.abs(x - z).max() / np.abs(x).max()), bound, "chunked factor")
