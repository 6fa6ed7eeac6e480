"""Natural gradient against gradient descent: paths, a real classifier, and invariance.

Claims tested:
1. Kunstner, Balles & Hennig (2019), "Limitations of the empirical Fisher approximation for
   natural gradient descent", Fig. 1: on a linear least-squares problem in two parameters the
   natural gradient (true Fisher) points straight at the optimum from everywhere, while the
   empirical-Fisher-preconditioned gradient is distorted away from it far from the optimum.
2. (descriptive) Training a small digits classifier (scikit-learn's bundled ``load_digits``):
   loss against steps and against wall time for SGD, Adam, exact NGD, EF-NGD, K-FAC and the
   diagonal Fisher, 3 seeds with spread.
3. Reparameterisation invariance (Martens 2014, sec. 12): rescaling one layer's weights
   (``W_0 = s V_0``, realised by training on inputs ``s X``) leaves the loss curve of exact
   natural gradient descent unchanged (up to the damping, with a KL-clipped, hence invariant,
   step size), and changes gradient descent's.

Every number comes from the public API (``minifim.natural_gradient``, ``minifim.train``,
``minifim.optim``); seeds are stated. ``QUICK=1`` shrinks the network, the steps and the data.
"""

import time

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

import minifim
from minifim import optim
from minifim.tools.report import Report, angle_degrees, quick

SEED = 0
QUICK = quick()
# BLAS threads for main(): small dense solves and products dominate, where BLAS threads only add
# overhead and, on a loaded machine, spin (see minifim.tools.report). Measured: the wall-time curves of
# part 2 compare methods at one thread each.
BLAS_THREADS = 1

# --- part 1: Kunstner et al.'s linear regression ---------------------------------------------
LIN = {
    "n": 50,
    "sigma": 0.5,
    "w": 2.0,
    "b": -1.0,
    "x_mean": 1.0,
    "radius": 3.0,
    "starts": 6,
    "steps": 40,
    "lr": 0.5,
    "damping": 1e-10,
    "grid": 13 if QUICK else 19,
}

# --- part 2: digits classifier ---------------------------------------------------------------
CLF = {
    "hidden": 16 if QUICK else 32,
    "batch_size": 32 if QUICK else 64,
    "steps": 40 if QUICK else 400,
    "eval_every": 5 if QUICK else 10,
    "seeds": [0, 1, 2],
    "n_train": 600 if QUICK else None,
}


def clf_methods(net):
    """name -> (optimizer, settings) with the step sizes and damping of a small manual sweep."""
    return {
        "SGD": (optim.sgd(1.0), "lr 1.0"),
        "Adam": (optim.adam(1e-2), "lr 1e-2"),
        "NGD (exact Fisher)": (optim.ngd(0.3, 1e-2, "true"), "lr 0.3, damping 1e-2"),
        "EF-NGD": (optim.ngd(0.3, 1e-2, "empirical"), "lr 0.3, damping 1e-2"),
        "K-FAC": (
            optim.kfac(net, 0.3, 1e-1, decay=0.95, inverse_period=5),
            "lr 0.3, damping 1e-1, decay 0.95, inverses every 5 steps, factored",
        ),
        "diagonal Fisher": (optim.ngd(0.1, 1e-1, structure="diag"), "lr 0.1, damping 1e-1"),
    }


# --- part 3: invariance ----------------------------------------------------------------------
INV = {
    "pcs": 16,
    "hidden": 8,
    "n": 300,
    "steps": 15 if QUICK else 25,
    "scales": [0.25, 1.0, 4.0],
    "max_kl": 0.01,
    "dampings": [1e-10, 1e-6],
    "gd_lr": 0.5,
}
COLORS = {"GD": "tab:blue", "NGD": "tab:green", "EF-NGD": "tab:red"}


