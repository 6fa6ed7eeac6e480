"""The keywords of the NGD solvers, optimisers, merging and pruning (issue 13).

Each renamed keyword keeps working for one release: it warns (``DeprecationWarning`` naming the
old and the new spelling) and gives bit for bit the result of the new spelling. The new
structure-object inputs (merging and pruning) are checked against the array inputs they
replace.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import minifim
from minifim import optim

from .cases import CASES
from .tolerances import check_close, damped_cond, solve_rtol

CASE = CASES[0]
ARGS = (CASE.net, CASE.theta, CASE.X, CASE.y)


def _new(fn, *args, **kwargs):
    """Call with the new spelling: no DeprecationWarning may be raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return fn(*args, **kwargs)


def _old(match, fn, *args, **kwargs):
    with pytest.warns(DeprecationWarning, match=match):
        return fn(*args, **kwargs)


# --- natural_gradient ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "old, new",
    [
        ({"curvature": "true"}, {"fisher": "true"}),
        ({"curvature": "empirical"}, {"fisher": "empirical"}),
        ({"curvature": "hessian"}, {"fisher": "hessian"}),
        ({"curvature": "diag"}, {"structure": "diag"}),
        (
            {"curvature": "block", "fisher": "empirical"},
            {"structure": "block", "fisher": "empirical"},
        ),
        ({"curvature": "kfac", "kfac_bias": "separate"}, {"structure": "kfac", "bias": "separate"}),
        (
            {"curvature": "kfac", "kfac_solve": "factored"},
            {"structure": "kfac", "damping_type": "factored"},
        ),
    ],
)
def test_natural_gradient_old_keywords_warn_and_agree(old, new):
    a = _old("is deprecated", minifim.natural_gradient, *ARGS, 0.1, **old)
    b = _new(minifim.natural_gradient, *ARGS, 0.1, **new)
    np.testing.assert_array_equal(a, b)


def test_natural_gradient_structure_in_the_old_positional_slot():
    """``natural_gradient(..., damping, "kfac")`` (the old positional curvature) still works."""
    a = _old("positional", minifim.natural_gradient, *ARGS, 0.1, "kfac")
    b = _new(minifim.natural_gradient, *ARGS, 0.1, structure="kfac")
    np.testing.assert_array_equal(a, b)
    a = _old(
        "positional", minifim.natural_gradient, *ARGS, 0.1, "block", "dense", fisher="empirical"
    )
    b = _new(minifim.natural_gradient, *ARGS, 0.1, "empirical", "dense", structure="block")
    np.testing.assert_array_equal(a, b)
    # a kind in that slot means what it meant: no warning
    np.testing.assert_array_equal(
        _new(minifim.natural_gradient, *ARGS, 0.1, "empirical"),
        _new(minifim.natural_gradient, *ARGS, 0.1, fisher="empirical"),
    )


def test_natural_gradient_refuses_old_and_new_together():
    with (
        pytest.raises(TypeError, match="both 'curvature'.*'fisher'"),
        pytest.warns(DeprecationWarning),
    ):
        minifim.natural_gradient(*ARGS, 0.1, curvature="true", fisher="true")
    with (
        pytest.raises(TypeError, match="both 'curvature'.*'structure'"),
        pytest.warns(DeprecationWarning),
    ):
        minifim.natural_gradient(*ARGS, 0.1, curvature="diag", structure="diag")
    with pytest.raises(TypeError, match="both 'kfac_bias'"):
        minifim.natural_gradient(*ARGS, 0.1, structure="kfac", kfac_bias="folded", bias="folded")


def test_new_vocabulary_accepts_enums_and_aliases():
    from minifim.options import Curvature, Structure

    a = _new(minifim.natural_gradient, *ARGS, 0.1, Curvature.TRUE, structure=Structure.KFAC)
    b = _new(minifim.natural_gradient, *ARGS, 0.1, structure="kron")  # laplace-torch's word
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="structure: expected one of"):
        minifim.natural_gradient(*ARGS, 0.1, structure="lowrank")
    with pytest.raises(ValueError, match="damping_type: 'factored' is K-FAC's damping"):
        minifim.natural_gradient(*ARGS, 0.1, structure="diag", damping_type="factored")


