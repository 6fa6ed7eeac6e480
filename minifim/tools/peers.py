"""The peers of ``make bench``: the same quantities computed with other libraries, side by side.

The bench (:func:`minifim.tools.bench._peer_rows`) times minifim against the libraries a user
would otherwise reach for: ``torch.func``, BackPACK, curvlinops, nngeometry and JAX. This module
is that comparison, not an oracle: the routes are each library's natural fast way to compute a
quantity (no tuning beyond what its documentation shows), and the bench first measures how far
each result is from minifim's before it enters a ratio. The independent reference routes of
the test suite are :mod:`minifim.oracle.torch`.

Every route computes in minifim's conventions, whatever its library's defaults:

- reduction ``"mean"`` over the ``N`` samples (``c = 1/N``);
- ``scores``: per-sample gradients of the log-likelihood ``S[n] = grad_theta log p(y_n | x_n)``,
  ``(N, P)``, i.e. minus the per-sample gradients of the cross-entropy;
- ``true_fisher``: ``F = 1/N sum_n J_n^T Lambda_n J_n``, ``(P, P)``, ``Lambda = diag(p) - p p^T``
  of the softmax (the GGN of the cross-entropy);
- ``hessian``: the Hessian of the mean cross-entropy ``1/N sum_n -log p(y_n | x_n)``, ``(P, P)``;
- ``fisher_block`` and ``hessian_block``: ``F V`` and ``H V`` for a block ``V: (P, m)``;
- parameters flat in PyTorch layout (each ``Linear`` weight ``(out, in)`` row-major, then its
  bias, layers in order), float64 throughout, results as float64 NumPy arrays.

Only categorical likelihoods are bridged (softmax cross-entropy is the loss every peer knows).
The torch peers run on :func:`minifim.oracle.torch.to_torch`'s module of the network (outputs
``(N, C)``, no output positions); JAX needs an :class:`~minifim.MLP` (its forward pass is written
out here from ``theta``'s layout).

Dense ``(P, P)`` results from matrix-vector products (``torch.func`` and JAX Hessians, curvlinops'
dense GGN and Hessian) multiply the identity in column chunks of at most :data:`CHUNK_BYTES` of
tangents, ``k N A`` floats for ``k`` columns and ``A`` activations per sample: unchunked, the
``vmap`` over all ``P`` columns holds ``(P, N, width)`` tangents per layer (4.6 GB per layer
at ``P = 8,970``, ``N = 1,000``, width 64), more than the result itself.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["PEERS", "QUANTITIES", "CHUNK_BYTES", "available", "peer_routes"]

PEERS: tuple[str, ...] = ("torch.func", "backpack", "curvlinops", "nngeometry", "jax")
QUANTITIES: tuple[str, ...] = ("scores", "true_fisher", "hessian", "fisher_block", "hessian_block")
BLOCK_QUANTITIES: tuple[str, ...] = ("fisher_block", "hessian_block")
CHUNK_BYTES = 2**28
"""Bytes of tangents per chunk of identity columns for the dense products (see above)."""

_MODULES = {
    "torch.func": "torch.func",
    "backpack": "backpack",
    "curvlinops": "curvlinops",
    "nngeometry": "nngeometry",
    "jax": "jax",
}
_DISTRIBUTIONS = {
    "torch.func": "torch",
    "backpack": "backpack-for-pytorch",
    "curvlinops": "curvlinops-for-pytorch",
    "nngeometry": "nngeometry",
    "jax": "jax",
}

Route = Callable[[], np.ndarray]


# --- which peers ----------------------------------------------------------------------------
def _version(peer: str, module: Any) -> str:
    """The installed distribution's version, else the module's ``__version__``."""
    try:
        return importlib.metadata.version(_DISTRIBUTIONS[peer])
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "unknown"))


def available() -> dict[str, str]:
    """Installed peers and their versions.

    Returns
    -------
    dict of str -> str
        ``{peer: version}`` for every name of :data:`PEERS` whose package imports (imported
        here, lazily: a missing or broken package is absent, never an error), in the order
        of :data:`PEERS`.
    """
    found = {}
    for peer in PEERS:
        try:
            module = importlib.import_module(_MODULES[peer])
            found[peer] = _version(peer, module)
        except Exception:  # any failure to import (missing, broken) means "not available"
            continue
    return found


def _check_peers(peers: Sequence[str] | str | None) -> tuple[str, ...]:
    """The requested peers (all of :data:`PEERS` for ``None``; one name may be a string)."""
    if peers is None:
        return PEERS
    names = [peers] if isinstance(peers, str) else list(peers)
    unknown = [p for p in names if p not in PEERS]
    if unknown:
        raise ValueError(
            f"peers: expected names from {list(PEERS)}, received {names} (unknown: {unknown})"
        )
    return tuple(p for p in PEERS if p in names)


def _unsupported(net: Any) -> dict[str, str]:
    """``{peer: reason}`` for the peers that cannot run ``net`` (all handle a plain MLP)."""
    from ..core.model import MLP

    reasons = {}
    types = [type(layer).__name__ for layer in net.layers]
    shared_linear = any(
        type(layer).__name__ == "Linear" and layer.positions > 1 for layer in net.layers
    )
    if "Mean" in types or shared_linear:
        why = "a Mean layer or a Linear layer over positions (no module extension for it)"
        reasons["backpack"] = reasons["nngeometry"] = why
    if not isinstance(net, MLP) or net.activation.name not in _JAX_ACTIVATIONS:
        reasons["jax"] = "not an MLP with a named activation (the JAX forward pass is an MLP's)"
    return reasons


# --- the problem ----------------------------------------------------------------------------
@dataclass
class _Problem:
    """The checked inputs of :func:`peer_routes`, as NumPy arrays."""

    net: Any
    theta: np.ndarray  # (P,)
    X: np.ndarray  # (N, *input_shape)
    y: np.ndarray  # (N,) int64
    V: np.ndarray | None  # (P, m)

    @property
    def N(self) -> int:
        return int(self.X.shape[0])

    @property
    def P(self) -> int:
        return int(self.net.num_params)

    @property
    def C(self) -> int:
        return int(self.net.output_dim)

    def chunk(self) -> int:
        """Identity columns per chunk: ``k N A 8 <= CHUNK_BYTES``, ``A`` activations/sample."""
        shapes = [*self.net.layer_input_shapes[1:], self.net.output_shape]
        A = sum(math.prod(s) for s in shapes)
        return max(1, min(self.P, CHUNK_BYTES // (8 * self.N * A)))

    def torch_data(self, torch: Any) -> tuple[Any, Any]:
        """``(X, y)`` as torch tensors: float64 inputs, int64 labels."""
        return torch.from_numpy(self.X), torch.from_numpy(self.y)

    def model(self) -> Any:
        """A fresh float64 ``torch.nn.Sequential`` of ``(net, theta)`` for one peer."""
        from ..oracle.torch import to_torch

        return to_torch(self.net, self.theta)


def _check_problem(
    net: Any, theta: ArrayLike, X: ArrayLike, y: ArrayLike, V: ArrayLike | None
) -> _Problem:
    from .._validation import check_net

    net = check_net(net)
    if net.likelihood.name != "categorical":
        raise ValueError(
            f"net: the peers compute with softmax cross-entropy, a categorical likelihood; "
            f"received {net!r} with likelihood {net.likelihood.name!r}"
        )
    if net.has_positions:
        raise ValueError(
            f"net: the peers' losses take outputs (N, C); received {net!r} with outputs "
            f"{('N', *net.output_shape)} (output positions)"
        )
    theta = net.check_theta(theta)
    X = np.ascontiguousarray(net.check_inputs(X), dtype=np.float64)
    y = np.ascontiguousarray(net.check_targets(y, X.shape[0]), dtype=np.int64)
    if V is not None:
        V = np.ascontiguousarray(V, dtype=np.float64)
        if V.ndim != 2 or V.shape[0] != net.num_params:
            raise ValueError(f"V: expected shape ({net.num_params}, m), received {V.shape}")
    return _Problem(net, theta, X, y, V)


def _eye_rows(torch: Any, start: int, stop: int, P: int) -> Any:
    """Rows ``start:stop`` of the ``(P, P)`` identity, ``(stop - start, P)`` float64."""
    E = torch.zeros(stop - start, P, dtype=torch.float64)
    E[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
    return E


def _softmax_factor(torch: Any, f: Any) -> Any:
    """``R: (N, C, C)``, ``R[n, c] = sqrt(p_c) (e_c - p)``, so that ``R^T R = diag(p) - p p^T``."""
    p = torch.softmax(f, dim=-1)
    eye = torch.eye(f.shape[-1], dtype=f.dtype)
    return p.sqrt()[:, :, None] * (eye - p[:, None, :])


def _lambda_product(p: Any, u: Any) -> Any:
    """``Lambda u = p * u - p (p . u)`` over the last axis, ``Lambda = diag(p) - p p^T``
    (works for torch tensors and JAX arrays)."""
    pu = p * u
    return pu - p * pu.sum(-1, keepdims=True)


# --- torch.func -----------------------------------------------------------------------------
def _torch_func_routes(pb: _Problem) -> dict[str, Route]:
    """``torch.func`` on :func:`~minifim.oracle.torch.to_torch`'s module via ``functional_call``.

    - ``scores``: ``vmap(grad(log p))`` over the samples with the parameters as a dict
      (``log p = -cross_entropy`` of one sample), concatenated to ``(N, P)`` in parameter
      order.
    - ``true_fisher``: ``J = vmap(jacrev(f))`` with respect to the parameter dict (8x faster
      than with respect to a flat vector, whose split's backward concatenates every row),
      concatenated to ``(N, C, P)``; ``G_n = R_n J_n`` with ``R_n^T R_n = Lambda_n``
      (:func:`_softmax_factor`), then one matmul ``G^T G / N`` of the stacked ``(N C, P)``.
    - ``hessian``: forward-over-reverse ``vmap(jvp(grad(L)))`` of the mean loss over the
      identity's rows, the ``jacfwd(jacrev(L))`` of ``torch.func.hessian``, in chunks
      (``jacfwd`` has no ``chunk_size``).
    - ``fisher_block``: per column ``J^T Lambda J v / N``: ``vmap`` of ``jvp`` for ``J v``, then
      ``vmap`` of the ``vjp`` of the forward pass (linearised once per call).
    - ``hessian_block``: ``vmap(jvp(grad(L)))`` over the columns of ``V``.
    """
    torch = importlib.import_module("torch")
    func = importlib.import_module("torch.func")
    F = torch.nn.functional
    model = pb.model()
    named = [(k, p.detach()) for k, p in model.named_parameters()]
    names = [k for k, _ in named]
    shapes = [tuple(p.shape) for _, p in named]
    sizes = [math.prod(s) for s in shapes]
    params = dict(named)
    flat = torch.from_numpy(pb.theta.copy())
    Xt, yt = pb.torch_data(torch)
    N, P, C = pb.N, pb.P, pb.C

    def forward(th: Any, x: Any) -> Any:
        views = {k: t.reshape(s) for k, t, s in zip(names, torch.split(th, sizes), shapes)}
        return func.functional_call(model, views, (x,))

    def log_lik(prm: Any, x: Any, t: Any) -> Any:
        return -F.cross_entropy(func.functional_call(model, prm, (x[None],)), t[None])

    def mean_nll(th: Any) -> Any:
        return F.cross_entropy(forward(th, Xt), yt)

    def logits(prm: Any, x: Any) -> Any:
        return func.functional_call(model, prm, (x[None],))[0]

    per_sample = func.vmap(func.grad(log_lik), in_dims=(None, 0, 0))
    jacobians = func.vmap(func.jacrev(logits), in_dims=(None, 0))
    grad_L = func.grad(mean_nll)
    hvps = func.vmap(lambda v: func.jvp(grad_L, (flat,), (v,))[1])

    def scores() -> np.ndarray:
        g = per_sample(params, Xt, yt)
        return torch.cat([g[k].reshape(N, -1) for k in names], dim=1).numpy()

    def true_fisher() -> np.ndarray:
        Jd = jacobians(params, Xt)
        J = torch.cat([Jd[k].reshape(N, C, -1) for k in names], dim=2)  # (N, C, P)
        del Jd
        G = torch.bmm(_softmax_factor(torch, forward(flat, Xt)), J).reshape(-1, P)
        del J
        return (G.T @ G).div_(N).numpy()

    def hessian() -> np.ndarray:
        H = torch.empty(P, P, dtype=torch.float64)
        k = pb.chunk()
        for start in range(0, P, k):
            stop = min(P, start + k)
            H[start:stop] = hvps(_eye_rows(torch, start, stop, P))  # rows = columns: H = H^T
        return H.numpy()

    routes: dict[str, Route] = {"scores": scores, "true_fisher": true_fisher, "hessian": hessian}
    if pb.V is not None:
        Vt = torch.from_numpy(pb.V)

        def fisher_block() -> np.ndarray:
            f, vjp_fn = func.vjp(lambda th: forward(th, Xt), flat)
            p = torch.softmax(f, dim=-1)
            jvps = func.vmap(lambda v: func.jvp(lambda th: forward(th, Xt), (flat,), (v,))[1])
            LJv = _lambda_product(p, jvps(Vt.T)) / N  # (m, N, C)
            return func.vmap(vjp_fn)(LJv)[0].T.numpy()

        def hessian_block() -> np.ndarray:
            return hvps(Vt.T).T.numpy()

        routes |= {"fisher_block": fisher_block, "hessian_block": hessian_block}
    return routes


# --- BackPACK -------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_hooks() -> Iterator[None]:
    """Silence torch's warning that BackPACK's full backward hooks fire on an input that does
    not require gradients (the first layer's input, ``X``: expected, harmless)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
        yield


def _backpack_routes(pb: _Problem) -> dict[str, Route]:
    """BackPACK's first- and second-order extensions on the extended module.

    - ``scores``: ``BatchGrad`` of ``CrossEntropyLoss(reduction="sum")``, whose per-sample
      gradients are those of each sample's cross-entropy: ``S = -grad_batch``.
    - ``true_fisher``: ``SqrtGGNExact`` of ``CrossEntropyLoss(reduction="mean")``, factors
      ``(C, N, *param)`` already scaled by ``1/sqrt(N)``: ``F = S^T S`` of the stacked
      ``(C N, P)``.

    No Hessian: BackPACK's Hessian backpropagation (``HBP``, ``DiagHessian``) gives diagonal
    and block-diagonal curvature only, and no matrix-vector products.
    """
    torch = importlib.import_module("torch")
    backpack = importlib.import_module("backpack")
    extensions = importlib.import_module("backpack.extensions")
    model = backpack.extend(pb.model())
    loss_sum = backpack.extend(torch.nn.CrossEntropyLoss(reduction="sum"))
    loss_mean = backpack.extend(torch.nn.CrossEntropyLoss(reduction="mean"))
    params = list(model.parameters())
    Xt, yt = pb.torch_data(torch)
    N, C = pb.N, pb.C

    def scores() -> np.ndarray:
        model.zero_grad(set_to_none=True)
        with _quiet_hooks(), backpack.backpack(extensions.BatchGrad()):
            loss_sum(model(Xt), yt).backward()
        return torch.cat([p.grad_batch.reshape(N, -1) for p in params], dim=1).neg_().numpy()

    def true_fisher() -> np.ndarray:
        model.zero_grad(set_to_none=True)
        with _quiet_hooks(), backpack.backpack(extensions.SqrtGGNExact()):
            loss_mean(model(Xt), yt).backward()
        S = torch.cat([p.sqrt_ggn_exact.reshape(C * N, -1) for p in params], dim=1)
        for p in params:
            del p.sqrt_ggn_exact
        return (S.T @ S).numpy()

    return {"scores": scores, "true_fisher": true_fisher}


# --- curvlinops -----------------------------------------------------------------------------
def _curvlinops_routes(pb: _Problem) -> dict[str, Route]:
    """curvlinops' ``GGNLinearOperator`` and ``HessianLinearOperator`` (torch tensors in and
    out) of ``CrossEntropyLoss(reduction="mean")`` on one batch of all ``N`` samples: the mean
    over samples, as minifim's. The dense matrices are ``op @ I`` in chunks of identity
    columns (written as rows: both are symmetric); the blocks ``op @ V``."""
    torch = importlib.import_module("torch")
    curvlinops = importlib.import_module("curvlinops")
    model = pb.model()
    loss = torch.nn.CrossEntropyLoss(reduction="mean")
    params = [p for p in model.parameters() if p.requires_grad]
    data = [pb.torch_data(torch)]
    ops = {
        name: cls(model, loss, params, data, num_data=pb.N)
        for name, cls in [
            ("ggn", curvlinops.GGNLinearOperator),
            ("hessian", curvlinops.HessianLinearOperator),
        ]
    }
    P = pb.P

    def dense(op: Any) -> Route:
        def run() -> np.ndarray:
            out = torch.empty(P, P, dtype=torch.float64)
            k = pb.chunk()
            for start in range(0, P, k):
                stop = min(P, start + k)
                out[start:stop] = (op @ _eye_rows(torch, start, stop, P).T).T
            return out.numpy()

        return run

    routes: dict[str, Route] = {
        "true_fisher": dense(ops["ggn"]),
        "hessian": dense(ops["hessian"]),
    }
    if pb.V is not None:
        Vt = torch.from_numpy(pb.V)
        routes["fisher_block"] = lambda: (ops["ggn"] @ Vt).numpy()
        routes["hessian_block"] = lambda: (ops["hessian"] @ Vt).numpy()
    return routes


# --- nngeometry -----------------------------------------------------------------------------
@contextlib.contextmanager
def _default_dtype(torch: Any, dtype: Any) -> Iterator[None]:
    """``torch.set_default_dtype(dtype)`` for the ``with`` block, restored after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _nngeometry_routes(pb: _Problem) -> dict[str, Route]:
    """nngeometry 0.4's ``FIM`` with ``variant="classif_logits"`` (closed-form expectation
    over the classes) on a ``DataLoader`` of one batch of all ``N`` samples; the matrix is
    averaged over the samples, as minifim's.

    - ``true_fisher``: the ``PMatDense`` representation (built when constructed; its
      ``to_torch()``).
    - ``fisher_block``: ``PMatImplicit.mv`` of each column of ``V`` (nngeometry multiplies one
      ``PVector`` at a time, ``C - 1`` backward passes each).

    Both run under ``torch.set_default_dtype(torch.float64)``: ``classif_logits`` builds its
    Cholesky factor of ``Lambda`` (Tanabe & Sagae) with a matrix of the default dtype (float32
    would not multiply the float64 logits) and guards a division with ``torch.finfo().eps`` of
    the default dtype (1.2e-7 in float32, a relative error of that size in the factor).
    """
    torch = importlib.import_module("torch")
    nng = importlib.import_module("nngeometry")
    objects = importlib.import_module("nngeometry.object")
    layercollection = importlib.import_module("nngeometry.layercollection")
    data = importlib.import_module("torch.utils.data")
    model = pb.model()
    loader = data.DataLoader(data.TensorDataset(*pb.torch_data(torch)), batch_size=pb.N)
    lc = layercollection.LayerCollection.from_model(model)

    def fim(representation: Any) -> Any:
        return nng.FIM(model, loader, representation, variant="classif_logits", layer_collection=lc)

    def true_fisher() -> np.ndarray:
        with _default_dtype(torch, torch.float64):
            return fim(objects.PMatDense).to_torch().numpy()

    routes: dict[str, Route] = {"true_fisher": true_fisher}
    if pb.V is not None:
        Vt = torch.from_numpy(pb.V)

        def fisher_block() -> np.ndarray:
            out = np.empty(Vt.shape)
            with _default_dtype(torch, torch.float64):
                M = fim(objects.PMatImplicit)
                for j in range(Vt.shape[1]):
                    v = objects.PVector(lc, vector_repr=Vt[:, j].contiguous())
                    out[:, j] = M.mv(v).to_torch().numpy()
            return out

        routes["fisher_block"] = fisher_block
    return routes


# --- JAX ------------------------------------------------------------------------------------
_JAX_ACTIVATIONS = ("tanh", "relu", "sigmoid", "softplus", "identity")


def _jax_forward(jax: Any, net: Any) -> Callable[[Any, Any], Any]:
    """``f(theta, x)``: the MLP's logits from the flat ``theta`` (PyTorch layout), ``x: (D,)``
    or ``(N, D)``; hidden activation on every layer but the last."""
    jnp = jax.numpy
    act = {
        "tanh": jnp.tanh,
        "relu": jax.nn.relu,
        "sigmoid": jax.nn.sigmoid,
        "softplus": jax.nn.softplus,
        "identity": lambda z: z,
    }[net.activation.name]
    layers = [(out, inp, w, b) for (out, inp), (w, b) in zip(net.shapes, net.layer_slices)]

    def forward(theta: Any, x: Any) -> Any:
        h = x
        for l, (out, inp, w, b) in enumerate(layers):
            h = h @ theta[w].reshape(out, inp).T + theta[b]
            if l < len(layers) - 1:
                h = act(h)
        return h

    return forward


def _jax_routes(pb: _Problem) -> dict[str, Route]:
    """JAX (float64: ``jax_enable_x64``) on the MLP's forward pass written in ``jax.numpy``;
    every function ``jit``-compiled and called once here (compilation outside the timings);
    each route blocks until its result is ready.

    - ``scores``: ``vmap(grad(log_softmax(f)[y]))``.
    - ``true_fisher``: ``vmap(jacrev(f))``, ``(N, C, P)``, times the softmax factor ``R_n``
      (``R_n^T R_n = Lambda_n``), then ``G^T G / N``.
    - ``hessian``: ``vmap(jvp(grad(L)))`` over the identity's rows in ``lax.map`` batches
      (the forward-over-reverse of ``jax.hessian``, chunked as described above).
    - ``fisher_block``: ``vmap`` over the columns of ``jvp`` (``J v``), ``Lambda``, and the
      ``vjp`` of the forward pass (linearised once).
    - ``hessian_block``: ``vmap(jvp(grad(L)))`` over the columns.
    """
    jax = importlib.import_module("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    forward = _jax_forward(jax, pb.net)
    N, P, C = pb.N, pb.P, pb.C
    theta, X, y = jnp.asarray(pb.theta), jnp.asarray(pb.X), jnp.asarray(pb.y)

    def log_lik(th: Any, x: Any, t: Any) -> Any:
        return jax.nn.log_softmax(forward(th, x))[t]

    def mean_nll(th: Any, X: Any, y: Any) -> Any:
        logp = jax.nn.log_softmax(forward(th, X))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def true_fisher(th: Any, X: Any) -> Any:
        J = jax.vmap(jax.jacrev(forward), in_axes=(None, 0))(th, X)  # (N, C, P)
        p = jax.nn.softmax(forward(th, X))
        R = jnp.sqrt(p)[:, :, None] * (jnp.eye(C) - p[:, None, :])
        G = jnp.einsum("nij,njp->nip", R, J).reshape(N * C, P)
        return G.T @ G / N

    def hvp(th: Any, X: Any, y: Any, v: Any) -> Any:
        return jax.jvp(lambda t: jax.grad(mean_nll)(t, X, y), (th,), (v,))[1]

    def hessian(th: Any, X: Any, y: Any) -> Any:
        def row(i: Any) -> Any:
            return hvp(th, X, y, jax.nn.one_hot(i, P, dtype=th.dtype))

        return jax.lax.map(row, jnp.arange(P), batch_size=pb.chunk())

    def fisher_block(th: Any, X: Any, V: Any) -> Any:
        f, vjp_fn = jax.vjp(lambda t: forward(t, X), th)
        p = jax.nn.softmax(f)

        def one(v: Any) -> Any:
            Jv = jax.jvp(lambda t: forward(t, X), (th,), (v,))[1]
            return vjp_fn(_lambda_product(p, Jv) / N)[0]

        return jax.vmap(one, in_axes=1, out_axes=1)(V)

    def hessian_block(th: Any, X: Any, y: Any, V: Any) -> Any:
        return jax.vmap(lambda v: hvp(th, X, y, v), in_axes=1, out_axes=1)(V)

    calls: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
        "scores": (jax.vmap(jax.grad(log_lik), in_axes=(None, 0, 0)), (theta, X, y)),
        "true_fisher": (true_fisher, (theta, X)),
        "hessian": (hessian, (theta, X, y)),
    }
    if pb.V is not None:
        V = jnp.asarray(pb.V)
        calls["fisher_block"] = (fisher_block, (theta, X, V))
        calls["hessian_block"] = (hessian_block, (theta, X, y, V))
    routes = {}
    for name, (fn, args) in calls.items():
        routes[name] = _jitted(jax, fn, args)
    return routes


def _jitted(jax: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> Route:
    """``jax.jit(fn)`` on ``args``, compiled and run once now; the route returns NumPy."""
    compiled = jax.jit(fn)
    compiled(*args).block_until_ready()  # compilation + warm-up, outside the timings

    def run() -> np.ndarray:
        return np.asarray(compiled(*args).block_until_ready())

    return run


# --- all together ---------------------------------------------------------------------------
_BUILDERS: dict[str, Callable[[_Problem], dict[str, Route]]] = {
    "torch.func": _torch_func_routes,
    "backpack": _backpack_routes,
    "curvlinops": _curvlinops_routes,
    "nngeometry": _nngeometry_routes,
    "jax": _jax_routes,
}


def peer_routes(
    net: Any,
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    V: ArrayLike | None = None,
    peers: Sequence[str] | str | None = None,
) -> dict[tuple[str, str], Route]:
    """Zero-argument callables computing minifim's quantities with each installed peer.

    Parameters
    ----------
    net : MLP or Sequential
        With a categorical likelihood (softmax cross-entropy); JAX needs an MLP.
    theta : ndarray, shape (P,)
    X : ndarray, shape ``(N, *input_shape)``
    y : ndarray of int, shape (N,)
        Class labels.
    V : ndarray, shape (P, m), optional
        The block of ``fisher_block = F V`` and ``hessian_block = H V``; both are omitted
        without it.
    peers : sequence of str, optional
        A subset of :data:`PEERS` (default all); peers not installed are skipped.

    Returns
    -------
    dict of (peer, quantity) -> callable
        For each installed peer and each quantity of :data:`QUANTITIES` it computes
        naturally, a function of no arguments returning the float64 array in minifim's
        conventions (see the module docstring): ``scores (N, P)``, ``true_fisher (P, P)``,
        ``hessian (P, P)``, ``fisher_block (P, m)``, ``hessian_block (P, m)``. All set-up
        (conversion to torch, linear operators, JAX compilation and one warm-up call) is done
        here, so calling a route times its computation only.

    Raises
    ------
    ValueError
        ``peers`` names an unknown peer; ``net``'s likelihood is not categorical or its
        outputs carry positions; ``net`` cannot run on a peer named explicitly in ``peers``
        (JAX: not an MLP; BackPACK, nngeometry: a ``Mean`` layer or a ``Linear`` layer over
        positions; without ``peers`` such peers are left out); ``V`` is not ``(P, m)``.
    """
    chosen = _check_peers(peers)
    pb = _check_problem(net, theta, X, y, V)
    reasons = _unsupported(pb.net)
    if peers is not None:
        bad = {p: reasons[p] for p in chosen if p in reasons}
        if bad:
            raise ValueError(f"net: {pb.net!r} cannot run on {bad}")
    installed = available()
    routes: dict[tuple[str, str], Route] = {}
    for peer in chosen:
        if peer not in installed or peer in reasons:
            continue
        for quantity, fn in _BUILDERS[peer](pb).items():
            routes[(peer, quantity)] = fn
    return routes
