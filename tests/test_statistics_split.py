"""The statistics of a spectrum live in ``minifim.geometry.statistics`` (re-exported by
``spectrum`` and ``minifim``); ``fisher=`` is the kind keyword of the spectrum functions and the
former ``curvature=`` keeps working with a ``DeprecationWarning``."""

import numpy as np
import pytest

import minifim
from minifim.geometry import spectrum, statistics


def test_statistics_are_one_module_reexported():
    for name in statistics.__all__:
        if name in ("eigenvalue_array", "spectrum_dimension"):
            continue
        assert getattr(spectrum, name) is getattr(statistics, name)
        assert getattr(minifim, name) is getattr(statistics, name)


def test_argument_checks_are_public():
    lam = statistics.eigenvalue_array([3.0, 1.0])
    assert lam.dtype == np.float64 and statistics.spectrum_dimension(lam, None) == 2
    assert statistics.spectrum_dimension(lam, 5) == 5
    with pytest.raises(ValueError, match="num_params"):
        statistics.spectrum_dimension(lam, 1)
    with pytest.raises(ValueError, match="eigenvalues"):
        statistics.eigenvalue_array([])


CALLS = {
    "curvature_spectrum": lambda c, **kw: minifim.curvature_spectrum(
        c.net, c.theta, c.X, c.y, method="dense", **kw
    ),
    "fisher_rao_norm": lambda c, **kw: minifim.fisher_rao_norm(c.net, c.theta, c.X, c.y, **kw),
    "curvature_statistics": lambda c, **kw: minifim.curvature_statistics(
        c.net, c.theta, c.X, c.y, damping=1e-3, method="dense", **kw
    )["logdet"],
}


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("kind", ["empirical", "ggn"])
def test_curvature_keyword_is_deprecated_for_fisher(name, kind):
    case = minifim_case()
    new = CALLS[name](case, fisher=kind)
    with pytest.warns(DeprecationWarning, match="'curvature' is deprecated.*use 'fisher'"):
        old = CALLS[name](case, curvature=kind)
    np.testing.assert_array_equal(old, new)  # the same computation, bit for bit
    with pytest.raises(TypeError, match="both 'curvature'.*and 'fisher'"):
        CALLS[name](case, curvature=kind, fisher=kind)


def minifim_case():
    from .cases import CASES

    return CASES[0]


def test_fisher_accepts_the_curvlinops_alias():
    case = minifim_case()
    a = minifim.curvature_spectrum(case.net, case.theta, case.X, fisher="type-2", method="dense")
    b = minifim.curvature_spectrum(case.net, case.theta, case.X, fisher="true", method="dense")
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="fisher"):
        minifim.curvature_spectrum(case.net, case.theta, case.X, fisher="nope")
