"""The option vocabularies of minifim, one string enum per keyword meaning.

Every option keyword of the public API takes one of the vocabularies below. Each is a
``str, Enum``: a member *is* its string (``FisherKind.TRUE == "true"``, it hashes, formats and
serialises as ``"true"``), so plain strings are accepted everywhere and the enums give one
source of truth and IDE completion. :func:`as_option` converts an argument to its member
(accepting the member, its string value or a documented alias) and raises a ``ValueError``
naming the argument otherwise. :func:`deprecated_keywords` keeps a renamed keyword working
for one release with a ``DeprecationWarning``.

The vocabularies, with their keyword and values (aliases in parentheses):

* :class:`FisherKind`, ``fisher=``: true (type-2), empirical, mc, argmax, ggn
* :class:`Curvature`, ``fisher=`` where the Hessian is accepted too (``natural_gradient``,
  ``curvature_spectrum``, ...): the Fisher kinds + hessian
* :class:`Structure`, ``structure=``: full, diag, block, kfac (kron)
* :class:`Bias`, ``bias=``: folded, separate
* :class:`Reduction`, ``reduction=``: mean, sum
* :class:`Layout`, ``layout=``: pytorch, in-out, jax
* :class:`LossConvention`, ``loss=`` (oracle): nll, mse-mean, mse-sum, ce-mean, ce-sum,
  bce-mean, bce-sum
* :class:`SolveMethod`, ``method=`` (NGD): auto, dense, woodbury, cg, structured
* :class:`SpectrumMethod`, ``method=`` (eigs): auto, dense, gram, lanczos
* :class:`KFACDamping`, ``damping_type=``: eigen, factored
* :class:`KFACApprox`, ``kfac_approx=``: expand, reduce
* :class:`PredType`, ``pred_type=``: glm, nn
* :class:`LinkApprox`, ``link_approx=``: probit, mc
* :class:`ScoreBackend`, ``backend=``: backprop, autograd
* :class:`PruningCriterion`, ``criterion=``: magnitude, obd, obs
* :class:`Prunable`, ``prunable=``: weights, all
* :class:`EWCMode`, ``mode=``: separate, recursive, online
* :class:`MergeStructure`, ``structure=`` (merging): isotropic, diag, block, full
* :class:`SensitivityLevel`, ``per=``: parameter, unit, input
* :class:`UnitAggregate`, ``aggregate=``: incoming, outgoing, both, gate
* :class:`InitScheme`, ``scheme=``: pytorch, normal
* :class:`FixtureLabels`, ``labels=``: model, uniform
* :class:`Link`, ``link=`` (Poisson likelihood): log, softplus
* :class:`Parameterization`, ``parameterization=`` (heteroscedastic Gaussian): logvar, natural
* :class:`Triangle`, ``triangle=`` (dense curvatures): both, upper

Names from the ecosystem: curvlinops' ``FisherType`` words are aliases of
:class:`FisherKind`: ``"type-2"`` is minifim's ``"true"`` (the expectation over the model's
labels, exact), ``"mc"`` and ``"empirical"`` are the same words. laplace-torch's
``hessian_structure="kron"`` is :class:`Structure`'s ``"kfac"`` (accepted as an alias); its
``pred_type="glm"|"nn"`` and ``link_approx="probit"|"mc"`` are :class:`PredType` and
:class:`LinkApprox` verbatim. curvlinops' ``separate_weight_and_bias=True`` is
``bias="separate"``; its ``KFACInverseLinearOperator(use_exact_damping=True)`` is
``damping_type="eigen"`` and its heuristic (pi) damping is ``damping_type="factored"``; its
``kfac_approx="expand"|"reduce"`` (``KFACType``) is :class:`KFACApprox` verbatim.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any, TypeVar, cast

__all__ = [
    "Option",
    "FisherKind",
    "Curvature",
    "Structure",
    "Bias",
    "Reduction",
    "Layout",
    "LossConvention",
    "SolveMethod",
    "SpectrumMethod",
    "KFACDamping",
    "KFACApprox",
    "PredType",
    "LinkApprox",
    "ScoreBackend",
    "PruningCriterion",
    "Prunable",
    "EWCMode",
    "MergeStructure",
    "SensitivityLevel",
    "UnitAggregate",
    "InitScheme",
    "FixtureLabels",
    "Link",
    "Parameterization",
    "Triangle",
    "as_option",
    "deprecated_keywords",
    "renamed_keyword",
    "DEPRECATION_SINCE",
    "DEPRECATION_UNTIL",
]

#: The release that renamed the keywords of issue 13, and the release that removes the old ones.
DEPRECATION_SINCE = "0.2.0"
DEPRECATION_UNTIL = "0.3.0"

E = TypeVar("E", bound="Option")
F = TypeVar("F", bound=Callable[..., Any])


class Option(str, Enum):
    """Base of every option vocabulary: a member is its string value.

    Subclasses may define a class attribute ``_aliases_`` (set after the class body, see
    :func:`_set_aliases`) mapping alternative spellings to members; ``Cls("alias")`` then
    returns the member.
    """

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(str.__str__(self), spec)

    __hash__ = str.__hash__

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The canonical string values, in definition order (aliases excluded)."""
        return tuple(m.value for m in cls)

    @classmethod
    def aliases(cls) -> dict[str, Option]:
        """Alternative spellings accepted for this vocabulary: ``{alias: member}``."""
        return dict(_ALIASES.get(cls, {}))

    @classmethod
    def _missing_(cls, value: object) -> Option | None:
        if isinstance(value, str):
            return _ALIASES.get(cls, {}).get(value)
        return None