def part1(report, rng):
    net = minifim.MLP([1, 1], activation="identity", likelihood="gaussian", sigma=LIN["sigma"])
    x = LIN["x_mean"] + rng.standard_normal((LIN["n"], 1))
    y = LIN["w"] * x + LIN["b"] + LIN["sigma"] * rng.standard_normal((LIN["n"], 1))
    Xt = np.hstack([x, np.ones_like(x)])
    opt = np.linalg.lstsq(Xt, y, rcond=None)[0].ravel()  # theta* = (w*, b*)
    F = minifim.true_fisher(net, opt, x)  # constant for this model
    gd_lr = 1.0 / np.linalg.eigvalsh(F)[-1]
    directions = {
        "GD": lambda th: minifim.gradient(net, th, x, y),
        "NGD": lambda th: minifim.natural_gradient(net, th, x, y, LIN["damping"], "true", "dense"),
        "EF-NGD": lambda th: minifim.natural_gradient(
            net, th, x, y, LIN["damping"], "empirical", "dense"
        ),
    }
    optimizers = {
        "GD": optim.sgd(gd_lr),
        "NGD": optim.ngd(LIN["lr"], LIN["damping"], "true", "dense"),
        "EF-NGD": optim.ngd(LIN["lr"], LIN["damping"], "empirical", "dense"),
    }
    angles = np.linspace(0, 2 * np.pi, LIN["starts"], endpoint=False) + 0.3
    starts = [opt + LIN["radius"] * np.array([np.cos(a), np.sin(a)]) for a in angles]
    paths, dist = {}, {}
    for name, o in optimizers.items():
        paths[name], dist[name] = [], []
        for s in starts:
            traj = [s]
            th, _ = minifim.train(
                net,
                s,
                x,
                y,
                o,
                LIN["steps"],
                progress=False,
                callback=lambda step, th, state, t=traj: t.append(th),
            )
            paths[name].append(np.array(traj))
            dist[name].append(np.linalg.norm(th - opt))
    # directions on a grid: angle between -d and the straight line to the optimum
    r = 1.4 * LIN["radius"]
    gw = np.linspace(opt[0] - r, opt[0] + r, LIN["grid"])
    gb = np.linspace(opt[1] - r, opt[1] + r, LIN["grid"])
    field, ang = {}, {}
    for name, fn in directions.items():
        U = np.zeros((len(gb), len(gw), 2))
        ang[name] = []
        for i, b in enumerate(gb):
            for j, w in enumerate(gw):
                th = np.array([w, b])
                d = fn(th)
                U[i, j] = -d / np.linalg.norm(d)
                if np.linalg.norm(th - opt) > 0.3:
                    ang[name].append(angle_degrees(-d, opt - th))
        field[name] = U
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    ax = axes[0]
    ax.scatter(x[:, 0], y[:, 0], s=10, color="k")
    xs = np.linspace(x.min(), x.max(), 2)
    ax.plot(xs, opt[0] * xs + opt[1], color="tab:orange", label="least squares")
    ax.set(xlabel="x", ylabel="y", title=f"data (N = {LIN['n']}, sigma = {LIN['sigma']})")
    ax.legend()
    WW, BB = np.meshgrid(gw, gb)
    loss = np.array([[minifim.loss(net, np.array([w, b]), x, y) for w in gw] for b in gb])
    for ax, name in zip(axes[1:], directions):
        ax.contour(WW, BB, loss, levels=12, colors="0.8", linewidths=0.7)
        ax.quiver(
            WW,
            BB,
            field[name][..., 0],
            field[name][..., 1],
            color="0.45",
            angles="xy",
            scale=LIN["grid"] * 1.3,
            width=0.004,
        )
        for p in paths[name]:
            ax.plot(p[:, 0], p[:, 1], ".-", color=COLORS[name], ms=3, lw=1.2)
        ax.plot(*opt, "*", color="k", ms=12)
        lr = gd_lr if name == "GD" else LIN["lr"]
        ax.set(
            xlabel="w",
            ylabel="b",
            title=f"{name}: lr {lr:.3g}, {LIN['steps']} steps",
            xlim=(gw[0], gw[-1]),
            ylim=(gb[0], gb[-1]),
        )
    report.figure(
        fig,
        "kunstner_vector_fields.png",
        "Linear regression in two parameters (w, b): normalised update directions "
        "(arrows), loss contours and paths from six starts for GD, exact NGD and "
        "empirical-Fisher NGD (after Kunstner et al. 2019, Fig. 1).",
    )
    rows = [
        (
            name,
            f"{gd_lr:.3g}" if name == "GD" else f"{LIN['lr']:g}",
            float(np.mean(ang[name])),
            float(np.max(ang[name])),
            float(np.median(dist[name])),
            float(np.max(dist[name])),
        )
        for name in directions
    ]
    report.section(
        "1. Kunstner et al.: vector fields and paths",
        f"Model `y = w x + b`, Gaussian likelihood with sigma = {LIN['sigma']} "
        f"(well specified); x ~ N({LIN['x_mean']}, 1); seed {SEED}. Directions "
        f"are `(M + {LIN['damping']:g} I)^-1 g` by `minifim.natural_gradient` "
        "(dense route). The angle is between the update `-d` and the straight line "
        f"to the optimum, over the {LIN['grid']}x{LIN['grid']} grid (points closer "
        f"than 0.3 excluded); the distance to the optimum is after {LIN['steps']} "
        f"steps from {LIN['starts']} starts at radius {LIN['radius']}.",
    )
    report.table(
        [
            "method",
            "lr",
            "mean angle (deg)",
            "max angle (deg)",
            "median final distance",
            "max final distance",
        ],
        rows,
    )
    return {
        "ngd_max_angle": float(np.max(ang["NGD"])),
        "ef_mean_angle": float(np.mean(ang["EF-NGD"])),
        "ef_max_angle": float(np.max(ang["EF-NGD"])),
        "ngd_dist": float(np.median(dist["NGD"])),
        "ef_dist": float(np.median(dist["EF-NGD"])),
    }


