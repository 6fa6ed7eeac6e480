"""Pruning a digits classifier: magnitude vs Optimal Brain Damage vs one-shot Optimal Brain Surgeon.

Claims tested: LeCun, Denker & Solla 1990 (OBD, Fig. 2): ranking weights by the second-order
saliency ``1/2 h_ii theta_i^2`` removes weights with a smaller increase of the training error than
ranking by magnitude; Hassibi & Stork 1993 (OBS, Sec. 3 and Fig. 3): using the full inverse
Hessian to choose AND compensate removes still more weights for the same error increase than
OBD and magnitude.

Set-up: per seed (its own train/test split and initialisation), an MLP 64-H-10 (tanh, softmax)
trained by Adam with weight decay, then polished to a minimum by L-BFGS (both criteria assume a
vanishing gradient). Curvature: the exact true Fisher of the mean NLL plus ``alpha/N I`` (the GGN
of the objective ``J = mean NLL + alpha/(2N) |theta|^2``). Weights only are pruned. ONE OBS variant
is judged, fixed before the run: one-shot OBS (curvature once at the trained theta, downdated as
blocks are removed) -- no best-of-several selection. Every sparsity level, 95% included, enters
the criterion :func:`pruning_verdict` (tested in tests/test_experiment_pruning.py). The run is
pinned to 1 BLAS thread (threadpoolctl), so it does not move with the machine's thread count.

Run: ``MPLBACKEND=Agg python experiments/pruning.py`` (``QUICK=1``: smaller net, 2 seeds).
Measured on 2 cores (1 BLAS thread), load average about 2: full 47 s, QUICK 4 s (90 s and
8 s under load average 4-9; the verdict and every number were identical).
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

import minifim
from minifim.data import load_digits, train_test_split
from minifim.tools.report import Report, paired_t_interval, quick, t_interval

SEED = 0
QUICK = quick()
# OBS downdates of P ~ 2,000 and small products: BLAS threads only add overhead
BLAS_THREADS = 1
HIDDEN = 12 if QUICK else 24
STEPS = 200 if QUICK else 400
LBFGS_ITERS = 300 if QUICK else 3000
ALPHA = 1.0
SEEDS = [0, 1] if QUICK else [0, 1, 2, 3, 4]
SPARSITIES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95]
FROM = 0.5  # the criterion covers every level >= FROM
BLOCK_FRACTION = 0.01 if QUICK else 0.005
METHODS = ("magnitude", "obd", "obs")
LABELS = {"magnitude": "magnitude", "obd": "OBD (diagonal)", "obs": "OBS one-shot"}


def run(seed, X, y):
    """Per method: (objective rise, test accuracy, predicted rise) along SPARSITIES."""
    Xtr, ytr, Xte, yte = train_test_split(X, y, 0.25, rng=np.random.default_rng([seed, 0]))
    N = len(Xtr)
    net = minifim.MLP([64, HIDDEN, 10], activation="tanh", likelihood="categorical")
    prior = minifim.GaussianPrior(ALPHA)
    theta, _ = minifim.train(
        net,
        net.init(np.random.default_rng([seed, 1])),
        Xtr,
        ytr,
        minifim.optim.adam(1e-2),
        STEPS,
        penalty=prior,
        progress=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        theta, fit = minifim.fit_map(net, theta, Xtr, ytr, ALPHA, gtol=1e-9, max_iter=LBFGS_ITERS)
    batch = minifim.optim.Batch(net, Xtr, ytr, prior, N)
    n_weights = sum(o * i for o, i in net.shapes)
    block = max(1, int(round(BLOCK_FRACTION * n_weights)))
    out = {}
    for m in METHODS:
        rs = minifim.prune_path(
            net, theta, Xtr, ytr, SPARSITIES, m, damping=ALPHA / N, block_size=block
        )
        assert all(np.all(r.theta[~r.mask] == 0.0) for r in rs)
        out[m] = (
            np.array([minifim.optim.objective(batch, r.theta) - fit["objective"] for r in rs]),
            np.array([minifim.accuracy(net, r.theta, Xte, yte) for r in rs]),
            np.array([r.predicted_increase for r in rs]),
        )
    info = dict(net=net, grad=fit["grad_norm"], n_weights=n_weights, block=block, N=N)
    return out, info


# --- the criterion (pure; tested both ways in the suite) --------------------------------------
def pruning_verdict(rise, sparsities, start=FROM, level=0.95):
    """Verdict on ``rise[method]: (seeds, levels)`` objective increases (positive).

    Per level ``s >= start`` and per pair (OBD better than magnitude, OBS better than OBD, OBS
    better than magnitude), the 95% paired t-interval over seeds of ``log(rise_worse /
    rise_better)``. Agrees if every interval lies above 0; disagrees if any lies below 0; else
    inconclusive. Returns ``(status, table)`` with ``table[(pair, s)] = (mean, low, high)``.
    """
    pairs = (("obd", "magnitude"), ("obs", "obd"), ("obs", "magnitude"))
    table, signs = {}, []
    for better, worse in pairs:
        for k, s in enumerate(sparsities):
            if s < start:
                continue
            lr = np.log(np.maximum(rise[worse][:, k], 1e-300)) - np.log(
                np.maximum(rise[better][:, k], 1e-300)
            )
            ci = paired_t_interval(lr, np.zeros_like(lr), level)
            table[(f"{better} < {worse}", s)] = ci
            signs.append(1 if ci[1] > 0 else (-1 if ci[2] < 0 else 0))
    status = (
        "agrees" if all(v == 1 for v in signs) else "disagrees" if -1 in signs else "inconclusive"
    )
    return status, table


def plot(rise, acc, pred):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    pct = 100 * np.array(SPARSITIES)
    for m in METHODS:
        a = acc[m]
        sd = a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
        axes[0].errorbar(pct, a.mean(0), yerr=sd, fmt="o-", ms=3, capsize=2, label=LABELS[m])
        r = np.maximum(rise[m][:, 1:], 1e-12)
        g = np.exp(np.log(r).mean(0))
        (line,) = axes[1].semilogy(pct[1:], g, "o-", ms=3, label=f"{LABELS[m]}: actual")
        axes[1].fill_between(pct[1:], r.min(0), r.max(0), color=line.get_color(), alpha=0.15)
        if m != "magnitude":
            axes[1].semilogy(
                pct[1:],
                np.exp(np.log(np.maximum(pred[m][:, 1:], 1e-12)).mean(0)),
                "--",
                color=line.get_color(),
                label=f"{LABELS[m]}: second-order prediction",
            )
    axes[0].set(
        xlabel="sparsity (% of weights removed)",
        ylabel="test accuracy (fraction)",
        title="Accuracy after pruning, no retraining (mean +- 1 sd over seeds)",
    )
    axes[1].set(
        xlabel="sparsity (% of weights removed)",
        ylabel="increase of the training objective J (nats per sample)",
        title="Objective increase (geometric mean; band: min-max over seeds)",
    )
    axes[1].axvspan(100 * FROM, 97, color="0.9", zorder=0, label="levels in the criterion")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main():
    report = Report(
        "pruning",
        "Pruning by magnitude, OBD and one-shot OBS on digits",
        "Curvature-aware pruning removes weights with a smaller training-objective increase: "
        "OBS < OBD < magnitude (LeCun et al. 1990; Hassibi & Stork 1993).",
        SEED,
    )
    report.paper_claim(
        "Deleting parameters by the second-derivative saliency 1/2 h_kk u_k^2 gives a smaller "
        "increase of the training error than deleting by magnitude.",
        "LeCun, Denker & Solla 1990, OBD, Sec. 3 and Fig. 2",
    )
    report.paper_claim(
        "OBS, using the full inverse Hessian to choose the weight and adjust the others, gives a "
        "smaller error increase than OBD and magnitude pruning for the same number of weights "
        "removed.",
        "Hassibi & Stork 1993, OBS, Sec. 3 and Fig. 3",
    )
    report.criterion(
        f"pruning_verdict: at every sparsity >= {FROM:.0%} (to 95%), the 95% paired t-interval "
        f"over {len(SEEDS)} seeds of log(rise of the worse / rise of the better) for OBD vs "
        "magnitude, OBS vs OBD and OBS vs magnitude (OBS = one-shot, fixed before the run); "
        "agrees if all lie above 0, disagrees if any lies below 0, else inconclusive."
    )
    X, y = load_digits()
    results, infos = [], []
    for seed in tqdm(SEEDS, desc="pruning seeds"):
        out, info = run(seed, X, y)
        results.append(out)
        infos.append(info)
    rise = {m: np.stack([r[m][0] for r in results]) for m in METHODS}
    acc = {m: np.stack([r[m][1] for r in results]) for m in METHODS}
    pred = {m: np.stack([r[m][2] for r in results]) for m in METHODS}
    net = infos[0]["net"]
    report.section(
        "Set-up",
        f"MLP {list(net.sizes)} (P = {net.num_params}, {infos[0]['n_weights']} prunable "
        f"weights); seeds {SEEDS} (split and initialisation); {infos[0]['N']} training digits; "
        f"Adam lr 1e-2 {STEPS} steps with weight decay {ALPHA}, then L-BFGS (largest final "
        f"gradient norm {max(i['grad'] for i in infos):.1e}). OBS removes {infos[0]['block']} "
        "weights per exact joint step. Curvature: true Fisher + alpha/N.",
    )
    n = len(SEEDS)
    rows = []
    for k, s in enumerate(SPARSITIES):
        row = [f"{s:.2f}"]
        for m in METHODS:
            mu, lo, hi = t_interval(acc[m][:, k]) if n > 1 else (acc[m][0, k],) * 3
            row.append(f"{mu:.3f} [{lo:.3f}, {hi:.3f}]")
        for m in METHODS:
            row.append(f"{np.exp(np.log(np.maximum(rise[m][:, k], 1e-300)).mean()):.3g}")
        rows.append(row)
    report.section("Every sparsity level (test accuracy: mean [95% t]; dJ: geometric mean)")
    report.table(
        ["sparsity"] + [f"acc {LABELS[m]}" for m in METHODS] + [f"dJ {LABELS[m]}" for m in METHODS],
        rows,
    )
    report.figure(
        plot(rise, acc, pred),
        "pruning.png",
        "Left: test accuracy against sparsity (mean +- 1 sd over seeds). Right: increase of the "
        "training objective (log axis), actual (solid) and predicted (dashed)",
    )
    i10 = SPARSITIES.index(0.1)
    rel = np.abs(pred["obs"][:, i10] / rise["obs"][:, i10] - 1)
    if n > 1:
        report.measure(
            "OBS one-shot |predicted / actual - 1| at 10% sparsity",
            *t_interval(rel),
            n=n,
            interval=f"95% t over {n} seeds",
        )
        status, table = pruning_verdict(rise, SPARSITIES)
        for (pair, s), ci in table.items():
            if s in (0.5, 0.9, 0.95):
                report.measure(
                    f"log(dJ ratio) {pair} at {s:.0%}",
                    *ci,
                    unit="nats of ratio",
                    n=n,
                    interval=f"95% paired t over {n} seeds",
                )
        fails = [
            f"{p} at {s:.0%} ({c[0]:+.2f} [{c[1]:+.2f}, {c[2]:+.2f}])"
            for (p, s), c in table.items()
            if c[2] < 0
        ]
        unresolved = [f"{p} at {s:.0%}" for (p, s), c in table.items() if c[1] <= 0 <= c[2]]
    else:
        status, fails, unresolved = "inconclusive", [], []
    i95 = SPARSITIES.index(0.95)
    detail = (
        "at 95% sparsity: dJ (geometric mean) magnitude "
        f"{np.exp(np.log(rise['magnitude'][:, i95]).mean()):.3g}, OBD "
        f"{np.exp(np.log(rise['obd'][:, i95]).mean()):.3g}, one-shot OBS "
        f"{np.exp(np.log(np.maximum(rise['obs'][:, i95], 1e-300)).mean()):.3g}; test accuracy "
        f"{acc['magnitude'][:, i95].mean():.3f} / {acc['obd'][:, i95].mean():.3f} / "
        f"{acc['obs'][:, i95].mean():.3f}. Reversed (interval below 0): "
        f"{'; '.join(fails) if fails else 'none'}. Not resolved: "
        f"{', '.join(unresolved) if unresolved else 'none'}."
    )
    if QUICK:
        status, detail = "inconclusive", "QUICK mode (2 seeds, small net): not evidence; " + detail
    report.sanity(
        "pruned weights exactly zero", True, "theta[~mask] == 0 for every level and method"
    )
    report.verdict(status, detail)
    report.save()


if __name__ == "__main__":
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        main()
