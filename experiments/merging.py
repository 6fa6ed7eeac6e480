"""Merging digits classifiers trained on disjoint halves: isotropic vs Fisher merging vs joint.

Claim (Matena & Raffel 2022): weighting each model's parameters by its Fisher merges better
than plain averaging, and the more of the Fisher the merge uses (diagonal, per-layer blocks,
full) the closer it gets to training on the union of the data; for linear-Gaussian models the
full-Fisher merge *is* joint training (tested exactly in tests/test_merging.py).

Setup: the digits training set is split at random into two disjoint halves; three MLPs
64-H-10 (tanh, softmax) start from the SAME initialisation ``net.init(seed)`` (merging needs
aligned hidden units; nothing here permutes them) and are trained on half A, half B and the
union, each to the MAP of ``sum NLL + alpha/2 |theta|^2`` (Adam warm-up, then L-BFGS). The merges
use the exact true Fisher of each model on its own half with weights ``N_i`` (summed Fisher),
and count the shared Gaussian prior once (``prior_precision=alpha``): the product of the two
Laplace posteriors divided by the prior. Quality is measured by the joint training objective
``J = mean NLL + alpha/(2N) |theta|^2`` on the union, test accuracy, and the distance to the
jointly trained parameters.

Run: ``python experiments/merging.py`` (``QUICK=1`` for a short run). Seeds 0, 1, 2 (splits and
initialisations); QUICK uses seed 0 only.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

import minifim
from minifim.data import load_digits, train_test_split
from minifim.tools.report import Report, quick

SEED = 0
QUICK = quick()
# BLAS threads for main(): small dense solves and products dominate, where BLAS threads only add
# overhead and, on a loaded machine, spin (see minifim.tools.report). Measured: QUICK: 12.4 s with 2
# free threads, 3.4 s with one; issue 12: full run 1038 s vs 39 s.
BLAS_THREADS = 1
SEEDS = [0] if QUICK else [0, 1, 2]
HIDDEN = 16 if QUICK else 32
ADAM_STEPS = 200 if QUICK else 500
LBFGS_ITERS = 300 if QUICK else 3000
ALPHA = 1.0
MERGES = ("isotropic", "diag", "block", "full")
ROWS = ("model A", "model B") + MERGES + ("joint",)


def fit(net, theta0, X, y):
    """MAP of sum NLL + alpha/2 |theta|^2: Adam warm-up, then L-BFGS (``minifim.fit_map``)."""
    theta, _ = minifim.train(
        net,
        theta0,
        X,
        y,
        minifim.optim.adam(1e-2),
        ADAM_STEPS,
        penalty=minifim.GaussianPrior(ALPHA),
        progress=False,
    )
    with warnings.catch_warnings():  # the gradient reached is reported, not required
        warnings.simplefilter("ignore", RuntimeWarning)
        theta, info = minifim.fit_map(net, theta, X, y, ALPHA, gtol=1e-9, max_iter=LBFGS_ITERS)
    return theta, info["grad_norm"]


def joint_objective(net, theta, X, y):
    return minifim.loss(net, theta, X, y) + 0.5 * ALPHA * float(theta @ theta) / len(X)


def run(seed, X, y):
    Xtr, ytr, Xte, yte = train_test_split(X, y, 0.25, rng=seed)
    half = np.random.default_rng(seed).permutation(len(Xtr))
    a, b = np.sort(half[: len(half) // 2]), np.sort(half[len(half) // 2 :])
    net = minifim.MLP([64, HIDDEN, 10], activation="tanh", likelihood="categorical")
    theta0 = net.init(seed)
    theta_a, ga = fit(net, theta0, Xtr[a], ytr[a])
    theta_b, gb = fit(net, theta0, Xtr[b], ytr[b])
    theta_j, gj = fit(net, theta0, Xtr, ytr)
    thetas = {"model A": theta_a, "model B": theta_b, "joint": theta_j}
    data = [(Xtr[a], ytr[a]), (Xtr[b], ytr[b])]
    for curvature in MERGES:
        prior = {} if curvature == "isotropic" else {"prior_precision": ALPHA}
        thetas[curvature] = minifim.fisher_merge(
            net, [theta_a, theta_b], data=data, structure=curvature, **prior
        )
    scale = np.linalg.norm(theta_j - theta0)
    metrics = {
        name: (
            joint_objective(net, th, Xtr, ytr),
            minifim.accuracy(net, th, Xte, yte),
            float(np.linalg.norm(th - theta_j) / scale),
        )
        for name, th in thetas.items()
    }
    # the joint objective along the straight line from model A to model B (one basin?)
    lams = np.linspace(0, 1, 21)
    path = [joint_objective(net, (1 - t) * theta_a + t * theta_b, Xtr, ytr) for t in lams]
    info = dict(net=net, grads=(ga, gb, gj), lams=lams, path=path, n=(len(a), len(b)))
    return metrics, info


def main():
    report = Report(
        "merging",
        "Fisher merging of digits models trained on disjoint halves",
        "Fisher-weighted averaging merges better than plain averaging, and using "
        "more of the Fisher (diagonal < per-layer blocks < full) gets closer to "
        "training on the union (Matena & Raffel 2022); for linear-Gaussian models "
        "the full merge equals joint training exactly (unit test).",
        SEED,
    )
    X, y = load_digits()
    results, infos = [], []
    for seed in SEEDS:
        metrics, info = run(seed, X, y)
        results.append(metrics)
        infos.append(info)
    net = infos[0]["net"]
    grads = np.array([i["grads"] for i in infos])
    report.section(
        "Setup",
        f"MLP {list(net.sizes)} (P = {net.num_params}); split seeds "
        f"{SEEDS}; halves of {infos[0]['n'][0]} and {infos[0]['n'][1]} training "
        f"digits; weight decay alpha = {ALPHA} on the summed NLL; Adam "
        f"({ADAM_STEPS} steps, lr 1e-2) then up to {LBFGS_ITERS} L-BFGS iterations "
        f"from the shared `net.init(seed)`. Largest final gradient norm "
        f"{grads.max():.1e} (A, B, joint). Merges: `fisher_merge(net, [theta_A, "
        f"theta_B], data=[(X_A, y_A), (X_B, y_B)], structure=..., "
        f"prior_precision={ALPHA})` with the exact true Fisher; isotropic = the "
        "plain average.",
    )

    J = np.array([[r[name][0] for name in ROWS] for r in results])
    acc = np.array([[r[name][1] for name in ROWS] for r in results])
    dist = np.array([[r[name][2] for name in ROWS] for r in results])
    report.table(
        [
            "model",
            "joint objective J (mean)",
            "test accuracy (mean)",
            "distance to theta_joint (relative to the joint model's travel from init)",
        ],
        [
            [name, float(J[:, k].mean()), float(acc[:, k].mean()), float(dist[:, k].mean())]
            for k, name in enumerate(ROWS)
        ],
    )

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    xs = np.arange(len(ROWS))
    for ax, values, label in [
        (axes[0], J, "joint training objective J"),
        (axes[1], acc, "test accuracy"),
    ]:
        ax.bar(
            xs,
            values.mean(0),
            yerr=values.std(0) if len(SEEDS) > 1 else None,
            color=["0.6", "0.6", "C3", "C1", "C2", "C0", "k"],
        )
        ax.set_xticks(xs, ROWS, rotation=30, ha="right")
        ax.set_ylabel(label)
        lo, hi = values.min(), values.max()
        ax.set_ylim(max(0.0, lo - 0.15 * (hi - lo)), hi + 0.1 * (hi - lo))
    axes[0].set_title(f"Lower is better (mean over {len(SEEDS)} split(s))")
    axes[1].set_title("Higher is better")
    for info in infos:
        axes[2].plot(info["lams"], info["path"], "-", color="0.5")
    for k, name in enumerate(MERGES):
        axes[2].axhline(
            J[0, ROWS.index(name)],
            color=f"C{[3, 1, 2, 0][k]}",
            ls="--",
            label=f"{name} merge (seed {SEEDS[0]})",
        )
    axes[2].axhline(J[0, ROWS.index("joint")], color="k", ls=":", label="joint training")
    axes[2].set_xlabel("t in (1 - t) theta_A + t theta_B")
    axes[2].set_ylabel("joint training objective J")
    axes[2].set_title("Along the line from model A to model B")
    axes[2].legend(fontsize=7)
    report.figure(
        fig,
        "merging.png",
        "Left and centre: joint training objective (on the union of the halves) and "
        "test accuracy of the two half-models, the four merges and joint training. "
        "Right: J along the straight line between the two half-models (grey) and the "
        "merges' values (dashed).",
    )

    mean_J = {name: J[:, k].mean() for k, name in enumerate(ROWS)}
    col = {name: J[:, k] for k, name in enumerate(ROWS)}
    # decided split by split: a difference of means within the spread over splits is no evidence
    fisher_beats_iso = all(np.all(col[m] < col["isotropic"]) for m in ("diag", "block", "full"))
    monotone = bool(np.all((col["full"] <= col["block"]) & (col["block"] <= col["diag"])))
    best_half = np.minimum(col["model A"], col["model B"])
    beats_halves = int(np.sum(col["full"] < best_half))
    detail = (
        "joint objective J (mean over splits): "
        + ", ".join(f"{name} {mean_J[name]:.4f}" for name in ROWS)
        + "; test accuracy: "
        + ", ".join(f"{name} {acc[:, k].mean():.3f}" for k, name in enumerate(ROWS))
        + f". In every one of {len(SEEDS)} split(s): Fisher merges (diag, block, full) beat the "
        f"plain average: {fisher_beats_iso}; full <= block <= diag: {monotone}. The full merge "
        f"beats the better half-model in {beats_halves} of {len(SEEDS)} split(s)."
    )
    status = (
        "agrees"
        if fisher_beats_iso and monotone
        else "disagrees"
        if not fisher_beats_iso
        else "inconclusive"
    )
    report.verdict(status, detail)
    report.save()


if __name__ == "__main__":
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        main()
