"""The Fisher-Rao norm as a capacity measure (Liang, Poggio, Rakhlin & Stokes 2019).

Claim ("Fisher-Rao metric, geometry, and complexity of neural networks", AISTATS 2019, Sec. 5
"Experiments", Figs. 3-4): the Fisher-Rao norm ``|theta|_fr^2 = theta^T F(theta) theta`` is a
complexity measure that tracks generalisation: it grows with the fraction of random labels
(as the generalisation gap grows, their label-corruption experiment) and it does not grow with
the width of over-parameterised networks (where the gap does not grow, their hidden-units
experiment), unlike norms that scale with the parameter count.

Setting: digits, MLP [64, H, 10] ReLU, softmax, trained by full-batch Adam to fit its training
labels (a share of them replaced by uniform random labels); the test labels are clean.
Per run: the generalisation gap (train accuracy - test accuracy; and test NLL - train NLL), the
Fisher-Rao norm ``theta^T F theta`` with the true Fisher on the training inputs
(``minifim.fisher_rao_norm``), and for comparison the squared l2 norm ``|theta|^2``. Each seed
redraws the train/test split, the corrupted labels and the initialisation.

Criterion (fixed before the run, :func:`tracking_criterion`): per seed, the Spearman rank
correlation across the label-noise levels between the norm and the gap, whose 95% t-interval
over seeds must lie above 0; and in the width sweep the log growth of the norm from the
narrowest to the widest net, whose interval must lie below half the log growth of the
parameter count. Sanity check (not the
verdict): Liang et al.'s Lemma 2.1 identity ``|theta|_fr^2 = L^2 E[<dl/df, f>^2]`` for a
bias-free ReLU net. ``QUICK=1`` shrinks the sweeps.
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
# BLAS threads for main(): small dense products dominate, where BLAS threads only add overhead
# and, on a loaded machine, spin (see minifim.tools.report).
BLAS_THREADS = 1
N_TRAIN = 200 if QUICK else 400
STEPS = 200 if QUICK else 600
LR = 1e-2
SEEDS = list(range(3 if QUICK else 5))
NOISES = [0.0, 0.4, 0.8] if QUICK else [0.0, 0.2, 0.4, 0.6, 0.8]
NOISE_WIDTH = 64
WIDTHS = [16, 64, 128] if QUICK else [16, 32, 64, 128]


def corrupt(y, share, rng, n_classes=10):
    """Replace a ``share`` of the labels by uniform random labels (possibly the same)."""
    y = y.copy()
    idx = rng.choice(len(y), size=int(round(share * len(y))), replace=False)
    y[idx] = rng.integers(0, n_classes, size=idx.size)
    return y


def rank_correlations(norms, gaps):
    """Per seed, Spearman's rho between a norm and the gap across settings: ``norms``, ``gaps``
    of shape ``(seeds, settings)``; 0 (no monotone relation) where either is constant."""
    norms, gaps = np.asarray(norms, float), np.asarray(gaps, float)
    return np.array(
        [
            0.0 if np.ptp(n) == 0 or np.ptp(g) == 0 else float(spearmanr(n, g).statistic)
            for n, g in zip(norms, gaps)
        ]
    )


def tracking_criterion(rho_noise, log_growth_width, log_param_ratio):
    """The verdict from per-seed quantities.

    ``rho_noise``: Spearman's rho between the Fisher-Rao norm and the gap across the
    label-noise sweep (its 95% t-interval must lie above 0); ``log_growth_width``:
    ``log |theta|_fr^2`` at the widest minus at the narrowest width (its interval must lie
    below ``log_param_ratio / 2``, half the log growth of the parameter count: a measure that
    scales like ``P^{1/2}`` or faster fails). Returns ``(verdict, positions, intervals)``.
    """
    iv_noise, iv_width = t_interval(rho_noise), t_interval(log_growth_width)
    pos = {
        "label noise: norm rises with the gap": interval_position(iv_noise, 0.0, np.inf),
        "width: norm grows slower than P^1/2": interval_position(
            iv_width, -np.inf, 0.5 * float(log_param_ratio)
        ),
    }
    return verdict_from_positions(pos.values()), pos, {"noise": iv_noise, "width": iv_width}


def run(seed, width, noise):
    """Train one network; return its gap, norms and fit."""
    X, y = load_digits()
    rng = np.random.default_rng(seed)
    Xtr, ytr, Xte, yte = train_test_split(X, y, 0.25, rng=seed)
    Xtr, ytr = Xtr[:N_TRAIN], corrupt(ytr[:N_TRAIN], noise, rng)
    net = minifim.MLP([64, width, 10], activation="relu", likelihood="categorical")
    theta0 = net.init(seed + 1000 * width)
    theta, hist = minifim.train(
        net, theta0, Xtr, ytr, minifim.optim.adam(LR), STEPS, progress=False
    )
    tr_acc = minifim.accuracy(net, theta, Xtr, ytr)
    te_acc = minifim.accuracy(net, theta, Xte, yte)
    return {
        "gap": tr_acc - te_acc,
        "nll_gap": minifim.loss(net, theta, Xte, yte) - minifim.loss(net, theta, Xtr, ytr),
        "train_acc": tr_acc,
        "test_acc": te_acc,
        "fr": minifim.fisher_rao_norm(net, theta, Xtr),
        "fr_emp": minifim.fisher_rao_norm(net, theta, Xtr, ytr, "empirical"),
        "l2": float(theta @ theta),
        "P": net.num_params,
    }


def lemma_identity(seed=SEED, X=None):
    """|theta|_fr^2 against L^2 E_x Var_{y~p}(f_y) for a bias-free ReLU net (Lemma 2.1).

    ``X: (n, 64)`` inputs, the first 200 digits when None."""
    if X is None:
        X, _ = load_digits()
    net = minifim.MLP([64, 32, 32, 10], activation="relu", likelihood="categorical")
    theta = net.init(seed)
    for _, bs in net.layer_slices:
        theta[bs] = 0.0
    f = net.forward(theta, X[:200])
    p = np.exp(f - f.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    var = np.sum(p * f**2, 1) - np.sum(p * f, 1) ** 2  # E_y <p - e_y, f>^2
    L = len(net.layer_slices)
    lhs = minifim.fisher_rao_norm(net, theta, X[:200])
    return lhs, float(L**2 * var.mean())


def sweep(settings, key, seeds):
    out = {}
    jobs = [(s, v) for s in seeds for v in settings]
    for s, v in tqdm(jobs, desc=f"fisher_rao_norm {key} sweep"):
        w, n = (v, 0.0) if key == "width" else (NOISE_WIDTH, v)
        out[s, v] = run(s, w, n)
    return out


def main():
    report = Report(
        "fisher_rao_norm",
        "The Fisher-Rao norm against the generalisation gap (Liang et al. 2019)",
        "The Fisher-Rao norm theta^T F theta tracks the generalisation gap: it rises with "
        "the share of random labels and does not grow with the width (Liang, Poggio, "
        "Rakhlin & Stokes 2019).",
        SEED,
    )
    report.paper_claim(
        "the Fisher-Rao norm is a capacity measure that 'correlates with generalization': "
        "with increasing label corruption it increases together with the generalization "
        "gap, and with more hidden units (over-parameterisation) it does not increase, "
        "unlike capacity measures that scale with the number of parameters",
        "Liang, Poggio, Rakhlin & Stokes 2019 (AISTATS), Sec. 5, Figs. 3-4",
    )
    report.criterion(
        "`tracking_criterion`: label-noise sweep: per seed, Spearman's rho between "
        "|theta|_fr^2 and the accuracy gap across the noise levels; its 95% t-interval over "
        "seeds lies above 0. Width sweep: the per-seed log growth of |theta|_fr^2 from the "
        "narrowest to the widest net has its 95% t-interval below half the log growth of the "
        "parameter count P (a P^1/2-scaling measure fails). Both inside: agrees; either "
        "outside: disagrees; else inconclusive."
    )
    lhs, rhs = lemma_identity()
    report.sanity(
        "Lemma 2.1: |theta|_fr^2 = L^2 E_x Var_y(f_y) (bias-free ReLU, L = 3)",
        abs(lhs - rhs) <= 1e-10 * abs(rhs),
        f"{lhs:.10g} vs {rhs:.10g} (relative difference {abs(lhs - rhs) / abs(rhs):.1e})",
    )
    noise_runs = sweep(NOISES, "noise", SEEDS)
    width_runs = sweep(WIDTHS, "width", SEEDS)

    def grid(runs, settings, key):
        return np.array([[runs[s, v][key] for v in settings] for s in SEEDS])

    results = {}
    for name, runs, settings in (("noise", noise_runs, NOISES), ("width", width_runs, WIDTHS)):
        results[name] = {
            k: grid(runs, settings, k)
            for k in ("gap", "nll_gap", "fr", "fr_emp", "l2", "train_acc", "test_acc")
        }
    rho = {
        (name, k): rank_correlations(results[name][k], results[name]["gap"])
        for name in results
        for k in ("fr", "fr_emp", "l2")
    }
    p_ratio = width_runs[SEEDS[0], WIDTHS[-1]]["P"] / width_runs[SEEDS[0], WIDTHS[0]]["P"]
    growth = np.log(results["width"]["fr"][:, -1]) - np.log(results["width"]["fr"][:, 0])
    status, pos, ivs = tracking_criterion(rho["noise", "fr"], growth, np.log(p_ratio))
    for name in results:
        for k, label in (
            ("fr", "Fisher-Rao norm (true F)"),
            ("fr_emp", "EF norm"),
            ("l2", "|theta|^2"),
        ):
            report.measure(
                f"{name} sweep: Spearman(gap, {label}) per seed",
                *t_interval(rho[name, k]),
                interval=f"95% t over {len(SEEDS)} seeds",
                n=len(SEEDS),
            )
    for name, settings in (("noise", NOISES), ("width", WIDTHS)):
        lo_, hi_ = results[name]["fr"][:, 0], results[name]["fr"][:, -1]
        report.measure(
            f"{name} sweep: log |theta|_fr^2 at {settings[-1]} minus at {settings[0]}",
            *paired_t_interval(np.log(hi_), np.log(lo_)),
            unit="log ratio",
            n=len(SEEDS),
        )
        g = results[name]["gap"]
        report.measure(
            f"{name} sweep: gap at {settings[-1]} minus at {settings[0]}",
            *paired_t_interval(g[:, -1], g[:, 0]),
            unit="accuracy",
            n=len(SEEDS),
        )

    for name, settings, label in (
        ("noise", NOISES, "share of random training labels"),
        ("width", WIDTHS, "hidden width H"),
    ):
        r = results[name]
        report.section(
            f"{name.capitalize()} sweep",
            (
                f"MLP [64, {'H' if name == 'width' else NOISE_WIDTH}, 10] ReLU, {N_TRAIN} "
                f"training digits, Adam lr {LR:g}, {STEPS} full-batch steps, seeds {SEEDS}; "
                "mean [95% t-interval] over seeds."
            ),
        )
        report.table(
            [
                label,
                "train acc",
                "test acc",
                "gap (acc)",
                "gap (NLL)",
                "|theta|_fr^2",
                "EF norm",
                "|theta|^2",
            ],
            [
                [v]
                + [
                    (lambda iv: f"{iv[0]:.4g} [{iv[1]:.4g}, {iv[2]:.4g}]")(t_interval(r[k][:, j]))
                    for k in ("train_acc", "test_acc", "gap", "nll_gap", "fr", "fr_emp", "l2")
                ]
                for j, v in enumerate(settings)
            ],
        )

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for col, (name, settings, label, xscale) in enumerate(
        (
            ("noise", NOISES, "share of random training labels", "linear"),
            ("width", WIDTHS, "hidden width H", "log"),
        )
    ):
        r = results[name]
        xs = np.array(settings, dtype=float)
        for k, lab, c in (
            ("fr", "|theta|_fr^2 (true F)", "C0"),
            ("fr_emp", "theta^T EF theta", "C2"),
            ("l2", "|theta|^2", "C1"),
        ):
            iv = [t_interval(np.log(r[k][:, j])) for j in range(len(settings))]
            axes[0, col].plot(xs, np.exp([v[0] for v in iv]), "o-", color=c, label=lab)
            axes[0, col].fill_between(
                xs, np.exp([v[1] for v in iv]), np.exp([v[2] for v in iv]), color=c, alpha=0.2
            )
        axes[0, col].set(
            xscale=xscale,
            yscale="log",
            xlabel=label,
            ylabel="norm (nats; |theta|^2: parameter units^2)",
            title=f"{name} sweep: norms (geometric mean, 95% CI)",
        )
        axes[0, col].legend(fontsize=7)
        iv = [t_interval(r["gap"][:, j]) for j in range(len(settings))]
        axes[1, col].plot(xs, [v[0] for v in iv], "o-", color="C3", label="train acc - test acc")
        axes[1, col].fill_between(xs, [v[1] for v in iv], [v[2] for v in iv], color="C3", alpha=0.2)
        axes[1, col].set(
            xscale=xscale,
            xlabel=label,
            ylabel="generalisation gap (accuracy)",
            title=f"{name} sweep: gap (mean, 95% CI)",
            ylim=(0, 1),
        )
        axes[1, col].legend(fontsize=7)
    fig.tight_layout()
    report.figure(
        fig,
        "fisher_rao_norm.png",
        "Top: the Fisher-Rao norm (true and empirical Fisher) and the squared l2 norm against "
        "the label-noise share and the width; bottom: the generalisation gap (bands: 95% "
        "t-intervals over seeds).",
    )
    report.section(
        "Reading",
        (
            "Rank correlation with the gap, per seed, mean [95% CI]: "
            + "; ".join(
                f"{name} sweep: Fisher-Rao {t_interval(rho[name, 'fr'])[0]:+.2f} "
                f"[{t_interval(rho[name, 'fr'])[1]:+.2f}, {t_interval(rho[name, 'fr'])[2]:+.2f}], "
                f"|theta|^2 {t_interval(rho[name, 'l2'])[0]:+.2f}"
                for name in results
            )
            + f". Positions: {pos}."
        ),
    )
    report.verdict(
        status,
        (
            f"Spearman(gap, |theta|_fr^2) over label noise {ivs['noise'][0]:+.2f} "
            f"[{ivs['noise'][1]:+.2f}, {ivs['noise'][2]:+.2f}]; log growth of |theta|_fr^2 from "
            f"H = {WIDTHS[0]} to {WIDTHS[-1]}: {ivs['width'][0]:+.2f} [{ivs['width'][1]:+.2f}, "
            f"{ivs['width'][2]:+.2f}] against half the log growth of P, "
            f"{0.5 * np.log(p_ratio):.2f} ({len(SEEDS)} seeds); |theta|^2 Spearman with the gap: "
            f"{t_interval(rho['noise', 'l2'])[0]:+.2f} (noise), {t_interval(rho['width', 'l2'])[0]:+.2f} (width)"
        ),
    )
    report.save()


if __name__ == "__main__":
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        main()
