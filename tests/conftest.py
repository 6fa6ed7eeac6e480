"""Shared fixtures: ``case`` runs a test over every case in :mod:`tests.cases`."""

import os
import sys

import numpy as np
import pytest
from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MPLBACKEND", "Agg")  # tests never open a window

from cases import CASES  # noqa: E402

settings.register_profile("minifim", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("minifim")


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
