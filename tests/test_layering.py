"""The import graph shows the layers: no module imports a private name (``_x``) from another
minifim module, and no layer imports a higher one.

Layers, lowest first: foundation (``_validation``, ``_version``, ``_io``, ``_linalg``, ``_parallel``,
``memory``, ``options``) < ``core`` < ``geometry`` < ``methods`` < ``oracle``. The helpers
outside the layers (``tools``, ``data``, ``plotting``, the package's ``__init__`` and
``__main__``) may import any layer, and no layer imports them (they stay out of the library's
import graph). Every ``import`` statement counts, including lazy ones inside functions; an
import under ``if TYPE_CHECKING:`` is for annotations only (no runtime dependency) and is
exempt from the layer rule, not from the private-name rule. A private *module*
(``from .. import _io``) is not a private name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "minifim"
LAYERS = {"foundation": 0, "core": 1, "geometry": 2, "methods": 3, "oracle": 4}
FOUNDATION = {"_validation", "_version", "_io", "_linalg", "_parallel", "memory", "options"}
HELPERS = {"tools", "data", "plotting", "__init__", "__main__"}

#: Violations in files other helpers are still editing: ``(importer, imported, name)`` for a
#: private name, ``(importer, imported, None)`` for an upward import. To remove: the list must
#: end empty.
ALLOWED: set[tuple[str, str, str | None]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES.get(name) is not None and MODULES[name].name == "__init__.py"


def _layer(name: str) -> str | None:
    """``foundation``, a layer name, or ``None`` for the helpers outside the layers."""
    parts = name.split(".")
    if len(parts) == 1:  # the package's own __init__
        return None
    head = parts[1]
    if head in FOUNDATION:
        return "foundation"
    if head in HELPERS:
        return None
    return head if head in LAYERS else None


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_only(tree: ast.Module) -> set[int]:
    """``id`` of every import statement under ``if TYPE_CHECKING:``."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            out |= {
                id(n)
                for stmt in node.body
                for n in ast.walk(stmt)
                if isinstance(n, (ast.Import, ast.ImportFrom))
            }
    return out


def _imports(name: str, path: Path):
    """``(imported module, imported name or None, type-only)`` for every import of minifim
    code."""
    tree = ast.parse(path.read_text(), str(path))
    type_only = _type_only(tree)
    for node in ast.walk(tree):
        typing_only = id(node) in type_only
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "minifim":
                    yield alias.name, None, typing_only
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, node)
            if target.split(".")[0] != "minifim":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:  # a submodule, not a name
                    yield sub, None, typing_only
                else:
                    yield target, alias.name, typing_only


def _violations() -> list[tuple[str, str, str | None, str]]:
    found = []
    for name, path in MODULES.items():
        mine = _layer(name)
        for target, imported, typing_only in _imports(name, path):
            if (
                imported is not None
                and imported.startswith("_")
                and not imported.startswith("__")
                and target != name
            ):
                found.append((name, target, imported, "imports a private name"))
            theirs = _layer(target)
            if typing_only:
                continue
            if mine is None or target == "minifim":
                if mine is not None and target == "minifim":
                    found.append((name, target, None, "imports the package root"))
                continue
            if theirs is None:
                found.append((name, target, None, "imports a helper outside the layers"))
            elif LAYERS[theirs] > LAYERS[mine]:
                found.append((name, target, None, f"({mine}) imports a higher layer ({theirs})"))
    return found


def test_the_module_map_is_complete():
    assert "minifim.core.conventions" in MODULES and "minifim.oracle.fixtures.io" in MODULES
    assert _layer("minifim.oracle.fixtures.io") == "oracle"
    assert _layer("minifim.options") == "foundation" and _layer("minifim.plotting") is None
    # the resolver: relative imports from a module and from a package __init__
    node = ast.parse("from ..core.conventions import reduction_scale").body[0]
    assert _resolve("minifim.geometry.curvature", node) == "minifim.core.conventions"
    node = ast.parse("from .schema import kfac_key").body[0]
    assert _resolve("minifim.oracle.fixtures", node) == "minifim.oracle.fixtures.schema"


def test_no_private_name_crosses_modules_and_no_layer_imports_upward():
    found = _violations()
    new = [v for v in found if v[:3] not in ALLOWED]
    assert not new, "\n".join(f"{a} -> {b}{'.' + c if c else ''}: {why}" for a, b, c, why in new)


def test_the_allow_list_holds_only_live_violations():
    """An entry that no longer occurs is removed from :data:`ALLOWED` (it only shrinks)."""
    live = {v[:3] for v in _violations()}
    stale = sorted(ALLOWED - live, key=str)
    if stale:
        pytest.fail(f"fixed, remove from ALLOWED: {stale}")
