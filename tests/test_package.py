"""Package hygiene: the public API in ``__all__``, documented, no function shadowing a module,
and every public entry point that takes ``net`` refusing anything but an ``MLP``."""

import importlib
import inspect
import pkgutil
import sys
import types

import numpy as np
import pytest

import minifim

# the direct submodules and subpackages, and every module below them (dotted names relative to
# ``minifim``), except the CLI entry point ``__main__`` (importing it runs the CLI)
SUBMODULES = sorted(m.name for m in pkgutil.iter_modules(minifim.__path__) if m.name != "__main__")
ALL_MODULES = sorted(
    m.name.removeprefix("minifim.")
    for m in pkgutil.walk_packages(minifim.__path__, "minifim.")
    if not m.name.endswith("__main__")
)


def _public_api():
    return [(name, getattr(minifim, name)) for name in minifim.__all__]


def test_all_names_exist_and_are_unique():
    assert len(minifim.__all__) == len(set(minifim.__all__))
    missing = [n for n in minifim.__all__ if not hasattr(minifim, n)]
    assert missing == []


def _own_doc(obj):
    """The object's own docstring (a class's, not one inherited from ``object``)."""
    if inspect.isclass(obj):
        return obj.__dict__.get("__doc__")
    return getattr(obj, "__doc__", None)


def test_every_public_callable_and_module_in_all_is_documented():
    undocumented = [
        name
        for name, obj in _public_api()
        if (callable(obj) or isinstance(obj, types.ModuleType))
        and not (_own_doc(obj) or "").strip()
    ]
    assert undocumented == []


def test_every_public_top_level_callable_is_in_all():
    public = {
        name
        for name, obj in vars(minifim).items()
        if not name.startswith("_") and callable(obj) and not isinstance(obj, types.ModuleType)
    }
    assert sorted(public - set(minifim.__all__)) == []


def test_all_lists_the_submodules_minifim_imports_on_purpose():
    """Modules re-exported as namespaces (``minifim.optim.adam``) are part of the API."""
    for name in ("data", "plotting", "fixtures", "oracle", "optim"):
        assert name in minifim.__all__
        assert isinstance(getattr(minifim, name), types.ModuleType)


@pytest.mark.parametrize("name", SUBMODULES)
def test_no_public_attribute_shadows_a_submodule(name):
    """``minifim.<m>`` is the submodule ``<m>`` for every submodule (the function
    ``minifim.kfac`` used to hide the module ``minifim.kfac``, now ``minifim.geometry.kronecker``)."""
    module = importlib.import_module(f"minifim.{name}")
    assert getattr(minifim, name) is module is sys.modules[f"minifim.{name}"]
    assert name not in minifim.__all__ or isinstance(getattr(minifim, name), types.ModuleType)


def test_renamed_modules_reach_their_contents():
    assert minifim.geometry.kronecker.KFACFactors is minifim.KFACFactors
    assert minifim.geometry.kronecker.kfac is minifim.kfac
    assert minifim.methods.sensitivities.sensitivity is minifim.sensitivity
    assert callable(minifim.kfac) and callable(minifim.sensitivity)


def test_submodule_all_names_exist():
    for name in ALL_MODULES:
        module = importlib.import_module(f"minifim.{name}")
        missing = [n for n in getattr(module, "__all__", ()) if not hasattr(module, n)]
        assert missing == [], name


def test_init_has_subject_headings_not_process_history():
    """``# spectrum (issue 4)`` records when code arrived, not what it is."""
    source = inspect.getsource(minifim)
    assert "issue" not in source.lower()


# --- net is type-checked at every public entry point ------------------------------------------
def _takes_net(obj):
    fn = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    except (TypeError, ValueError):
        return None
    if not params or params[0].name != "net":
        return None
    return [
        p
        for p in params[1:]
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def _net_entry_points():
    out = []
    for mod_name in ALL_MODULES:
        module = importlib.import_module(f"minifim.{mod_name}")
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if callable(obj) and _takes_net(obj) is not None:
                out.append(pytest.param(obj, id=f"{mod_name}.{name}"))
    return out


ENTRY_POINTS = _net_entry_points()


def test_the_entry_point_list_is_not_empty():
    assert len(ENTRY_POINTS) > 30


@pytest.mark.parametrize("func", ENTRY_POINTS)
@pytest.mark.parametrize("bad", ["[3, 4, 2]", "theta", "str"])
def test_net_is_type_checked_first(func, bad):
    """A non-MLP ``net`` is refused with a TypeError naming ``net`` before anything else is
    looked at (the other arguments are ``None`` here)."""
    net = {"[3, 4, 2]": [3, 4, 2], "theta": np.zeros(26), "str": "net"}[bad]
    required = _takes_net(func)
    kwargs = {}
    if func.__name__ == "curvature_statistics":
        kwargs["damping"] = 1e-3  # keyword-only and required
    try:
        func(net, *[None] * len(required), **kwargs)
    except ImportError:
        if func.__module__ == "minifim.oracle.torch":
            pytest.skip("PyTorch is not installed")
        raise
    except TypeError as err:
        assert str(err).startswith("net: expected a minifim.MLP"), str(err)
    else:
        pytest.fail("no error")
