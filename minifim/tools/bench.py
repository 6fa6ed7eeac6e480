"""``make bench``: timings of the hot paths against their floors and against PyTorch.

Run ``python -m minifim.tools.bench`` (all items) or ``python -m minifim.tools.bench ITEM ...``;
``--list`` names the items. Each item prints one row of a markdown table: seconds, the floor it is
measured against (timed in the same run), the ratio, and the target from the issues. Items
that measure peak memory run in a fresh subprocess (peak RSS from ``getrusage``). Timings are
the best of ``--repeat`` runs (default 3). This is a script, not a test: nothing here asserts.

BLAS threads: each row is timed under ``threadpoolctl.threadpool_limits`` with the thread count
its column states, the floor and the torch reference (``torch.set_num_threads``) with the same
count. Rows made of many small products (per-sample scores, the Fisher diagonal, K-FAC factors
and directions, the gradient) run on one thread, where BLAS threads only add overhead and spin
on a loaded machine; the big GEMM/SYRK, ``eigh`` and Cholesky rows use every thread
(``--threads N`` sets one count for every row).

Floors:

- one SYRK ``U^T U`` of an ``(N, P)`` factor: ``N P^2`` flops, the cost of the dense
  Fisher's maths (the true Fisher's ``C`` seeds per sample are folded into Kronecker blocks,
  so it costs what the empirical Fisher's SYRK costs);
- the dense true Fisher, for the exact Hessian (second-order backprop: the Fisher's blocks
  plus the hidden layers' residual couplings, target <= 3x);
- a block of GGN-vector products, for the same block of Hessian-vector products (<= 3x);
- ``scipy.linalg.eigh`` of a random symmetric matrix of the same size as the Fisher;
- the Fisher build plus one Cholesky of the damped matrix, for an exact NGD step.

The ``slopes`` item fits log-log slopes of time against ``N`` and against ``P`` (widths) for
the true Fisher, the Hessian and the scores (expected ``~1`` in ``N``; ``~2`` in ``P`` for the
dense matrices, ``~1`` for the scores); the ``memory`` item measures the peak of the dense
routes with ``tracemalloc`` (NumPy reports its allocations to it) against ``8 P^2`` bytes.
``--out DIR`` writes ``bench.md`` and ``bench.json`` atomically.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from .report import blas_threads, markdown_table

__all__ = ["main"]

SIZES = [64, 64, 64, 10]  # P = 8,970
N_SAMPLES = 1000
SMALL = 1  # BLAS threads for rows made of many small products ("small solves dominate")
_FORCED: list[int] = []  # --threads N: one count for every row


def _threads(kind: str) -> int | None:
    """BLAS threads for a row: ``"small"`` rows get :data:`SMALL`, ``"big"`` rows (large
    GEMM/SYRK, eigh, Cholesky) every thread the BLAS has (``None``: no limit)."""
    if _FORCED:
        return _FORCED[0]
    return SMALL if kind == "small" else None


def _best(fn: Callable[[], object], repeat: int, threads: int | None = None) -> float:
    """Best wall time of ``repeat`` calls, under ``threadpool_limits(threads)`` (BLAS) and, if
    torch is loaded, ``torch.set_num_threads(threads)``."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    times = []
    with threadpool_limits(limits=threads, user_api="blas"):
        if torch is not None and threads is not None:
            torch.set_num_threads(threads)
        try:
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        finally:
            if torch is not None:
                torch.set_num_threads(before)
    return min(times)


def _count(threads: int | None) -> int:
    """The thread count a row actually ran with."""
    with threadpool_limits(limits=threads, user_api="blas"):
        return blas_threads()


