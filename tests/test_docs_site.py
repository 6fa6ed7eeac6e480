"""The documentation site builds with warnings as errors and documents every public name.

``make docs`` runs the same build into ``docs/_build/html``; here it goes into a temporary
folder, in a subprocess (Sphinx imports ``docs/conf.py``, which extends ``sys.path``). Skipped
when Sphinx, numpydoc or myst-parser is not installed (``pip install -e ".[docs]"``).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import minifim

DOCS = Path(__file__).resolve().parents[1] / "docs"
REQUIRED = ("sphinx", "numpydoc", "myst_parser")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the docs build needs {', '.join(missing)} (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("docs") / "html"
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-E",
        "-W",
        "--keep-going",
        "-q",
        "-b",
        "html",
        "-d",
        str(out.parent / "doctrees"),
        str(DOCS),
        str(out),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"sphinx-build failed:\n{run.stderr[-5000:]}"
    return out


def _ids(html: str) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', html))


def test_every_public_name_is_on_the_api_page(site):
    ids = _ids((site / "api.html").read_text(encoding="utf-8"))
    missing = []
    for name in minifim.__all__:
        obj = getattr(minifim, name)
        if isinstance(obj, types.ModuleType):
            ok = f"module-{obj.__name__}" in ids
        else:
            ok = f"minifim.{name}" in ids
        if not ok:
            missing.append(name)
    assert not missing, f"public names without an entry on the API page: {missing}"


def test_every_page_is_built_and_linked(site):
    pages = sorted(p.stem for p in DOCS.glob("*.md"))
    index = (site / "index.html").read_text(encoding="utf-8")
    for page in pages:
        assert (site / f"{page}.html").is_file(), page
        if page != "index":
            assert f'href="{page}.html' in index, f"{page} is not in the index's table of contents"


def test_maths_is_rendered(site):
    html = (site / "conventions.html").read_text(encoding="utf-8")
    assert html.count('class="math') >= 20  # $...$ and $$...$$ became MathJax spans
    assert "mathjax" in html.lower()