_ALIASES: dict[type, dict[str, Option]] = {}


def _set_aliases(cls: type[E], aliases: Mapping[str, E]) -> None:
    _ALIASES[cls] = dict(aliases)


class FisherKind(Option):
    """The kind of Fisher (keyword ``fisher=``).

    ``true``: ``E_x E_{y~p(y|x,theta)}[s s^T]`` computed exactly from the output-space Fisher
    (curvlinops ``FisherType.TYPE2``, alias ``"type-2"``); ``empirical``: the average of
    ``s s^T`` at the observed labels (curvlinops ``EMPIRICAL``); ``mc``: Monte-Carlo labels
    drawn from the model (``n_samples`` labels per input, curvlinops ``MC``); ``argmax``: the
    single most probable label; ``ggn``: the generalised Gauss-Newton ``J^T H_f J`` (equal to
    ``true`` for canonical-link likelihoods).
    """

    TRUE = "true"
    EMPIRICAL = "empirical"
    MC = "mc"
    ARGMAX = "argmax"
    GGN = "ggn"


_set_aliases(FisherKind, {"type-2": FisherKind.TRUE})


class Curvature(Option):
    """A curvature kind: the Fisher kinds plus the Hessian (keyword ``fisher=`` of the
    functions that also accept the Hessian, such as ``natural_gradient``).

    Equal as strings to :class:`FisherKind`'s members (``Curvature.TRUE == FisherKind.TRUE``);
    ``hessian`` is the Hessian of the loss, indefinite away from a minimum.
    """

    TRUE = "true"
    EMPIRICAL = "empirical"
    MC = "mc"
    ARGMAX = "argmax"
    GGN = "ggn"
    HESSIAN = "hessian"


_set_aliases(Curvature, {"type-2": Curvature.TRUE})


class Structure(Option):
    """The structure of a curvature approximation (keyword ``structure=``).

    ``full``: the dense ``(P, P)`` matrix; ``diag``: its exact diagonal; ``block``: the
    per-layer diagonal blocks; ``kfac``: Kronecker factors ``G_l kron A_l`` per layer
    (laplace-torch ``"kron"``, accepted as an alias).
    """

    FULL = "full"
    DIAG = "diag"
    BLOCK = "block"
    KFAC = "kfac"


_set_aliases(Structure, {"kron": Structure.KFAC})


class MergeStructure(Option):
    """The curvature weighting of Fisher merging: :class:`Structure` without K-FAC, plus
    ``isotropic`` (a scalar per model: plain parameter averaging)."""

    ISOTROPIC = "isotropic"
    DIAG = "diag"
    BLOCK = "block"
    FULL = "full"


class Bias(Option):
    """How K-FAC treats a layer's bias (keyword ``bias=``).

    ``folded``: the bias is a weight column of input ``1`` (``A`` acts on ``[a; 1]``);
    ``separate``: the bias is its own block with factor ``G`` (curvlinops
    ``separate_weight_and_bias=True``).
    """

    FOLDED = "folded"
    SEPARATE = "separate"