def _problem(
    sizes: list[int] = SIZES, N: int = N_SAMPLES, seed: int = 0
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    import minifim

    rng = np.random.default_rng(seed)
    net = minifim.MLP(sizes, activation="tanh", likelihood="categorical")
    theta = net.init(rng)
    X = rng.standard_normal((N, sizes[0]))
    y = net.likelihood.sample(net.forward(theta, X), rng)
    return net, theta, X, y


def _interleaved(
    fns: dict[str, Callable[[], object]],
    repeat: int,
    threads: int | None = None,
    first: dict[str, float] | None = None,
    budget: float = 60.0,
) -> dict[str, float]:
    """Best wall time of each route, the routes timed in turn (round robin, ``repeat`` rounds).

    A route and the floor it is divided by are timed alternately, so a change in the machine's
    load during the run hits both alike and the best-of-``repeat`` of each is taken over the
    same stretch of time (a ratio of two separately timed best-ofs drifts with the load).
    ``first`` holds times already measured (e.g. by the call that produced a result for the
    agreement check): they count as round one. A route stops being repeated once its
    ``repeat`` runs would exceed ``budget`` seconds (a slow peer's one run is its time).
    Runs under ``threadpool_limits(threads)`` (BLAS) and ``torch.set_num_threads(threads)``.
    """
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    best = dict(first or {})
    with threadpool_limits(limits=threads, user_api="blas"):
        if torch is not None and threads is not None:
            torch.set_num_threads(threads)
        try:
            for r in range(repeat):
                for name, fn in fns.items():
                    if r == 0 and name in best:
                        continue
                    if name in best and best[name] * repeat > budget:
                        continue
                    t0 = time.perf_counter()
                    fn()
                    t = time.perf_counter() - t0
                    best[name] = min(best.get(name, t), t)
        finally:
            if torch is not None and before is not None:
                torch.set_num_threads(before)
    return best


def _syrk(N: int, P: int) -> Callable[[], object]:
    """One SYRK ``U^T U`` of a random ``(N, P)`` factor (one triangle, ``N P^2`` flops)."""
    from scipy.linalg import blas

    U = np.random.default_rng(1).standard_normal((N, P))
    return lambda: blas.dsyrk(1.0, U.T, trans=0, lower=0)


def _full_gram(N: int, P: int) -> Callable[[], object]:
    """``U^T U`` of a random ``(N, P)`` factor by one GEMM (``2 N P^2`` flops, both
    triangles written): what a full symmetric ``(P, P)`` result costs from one factor."""
    U = np.random.default_rng(1).standard_normal((N, P))
    return lambda: U.T @ U


def _syrk_floor(N: int, P: int, repeat: int, threads: int | None = None) -> float:
    """Best time of one SYRK ``U^T U`` of an ``(N, P)`` factor (one triangle, ``N P^2``
    flops): the cost of the empirical Fisher's maths, and the floor the true Fisher's
    assembly is held to."""
    return _best(_syrk(N, P), repeat, threads)


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    torch.set_default_dtype(torch.float64)
    return torch


def item_scores(repeat: int) -> list[dict[str, Any]]:
    """Per-sample scores S: (N, P), MLP 64-64-64-10, N = 1,000, on one BLAS thread."""
    import minifim

    net, theta, X, y = _problem()
    threads = _threads("small")
    N, P = X.shape[0], net.num_params
    times = _interleaved(
        {
            "scores": lambda: minifim.per_sample_scores(net, theta, X, y),
            "floor": lambda: np.ones((N, P)),  # allocate and write the output once
        },
        max(repeat, 20),  # a fast item: more runs for a stable best-of
        threads,
    )
    return [
        {
            "item": "per-sample scores (N, P)",
            "seconds": times["scores"],
            "floor": "write (N, P)",
            "floor_seconds": times["floor"],
            "target": "<= best peer (the peers rows)",
            "threads": _count(threads),
        }
    ]


def item_fisher(repeat: int) -> list[dict[str, Any]]:
    """Dense true / empirical Fisher, diagonal and K-FAC against one SYRK of ``(N, P)``."""
    import minifim

    net, theta, X, y = _problem()
    N, P = X.shape[0], net.num_params
    rows: list[dict[str, Any]] = []
    groups: list[tuple[str, dict[str, Callable[[], object]]]] = [
        (
            "big",
            {
                "dense true Fisher, upper triangle": lambda: minifim.true_fisher(
                    net, theta, X, triangle="upper"
                ),
                "dense true Fisher": lambda: minifim.true_fisher(net, theta, X),
                "dense empirical Fisher": lambda: minifim.empirical_fisher(net, theta, X, y),
            },
        ),
        (
            "small",
            {
                "Fisher diagonal (true)": lambda: minifim.fisher_diagonal(net, theta, X),
                "K-FAC factors (true)": lambda: minifim.kfac(net, theta, X),
            },
        ),
    ]
    for kind, routes in groups:
        threads = _threads(kind)
        floors: dict[str, Callable[[], object]] = {"floor": _syrk(N, P)}
        if kind == "big":
            floors["gemm"] = _full_gram(N, P)
        # the big rows allocate and fault in a fresh (P, P) array per call, whose cost on a
        # virtual machine varies from run to run: more rounds for a stable best-of
        rounds = max(repeat, 5) if kind == "big" else repeat
        times = _interleaved({**routes, **floors}, rounds, threads)
        for name in routes:
            row = {
                "item": name,
                "seconds": times[name],
                "floor": "SYRK of (N, P)",
                "floor_seconds": times["floor"],
                "threads": _count(threads),
                # the SYRK writes one triangle: the like-for-like route is triangle="upper";
                # both triangles are held to the full GEMM (the note)
                "target": "<= 1.3x floor" if "upper" in name else "-",
            }
            if "gemm" in times:
                row["note"] = (
                    f"full symmetric U^T U by one GEMM: {times['gemm']:.3f} s "
                    f"({times[name] / times['gemm']:.2f}x)"
                )
            rows.append(row)
    return rows


def item_eigh(repeat: int) -> list[dict[str, Any]]:
    """Dense eigh of the true Fisher (P = 8,970) against scipy's eigh of a random matrix."""
    import scipy.linalg

    import minifim

    net, theta, X, _ = _problem()
    F = minifim.true_fisher(net, theta, X)
    rng = np.random.default_rng(2)
    Rm = rng.standard_normal(F.shape)
    Rm = (Rm + Rm.T) / 2
    threads = _threads("big")
    floor = _best(lambda: scipy.linalg.eigh(Rm, eigvals_only=True), 1, threads)
    spectrum = getattr(minifim, "fisher_spectrum", None)
    if spectrum is not None:
        t = _best(lambda: spectrum(net, theta, X, method="dense"), 1, threads)
    else:
        t = _best(lambda: scipy.linalg.eigh(F, eigvals_only=True), 1, threads)
    return [
        {
            "item": "dense spectrum of F (P = 8,970)",
            "seconds": t,
            "floor": "scipy eigh, random",
            "floor_seconds": floor,
            "target": "~1x",
            "threads": _count(threads),
        }
    ]


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process: ``VmHWM`` (reset by ``exec``, unlike
    ``ru_maxrss``, which a child inherits from the process it was forked from)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def item_gram_spectrum(repeat: int) -> list[dict[str, Any]]:
    """Exact spectrum of a ~100,000-parameter MLP with N*C = 4,000 (dense would need 80 GB)."""
    import minifim

    spectrum = getattr(minifim, "fisher_spectrum", None)
    if spectrum is None:
        return [
            {
                "item": "gram spectrum, P ~ 100k",
                "seconds": float("nan"),
                "note": "minifim.fisher_spectrum not available",
            }
        ]
    net, theta, X, _ = _problem(sizes=[256, 256, 128, 10], N=400)
    threads = _threads("big")
    t = _best(lambda: spectrum(net, theta, X, method="gram"), 1, threads)
    P = net.num_params
    return [
        {
            "item": f"gram spectrum, P = {P:,}, N*C = 4,000",
            "seconds": t,
            "threads": _count(threads),
            "peak_memory_GB": _peak_rss_bytes() / 2**30,
            "dense_would_need_GB": 8 * P * P / 2**30,
            "target": "< 60 s, < 8 GB",
        }
    ]


def item_ngd(repeat: int) -> list[dict[str, Any]]:
    """Exact damped NGD step (P = 8,970) vs Fisher build + one Cholesky; K-FAC vs SGD step."""
    import scipy.linalg

    import minifim

    natural_gradient = getattr(minifim, "natural_gradient", None)
    if natural_gradient is None:
        return [
            {
                "item": "exact damped NGD step",
                "seconds": float("nan"),
                "note": "minifim.natural_gradient not available",
            }
        ]
    net, theta, X, y = _problem()
    P = net.num_params

    def floor() -> None:
        F = minifim.true_fisher(net, theta, X)
        F[np.diag_indices(P)] += 1e-3
        scipy.linalg.cho_factor(F, overwrite_a=True)

    big, small = _threads("big"), _threads("small")
    tf = _best(floor, repeat, big)
    t = _best(lambda: natural_gradient(net, theta, X, y, damping=1e-3, method="dense"), repeat, big)
    rows = [
        {
            "item": "exact damped NGD step (dense)",
            "seconds": t,
            "floor": "Fisher + Cholesky",
            "floor_seconds": tf,
            "target": "<= 1.3x floor",
            "threads": _count(big),
        }
    ]
    tk = _best(
        lambda: natural_gradient(net, theta, X, y, damping=1e-3, structure="kfac"), repeat, small
    )
    ts = _best(lambda: minifim.gradient(net, theta, X, y), repeat, small)
    rows.append(
        {
            "item": "K-FAC direction vs SGD gradient",
            "seconds": tk,
            "floor": "gradient (SGD step)",
            "floor_seconds": ts,
            "target": "report",
            "threads": _count(small),
        }
    )
    return rows


def item_woodbury(repeat: int) -> list[dict[str, Any]]:
    """Exact damped NGD of a ~100,000-parameter MLP with N*C = 2,000 by the Woodbury route."""
    import minifim

    natural_gradient = getattr(minifim, "natural_gradient", None)
    if natural_gradient is None:
        return [
            {
                "item": "woodbury NGD, P ~ 100k",
                "seconds": float("nan"),
                "note": "minifim.natural_gradient not available",
            }
        ]
    net, theta, X, y = _problem(sizes=[256, 256, 128, 10], N=200)
    threads = _threads("big")
    t = _best(
        lambda: natural_gradient(net, theta, X, y, damping=1e-3, method="woodbury"), 1, threads
    )
    return [
        {
            "item": f"woodbury NGD step, P = {net.num_params:,}, N*C = 2,000",
            "seconds": t,
            "threads": _count(threads),
            "peak_memory_GB": _peak_rss_bytes() / 2**30,
            "target": "< 10 s, < 4 GB",
        }
    ]


def item_hessian(repeat: int) -> list[dict[str, Any]]:
    """Exact Hessian by second-order backprop vs the dense true Fisher (target <= 3x)."""
    import minifim

    net, theta, X, y = _problem()
    threads = _threads("big")
    times = _interleaved(
        {
            "hessian": lambda: minifim.hessian(net, theta, X, y),
            "fisher": lambda: minifim.true_fisher(net, theta, X),
        },
        repeat,
        threads,
    )
    return [
        {
            "item": "dense Hessian (second-order backprop)",
            "seconds": times["hessian"],
            "floor": "dense true Fisher",
            "floor_seconds": times["fisher"],
            "threads": _count(threads),
            "target": "<= 3x true Fisher, ahead of every peer (the peers rows)",
        }
    ]


def item_hvp(repeat: int) -> list[dict[str, Any]]:
    """100 Hessian-vector products as one block vs 100 GGN-vector products (target <= 3x)."""
    import minifim

    net, theta, X, y = _problem()
    V = np.random.default_rng(3).standard_normal((net.num_params, BLOCK))
    threads = _threads("small")
    H_op = minifim.hessian_operator(net, theta, X, y)
    G_op = minifim.ggn_operator(net, theta, X)
    times = _interleaved({"H": lambda: H_op @ V, "G": lambda: G_op @ V}, repeat, threads)
    t1 = _best(lambda: [H_op @ V[:, j] for j in range(10)], 1, threads) * BLOCK / 10
    return [
        {
            "item": f"{BLOCK} Hessian-vector products (one block)",
            "seconds": times["H"],
            "floor": f"{BLOCK} GGN-vector products",
            "floor_seconds": times["G"],
            "threads": _count(threads),
            "target": "<= 3x",
            "note": f"one at a time: {t1:.3f} s per {BLOCK}",
        }
    ]


# --- side by side with the peers ----------------------------------------------------------------

WIDE_SIZES = [64, 128, 64, 10]  # P = 17,226: the wider second net of the peers rows
WIDE_N = 250
BLOCK = 100  # vectors per block of matrix-vector products
AGREE_RTOL = 1e-10
"""A peer's result agrees when ``max |M_peer - M| <= AGREE_RTOL max |M|``. Every entry of these
matrices is a sum of ``N`` products accumulated through the network's depth, so two correct
float64 routes differ by ``~ (N + depth) eps`` of the scale (``< 1e-12`` here); a convention
error (a sum for a mean, a loss for a log-likelihood, a missing factor) is ``>= 1e-3``."""

QUANTITY_NAMES = {
    "scores": "per-sample scores (N, P)",
    "true_fisher": "dense true Fisher (P, P)",
    "hessian": "dense Hessian (P, P)",
    "fisher_block": f"Fisher x {BLOCK} vectors (P, {BLOCK})",
    "hessian_block": f"Hessian x {BLOCK} vectors (P, {BLOCK})",
}


def _block_gemm_floor(net: Any, N: int, m: int) -> Callable[[], object]:
    """The GEMMs of ``m`` Fisher-vector products ``J^T M J V`` on an MLP, as single calls of
    the sizes the maths needs, on random arrays: per layer ``(out, in)`` the weight tangent
    ``(N, in) x (in, out m)``, the weight gradient ``(in, N) x (N, out m)`` and, past the first
    layer, the input tangent and the input gradient ``(out, in) x (in, N m)`` and ``(in, out) x
    (out, N m)``: ``~ 8 N m P`` flops in all, the floor of one forward-over-reverse pass."""
    rng = np.random.default_rng(4)
    mats = []
    for l, (out, inp) in enumerate(net.shapes):
        A = rng.standard_normal((N, inp))
        Vw = rng.standard_normal((inp, out * m))
        D = rng.standard_normal((N, out * m))
        W = rng.standard_normal((out, inp))
        T = rng.standard_normal((inp, N * m)) if l > 0 else None
        Bk = rng.standard_normal((out, N * m)) if l > 0 else None
        mats.append((A, Vw, D, W, T, Bk))

    def run() -> None:
        for A, Vw, D, W, T, Bk in mats:
            A @ Vw
            A.T @ D
            if T is not None and Bk is not None:
                W @ T
                W.T @ Bk

    return run


def _agreement(result: Any, reference: np.ndarray) -> float:
    """``max |result - reference| / max |reference|`` (``inf`` for a wrong shape)."""
    result = np.asarray(result, dtype=np.float64)
    if result.shape != reference.shape:
        return float("inf")
    scale = float(np.max(np.abs(reference))) or 1.0
    return float(np.max(np.abs(result - reference))) / scale


def _peer_rows(label: str, sizes: list[int], N: int, repeat: int) -> list[dict[str, Any]]:
    """minifim and every installed peer on the same quantities of one net, in one process.

    Each peer's result is first compared with minifim's (:data:`AGREE_RTOL`); only agreeing
    peers enter the ratio. minifim, its floor and the peers are then timed in turn
    (:func:`_interleaved`), on every BLAS thread (``torch.set_num_threads`` alike; JAX's XLA
    uses its own pool on every core). Set-up (model conversion, JIT compilation) is outside the
    timings.
    """
    import minifim

    from . import peers

    net, theta, X, y = _problem(sizes, N)
    P = net.num_params
    V = np.random.default_rng(3).standard_normal((P, BLOCK))
    threads = _threads("big")
    with threadpool_limits(limits=threads, user_api="blas"):
        F_op = minifim.fisher_operator(net, theta, X)
        H_op = minifim.hessian_operator(net, theta, X, y)
    ours: dict[str, Callable[[], Any]] = {
        "scores": lambda: minifim.per_sample_scores(net, theta, X, y),
        "true_fisher": lambda: minifim.true_fisher(net, theta, X),
        "hessian": lambda: minifim.hessian(net, theta, X, y),
        "fisher_block": lambda: F_op @ V,
        "hessian_block": lambda: H_op @ V,
    }
    floors: dict[str, tuple[str, Callable[[], object], str]] = {
        "scores": ("write (N, P)", lambda: np.ones((N, P)), "<= best peer"),
        # the peers return both triangles: the like-for-like floor is the full U^T U GEMM (the
        # one-triangle route against one SYRK is the ``fisher`` item's upper-triangle row)
        "true_fisher": (
            "GEMM U^T U of (N, P)",
            _full_gram(N, P),
            "<= 1.3x floor, ahead of every peer",
        ),
        "hessian": (
            "dense true Fisher (minifim)",
            ours["true_fisher"],
            "<= 3x true Fisher, ahead of every peer",
        ),
        "fisher_block": (
            "its GEMMs, ~8 N m P flops",
            _block_gemm_floor(net, N, BLOCK),
            "ahead of JAX vmap(jvp + vjp)",
        ),
        "hessian_block": (
            f"{BLOCK} Fisher-vector products (minifim)",
            ours["fisher_block"],
            "<= 3x Fisher block",
        ),
    }
    installed = peers.available()
    with threadpool_limits(limits=threads, user_api="blas"):
        routes = peers.peer_routes(net, theta, X, y, V) if installed else {}
    rows = []
    for q in peers.QUANTITIES:
        with threadpool_limits(limits=threads, user_api="blas"):
            t0 = time.perf_counter()
            reference = np.asarray(ours[q]())
            first = {"minifim": time.perf_counter() - t0}
            found: dict[str, dict[str, Any]] = {}
            timed: dict[str, Callable[[], object]] = {}
            for (name, quantity), fn in routes.items():
                if quantity != q:
                    continue
                t0 = time.perf_counter()
                try:
                    out = fn()
                except Exception as exc:  # a peer's failure is reported, not fatal
                    found[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                    continue
                first[name] = time.perf_counter() - t0
                found[name] = {"agreement": _agreement(out, reference)}
                del out
                found[name]["agrees"] = found[name]["agreement"] <= AGREE_RTOL
                timed[name] = fn
        del reference
        floor_name, floor_fn, target = floors[q]
        times = _interleaved(
            {"minifim": ours[q], "floor": floor_fn, **timed}, repeat, threads, first=first
        )
        for name in timed:
            found[name]["seconds"] = times[name]
        agreeing = {k: v["seconds"] for k, v in found.items() if v.get("agrees")}
        best = min(agreeing, key=lambda k: agreeing[k]) if agreeing else None
        rows.append(
            {
                "kind": "peers",
                "item": QUANTITY_NAMES[q],
                "quantity": q,
                "net": label,
                "P": P,
                "N": N,
                "seconds": times["minifim"],
                "floor": floor_name,
                "floor_seconds": times["floor"],
                "peers": found,
                "best_peer": best,
                "best_peer_seconds": agreeing[best] if best else None,
                "target": target,
                "threads": _count(threads),
                "versions": installed,
            }
        )
    return rows


def item_peers(repeat: int) -> list[dict[str, Any]]:
    """minifim vs torch.func, BackPACK, curvlinops, nngeometry, JAX: MLP 64-64-64-10, N = 1,000."""
    return _peer_rows("64-64-64-10, N = 1,000", SIZES, N_SAMPLES, repeat)


def item_peers_wide(repeat: int) -> list[dict[str, Any]]:
    """The same side by side on a wider net: MLP 64-128-64-10, N = 250 (P = 17,226)."""
    return _peer_rows(
        "-".join(map(str, WIDE_SIZES)) + f", N = {WIDE_N:,}", WIDE_SIZES, WIDE_N, repeat
    )


def item_slopes(repeat: int) -> list[dict[str, Any]]:
    """Log-log slopes of time vs N and vs P for the true Fisher, the Hessian and the scores."""
    import minifim

    from .report import loglog_slope

    threads = _threads("big")
    routes: dict[str, Callable[..., object]] = {
        "true Fisher": lambda net, th, X, y: minifim.true_fisher(net, th, X),
        "Hessian": lambda net, th, X, y: minifim.hessian(net, th, X, y),
        "scores": lambda net, th, X, y: minifim.per_sample_scores(net, th, X, y),
    }
    Ns = [250, 500, 1000]
    widths = [32, 48, 64]
    rows = []
    for name, fn in routes.items():
        tN = []
        for N in Ns:
            net, th, X, y = _problem(sizes=[64, 48, 48, 10], N=N)
            tN.append(_best(functools.partial(fn, net, th, X, y), repeat, threads))
        tP, Ps = [], []
        for w in widths:
            net, th, X, y = _problem(sizes=[w, w, w, 10], N=400)
            Ps.append(net.num_params)
            tP.append(_best(functools.partial(fn, net, th, X, y), repeat, threads))
        rows.append(
            {
                "item": f"slopes: {name}",
                "seconds": tN[-1],
                "slope_N": loglog_slope(Ns, tN),
                "slope_P": loglog_slope(Ps, tP),
                "threads": _count(threads),
                "target": "N: ~1; P: ~2 dense, ~1 scores",
                "note": f"slope in N {loglog_slope(Ns, tN):.2f} (N = {Ns}), "
                f"in P {loglog_slope(Ps, tP):.2f} (P = {Ps})",
            }
        )
    return rows


def item_memory(repeat: int) -> list[dict[str, Any]]:
    """Peak traced memory of the dense routes against the 8 P^2 bytes of the result."""
    import tracemalloc

    import minifim

    net, theta, X, y = _problem(sizes=[64, 48, 48, 10], N=500)
    P = net.num_params
    rows = []
    for name, fn in [
        ("true Fisher", lambda: minifim.true_fisher(net, theta, X)),
        ("empirical Fisher", lambda: minifim.empirical_fisher(net, theta, X, y)),
        ("Hessian", lambda: minifim.hessian(net, theta, X, y)),
    ]:
        tracemalloc.start()
        t0 = time.perf_counter()
        out = fn()
        t = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del out
        rows.append(
            {
                "item": f"peak memory: dense {name}, P = {P:,}",
                "seconds": t,
                "peak_over_8P2": peak / (8 * P * P),
                "target": "~1x 8 P^2 (plus one chunk's working set)",
                "note": f"peak {peak / 2**20:.0f} MiB = {peak / (8 * P * P):.2f} x 8 P^2",
            }
        )
    return rows


CNN_INPUT = (1, 8, 8)  # digit-sized images


def _cnn_problem(
    N: int = N_SAMPLES, seed: int = 0
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """The small CNN of the weight-sharing rows: 1x8x8 -> Conv2d(1, 8, 3, stride 2, padding 1)
    -> ReLU -> Conv2d(8, 8, 3, padding 2, dilation 2) -> ReLU -> Flatten -> Linear(128, 10)
    (P = 1,954)."""
    import minifim
    from minifim.layers import Conv2d, Flatten, Linear, ReLU

    layers = [
        Conv2d(1, 8, 3, stride=2, padding=1),
        ReLU(),
        Conv2d(8, 8, 3, padding=2, dilation=2),
        ReLU(),
        Flatten(),
        Linear(128, 10),
    ]
    rng = np.random.default_rng(seed)
    net = minifim.Sequential(layers, likelihood="categorical", input_shape=CNN_INPUT)
    theta = net.init(rng)
    X = rng.standard_normal((N,) + CNN_INPUT)
    y = net.sample_targets(net.forward(theta, X), rng)
    return net, theta, X, y


def _kfac_gemm_floor(net: Any, N: int, K: int, approx: str) -> Callable[[], object]:
    """The GEMMs of one K-FAC pass over ``N`` samples with ``K`` seeds each, as single calls
    of the sizes the maths needs on random arrays: per parametric layer ``(out, in)`` on ``R``
    positions the forward im2col GEMM ``(N R, in) x (in, out)``, past the first layer the
    backward GEMM of the seeds ``(N K R, out) x (out, in)``, and the two factor Grams
    ``(rows, in + 1)^T (rows, in + 1)`` and ``(K rows, out)^T (K rows, out)`` with ``rows = N R``
    (expand) or ``N`` (reduce: one row per sample after the position mean / sum)."""
    rng = np.random.default_rng(5)
    mats = []
    for l, layer in enumerate(net.parametric_layers):
        (out, inp), R = layer.matrix_shape, layer.positions
        rows = N * (R if approx == "expand" else 1)
        mats.append(
            (
                rng.standard_normal((N * R, inp)),
                rng.standard_normal((inp, out)),
                rng.standard_normal((N * K * R, out)) if l > 0 else None,
                rng.standard_normal((out, inp)),
                rng.standard_normal((rows, inp + 1)),
                rng.standard_normal((K * rows, out)),
            )
        )

    def run() -> None:
        for A, Wt, Bk, W, Af, Bf in mats:
            A @ Wt
            if Bk is not None:
                Bk @ W
            Af.T @ Af
            Bf.T @ Bf

    return run


def item_cnn(repeat: int) -> list[dict[str, Any]]:
    """Small CNN (weight sharing): per-sample scores vs torch.func, dense Fisher vs SYRK, K-FAC."""
    import scipy.linalg as sla

    import minifim
    from minifim.core.scores import forward_cache

    net, theta, X, y = _cnn_problem()
    N, P, C = X.shape[0], net.num_params, net.output_dim
    small, big = _threads("small"), _threads("big")
    rows: list[dict[str, Any]] = []
    score_fns: dict[str, Callable[[], object]] = {
        "minifim": lambda: minifim.per_sample_scores(net, theta, X, y),
        "floor": lambda: np.ones((N, P)),
    }
    torch = _torch()
    if torch is not None:
        from torch.func import functional_call, grad, vmap

        from minifim.oracle.torch import to_torch

        model = to_torch(net, theta).double()
        params = {k: v.detach() for k, v in model.named_parameters()}
        Xt, yt = torch.from_numpy(X), torch.from_numpy(np.asarray(y))

        def logp(p: Any, x: Any, t_: Any) -> Any:
            return torch.log_softmax(functional_call(model, p, (x[None],))[0], -1).gather(
                0, t_[None]
            )[0]

        f = vmap(grad(logp), in_dims=(None, 0, 0))

        def flat() -> Any:
            d = f(params, Xt, yt)
            return torch.cat([d[k].reshape(N, -1) for k in params], dim=1)

        got = np.asarray(flat().numpy())
        agreement = _agreement(got, minifim.per_sample_scores(net, theta, X, y))
        score_fns["torch.func"] = flat
    times = _interleaved(score_fns, max(repeat, 10), small)
    row: dict[str, Any] = {
        "item": "CNN per-sample scores (N, P)",
        "seconds": times["minifim"],
        "floor": "write (N, P)",
        "floor_seconds": times["floor"],
        "target": "<= torch.func",
        "threads": _count(small),
    }
    if "torch.func" in times:
        row.update(
            reference="torch.func vmap(grad), flattened to (N, P)",
            ref_seconds=times["torch.func"],
            ref_agreement=agreement,
        )
    rows.append(row)
    U = np.random.default_rng(1).standard_normal((N * C, P))
    times = _interleaved(
        {
            "minifim": lambda: minifim.true_fisher(net, theta, X),
            "floor": lambda: sla.blas.dsyrk(1.0, U.T, trans=0, lower=0),
        },
        repeat,
        big,
    )
    rows.append(
        {
            "item": "CNN dense true Fisher (SYRK of U)",
            "seconds": times["minifim"],
            "floor": "SYRK (N C, P)",
            "floor_seconds": times["floor"],
            "target": "<= 2x floor",
            "threads": _count(big),
        }
    )
    for approx in ("expand", "reduce"):

        def run(approx: str = approx) -> Any:
            return minifim.kfac(net, theta, X, kfac_approx=approx)

        def forward() -> Any:
            return forward_cache(net, theta, X)

        times = _interleaved(
            {"kfac": run, "floor": _kfac_gemm_floor(net, N, C, approx), "forward": forward},
            max(repeat, 5),
            small,
        )
        rows.append(
            {
                "item": f"CNN K-FAC {approx} (true)",
                "seconds": times["kfac"],
                "floor": "im2col GEMMs of one K-FAC pass",
                "floor_seconds": times["floor"],
                "reference": "the im2col forward pass alone",
                "ref_seconds": times["forward"],
                "target": "<= 2x floor",
                "threads": _count(small),
                "note": f"floor: forward im2col GEMMs, the backward GEMMs of K = C = {C} seeds "
                "per sample and the factor Grams; the forward pass alone is ~1/K of the work",
            }
        )
    return rows


ITEMS = {
    "scores": (item_scores, False),
    "fisher": (item_fisher, False),
    "hessian": (item_hessian, False),
    "hvp": (item_hvp, False),
    "peers": (item_peers, True),
    "peers-wide": (item_peers_wide, True),
    "slopes": (item_slopes, False),
    "memory": (item_memory, True),
    "eigh": (item_eigh, False),
    "gram": (item_gram_spectrum, True),
    "ngd": (item_ngd, False),
    "woodbury": (item_woodbury, True),
    "cnn": (item_cnn, False),
}


def _run_isolated(name: str, repeat: int) -> list[dict[str, Any]]:
    forced = ["--threads", str(_FORCED[0])] if _FORCED else []
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "minifim.tools.bench",
            "--json",
            "--repeat",
            str(repeat),
            *forced,
            "--in-process",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return [{"item": name, "seconds": float("nan"), "note": out.stderr.strip()[-200:]}]
    return json.loads(out.stdout)


def _blas_config() -> str:
    """The BLAS library, version and kernel, from threadpoolctl."""
    from threadpoolctl import threadpool_info

    info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not info:
        return "BLAS unknown"
    i = info[0]
    return f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}"


def _peer_cell(info: dict[str, Any] | None) -> str:
    if info is None:
        return "-"
    if "error" in info:
        return "failed: " + info["error"].replace("|", "/")[:60]
    agreement = info["agreement"]
    if not info["agrees"]:
        return f"disagrees ({agreement:.1e})"
    return f"{info['seconds']:.3f} ({agreement:.0e})"


def _peer_table(rows: list[dict[str, Any]]) -> str:
    """One row per (net, quantity): minifim, its floor, every peer's seconds and agreement."""
    names = sorted({name for r in rows for name in r["peers"]} | set(_peer_names()))
    body = []
    for r in rows:
        best = r["best_peer"]
        body.append(
            [
                r["net"],
                r["item"],
                f"{r['seconds']:.3f}",
                f"{r['floor_seconds']:.3f} ({r['floor']})",
                f"{r['seconds'] / r['floor_seconds']:.2f}x",
                *[_peer_cell(r["peers"].get(n)) for n in names],
                f"{r['best_peer_seconds'] / r['seconds']:.1f}x ({best})" if best else "-",
                r["target"],
            ]
        )
    return markdown_table(
        ["net", "quantity", "minifim (s)", "floor (s)", "vs floor"]
        + [f"{n} (s, agreement)" for n in names]
        + ["best peer / minifim", "target"],
        body,
    )


def _peer_names() -> tuple[str, ...]:
    from . import peers

    return tuple(peers.PEERS)


def _table(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        ratio_floor = (r["seconds"] / r["floor_seconds"]) if "floor_seconds" in r else None
        ratio_ref = (r["ref_seconds"] / r["seconds"]) if "ref_seconds" in r else None
        extra = []
        if "peak_memory_GB" in r:
            extra.append(f"peak {r['peak_memory_GB']:.2f} GB")
        if "dense_would_need_GB" in r:
            extra.append(f"dense {r['dense_would_need_GB']:.0f} GB")
        if "note" in r:
            extra.append(r["note"])
        body.append(
            [
                r["item"],
                str(r.get("threads", "-")),
                f"{r['seconds']:.3f}",
                f"{r['floor_seconds']:.3f} ({r['floor']})" if ratio_floor is not None else "-",
                f"{ratio_floor:.2f}x" if ratio_floor is not None else "-",
                f"{r['ref_seconds']:.3f} ({r['reference']})" if ratio_ref is not None else "-",
                f"{ratio_ref:.1f}x faster" if ratio_ref is not None else "-",
                r.get("target", "-"),
                "; ".join(extra) or "-",
            ]
        )
    return markdown_table(
        [
            "item",
            "BLAS threads",
            "minifim (s)",
            "floor (s)",
            "vs floor",
            "reference (s)",
            "vs reference",
            "target",
            "notes",
        ],
        body,
    )


def _tables(rows: list[dict[str, Any]]) -> str:
    """The markdown of all rows: minifim against its floors, then the peers side by side."""
    own = [r for r in rows if r.get("kind") != "peers"]
    side = [r for r in rows if r.get("kind") == "peers"]
    text = _table(own) if own else ""
    if side:
        versions = side[0].get("versions") or {}
        shown = ", ".join(f"{k} {v}" for k, v in versions.items()) or "none installed"
        text += (
            f"\nSide by side in one process (peers: {shown}; agreement max|dM| / max|M|, "
            f"trusted below {AGREE_RTOL:g}):\n\n" + _peer_table(side)
        )
    return text + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minifim.tools.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("items", nargs="*", help=f"items to run (default all): {list(ITEMS)}")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    parser.add_argument("--list", action="store_true", help="list the items and exit")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="BLAS threads for every row (default: 1 where small products "
        "dominate, all threads for the big GEMM/eigh/Cholesky rows)",
    )
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="write DIR/bench.md and DIR/bench.json"
    )
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.list:
        for name, (fn, _) in ITEMS.items():
            print(f"{name:10s} {(fn.__doc__ or '').splitlines()[0]}")
        return 0
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads: expected a positive integer, received {args.threads}")
        _FORCED[:] = [args.threads]
    names = args.items or list(ITEMS)
    unknown = [n for n in names if n not in ITEMS]
    if unknown:
        parser.error(f"unknown items {unknown}; expected some of {list(ITEMS)}")
    rows = []
    for name in names:
        fn, isolated = ITEMS[name]
        if isolated and not args.in_process:
            rows += _run_isolated(name, args.repeat)
        else:
            rows += fn(args.repeat)
        if not args.json:
            print(f"... {name} done", file=sys.stderr)
    import platform

    header = (
        f"minifim bench on {platform.machine()}, numpy {np.__version__}, "
        f"{blas_threads()} BLAS threads available ({_blas_config()}); each row's count in "
        "its column\n"
    )
    if args.out is not None:
        from pathlib import Path

        from .. import _io

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        _io.atomic_write_text(out / "bench.md", header + "\n" + _tables(rows))
        _io.atomic_write_text(out / "bench.json", json.dumps(rows, indent=1) + "\n")
    if args.json:
        print(json.dumps(rows))
    else:
        print(header)
        print(_tables(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