# --- optimisers ---------------------------------------------------------------------------------
def _step(opt, theta=CASE.theta, step=0):
    init, update, _ = opt
    batch = optim.Batch(CASE.net, CASE.X, CASE.y, None, CASE.N)
    g = minifim.gradient(CASE.net, theta, CASE.X, CASE.y)
    return update(step, g, init(theta), batch)


@pytest.mark.parametrize(
    "old, new",
    [
        ({"curvature": "empirical"}, {"fisher": "empirical"}),
        (
            {"curvature": "kfac", "kfac_bias": "separate", "kfac_solve": "factored"},
            {"structure": "kfac", "bias": "separate", "damping_type": "factored"},
        ),
        (
            {"curvature": "mc", "n_samples": 2, "seed": 5},
            {"fisher": "mc", "n_samples": 2, "rng": 5},
        ),
    ],
)
def test_optim_ngd_old_keywords_warn_and_agree(old, new):
    with pytest.warns(DeprecationWarning):
        opt_old = optim.ngd(0.3, 0.05, **old)
    opt_new = _new(optim.ngd, 0.3, 0.05, **new)
    a, b = _step(opt_old, step=2), _step(opt_new, step=2)
    for k in b:
        np.testing.assert_array_equal(a[k], b[k])


def test_optim_ngd_positional_structure_and_generator_rng():
    with pytest.warns(DeprecationWarning, match="positional"):
        opt_old = optim.ngd(0.3, 0.05, "diag")
    a, b = _step(opt_old), _step(_new(optim.ngd, 0.3, 0.05, structure="diag"))
    np.testing.assert_array_equal(a["theta"], b["theta"])
    # rng= a Generator: its one draw is the base seed of the per-step streams
    seed = int(np.random.default_rng(7).integers(2**63))
    a = _step(optim.ngd(0.3, 0.05, "mc", rng=np.random.default_rng(7)), step=1)
    b = _step(optim.ngd(0.3, 0.05, "mc", rng=seed), step=1)
    np.testing.assert_array_equal(a["theta"], b["theta"])
    with pytest.raises(TypeError, match="rng"):
        optim.ngd(rng=1.5)


def test_optim_kfac_old_keywords_warn_and_agree():
    net = CASE.net
    with pytest.warns(DeprecationWarning, match="'solve'|'seed'"):
        opt_old = optim.kfac(net, 0.2, 0.1, solve="eigen", fisher="mc", seed=3)
    opt_new = _new(optim.kfac, net, 0.2, 0.1, damping_type="eigen", fisher="mc", rng=3)
    a, b = _step(opt_old), _step(opt_new)
    assert set(a) == set(b)
    for k in b:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.warns(DeprecationWarning, match="'seed'"):
        optim.kfac(net, seed=1)


# --- merging ------------------------------------------------------------------------------------
def test_fisher_merge_curvature_keyword_warns_and_agrees():
    net = CASE.net
    thetas = [CASE.theta, net.init(1)]
    data = [(CASE.X, CASE.y), (CASE.X[:3], CASE.y[:3])]
    for s in ("isotropic", "diag", "block", "full"):
        kw = {"weights": [1.0, 2.0]} if s == "isotropic" else {"data": data, "damping": 0.1}
        a = _old("'curvature'.*'structure'", minifim.fisher_merge, net, thetas, curvature=s, **kw)
        b = _new(minifim.fisher_merge, net, thetas, structure=s, **kw)
        np.testing.assert_array_equal(a, b)


