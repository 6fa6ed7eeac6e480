"""Natural gradient against gradient descent: paths, a real classifier, and invariance.

Claims tested:
1. Kunstner, Balles & Hennig (2019), "Limitations of the empirical Fisher approximation for
   natural gradient descent", Fig. 1: on a linear least-squares problem in two parameters the
   natural gradient (true Fisher) points straight at the optimum from everywhere, while the
   empirical-Fisher-preconditioned gradient is distorted away from it far from the optimum.
2. (the verdict; Amari 1998, Martens 2020) natural gradient makes more progress per iteration
   than gradient descent: on a digits classifier (scikit-learn's ``load_digits``), with every
   method's step size tuned per seed on validation data (same grid budget), exact NGD's final
   training loss is below SGD's and Adam's (paired 95% t-intervals over seeds that redraw the
   split, initialisation and batch order); EF-NGD, K-FAC and the diagonal Fisher are reported.
3. Reparameterisation invariance (Martens 2014, sec. 12): rescaling one layer's weights
   (``W_0 = s V_0``, realised by training on inputs ``s X``) leaves the loss curve of exact
   natural gradient descent unchanged (up to the damping, with a KL-clipped, hence invariant,
   step size), and changes gradient descent's.

Parts 1 and 3 are identities of exact NGD (sanity checks, not the verdict).
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
from minifim.tools.report import (
    Report,
    angle_degrees,
    interval_position,
    paired_t_interval,
    quick,
    t_interval,
    verdict_from_positions,
)

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
    "batch_size": 32,
    "steps": 30 if QUICK else 150,
    "eval_every": 5 if QUICK else 10,
    "seeds": [0, 1, 2] if QUICK else [0, 1, 2, 3],
    "n_train": 400 if QUICK else None,
    "grid_factor": 3.0,  # step-size grid: centre * factor^k
    "max_configs": 5,  # per method and seed: 3 values, widened at most twice if the best is an edge
}
# method -> (centre step size, fixed damping or None, builder(net, lr, damping))
CLF_METHODS = {
    "SGD": (1.0, None, lambda net, lr, lam: optim.sgd(lr)),
    "Adam": (1e-2, None, lambda net, lr, lam: optim.adam(lr)),
    "NGD (exact Fisher)": (0.3, 1e-2, lambda net, lr, lam: optim.ngd(lr, lam, "true")),
    "EF-NGD": (0.3, 1e-2, lambda net, lr, lam: optim.ngd(lr, lam, "empirical")),
    "K-FAC": (
        0.3,
        1e-1,
        lambda net, lr, lam: optim.kfac(net, lr, lam, decay=0.95, inverse_period=5),
    ),
    "diagonal Fisher": (0.1, 1e-1, lambda net, lr, lam: optim.ngd(lr, lam, structure="diag")),
}
NGD_NAME = "NGD (exact Fisher)"
NGD_BASELINES = ("SGD", "Adam")


def ngd_criterion(ngd_loss, baseline_losses):
    """Per-iteration progress: for each baseline, the paired 95% interval of NGD's final
    training loss minus the baseline's (one pair per seed, step sizes tuned per seed on
    validation data) must lie below 0. Returns ``(verdict, positions, intervals)``."""
    ivs = {n: paired_t_interval(ngd_loss, b) for n, b in baseline_losses.items()}
    pos = {n: interval_position(iv, -np.inf, 0.0) for n, iv in ivs.items()}
    return verdict_from_positions(pos.values()), pos, ivs


def clf_run(net, name, lr, theta0, X, y, seed, evals_on=None):
    """Train one configuration; the loss curve on ``evals_on = (X, y)`` (default the
    training set), wall times and the final parameters. Diverged runs give inf losses."""
    _, lam, build = CLF_METHODS[name]
    Xe, ye = evals_on if evals_on is not None else (X, y)
    evals = [(0, minifim.loss(net, theta0, Xe, ye))]

    def record(step, th, state):
        if (step + 1) % CLF["eval_every"] == 0:
            evals.append((step + 1, minifim.loss(net, th, Xe, ye)))

    try:
        with np.errstate(all="raise"):
            th, hist = minifim.train(
                net,
                theta0,
                X,
                y,
                build(net, lr, lam),
                CLF["steps"],
                batch_size=CLF["batch_size"],
                rng=seed + 100,
                callback=record,
                progress=False,
            )
        times = np.asarray(hist["time"])
    except FloatingPointError:
        th, times = None, np.full(CLF["steps"], np.nan)
        evals = [
            (k * CLF["eval_every"], np.inf) for k in range(CLF["steps"] // CLF["eval_every"] + 1)
        ]
    steps, losses = np.array(evals).T
    if not np.all(np.isfinite(losses)):
        th = None
    return th, steps, np.where(np.isfinite(losses), losses, np.inf), times


def tune(net, name, theta0, X, y, Xv, yv, seed):
    """Step size by the final validation loss on a log grid around the method's centre;
    widened (at most to ``max_configs`` values) while the best value is at an edge.
    Returns ``(lr, configurations tried, whether the choice is interior)``."""
    centre = CLF_METHODS[name][0]
    f = CLF["grid_factor"]
    tried = {}
    ks = [-1, 0, 1]
    while True:
        for k in ks:
            if k not in tried:
                _, _, losses, _ = clf_run(net, name, centre * f**k, theta0, X, y, seed, (Xv, yv))
                tried[k] = losses[-1]
        best = min(tried, key=lambda k: tried[k])
        edge = best in (min(tried), max(tried))
        if not edge or len(tried) >= CLF["max_configs"]:
            return centre * f**best, len(tried), not edge
        ks = [best - 1] if best == min(tried) else [best + 1]


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
    names = list(CLF_METHODS)
    curves = {n: [] for n in names}
    finals = {n: [] for n in names}
    chosen = {n: [] for n in names}
    jobs = len(names) * len(CLF["seeds"])
    bar = tqdm(total=jobs, desc="digits (tune + run)", leave=False)
    for seed in CLF["seeds"]:
        X, y, X_test, y_test = minifim.data.train_test_split(X_all, y_all, 0.25, rng=seed)
        if CLF["n_train"]:
            X, y = X[: CLF["n_train"]], y[: CLF["n_train"]]
        nv = len(X) // 5  # validation: 20% of the training split, for tuning only
        Xv, yv, Xt, yt = X[:nv], y[:nv], X[nv:], y[nv:]
        net = minifim.MLP([64, CLF["hidden"], 10], activation="tanh", likelihood="categorical")
        theta0 = net.init(seed)
        for name in names:
            lr, n_cfg, interior = tune(net, name, theta0, Xt, yt, Xv, yv, seed)
            th, steps, losses, times = clf_run(net, name, lr, theta0, Xt, yt, seed)
            acc = (
                np.nan
                if th is None
                else float(np.mean(np.argmax(net.forward(th, X_test), 1) == y_test))
            )
            wall = np.concatenate([[0.0], np.cumsum(times)])[steps.astype(int)]
            curves[name].append((steps, losses, wall))
            finals[name].append((losses[-1], acc, float(np.nanmedian(times))))
            chosen[name].append((lr, n_cfg, interior))
            bar.update()
    bar.close()
    fig, axes = plt.subplots(
        1, 3, figsize=(19, 4.6), gridspec_kw={"wspace": 0.55, "width_ratios": [1, 1, 0.8]}
    )
    colors = plt.cm.tab10(np.arange(len(names)))
    for name, color in zip(names, colors):
        steps = curves[name][0][0]
        L = np.log(np.array([c[1] for c in curves[name]]))
        T = np.nanmedian(np.array([c[2] for c in curves[name]]), axis=0)
        ok = np.all(np.isfinite(L), axis=0)
        iv = [t_interval(L[:, j]) if ok[j] else (np.nan,) * 3 for j in range(L.shape[1])]
        mean, lo, hi = (np.exp([v[i] for v in iv]) for i in range(3))
        for ax, xaxis in zip(axes[:2], (steps, T)):
            sel = xaxis > 0 if ax is axes[1] else slice(None)
            ax.plot(xaxis[sel], mean[sel], color=color, label=name)
            ax.fill_between(xaxis[sel], lo[sel], hi[sel], color=color, alpha=0.2)
        ms = 1e3 * np.array([f[2] for f in finals[name]])
        m, l, h = t_interval(ms)
        axes[2].errorbar([m], [name], xerr=[[m - l], [h - m]], fmt="o", color=color, capsize=4)
    axes[0].set(
        xlabel="optimiser step",
        ylabel="training loss (mean NLL over the training split, nats)",
        yscale="log",
        title="loss against steps (geometric mean, 95% CI)",
    )
    axes[1].set(
        xlabel="wall time (s, optimiser steps only; median over seeds)",
        ylabel="training loss (nats)",
        xscale="log",
        yscale="log",
        title="loss against wall time",
    )
    axes[2].set(
        xscale="log",
        xlabel="time per step (ms; mean and 95% CI over seeds)",
        title="cost per step",
    )
    axes[2].xaxis.set_minor_formatter(plt.NullFormatter())
    axes[0].legend(fontsize=8)
    report.figure(
        fig,
        "digits_training.png",
        f"Digits, MLP [64, {CLF['hidden']}, 10] tanh, minibatches of {CLF['batch_size']}, "
        f"step sizes tuned per seed on validation data; seeds {CLF['seeds']}. Left: training "
        "loss against steps; middle: against wall time (log axis, so the cheap and the "
        "expensive methods are both readable); right: time per step.",
    )
    rows = []
    for name in names:
        f = np.array(finals[name])
        lrs = [c[0] for c in chosen[name]]
        loss_iv = t_interval(np.log(f[:, 0])) if np.all(np.isfinite(f[:, 0])) else (np.inf,) * 3
        acc_iv = t_interval(f[:, 1]) if np.all(np.isfinite(f[:, 1])) else (np.nan,) * 3
        rows.append(
            (
                name,
                "-" if CLF_METHODS[name][1] is None else f"{CLF_METHODS[name][1]:g}",
                ", ".join(f"{v:.3g}" for v in lrs),
                f"{sum(c[2] for c in chosen[name])}/{len(lrs)}",
                f"{np.mean([c[1] for c in chosen[name]]):.1f}",
                f"{np.exp(loss_iv[0]):.4g} [{np.exp(loss_iv[1]):.4g}, {np.exp(loss_iv[2]):.4g}]",
                f"{acc_iv[0]:.3f} [{acc_iv[1]:.3f}, {acc_iv[2]:.3f}]",
                1e3 * float(np.median(f[:, 2])),
            )
        )
    report.section(
        "2. Digits classifier: per-iteration progress with tuned step sizes",
        f"Per seed a new 75/25 train/test split, of which 20% of the training part is held "
        f"out for tuning; P = {net.num_params}, {CLF['steps']} steps of batch size "
        f"{CLF['batch_size']}, seeds {CLF['seeds']} (split, initialisation and batch order). "
        "Each method's step size is chosen per seed by the final validation loss on the log "
        f"grid centre x {CLF['grid_factor']:g}^k, k in {{-1, 0, 1}}, widened while the best "
        f"value is an edge (at most {CLF['max_configs']} values: the same budget for every "
        "method); the damping is fixed per method. Exact NGD and EF-NGD solve with the full "
        "damped matrix of each batch (`method='auto'`: the Woodbury route); K-FAC uses running "
        "averages of its factors. Final loss: geometric mean [95% CI] over seeds. Wall times "
        "for single-threaded BLAS.",
    )
    report.table(
        [
            "method",
            "damping",
            "chosen step sizes (per seed)",
            "interior choices",
            "configs tried (mean)",
            "final training loss",
            "test accuracy",
            "ms / step (median)",
        ],
        rows,
    )
    return {n: np.array(finals[n])[:, 0] for n in names}, chosen


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
        "Natural gradient descent makes more progress per iteration than gradient descent "
        "(Amari 1998; Martens 2020): on a digits classifier with step sizes tuned per seed on "
        "validation data, exact NGD reaches a lower training loss than SGD and Adam after "
        "the same number of steps.",
        SEED,
    )
    report.paper_claim(
        "natural gradient descent 'works efficiently': following the steepest descent "
        "direction in the Fisher geometry it needs fewer iterations than ordinary gradient "
        "descent, and approximations such as K-FAC inherit this per-iteration advantage",
        "Amari 1998, Sec. 1 and 4; Martens 2020, Sec. 1 and 14; Martens & Grosse 2015, Sec. 13",
    )
    report.criterion(
        "`ngd_criterion`: the paired 95% t-interval over seeds of NGD's final training loss "
        f"minus each baseline's ({', '.join(NGD_BASELINES)}), every method with its step "
        "size tuned per seed on validation data with the same grid budget, lies below 0. All "
        "below: agrees; any above: disagrees; else inconclusive. Wall time is reported, not "
        "judged (the claim is per iteration)."
    )
    start = time.perf_counter()
    p1 = part1(report, rng)
    p2, chosen = part2(report)
    p3 = part3(report)
    status, pos, ivs = ngd_criterion(p2[NGD_NAME], {b: p2[b] for b in NGD_BASELINES})
    n = len(CLF["seeds"])
    for b, iv in ivs.items():
        report.measure(
            f"final training loss: NGD - {b} (paired)",
            *iv,
            unit="nats",
            interval=f"95% paired t over {n} seeds",
            n=n,
        )
    for b in ("K-FAC", "EF-NGD"):
        if np.all(np.isfinite(p2[b])):
            report.measure(
                f"final training loss: {b} - SGD (paired)",
                *paired_t_interval(p2[b], p2["SGD"]),
                unit="nats",
                interval=f"95% paired t over {n} seeds",
                n=n,
            )
    edges = {k: sum(not c[2] for c in v) for k, v in chosen.items()}
    report.sanity(
        "part 1: NGD points at the optimum of a quadratic (NGD = Newton)",
        p1["ngd_max_angle"] < 1e-4,
        f"largest angle {p1['ngd_max_angle']:.1e} deg; EF-NGD mean {p1['ef_mean_angle']:.1f} deg, "
        f"max {p1['ef_max_angle']:.1f} deg (Kunstner et al. Fig. 1)",
    )
    ngd3 = p3[f"NGD, damping {INV['dampings'][0]:g}"]
    report.sanity(
        "part 3: exact NGD is invariant to rescaling a layer (damping 1e-10)",
        ngd3 < 1e-4 and p3["GD"] > 0.05,
        f"NGD curves differ by {ngd3:.1e} (relative), GD's by {p3['GD']:.3g}",
    )
    report.section(
        "Summary",
        "Final training losses (geometric mean over seeds): "
        + ", ".join(f"{k} {np.exp(np.mean(np.log(v))):.3g}" for k, v in p2.items())
        + ". NGD minus the baselines, paired: "
        + ", ".join(f"{b} {iv[0]:+.3g} [{iv[1]:+.3g}, {iv[2]:+.3g}] nats" for b, iv in ivs.items())
        + ". Step sizes at a grid edge after widening: "
        + (", ".join(f"{k} {v}/{n}" for k, v in edges.items() if v) or "none")
        + f". Total {time.perf_counter() - start:.1f} s.",
    )
    report.verdict(
        status,
        "NGD's final training loss minus "
        + ", ".join(
            f"{b}'s: {iv[0]:+.3g} [{iv[1]:+.3g}, {iv[2]:+.3g}] nats" for b, iv in ivs.items()
        )
        + f" ({n} seeds, step sizes tuned per seed on validation data)",
    )
    report.save()


if __name__ == "__main__":
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        main()
