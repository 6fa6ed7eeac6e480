"""Checking another library's arrays against a fixture, and diagnosing the usual mistakes.

Contract:

- **Tolerance.** An array passes when every entry satisfies
  ``|c - r| <= atol + rtol |r|`` (``numpy.allclose`` semantics, ``r`` the reference). The
  default ``atol=None`` means ``rtol * max|r|`` of that array: errors below ``rtol`` times the
  array's largest entry are forgiven, so entries that are exactly zero in the reference (or
  tiny eigenvalues of a rank-deficient Fisher) do not fail on rounding. The *worst entry* is
  the one with the largest ratio ``|c - r| / (atol + rtol |r|)``; the *max relative error* is
  ``max |c - r| / |r|`` over the entries where ``r != 0``.
- **Conventions of the candidate.** ``layout`` says how the candidate orders parameters:
  ``"pytorch"`` (minifim's: ``W0, b0, W1, b1, ...`` with ``W: (out, in)`` row-major),
  ``"in-out"`` (``W`` stored as ``(in, out)``, i.e. ``x @ W`` code such as HIPS autograd
  examples, ``W0, b0, ...``), ``"jax"`` (``jax.flatten_util.ravel_pytree`` of flax
  parameters: layers in sorted-name order, ``bias`` before ``kernel: (in, out)``).
  ``reduction="sum"`` divides the candidate by ``N ** reduction_power`` (from the manifest)
  before comparing. The conversion is a permutation and a scale: exact, never an
  approximation.
- **Causes.** A failure message names the worst entry (``W0[2, 1]``-style parameter labels)
  and, when the candidate matches a transformed reference to ``cause_tol`` (relative
  Frobenius distance), the likely cause: transposed layout, another parameter order, sum vs
  mean (factor ``N``), a factor 2 (the MSE convention of the Gaussian), a missing ``sigma``,
  the empirical instead of the true Fisher, the square of the batch-mean gradient, argmax
  labels, a sign.
- **Loss conventions.** ``loss=`` states the candidate library's loss (``"nll"``,
  ``"mse-mean"``, ``"mse-sum"``, ``"ce-mean"``, ``"ce-sum"``, ``"bce-mean"``, ``"bce-sum"``:
  PyTorch's and curvlinops' vocabulary); every array is compared with the reference converted
  to it (:mod:`~minifim.oracle.keys`). A failure that another convention explains names the
  option that makes it pass (``Comparison.fix``; the CLI prints ``--loss mse-mean``).
- **Diagnosis** (:func:`diagnose`) explains a candidate curvature, diagonal or score array
  as a structured explanation ``variant x factors x layout`` (x batch size): a closed-form
  scalar fit against every variant computed exactly on the fixture, factorised over the
  symbols ``N``, ``N-1``, ``C``, ``2``, ``sigma`` (:mod:`~minifim.oracle.explanation`), every
  equally good explanation listed. For Monte-Carlo candidates with ``k`` samples per input it
  tests the error against the exact mean and variance of the Monte-Carlo error
  (:func:`mc_error_moments`, by enumeration of the output distribution) and the scale
  statistic (:func:`scale_statistic_sd`), for the factor search too.
- **K-FAC** is compared whole: a factor pair passes when ``G kron A`` matches (any scale
  split ``A * s``, ``G / s``), ``kfac_dense/<fisher>/<bias>`` holds the dense matrix, and a
  sampled K-FAC is tested against its exact band (:func:`kfac_band`).

One concept per module: :mod:`~minifim.oracle.layouts` (parameter orders of other code),
:mod:`~minifim.oracle.comparison` (one array against one reference),
:mod:`~minifim.oracle.keys` (which fixture array a candidate key names, and conversion to the
fixture's conventions), :mod:`~minifim.oracle.explanation` (factorising a scalar over the
fixture's symbols), :mod:`~minifim.oracle.causes` (likely causes of a mismatch),
:mod:`~minifim.oracle.checking` (:func:`check`, :func:`assert_matches`),
:mod:`~minifim.oracle.diagnosis` (Fisher variants, :func:`diagnose`), with
:mod:`~minifim.oracle.fixtures`, :mod:`~minifim.oracle.torch` and :mod:`~minifim.oracle.cli`
beside them. The Monte-Carlo moments live in :mod:`minifim.geometry.moments`.
"""

from __future__ import annotations

# ``X as X``: the defaults, limits and fixture helpers importable from here before the split
# (not in __all__)
from ..geometry.moments import MAX_OUTCOMES as MAX_OUTCOMES
from ..geometry.moments import mc_error_moments, mc_kfac_error_moments, output_outcomes
from .causes import CAUSE_TOL as CAUSE_TOL
from .causes import likely_causes
from .checking import CheckResult, assert_matches, check
from .comparison import DEFAULT_RTOL as DEFAULT_RTOL
from .comparison import MAX_LISTED as MAX_LISTED
from .comparison import Comparison, compare
from .diagnosis import MATCH_TOL as MATCH_TOL
from .diagnosis import (
    Diagnosis,
    diagnose,
    fisher_variants,
    kfac_band,
    minibatch_square_of_mean_gradient,
    scale_statistic_sd,
)
from .fixtures import Fixture as Fixture
from .fixtures import load_fixture as load_fixture
from .fixtures import param_label as param_label
from .keys import ALIASES, LOSSES
from .layouts import LAYOUTS, from_minifim_layout, layout_permutation, to_minifim_layout
from .layouts import REDUCTIONS as REDUCTIONS

__all__ = [
    "LAYOUTS",
    "ALIASES",
    "Comparison",
    "CheckResult",
    "Diagnosis",
    "layout_permutation",
    "to_minifim_layout",
    "from_minifim_layout",
    "compare",
    "check",
    "assert_matches",
    "likely_causes",
    "diagnose",
    "fisher_variants",
    "minibatch_square_of_mean_gradient",
    "kfac_band",
    "scale_statistic_sd",
    "mc_error_moments",
    "mc_kfac_error_moments",
    "output_outcomes",
    "LOSSES",
]
