"""Explaining a scalar: ``alpha = sign x prod(symbol ** exp)`` over the fixture's symbols.

A candidate that equals a reference variant up to a scalar ``alpha`` is explained by the
factorisations of ``alpha`` over the symbols ``N`` (samples), ``N-1`` (Bessel), ``C``
(outputs), ``2`` and ``sigma`` (the Gaussian's noise scale), with integer exponents
``|exp| <= MAX_EXPONENT``. A symbol whose value is 1 in the fixture is left out (it explains
nothing), and so is ``sigma`` for a likelihood without one. The factorisations of one value
are *all* listed: with ``C = 2`` the symbols ``2`` and ``C`` coincide, with ``N = 8`` the
factor ``N`` is ``2^3``, with ``sigma^2 = 1/2`` the MSE's ``2 sigma^2`` is 1; the simplest
(smallest total ``|exp|``, then fewest symbols) is the main explanation.

The search is a table of every exponent vector (``9^5 = 59049`` rows at most) and the log of
its value, built once per fixture; a value is looked up by a vectorised comparison of logs.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SYMBOLS",
    "MAX_EXPONENT",
    "MAX_K_EXPONENT",
    "FactorTable",
    "symbol_values",
    "factor_value",
    "format_factors",
    "explanation_key",
]

#: The symbols of a factorisation, in their display order (``k``, the Monte-Carlo samples per
#: input, only for a sampled candidate).
SYMBOLS = ("N", "N-1", "C", "2", "sigma", "k")
#: Largest ``|exp|`` of a symbol in a factorisation (``k``: :data:`MAX_K_EXPONENT`).
MAX_EXPONENT = 4
MAX_K_EXPONENT = 2


def symbol_values(N: int, C: int, sigma: float | None, k: int | None = None) -> dict[str, float]:
    """``{symbol: value}`` of the symbols that can explain something (value != 1).

    ``sigma`` is ``None`` for a likelihood without a noise scale (it is then no symbol);
    ``k`` (samples per input) is a symbol of a sampled candidate only.
    """
    values = {"N": float(N), "N-1": float(N - 1), "C": float(C), "2": 2.0}
    if sigma is not None:
        values["sigma"] = float(sigma)
    if k is not None:
        values["k"] = float(k)
    return {s: v for s, v in values.items() if v > 0 and v != 1.0}


def factor_value(factors: Mapping[str, int], values: Mapping[str, float]) -> float:
    """``prod(values[s] ** e)`` of a factorisation (1 for ``{}``)."""
    out = 1.0
    for s, e in factors.items():
        out *= values.get(s, 1.0) ** e
    return out


def _power(symbol: str, e: int) -> str:
    return symbol if e == 1 else f"{symbol}^{e}"


def format_factors(factors: Mapping[str, int], values: Mapping[str, float] | None = None) -> str:
    """``"N * 2 * sigma^2 / C"``-style text of a factorisation (``"1"`` for ``{}``), with
    the numeric value when ``values`` are given (``"... = 1.44"``)."""
    ordered = [(s, factors[s]) for s in SYMBOLS if s in factors]
    up = [_power(s if s != "N-1" else "(N-1)", e) for s, e in ordered if e > 0]
    down = [_power(s if s != "N-1" else "(N-1)", -e) for s, e in ordered if e < 0]
    text = " * ".join(up) if up else "1"
    if down:
        text += " / " + (down[0] if len(down) == 1 else "(" + " * ".join(down) + ")")
    if values is not None and factors:
        text += f" = {factor_value(factors, values):.6g}"
    return text


def explanation_key(factors: Mapping[str, int]) -> tuple[int, int, tuple[int, ...]]:
    """Sort key of a factorisation: total ``|exp|``, number of symbols, then a fixed order."""
    return (
        sum(abs(e) for e in factors.values()),
        len(factors),
        tuple(-abs(factors.get(s, 0)) for s in SYMBOLS),
    )


@dataclass(frozen=True)
class FactorTable:
    """Every factorisation over ``values`` with ``|exp| <= MAX_EXPONENT``, by log value.

    Attributes
    ----------
    symbols : tuple of str
        The symbols present (value != 1), in :data:`SYMBOLS` order.
    exponents : ndarray of int, shape (R, len(symbols))
    logs : ndarray, shape (R,)
        ``exponents @ log(values)``.
    """

    symbols: tuple[str, ...]
    values: tuple[float, ...]
    exponents: np.ndarray
    logs: np.ndarray

    @classmethod
    def build(cls, values: Mapping[str, float]) -> FactorTable:
        symbols = tuple(s for s in SYMBOLS if s in values)
        vals = tuple(float(values[s]) for s in symbols)
        return _table(symbols, vals)

    def near(self, log_lo: float, log_hi: float) -> list[dict[str, int]]:
        """The factorisations whose log value lies in ``[log_lo, log_hi]``, simplest first."""
        rows = np.flatnonzero((self.logs >= log_lo) & (self.logs <= log_hi))
        out = [{s: int(e) for s, e in zip(self.symbols, self.exponents[r]) if e != 0} for r in rows]
        return sorted(out, key=explanation_key)

    def value_of(self, factors: Mapping[str, int]) -> float:
        return factor_value(factors, dict(zip(self.symbols, self.values)))


@functools.lru_cache(maxsize=32)
def _table(symbols: tuple[str, ...], values: tuple[float, ...]) -> FactorTable:
    ranges = [
        range(-m, m + 1) for m in (MAX_K_EXPONENT if s == "k" else MAX_EXPONENT for s in symbols)
    ]
    exps = np.array(list(itertools.product(*ranges)), dtype=np.int64).reshape(-1, len(symbols))
    logs = exps @ np.array([math.log(v) for v in values]) if symbols else np.zeros(1)
    exps.setflags(write=False)
    logs.setflags(write=False)
    return FactorTable(symbols, values, exps, logs)
