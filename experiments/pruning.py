"""Pruning a digits classifier: magnitude vs Optimal Brain Damage vs Optimal Brain Surgeon.

Claim (LeCun, Denker & Solla 1990; Hassibi & Stork 1993): using the curvature to choose which
weights to remove, and (OBS) to compensate with the remaining ones, removes more weights for the
same increase of the training loss: at every sparsity OBS < OBD < magnitude in training-loss
increase; and the second-order prediction of OBS is accurate while the removals are small.

Setup: MLP 64-H-10 (tanh, softmax) trained by Adam with weight decay ``alpha/2 |theta|^2`` on the
summed NLL, then polished to a minimum by L-BFGS (``minifim.fit_map``) since both criteria assume the gradient
vanishes; the objective is ``J = mean NLL + alpha/(2N) |theta|^2``, whose GGN is the true Fisher
plus ``alpha/N I``: that is the damping used for OBD/OBS (the curvature of the objective they
prune, not a tuning knob). Weights only are pruned; biases stay (and move under OBS). OBS runs
twice: one-shot (the curvature at the trained theta, downdated; exact on a quadratic) and with
the curvature recomputed at the current parameters as the pruning proceeds (Hassibi & Stork's
loop).

Run: ``python experiments/pruning.py`` (``QUICK=1`` for a short run). Seed 0.
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
# overhead and, on a loaded machine, spin (see minifim.tools.report). Measured: QUICK: 14.4 s with 2
# free threads, 5.0 s with one (OBS downdates of P ~ 2,000).
BLAS_THREADS = 1
HIDDEN = 16 if QUICK else 32
STEPS = 300 if QUICK else 500  # Adam warm-up
LBFGS_ITERS = 600 if QUICK else 6000  # then L-BFGS to a minimum
ALPHA = 1.0
SPARSITIES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95]
BLOCK_FRACTION = 0.01 if QUICK else 0.0025  # OBS removes this fraction of the weights per step
RECOMPUTE_FRACTION = 0.1 if QUICK else 0.05  # recomputed OBS: new curvature after this fraction
METHODS = ("magnitude", "obd", "obs", "obs-recomputed")


def main():
    report = Report(
        "pruning",
        "Pruning by magnitude, OBD and OBS on digits",
        "Curvature-aware pruning removes more weights for the same training-loss "
        "increase: OBS < OBD < magnitude at every sparsity from 50% (LeCun et al. "
        "1990; Hassibi & Stork 1993), and OBS's second-order prediction of the "
        "increase is accurate for small removals.",
        SEED,
    )
    X, y = load_digits()
    Xtr, ytr, Xte, yte = train_test_split(X, y, 0.25, rng=SEED)
    N = len(Xtr)
    net = minifim.MLP([64, HIDDEN, 10], activation="tanh", likelihood="categorical")
    prior = minifim.GaussianPrior(ALPHA)
    theta, _ = minifim.train(
        net, net.init(SEED), Xtr, ytr, minifim.optim.adam(1e-2), STEPS, penalty=prior
    )
    with warnings.catch_warnings():  # the gradient reached is reported, not required
        warnings.simplefilter("ignore", RuntimeWarning)
        theta, fit = minifim.fit_map(net, theta, Xtr, ytr, ALPHA, gtol=1e-9, max_iter=LBFGS_ITERS)
    batch = minifim.optim.Batch(net, Xtr, ytr, prior, N)

    def objective(th):
        return minifim.optim.objective(batch, th)

    base = fit["objective"]
    n_weights = sum(o * i for o, i in net.shapes)
    block = max(1, int(round(BLOCK_FRACTION * n_weights)))
    recompute = max(1, int(round(RECOMPUTE_FRACTION * n_weights / block)))
    damping = ALPHA / N
    report.section(
        "Setup",
        f"MLP {list(net.sizes)} (P = {net.num_params}, {n_weights} "
        f"prunable weights), Adam lr 1e-2, {STEPS} full-batch steps with weight "
        f"decay {ALPHA}/2 |theta|^2 (summed scale) from `net.init({SEED})`, then "
        f"{fit['iterations']} L-BFGS iterations (`minifim.fit_map`): objective "
        f"{base:.4f}, gradient norm {fit['grad_norm']:.2e}, "
        f"test accuracy {minifim.accuracy(net, theta, Xte, yte):.3f}. Curvature: the exact "
        f"true Fisher on the {N} training digits plus damping alpha/N = {damping:.2e} "
        f"(the objective's GGN). OBS: curvature once at the trained theta, "
        f"{block} weights per step (exact joint update), inverse restricted to the "
        "remaining weights after each step; one-shot (curvature once at the trained "
        f"theta) and recomputed (new curvature every {recompute} steps, i.e. every "
        f"{100 * RECOMPUTE_FRACTION:.0f}% of the weights).",
    )

    results = {
        m: minifim.prune_path(
            net, theta, Xtr, ytr, SPARSITIES, m, damping=damping, block_size=block
        )
        for m in METHODS[:3]
    }
    results["obs-recomputed"] = minifim.prune_path(
        net,
        theta,
        Xtr,
        ytr,
        SPARSITIES,
        "obs",
        damping=damping,
        block_size=block,
        recompute_every=recompute,
    )
    acc = {
        m: np.array([minifim.accuracy(net, r.theta, Xte, yte) for r in rs])
        for m, rs in results.items()
    }
    rise = {m: np.array([objective(r.theta) - base for r in rs]) for m, rs in results.items()}
    pred = {m: np.array([r.predicted_increase for r in rs]) for m, rs in results.items()}
    for rs in results.values():  # the invariant the figures rely on
        assert all(np.all(r.theta[~r.mask] == 0.0) for r in rs)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = {
        "magnitude": "magnitude",
        "obd": "OBD (diagonal)",
        "obs": "OBS one-shot",
        "obs-recomputed": "OBS recomputed",
    }
    pct = 100 * np.array(SPARSITIES)
    for m in METHODS:
        axes[0].plot(pct, acc[m], "o-", ms=3, label=labels[m])
        (line,) = axes[1].semilogy(
            pct[1:], np.maximum(rise[m][1:], 1e-8), "o-", ms=3, label=f"{labels[m]}: actual"
        )
        if m != "magnitude":
            axes[1].semilogy(
                pct[1:], pred[m][1:], "--", color=line.get_color(), label=f"{labels[m]}: predicted"
            )
    axes[0].set_xlabel("sparsity (% of weights removed)")
    axes[0].set_ylabel("test accuracy")
    axes[0].set_title("Accuracy after pruning (no retraining)")
    axes[0].legend()
    axes[1].set_xlabel("sparsity (% of weights removed)")
    axes[1].set_ylabel("increase of the training objective")
    axes[1].set_title("Training-objective increase: actual and predicted")
    axes[1].legend(fontsize=8)
    report.figure(
        fig,
        "pruning.png",
        "Left: test accuracy against sparsity. Right: increase of the training "
        "objective (mean NLL + weight decay / N), actual (solid) and the method's "
        "second-order prediction (dashed: the sum of OBD saliencies, the sum of OBS "
        "step costs), log scale.",
    )
    rows = [[f"{s:.2f}"] + [float(acc[m][i]) for m in METHODS] for i, s in enumerate(SPARSITIES)]
    report.table(["sparsity"] + [f"test acc {labels[m]}" for m in METHODS], rows, ".3f")
    rows = [
        [f"{s:.2f}"] + [float(rise[m][i]) for m in METHODS] + [float(pred["obs"][i])]
        for i, s in enumerate(SPARSITIES)
    ]
    report.table(
        ["sparsity"] + [f"dJ {labels[m]}" for m in METHODS] + ["dJ OBS one-shot predicted"],
        rows,
        ".3g",
    )

    high = [i for i, s in enumerate(SPARSITIES) if s >= 0.5]
    best = "obs-recomputed"
    obs_best = all(rise[best][i] < min(rise["obd"][i], rise["magnitude"][i]) for i in high)
    obd_mid = all(rise["obd"][i] < rise["magnitude"][i] for i in high)
    i20, i90 = SPARSITIES.index(0.2), SPARSITIES.index(0.9)
    pred_err = abs(pred["obs"][i20] / rise["obs"][i20] - 1)
    detail = (
        f"at 90% sparsity the training objective rises by {rise[best][i90]:.3g} (OBS "
        f"recomputed), {rise['obs'][i90]:.3g} (OBS one-shot), {rise['obd'][i90]:.3g} "
        f"(OBD), {rise['magnitude'][i90]:.3g} (magnitude); test accuracy "
        f"{acc[best][i90]:.3f} / {acc['obs'][i90]:.3f} / {acc['obd'][i90]:.3f} / "
        f"{acc['magnitude'][i90]:.3f}. At every level >= 50%: recomputed OBS lowest: "
        f"{obs_best}; OBD below magnitude: {obd_mid}. One-shot OBS prediction at 20% "
        f"sparsity {pred['obs'][i20]:.3g} vs actual {rise['obs'][i20]:.3g} "
        f"({100 * pred_err:.0f}% off; gradient norm at the start "
        f"{fit['grad_norm']:.1e})."
    )
    if obs_best and obd_mid and pred_err < 0.25:
        status = "agrees"
    elif not obs_best:
        status = "disagrees"
    else:
        status = "inconclusive"
    report.verdict(status, detail)
    report.save()


if __name__ == "__main__":
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        main()