def part2(report):
    X_all, y_all = minifim.data.load_digits()
    X, y, X_test, y_test = minifim.data.train_test_split(X_all, y_all, 0.25, rng=SEED)
    if CLF["n_train"]:
        X, y = X[: CLF["n_train"]], y[: CLF["n_train"]]
    net = minifim.MLP([64, CLF["hidden"], 10], activation="tanh", likelihood="categorical")
    names = list(clf_methods(net))
    curves = {n: [] for n in names}
    finals = {n: [] for n in names}
    settings = {n: s for n, (_, s) in clf_methods(net).items()}
    bar = tqdm(total=len(names) * len(CLF["seeds"]), desc="digits", leave=False)
    for seed in CLF["seeds"]:
        theta0 = net.init(seed)
        for name, (opt, _) in clf_methods(net).items():
            evals = [(0, minifim.loss(net, theta0, X, y))]

            def record(step, th, state, evals=evals):
                if (step + 1) % CLF["eval_every"] == 0:
                    evals.append((step + 1, minifim.loss(net, th, X, y)))

            try:
                th, hist = minifim.train(
                    net,
                    theta0,
                    X,
                    y,
                    opt,
                    CLF["steps"],
                    batch_size=CLF["batch_size"],
                    rng=seed + 100,
                    callback=record,
                    progress=False,
                )
                acc = float(np.mean(np.argmax(net.forward(th, X_test), 1) == y_test))
            except FloatingPointError:
                hist, acc = {"time": np.full(CLF["steps"], np.nan)}, np.nan
            steps, losses = np.array(evals).T
            wall = np.concatenate([[0.0], np.cumsum(hist["time"])])[steps.astype(int)]
            curves[name].append((steps, losses, wall))
            finals[name].append((losses[-1], acc, float(np.mean(hist["time"]))))
            bar.update()
    bar.close()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    colors = plt.cm.tab10(np.arange(len(names)))
    for name, color in zip(names, colors):
        steps = curves[name][0][0]
        L = np.array([c[1] for c in curves[name]])
        T = np.nanmedian(np.array([c[2] for c in curves[name]]), axis=0)
        med, lo, hi = np.median(L, 0), L.min(0), L.max(0)
        for ax, xaxis in zip(axes, (steps, T)):
            ax.plot(xaxis, med, color=color, label=name)
            ax.fill_between(xaxis, lo, hi, color=color, alpha=0.2)
    axes[0].set(
        xlabel="step",
        ylabel="training loss (mean NLL, full training set)",
        yscale="log",
        title="loss against steps",
    )
    axes[1].set(
        xlabel="wall time (s, optimiser steps only; median over seeds)",
        yscale="log",
        title="loss against wall time",
    )
    axes[0].legend(fontsize=8)
    report.figure(
        fig,
        "digits_training.png",
        f"Digits, MLP [64, {CLF['hidden']}, 10] tanh, minibatches of "
        f"{CLF['batch_size']}: median over seeds {CLF['seeds']} (line) and min-max "
        "(band) of the full training loss.",
    )
    rows = []
    for name in names:
        f = np.array(finals[name])
        rows.append(
            (
                name,
                settings[name],
                float(np.median(f[:, 0])),
                float(f[:, 0].min()),
                float(f[:, 0].max()),
                float(np.median(f[:, 1])),
                1e3 * float(np.median(f[:, 2])),
            )
        )
    report.section(
        "2. Digits classifier",
        f"{len(X)} training and {len(X_test)} test images, "
        f"P = {net.num_params}, {CLF['steps']} steps of batch size "
        f"{CLF['batch_size']}, seeds {CLF['seeds']} (initialisation and batch "
        "order). Exact NGD and EF-NGD solve with the full damped matrix of each "
        "batch (`method='auto'`: the Woodbury route, since N K < P); K-FAC uses "
        "running averages of its factors. Step sizes and damping come from a "
        "small manual sweep on seed 0 and are not tuned per seed. Wall times are "
        "for single-threaded BLAS (threadpoolctl), the same for every method.",
    )
    report.table(
        [
            "method",
            "settings",
            "final loss (median)",
            "min",
            "max",
            "test accuracy (median)",
            "ms / step",
        ],
        rows,
    )
    return {n: float(np.median(np.array(finals[n])[:, 0])) for n in names}


