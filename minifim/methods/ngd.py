"""Natural-gradient directions: exact damped solves with the curvature, by several routes.

The direction (the oracle quantity) is

    ``d = (M + damping I)^{-1} g``,   update ``theta <- theta - lr * d``,

with ``g`` the gradient of the mean negative log-likelihood (:func:`minifim.gradient`, or a
gradient passed in, e.g. one that includes a penalty) and ``M`` the MEAN curvature over the
``N`` samples given (the convention of :mod:`minifim.geometry.curvature`). ``M`` has a kind,
``fisher=``, and a structure, ``structure=`` (:mod:`minifim.geometry.structures`):

=============  ===============================================================================
``fisher``
``"true"``     exact Fisher ``1/N sum_n J_n^T Lambda_n J_n`` (NGD)
``"empirical"`` empirical Fisher ``1/N sum_n s_n s_n^T`` at the data labels (EF-NGD)
``"mc"``       Monte-Carlo Fisher, ``n_samples`` labels per input drawn with ``rng``
``"ggn"``      generalised Gauss-Newton ``1/N sum_n J_n^T H_n J_n`` (equals ``"true"`` here)
``"hessian"``  Hessian of the mean NLL: the damped Newton direction (``structure="full"``)
``structure``
``"full"``     the exact matrix of that kind (default)
``"diag"``     its exact diagonal (:class:`minifim.Diagonal`)
``"block"``    its exact per-layer blocks (:class:`minifim.BlockDiagonal`)
``"kfac"``     its K-FAC approximation, inverted per layer (:class:`minifim.KFAC`)
=============  ===============================================================================

Routes (``method``), all giving the same ``d`` to rounding (tested to 1e-10 relative):

- ``"dense"``: the ``(P, P)`` matrix (memory-guarded, the structure's ``to_dense()``),
  Cholesky of ``M + damping I`` and ``cho_solve`` (:func:`minifim._linalg.damped_solve`); for
  ``"hessian"``, which may be indefinite, a symmetric ``LDL^T`` solve. For
  ``"diag"``/``"block"``/``"kfac"`` it is a check route of the structured solve.
- ``"woodbury"`` (``structure="full"``): for ``M = 1/N U^T U`` with the factor ``U: (N K, P)``
  of :func:`minifim.curvature_factors` (``K = C`` for ``"true"``/``"ggn"``, ``n_samples`` for
  ``"mc"``, ``1`` for ``"empirical"``), the push-through identity
  ``d = (g - U^T (1/N U U^T + damping I)^{-1} (1/N U g)) / damping``. Neither ``U`` nor any
  ``P x P`` matrix is formed: the Gram matrix is ``U U^T = sum_l (B_l B_l^T) * (a_l a_l^T + 1)``
  from the per-layer factors (backpropagated seeds ``B_l``, layer inputs ``a_l``), and ``U g``,
  ``U^T z`` are per-layer products (:class:`minifim.geometry.gram.SeedFactors`). Cost
  ``O((N K)^2 sum_l width_l + (N K)^3)``, memory ``O((N K)^2)``. Needs ``damping > 0``.
- ``"cg"`` (``structure="full"``): conjugate gradients (restarted GMRES(100) for the possibly
  indefinite ``"hessian"``; MINRES stagnates near 1e-12 there) on the matrix-free
  :func:`minifim.fisher_operator` / :func:`minifim.hessian_operator` plus ``damping I``, with up
  to 5 restarts on the true residual, until ``|(M + damping I) d - g| <= tol |g|`` (default
  ``tol = 1e-10``, ``maxiter = 10 P`` operator products); a run that does not reach ``tol``
  raises ``RuntimeError`` (the attainable floor is about ``eps * cond``).
- ``"structured"``: the structure's own ``solve(g, damping)``: ``"diag"`` (elementwise),
  ``"block"`` (a Cholesky per layer), ``"kfac"`` (per layer through the Kronecker factors,
  :meth:`minifim.KFACFactors.solve`, with ``damping_type="eigen"`` or ``"factored"``).
- ``"auto"``: ``"structured"`` for ``diag``/``block``/``kfac``; otherwise ``"woodbury"`` when
  ``N K < P`` and the ``(N K)^2`` Gram matrix fits the memory budget, else ``"dense"`` when
  ``P x P`` fits, else ``"cg"``. With ``return_info=True`` the choice and the reason are
  returned.

An undamped singular system raises ``ValueError`` naming ``damping``: always when ``N K < P``
(``rank M <= N K``), otherwise when the Cholesky factor's reciprocal condition number (LAPACK
``dpocon``) is below ``P * eps``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg as sla
from numpy.typing import ArrayLike
from scipy.sparse.linalg import LinearOperator, cg, gmres

from .._linalg import damped_solve, singular_error
from .._validation import (
    as_float_array,
    check_int,
    check_net,
    check_nonnegative,
    check_positive,
)
from ..core.objective import gradient as _gradient
from ..geometry.curvature import curvature_is_psd, curvature_matrix, hessian
from ..geometry.gram import seed_factors
from ..geometry.operators import fisher_operator, hessian_operator
from ..geometry.structures import Dense, curvature
from ..geometry.structures import Structure as StructureObject
from ..memory import memory_budget, require_memory
from ..options import (
    Bias,
    Curvature,
    KFACDamping,
    SolveMethod,
    Structure,
    as_option,
    deprecated_keywords,
)
from ._legacy import split_curvature

if TYPE_CHECKING:
    from ..core.model import Sequential

__all__ = ["natural_gradient", "FISHERS", "METHODS"]

#: Kinds with a factor ``M = 1/N U^T U`` (the Woodbury route).
FACTOR_KINDS = ("true", "empirical", "mc", "ggn")
#: The kinds ``fisher=`` accepts: the factor kinds and the Hessian.
FISHERS = FACTOR_KINDS + ("hessian",)
METHODS = SolveMethod.values()
_FISHER_OPTIONS = tuple(Curvature(k) for k in FISHERS)
EPS = np.finfo(np.float64).eps
_REFINEMENTS = 5  # restarts of CG/GMRES on the true residual (iterative refinement)
_GMRES_RESTART = 100  # Krylov basis size of GMRES for the Hessian (memory 100 P floats)


def _num_seeds(net: Any, curvature: str, n_samples: int) -> int:
    if curvature in ("true", "ggn"):
        return net.positions * net.output_dim
    return n_samples if curvature == "mc" else 1


# --- the structure and its solves ---------------------------------------------------------
def _structure(
    net: Any,
    theta: np.ndarray,
    X: np.ndarray,
    y: Any,
    fisher: str,
    structure: str,
    bias: str,
    n_samples: int,
    rng: Any,
    chunk_size: int | None,
) -> StructureObject:
    """``M`` as a structure object (memory-guarded by the callees)."""
    if fisher == "hessian":  # not a Fisher kind: indefinite, dense only (checked by the caller)
        return Dense(hessian(net, theta, X, y), psd=False, copy=False)
    return curvature(
        net,
        theta,
        X,
        y,
        fisher,
        structure,
        bias=bias,
        n_samples=n_samples,
        rng=rng,
        chunk_size=chunk_size,
    )


def _structured(
    S: StructureObject, g: np.ndarray, damping: float, damping_type: KFACDamping
) -> np.ndarray:
    """``(M + damping I)^{-1} g`` by the structure's own solve (K-FAC: ``damping_type``)."""
    if damping_type == KFACDamping.FACTORED:  # a K-FAC structure (checked by the caller)
        return S.factors.solve(g, damping, KFACDamping.FACTORED)
    return S.solve(g, damping)


