"""The deprecated ``curvature=`` of the NGD solvers, which mixed a kind and a structure.

Until release 0.2.0 :func:`minifim.natural_gradient` and :func:`minifim.optim.ngd` took one
``curvature=`` argument that was either a curvature *kind* (``"true"``, ``"empirical"``,
``"mc"``, ``"ggn"``, ``"hessian"``) or a *structure* (``"diag"``, ``"block"``, ``"kfac"``, with
the kind in a second ``fisher=``). The two are now ``fisher=`` (the kind) and ``structure=``.
:func:`split_curvature` keeps old calls working for one release: ``curvature=<kind>`` becomes
``fisher=<kind>``, ``curvature=<structure>`` becomes ``structure=<structure>`` (the kind then
comes from ``fisher=``, default ``"true"``), each with a ``DeprecationWarning``; a structure
word passed positionally where the kind now sits is moved to ``structure=`` the same way.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

from ..options import DEPRECATION_SINCE, DEPRECATION_UNTIL, Structure

__all__ = ["split_curvature"]

_STRUCTURED = frozenset(s.value for s in Structure if s is not Structure.FULL)


def _warn(where: str, what: str) -> None:
    warnings.warn(
        f"{where}: {what} is deprecated since minifim {DEPRECATION_SINCE} and will "
        f"be removed in {DEPRECATION_UNTIL}; pass the kind as fisher= and the "
        "structure as structure=",
        DeprecationWarning,
        stacklevel=3,
    )


def split_curvature(position: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator mapping the old ``curvature=`` onto ``fisher=`` and ``structure=``.

    Parameters
    ----------
    position : int
        Index of the positional parameter ``fisher`` (where ``curvature`` used to sit).
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        where = func.__qualname__

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if "curvature" in kwargs:
                old = kwargs.pop("curvature")
                _warn(where, f"keyword 'curvature' (here {old!r})")
                target = "structure" if isinstance(old, str) and old in _STRUCTURED else "fisher"
                if target in kwargs or (target == "fisher" and len(args) > position):
                    raise TypeError(
                        f"{where}: received both 'curvature' (deprecated) and "
                        f"'{target}'; pass only '{target}'"
                    )
                kwargs[target] = old
            elif (
                len(args) > position
                and isinstance(args[position], str)
                and args[position] in _STRUCTURED
            ):
                old = args[position]
                _warn(where, f"a structure ({old!r}) as the positional curvature argument")
                if "structure" in kwargs:
                    raise TypeError(
                        f"{where}: received the structure {old!r} positionally and "
                        "structure=; pass only structure="
                    )
                kwargs["structure"] = old
                args = args[:position] + (kwargs.pop("fisher", "true"),) + args[position + 1 :]
            return func(*args, **kwargs)

        return wrapper

    return decorate
