# minifim developer commands. Every target bootstraps its own virtual environment:
# `make test` and `make experiments` work as the first command on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
SRC    := pyproject.toml
export MPLBACKEND := Agg

.PHONY: test test-kernels test-thorough experiments bench bench-peers lint typecheck format crosscheck clean venv docs

$(VENV)/.stamp-base:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base $(SRC)
	$(PIP) install --quiet -e ".[test]"
	touch $@

$(VENV)/.stamp-experiments: $(VENV)/.stamp-test $(SRC)
	$(PIP) install --quiet -e ".[test,experiments]"
	touch $@

$(VENV)/.stamp-docs: $(VENV)/.stamp-base $(SRC)
	$(PIP) install --quiet -e ".[docs]"
	touch $@

# torch first, pinned (the CPU build; a bare `torch` requirement would pull a newer, multi-GB CUDA
# build). curvlinops and backpack then go in WITHOUT their dependencies: curvlinops requires
# backpack, backpack requires torchvision, and torchvision's newest release pins a newer torch, so
# the resolver would replace the CPU torch with a 5 GB CUDA build (measured). backpack imports
# torchvision only in backpack.utils.examples. Their other dependencies are named explicitly (each
# accepts the installed torch): checked in a fresh venv, torch stays 2.13.0+cpu, 1.1 GB in all.
$(VENV)/.stamp-crosscheck: $(VENV)/.stamp-test $(SRC)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet einops einconv linear_operator opt-einsum packaging
	$(PIP) install --quiet --no-deps curvlinops-for-pytorch backpack-for-pytorch unfoldNd
	$(PIP) install --quiet --no-deps nngeometry==0.4
	touch $@

# The peers of `make bench-peers` beyond the cross-check extra: JAX (CPU, ~620 MB with its
# dependencies), pinned to the release measured in the README.
$(VENV)/.stamp-peers: $(VENV)/.stamp-crosscheck $(VENV)/.stamp-experiments
	$(PIP) install --quiet jax==0.10.2 jaxlib==0.10.2
	touch $@

venv: $(VENV)/.stamp-test

# The test cases are tiny matrices: one BLAS thread avoids threading overhead and the
# pathological slow-down of spinning BLAS threads on an oversubscribed machine.
# `minifim` collects the docstring examples (--doctest-modules, set in pyproject.toml).
test: $(VENV)/.stamp-test
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests minifim

# The suite under every OpenBLAS kernel (OPENBLAS_CORETYPE, and unset) x 1 and 2 BLAS threads:
# a kernel x threads table of passed/failed counts; fails if any cell fails (several minutes).
test-kernels: $(VENV)/.stamp-test
	$(PY) tools/test_kernels.py tests minifim

# Hypothesis properties with hundreds of random (not derandomized) examples each.
test-thorough: $(VENV)/.stamp-test
	HYPOTHESIS_PROFILE=thorough OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests minifim

experiments: $(VENV)/.stamp-experiments
	@set -e; for f in experiments/[a-z]*.py; do echo "== $$f"; $(PY) $$f; done
	$(PY) -m minifim.tools.report index

# Timings against the floors (a script, not a test; several minutes). The peers rows time
# torch.func, BackPACK, curvlinops, nngeometry and JAX side by side when they are installed
# (`make bench-peers` installs them first); without them minifim is reported against its floors.
bench: $(VENV)/.stamp-experiments
	$(PY) -m minifim.tools.bench --out bench-results

bench-peers: $(VENV)/.stamp-peers
	$(PY) -m minifim.tools.bench --out bench-results

# The documentation site (Sphinx + numpydoc + MyST, docs/) into docs/_build/html; any warning
# fails. -E: a fresh environment, so docstring edits always show (Sphinx does not track them).
docs: $(VENV)/.stamp-docs
	$(VENV)/bin/sphinx-build -E -W --keep-going -b html docs docs/_build/html

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check minifim tests experiments tools
	$(VENV)/bin/ruff format --check minifim tests experiments tools
	$(VENV)/bin/mypy

# Rewrite the sources with ruff format (configuration in pyproject.toml [tool.ruff.format]).
format: $(VENV)/.stamp-test
	$(VENV)/bin/ruff format minifim tests experiments tools

# mypy over the package (configuration in pyproject.toml [tool.mypy]); also run by `make lint`.
typecheck: $(VENV)/.stamp-test
	$(VENV)/bin/mypy

# The PyTorch cross-checks (tests/test_torch.py: the bridge, torch.func, curvlinops' GGN, Hessian,
# empirical Fisher and KFACLinearOperator); they skip cleanly where torch or curvlinops is missing.
crosscheck: $(VENV)/.stamp-crosscheck
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests -k torch -rs

clean:
	rm -rf $(VENV) bench-results build dist *.egg-info .pytest_cache .hypothesis .ruff_cache experiments/results docs/_build
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
