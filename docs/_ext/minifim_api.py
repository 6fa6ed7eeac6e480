"""``minifim-api``: the API reference of ``minifim.__all__``, one group per subject.

In a page::

    ```{minifim-api} minifim.geometry.curvature minifim.geometry.kronecker
    ```

documents (an ``autosummary`` table, then ``autofunction``/``autoclass``/``py:data``) every
name of ``minifim.__all__`` defined in one of the listed modules (a module prefix covers its
submodules), under its public name ``minifim.<name>``. ``{minifim-api} *`` documents the names
no earlier directive of the page took, so a name added to ``__all__`` always appears.
Namespace modules of ``__all__`` (``minifim.optim``, ...) are documented with ``automodule``
over their own ``__all__``.
"""

from __future__ import annotations

import ast
import inspect
import sys
import types

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

import minifim


def home_module(name: str) -> str:
    """The module that defines ``minifim.<name>`` (for data: the first submodule holding it)."""
    obj = getattr(minifim, name)
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    module = getattr(obj, "__module__", None)
    data = isinstance(obj, (tuple, dict, list, frozenset, str))
    if isinstance(module, str) and module.startswith("minifim") and not data:
        return module
    holders = [m for m in sorted(sys.modules) if m.startswith("minifim.")
               and sys.modules[m] is not None and getattr(sys.modules[m], name, None) is obj]
    for modname in holders:  # the module that assigns it, not one that imports it
        if name in _assigned_names(sys.modules[modname]):
            return modname
    return holders[0] if holders else "minifim"


def _assigned_names(module: types.ModuleType) -> set[str]:
    """Names a module assigns at its top level (``X = ...``, ``X: T = ...``)."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError, SyntaxError):
        return set()
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _directive_for(name: str) -> list[str]:
    obj = getattr(minifim, name)
    full = f"minifim.{name}"
    if isinstance(obj, types.ModuleType):
        # the namespace's own names; those that are also top-level names are documented there
        top = {id(getattr(minifim, n)) for n in minifim.__all__
               if not isinstance(getattr(minifim, n), types.ModuleType)}
        public = list(getattr(obj, "__all__", []))
        own = [m for m in public if id(getattr(obj, m)) not in top]
        shared = [m for m in public if m not in own]
        lines = [f".. automodule:: {obj.__name__}"]
        lines += [f"   :members: {', '.join(own)}" if own else "   :no-members:", ""]
        if shared:
            lines += [f"Also in ``{obj.__name__}``, documented above as top-level names: "
                      + ", ".join(f":obj:`{m} <minifim.{m}>`" for m in shared) + ".", ""]
        return lines
    if inspect.isclass(obj):
        return [f".. autoclass:: {full}", "   :members:", ""]
    if callable(obj):
        return [f".. autofunction:: {full}", ""]
    return _data_directive(name, obj)


def _data_directive(name: str, obj: object) -> list[str]:
    """``py:data`` with the value and the ``#:`` comment of its module (autodata would show the
    docstring of the value's type, ``str`` or ``tuple``)."""
    home = home_module(name)
    value = " ".join(repr(obj).split())
    lines = [f".. py:data:: {name}", "   :module: minifim", f"   :value: {value}", ""]
    try:
        docs = ModuleAnalyzer.for_module(home).find_attr_docs().get(("", name), [])
    except PycodeError:
        docs = []
    lines += [f"   {line}" for line in docs if line.strip()]
    lines += ["", f"   Defined in ``{home}``.", ""]
    return lines


class MinifimAPI(SphinxDirective):
    """Document the public names of the given modules (``*``: every name not yet documented)."""

    required_arguments = 1
    optional_arguments = 20
    has_content = False

    def run(self) -> list[nodes.Node]:
        env = self.env
        done: set[str] = env.temp_data.setdefault("minifim_api_done", set())
        names = [n for n in minifim.__all__ if n not in done]
        if self.arguments != ["*"]:
            prefixes = tuple(self.arguments)
            names = [n for n in names
                     if any(home_module(n) == p or home_module(n).startswith(p + ".")
                            for p in prefixes)]
        done.update(names)
        objects = [n for n in names if not isinstance(getattr(minifim, n), types.ModuleType)]
        modules = [n for n in names if n not in objects]
        lines: list[str] = [".. currentmodule:: minifim", ""]
        # the summary table lists functions and classes (a constant's summary would be the
        # docstring of its type)
        summarised = [n for n in objects if callable(getattr(minifim, n))]
        if summarised:
            lines += [".. autosummary::", ""] + [f"   {n}" for n in summarised] + [""]
        for n in objects + modules:
            lines += _directive_for(n)
        # the page is Markdown (MyST): autodoc's directives are rST, so they go in an eval-rst block
        lines = ["````{eval-rst}", *lines, "````"]
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source=self.get_source_info()[0]),
                                 container)
        return container.children


def setup(app):
    app.add_directive("minifim-api", MinifimAPI)
    return {"parallel_read_safe": False, "parallel_write_safe": True, "version": "1"}