class Reduction(Option):
    """How a loss or curvature sums over the ``N`` samples (keyword ``reduction=``).

    ``mean``: ``c = 1/N``; ``sum``: ``c = 1`` (the curvlinops convention). See
    :doc:`/conventions`.
    """

    MEAN = "mean"
    SUM = "sum"


class Layout(Option):
    """The parameter ordering of an external vector or matrix (keyword ``layout=``).

    ``pytorch``: per layer ``W (out, in)`` row-major then ``b`` (minifim's own order);
    ``in-out``: ``W`` stored ``(in, out)``; ``jax``: flax ``ravel_pytree`` order
    (alphabetical keys, ``bias`` before ``kernel (in, out)``). See :doc:`/conventions`.
    """

    PYTORCH = "pytorch"
    IN_OUT = "in-out"
    JAX = "jax"


class LossConvention(Option):
    """The loss convention of another library's arrays (keyword ``loss=`` of the oracle).

    ``nll``: minifim's mean negative log-likelihood. The others are PyTorch's (and
    curvlinops') losses, the suffix fixing the reduction over the ``N`` samples: ``mse-mean``
    / ``mse-sum`` (``MSELoss``: ``(y - f)^2`` averaged over the ``N C`` entries / summed; a
    Gaussian likelihood), ``ce-mean`` / ``ce-sum`` (``CrossEntropyLoss``; categorical),
    ``bce-mean`` / ``bce-sum`` (``BCEWithLogitsLoss``, averaged over the ``N C`` entries /
    summed; Bernoulli). See :doc:`/testing`.
    """

    NLL = "nll"
    MSE_MEAN = "mse-mean"
    MSE_SUM = "mse-sum"
    CE_MEAN = "ce-mean"
    CE_SUM = "ce-sum"
    BCE_MEAN = "bce-mean"
    BCE_SUM = "bce-sum"


class SolveMethod(Option):
    """The route of a damped curvature solve (``natural_gradient(method=)``).

    ``auto`` picks by size; ``dense``: Cholesky of the ``(P, P)`` matrix; ``woodbury``: the
    push-through identity on the ``(N C, N C)`` Gram matrix; ``cg``: matrix-free CG (GMRES
    for the Hessian); ``structured``: the structure's own solve (diag, block, kfac).
    """

    AUTO = "auto"
    DENSE = "dense"
    WOODBURY = "woodbury"
    CG = "cg"
    STRUCTURED = "structured"


class SpectrumMethod(Option):
    """The route of an eigenvalue computation (``curvature_spectrum(method=)``).

    ``auto`` picks by size; ``dense``: ``eigh`` of the ``(P, P)`` matrix; ``gram``: the
    eigenvalues of the ``(N C, N C)`` Gram matrix (same nonzero spectrum); ``lanczos``:
    matrix-free ARPACK for the top ``k``.
    """

    AUTO = "auto"
    DENSE = "dense"
    GRAM = "gram"
    LANCZOS = "lanczos"


class KFACDamping(Option):
    """How damping enters a K-FAC inverse (keyword ``damping_type=``).

    ``eigen``: ``(G kron A + lambda I)^{-1}`` exactly through the factors' eigenbases
    (curvlinops ``use_exact_damping=True``); ``factored``: factored Tikhonov damping
    ``(G + sqrt(lambda)/pi I) kron (A + pi sqrt(lambda) I)`` (Martens & Grosse 2015, sec. 6.3).
    """

    EIGEN = "eigen"
    FACTORED = "factored"


class KFACApprox(Option):
    """The K-FAC flavour of a weight-shared layer (keyword ``kfac_approx=``; Eschenhagen et al.
    2023, curvlinops ``KFACType`` with the same words).

    ``expand``: every one of the ``R`` positions is a sample of the layer (``A`` from all
    positions' inputs, ``G`` from all positions' seeds); ``reduce``: the positions are
    aggregated first (``A`` from each sample's position-averaged input, ``G`` from its
    position-summed seeds). The two coincide for a layer without weight sharing (``R = 1``).
    See :mod:`minifim.geometry.kronecker`.
    """

    EXPAND = "expand"
    REDUCE = "reduce"


class PredType(Option):
    """The Laplace predictive (keyword ``pred_type=``, laplace-torch's name and values).

    ``glm``: the linearised network ``f(x, theta*) + J (theta - theta*)`` with a Gaussian over
    the outputs; ``nn``: Monte-Carlo over the network at posterior parameter draws
    (minifim's former ``method="mc"``).
    """

    GLM = "glm"
    NN = "nn"


