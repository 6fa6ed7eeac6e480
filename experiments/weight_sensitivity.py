"""Fisher sensitivity of a digits classifier's input pixels against curvature-free baselines.

Claim (Fisher pruning, Theis, Korshunova, Tejani & Huszar 2018, "Faster gaze prediction with
dense networks and Fisher pruning", Sec. 2.2, Eqs. 7-9; the Fisher as a parameter's importance,
Kirkpatrick et al. 2017): removing a feature whose gate has a small Fisher information costs
little, to second order ``Delta L ~ 1/2 F_gate``; ranking features by it and removing the least
important first keeps the loss (here: test accuracy) higher than other orders.

Removal is mean imputation (pixel ``j`` replaced by its training mean ``mu_j``), so the
matching Fisher score is the gate Fisher on centred inputs: the network with first-layer bias
``b + W mu`` on inputs ``x - mu`` is the same function, and a gate ``x_j - mu_j -> c (x_j - mu_j)``
closed from ``c = 1`` to ``0`` is exactly mean imputation (``minifim.sensitivity(...,
per="input", aggregate="gate")`` on the centred network). Baselines without curvature: pixels
of least training variance first (the energy that mean imputation removes) and random orders.
The decision uses the whole accuracy-against-k curve (its mean over k, an area), paired over
seeds that redraw the train/test split and the initialisation.

Run: ``python experiments/weight_sensitivity.py`` (``QUICK=1`` for a short run).
"""

import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits
from tqdm import tqdm

import minifim
from minifim.data import load_digits, train_test_split
from minifim.tools.report import (
    Report,
    interval_position,
    paired_t_interval,
    quick,
    t_interval,
    verdict_from_positions,
)

SEED = 0
QUICK = quick()
# BLAS threads for main(): small dense solves and products dominate, where BLAS threads only add
# overhead and, on a loaded machine, spin (see minifim.tools.report). Measured: QUICK: 2.7 s with 2 free
# threads, 2.8 s with one.
BLAS_THREADS = 1
HIDDEN = 32
STEPS = 150 if QUICK else 500
ALPHA = 1.0  # weight decay alpha/2 |theta|^2 on the summed NLL (a Gaussian prior)
REMOVED = list(range(0, 65, 8 if QUICK else 4))
SEEDS = list(range(3 if QUICK else 8))
N_RANDOM = 5 if QUICK else 10
PRIMARY = "Fisher gate, centred (true F)"
BASELINES = ("least variance first", "random order (mean)")


def centred(net, theta, mu):
    """``theta`` with first-layer bias ``b + W mu``: the same function of ``x - mu``."""
    th = theta.copy()
    ws, bs = net.layer_slices[0]
    W = th[ws].reshape(net.shapes[0])
    th[bs] += W @ mu
    return th


def ablation_curve(net, theta, X, y, order, mu):
    """Test accuracy after mean-imputing the first k pixels of ``order``, k in REMOVED."""
    accs = []
    for k in REMOVED:
        Xk = X.copy()
        Xk[:, order[:k]] = mu[order[:k]]
        accs.append(minifim.accuracy(net, theta, Xk, y))
    return np.array(accs)


def sensitivity_criterion(auc_primary, auc_baselines):
    """The verdict from per-seed curve areas (mean accuracy over k): for each baseline, the
    paired 95% interval of ``auc_primary - auc_baseline`` must lie above 0. Returns
    ``(verdict, positions, intervals)``."""
    ivs = {name: paired_t_interval(auc_primary, auc) for name, auc in auc_baselines.items()}
    pos = {name: interval_position(iv, 0.0, np.inf) for name, iv in ivs.items()}
    return verdict_from_positions(pos.values()), pos, ivs


