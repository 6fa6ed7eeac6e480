"""Sphinx configuration of the minifim documentation (``make docs``).

Markdown pages (myst-parser) with rendered maths (``$...$``, ``$$...$$``; MathJax is loaded by
the browser, so the build needs no network), numpydoc docstrings, and an API reference generated
from ``minifim.__all__`` by the local ``minifim_api`` extension (``docs/_ext``).
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "_ext"))  # the minifim_api extension
sys.path.insert(0, os.path.dirname(_HERE))  # the repository: tests.tolerances (verification page)

import minifim  # noqa: E402

project = "minifim"
author = "the minifim authors"
copyright = "the minifim authors"
release = minifim.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "minifim_api",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

# Markdown: $...$ / $$...$$ maths, \begin{align} blocks, ::: fences, heading anchors for links
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: numpydoc renders the docstrings; no validation checks (the -W build catches
# rendering errors); class members are listed by autodoc, not again by numpydoc
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()
numpydoc_xref_param_type = False
autosummary_generate = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc "Parameters" sections state the types and shapes
autodoc_inherit_docstrings = False
add_module_names = False

html_theme = "alabaster"
html_title = f"minifim {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Exact Fisher-information geometry for small neural networks",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
