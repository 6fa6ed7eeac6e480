"""Shared fixtures: ``case`` runs a test over every case in :mod:`tests.cases`."""

import os

import numpy as np
import pytest
from hypothesis import settings

os.environ.setdefault("MPLBACKEND", "Agg")  # tests never open a window

from .cases import CASES

# Hypothesis profiles, chosen by the environment variable HYPOTHESIS_PROFILE:
# - "ci" (default): 25 derandomized examples per property, the same on every run (fast, stable);
# - "thorough": 300 random examples per property (``make test-thorough``); the properties and
#   their error bounds (tests/tolerances.py) must hold for any example, not just the CI ones.
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile(
    "thorough", max_examples=300, deadline=None, derandomize=False, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def pytest_terminal_summary(terminalreporter):
    """With ``MINIFIM_TOL_REPORT=N``: the N largest measured error / bound ratios (tolerances.check)."""
    top = int(os.environ.get("MINIFIM_TOL_REPORT", "0") or 0)
    if not top:
        return
    from .tolerances import RATIOS

    worst = {}
    for ratio, what, test in RATIOS:
        if ratio > worst.get((test, what), -1.0):
            worst[(test, what)] = ratio
    terminalreporter.section("largest error / bound ratios")
    for (test, what), ratio in sorted(worst.items(), key=lambda kv: -kv[1])[:top]:
        terminalreporter.write_line(f"{ratio:9.3g}  {test}  {what}")