def test_fisher_merge_takes_structure_objects():
    net, X = CASE.net, CASE.X
    thetas = [CASE.theta, net.init(1), net.init(2)]
    Fs = [minifim.true_fisher(net, t, X) for t in thetas]
    dense = _new(minifim.fisher_merge, net, thetas, Fs, structure="full", damping=0.1)
    objs = _new(minifim.fisher_merge, net, thetas, [minifim.Dense(F) for F in Fs], damping=0.1)
    A = sum(Fs) + 0.1 * np.eye(CASE.P)
    check_close(objs, dense, solve_rtol(damped_cond(sum(Fs), 0.1), CASE.P), "Dense objects")
    # K-FAC structures: the summed precision is a sum of Kronecker terms, solved exactly
    K = [minifim.curvature(net, t, X, structure="kfac") for t in thetas]
    merged = _new(minifim.fisher_merge, net, thetas, K, damping=0.1)
    Kd = [k.to_dense() for k in K]
    ref = np.linalg.solve(
        sum(Kd) + 0.1 * np.eye(CASE.P),
        sum(F @ t for F, t in zip(Kd, thetas)) + 0.1 * np.mean(thetas, 0),
    )
    check_close(merged, ref, solve_rtol(damped_cond(sum(Kd), 0.1), CASE.P), "K-FAC objects")
    assert np.isfinite(A).all()
    with pytest.raises(ValueError, match=r"fishers\[0\]: expected a curvature of shape"):
        minifim.fisher_merge(net, thetas, [minifim.Diagonal(np.ones(3))] * 3)


# --- pruning ------------------------------------------------------------------------------------
@pytest.mark.parametrize("criterion", ["magnitude", "obd", "obs"])
def test_prune_method_keyword_warns_and_agrees(criterion):
    kw = {"damping": 0.1}
    a = _old("'method'.*'criterion'", minifim.prune, *ARGS, 0.5, method=criterion, **kw)
    b = _new(minifim.prune, *ARGS, 0.5, criterion=criterion, **kw)
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.pruned, b.pruned)
    assert b.criterion == criterion
    with pytest.warns(DeprecationWarning, match="PruningResult.method"):
        assert b.method == criterion
    pa = _old("'method'", minifim.prune_path, *ARGS, [0.2, 0.5], method=criterion, **kw)
    pb = _new(minifim.prune_path, *ARGS, [0.2, 0.5], criterion=criterion, **kw)
    for ra, rb in zip(pa, pb):
        np.testing.assert_array_equal(ra.theta, rb.theta)


def test_prune_takes_a_structure_object_as_the_curvature():
    net, th, X, y = ARGS
    F = minifim.true_fisher(net, th, X)
    for criterion in ("obd", "obs"):
        a = _new(minifim.prune, net, th, None, None, 0.5, criterion, curvature=F, damping=0.1)
        b = _new(
            minifim.prune,
            net,
            th,
            None,
            None,
            0.5,
            criterion,
            curvature=minifim.Dense(F),
            damping=0.1,
        )
        np.testing.assert_array_equal(a.theta, b.theta)
    # OBD reads the structure's diagonal: a Diagonal object is the exact diagonal
    d = minifim.fisher_diagonal(net, th, X)
    a = _new(minifim.prune, net, th, None, None, 0.5, "obd", curvature=d)
    b = _new(minifim.prune, net, th, None, None, 0.5, "obd", curvature=minifim.Diagonal(d))
    np.testing.assert_array_equal(a.theta, b.theta)
    # OBS with a K-FAC curvature equals OBS with its dense matrix
    K = minifim.curvature(net, th, X, structure="kfac")
    a = _new(minifim.prune, net, th, None, None, 0.3, "obs", curvature=K, damping=0.1)
    b = _new(minifim.prune, net, th, None, None, 0.3, "obs", curvature=K.to_dense(), damping=0.1)
    np.testing.assert_array_equal(a.theta, b.theta)
    with pytest.raises(ValueError, match="curvature: expected a curvature of shape"):
        minifim.prune(net, th, None, None, 0.5, "obd", curvature=minifim.Diagonal(np.ones(3)))