class LinkApprox(Option):
    """How the GLM predictive integrates the link (keyword ``link_approx=``, laplace-torch's).

    ``probit``: the probit approximation ``softmax(mu / sqrt(1 + pi/8 diag S))``; ``mc``:
    Monte-Carlo over the Gaussian of the outputs.
    """

    PROBIT = "probit"
    MC = "mc"


class ScoreBackend(Option):
    """The differentiation backend of per-sample scores and Jacobians (keyword ``backend=``).

    ``backprop``: minifim's batched backpropagation; ``autograd``: ``autograd.jacobian`` (an
    independent second route, slower).
    """

    BACKPROP = "backprop"
    AUTOGRAD = "autograd"


class PruningCriterion(Option):
    """The saliency of a pruning step (``prune(criterion=)``, formerly ``method=``).

    ``magnitude``: ``|theta_q|``; ``obd``: Optimal Brain Damage ``F_qq theta_q^2 / 2``;
    ``obs``: Optimal Brain Surgeon ``theta_q^2 / (2 [F^{-1}]_qq)`` with the compensating update.
    """

    MAGNITUDE = "magnitude"
    OBD = "obd"
    OBS = "obs"


class Prunable(Option):
    """Which parameters pruning may remove (keyword ``prunable=``)."""

    WEIGHTS = "weights"
    ALL = "all"


class EWCMode(Option):
    """How EWC combines its tasks' penalties (keyword ``mode=``, Avalanche's words).

    ``separate``: one penalty per past task; ``recursive``: the Laplace recursion (sum of the
    precisions at the latest anchor); ``online``: online EWC with decay ``gamma``.
    """

    SEPARATE = "separate"
    RECURSIVE = "recursive"
    ONLINE = "online"


class SensitivityLevel(Option):
    """The unit of a Fisher sensitivity (``fisher_sensitivity(per=)``)."""

    PARAMETER = "parameter"
    UNIT = "unit"
    INPUT = "input"