# --- Woodbury / push-through -----------------------------------------------------------------
def _woodbury(
    net: Any,
    theta: np.ndarray,
    X: np.ndarray,
    y: Any,
    g: np.ndarray,
    damping: float,
    curvature: str,
    n_samples: int,
    rng: Any,
    chunk_size: int | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Push-through solve on the per-layer factors (see the module docstring).

    Returns ``(d, info)`` with the relative residual and the refinement steps taken. The
    condition number ``cond(M + damping I) = (lambda_max + damping) / damping`` is estimated
    from the 1-norm of the damped Gram matrix (an upper bound of ``lambda_max + damping``)
    and refused when ``damping / ||.||_1 <= N K eps`` (no correct digit); otherwise the
    solution is refined on the true residual until its backward error
    ``|r| / (||M + damping I|| |d| + |g|)`` is at most ``(N K + P) eps`` (a stable solve's).
    """
    N, P = X.shape[0], net.num_params
    K = _num_seeds(net, curvature, n_samples)
    NK = N * K
    widths = sum(
        layer.positions * (o + i) for layer, (o, i) in zip(net.parametric_layers, net.shapes)
    )
    if net.weight_sharing:  # the (N K, P_l) gradient rows of a weight-sharing layer's Gram
        widths += max(layer.num_params for layer in net.parametric_layers)
    require_memory(
        3 * 8 * NK * NK + 8 * NK * widths,
        f"Woodbury Gram matrix (N K, N K) = ({NK}, {NK}) float64 and the factors",
        "method='cg' (matrix-free conjugate gradients)",
    )
    if damping == 0:
        raise singular_error(
            f"{curvature} curvature", damping, "the Woodbury route divides by the damping"
        )
    factors = seed_factors(net, theta, X, y, curvature, n_samples, rng, chunk_size)
    scale = 1.0 / N
    gram = factors.gram(scale)
    gram.flat[:: NK + 1] += damping
    anorm = float(sla.lapack.dlange("1", gram))  # >= lambda_max(M) + damping
    cond_est = anorm / damping
    advice = (
        f"estimated condition number of (M + damping I) {cond_est:.3g} = (||M|| + "
        f"damping) / damping with ||M|| <= {anorm - damping:.3g}; increase damping "
        f"(to at least ~{1e-8 * anorm:.3g} for 8 correct digits) or use method='dense'"
    )
    if not damping > NK * EPS * anorm:
        raise singular_error(f"{curvature} curvature (Woodbury)", damping, advice)
    try:
        c = sla.cho_factor(gram, lower=False, check_finite=False)
    except sla.LinAlgError:
        raise singular_error("Gram matrix", damping, "Cholesky failed; " + advice) from None

    def solve(rhs: np.ndarray) -> np.ndarray:
        z = sla.cho_solve(c, scale * factors.matvec(rhs), check_finite=False)
        return (rhs - factors.rmatvec(z)) / damping

    gnorm = float(np.linalg.norm(g))
    if gnorm == 0:
        return np.zeros_like(g), {"residual": 0.0, "refinements": 0}
    d = solve(g)
    threshold = (NK + P) * EPS
    for step in range(_REFINEMENTS + 1):
        r = g - (scale * factors.rmatvec(factors.matvec(d)) + damping * d)
        rnorm = float(np.linalg.norm(r))
        eta = rnorm / (anorm * float(np.linalg.norm(d)) + gnorm)
        if eta <= threshold or step == _REFINEMENTS or not np.isfinite(eta):
            break
        d = d + solve(r)
    if not eta <= threshold:
        raise singular_error(
            f"{curvature} curvature (Woodbury)",
            damping,
            f"backward error {eta:.3g} > (N K + P) eps = {threshold:.3g} after "
            f"{step} refinements; " + advice,
        )
    return d, {"residual": rnorm / gnorm, "refinements": step}


# --- conjugate gradients ---------------------------------------------------------------------
def _cg(
    net: Any,
    theta: np.ndarray,
    X: np.ndarray,
    y: Any,
    g: np.ndarray,
    damping: float,
    curvature: str,
    n_samples: int,
    rng: Any,
    tol: float,
    maxiter: int | None,
    extra: Any = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    P = net.num_params
    if curvature == "hessian":
        op = hessian_operator(net, theta, X, y)
    else:
        op = fisher_operator(net, theta, X, y, curvature, n_samples=n_samples, rng=rng)
    if extra is None:

        def matvec(v: np.ndarray) -> np.ndarray:
            return op @ v + damping * v
    else:

        def matvec(v: np.ndarray) -> np.ndarray:
            v = np.ravel(v)
            return op @ v + damping * v + (extra @ v if isinstance(extra, np.ndarray) else extra(v))

    A = LinearOperator((P, P), matvec=matvec, dtype=np.float64)
    maxiter = 10 * P if maxiter is None else check_int(maxiter, "maxiter", 1)
    gnorm = float(np.linalg.norm(g))
    if gnorm == 0:
        return np.zeros_like(g), {"iterations": 0, "residual": 0.0}
    count = [0]

    def cb(_: Any) -> None:
        count[0] += 1

    if not curvature_is_psd(net, curvature):  # symmetric, possibly indefinite: restarted GMRES
        restart = min(P, _GMRES_RESTART)

        def solver(A: Any, b: np.ndarray, rtol: float, maxiter: int, callback: Any) -> Any:
            return gmres(
                A,
                b,
                rtol=rtol,
                restart=restart,
                maxiter=max(1, maxiter // restart),
                callback=callback,
                callback_type="pr_norm",
            )

        solver.__name__ = "gmres"
    else:
        solver = cg
    # the solvers stop on their recursively updated residual; refine on the true residual
    d = np.zeros_like(g)
    r = g.copy()
    for _ in range(_REFINEMENTS):
        rnorm = float(np.linalg.norm(r))
        if rnorm <= tol * gnorm or count[0] >= maxiter:
            break
        # a breakdown (p^T A p = 0 on a degenerate, undamped curvature) divides by zero inside
        # the solver: its non-finite result fails the residual check below, which raises
        # naming the damping, so numpy's warning would only repeat it
        with np.errstate(divide="ignore", invalid="ignore"):
            e, _ = solver(
                A, r, rtol=min(0.5, tol * gnorm / rnorm), maxiter=maxiter - count[0], callback=cb
            )
        d = d + e
        r = g - A @ d
    residual = float(np.linalg.norm(r) / gnorm)
    if not residual <= tol:
        raise RuntimeError(
            f"method='cg': {solver.__name__} stopped after {count[0]} "
            f"iterations at relative residual {residual:.3g} > tol = {tol:g} "
            f"(damping = {damping!r}); raise damping or maxiter, loosen tol, or "
            "use method='dense'/'woodbury'"
        )
    return d, {"iterations": count[0], "residual": residual}


def _check_indefinite_ggn_route(net: Any, method: str, structure: Structure) -> None:
    """The GGN of the heteroscedastic Gaussian is indefinite: no Woodbury factor, no K-FAC."""
    if structure == Structure.KFAC or method == "woodbury":
        raise ValueError(
            f"fisher: the 'ggn' curvature of the {net.likelihood.describe()} likelihood is "
            "indefinite (J^T H_f(y) J with an indefinite loss Hessian): it has no factor "
            "M = U^T U for the Woodbury route or K-FAC; use method='dense' or 'cg' (GMRES), "
            f"or structure='diag'/'block' (LDL^T solves), received structure="
            f"{structure.value!r}, method={method!r}; fisher='true' is its positive "
            "semi-definite expectation over the labels"
        )


def _check_extra(extra: Any, P: int) -> Any:
    if extra is None or callable(extra):
        return extra
    M = as_float_array(extra, "extra_curvature", shape=(P, P))
    return M


def _materialise(fn: Any, P: int) -> np.ndarray:
    require_memory(
        8 * P * P, f"dense extra_curvature (P, P) = ({P}, {P}) float64", "method='cg' (matrix-free)"
    )
    out = np.empty((P, P))
    for j in range(P):
        e = np.zeros(P)
        e[j] = 1.0
        out[:, j] = as_float_array(fn(e), "extra_curvature(v)", shape=(P,))
    return 0.5 * (out + out.T)


# --- route choice -----------------------------------------------------------------------------
def _choose(
    net: Any, N: int, fisher: str, structure: Structure, n_samples: int, has_extra: bool
) -> tuple[str, str]:
    P = net.num_params
    budget = memory_budget()
    if structure != Structure.FULL:
        return "structured", f"structure={structure.value!r} is solved per coordinate or per layer"
    if fisher in FACTOR_KINDS and not has_extra:
        NK = N * _num_seeds(net, fisher, n_samples)
        if NK < P and 3 * 8 * NK * NK <= budget:
            return "woodbury", (
                f"N K = {NK} < P = {P}: the ({NK}, {NK}) Gram matrix is smaller than P x P"
            )
    if 8 * P * P <= budget:
        return "dense", f"P x P = ({P}, {P}) fits the memory budget"
    return "cg", f"P x P = ({P}, {P}) exceeds the memory budget"


def _check_route(
    method: str, fisher: Curvature, structure: Structure, damping_type: KFACDamping
) -> None:
    """Refuse a route that does not apply to the kind and structure (``ValueError``)."""
    full = structure == Structure.FULL
    if method == "structured" and full:
        raise ValueError(
            f"method: 'structured' applies to structure in ['block', 'diag', "
            f"'kfac'], received structure='full' (fisher={fisher.value!r}); use "
            "'dense', 'woodbury' or 'cg'"
        )
    if method in ("woodbury", "cg") and not full:
        raise ValueError(
            f"method: {method!r} is not a route for structure="
            f"{structure.value!r}; use 'structured' (or 'dense' to check it)"
        )
    if method == "woodbury" and fisher == "hessian":
        raise ValueError(
            "method: 'woodbury' needs a curvature with a factor M = U^T U / N "
            f"(fisher one of {list(FACTOR_KINDS)}), received fisher='hessian'; "
            "use 'dense' or 'cg'"
        )
    if fisher == "hessian" and not full:
        raise ValueError(
            f"structure: the Hessian is solved as structure='full' only, received "
            f"structure={structure.value!r} with fisher='hessian'"
        )
    if damping_type == KFACDamping.FACTORED and structure != Structure.KFAC:
        raise ValueError(
            f"damping_type: 'factored' is K-FAC's damping (structure='kfac'), "
            f"received structure={structure.value!r}"
        )
    if method == "dense" and damping_type == KFACDamping.FACTORED:
        raise ValueError(
            "damping_type: 'factored' damping is only implemented per layer; use "
            "method='structured' (or damping_type='eigen' with method='dense')"
        )


@split_curvature(position=5)
@deprecated_keywords(kfac_bias="bias", kfac_solve="damping_type")
def natural_gradient(
    net: Sequential,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    damping: float = 1e-3,
    fisher: str = "true",
    method: str = "auto",
    *,
    structure: str = "full",
    n_samples: int = 1,
    rng: Any = None,
    grad: ArrayLike | None = None,
    bias: str = "folded",
    damping_type: str = "eigen",
    tol: float = 1e-10,
    maxiter: int | None = None,
    chunk_size: int | None = None,
    extra_curvature: Any = None,
    return_info: bool = False,
) -> Any:
    """The damped natural-gradient direction ``(M + damping I)^{-1} g``, shape ``(P,)``.

    Parameters
    ----------
    net : Sequential (or MLP)
    theta : ndarray, shape (P,)
    X : ndarray, shape (N, D)
    y : targets of the likelihood (``(N,)`` labels or ``(N, C)``); the gradient's labels
    damping : float >= 0
        Tikhonov damping ``lambda`` added to the mean curvature.
    fisher : {"true", "empirical", "mc", "ggn", "hessian"}
        The kind of ``M`` (module docstring); ``"hessian"`` with ``structure="full"`` only.
    method : {"auto", "dense", "woodbury", "cg", "structured"}
        The route; see the module docstring.
    structure : {"full", "diag", "block", "kfac"}
        The structure of ``M``: the exact matrix, or an approximation solved per coordinate
        or per layer (:func:`minifim.curvature`).
    n_samples, rng : int, Generator or seed
        Monte-Carlo labels for ``fisher="mc"``.
    grad : ndarray, shape (P,), optional
        The vector to precondition; default :func:`minifim.gradient` (mean NLL on ``X, y``).
    bias : {"folded", "separate"}
        Bias convention of ``structure="kfac"`` (see :mod:`minifim.geometry.kronecker`).
    damping_type : {"eigen", "factored"}
        How the damping enters K-FAC (:class:`minifim.options.KFACDamping`): ``"eigen"``: the
        exact ``(G kron A + damping I)^{-1}`` per layer; ``"factored"``: Martens & Grosse's
        factored Tikhonov damping with the pi-correction (``structure="kfac"``,
        ``method="structured"``).
    tol, maxiter : float, int
        Relative residual and iteration cap of ``method="cg"``.
    chunk_size : int, optional
        Samples per chunk when building factors.
    extra_curvature : ndarray, shape (P, P), or callable ``v: (P,) -> (P,)``, optional
        A symmetric matrix added to ``M`` (e.g. a penalty's Hessian divided by ``N``, as
        :func:`minifim.optim.ngd` does); routes ``"dense"`` (a callable is materialised with
        ``P`` products) and ``"cg"`` only; ``"auto"`` then picks between those two.
    return_info : bool
        Also return a dict: ``"method"`` (the route used), ``"reason"``, ``"fisher"``,
        ``"structure"``, ``"damping"``, ``"residual"`` (``|(M + damping I) d - g| / |g|``
        where the route gives it: ``"cg"``, ``"woodbury"``), ``"iterations"`` (``"cg"``).

    Returns
    -------
    d : ndarray, shape (P,)
    info : dict, only with ``return_info=True``

    Notes
    -----
    ``d = (M + lambda I)^{-1} g``; the step is ``theta - lr d``. With ``fisher="true"``,
    ``lr = 1`` and ``lambda -> 0`` a linear-Gaussian model lands on the least-squares solution
    in one step (Gauss-Newton). The exact natural gradient is covariant under
    ``theta = A phi``: ``d_theta = A d_phi`` (with the damping transformed accordingly).

    Deprecated (until minifim 0.3.0, with a ``DeprecationWarning``): ``curvature=`` (a kind
    or a structure: now ``fisher=`` and ``structure=``), ``kfac_bias=`` (now ``bias=``),
    ``kfac_solve=`` (now ``damping_type=``).

    Examples
    --------
    >>> import numpy as np, minifim
    >>> net = minifim.MLP([3, 8, 2]); theta = net.init(0)
    >>> X = np.random.default_rng(0).standard_normal((4, 3)); y = np.array([0, 1, 1, 0])
    >>> d, info = minifim.natural_gradient(net, theta, X, y, 1e-2, return_info=True)
    >>> info["method"], d.shape
    ('woodbury', (50,))
    >>> d2 = minifim.natural_gradient(net, theta, X, y, 1e-2, method="dense")
    >>> bool(np.allclose(d, d2, rtol=1e-10, atol=0))
    True
    >>> dk = minifim.natural_gradient(net, theta, X, y, 1e-2, structure="kfac")
    """
    check_net(net)
    fisher = as_option(fisher, Curvature, "fisher", _FISHER_OPTIONS)
    structure = as_option(structure, Structure, "structure")
    method = as_option(method, SolveMethod, "method").value
    bias = as_option(bias, Bias, "bias").value
    damping_type = as_option(damping_type, KFACDamping, "damping_type")
    damping = check_nonnegative(damping, "damping")
    n_samples = check_int(n_samples, "n_samples", 1)
    tol = check_positive(tol, "tol")
    theta = net.check_theta(theta)
    X = net.check_inputs(X)
    N, P = X.shape[0], net.num_params
    y = net.check_targets(y, N)
    if fisher == "mc" and rng is None:
        raise TypeError(
            "rng: the Monte-Carlo Fisher samples labels; pass a "
            "numpy.random.Generator or a seed, received None"
        )
    g = _gradient(net, theta, X, y) if grad is None else as_float_array(grad, "grad", shape=(P,))
    if method == "auto":
        method, reason = _choose(net, N, fisher, structure, n_samples, extra_curvature is not None)
        if method == "woodbury" and not curvature_is_psd(net, fisher.value):
            method, reason = "dense", "the GGN is indefinite: no factor for the Woodbury route"
    else:
        reason = "requested"
    _check_route(method, fisher, structure, damping_type)
    extra = _check_extra(extra_curvature, P)
    if extra is not None and method not in ("dense", "cg"):
        raise ValueError(
            f"extra_curvature: supported by method='dense' and 'cg', received "
            f"method={method!r} (structure={structure.value!r})"
        )
    kind = fisher.value
    if fisher == "ggn" and not curvature_is_psd(net, kind):
        _check_indefinite_ggn_route(net, method, structure)
    if structure == Structure.FULL and fisher in FACTOR_KINDS and damping == 0 and extra is None:
        NK = N * _num_seeds(net, kind, n_samples)
        if NK < P:
            raise singular_error(f"{kind} curvature", damping, f"rank M <= N K = {NK} < P = {P}")
    info = {
        "method": method,
        "reason": reason,
        "fisher": kind,
        "structure": structure.value,
        "damping": damping,
    }
    if method == "woodbury":
        d, stats = _woodbury(net, theta, X, y, g, damping, kind, n_samples, rng, chunk_size)
        info.update(stats)
    elif method == "cg":
        d, stats = _cg(net, theta, X, y, g, damping, kind, n_samples, rng, tol, maxiter, extra)
        info.update(stats, tol=tol)
    elif method == "structured":
        S = _structure(net, theta, X, y, kind, structure.value, bias, n_samples, rng, chunk_size)
        d = _structured(S, g, damping, damping_type)
    else:  # "dense": the (P, P) matrix, factored in place
        if structure.value == "full":  # assembled fresh, owned here: no second (P, P) copy
            M = (
                hessian(net, theta, X, y)
                if kind == "hessian"
                else curvature_matrix(
                    net, theta, X, y, kind, n_samples=n_samples, rng=rng, chunk_size=chunk_size
                )
            )
            psd = curvature_is_psd(net, kind)
        else:  # the structure's dense view (a fresh array built from its compact form)
            S = _structure(
                net, theta, X, y, kind, structure.value, bias, n_samples, rng, chunk_size
            )
            M, psd = S.to_dense(), S.psd
            del S
        if extra is not None:
            M += extra if isinstance(extra, np.ndarray) else _materialise(extra, P)
        d = damped_solve(
            M,
            g,
            damping,
            what=f"{kind} curvature ({structure.value})",
            symmetric_indefinite=not psd,
            overwrite_m=True,
        )
    return (d, info) if return_info else d