def whitened_pcs(X, k):
    """Project ``X`` on its top ``k`` principal components, scaled to unit variance."""
    Xc = X - X.mean(axis=0)
    _, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    return Xc @ Vt[:k].T * (np.sqrt(len(X)) / S[:k])


def part3(report):
    X_all, y_all = minifim.data.load_digits()
    X, y = whitened_pcs(X_all[: INV["n"]], INV["pcs"]), y_all[: INV["n"]]
    net = minifim.MLP([INV["pcs"], INV["hidden"], 10], activation="tanh", likelihood="categorical")
    theta0 = net.init(SEED)
    ws = net.layer_slices[0][0]
    methods = {"GD": (optim.sgd(INV["gd_lr"]), f"lr {INV['gd_lr']:g}")}
    for lam in INV["dampings"]:
        methods[f"NGD, damping {lam:g}"] = (
            optim.ngd(1.0, lam, "true", "dense", max_kl=INV["max_kl"]),
            f"lr 1, max_kl {INV['max_kl']:g}",
        )
    curves = {}
    for name, (opt, _) in methods.items():
        for s in INV["scales"]:
            phi0 = theta0.copy()
            phi0[ws] /= s  # W0 = s V0: the same function on inputs s X
            try:
                _, hist = minifim.train(net, phi0, s * X, y, opt, INV["steps"], progress=False)
                curves[name, s] = hist["loss"]
            except FloatingPointError:
                curves[name, s] = np.full(INV["steps"], np.nan)
    fig, axes = plt.subplots(1, len(methods), figsize=(5.5 * len(methods), 4.2), sharey=True)
    for ax, (name, (_, setting)) in zip(axes, methods.items()):
        for s, ls in zip(INV["scales"], ("--", "-", ":")):
            ax.plot(curves[name, s], ls, label=f"W0 = {s:g} V0")
        ax.set(xlabel="step", title=f"{name} ({setting})", yscale="log")
        ax.legend()
    axes[0].set_ylabel("training loss (full batch)")
    report.figure(
        fig,
        "invariance.png",
        "The same problem with layer 0's weights rescaled (W0 = s V0, trained as "
        "V0 on inputs s X): NGD's loss curves coincide when the damping is "
        "negligible; GD's do not.",
    )
    diff = {}
    for name in methods:
        base = curves[name, 1.0]
        diff[name] = max(
            float(np.max(np.abs(curves[name, s] - base) / base))
            if np.all(np.isfinite(curves[name, s]))
            else np.inf
            for s in INV["scales"]
            if s != 1.0
        )
    report.section(
        "3. Invariance to rescaling one layer",
        f"Full batch, {INV['n']} digits projected on their top {INV['pcs']} "
        f"principal components (whitened), MLP [{INV['pcs']}, {INV['hidden']}, "
        f"10] tanh, seed {SEED}, {INV['steps']} steps, scales {INV['scales']}. NGD "
        "uses the exact Fisher (dense route) and KL clipping (step size "
        f"min(1, sqrt(2 max_kl / d^T F d)), max_kl = {INV['max_kl']}), a "
        "reparameterisation-invariant step-size rule. The damping is not "
        "transformed with the parameters, so it is the one source of a "
        "difference: the table shows it growing with the damping. Whitening "
        "matters: on raw pixels the Fisher has eigenvalues down to ~1e-8 of the "
        "largest outside its exact null space (dead pixels, the softmax shift), "
        "nearly undamped NGD then takes huge steps, and any damping large enough "
        "to prevent them breaks the invariance.",
    )
    report.table(
        [
            "method",
            "settings",
            "final loss (s = 1)",
            "max relative loss difference to s = 1 (over steps and s)",
        ],
        [(n, st, float(curves[n, 1.0][-1]), diff[n]) for n, (_, st) in methods.items()],
        floatfmt=".3g",
    )
    return diff