class UnitAggregate(Option):
    """How parameter sensitivities aggregate to a unit (keyword ``aggregate=``)."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"
    BOTH = "both"
    GATE = "gate"


class InitScheme(Option):
    """The parameter initialisation of :meth:`MLP.init` (keyword ``scheme=``)."""

    PYTORCH = "pytorch"
    NORMAL = "normal"


class FixtureLabels(Option):
    """The labels of a fixture's targets (``spec['labels']``): sampled from the model or
    uniform."""

    MODEL = "model"
    UNIFORM = "uniform"


class Link(Option):
    """The inverse link of the Poisson likelihood (keyword ``link=``): the rate ``r(f)``.

    ``log``: ``r = e^f`` (canonical: the loss Hessian ``e^f`` equals the output Fisher and
    does not depend on the label; PyTorch ``PoissonNLLLoss(log_input=True)``); ``softplus``:
    ``r = log(1 + e^f)`` (not canonical: the GGN depends on the label and differs from the
    Fisher ``sigmoid(f)^2 / r``; computed exactly for every ``f``, where PyTorch's
    ``softplus`` switches to the identity above ``f = 20``).
    """

    LOG = "log"
    SOFTPLUS = "softplus"


class Triangle(Option):
    """Which triangles of a dense symmetric curvature are written (keyword ``triangle=``).

    ``both``: the full symmetric matrix; ``upper``: the upper triangle with the diagonal, the
    strict lower triangle exactly zero (what LAPACK reads with ``uplo="U"``, e.g.
    ``scipy.linalg.eigh(M, lower=False)`` or ``cho_factor(M, lower=False)``). ``upper``
    skips the mirror of the second triangle: it writes what one SYRK writes. A product
    ``M @ v`` of an ``upper`` matrix is not the curvature's product.
    """

    BOTH = "both"
    UPPER = "upper"


class Parameterization(Option):
    """The output coordinates of the heteroscedastic Gaussian (keyword ``parameterization=``).

    ``logvar``: outputs ``(mu, log sigma^2)``, blocked (the ``C`` means, then the ``C``
    log-variances); ``natural``: ``(eta_1, f_2)`` with the natural parameters
    ``eta_1 = mu / sigma^2`` and ``eta_2 = -exp(f_2) / 2 = -1 / (2 sigma^2)`` (Immer et al.
    2023, their exponential head). Neither is canonical: the loss Hessian depends on the
    label and is indefinite for some labels.
    """

    LOGVAR = "logvar"
    NATURAL = "natural"


# --- conversion -----------------------------------------------------------------------------


def _choices_text(cls: type[Option], allowed: Iterable[Option] | None) -> str:
    names = sorted(m.value for m in (cls if allowed is None else allowed))
    return "[" + ", ".join(repr(n) for n in names) + "]"


def as_option(value: Any, cls: type[E], name: str, allowed: Iterable[E] | None = None) -> E:
    """Return ``value`` as a member of the vocabulary ``cls``.

    Parameters
    ----------
    value : cls member or str
        The member itself, its string value, or a documented alias (``"kron"`` for
        ``Structure.KFAC``, ``"type-2"`` for ``FisherKind.TRUE``).
    cls : subclass of Option
        The vocabulary.
    name : str
        The argument's name, used in the error message.
    allowed : iterable of members, optional
        A subset of ``cls`` the caller supports (e.g. the Fisher kinds without ``argmax``).

    Returns
    -------
    member of ``cls``

    Raises
    ------
    TypeError
        ``value`` is not a string (``"name: expected one of [...], received int 3"``).
    ValueError
        ``value`` is a string outside the vocabulary (or outside ``allowed``):
        ``"name: expected one of ['block', 'diag', ...], received 'dense'"`` (the values
        sorted, as :func:`minifim._validation.check_choice` lists them).
    """
    allowed = None if allowed is None else tuple(cls(a) for a in allowed)
    if not isinstance(value, str):
        raise TypeError(
            f"{name}: expected one of {_choices_text(cls, allowed)}, received "
            f"{type(value).__name__} {value!r}"
        )
    try:
        member = cls(value)
    except ValueError:
        member = None
    if member is None or (allowed is not None and member not in allowed):
        raise ValueError(
            f"{name}: expected one of {_choices_text(cls, allowed)}, received "
            f"{str.__str__(value)!r}"
        )
    return member


# --- renamed keywords -----------------------------------------------------------------------


def renamed_keyword(
    old: str,
    new: str,
    kwargs: dict[str, Any],
    where: str = "",
    since: str = DEPRECATION_SINCE,
    until: str = DEPRECATION_UNTIL,
) -> None:
    """Move ``kwargs[old]`` to ``kwargs[new]`` in place, with a ``DeprecationWarning``.

    Raises ``TypeError`` if both ``old`` and ``new`` are given. Does nothing if ``old`` is
    absent. ``where`` names the callable in the messages.
    """
    if old not in kwargs:
        return
    prefix = f"{where}: " if where else ""
    if new in kwargs:
        raise TypeError(
            f"{prefix}received both '{old}' (deprecated) and '{new}'; pass only '{new}'"
        )
    warnings.warn(
        f"{prefix}keyword '{old}' is deprecated since minifim {since} and will be "
        f"removed in {until}; use '{new}'",
        DeprecationWarning,
        stacklevel=3,
    )
    kwargs[new] = kwargs.pop(old)


def deprecated_keywords(
    since: str = DEPRECATION_SINCE, until: str = DEPRECATION_UNTIL, **renames: str
) -> Callable[[F], F]:
    """Decorator keeping renamed keywords working for one release.

    ``@deprecated_keywords(seed_or_rng="rng")`` maps a call's ``seed_or_rng=`` to ``rng=``
    with a ``DeprecationWarning`` naming both (and the releases ``since``/``until``); passing
    both raises ``TypeError``. The wrapped function's signature (``inspect.signature``) is the
    new one.
    """

    def decorate(func: F) -> F:
        params = inspect.signature(func).parameters
        for old, new in renames.items():
            if new not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                raise TypeError(
                    f"deprecated_keywords: {func.__qualname__} has no parameter "
                    f"'{new}' to map '{old}' to"
                )
            if old in params:
                raise TypeError(
                    f"deprecated_keywords: {func.__qualname__} still has the old parameter '{old}'"
                )
        where = func.__qualname__

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{where}: received both '{old}' (deprecated) and "
                            f"'{new}'; pass only '{new}'"
                        )
                    warnings.warn(
                        f"{where}: keyword '{old}' is deprecated since minifim "
                        f"{since} and will be removed in {until}; use '{new}'",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        wrapper.__deprecated_keywords__ = dict(renames)  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate
