"""Empirical Fisher against the true Fisher (Kunstner, Balles & Hennig 2019).

Claims tested ("Limitations of the empirical Fisher approximation for natural gradient
descent", NeurIPS 2019):

1. (Sec. 3, Figs. 2-3) EF preconditioning distorts the update through the gradient
   magnitudes: since ``EF = 1/N sum_n g_n g_n^T`` grows with the squared per-sample
   gradients, the EF "natural gradient" ``EF^{-1} g`` shrinks where gradients are large and
   grows where they are small, unlike NGD. Far from the optimum of a regression problem the
   residuals ``r_n`` grow like the distance ``t``: ``|g| ~ t``, ``EF ~ t^2``, so
   ``|EF^{-1} g| ~ |g|^{-1}`` while ``|F^{-1} g| ~ |g|^{+1}``.
2. (Sec. 3.1 and 4) EF equals F only at a minimum of a well-specified model with enough data
   (``|EF - F| / |F| ~ N^{-1/2}`` at the MLE); under misspecification it does not converge.
3. (Sec. 4, Fig. 4) On a classifier trained to confidence, EF-preconditioned steps differ from
   NGD; here the difference must exceed that of an unbiased one-sample Monte-Carlo Fisher
   (the fair stochastic baseline), at every damping of a grid relative to ``tr F / P``.

The relative error ``|EF - F|_F / |F|_F`` is split into a scale ``tr EF / tr F`` and a shape
``|EF / tr EF - F / tr F|_F / |F / tr F|_F``; the NGD/EF-NGD angle into the part a pure rescaling
``c F`` (``c = tr EF / tr F``) would cause and the rest. Every seed draws new data (two moons,
regression inputs and noise) and a new initialisation; intervals are 95% t-intervals over
seeds. ``QUICK=1`` shrinks the run.
"""

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

import minifim
from minifim.tools.report import (
    Report,
    angle_degrees,
    interval_position,
    loglog_slope,
    paired_t_interval,
    quick,
    t_interval,
    verdict_from_positions,
)

SEED = 0
QUICK = quick()
# BLAS threads for main(): small dense solves and products dominate, where BLAS threads only add
# overhead and, on a loaded machine, spin (see minifim.tools.report). Measured: QUICK: 3.9 s with 2 free
# threads, 2.9 s with one.
BLAS_THREADS = 1
SEEDS = list(range(4 if QUICK else 10))
STEPS = 150 if QUICK else 500
N_MOONS = 200
CHECKPOINTS = [0, 3, 10, 30, 100, STEPS] if QUICK else [0, 3, 10, 30, 100, 300, STEPS]
REL_DAMPINGS = (1e-3, 1e-2, 1e-1, 1.0)  # lambda = delta tr F / P
DECIDING_DAMPINGS = (1e-3, 1e-2, 1e-1)  # the criterion must hold at each of these
SIGMA, D, QUAD = 0.5, 5, 0.7
NS = [100, 300, 1000] if QUICK else [100, 300, 1000, 3000, 10000]
N_MAG = 1000  # samples of the magnitude sweep
TS = np.logspace(-3, 3, 13 if QUICK else 25)  # distance from the MLE along a unit direction
FAR = 10.0  # the far range t >= FAR (residuals from the shift dominate sigma = 0.5)
NEAR = 1e-2  # the near range t <= NEAR
# Criterion bands, fixed before the run
MAG_TOL = 0.1  # far-range slopes of log|d| against log|g|: EF -1 +- 0.1, NGD +1 +- 0.1
RATE_TOL = 0.15  # well-specified |EF - F|/|F| ~ N^s: s in -0.5 +- 0.15; misspecified 0 +- 0.15


def scale_shape(EF, F):
    """``(|EF - F|_F / |F|_F, tr EF / tr F, |EF/tr EF - F/tr F|_F / |F/tr F|_F)``: the
    relative error, its scale and its shape (scale-free) parts."""
    total = float(np.linalg.norm(EF - F) / np.linalg.norm(F))
    a, b = np.trace(EF), np.trace(F)
    shape = float(np.linalg.norm(EF / a - F / b) / np.linalg.norm(F / b))
    return total, float(a / b), shape


def damped_direction(M, g, damping):
    """``(M + damping I)^{-1} g`` by a dense solve."""
    return np.linalg.solve(M + damping * np.eye(len(g)), g)


def magnitude_criterion(slope_ef, slope_f, tol=MAG_TOL):
    """Claim 1 from the far-range slope intervals of ``log |d|`` against ``log |g|``: EF's
    within ``-1 +- tol``, NGD's within ``+1 +- tol``. Returns the two positions."""
    return {
        "EF step ~ |g|^-1 far from the optimum": interval_position(slope_ef, -1 - tol, -1 + tol),
        "NGD step ~ |g|^+1 far from the optimum": interval_position(slope_f, 1 - tol, 1 + tol),
    }


def consistency_criterion(rate_well, rate_mis, tol=RATE_TOL):
    """Claim 2 from the rate intervals of ``|EF - F| / |F|`` against ``N`` at the MLE:
    well-specified within ``-0.5 +- tol``, misspecified within ``0 +- tol``."""
    return {
        "well-specified: |EF-F|/|F| ~ N^-1/2": interval_position(rate_well, -0.5 - tol, -0.5 + tol),
        "misspecified: |EF-F|/|F| does not decay": interval_position(rate_mis, -tol, tol),
    }


def classifier_criterion(angle_excess_by_damping):
    """Claim 3: per relative damping, the paired interval of ``angle(NGD, EF-NGD) -
    angle(NGD, MC-NGD)`` (degrees) must lie above 0."""
    return {
        f"classifier: EF distorts beyond MC noise, delta = {d:g}": interval_position(
            iv, 0.0, np.inf
        )
        for d, iv in angle_excess_by_damping.items()
    }


# --- part A: a classifier along its training run ---------------------------------------
def classifier_seed(seed):
    """One seed: new two-moons data, new initialisation; statistics at the checkpoints."""
    X, y = minifim.data.two_moons(N_MOONS, noise=0.2, rng=seed)
    net = minifim.MLP([2, 16, 16, 2], activation="tanh", likelihood="categorical")
    theta0 = net.init(seed)
    saved = {0: theta0.copy()}

    def keep(step, theta, state):
        if step + 1 in CHECKPOINTS:
            saved[step + 1] = theta.copy()

    minifim.train(net, theta0, X, y, minifim.optim.adam(1e-2), STEPS, callback=keep, progress=False)
    rng = np.random.default_rng(1000 + seed)
    out = []
    for step in CHECKPOINTS:
        theta = saved[step]
        F = minifim.true_fisher(net, theta, X)
        EF = minifim.empirical_fisher(net, theta, X, y)
        MC = minifim.mc_fisher(net, theta, X, 1, rng)
        loss, g = minifim.loss_and_gradient(net, theta, X, y)
        total, scale, shape = scale_shape(EF, F)
        row = {"step": step, "loss": loss, "total": total, "scale": scale, "shape": shape}
        row["grad_norm"] = float(np.linalg.norm(g))
        base = np.trace(F) / net.num_params
        for delta in REL_DAMPINGS:
            lam = delta * base
            d_f = damped_direction(F, g, lam)
            d_ef = damped_direction(EF, g, lam)
            d_cf = damped_direction(scale * F, g, lam)
            d_mc = damped_direction(MC, g, lam)
            row[delta] = {
                "angle": angle_degrees(d_f, d_ef),
                "scale_angle": angle_degrees(d_f, d_cf),
                "shape_angle": angle_degrees(d_cf, d_ef),
                "mc_angle": angle_degrees(d_f, d_mc),
                "len_f": float(np.linalg.norm(d_f)),
                "len_ef": float(np.linalg.norm(d_ef)),
            }
        if step == CHECKPOINTS[-1]:
            lam = DECIDING_DAMPINGS[0] * base
            api = minifim.natural_gradient(net, theta, X, y, lam, "true", "dense", grad=g)
            row["api_err"] = float(
                np.linalg.norm(api - damped_direction(F, g, lam)) / np.linalg.norm(api)
            )
        out.append(row)
    return out


# --- part B: linear-Gaussian regression ------------------------------------------------
def regression_data(n, kind, rng, w, b):
    X = rng.standard_normal((n, D))
    f = X @ w + b + (QUAD * (X[:, 0] ** 2 - 1.0) if kind == "misspecified" else 0.0)
    return X, (f + SIGMA * rng.standard_normal(n))[:, None]


def mle(net, X, y):
    """theta* by one undamped exact natural-gradient step from 0 (Gauss-Newton = least squares)."""
    theta0 = np.zeros(net.num_params)
    return theta0 - minifim.natural_gradient(net, theta0, X, y, 0.0, "true", "dense")


def regression_seed(seed):
    """One seed: new teacher, inputs and noise. Consistency against N and the magnitude sweep."""
    rng = np.random.default_rng(seed)
    w, b = rng.standard_normal(D), 0.3
    net = minifim.MLP([D, 1], activation="identity", likelihood="gaussian", sigma=SIGMA)
    cons = {}
    for kind in ("well-specified", "misspecified"):
        cons[kind] = []
        for n in NS:
            X, y = regression_data(n, kind, rng, w, b)
            theta = mle(net, X, y)
            EF = minifim.empirical_fisher(net, theta, X, y)
            cons[kind].append(scale_shape(EF, minifim.true_fisher(net, theta, X)))
    X, y = regression_data(N_MAG, "well-specified", rng, w, b)
    theta_star = mle(net, X, y)
    F = minifim.true_fisher(net, theta_star, X)  # constant in theta for this model
    u = rng.standard_normal(net.num_params)
    u /= np.linalg.norm(u)
    mag = []
    for t in TS:
        theta = theta_star + t * u
        g = minifim.gradient(net, theta, X, y)
        EF = minifim.empirical_fisher(net, theta, X, y)
        mag.append(
            (
                float(np.linalg.norm(g)),
                float(np.linalg.norm(np.linalg.solve(F, g))),
                float(np.linalg.norm(np.linalg.solve(EF, g))),
                angle_degrees(np.linalg.solve(F, g), np.linalg.solve(EF, g)),
            )
        )
    return cons, np.array(mag)


def main():
    import matplotlib.pyplot as plt

    report = Report(
        "empirical_vs_true_fisher",
        "Empirical Fisher vs true Fisher (Kunstner et al. 2019)",
        claim=(
            "EF preconditioning distorts the update through the gradient magnitudes, EF "
            "approaches F only at the optimum of a well-specified model, and on a trained "
            "classifier EF-NGD departs from NGD by more than Monte-Carlo noise (Kunstner, "
            "Balles & Hennig 2019)."
        ),
        seed=SEED,
    )
    report.paper_claim(
        "the EF-preconditioned update is distorted: as EF is a sum of squared gradients, "
        "'the EF update ... scales inversely with the gradient magnitude' in the directions "
        "where the gradients are large, which NGD does not; its vector field on linear "
        "regression points away from the optimum",
        "Kunstner, Balles & Hennig 2019, Sec. 3, Figs. 2-3",
    )
    report.paper_claim(
        "the EF coincides with the Fisher only 'at a minimum, if the model is correctly "
        "specified and with enough data'; otherwise the two matrices differ",
        "Kunstner, Balles & Hennig 2019, Sec. 3.1 and 4",
    )
    report.paper_claim(
        "in practice (classification), preconditioning with the EF leads to updates that "
        "differ from natural gradient updates",
        "Kunstner, Balles & Hennig 2019, Sec. 4, Fig. 4",
    )
    report.criterion(
        f"`magnitude_criterion`: along theta* + t u (N = {N_MAG}, t >= {FAR:g}) the slope of "
        f"log |EF^-1 g| against log |g| lies within -1 +- {MAG_TOL} and NGD's within "
        f"+1 +- {MAG_TOL} (95% t over seeds)."
    )
    report.criterion(
        "`consistency_criterion`: the log-log slope of |EF - F|/|F| at the MLE against N "
        f"lies within -0.5 +- {RATE_TOL} (well-specified) and 0 +- {RATE_TOL} (misspecified)."
    )
    report.criterion(
        "`classifier_criterion`: at the trained classifier, the paired interval of "
        "angle(NGD, EF-NGD) - angle(NGD, MC-NGD) lies above 0 deg at every relative damping "
        f"delta in {list(DECIDING_DAMPINGS)} (lambda = delta tr F / P, the same for all "
        "three matrices). All inside: agrees; any outside: disagrees; else inconclusive."
    )

    rows = [classifier_seed(s) for s in tqdm(SEEDS, desc="classifier seeds")]
    reg = [regression_seed(s) for s in tqdm(SEEDS, desc="regression seeds")]
    nseed = len(SEEDS)
    kind_label = f"95% t over {nseed} seeds"

    # --- part A ------------------------------------------------------------------------
    final = [r[-1] for r in rows]
    report.section(
        "Part A: a classifier along its training run",
        (
            f"Two moons (N = {N_MOONS}, noise 0.2, new data per seed), MLP [2, 16, 16, 2] tanh "
            f"(P = 354), Adam (lr 1e-2, {STEPS} full-batch steps), seeds {SEEDS}. Directions "
            "(M + lambda I)^{-1} g by dense solves for M = F (NGD), EF, c F (c = tr EF / tr F: "
            "the scale alone) and a one-sample Monte-Carlo Fisher (MC-NGD), with "
            "lambda = delta tr F / P. Mean and 95% t-interval over seeds at the end of training."
        ),
    )
    ivs = {}
    table = []
    for delta in REL_DAMPINGS:
        cells = [delta]
        for key in ("angle", "scale_angle", "shape_angle", "mc_angle"):
            iv = t_interval([f[delta][key] for f in final])
            ivs[delta, key] = iv
            cells.append(f"{iv[0]:.1f} [{iv[1]:.1f}, {iv[2]:.1f}]")
        ratio = t_interval([f[delta]["len_ef"] / f[delta]["len_f"] for f in final])
        cells.append(f"{ratio[0]:.3g} [{ratio[1]:.3g}, {ratio[2]:.3g}]")
        table.append(cells)
    report.table(
        [
            "delta",
            "angle(NGD, EF-NGD) deg",
            "of which scale: angle(NGD, cF-NGD)",
            "shape: angle(cF-NGD, EF-NGD)",
            "baseline angle(NGD, MC-NGD)",
            "|d_EF| / |d_F|",
        ],
        table,
    )
    excess = {
        d: paired_t_interval([f[d]["angle"] for f in final], [f[d]["mc_angle"] for f in final])
        for d in DECIDING_DAMPINGS
    }
    for d, iv in excess.items():
        report.measure(
            f"classifier: angle(NGD, EF-NGD) - angle(NGD, MC-NGD), delta = {d:g}",
            *iv,
            unit="deg",
            interval=kind_label,
            n=nseed,
        )
    split = {key: t_interval([f[key] for f in final]) for key in ("total", "scale", "shape")}
    report.measure("classifier: |EF - F|_F / |F|_F (trained)", *split["total"], n=nseed)
    report.measure("classifier: scale tr EF / tr F (trained)", *split["scale"], n=nseed)
    report.measure("classifier: shape error (trained)", *split["shape"], n=nseed)
    report.sanity(
        "dense solve = minifim.natural_gradient(..., 'true', 'dense')",
        max(f["api_err"] for f in final) < 1e-8,
        f"max relative difference {max(f['api_err'] for f in final):.1e} over seeds",
    )

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    fig.subplots_adjust(wspace=0.3)
    ds = np.array(REL_DAMPINGS)
    for key, label, col in (
        ("angle", "NGD vs EF-NGD (total)", "C3"),
        ("scale_angle", "NGD vs cF-NGD (scale only)", "C1"),
        ("shape_angle", "cF-NGD vs EF-NGD (shape)", "C4"),
        ("mc_angle", "NGD vs MC-NGD (baseline)", "C0"),
    ):
        m = np.array([ivs[d, key][0] for d in REL_DAMPINGS])
        lo = np.array([ivs[d, key][1] for d in REL_DAMPINGS])
        hi = np.array([ivs[d, key][2] for d in REL_DAMPINGS])
        axes[0].plot(ds, m, "o-", color=col, label=label)
        axes[0].fill_between(ds, lo, hi, color=col, alpha=0.2)
    axes[0].set(
        xscale="log",
        xlabel="relative damping delta (lambda = delta tr F / P)",
        ylabel="angle between update directions (deg)",
        title="A: trained classifier (95% CI over seeds)",
        ylim=(0, 180),
    )
    axes[0].legend(fontsize=7)
    steps = np.array([max(s, 0.5) for s in CHECKPOINTS])
    for key, label, col in (
        ("total", "|EF - F| / |F|", "C3"),
        ("scale", "tr EF / tr F (scale)", "C1"),
        ("shape", "shape error", "C4"),
    ):
        vals = np.array([[r[i][key] for i in range(len(CHECKPOINTS))] for r in rows])
        iv = [t_interval(vals[:, i]) for i in range(len(CHECKPOINTS))]
        axes[1].plot(steps, [v[0] for v in iv], "o-", color=col, label=label)
        axes[1].fill_between(steps, [v[1] for v in iv], [v[2] for v in iv], color=col, alpha=0.2)
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="training step (0 plotted at 0.5)",
        ylabel="ratio (dimensionless)",
        title="A: EF vs F along training",
    )
    axes[1].legend(fontsize=7)
    d0 = DECIDING_DAMPINGS[0]
    gn = np.array([[c["grad_norm"] for c in r] for r in rows]).ravel()
    for key, label, col in (("len_f", "|d_F| (NGD)", "C0"), ("len_ef", "|d_EF| (EF-NGD)", "C3")):
        vals = np.array([[c[d0][key] for c in r] for r in rows]).ravel()
        axes[2].loglog(gn, vals, "o", ms=3, alpha=0.6, color=col, label=label)
    axes[2].set(
        xlabel="gradient norm |g| (checkpoints of all seeds)",
        ylabel=f"step length |(M + lambda I)^-1 g|, delta = {d0:g}",
        title="A: step length against gradient magnitude",
    )
    axes[2].legend(fontsize=7)
    report.figure(
        fig,
        "classifier.png",
        "Part A. Left: angles between the update directions at the trained classifier "
        "against the relative damping, split into the part a pure rescaling of F causes and "
        "the rest, against a one-sample Monte-Carlo Fisher. Middle: the relative error split "
        "into scale and shape along training. Right: step lengths of NGD and EF-NGD against "
        "the gradient norm over all checkpoints and seeds (bands and points: 95% CI, seeds).",
    )

    # --- part B: magnitudes and consistency -----------------------------------------------
    mags = np.array([m for _, m in reg])  # (seeds, len(TS), 4)
    far, near = TS >= FAR, TS <= NEAR
    slope_ef = t_interval([loglog_slope(m[far, 0], m[far, 2]) for m in mags])
    slope_f = t_interval([loglog_slope(m[far, 0], m[far, 1]) for m in mags])
    slope_ef_near = t_interval([loglog_slope(m[near, 0], m[near, 2]) for m in mags])
    report.measure(
        f"far range t >= {FAR:g}: slope of log|EF^-1 g| vs log|g|", *slope_ef, interval=kind_label
    )
    report.measure(
        f"far range t >= {FAR:g}: slope of log|F^-1 g| vs log|g|", *slope_f, interval=kind_label
    )
    report.measure(
        f"near range t <= {NEAR:g}: slope of log|EF^-1 g| vs log|g| (reference: +1)",
        *slope_ef_near,
        interval=kind_label,
    )
    rate = {}
    for kind in ("well-specified", "misspecified"):
        rate[kind] = t_interval([loglog_slope(NS, [c[0] for c in cons[kind]]) for cons, _ in reg])
        report.measure(
            f"{kind}: slope of |EF-F|/|F| at the MLE against N", *rate[kind], interval=kind_label
        )
    end = {
        kind: {
            k: t_interval([cons[kind][-1][i] for cons, _ in reg])
            for i, k in enumerate(("total", "scale", "shape"))
        }
        for kind in ("well-specified", "misspecified")
    }
    report.section(
        "Part B: linear-Gaussian regression (Kunstner et al.'s setting)",
        (
            f"y = x w + b + {QUAD} (x_1^2 - 1) [misspecified only] + {SIGMA} eps, x ~ N(0, I_{D}), "
            f"new w, inputs and noise per seed; the model is linear with sigma = {SIGMA}. "
            f"Magnitudes: along theta* + t u (u a random unit vector, N = {N_MAG}), undamped "
            "steps F^-1 g and EF^-1 g. Consistency: |EF - F|/|F| at the MLE for "
            f"N in {NS}; at N = {NS[-1]}, split into scale and shape:"
        ),
    )
    report.table(
        ["model", "|EF-F|/|F|", "tr EF / tr F", "shape error"],
        [
            [kind]
            + [
                f"{end[kind][k][0]:.3g} [{end[kind][k][1]:.3g}, {end[kind][k][2]:.3g}]"
                for k in end[kind]
            ]
            for kind in end
        ],
    )
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    fig.subplots_adjust(wspace=0.3)
    for idx, label, col in ((1, "NGD |F^-1 g|", "C0"), (2, "EF-NGD |EF^-1 g|", "C3")):
        gm = np.exp(np.log(mags[:, :, 0]).mean(0))
        lv = np.log(mags[:, :, idx])
        iv = [t_interval(lv[:, i]) for i in range(len(TS))]
        axes[0].plot(gm, np.exp([v[0] for v in iv]), "o-", color=col, ms=3, label=label)
        axes[0].fill_between(
            gm, np.exp([v[1] for v in iv]), np.exp([v[2] for v in iv]), color=col, alpha=0.2
        )
    axes[0].axvline(
        np.exp(np.log(mags[:, TS >= FAR, 0]).mean(0))[0],
        color="k",
        ls=":",
        lw=1,
        label=f"far range starts (t = {FAR:g})",
    )
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="gradient norm |g| (geometric mean over seeds)",
        ylabel="undamped step length |M^-1 g|",
        title="B: step length against gradient magnitude",
    )
    axes[0].legend(fontsize=7)
    ang = mags[:, :, 3]
    iv = [t_interval(ang[:, i]) for i in range(len(TS))]
    axes[1].plot(TS, [v[0] for v in iv], "o-", color="C3", ms=3)
    axes[1].fill_between(TS, [v[1] for v in iv], [v[2] for v in iv], color="C3", alpha=0.2)
    axes[1].set(
        xscale="log",
        xlabel="distance t from the MLE along u",
        ylabel="angle(NGD, EF-NGD) (deg)",
        title="B: direction distortion along the segment",
    )
    ns = np.array(NS, dtype=float)
    for kind, col in (("well-specified", "C0"), ("misspecified", "C1")):
        for i, (key, style) in enumerate((("total", "o-"), ("shape", "s--"))):
            vals = np.array([[c[i * 2] for c in cons[kind]] for cons, _ in reg])
            ivk = [t_interval(vals[:, j]) for j in range(len(NS))]
            axes[2].errorbar(
                ns,
                [v[0] for v in ivk],
                yerr=[[v[0] - v[1] for v in ivk], [v[2] - v[0] for v in ivk]],
                fmt=style,
                color=col,
                capsize=3,
                label=f"{kind}: {'|EF-F|/|F|' if key == 'total' else 'shape error'}",
            )
    y0 = np.mean([cons["well-specified"][0][0] for cons, _ in reg])
    axes[2].plot(ns, y0 * (ns / ns[0]) ** -0.5, "k:", label="N^-1/2")
    axes[2].set(
        xscale="log",
        yscale="log",
        xlabel="number of samples N",
        ylabel="relative error at the MLE (dimensionless)",
        title="B: consistency at the optimum",
    )
    axes[2].legend(fontsize=7)
    report.figure(
        fig,
        "regression.png",
        "Part B. Left: undamped NGD and EF-NGD step lengths against the gradient norm along "
        "theta* + t u (Kunstner et al., Figs. 2-3: the EF step shrinks as the gradient grows). "
        "Middle: the angle between the two directions along the segment. Right: relative "
        "error and its shape part at the MLE against N (bars: 95% CI over seeds).",
    )

    # --- verdict -------------------------------------------------------------------------
    positions = {}
    positions.update(magnitude_criterion(slope_ef, slope_f))
    positions.update(consistency_criterion(rate["well-specified"], rate["misspecified"]))
    positions.update(classifier_criterion(excess))
    status = verdict_from_positions(positions.values())
    off = [f"{k} ({v})" for k, v in positions.items() if v != "inside"]
    report.section(
        "Reading",
        (
            f"Far from the optimum the EF step length scales like |g|^{slope_ef[0]:+.3f} "
            f"[{slope_ef[1]:+.3f}, {slope_ef[2]:+.3f}] and NGD's like |g|^{slope_f[0]:+.3f}; near "
            f"it the EF step scales like |g|^{slope_ef_near[0]:+.3f}, as NGD's. At the MLE the "
            f"error decays like N^{rate['well-specified'][0]:.3f} (well-specified) and like "
            f"N^{rate['misspecified'][0]:+.3f} (misspecified), where at N = {NS[-1]} the scale is "
            f"{end['misspecified']['scale'][0]:.3f} and the shape error "
            f"{end['misspecified']['shape'][0]:.3f}. On the trained classifier the scale is "
            f"tr EF / tr F = {split['scale'][0]:.3g} [{split['scale'][1]:.3g}, "
            f"{split['scale'][2]:.3g}] and the shape error {split['shape'][0]:.3g}; the "
            "NGD/EF-NGD angle exceeds the Monte-Carlo baseline by "
            + ", ".join(
                f"{iv[0]:.1f} [{iv[1]:.1f}, {iv[2]:.1f}] deg (delta {d:g})"
                for d, iv in excess.items()
            )
            + ". Not inside their bands: "
            + (", ".join(off) or "none")
            + "."
        ),
    )
    report.verdict(
        status,
        (
            f"EF step ~ |g|^{slope_ef[0]:+.3f} [{slope_ef[1]:+.3f}, {slope_ef[2]:+.3f}] vs NGD "
            f"|g|^{slope_f[0]:+.3f} far from the optimum; |EF-F|/|F| at the MLE ~ "
            f"N^{rate['well-specified'][0]:.2f} [{rate['well-specified'][1]:.2f}, "
            f"{rate['well-specified'][2]:.2f}] (well-specified) vs N^{rate['misspecified'][0]:+.2f} "
            f"[{rate['misspecified'][1]:+.2f}, {rate['misspecified'][2]:+.2f}] (misspecified); "
            "classifier angle excess over MC-NGD "
            + ", ".join(f"{iv[0]:.1f} [{iv[1]:.1f}, {iv[2]:.1f}]" for iv in excess.values())
            + f" deg at delta {list(DECIDING_DAMPINGS)}; "
            f"{sum(v == 'inside' for v in positions.values())}/{len(positions)} inside"
        ),
    )
    report.save()


if __name__ == "__main__":
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        main()