def main():
    rng = np.random.default_rng(SEED)
    report = Report(
        "ngd_vs_gd",
        "Natural gradient vs gradient descent",
        "Kunstner et al. (2019): exact natural gradient points straight at the optimum of a "
        "linear least-squares problem while empirical-Fisher preconditioning distorts the "
        "path away from it; and (Martens 2014) exact natural gradient descent is invariant "
        "to reparameterisation (here: rescaling one layer), gradient descent is not.",
        SEED,
    )
    start = time.perf_counter()
    p1 = part1(report, rng)
    p2 = part2(report)
    p3 = part3(report)
    ok1 = p1["ngd_max_angle"] < 1e-4 and p1["ef_mean_angle"] > 5.0
    ngd3 = p3[f"NGD, damping {INV['dampings'][0]:g}"]
    ok3 = ngd3 < 1e-4 and p3["GD"] > 0.05
    report.section(
        "Summary",
        f"Part 1: NGD's largest angle to the optimum {p1['ngd_max_angle']:.2e} deg; "
        f"EF-NGD's mean {p1['ef_mean_angle']:.1f} deg, max "
        f"{p1['ef_max_angle']:.1f} deg; median distance after {LIN['steps']} "
        f"steps NGD {p1['ngd_dist']:.3g}, EF-NGD {p1['ef_dist']:.3g}. Part 2 final "
        "median losses: "
        + ", ".join(f"{k} {v:.3g}" for k, v in p2.items())
        + f". Part 3: NGD curves (damping {INV['dampings'][0]:g}) differ by at most "
        f"{ngd3:.2e} (relative), GD's by {p3['GD']:.3g}. Total "
        f"{time.perf_counter() - start:.1f} s.",
    )
    detail = (
        f"NGD max angle {p1['ngd_max_angle']:.1e} deg vs EF-NGD mean "
        f"{p1['ef_mean_angle']:.1f} deg (threshold 5); rescaled-layer loss curves: NGD "
        f"differs by {ngd3:.1e} (threshold 1e-4), GD by {p3['GD']:.2g} "
        "(threshold 0.05)"
    )
    report.verdict("agrees" if ok1 and ok3 else "disagrees", detail)
    report.save()


if __name__ == "__main__":
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        main()
