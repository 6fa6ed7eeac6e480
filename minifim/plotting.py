"""Plots of curvature spectra (matplotlib, imported lazily).

Every ``plot_*`` function draws on a given ``ax`` (or a new figure's axes), returns the axes,
and takes a 1-D array of eigenvalues such as :func:`minifim.fisher_spectrum` returns, plus
``num_params = P`` when the Gram route left ``P - len(eigenvalues)`` zero eigenvalues implicit.
The numbers behind each plot come from a pure function (:func:`spectrum_histogram`,
:func:`cumulative_mass`) so they can be tested and tabulated without matplotlib.

Importing :mod:`minifim` never imports matplotlib; the first ``plot_*`` call does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from ._validation import as_float_array, check_choice, check_int
from .geometry.statistics import default_rank_tolerance, eigenvalue_array, spectrum_dimension

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "log_bins",
    "spectrum_histogram",
    "cumulative_mass",
    "plot_spectrum",
    "plot_cumulative_mass",
    "plot_scree",
]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "minifim.plotting needs matplotlib: pip install 'minifim[experiments]'"
        ) from err
    return plt


def _axes(ax: Axes | None) -> Axes:
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(5.5, 3.8))
        return ax
    if not hasattr(ax, "plot"):
        raise TypeError(f"ax: expected a matplotlib Axes or None, received {type(ax).__name__}")
    return ax


def _floor(lam: np.ndarray, num_params: int | None, floor: float | None) -> float:
    if floor is None:
        return default_rank_tolerance(lam, num_params=num_params)
    floor = float(floor)
    if not floor >= 0:
        raise ValueError(f"floor: expected a non-negative number, received {floor!r}")
    return floor


def log_bins(
    spectra: np.ndarray | Sequence[ArrayLike], bins: int = 40, *, floor: float | None = None
) -> np.ndarray:
    """Common log-spaced bin edges ``(bins + 1,)`` covering the eigenvalues above ``floor``
    of one or several spectra (so their histograms can be overlaid)."""
    bins = check_int(bins, "bins", 1)
    if isinstance(spectra, np.ndarray) and spectra.ndim == 1:
        spectra = [spectra]
    lows, highs = [], []
    for j, s in enumerate(spectra):
        lam = eigenvalue_array(s, f"spectra[{j}]")
        above = lam[lam > _floor(lam, None, floor)]
        if above.size:
            lows.append(above.min())
            highs.append(above.max())
    if not lows:
        raise ValueError("spectra: no eigenvalue above the floor; nothing to bin")
    lo, hi = np.log10(min(lows)), np.log10(max(highs))
    if hi - lo < 1e-12:
        return np.logspace(lo - 0.5, hi + 0.5, bins + 1)
    edges = np.logspace(lo, hi, bins + 1)
    edges[0], edges[-1] = min(lows), max(highs)  # exact, so the extremes are always counted
    return edges


def spectrum_histogram(
    eigenvalues: ArrayLike,
    bins: int | ArrayLike = 40,
    *,
    num_params: int | None = None,
    floor: float | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Histogram of the eigenvalues above ``floor`` on log-spaced bins.

    Parameters
    ----------
    eigenvalues : ndarray, shape (m,)
    bins : int or ndarray, shape (b + 1,)
        Number of log-spaced bins between the smallest and largest eigenvalue above ``floor``,
        or increasing positive bin edges (e.g. from :func:`log_bins`).
    num_params : int, optional
        ``P``; the ``P - m`` implicit eigenvalues are zeros.
    floor : float, optional
        Eigenvalues ``<= floor`` count as zero; default :func:`default_rank_tolerance`.

    Returns
    -------
    edges : ndarray, shape (b + 1,)
    fractions : ndarray, shape (b,)
        Fraction of ALL ``P`` eigenvalues in each bin (eigenvalues outside the edges are not
        counted).
    near_zero : int
        Number of eigenvalues ``<= floor``, implicit zeros included.
    """
    lam = eigenvalue_array(eigenvalues)
    P = spectrum_dimension(lam, num_params)
    floor = _floor(lam, P, floor)
    above = lam[lam > floor]
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        edges = (
            log_bins(lam, int(bins), floor=floor)
            if above.size
            else np.logspace(-1, 0, int(bins) + 1)
        )
    else:
        edges = as_float_array(bins, "bins", ndim=1)
        if edges.size < 2 or np.any(edges <= 0) or np.any(np.diff(edges) <= 0):
            raise ValueError(
                "bins: expected an int or at least two increasing positive edges, "
                f"received {edges!r}"
            )
    counts, _ = np.histogram(above, bins=edges)
    return edges, counts / P, int(P - above.size)