def run_seed(seed):
    """One split and initialisation: the trained net, the scores and the ablation curves."""
    X, y = load_digits()
    Xtr, ytr, Xte, yte = train_test_split(X, y, 0.25, rng=seed)
    net = minifim.MLP([64, HIDDEN, 10], activation="tanh", likelihood="categorical")
    theta, hist = minifim.train(
        net,
        net.init(seed),
        Xtr,
        ytr,
        minifim.optim.adam(1e-2),
        STEPS,
        penalty=minifim.GaussianPrior(ALPHA),
        progress=False,
    )
    mu = Xtr.mean(axis=0)
    thc = centred(net, theta, mu)
    Xc = Xtr - mu
    scores = {
        PRIMARY: minifim.sensitivity(net, thc, Xc, per="input", aggregate="gate"),
        "Fisher gate, centred (empirical F)": minifim.sensitivity(
            net, thc, Xc, ytr, "empirical", per="input", aggregate="gate"
        ),
        "Fisher diagonal summed over the pixel's weights": minifim.sensitivity(
            net, theta, Xtr, per="input"
        ),
        "least variance first": Xtr.var(axis=0),
    }
    orders = {k: np.argsort(v, kind="stable") for k, v in scores.items()}
    orders["most sensitive first (reverse of the primary)"] = orders[PRIMARY][::-1]
    curves = {k: ablation_curve(net, theta, Xte, yte, o, mu) for k, o in orders.items()}
    rng = np.random.default_rng(500 + seed)
    curves["random order (mean)"] = np.mean(
        [ablation_curve(net, theta, Xte, yte, rng.permutation(64), mu) for _ in range(N_RANDOM)],
        axis=0,
    )
    # sanity: the centred network is the same function
    same = float(np.max(np.abs(net.forward(thc, Xte - mu) - net.forward(theta, Xte))))
    return {
        "net": net,
        "theta": theta,
        "Xtr": Xtr,
        "ytr": ytr,
        "Xte": Xte,
        "yte": yte,
        "acc": minifim.accuracy(net, theta, Xte, yte),
        "loss": float(hist["loss"][-1]),
        "scores": scores,
        "curves": curves,
        "centred_err": same,
        "rho_ef": float(
            spearmanr(scores[PRIMARY], scores["Fisher gate, centred (empirical F)"]).statistic
        ),
    }


