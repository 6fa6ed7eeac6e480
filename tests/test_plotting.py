"""Spectrum plots: the numbers behind each plot, the drawn data, lazy matplotlib, bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest

import minifim
from minifim import plotting

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LAM = np.array([3.0, 1.0, 0.2, 0.05, 1e-3, 1e-17, -2e-18])  # two numerically zero values


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_importing_minifim_does_not_import_matplotlib():
    code = "import sys, minifim; print('matplotlib' in sys.modules)"
    env = dict(os.environ, MPLBACKEND="Agg")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "False"


def test_spectrum_histogram_counts_against_numpy():
    P = 10  # three implicit zeros on top of the two numerically zero values
    edges, fractions, near_zero = plotting.spectrum_histogram(LAM, 4, num_params=P)
    floor = minifim.default_rank_tolerance(LAM, num_params=P)
    above = LAM[LAM > floor]
    assert near_zero == P - above.size == 5
    assert (
        edges.shape == (5,) and edges[0] == pytest.approx(1e-3) and edges[-1] == pytest.approx(3.0)
    )
    np.testing.assert_allclose(np.diff(np.log10(edges)), np.log10(3e3) / 4, rtol=1e-12)
    np.testing.assert_array_equal(fractions, np.histogram(above, edges)[0] / P)
    assert fractions.sum() == pytest.approx(above.size / P)  # the extremes are counted
    # explicit edges and floor
    e2, f2, z2 = plotting.spectrum_histogram(LAM, np.array([0.01, 0.1, 1.0, 10.0]), floor=0.01)
    np.testing.assert_array_equal(f2, np.array([1, 1, 2]) / LAM.size)
    assert z2 == 3


def test_log_bins_cover_several_spectra():
    edges = plotting.log_bins([LAM, np.array([10.0, 1e-5])], 6)
    assert edges[0] == pytest.approx(1e-5) and edges[-1] == pytest.approx(10.0)
    assert edges.shape == (7,)
    single = plotting.log_bins(np.array([2.0, 2.0]), 3)  # a degenerate range is widened
    assert single[0] < 2.0 < single[-1]


def test_cumulative_mass():
    index, frac = plotting.cumulative_mass(LAM[::-1], num_params=12)
    np.testing.assert_array_equal(index, np.arange(1, LAM.size + 1))
    np.testing.assert_allclose(frac, np.cumsum(LAM) / LAM.sum(), rtol=1e-15)
    assert frac[-1] == pytest.approx(1.0, rel=1e-15)


def test_plot_spectrum_draws_the_histogram():
    ax = plotting.plot_spectrum(LAM, bins=4, num_params=10, label="F", markers={"1/N": 0.1})
    (stairs,) = [p for p in ax.patches if type(p).__name__ == "StepPatch"]
    _, fractions, _ = plotting.spectrum_histogram(LAM, 4, num_params=10)
    np.testing.assert_array_equal(stairs.get_data().values, fractions)
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "F: 5/10 near zero" in labels and "1/N" in labels


def test_plot_spectrum_density_integrates_to_the_share_above_the_floor():
    lam = np.exp(np.random.default_rng(0).normal(0.0, 2.0, 400))
    fig, ax = plt.subplots()
    out = plotting.plot_spectrum(lam, ax, kind="density", num_params=800, bins=30)
    assert out is ax
    (line,) = ax.get_lines()
    x, y = line.get_data()
    lx = np.log10(x)
    mass = np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(lx))  # trapezoid rule over log10(lambda)
    assert 0.40 < mass <= 0.5  # 400 of 800 above the floor; a little KDE mass leaks outside


def test_plot_cumulative_mass_and_scree():
    ax = plotting.plot_cumulative_mass(LAM, num_params=20, label="F", markers={"N(C-1)": 3})
    line = ax.get_lines()[0]
    index, frac = plotting.cumulative_mass(LAM)
    np.testing.assert_array_equal(line.get_xdata(), index)
    np.testing.assert_allclose(line.get_ydata(), frac)
    ax2 = plotting.plot_cumulative_mass(LAM, num_params=20, relative_index=True)
    np.testing.assert_allclose(ax2.get_lines()[0].get_xdata(), index / 20)
    ax3 = plotting.plot_scree(LAM, num_params=9)
    x, y = ax3.get_lines()[0].get_data()
    np.testing.assert_array_equal(x, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(y, LAM[:5])
    assert ax3.get_yscale() == "log"


def test_plot_a_network_spectrum_end_to_end():
    net = minifim.MLP([3, 12, 3])
    theta = net.init(0)
    X = np.random.default_rng(0).standard_normal((6, 3))
    lam = minifim.fisher_spectrum(net, theta, X)
    ax = plotting.plot_spectrum(lam, num_params=net.num_params)
    plotting.plot_cumulative_mass(lam, num_params=net.num_params, markers={"N (C - 1)": 12})
    assert ax.figure is not None


def test_bad_input_to_plots():
    with pytest.raises(ValueError, match="kind"):
        plotting.plot_spectrum(LAM, kind="pie")
    with pytest.raises(TypeError, match="ax"):
        plotting.plot_spectrum(LAM, ax="left")
    with pytest.raises(ValueError, match="bins"):
        plotting.spectrum_histogram(LAM, np.array([1.0, 0.5]))
    with pytest.raises(ValueError, match="bins"):
        plotting.spectrum_histogram(LAM, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="bins"):
        plotting.log_bins(LAM, 0)
    with pytest.raises(TypeError, match="markers"):
        plotting.plot_cumulative_mass(LAM, markers=[3])
    with pytest.raises(ValueError, match="positive trace"):
        plotting.cumulative_mass(np.zeros(3))
    with pytest.raises(ValueError, match="num_params"):
        plotting.plot_scree(LAM, num_params=2)
    with pytest.raises(ValueError, match="floor"):
        plotting.spectrum_histogram(LAM, 3, floor=-1.0)
    with pytest.raises(ValueError, match="no eigenvalue above the floor"):
        plotting.log_bins(np.zeros(3), 3)
    with pytest.raises(ValueError, match="density"):
        plotting.plot_spectrum(np.array([1.0, 0.0]), kind="density")
    with pytest.raises(ValueError, match="eigenvalues"):
        plotting.plot_spectrum(np.eye(3))