def cumulative_mass(
    eigenvalues: ArrayLike, *, num_params: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Share of the trace held by the top eigenvalues: ``(i, sum_{j<=i} lambda_j / tr)``.

    Returns ``index: (m,)`` (``1..m``) and ``fraction: (m,)`` for the eigenvalues sorted in
    descending order; ``num_params`` only checks the dimension (implicit zeros add no mass).
    """
    lam = np.sort(eigenvalue_array(eigenvalues))[::-1]
    spectrum_dimension(lam, num_params)
    total = lam.sum()
    if not total > 0:
        raise ValueError(f"eigenvalues: expected a positive trace, received {total!r}")
    return np.arange(1, lam.size + 1), np.cumsum(lam) / total


def _markers(ax: Axes, markers: dict[str, float] | None) -> None:
    if markers is None:
        return
    if not isinstance(markers, dict):
        raise TypeError(
            f"markers: expected a dict label -> x position, received {type(markers).__name__}"
        )
    for i, (name, x) in enumerate(markers.items()):
        ax.axvline(float(x), color="0.3", ls=("--", ":", "-.")[i % 3], lw=1, label=str(name))


def plot_spectrum(
    eigenvalues: ArrayLike,
    ax: Axes | None = None,
    *,
    bins: int | ArrayLike = 40,
    kind: str = "hist",
    num_params: int | None = None,
    floor: float | None = None,
    label: str | None = None,
    color: Any = None,
    markers: dict[str, float] | None = None,
) -> Axes:
    """Log-scale histogram (``kind="hist"``) or density (``kind="density"``) of a spectrum.

    The y axis is the fraction of all ``P`` eigenvalues per bin (``"hist"``) or per decade
    (``"density"``: a Gaussian kernel density of ``log10 lambda``, scaled to the fraction of
    eigenvalues above ``floor``), so spectra of different sizes are comparable. The number of
    eigenvalues ``<= floor`` (zero to working precision, implicit zeros included) is given in
    the legend label. ``markers`` draws labelled vertical lines (e.g. ``{"1/N": 0.01}``).
    """
    check_choice(kind, "kind", ("hist", "density"))
    ax = _axes(ax)
    lam = eigenvalue_array(eigenvalues)
    P = spectrum_dimension(lam, num_params)
    edges, fractions, near_zero = spectrum_histogram(lam, bins, num_params=P, floor=floor)
    text = f"{label + ': ' if label else ''}{near_zero}/{P} near zero"
    if kind == "hist":
        ax.stairs(fractions, edges, label=text, color=color, lw=1.5)
        ax.set_ylabel("fraction of eigenvalues per bin")
    else:
        from scipy.stats import gaussian_kde

        above = lam[lam > _floor(lam, P, floor)]
        if above.size < 2 or np.ptp(np.log10(above)) == 0:
            raise ValueError(
                "kind: 'density' needs at least two distinct eigenvalues above "
                "the floor; use kind='hist'"
            )
        grid = np.linspace(np.log10(edges[0]), np.log10(edges[-1]), 400)
        dens = gaussian_kde(np.log10(above))(grid) * above.size / P
        ax.plot(10.0**grid, dens, label=text, color=color, lw=1.5)
        ax.set_ylabel("fraction of eigenvalues per decade")
    ax.set_xscale("log")
    ax.set_xlabel("eigenvalue")
    _markers(ax, markers)
    ax.legend(fontsize=8)
    return ax


def plot_cumulative_mass(
    eigenvalues: ArrayLike,
    ax: Axes | None = None,
    *,
    num_params: int | None = None,
    label: str | None = None,
    color: Any = None,
    relative_index: bool = False,
    markers: dict[str, float] | None = None,
) -> Axes:
    """Cumulative share of the trace held by the top ``i`` eigenvalues, against ``i``.

    ``relative_index=True`` puts ``i / P`` on the x axis (networks of different sizes on one
    plot). ``markers`` draws labelled vertical lines, e.g. the rank bound
    ``{"N (C - 1)": N * (C - 1)}``.
    """
    ax = _axes(ax)
    lam = eigenvalue_array(eigenvalues)
    P = spectrum_dimension(lam, num_params)
    index, fraction = cumulative_mass(lam, num_params=P)
    x = index / P if relative_index else index
    ax.step(x, fraction, where="post", label=label, color=color, lw=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("i / P" if relative_index else "number of top eigenvalues i")
    ax.set_ylabel("share of the trace")
    ax.set_ylim(0, 1.02)
    _markers(ax, markers)
    if label is not None or markers:
        ax.legend(fontsize=8)
    return ax


def plot_scree(
    eigenvalues: ArrayLike,
    ax: Axes | None = None,
    *,
    num_params: int | None = None,
    floor: float | None = None,
    label: str | None = None,
    color: Any = None,
    markers: dict[str, float] | None = None,
) -> Axes:
    """Eigenvalues in descending order against their index, log-log (values ``<= floor`` are
    dropped, so the curve ends where the numerically zero tail begins)."""
    ax = _axes(ax)
    lam = np.sort(eigenvalue_array(eigenvalues))[::-1]
    P = spectrum_dimension(lam, num_params)
    keep = lam > _floor(lam, P, floor)
    ax.plot(np.arange(1, lam.size + 1)[keep], lam[keep], label=label, color=color, lw=1.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("eigenvalue lambda_i")
    _markers(ax, markers)
    if label is not None or markers:
        ax.legend(fontsize=8)
    return ax
