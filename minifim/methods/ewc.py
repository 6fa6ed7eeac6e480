"""Elastic weight consolidation (EWC): quadratic penalties from the Fisher of earlier tasks.

Contract (stated once, kept by every function here)
---------------------------------------------------
*Scale.* Task ``t`` has ``N_t`` samples, was learnt at ``theta*_t``, and has the MEAN curvature
``F_t`` at ``theta*_t`` (the convention of every curvature in minifim). Its precision is

    ``Lambda_t = strength * N_t * F_t``

and the penalty is added to the SUMMED negative log-likelihood of the current task, which is
what :func:`minifim.train` minimises (``sum_n -log p(y_n | x_n) + penalty(theta)``, divided by
the current ``N``). ``strength = 1`` is the Bayesian value: for a model whose negative
log-likelihood is quadratic (linear-Gaussian regression) ``N_t F_t`` is its exact Hessian and the
penalty reproduces the joint posterior exactly (Laplace).

*Modes.* With ``d_t = theta - theta*_t`` and ``T`` tasks recorded:

============  ==================================================================================
``mode``      penalty ``Omega(theta)``
============  ==================================================================================
"separate"    ``sum_t 1/2 d_t^T Lambda_t d_t``: one penalty per task at its own solution
              (Kirkpatrick et al. 2017); double-counts the older tasks (Huszar 2018)
"recursive"   ``1/2 d_T^T (sum_t Lambda_t) d_T``: accumulated precision at the latest solution,
              the recursive Laplace approximation (Huszar 2018)
"online"      ``1/2 d_T^T Lambda~_T d_T``, ``Lambda~_T = gamma Lambda~_{T-1} + Lambda_T``
              (Schwarz et al. 2018); ``gamma = 1`` is "recursive"
============  ==================================================================================

*Curvature structures* (``structure=``; the records of one mean ``F_t``, as returned by
:func:`task_curvature`, are the representations of the structure objects of
:mod:`minifim.geometry.structures`): ``"diag"`` ``(P,)`` (:class:`~minifim.Diagonal`);
``"block"`` ``[(P_l, P_l)]`` per layer over ``(W_l, b_l)`` (:class:`~minifim.BlockDiagonal`);
``"kfac"`` a :class:`~minifim.KFACFactors` (:class:`~minifim.KFAC`; Ritter et al. 2018), whose
quadratic form is ``sum_l tr(D_l^T G_l D_l A_l)`` with ``D_l = [dW_l | db_l]`` (never formed
densely); ``"full"`` the dense ``(P, P)`` matrix (:class:`~minifim.Dense`, memory-guarded). The
products, quadratic forms and dense views are those objects' methods. An accumulated precision
(``"recursive"``, ``"online"``) is a sum of such terms, formed by the structures' scaling and
addition: for ``"diag"``, ``"block"`` and ``"full"`` the sum is formed exactly; for ``"kfac"``
the per-task Kronecker terms are kept (a sum of :class:`~minifim.KFAC` terms stays a list of
terms) and their quadratic forms summed, because a sum of Kronecker products is not a
Kronecker product. The K-FAC penalty is therefore
exactly the sum of the per-task K-FAC quadratic forms; no further approximation is made.

*Fisher kinds.* ``"true"`` (exact expectation over the model's labels), ``"empirical"`` (the
task's labels ``y``), ``"mc"`` (``n_samples`` sampled labels per input from ``rng``), and two
named mistakes for study, never the default: ``"argmax"`` (the model's most likely label) and
``"square_of_mean_gradient"`` (``g g^T`` with ``g`` the gradient of the batch-MEAN loss, averaged
over mini-batches of ``batch_size``: what ``loss.backward(); p.grad ** 2`` gives; zero at an
exact optimum of the whole task).

*State.* Explicit and inspectable: :class:`EWCTask` records ``(theta_star, n_samples,
curvature)`` per task, and the penalty is a tuple of :class:`Quadratic` terms
``(centre, ((c_k, M_k), ...))`` computed from them by the pure function :func:`quadratics`.
:class:`EWC` wraps these; ``EWC(..., tasks=ewc.tasks)`` replays a run without recomputing any
curvature. Invariant (tested): the incremental update inside :meth:`EWC.add_task` equals
:func:`quadratics` of the recorded tasks.

*Mean-loss convention.* Code that adds ``lambda / 2 sum_i F_ii (theta_i - theta*_i)^2`` to the MEAN
loss of a current task of ``N_cur`` samples uses ``lambda = strength * N_t / N_cur``
(:func:`ewc_lambda`, inverse :func:`ewc_strength`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .._validation import (
    as_float_array,
    as_generator,
    check_choice,
    check_int,
    check_net,
    check_nonnegative,
    describe,
)
from ..core.model import Sequential
from ..core.objective import gradient
from ..geometry.structures import KFAC, STRUCTURE_CLASSES, BlockDiagonal, check_representation
from ..geometry.structures import Structure as CurvatureStructure
from ..geometry.structures import curvature as structured_curvature
from ..memory import require_memory
from ..options import Structure, as_option, deprecated_keywords

__all__ = [
    "EWC",
    "EWCTask",
    "Quadratic",
    "EWC_STRUCTURES",
    "EWC_CURVATURES",
    "EWC_FISHERS",
    "EWC_MODES",
    "task_curvature",
    "quadratics",
    "quadratic_penalty",
    "quadratic_grad",
    "curvature_matvec",
    "curvature_dense",
    "ewc_lambda",
    "ewc_strength",
]

EWC_STRUCTURES = ("diag", "block", "kfac", "full")
EWC_CURVATURES = EWC_STRUCTURES  # the former name, kept importable
EWC_FISHERS = ("true", "empirical", "mc", "argmax", "square_of_mean_gradient")
EWC_MODES = ("separate", "recursive", "online")

_CHEAPER = {
    "full": "structure='kfac' (Kronecker factors per layer), structure='block' (exact per-layer "
    "blocks) or structure='diag' (exact diagonal)",
    "block": "structure='kfac' (Kronecker factors per layer) or structure='diag' (exact diagonal)",
}


# --- records ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EWCTask:
    """What EWC keeps of one task.

    Attributes
    ----------
    theta_star : ndarray, shape (P,)
        The solution of the task (the centre of its penalty).
    n_samples : int
        ``N_t``, the number of samples the curvature was averaged over.
    curvature : ndarray or list of ndarray or KFACFactors
        The MEAN curvature ``F_t`` at ``theta_star`` in the representation of the structure
        (see the module docstring); the precision is ``strength * N_t * F_t``.
    """

    theta_star: np.ndarray
    n_samples: int
    curvature: Any


@dataclass(frozen=True)
class Quadratic:
    """The penalty ``1/2 (theta - centre)^T (sum_k c_k M_k) (theta - centre)``.

    Attributes
    ----------
    centre : ndarray, shape (P,)
    terms : tuple of (float, curvature)
        Coefficients ``c_k`` and curvatures ``M_k`` in one structure's representation (module
        docstring).
    """

    centre: np.ndarray
    terms: tuple


# --- curvature of one task -----------------------------------------------------------------
def _mean_gradients(
    net: Sequential, theta: np.ndarray, X: np.ndarray, y: np.ndarray, batch_size: int | None
) -> np.ndarray:
    """Rows: gradients of the batch-MEAN loss on consecutive mini-batches, ``(n_batches, P)``."""
    N = X.shape[0]
    step = N if batch_size is None else min(batch_size, N)
    return np.stack(
        [gradient(net, theta, X[s : s + step], y[s : s + step]) for s in range(0, N, step)]
    )


def _block_sizes(net: Sequential) -> list[int]:
    return [s.stop - s.start for s in net.layer_param_slices()]


def _require(structure: str, net: Sequential) -> None:
    """Memory guard for the dense representations, naming the cheaper structure."""
    P = net.num_params
    dense = {
        "full": (8 * P * P, f"dense (P, P) = ({P}, {P}) float64"),
        "block": (
            8 * sum(s * s for s in _block_sizes(net)),
            f"per-layer blocks of sizes {_block_sizes(net)}",
        ),
    }
    if structure in dense:
        need, what = dense[structure]
        require_memory(need, f"EWC structure={structure!r}: {what}", _CHEAPER[structure])


def _check_structure(structure: str | Structure) -> str:
    """The ``structure=`` word (a :class:`minifim.options.Structure` or its string)."""
    return as_option(structure, Structure, "structure").value


def _structure(kind: str, M: Any, copy: bool = True) -> CurvatureStructure:
    """The structure object of a (validated) representation ``M`` of ``kind``."""
    cls = STRUCTURE_CLASSES[kind]
    return cls(M, copy=copy)  # type: ignore[call-arg]


def _check_options(
    structure: str,
    fisher: str,
    n_samples: int | None,
    rng: Any,
    bias: str | None,
    batch_size: int | None,
) -> tuple[int, Any, str | None, int | None]:
    """The options of one ``(structure, fisher)`` configuration, refusing those it ignores.

    Returns ``(n_samples, rng, bias, batch_size)``: ``n_samples`` (default 1) and ``rng``
    (required) only for ``fisher="mc"``, ``bias`` (default ``"folded"``) only for
    ``structure="kfac"``, ``batch_size`` only for ``"square_of_mean_gradient"``; elsewhere
    they must be ``None`` (passing one there can only be a mistake: it would change nothing).
    """
    if fisher == "mc":
        n_samples = 1 if n_samples is None else check_int(n_samples, "n_samples", 1)
        if rng is None:
            raise TypeError(
                "rng: fisher='mc' samples labels; pass a numpy.random.Generator or "
                "a seed, received None"
            )
        rng = as_generator(rng)
    else:
        if n_samples is not None:
            raise ValueError(
                f"n_samples: only fisher='mc' samples labels; expected None with "
                f"fisher={fisher!r}, received {n_samples!r}"
            )
        if rng is not None:
            raise ValueError(
                f"rng: only fisher='mc' samples labels; expected None with "
                f"fisher={fisher!r}, received {type(rng).__name__}"
            )
        n_samples = 1
    if structure == "kfac":
        bias = check_choice("folded" if bias is None else bias, "bias", ("folded", "separate"))
    elif bias is not None:
        raise ValueError(
            f"bias: only structure='kfac' has a bias convention; expected None "
            f"with structure={structure!r}, received {bias!r}"
        )
    if batch_size is not None:
        if fisher != "square_of_mean_gradient":
            raise ValueError(
                f"batch_size: only fisher='square_of_mean_gradient' uses "
                f"mini-batches; expected None with fisher={fisher!r}, received "
                f"{batch_size!r}"
            )
        batch_size = check_int(batch_size, "batch_size", 1)
    if fisher == "square_of_mean_gradient" and structure == "kfac":
        raise ValueError(
            "structure: fisher='square_of_mean_gradient' has no K-FAC form; "
            "expected one of ['block', 'diag', 'full'], received 'kfac'"
        )
    return n_samples, rng, bias, batch_size


@deprecated_keywords(curvature="structure")
def task_curvature(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike | None = None,
    structure: str | Structure = "diag",
    fisher: str = "true",
    *,
    n_samples: int | None = None,
    rng: np.random.Generator | int | None = None,
    bias: str | None = None,
    batch_size: int | None = None,
) -> Any:
    """The mean curvature ``F_t`` of one task at ``theta`` in the representation of ``structure``.

    Parameters
    ----------
    net : Sequential (or MLP)
    theta : ndarray, shape (P,)
    X : ndarray, shape (N, D)
    y : targets, optional
        Required by ``fisher="empirical"`` and ``"square_of_mean_gradient"``; validated and
        ignored by the other kinds (so one call site can serve every kind).
    structure : {"diag", "block", "kfac", "full"}
        ``curvature=`` is its deprecated former name (``DeprecationWarning``).
    fisher : {"true", "empirical", "mc", "argmax", "square_of_mean_gradient"}
    n_samples, rng : int (default 1) and Generator or seed, ``fisher="mc"`` only
        Sampled labels per input and their generator (``rng`` required).
    bias : {"folded", "separate"}, ``structure="kfac"`` only
        The K-FAC bias convention (default ``"folded"``).
    batch_size : int, ``fisher="square_of_mean_gradient"`` only
        Mini-batch size (``None``: the whole task, one batch).

    ``n_samples``, ``rng``, ``bias`` and ``batch_size`` are refused (``ValueError``) by the
    configurations that do not use them, as by :class:`EWC`: there they would change nothing.

    Returns
    -------
    ``(P,)`` (diag), list of ``(P_l, P_l)`` (block), :class:`~minifim.KFACFactors` (kfac) or
    ``(P, P)`` (full); a mean over the ``N`` samples: the ``.data`` of the structure object
    (read-only arrays; :func:`minifim.curvature` gives the object itself).

    Notes
    -----
    ``"square_of_mean_gradient"`` with ``B`` mini-batches ``g_b = grad mean_{n in b} -log p``
    (consecutive slices of ``X`` of ``batch_size``, the last possibly shorter) is
    ``1/B sum_b g_b g_b^T``: the empirical Fisher for ``batch_size = 1``, ``g g^T`` of the whole
    task for ``batch_size = None``. It has no K-FAC form.
    """
    check_net(net)
    structure = _check_structure(structure)
    check_choice(fisher, "fisher", EWC_FISHERS)
    n_samples, rng, bias, batch_size = _check_options(
        structure, fisher, n_samples, rng, bias, batch_size
    )
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    _require(structure, net)
    if fisher == "square_of_mean_gradient":
        if y is None:
            raise ValueError(
                "y: fisher='square_of_mean_gradient' needs the task's targets y, received None"
            )
        y = net.check_targets(y, X.shape[0])
        Gb = _mean_gradients(net, theta, X, y, batch_size)
        nb = Gb.shape[0]
        som = {
            "diag": lambda: np.einsum("bp,bp->p", Gb, Gb) / nb,  # 1/B sum_b g_b g_b^T
            "block": lambda: [Gb[:, s].T @ Gb[:, s] / nb for s in net.layer_param_slices()],
            "full": lambda: Gb.T @ Gb / nb,
        }
        return _structure(structure, som[structure](), copy=False).data
    if fisher == "empirical" and y is None:
        raise ValueError("y: fisher='empirical' needs the task's targets y, received None")
    if y is not None:
        y = net.check_targets(y, X.shape[0])
    return structured_curvature(
        net, theta, X, y, fisher, structure, bias=bias or "folded", n_samples=n_samples, rng=rng
    ).data


def _check_representation(kind: str, M: Any, net: Sequential, name: str) -> Any:
    """Validate a record of ``kind`` for ``net``: its size, block sizes or layer shapes."""
    M = check_representation(kind, M, name, net.num_params)[0]
    S = _structure(kind, M, copy=False)
    sizes = tuple(_block_sizes(net))
    if isinstance(S, BlockDiagonal) and S.sizes != sizes:
        raise ValueError(
            f"{name}: expected {len(sizes)} per-layer blocks of sizes "
            f"{list(sizes)}, received sizes {list(S.sizes)}"
        )
    if isinstance(S, KFAC) and S.shapes != tuple(net.shapes):
        raise ValueError(
            f"{name}: expected K-FAC factors for layer shapes {tuple(net.shapes)}, "
            f"received {S.shapes}"
        )
    return M


# --- quadratic forms (pure functions) ---------------------------------------------------------
def _check_kind(kind: str) -> str:
    return as_option(kind, Structure, "structure").value


def _check_quadratics(
    quads: Any, kind: str, name: str = "quads"
) -> tuple[tuple[Quadratic, ...], int | None]:
    """Validate a sequence of :class:`Quadratic` terms of kind ``kind``; return ``(quads, P)``."""
    if isinstance(quads, Quadratic) or not isinstance(quads, (list, tuple)):
        raise TypeError(
            f"{name}: expected a sequence of Quadratic terms (e.g. "
            f"EWC.quadratics), received {describe(quads)}"
        )
    out, P = [], None
    for i, q in enumerate(quads):
        if not isinstance(q, Quadratic):
            raise TypeError(f"{name}[{i}]: expected a Quadratic, received {describe(q)}")
        centre = as_float_array(q.centre, f"{name}[{i}].centre", ndim=1)
        if P is None:
            P = centre.shape[0]
        elif centre.shape != (P,):
            raise ValueError(
                f"{name}[{i}].centre: expected shape ({P},) like {name}[0], "
                f"received shape {centre.shape}"
            )
        if not isinstance(q.terms, (list, tuple)):
            raise TypeError(
                f"{name}[{i}].terms: expected a tuple of (coefficient, curvature) "
                f"pairs, received {describe(q.terms)}"
            )
        terms = []
        for k, term in enumerate(q.terms):
            tname = f"{name}[{i}].terms[{k}]"
            if not isinstance(term, (list, tuple)) or len(term) != 2:
                raise TypeError(
                    f"{tname}: expected a (coefficient, curvature) pair, received {describe(term)}"
                )
            c = check_nonnegative(term[0], f"{tname} coefficient")
            terms.append((c, check_representation(kind, term[1], tname, P)[0]))
        out.append(Quadratic(centre, tuple(terms)))
    return tuple(out), P


def _check_point(theta: ArrayLike, P: int | None, name: str = "theta") -> np.ndarray:
    if P is None:
        return as_float_array(theta, name, ndim=1)
    return as_float_array(theta, name, shape=(P,))


@deprecated_keywords(kind="structure")
def curvature_matvec(structure: str, M: Any, v: ArrayLike) -> np.ndarray:
    """``M v`` for a curvature representation ``M`` of ``structure``; ``v: (P,) -> (P,)``.

    The product of the structure object (:class:`~minifim.Diagonal`, :class:`~minifim.Dense`,
    :class:`~minifim.BlockDiagonal`, :class:`~minifim.KFAC`, the latter per layer as ``G V A``,
    never densely). ``structure``, ``M`` and ``v`` are validated (``v`` must have shape
    ``(P,)``); ``kind=`` is the deprecated former name of ``structure=``.
    """
    kind = _check_kind(structure)
    M, P = check_representation(kind, M, "M")
    return _matvec(kind, M, as_float_array(v, "v", shape=(P,)))


def _matvec(kind: str, M: Any, v: np.ndarray) -> np.ndarray:
    return _structure(kind, M, copy=False).matvec(v)


@deprecated_keywords(kind="structure")
def curvature_dense(structure: str, M: Any) -> np.ndarray:
    """The dense ``(P, P)`` matrix of a curvature representation (validated, memory-guarded)."""
    kind = _check_kind(structure)
    M, P = check_representation(kind, M, "M")
    return _dense(kind, M, P)


def _dense(kind: str, M: Any, P: int) -> np.ndarray:
    require_memory(
        8 * P * P,
        f"dense EWC precision (P, P) = ({P}, {P}) float64",
        "EWC.hessian_matvec (matrix-free products)",
    )
    return _structure(kind, M, copy=False).to_dense()


def _merge(kind: str, terms: tuple) -> tuple:
    """Sum the terms ``(c_k, M_k)`` by the structures' scaling and addition.

    One term ``(1, data)`` where the structure is closed under addition; K-FAC: the sum of
    :class:`~minifim.KFAC` objects is the list of its Kronecker terms, returned as such.
    """
    if len(terms) <= 1:
        return tuple(terms)
    total = sum(c * _structure(kind, M, copy=False) for c, M in terms)
    if isinstance(total, KFAC):
        return total.terms
    return ((1.0, total.data),)


def _check_tasks(tasks: Any, kind: str) -> tuple[EWCTask, ...]:
    if isinstance(tasks, EWCTask) or not isinstance(tasks, (list, tuple)):
        raise TypeError(
            f"tasks: expected a sequence of EWCTask records (e.g. EWC.tasks), "
            f"received {describe(tasks)}"
        )
    out, P = [], None
    for t, task in enumerate(tasks):
        if not isinstance(task, EWCTask):
            raise TypeError(f"tasks[{t}]: expected an EWCTask, received {describe(task)}")
        theta = as_float_array(task.theta_star, f"tasks[{t}].theta_star", ndim=1)
        if P is None:
            P = theta.shape[0]
        elif theta.shape != (P,):
            raise ValueError(
                f"tasks[{t}].theta_star: expected shape ({P},) like tasks[0], "
                f"received shape {theta.shape}"
            )
        n = check_int(task.n_samples, f"tasks[{t}].n_samples", 1)
        M = check_representation(kind, task.curvature, f"tasks[{t}].curvature", P)[0]
        out.append(
            task
            if (theta is task.theta_star and M is task.curvature and n == task.n_samples)
            else EWCTask(theta, n, M)
        )
    return tuple(out)


@deprecated_keywords(kind="structure")
def quadratics(
    tasks: Any, structure: str, mode: str = "separate", strength: float = 1.0, gamma: float = 1.0
) -> tuple[Quadratic, ...]:
    """The penalty terms of ``tasks`` (a sequence of :class:`EWCTask`, oldest first).

    Every record is validated: an :class:`EWCTask` with ``theta_star: (P,)`` (the same ``P``
    for all), ``n_samples >= 1`` and a curvature of ``structure`` and size ``P`` (``kind=`` is
    the deprecated former name of ``structure=``).

    Returns
    -------
    tuple of Quadratic
        ``"separate"``: one per task, ``Quadratic(theta*_t, ((strength N_t, F_t),))``;
        ``"recursive"``/``"online"``: one, ``Quadratic(theta*_T, ((strength gamma^(T-t) N_t,
        F_t), ...))`` (``gamma`` is used by ``"online"`` only, ``"recursive"`` has 1) with the
        terms summed where the representation allows (not for K-FAC); empty without tasks.
    """
    kind = _check_kind(structure)
    check_choice(mode, "mode", EWC_MODES)
    strength = check_nonnegative(strength, "strength")
    gamma = check_nonnegative(gamma, "gamma")
    tasks = _check_tasks(tasks, kind)
    if not tasks:
        return ()
    if mode == "separate":
        return tuple(
            Quadratic(t.theta_star, ((strength * t.n_samples, t.curvature),)) for t in tasks
        )
    g = 1.0 if mode == "recursive" else gamma
    T = len(tasks)
    terms = tuple(
        (strength * g ** (T - 1 - i) * t.n_samples, t.curvature) for i, t in enumerate(tasks)
    )
    return (Quadratic(tasks[-1].theta_star, _merge(kind, terms)),)


@deprecated_keywords(kind="structure")
def quadratic_penalty(quads: Any, structure: str, theta: ArrayLike) -> float:
    """``sum_q 1/2 sum_k c_k d_q^T M_k d_q`` with ``d_q = theta - centre_q`` (a float).

    ``quads`` (a sequence of :class:`Quadratic`, e.g. :attr:`EWC.quadratics`), ``structure`` and
    ``theta: (P,)`` are validated; nothing is broadcast.
    """
    kind = _check_kind(structure)
    quads, P = _check_quadratics(quads, kind)
    return _penalty(quads, kind, _check_point(theta, P))


def _penalty(quads: tuple[Quadratic, ...], kind: str, theta: np.ndarray) -> float:
    total = 0.0
    for q in quads:
        d = theta - q.centre
        total += 0.5 * sum(c * float(d @ _matvec(kind, M, d)) for c, M in q.terms)
    return float(total)


@deprecated_keywords(kind="structure")
def quadratic_grad(quads: Any, structure: str, theta: ArrayLike) -> np.ndarray:
    """Gradient of :func:`quadratic_penalty`: ``sum_q sum_k c_k M_k d_q``, shape ``(P,)``."""
    kind = _check_kind(structure)
    quads, P = _check_quadratics(quads, kind)
    return _grad(quads, kind, _check_point(theta, P))


def _grad(quads: tuple[Quadratic, ...], kind: str, theta: np.ndarray) -> np.ndarray:
    out = np.zeros(np.shape(theta))
    for q in quads:
        d = theta - q.centre
        for c, M in q.terms:
            out += c * _matvec(kind, M, d)
    return out


# --- hyperparameter conventions ---------------------------------------------------------------
def ewc_lambda(strength: float, n_task: int, n_current: int) -> float:
    """The ``lambda`` of the mean-loss convention equivalent to ``strength``.

    Parameters
    ----------
    strength : float
        minifim's strength (precision ``strength * N_t * F_t`` on the summed-NLL scale).
    n_task : int
        ``N_t``, samples of the penalised (earlier) task.
    n_current : int
        ``N_cur``, samples of the current task whose MEAN loss the usual convention penalises.

    Returns
    -------
    float
        ``lambda = strength * N_t / N_cur``.

    Notes
    -----
    ``(sum NLL_cur + strength N_t / 2 d^T F_t d) / N_cur = mean NLL_cur + lambda / 2 d^T F_t d``
    with ``F_t`` the mean Fisher. Code that writes ``lambda sum_i F_ii d_i^2`` without the
    ``1/2`` uses half this value.

    Examples
    --------
    >>> ewc_lambda(1.0, n_task=60000, n_current=60000)  # the Bayesian value for equal tasks
    1.0
    """
    strength = check_nonnegative(strength, "strength")
    return strength * check_int(n_task, "n_task", 1) / check_int(n_current, "n_current", 1)


def ewc_strength(lam: float, n_task: int, n_current: int) -> float:
    """Inverse of :func:`ewc_lambda`: ``strength = lambda * N_cur / N_t``."""
    lam = check_nonnegative(lam, "lam")
    return lam * check_int(n_current, "n_current", 1) / check_int(n_task, "n_task", 1)


# --- the object wrapping the pure core ---------------------------------------------------------
class EWC:
    """Elastic weight consolidation penalty; usable as ``penalty=`` in :func:`minifim.train`.

    Parameters
    ----------
    net : Sequential (or MLP)
    structure : {"diag", "block", "kfac", "full"}
        The structure of each task's curvature (module docstring); ``curvature=`` is its
        deprecated former name (``DeprecationWarning``).
    fisher : {"true", "empirical", "mc", "argmax", "square_of_mean_gradient"}
        The last two are named mistakes, for diagnosis.
    mode : {"separate", "recursive", "online"}
    strength : float, >= 0
        Multiplies every precision ``N_t F_t``; ``1`` is the Bayesian (Laplace) value.
    gamma : float in [0, 1]
        Decay of the accumulated precision (``mode="online"`` only).
    n_samples : int, optional
        Sampled labels per input (``fisher="mc"`` only; default 1).
    rng : numpy.random.Generator or int, optional
        Generator of the sampled labels (required by ``fisher="mc"``, refused otherwise); each
        :meth:`add_task` draws from it in turn.
    bias : {"folded", "separate"}, optional
        K-FAC bias convention (``structure="kfac"`` only; default ``"folded"``).
    batch_size : int, optional
        Mini-batch size of ``fisher="square_of_mean_gradient"`` (default: the whole task).
    tasks : sequence of EWCTask, optional
        Records of an earlier run (``ewc.tasks``) to replay without recomputing curvature.

    Notes
    -----
    ``penalty(theta) = sum_q 1/2 (theta - c_q)^T Lambda_q (theta - c_q)`` with the centres and
    precisions of the module table, ``Lambda_t = strength * N_t * F_t``; it is added to the
    SUMMED negative log-likelihood of the current task. ``strength = 1`` with ``mode=
    "recursive"`` and ``structure="full"`` is the recursive Laplace approximation, exact for
    linear-Gaussian regression.

    Examples
    --------
    >>> import numpy as np, minifim
    >>> net = minifim.MLP([2, 1], activation="identity", likelihood="gaussian")
    >>> ewc = minifim.EWC(net, structure="full", mode="recursive")
    >>> X = np.random.default_rng(0).standard_normal((10, 2))
    >>> rec = ewc.add_task(np.zeros(3), X)
    >>> bool(np.allclose(ewc.hessian(), minifim.true_fisher(net, np.zeros(3), X,
    ...                                                     reduction="sum")))
    True
    """

    @deprecated_keywords(curvature="structure")
    def __init__(
        self,
        net: Sequential,
        structure: str | Structure = "diag",
        fisher: str = "true",
        mode: str = "separate",
        strength: float = 1.0,
        gamma: float = 1.0,
        *,
        n_samples: int | None = None,
        rng: np.random.Generator | int | None = None,
        bias: str | None = None,
        batch_size: int | None = None,
        tasks: Any = (),
    ) -> None:
        self.net = check_net(net)
        self.structure = _check_structure(structure)
        self.fisher = check_choice(fisher, "fisher", EWC_FISHERS)
        self.mode = check_choice(mode, "mode", EWC_MODES)
        self.strength = check_nonnegative(strength, "strength")
        self.gamma = check_nonnegative(gamma, "gamma")
        if self.gamma > 1:
            raise ValueError(f"gamma: expected a decay in [0, 1], received {gamma!r}")
        if mode != "online" and self.gamma != 1.0:
            raise ValueError(
                f"gamma: only mode='online' decays the precision; expected "
                f"gamma=1.0 with mode={mode!r}, received {gamma!r}"
            )
        self.n_samples, self.rng, self.bias, self.batch_size = _check_options(
            self.structure, fisher, n_samples, rng, bias, batch_size
        )
        _require(self.structure, net)  # fail before any task is learnt
        self._tasks: tuple[EWCTask, ...] = ()
        self._quads: tuple[Quadratic, ...] = ()
        for t in tasks:
            if not isinstance(t, EWCTask):
                raise TypeError(f"tasks: expected EWCTask records, received {type(t).__name__}")
            self._append(
                EWCTask(
                    net.check_theta(t.theta_star, "tasks[].theta_star"),
                    check_int(t.n_samples, "tasks[].n_samples", 1),
                    _check_representation(self.structure, t.curvature, net, "tasks[].curvature"),
                )
            )

    # --- state -----------------------------------------------------------------------------
    @property
    def tasks(self) -> tuple[EWCTask, ...]:
        """The per-task records, oldest first."""
        return self._tasks

    @property
    def quadratics(self) -> tuple[Quadratic, ...]:
        """The penalty terms (centres and precision terms); see :func:`quadratics`."""
        return self._quads

    @property
    def curvature(self) -> str:
        """Deprecated former name of :attr:`structure` (``DeprecationWarning``)."""
        import warnings

        from ..options import DEPRECATION_SINCE, DEPRECATION_UNTIL

        warnings.warn(
            f"EWC.curvature is deprecated since minifim {DEPRECATION_SINCE} and will "
            f"be removed in {DEPRECATION_UNTIL}; use EWC.structure",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.structure

    def config(self) -> dict:
        """The constructor arguments (without ``net``, ``rng`` and ``tasks``)."""
        return {
            "structure": self.structure,
            "fisher": self.fisher,
            "mode": self.mode,
            "strength": self.strength,
            "gamma": self.gamma,
            "n_samples": self.n_samples if self.fisher == "mc" else None,
            "bias": self.bias,
            "batch_size": self.batch_size,
        }

    def __repr__(self) -> str:
        return (
            f"EWC(structure={self.structure!r}, fisher={self.fisher!r}, mode={self.mode!r}, "
            f"strength={self.strength!r}, gamma={self.gamma!r}, tasks={len(self._tasks)})"
        )

    def _append(self, task: EWCTask) -> None:
        new = (self.strength * task.n_samples, task.curvature)
        if self.mode == "separate" or not self._quads:
            quad = Quadratic(task.theta_star, (new,))
            self._quads = (self._quads + (quad,)) if self.mode == "separate" else (quad,)
        else:  # Lambda~_T = gamma Lambda~_{T-1} + strength N_T F_T, centred at theta*_T
            g = self.gamma if self.mode == "online" else 1.0
            old = tuple((g * c, M) for c, M in self._quads[0].terms)
            self._quads = (Quadratic(task.theta_star, _merge(self.structure, old + (new,))),)
        self._tasks = self._tasks + (task,)

    def add_task(self, theta_star: ArrayLike, X: ArrayLike, y: ArrayLike | None = None) -> EWCTask:
        """Record the curvature of the task just learnt at its solution; return the record.

        Parameters
        ----------
        theta_star : ndarray, shape (P,)
        X : ndarray, shape (N_t, D)
        y : targets; required by ``fisher="empirical"`` and ``"square_of_mean_gradient"``,
            validated and ignored otherwise.

        Returns
        -------
        EWCTask
            ``(theta_star (copy), N_t, F_t)`` as appended to :attr:`tasks`.
        """
        theta = self.net.check_theta(theta_star, "theta_star").copy()
        X = self.net.check_inputs(X)
        kw: dict[str, Any] = {}
        if self.fisher == "mc":
            kw = {"n_samples": self.n_samples, "rng": self.rng}
        if self.bias is not None:  # structure="kfac"
            kw["bias"] = self.bias
        if self.fisher == "square_of_mean_gradient":
            kw["batch_size"] = self.batch_size
        M = task_curvature(self.net, theta, X, y, self.structure, self.fisher, **kw)
        task = EWCTask(theta, X.shape[0], M)
        self._append(task)
        return task

    # --- the penalty -------------------------------------------------------------------------
    def penalty(self, theta: ArrayLike) -> float:
        """``Omega(theta)`` on the summed-NLL scale (a float; 0 without tasks)."""
        theta = self.net.check_theta(theta)
        return _penalty(self._quads, self.structure, theta)

    def grad(self, theta: ArrayLike) -> np.ndarray:
        """``grad Omega(theta) = sum_q Lambda_q (theta - c_q)``, shape ``(P,)``."""
        theta = self.net.check_theta(theta)
        return _grad(self._quads, self.structure, theta)

    def penalty_and_grad(self, theta: ArrayLike) -> tuple[float, np.ndarray]:
        """``(Omega(theta), grad Omega(theta): (P,))`` in one pass over the quadratics.

        ``u_q = Lambda_q (theta - c_q)`` is computed once per quadratic and gives both
        ``Omega = sum_q (theta - c_q) . u_q / 2`` and ``grad = sum_q u_q``: half the products
        of :meth:`penalty` then :meth:`grad` (used by :func:`minifim.optim.train`).
        """
        theta = self.net.check_theta(theta)
        total, out = 0.0, np.zeros(np.shape(theta))
        for q in self._quads:
            d = theta - q.centre
            u = np.zeros_like(d)
            for c, M in q.terms:
                u += c * _matvec(self.structure, M, d)
            total += 0.5 * float(d @ u)
            out += u
        return float(total), out

    def hessian_matvec(self, v: ArrayLike) -> np.ndarray:
        """``(sum_q Lambda_q) v``, the Hessian of the penalty times ``v: (P,)``."""
        v = as_float_array(v, "v", shape=(self.net.num_params,))
        out = np.zeros_like(v)
        for q in self._quads:
            for c, M in q.terms:
                out += c * _matvec(self.structure, M, v)
        return out

    def hessian(self) -> np.ndarray:
        """The Hessian of the penalty ``sum_q Lambda_q``, dense ``(P, P)`` (memory-guarded).

        In every mode it equals ``strength sum_t w_t N_t F_t`` (``w_t = gamma^(T-t)`` online,
        else 1): the modes differ only in the centres.
        """
        P = self.net.num_params
        require_memory(
            8 * P * P,
            f"dense EWC Hessian (P, P) = ({P}, {P}) float64",
            "EWC.hessian_matvec (matrix-free products)",
        )
        out = np.zeros((P, P))
        for q in self._quads:
            for c, M in q.terms:
                out += c * _dense(self.structure, M, P)
        return out