def main():
    report = Report(
        "weight_sensitivity",
        "Fisher sensitivity of input pixels against curvature-free baselines",
        "Ranking input pixels by the Fisher information of their gate (Fisher pruning) and "
        "mean-imputing the least important first keeps test accuracy higher over the whole "
        "removal curve than the curvature-free orders (least variance first, random).",
        SEED,
    )
    report.paper_claim(
        "the increase in loss from removing a feature is, to second order, half the Fisher "
        "information of its gate, so features with the smallest Fisher pruning signal can be "
        "removed at the smallest cost",
        "Theis et al. 2018, Sec. 2.2, Eqs. 7-9 (the Fisher as importance: Kirkpatrick et al. 2017)",
    )
    report.criterion(
        "`sensitivity_criterion`: the mean test accuracy over the whole curve k = "
        f"{REMOVED[0]}..{REMOVED[-1]} pixels mean-imputed (least Fisher gate score first) "
        "exceeds that of each curvature-free baseline (least variance first; random order, "
        f"mean of {N_RANDOM}) with a paired 95% t-interval above 0 over {len(SEEDS)} seeds "
        "(split and initialisation). Both above: agrees; any below: disagrees; else "
        "inconclusive."
    )
    runs = [run_seed(s) for s in tqdm(SEEDS, desc="weight_sensitivity seeds")]
    names = list(runs[0]["curves"])
    accs = t_interval([r["acc"] for r in runs])
    report.section(
        "Model",
        f"MLP [64, {HIDDEN}, 10] (tanh, softmax), Adam (lr 1e-2, full batch, {STEPS} steps) "
        f"with weight decay {ALPHA}/2 |theta|^2 on the summed NLL; per seed a new 75/25 "
        f"train/test split and initialisation, seeds {SEEDS}. Test accuracy "
        f"{accs[0]:.3f} [{accs[1]:.3f}, {accs[2]:.3f}] (95% t over seeds).",
    )
    report.sanity(
        "centred network = original network",
        max(r["centred_err"] for r in runs) < 1e-10,
        f"max |f_centred(x - mu) - f(x)| = {max(r['centred_err'] for r in runs):.1e}",
    )

    # --- maps (seed 0) ----------------------------------------------------------------------
    r0 = runs[0]
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    for ax, key in zip(
        axes,
        [
            PRIMARY,
            "Fisher gate, centred (empirical F)",
            "Fisher diagonal summed over the pixel's weights",
            "least variance first",
        ],
    ):
        m = r0["scores"][key].reshape(8, 8)
        im = ax.imshow(m, cmap="magma")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(key.replace(" (", "\n("), fontsize=8)
        fig.colorbar(
            im,
            ax=ax,
            fraction=0.046,
            label="score (nats)" if key != "least variance first" else "variance (pixel units^2)",
        )
    report.figure(
        fig,
        "sensitivity_maps.png",
        "Seed 0: input-pixel scores on the 8 x 8 grid: the gate Fisher on centred inputs (true "
        "and empirical), the Fisher diagonal summed over each pixel's weights, and the "
        "training variance (the curvature-free baseline).",
    )

    # --- curves --------------------------------------------------------------------------------
    C = {n: np.array([r["curves"][n] for r in runs]) for n in names}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
    for i, n in enumerate(names):
        iv = [t_interval(C[n][:, j]) for j in range(len(REMOVED))]
        col = "k" if n.startswith("random") else f"C{i}"
        style = "--" if n.startswith("random") else "o-"
        axes[0].plot(REMOVED, [v[0] for v in iv], style, ms=3, label=n, color=col)
        axes[0].fill_between(REMOVED, [v[1] for v in iv], [v[2] for v in iv], color=col, alpha=0.15)
    axes[0].set(
        xlabel="input pixels mean-imputed (k of 64)",
        ylabel="test accuracy (fraction correct)",
        title="Removal curves (mean, 95% CI over seeds)",
        ylim=(0, 1),
    )
    axes[0].legend(fontsize=7)
    for n, col in zip(BASELINES, ("C1", "k")):
        diff = C[PRIMARY] - C[n]
        iv = [
            t_interval(diff[:, j]) if np.ptp(diff[:, j]) > 1e-12 else (diff[0, j],) * 3
            for j in range(len(REMOVED))
        ]
        axes[1].plot(REMOVED, [v[0] for v in iv], "o-", ms=3, color=col, label=f"primary - {n}")
        axes[1].fill_between(REMOVED, [v[1] for v in iv], [v[2] for v in iv], color=col, alpha=0.2)
    axes[1].axhline(0, color="k", lw=1)
    axes[1].set(
        xlabel="input pixels mean-imputed (k of 64)",
        ylabel="accuracy difference (paired, fraction)",
        title=f"{PRIMARY} minus the baselines",
    )
    axes[1].legend(fontsize=7)
    report.figure(
        fig,
        "pixel_ablation.png",
        "Left: test accuracy after mean-imputing k pixels in the order of each score (least "
        "first unless stated) or at random. Right: the paired difference of the primary Fisher "
        "order to each curvature-free baseline along the whole curve (bands: 95% CI, seeds).",
    )
    report.table(
        ["pixels imputed"] + names,
        [[k] + [f"{C[n][:, j].mean():.3f}" for n in names] for j, k in enumerate(REMOVED)],
    )

    auc = {n: C[n].mean(axis=1) for n in names}
    status, pos, ivs = sensitivity_criterion(auc[PRIMARY], {b: auc[b] for b in BASELINES})
    for n in names:
        report.measure(f"curve area (mean accuracy over k): {n}", *t_interval(auc[n]), n=len(SEEDS))
    for b, iv in ivs.items():
        report.measure(
            f"area difference: primary - {b}", *iv, interval="95% paired t", n=len(SEEDS)
        )
    other = paired_t_interval(
        auc["Fisher diagonal summed over the pixel's weights"], auc["least variance first"]
    )
    report.measure(
        "area difference: summed Fisher diagonal - least variance first",
        *other,
        interval="95% paired t",
        n=len(SEEDS),
    )
    # where along the curve the primary order is significantly below a baseline
    below = {}
    for b in BASELINES:
        diff = C[PRIMARY] - C[b]
        below[b] = [
            k
            for j, k in enumerate(REMOVED)
            if np.ptp(diff[:, j]) > 1e-12 and t_interval(diff[:, j])[2] < 0
        ]
    rho = t_interval([r["rho_ef"] for r in runs])
    report.section(
        "Reading",
        (
            f"Over the whole curve the primary Fisher order keeps a mean accuracy of "
            f"{auc[PRIMARY].mean():.3f}, least-variance-first {auc['least variance first'].mean():.3f}, "
            f"random {auc['random order (mean)'].mean():.3f}, and the reverse order "
            f"{auc['most sensitive first (reverse of the primary)'].mean():.3f}. Paired area "
            "differences: "
            + ", ".join(
                f"vs {b}: {iv[0]:+.4f} [{iv[1]:+.4f}, {iv[2]:+.4f}]" for b, iv in ivs.items()
            )
            + ". The primary order is significantly below a baseline at k = "
            + "; ".join(f"{b}: {below[b] or 'nowhere'}" for b in BASELINES)
            + f". The true- and empirical-Fisher gate scores rank pixels with Spearman "
            f"{rho[0]:.3f} [{rho[1]:.3f}, {rho[2]:.3f}]."
        ),
    )
    report.verdict(
        status,
        "paired difference in mean accuracy over the whole removal curve, primary Fisher order "
        + ", ".join(
            f"minus {b}: {iv[0]:+.4f} [{iv[1]:+.4f}, {iv[2]:+.4f}]" for b, iv in ivs.items()
        )
        + f" ({len(SEEDS)} seeds)",
    )
    report.save()


if __name__ == "__main__":
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        main()
