"""experiments/fisher_spectrum.py: Karakida et al.'s mean-field constants and the verdict's
criterion, on synthetic intervals where the theory holds and where a wrong theory is measured."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import minifim
from minifim.tools.report import t_interval

PATH = Path(__file__).resolve().parents[1] / "experiments" / "fisher_spectrum.py"


@pytest.fixture(scope="module")
def fs():
    spec = importlib.util.spec_from_file_location("experiment_fisher_spectrum", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_relu_kernels_match_quadrature(fs):
    # independent route: condition on u = sqrt(v) x and integrate x numerically, with
    # u' | x ~ N(rho u, v (1 - rho^2)) and E[relu(N(m, s^2))] = m Phi(m/s) + s phi(m/s)
    from scipy import integrate, stats

    for v, c in [(1.0, 0.3), (2.5, -0.4), (0.7, 0.69)]:
        rho, sv = c / v, np.sqrt(v)
        s = sv * np.sqrt(1 - rho**2)

        def relu_mean(m, s=s):
            return m * stats.norm.cdf(m / s) + s * stats.norm.pdf(m / s)

        q2 = integrate.quad(
            lambda x, rho=rho, sv=sv: stats.norm.pdf(x) * sv * x * relu_mean(rho * sv * x),
            0,
            np.inf,
            epsabs=1e-13,
            epsrel=1e-12,
        )[0]
        d2 = integrate.quad(
            lambda x, rho=rho, sv=sv, s=s: stats.norm.pdf(x) * stats.norm.cdf(rho * sv * x / s),
            0,
            np.inf,
            epsabs=1e-13,
            epsrel=1e-12,
        )[0]
        q1_, q2_, d1_, d2_ = fs.relu_kernels(v, c)
        assert q1_ == pytest.approx(v / 2, rel=1e-14) and d1_ == 0.5
        assert q2_ == pytest.approx(q2, rel=1e-9)
        assert d2_ == pytest.approx(d2, rel=1e-9)


def test_mean_field_m1_matches_a_wide_random_network(fs):
    # tr F / P of random [M, M, M, C] nets against kappa_1 C / M: per network the ratio
    # fluctuates by O(1 / sqrt(T)) through the input norms and O(1 / sqrt(M)) through the
    # weights; the mean of 4 nets at M = 512, T = 32 is within 6% (the full run: < 1%)
    rng = np.random.default_rng(1)
    M, T = 512, 32
    ratios = []
    for _ in range(4):
        net, theta, X = fs.karakida_network(M, rng, T)
        lam = minifim.fisher_spectrum(net, theta, X)
        ratios.append(minifim.karakida_statistics(lam, num_params=net.num_params).mean)
    assert np.mean(ratios) / fs.karakida_prediction(M, T)["m1"] == pytest.approx(1.0, abs=0.06)
    k1, k2, alpha = fs.mean_field_constants([M, M, M, fs.C])
    assert alpha == pytest.approx(2 + fs.C / M) and 0 < k2 < k1


def _synthetic(fs, lmax_of, rng, draws=6, noise=0.02):
    """Intervals as karakida_criterion receives them, from 'measurements' lmax_of(M, T)."""
    widths, T0 = [512, 1024, 2048], 50
    ratios = {}
    for key in ("m1", "m2"):
        ratios[key] = t_interval(1 + noise * rng.standard_normal(draws))
    vals = {M: lmax_of(M, T0) * (1 + noise * rng.standard_normal(draws)) for M in widths}
    ratios["lmax"] = t_interval(vals[widths[-1]] / fs.karakida_prediction(widths[-1], T0)["lmax"])
    by_t = {
        T: t_interval(
            lmax_of(widths[-1], T)
            * (1 + noise * rng.standard_normal(draws))
            / fs.karakida_prediction(widths[-1], T)["lmax"]
        )
        for T in (1, 5, 20, 100)
    }
    slopes = {
        "m1": t_interval(-1 + 0.01 * rng.standard_normal(draws)),
        "m2": t_interval(0.01 * rng.standard_normal(draws)),
        "lmax": t_interval(
            [
                minifim.tools.report.loglog_slope(widths, [vals[M][j] for M in widths])
                for j in range(draws)
            ]
        ),
    }
    return ratios, by_t, slopes


def test_criterion_agrees_when_theorem_1_holds(fs):
    rng = np.random.default_rng(0)
    status, pos = fs.karakida_criterion(
        *_synthetic(fs, lambda M, T: fs.karakida_prediction(M, T)["lmax"], rng)
    )
    assert status == "agrees", pos


def test_criterion_rejects_a_theory_without_kappa_2(fs):
    # lambda_max = alpha kappa_1 M / T (no cross-sample correlation): right at T = 1 only
    def wrong(M, T):
        k1, _, alpha = fs.mean_field_constants([M, M, M, fs.C])
        return alpha * k1 * M / T

    status, pos = fs.karakida_criterion(*_synthetic(fs, wrong, np.random.default_rng(0)))
    assert status == "disagrees" and pos["lmax ratio T=1"] == "inside"
    assert pos["lmax ratio T=100"] == "outside"


def test_criterion_rejects_a_wrong_width_exponent(fs):
    # lambda_max ~ sqrt(M) instead of M, matched at M = 2048
    def wrong(M, T):
        return fs.karakida_prediction(2048, T)["lmax"] * np.sqrt(M / 2048)

    status, pos = fs.karakida_criterion(*_synthetic(fs, wrong, np.random.default_rng(0)))
    assert status == "disagrees" and pos["lmax slope"] == "outside"
